/**
 * Per-process settings with no object of their own: CPU affinity, oom_score_adj, the
 * parent-death signal, timer slack and the child-subreaper flag (TASK_MISC); and the refusals
 * of task state that cptrst cannot recreate yet: POSIX timers, namespaces other than cptrst's
 * own and securebits. (A disabled THP is mm's: it is saved with the MM object.)
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, Tracee, bool, bytes, i32, linux, objectType, refuse, u32, u64,
} from '@cptrst/core';
import { afterCreds, beforeCredsDrop, heldToOwner } from './deferred';

const { SYS, PR } = linux;
/** After the credentials (110), before the limits (150): nothing here needs them first. */
export const MISC_ORDER = 120;

@objectType(ObjectType.TASK_MISC, 'task-misc', { parents: [ObjectType.TASK] })
export class TaskMiscImage {
  /** sched_getaffinity's mask: bit N of byte N/8 is CPU N. */
  @bytes() affinity: Buffer = Buffer.alloc(0);
  @i32() oomScoreAdj = 0;
  /** PR_SET_PDEATHSIG, 0 if none. */
  @u32() pdeathsig = 0;
  /** The current timer slack (ns); 0 for a real-time task, whose slack the kernel ignores. */
  @u64() timerslackNs = 0n;
  @bool() childSubreaper = false;
}

const cpusOf = (mask: Buffer): number[] => {
  const out: number[] = [];
  for (let i = 0; i < mask.length * 8; i++) if (mask[i >> 3] & (1 << (i & 7))) out.push(i);
  return out;
};

/** An int the kernel writes at a pointer (PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER), read inside the task. */
function prctlGetInt(t: Tracee, option: number, what: string): number {
  const at = t.stage(Buffer.alloc(4), 0);
  t.syscallOk(SYS.prctl, [option, at, 0, 0, 0], what);
  return t.readMemory(at, 4).readInt32LE(0);
}

export class MiscDump implements DumpHandler {
  readonly name = 'task.misc';
  readonly order = MISC_ORDER;

  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    const timers = linux.readPosixTimers(task.pid);
    if (timers.length) {
      const t = timers[0];
      refuse(task.pid, `posix timer ${t.id} (clock ${t.clock}, signal ${t.signal}, notify ${t.notify})`, `the process has ${timers.length} POSIX timer(s) (timer_create); they are not supported yet`);
    }
    // Settings inherited across fork that are not recorded: the restored process would get
    // cptrst's (the defaults) instead.
    const t = task.tracee;
    // KEEP_CAPS (PR_SET_KEEPCAPS) is part of the credentials (creds.ts); the others are refused.
    const securebits = t.syscall(SYS.prctl, [PR.GET_SECUREBITS, 0, 0, 0, 0]) & ~BigInt(linux.SECBIT_KEEP_CAPS);
    if (securebits > 0n) refuse(task.pid, `securebits 0x${securebits.toString(16)}`, 'the process has securebits set (PR_SET_SECUREBITS); they are not supported yet');
    const ours = linux.readNamespaces('self');
    const theirs = linux.readNamespaces(task.pid);
    for (const kind of linux.NS_KINDS) {
      if (theirs[kind] !== undefined && ours[kind] !== undefined && theirs[kind] !== ours[kind]) {
        refuse(task.pid, `${kind} namespace ${kind}:[${theirs[kind]}]`, `the process is in another ${kind} namespace than cptrst (${kind}:[${ours[kind]}]); namespaces are not supported yet`);
      }
    }
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const t = task.tracee;
    const img = new TaskMiscImage();
    const mask = Buffer.alloc(linux.cpuMaskBytes());
    const n = linux.rawSyscall(SYS.sched_getaffinity, task.pid, mask.length, mask);
    if (n < 0n) throw new CptError(linux.errnoName(Number(-n)), `sched_getaffinity: ${linux.errnoName(Number(-n))}`, { pid: task.pid, object: 'cpu affinity' });
    img.affinity = mask.subarray(0, Number(n));
    img.oomScoreAdj = linux.readOomScoreAdj(task.pid);
    img.pdeathsig = prctlGetInt(t, PR.GET_PDEATHSIG, 'prctl(PR_GET_PDEATHSIG)');
    img.timerslackNs = BigInt(linux.readProcText(`/proc/${task.pid}/timerslack_ns`, task.pid).trim());
    img.childSubreaper = prctlGetInt(t, PR.GET_CHILD_SUBREAPER, 'prctl(PR_GET_CHILD_SUBREAPER)') !== 0;
    ctx.write(img, task.tag);
  }
}

