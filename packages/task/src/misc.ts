/**
 * Per-process settings with no object of their own: CPU affinity, oom_score_adj, the
 * parent-death signal, timer slack, the child-subreaper flag, the dumpable flag, the I/O
 * priority, the core dump filter, the audit login uid, the machine-check kill policy and the
 * speculation mitigations chosen by prctl (TASK_MISC); and the refusals of task state that cptrst
 * cannot recreate yet: namespaces other than cptrst's own, securebits and SysV semaphore undo
 * state. (A disabled THP is mm's: it is saved with the MM object.)
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, Tracee, bool, bytes, i32, linux, objectType, refuse, u32, u64,
} from '@cptrst/core';
import { afterCreds, beforeCredsDrop, heldToOwner, nowOrAfterCreds } from './deferred';
import { setsChangedByTask } from './sysv-sem';

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
  /** PR_GET_DUMPABLE: 0 or 1 (2, set by the kernel after a set-id exec, is refused). */
  @u32({ since: 4 }) dumpable = 1;
  /** ioprio_get(IOPRIO_WHO_PROCESS): class << 13 | level. */
  @u32({ since: 4 }) ioprio = 0;
  /** /proc/PID/coredump_filter. */
  @u32({ since: 4 }) coredumpFilter = 0x33;
  /** /proc/PID/loginuid; LOGINUID_UNSET also when the kernel has no audit support. */
  @u32({ since: 4 }) loginuid: number = linux.LOGINUID_UNSET;
  /** PR_MCE_KILL_GET: what a memory error does to the process (PR_MCE_KILL.LATE, EARLY, DEFAULT). */
  @u32({ since: 4 }) mceKill: number = linux.PR_MCE_KILL.DEFAULT;
  /** PR_GET_SPECULATION_CTRL for store bypass, indirect branch and L1D flush, in that order. */
  @u32({ since: 4 }) specStoreBypass = 0;
  @u32({ since: 4 }) specIndirectBranch = 0;
  @u32({ since: 4 }) specL1dFlush = 0;
}

/** The mitigations PR_SET_SPECULATION_CTRL can choose, and the image field of each. */
const SPECULATION = [
  { which: linux.PR_SPEC.STORE_BYPASS, field: 'specStoreBypass', name: 'speculative store bypass' },
  { which: linux.PR_SPEC.INDIRECT_BRANCH, field: 'specIndirectBranch', name: 'indirect branch speculation' },
  { which: linux.PR_SPEC.L1D_FLUSH, field: 'specL1dFlush', name: 'L1D flush' },
] as const;
/** The bits of a speculation-control value that are the task's choice. */
const SPEC_STATE = linux.PR_SPEC.ENABLE | linux.PR_SPEC.DISABLE | linux.PR_SPEC.FORCE_DISABLE | linux.PR_SPEC.DISABLE_NOEXEC;

const cpusOf = (mask: Buffer): number[] => {
  const out: number[] = [];
  for (let i = 0; i < mask.length * 8; i++) if (mask[i >> 3] & (1 << (i & 7))) out.push(i);
  return out;
};

/** Opens /proc/self/NAME for writing inside the task (close-on-exec). */
function openOwnProcFile(t: Tracee, name: string): number {
  const path = t.stage(Buffer.from(`/proc/self/${name}\0`), 0);
  return Number(t.syscallOk(SYS.openat, [linux.AT_FDCWD, path, linux.O.WRONLY | linux.O.CLOEXEC, 0], `open(/proc/self/${name})`));
}

/** Writes `text` to fd (a /proc/self file) inside the task, then closes it. */
function writeOwnProcFile(t: Tracee, pid: number, fd: number, name: string, text: string): void {
  const data = Buffer.from(`${text}\n`);
  try {
    const r = t.syscall(SYS.write, [fd, t.stage(data, 0), data.length]);
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `write(${name}, ${text}) failed inside the process: ${linux.errnoName(Number(-r))}`, { pid, object: name });
  } finally {
    t.syscall(SYS.close, [fd]);
  }
}

/**
 * A /proc/self file the task writes with its owner's rights: opened just before the credentials
 * are dropped (a change of credentials makes the task's /proc files root's until its dumpable flag
 * is restored), written after, so that the kernel checks the write with the owner's rights.
 */
function writeOwnProcFileAfterDrop(task: RestartTask, name: string, text: string): void {
  const t = task.tracee!;
  let fd = -1;
  beforeCredsDrop(task, name, () => (fd = openOwnProcFile(t, name)));
  afterCreds(task, name, () => writeOwnProcFile(t, task.pid, fd, name, text));
}

