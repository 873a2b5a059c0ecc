/**
 * /proc/PID/status of a frozen task, read once per checkpoint and shared by the handlers that
 * need a field of it (the parse alone is a good part of a millisecond, and several handlers asked
 * it again for the same task). The freezer hands over the read it makes once every thread is
 * stopped, before any call is injected; a task without one (a zombie) reads it on first use.
 *
 * Only for what nothing but the task itself can change, so that a read made at the freeze still
 * holds at the check and the dump: credentials, seccomp mode, umask, signal dispositions, the
 * ids. Not for what cptrst's injected calls or the world outside change meanwhile (the memory
 * figures, the signal mask and pending signals, the tracer, the state): read those anew.
 */
import { CheckpointTask } from './contract';
import { ProcStatus, readStatus } from './linux/proc';
import { StateKey } from './tokens';

const STATUS = new StateKey<ProcStatus>('core.frozen-status');

/** The task's status as read once it was frozen (see above for the fields it may be used for). */
export function frozenStatus(task: CheckpointTask): ProcStatus {
  return task.state.ensure(STATUS, () => readStatus(task.pid));
}

/** The freezer's read of a task's status, made once all its threads are stopped. */
export function setFrozenStatus(task: CheckpointTask, status: ProcStatus): void {
  task.state.set(STATUS, status);
}
