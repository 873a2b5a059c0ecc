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
 * CAP_SYS_RESOURCE, which these machines do not give.
 */
function readLimit(t: Tracee, r: number): linux.Rlimit {
  const size = sizeOfStruct(linux.Rlimit);
  const out = t.stage(Buffer.alloc(size), 1024);
  t.syscallOk(SYS.prlimit64, [0, r, 0, out], `prlimit64(${linux.rlimitName(r)})`);
  return decodeStruct(linux.Rlimit, t.readMemory(out, size));
}

export class RlimitsDump implements DumpHandler {
  readonly name = 'task.rlimits';
  readonly order = RLIMITS_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const img = new RlimitsImage();
    for (let r = 0; r < linux.RLIM_NLIMITS; r++) {
      const l = readLimit(task.tracee, r);
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

function setLimits(task: RestartTask, img: RlimitsImage): void {
  const t = task.tracee!;
  for (let r = 0; r < img.cur.length && r < linux.RLIM_NLIMITS; r++) {
    const now = readLimit(t, r);
    if (now.cur === img.cur[r] && now.max === img.max[r]) continue;
    const buf = encodeStruct(linux.Rlimit, { cur: img.cur[r], max: img.max[r] });
    const res = t.syscall(SYS.prlimit64, [0, r, t.stage(buf), 0]);
    if (res < 0n) {
      const name = linux.rlimitName(r);
      throw new CptError(linux.errnoName(Number(-res)), `cannot set ${name} to ${img.cur[r]}/${img.max[r]} (the limit in force was ${now.cur}/${now.max})`, { pid: task.pid, object: name });
    }
  }
}
