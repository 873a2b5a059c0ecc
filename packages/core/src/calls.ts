/**
 * Independent calls inside a task run as one batch (Tracee.syscalls, which an arch may run in one
 * stop), each named for the error that a failure gives, the same error as syscallOk's.
 */
import type { BatchCall, Tracee } from './contract';
import { CptError } from './errors';
import * as linux from './linux';

/** A call of a batch and what it does (`mmap of ...`), for the error. */
export interface NamedCall extends BatchCall {
  readonly what: string;
  /** Its result is not checked (a close, whose failure changes nothing); only last in a batch. */
  readonly mayFail?: boolean;
}

const failed = (r: bigint): boolean => r < 0n && r > -4096n;

/**
 * Runs `calls` in order, stopping at the first that fails, which throws as syscallOk would.
 * Returns every result. No call's arguments may depend on an earlier call's result.
 */
export function runCalls(t: Tracee, calls: ReadonlyArray<NamedCall>): bigint[] {
  if (!calls.length) return [];
  const out = t.syscalls(calls, { untilError: true });
  const last = out.length - 1;
  if (last >= 0 && failed(out[last]) && !calls[last].mayFail) {
    const code = linux.errnoName(Number(-out[last]));
    const what = calls[last].what;
    throw new CptError(code, `${what} failed inside the process: ${code}`, { pid: t.pid, object: what });
  }
  if (out.length !== calls.length) throw new CptError('EIO', `a batch of ${calls.length} calls ran ${out.length}`, { pid: t.pid, object: calls[0].what });
  return out;
}

/**
 * Whether the frozen task is a child subreaper (prctl PR_GET_CHILD_SUBREAPER, asked inside it: no
 * /proc file shows it); undefined when the call failed.
 */
export function isChildSubreaper(t: Tracee): boolean | undefined {
  const at = t.stage(Buffer.alloc(4), 0);
  if (t.syscall(linux.SYS.prctl, [linux.PR.GET_CHILD_SUBREAPER, at, 0, 0, 0]) !== 0n) return undefined;
  return t.readMemory(at, 4).readInt32LE(0) !== 0;
}