export class MiscRestore implements RestoreHandler {
  readonly name = 'task.misc';
  readonly order = MISC_ORDER;
  readonly types = [ObjectType.TASK_MISC];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as TaskMiscImage;
    const t = task.tracee!;
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: 'task-misc' });
    if (img.affinity.length === 0 || img.affinity.length > 1024 || img.affinity.length % 8 !== 0) throw bad(`a CPU mask of ${img.affinity.length} bytes`);
    if (img.oomScoreAdj < linux.OOM_SCORE_ADJ_MIN || img.oomScoreAdj > linux.OOM_SCORE_ADJ_MAX) throw bad(`oom_score_adj ${img.oomScoreAdj}`);
    if (img.pdeathsig < 0 || img.pdeathsig > linux.NSIG) throw bad(`parent-death signal ${img.pdeathsig}`);

    this.affinity(ctx, task, img.affinity);
    // Before the scheduling policy (identity's finish): a real-time task's slack is not its to set.
    if (img.timerslackNs !== 0n) t.syscallOk(SYS.prctl, [PR.SET_TIMERSLACK, img.timerslackNs, 0, 0, 0], `prctl(PR_SET_TIMERSLACK, ${img.timerslackNs})`);
    if (img.childSubreaper) t.syscallOk(SYS.prctl, [PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0], 'prctl(PR_SET_CHILD_SUBREAPER)');
    this.oomScoreAdj(ctx, task, img.oomScoreAdj);
    // Any change of credentials clears it: after the last one.
    if (img.pdeathsig !== 0) afterCreds(task, 'parent-death signal', () => t.syscallOk(SYS.prctl, [PR.SET_PDEATHSIG, img.pdeathsig, 0, 0, 0], `prctl(PR_SET_PDEATHSIG, ${img.pdeathsig})`));
  }

  /** The CPUs of the image that exist here; none is an error, some missing a warning. */
  private affinity(ctx: RestartContext, task: RestartTask, mask: Buffer): void {
    const want = cpusOf(mask);
    const online = new Set(linux.onlineCpus());
    const here = want.filter((c) => online.has(c));
    if (here.length === 0) {
      throw new CptError('EINVAL', `the process may run only on CPU(s) ${want.join(',') || '(none)'}, and none of them is online here (${[...online].join(',')})`, { pid: task.pid, object: 'cpu affinity' });
    }
    if (here.length < want.length) ctx.log.warn(`pid ${task.pid}: CPU(s) ${want.filter((c) => !online.has(c)).join(',')} of its affinity are not online here; it runs on ${here.join(',')}`);
    const t = task.tracee!;
    const buf = Buffer.alloc(Math.max(mask.length, linux.cpuMaskBytes()));
    mask.copy(buf);
    t.syscallOk(SYS.sched_setaffinity, [0, buf.length, t.stage(buf, 0)], `sched_setaffinity(${here.join(',')})`);
  }

  /**
   * A root-owned image's value is written by cptrst. Any other image's is written by the task
   * itself once its credentials are dropped, through a file opened just before: below the floor
   * it inherited, the kernel then requires CAP_SYS_RESOURCE of the owner.
   */
  private oomScoreAdj(ctx: RestartContext, task: RestartTask, value: number): void {
    if (linux.readOomScoreAdj(task.pid) === value) return;
    if (!heldToOwner(ctx)) {
      linux.writeOomScoreAdj(task.pid, value);
      return;
    }
    const t = task.tracee!;
    let fd = -1;
    beforeCredsDrop(task, 'oom_score_adj', () => {
      const path = t.stage(Buffer.from('/proc/self/oom_score_adj\0'), 0);
      fd = Number(t.syscallOk(SYS.openat, [linux.AT_FDCWD, path, linux.O.WRONLY | linux.O.CLOEXEC, 0], 'open(/proc/self/oom_score_adj)'));
    });
    afterCreds(task, 'oom_score_adj', () => {
      const text = Buffer.from(`${value}\n`);
      try {
        const r = t.syscall(SYS.write, [fd, t.stage(text, 0), text.length]);
        if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `write(oom_score_adj, ${value}) failed inside the process: ${linux.errnoName(Number(-r))}`, { pid: task.pid, object: 'oom_score_adj' });
      } finally {
        t.syscall(SYS.close, [fd]);
      }
    });
  }
}