/** ioprio_get of one process, read by cptrst (root may read any process's). */
function ioprioOf(pid: number): number {
  const r = linux.rawSyscall(SYS.ioprio_get, linux.IOPRIO_WHO_PROCESS, pid);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `ioprio_get: ${linux.errnoName(Number(-r))}`, { pid, object: 'I/O priority' });
  return Number(r);
}

/** /proc/PID/timerslack_ns (root may read any process's); undefined when it cannot be read. */
function timerslackOf(pid: number): bigint | undefined {
  try {
    return BigInt(linux.readProcText(`/proc/${pid}/timerslack_ns`, pid).trim());
  } catch {
    return undefined;
  }
}


/**
 * Whether the process may hold SEM_UNDO adjustments. They live in a per-process list that no
 * interface shows: the kernel applies them when the process ends (--kill included) and a new
 * process cannot be given them. Two facts together say it: a semaphore that the process was the
 * last to change (GETPID), and an undo list (kcmp KCMP_SYSVSEM against a fresh helper, which has
 * none; making a thread also gives a process an empty list, which is why the semaphores come first).
 */
function mayHoldSemUndo(task: CheckpointTask): boolean {
  const pid = task.pid;
  if (setsChangedByTask(task).length === 0) return false;
  const helper = linux.spawnSeizedHelper(0, 'the SEM_UNDO probe');
  try {
    return linux.kcmp(pid, helper.pid, linux.KCMP.SYSVSEM) !== 0;
  } finally {
    helper.kill();
  }
}

export class MiscDump implements DumpHandler {
  readonly name = 'task.misc';
  readonly order = MISC_ORDER;

  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    // Settings inherited across fork that are not recorded: the restored process would get
    // cptrst's (the defaults) instead.
    const asked = askTask(task.tracee);
    task.state.set(ASKED, asked);
    // KEEP_CAPS (PR_SET_KEEPCAPS) is part of the credentials (creds.ts); the others are refused.
    const securebits = asked.securebits & ~BigInt(linux.SECBIT_KEEP_CAPS);
    if (securebits > 0n) refuse(task.pid, `securebits 0x${securebits.toString(16)}`, 'the process has securebits set (PR_SET_SECUREBITS); they are not supported yet');
    if (asked.dumpable === BigInt(linux.SUID_DUMP.ROOT)) {
      refuse(task.pid, 'dumpable flag 2', 'the process is dumpable for root only (suid_dumpable after a set-id program); prctl cannot set that again');
    }
    if (mayHoldSemUndo(task)) {
      refuse(task.pid, 'SysV semaphore undo list', 'the process has used SEM_UNDO (it changed a semaphore last, and has an undo list); its semaphore adjustments cannot be read or restored (and would be applied when it ends)');
    }
    const ours = linux.readNamespaces('self');
    const theirs = linux.readNamespaces(task.pid);
    for (const kind of linux.NS_KINDS) {
      if (theirs[kind] !== undefined && ours[kind] !== undefined && theirs[kind] !== ours[kind]) {
        refuse(task.pid, `${kind} namespace ${kind}:[${theirs[kind]}]`, `the process is in another ${kind} namespace than cptrst (${kind}:[${ours[kind]}]); namespaces are not supported yet`);
      }
    }
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const asked = task.state.get(ASKED) ?? askTask(task.tracee);
    const ok = (r: bigint, what: string): bigint => {
      if (r < 0n && r > -4096n) throw new CptError(linux.errnoName(Number(-r)), `${what} failed inside the process: ${linux.errnoName(Number(-r))}`, { pid: task.pid, object: what });
      return r;
    };
    const img = new TaskMiscImage();
    const mask = Buffer.alloc(linux.cpuMaskBytes());
    const n = linux.rawSyscall(SYS.sched_getaffinity, task.pid, mask.length, mask);
    if (n < 0n) throw new CptError(linux.errnoName(Number(-n)), `sched_getaffinity: ${linux.errnoName(Number(-n))}`, { pid: task.pid, object: 'cpu affinity' });
    img.affinity = mask.subarray(0, Number(n));
    img.oomScoreAdj = linux.readOomScoreAdj(task.pid);
    ok(asked.pdeathsigResult, 'prctl(PR_GET_PDEATHSIG)');
    img.pdeathsig = asked.pdeathsig;
    img.timerslackNs = BigInt(linux.readProcText(`/proc/${task.pid}/timerslack_ns`, task.pid).trim());
    ok(asked.subreaperResult, 'prctl(PR_GET_CHILD_SUBREAPER)');
    img.childSubreaper = asked.subreaper !== 0;
    img.dumpable = Number(ok(asked.dumpable, 'prctl(PR_GET_DUMPABLE)'));
    img.ioprio = ioprioOf(task.pid);
    img.coredumpFilter = linux.readCoredumpFilter(task.pid);
    img.loginuid = linux.readLoginuid(task.pid) ?? linux.LOGINUID_UNSET;
    img.mceKill = Number(ok(asked.mceKill, 'prctl(PR_MCE_KILL_GET)'));
    SPECULATION.forEach((s, i) => (img[s.field] = asked.speculation[i] < 0n ? 0 : Number(asked.speculation[i])));
    ctx.write(img, task.tag);
  }
}

