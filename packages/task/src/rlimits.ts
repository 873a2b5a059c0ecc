/**
 * Resource limits, all of them, through prlimit64. At restart they are set from inside the new
 * process. Raising a hard limit above the one the process has (cptrst's own) needs
 * CAP_SYS_RESOURCE: a root-owned image's limits are set while the process is still root; any
 * other image's after its credentials are dropped, so that the kernel refuses, in the owner's
 * name, a hard limit the owner could not have raised.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, Tracee, decodeStruct, encodeStruct, linux, objectType, sizeOfStruct, u64s,
} from '@cptrst/core';
import { nowOrAfterCreds } from './deferred';

const { SYS } = linux;
export const RLIMITS_ORDER = 150;

@objectType(ObjectType.RLIMITS, 'rlimits', { parents: [ObjectType.TASK] })
export class RlimitsImage {
  @u64s() cur: bigint[] = [];
  @u64s() max: bigint[] = [];
}

/**
 * Read from inside the task: prlimit64 on another process whose uids differ from ours needs
 * CAP_SYS_RESOURCE, which these machines do not give. Only where /proc/PID/limits cannot be read.
 */
function readLimit(t: Tracee, r: number): linux.Rlimit {
  const size = sizeOfStruct(linux.Rlimit);
  const out = t.stage(Buffer.alloc(size), 1024);
  t.syscallOk(SYS.prlimit64, [0, r, 0, out], `prlimit64(${linux.rlimitName(r)})`);
  return decodeStruct(linux.Rlimit, t.readMemory(out, size));
}

/**
 * Every limit the kernel has a number for, from /proc/PID/limits (one read from outside, which
 * anyone may make, instead of a prlimit64 per limit inside the task); from inside the task when
 * that file cannot be read or lists fewer limits.
 */
function readLimits(t: Tracee): linux.Rlimit[] {
  let all: linux.Rlimit[] | undefined;
  try {
    all = linux.readLimits(t.pid);
  } catch {
    all = undefined;
  }
  if (all && all.length >= linux.RLIM_NLIMITS) return all.slice(0, linux.RLIM_NLIMITS).map((l) => ({ cur: l.cur, max: l.max }));
  const out: linux.Rlimit[] = [];
  for (let r = 0; r < linux.RLIM_NLIMITS; r++) out.push(readLimit(t, r));
  return out;
}

export class RlimitsDump implements DumpHandler {
  readonly name = 'task.rlimits';
  readonly order = RLIMITS_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const img = new RlimitsImage();
    for (const l of readLimits(task.tracee)) {
      img.cur.push(l.cur);
      img.max.push(l.max);
    }
    ctx.write(img, task.tag);
  }
}

export class RlimitsRestore implements RestoreHandler {
  readonly name = 'task.rlimits';
  readonly order = RLIMITS_ORDER;
  readonly types = [ObjectType.RLIMITS];
  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as RlimitsImage;
    if (img.cur.length !== img.max.length || img.cur.length > 64) throw new CptError('EBADIMG', 'malformed rlimits', { pid: task.pid, object: 'rlimits' });
    nowOrAfterCreds(ctx, task, 'resource limits', () => setLimits(task, img));
  }
}

/** The limits that differ from the ones in force, set from inside the task in one batch. */
function setLimits(task: RestartTask, img: RlimitsImage): void {
  const t = task.tracee!;
  const now = readLimits(t);
  const size = sizeOfStruct(linux.Rlimit);
  const todo: number[] = [];
  for (let r = 0; r < img.cur.length && r < linux.RLIM_NLIMITS; r++) if (now[r].cur !== img.cur[r] || now[r].max !== img.max[r]) todo.push(r);
  const calls = todo.map((r, i) => ({ nr: SYS.prlimit64, args: [0, r, t.stage(encodeStruct(linux.Rlimit, { cur: img.cur[r], max: img.max[r] }), i * size), 0] }));
  const res = t.syscalls(calls, { untilError: true });
  res.forEach((v, i) => {
    if (v >= 0n) return;
    const r = todo[i];
    const name = linux.rlimitName(r);
    throw new CptError(linux.errnoName(Number(-v)), `cannot set ${name} to ${img.cur[r]}/${img.max[r]} (the limit in force was ${now[r].cur}/${now[r].max})`, { pid: task.pid, object: name });
  });
}
