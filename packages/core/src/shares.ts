/**
 * What a process of a tree shares with its parent since it was made (clone with CLONE_FILES, or
 * CLONE_FS): the CLONE_FILES | CLONE_FS bits, set at checkpoint by the tree's checks and at
 * restart from the TASK object, before the other subsystems see the task. The task is then made
 * with those flags inside its restored parent, and the subsystems that own the fd table and the
 * fs struct restore nothing of them for the task: they are the parent's.
 */
import { StateKey } from './tokens';

export const SHARED_WITH_PARENT = new StateKey<number>('task.sharedWithParent');