/** What only the task can answer about itself (prctl), asked once, at check, in one batch of calls. */
interface Asked {
  securebits: bigint;
  dumpable: bigint;
  pdeathsigResult: bigint;
  pdeathsig: number;
  subreaperResult: bigint;
  subreaper: number;
  mceKill: bigint;
  /** PR_GET_SPECULATION_CTRL of each SPECULATION entry (negative: the kernel does not know it). */
  speculation: bigint[];
  /** PR_GET_TID_ADDRESS, for task.identity (the main thread's clear_child_tid). */
  tidAddressResult: bigint;
  tidAddress: bigint;
}
const ASKED = new StateKey<Asked>('task.misc.asked');

/**
 * What the frozen task answered to task.misc's batch at check, for the handlers that need one of
 * the same answers (its securebits for task.creds, its clear_child_tid for task.identity): they
 * use it when the call succeeded and ask again themselves otherwise (a zombie is not asked).
 */
export function askedAtCheck(task: CheckpointTask): { readonly securebits: bigint; readonly tidAddressResult: bigint; readonly tidAddress: bigint } | undefined {
  return task.state.get(ASKED);
}

function askTask(t: Tracee): Asked {
  // What the kernel writes: two ints (PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER) 8 bytes apart,
  // then a pointer (PR_GET_TID_ADDRESS).
  const at = t.stage(Buffer.alloc(24), 0);
  const r = t.syscalls([
    { nr: SYS.prctl, args: [PR.GET_SECUREBITS, 0, 0, 0, 0] },
    { nr: SYS.prctl, args: [PR.GET_DUMPABLE, 0, 0, 0, 0] },
    { nr: SYS.prctl, args: [PR.GET_PDEATHSIG, at, 0, 0, 0] },
    { nr: SYS.prctl, args: [PR.GET_CHILD_SUBREAPER, at + 8n, 0, 0, 0] },
    { nr: SYS.prctl, args: [PR.MCE_KILL_GET, 0, 0, 0, 0] },
    { nr: SYS.prctl, args: [PR.GET_TID_ADDRESS, at + 16n, 0, 0, 0] },
    ...SPECULATION.map((s) => ({ nr: SYS.prctl, args: [PR.GET_SPECULATION_CTRL, s.which, 0, 0, 0] })),
  ]);
  const ints = t.readMemory(at, 24);
  return {
    securebits: r[0],
    dumpable: r[1],
    pdeathsigResult: r[2],
    pdeathsig: ints.readInt32LE(0),
    subreaperResult: r[3],
    subreaper: ints.readInt32LE(8),
    mceKill: r[4],
    tidAddressResult: r[5],
    tidAddress: ints.readBigUInt64LE(16),
    speculation: r.slice(6),
  };
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
    if (img.dumpable !== linux.SUID_DUMP.DISABLE && img.dumpable !== linux.SUID_DUMP.USER) throw bad(`dumpable flag ${img.dumpable}`);
    const mce = linux.PR_MCE_KILL;
    if (img.mceKill !== mce.LATE && img.mceKill !== mce.EARLY && img.mceKill !== mce.DEFAULT) throw bad(`machine-check kill policy ${img.mceKill}`);

    this.affinity(ctx, task, img.affinity);
    // Before the scheduling policy (identity's finish): a real-time task's slack is not its to set.
    if (img.timerslackNs !== 0n && timerslackOf(task.pid) !== img.timerslackNs) {
      t.syscallOk(SYS.prctl, [PR.SET_TIMERSLACK, img.timerslackNs, 0, 0, 0], `prctl(PR_SET_TIMERSLACK, ${img.timerslackNs})`);
    }
    if (img.childSubreaper) t.syscallOk(SYS.prctl, [PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0], 'prctl(PR_SET_CHILD_SUBREAPER)');
    this.oomScoreAdj(ctx, task, img.oomScoreAdj);
    this.ioprio(ctx, task, img.ioprio);
    if (linux.readCoredumpFilter(task.pid) !== img.coredumpFilter) linux.writeCoredumpFilter(task.pid, img.coredumpFilter);
    this.loginuid(ctx, task, img.loginuid);
    // What the new process has now, asked in one batch: set below only where it differs. Only
    // the mitigations the process could choose are asked (see speculation()).
    const chosen = SPECULATION.filter((s) => img[s.field] & linux.PR_SPEC.PRCTL);
    const [mceNow, ...specNow] = t.syscalls([
      { nr: SYS.prctl, args: [PR.MCE_KILL_GET, 0, 0, 0, 0] },
      ...chosen.map((s) => ({ nr: SYS.prctl, args: [PR.GET_SPECULATION_CTRL, s.which, 0, 0, 0] })),
    ]);
    this.mceKill(task, img.mceKill, mceNow);
    chosen.forEach((s, i) => this.speculation(task, s.which, s.name, img[s.field], specNow[i] < 0n ? 0 : Number(specNow[i])));
    // A change of credentials resets it to the system's suid_dumpable: after the last one.
    afterCreds(task, 'dumpable flag', () => {
      if (t.syscall(SYS.prctl, [PR.GET_DUMPABLE, 0, 0, 0, 0]) !== BigInt(img.dumpable)) {
        t.syscallOk(SYS.prctl, [PR.SET_DUMPABLE, img.dumpable, 0, 0, 0], `prctl(PR_SET_DUMPABLE, ${img.dumpable})`);
      }
    });
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
    // Inherited from cptrst, the mask is often the one wanted already (read from outside).
    const now = Buffer.alloc(buf.length);
    const n = linux.rawSyscall(SYS.sched_getaffinity, task.pid, now.length, now);
    if (n > 0n && now.equals(buf)) return;
    t.syscallOk(SYS.sched_setaffinity, [0, buf.length, t.stage(buf, 0)], `sched_setaffinity(${here.join(',')})`);
  }

  /**
   * The I/O priority, when it differs from the one inherited. A real-time class needs privilege:
   * an image root does not own asks for it with its owner's rights.
   */
  private ioprio(ctx: RestartContext, task: RestartTask, ioprio: number): void {
    if (ioprioOf(task.pid) === ioprio) return;
    const t = task.tracee!;
    nowOrAfterCreds(ctx, task, 'I/O priority', () => t.syscallOk(SYS.ioprio_set, [linux.IOPRIO_WHO_PROCESS, 0, ioprio], `ioprio_set(0x${ioprio.toString(16)})`));
  }

  /**
   * Only the process itself may write its login uid, and once it is set only with
   * CAP_AUDIT_CONTROL: the task writes it, as its owner when the image is held to its owner's
   * rights. (The audit session id that comes with it is new: the kernel hands those out.)
   */
  private loginuid(ctx: RestartContext, task: RestartTask, loginuid: number): void {
    const now = linux.readLoginuid(task.pid);
    if (now === undefined || now === loginuid) return;
    if (heldToOwner(ctx)) {
      writeOwnProcFileAfterDrop(task, 'loginuid', String(loginuid));
      return;
    }
    const t = task.tracee!;
    const fd = openOwnProcFile(t, 'loginuid');
    writeOwnProcFile(t, task.pid, fd, 'loginuid', String(loginuid));
  }


  private mceKill(task: RestartTask, policy: number, now: bigint): void {
    const t = task.tracee!;
    if (now === BigInt(policy)) return;
    const mce = linux.PR_MCE_KILL;
    const args = policy === mce.DEFAULT ? [PR.MCE_KILL, mce.CLEAR, 0, 0, 0] : [PR.MCE_KILL, mce.SET, policy, 0, 0];
    t.syscallOk(SYS.prctl, args, `prctl(PR_MCE_KILL, ${policy})`);
  }

  /**
   * A mitigation the process chose (the state bits of a value the kernel lets it set) is chosen
   * again; one it never could choose is left as it is here.
   */
  private speculation(task: RestartTask, which: number, name: string, recorded: number, here: number): void {
    if (!(recorded & linux.PR_SPEC.PRCTL)) return;
    const t = task.tracee!;
    if ((here & SPEC_STATE) === (recorded & SPEC_STATE)) return;
    const state = recorded & SPEC_STATE;
    const r = t.syscall(SYS.prctl, [PR.SET_SPECULATION_CTRL, which, state, 0, 0]);
    if (r < 0n) {
      const code = linux.errnoName(Number(-r));
      throw new CptError(code, `the process had ${name} set to 0x${state.toString(16)} by prctl; here it is 0x${here.toString(16)} and cannot be set (${code})`, { pid: task.pid, object: name });
    }
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
    writeOwnProcFileAfterDrop(task, 'oom_score_adj', String(value));
  }

}
