/**
 * Steps that run once the task has its final credentials. An image that root does not own may
 * ask only for what its owner could do: limits, scheduling and oom_score_adj are then set from
 * inside the task after its credentials are dropped, so that the kernel checks them with the
 * owner's rights. Some state is also reset by any change of credentials (the parent-death signal)
 * and must come after them in every case.
 */
import { RestartContext, RestartTask, StateKey } from '@cptrst/core';

export interface Step {
  /** What it sets, for error messages. */
  readonly what: string;
  run(): void;
}

const BEFORE = new StateKey<Step[]>('task.beforeCredsDrop');
const AFTER = new StateKey<Step[]>('task.afterCreds');

function list(task: RestartTask, key: StateKey<Step[]>): Step[] {
  return task.state.ensure(key, () => []);
}

/** Whether privileged steps of this restart wait until the credentials are dropped. */
export const heldToOwner = (ctx: RestartContext): boolean => !ctx.imageTrusted;

/** Runs `run` after the final credentials (in the order registered). */
export function afterCreds(task: RestartTask, what: string, run: () => void): void {
  list(task, AFTER).push({ what, run });
}

/** Runs `run` just before the credentials are dropped (to prepare what the after-steps need). */
export function beforeCredsDrop(task: RestartTask, what: string, run: () => void): void {
  list(task, BEFORE).push({ what, run });
}

/** Runs `run` now, or after the final credentials when the image is held to its owner's rights. */
export function nowOrAfterCreds(ctx: RestartContext, task: RestartTask, what: string, run: () => void): void {
  if (heldToOwner(ctx)) afterCreds(task, what, run);
  else run();
}

export const stepsBeforeDrop = (task: RestartTask): Step[] => list(task, BEFORE);
export const stepsAfterCreds = (task: RestartTask): Step[] => list(task, AFTER);
