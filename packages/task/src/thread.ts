/**
 * The threads of a process other than its main thread: one THREAD object each, under the TASK.
 * It holds what the kernel keeps per thread and the other handlers do not: the thread id, its
 * name, blocked mask, alternate signal stack, scheduling (policy, real-time priority, nice), CPU
 * affinity, timer slack, parent-death signal, rseq registration, robust futex list and
 * clear_child_tid (the word pthread_join waits on), and the system call it was frozen in (for
 * people reading `cptrst show`). Signals pending for the thread alone (SIGPENDING) and
 * credentials that differ from the main thread's (TASK_CREDS) are children of the THREAD object;
 * registers, FPU and debug registers are the arch's children of it.
 *
 * The alternate stack, clear_child_tid, timer slack and parent-death signal are read by calls
 * run inside the thread, over a signal frame below its own stack pointer. Those frames are gone
 * (the stack bytes back) before the memory is dumped.
 *
 * At restart every thread is made inside the restored process once its memory is back: clone3
 * with CLONE_THREAD and set_tid = [tid], run in the main thread, which traces clones, so the new
 * thread starts stopped and traced (and dies with cptrst, as the process does). Its own state is
 * then set by calls run inside it; its registers, FPU state and mask come from the arch's finish
 * hooks and the release, which lets every thread go with the main thread.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, NamedCall, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, TaskState, TaskThread, Tokens, Tracee, archOf, bytes, decodeStruct, encodeStruct, i32, linux,
  objectType, refuse, runCalls, sizeOfStruct, str, u32, u64,
} from '@cptrst/core';
import { afterCreds, nowOrAfterCreds } from './deferred';
import { PID_WAIT_MS } from './create';
import { CREDS_KEY, THREAD_CREDS_KEY, credsOf, mainKeepCapsBit, setCredentials } from './creds';
import { THREAD_PENDING } from './signals';

const { SYS, PR, ptrace, PTRACE_O } = linux;

/** After the limits (150), before mm (200): the signal frames in the threads' stacks are gone before any page is read. */
export const THREAD_ORDER = 190;

/** Threads named in a refusal (one line, even for a thousand threads). */
const MAX_NAMED = 16;
/** The robust list head glibc registers (struct robust_list_head): the kernel accepts only this size. */
const ROBUST_LIST_HEAD_SIZE = 24n;

@objectType(ObjectType.THREAD, 'thread', { parents: [ObjectType.TASK] })
export class ThreadImage {
  @u32() tid = 0;
  @str() comm = '';
  /** The system call it was frozen in, -1 if none (for `cptrst show`; the registers say it all). */
  @i32() syscall = -1;
  @u64() blocked = 0n;
  @u64() altstackSp = 0n;
  @i32() altstackFlags = 0;
  @u64() altstackSize = 0n;
  /** set_tid_address / CLONE_CHILD_CLEARTID: zeroed and woken when the thread exits. */
  @u64() clearChildTid = 0n;
  @u64() robustListHead = 0n;
  @u64() robustListLen = 0n;
  @u64() rseqAddr = 0n;
  @u32() rseqLen = 0;
  @u32() rseqSig = 0;
  @u32() policy = 0;
  @u32() rtPriority = 0;
  @i32() nice = 0;
  @bytes() affinity: Buffer = Buffer.alloc(0);
  @u64() timerslackNs = 0n;
  @u32() pdeathsig = 0;
}

/** A thread's SECBIT_KEEP_CAPS, read at check. */
const SECUREBITS = new StateKey<number>('task.thread.securebits');
/** A thread's THREAD object at restart. */
const THREAD_KEY = new StateKey<ThreadImage>('task.thread');

const threadsOf = (task: { threads?: TaskThread[] }): TaskThread[] => task.threads ?? [];

function prctlGetInt(t: Tracee, option: number, what: string): number {
  const at = t.stage(Buffer.alloc(8), 0);
  t.syscallOk(SYS.prctl, [option, at, 0, 0, 0], what);
  return t.readMemory(at, 4).readInt32LE(0);
}

function named(tids: number[]): string {
  return tids.slice(0, MAX_NAMED).join(',') + (tids.length > MAX_NAMED ? ` and ${tids.length - MAX_NAMED} more` : '');
}

export class ThreadDump implements DumpHandler {
  readonly name = 'task.threads';
  readonly order = THREAD_ORDER;

  /** What a thread has that cannot be made again: refused, naming the threads. */
  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    const securebits: number[] = [];
    // Threads are made sharing the main thread's cwd and umask, fd table, SysV undo list and
    // namespaces: one that unshared any of them cannot be made again.
    const shared: Array<[string, number]> = [['file-system context (cwd, root, umask)', linux.KCMP.FS], ['fd table', linux.KCMP.FILES], ['SysV semaphore undo list', linux.KCMP.SYSVSEM]];
    const mainNs = linux.readNamespaces(task.pid);
    for (const th of threadsOf(task)) {
      const own = shared.filter(([, type]) => linux.kcmp(task.pid, th.tid, type) !== 0).map(([what]) => `its own ${what}`);
      const ns = linux.readNamespaces(task.pid, th.tid);
      for (const kind of linux.NS_KINDS) if (ns[kind] !== mainNs[kind]) own.push(`its own ${kind} namespace`);
      if (own.length) refuse(task.pid, `thread ${th.tid}`, `thread ${th.tid} has ${own.join(', ')} (unshare in one thread); a thread that does not share these with its process is not supported`);
    }
    for (const th of threadsOf(task)) {
      const bits = Number(th.tracee!.syscallOk(SYS.prctl, [PR.GET_SECUREBITS, 0, 0, 0, 0], `prctl(PR_GET_SECUREBITS) in thread ${th.tid}`));
      th.state.set(SECUREBITS, bits & linux.SECBIT_KEEP_CAPS);
      if (bits & ~linux.SECBIT_KEEP_CAPS) securebits.push(th.tid);
    }
    if (securebits.length) refuse(task.pid, `threads ${named(securebits)}`, `${securebits.length} thread(s) have securebits set (PR_SET_SECUREBITS); they are not supported yet`);
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const threads = threadsOf(task);
    if (!threads.length) return;
    const arch = archOf(ctx.container);
    const mainCreds = credsText(task.pid, task.tid, mainKeepCapsBit(task));
    const ss = sizeOfStruct(linux.StackT);
    for (const th of threads) {
      const t = th.tracee!;
      const st = linux.readStat(task.pid, th.tid);
      const img = new ThreadImage();
      img.tid = th.tid;
      img.comm = st.comm;
      img.syscall = arch.syscallState(t.frozenRegs).nr;
      img.blocked = t.blockedSignals;
      img.policy = st.policy;
      img.rtPriority = st.rtPriority;
      img.nice = st.nice;
      const rseq = ptrace.getRseqConfiguration(th.tid);
      img.rseqAddr = rseq.rseqAbiPointer;
      img.rseqLen = rseq.rseqAbiSize;
      img.rseqSig = rseq.signature;
      img.affinity = affinityOf(task.pid, th.tid);
      [img.robustListHead, img.robustListLen] = robustListOf(task.pid, th.tid);
      // Inside the thread: what only the thread itself can ask.
      const at = t.stage(Buffer.alloc(ss), 64);
      t.syscallOk(SYS.sigaltstack, [0, at], `sigaltstack in thread ${th.tid}`);
      const alt = decodeStruct(linux.StackT, t.readMemory(at, ss));
      img.altstackSp = alt.sp;
      img.altstackFlags = alt.flags;
      img.altstackSize = alt.size;
      img.clearChildTid = clearChildTidOf(t, `thread ${th.tid}`);
      img.timerslackNs = t.syscallOk(SYS.prctl, [PR.GET_TIMERSLACK, 0, 0, 0, 0], `prctl(PR_GET_TIMERSLACK) in thread ${th.tid}`);
      img.pdeathsig = prctlGetInt(t, PR.GET_PDEATHSIG, `prctl(PR_GET_PDEATHSIG) in thread ${th.tid}`);
      const securebits = th.state.get(SECUREBITS)!;
      // Its stack bytes back now: the memory dump reads the pages as the thread left them.
      t.restore(arch.resumeRegs(t.frozenRegs, 'original'));
      th.tag = ctx.write(img, task.tag);
      if (credsText(task.pid, th.tid, securebits) !== mainCreds) ctx.write(credsOf(task.pid, th.tid, securebits), th.tag);
    }
  }
}

/** The thread's own sched_getaffinity mask. */
function affinityOf(pid: number, tid: number): Buffer {
  const mask = Buffer.alloc(linux.cpuMaskBytes());
  const n = linux.rawSyscall(SYS.sched_getaffinity, tid, mask.length, mask);
  if (n < 0n) throw new CptError(linux.errnoName(Number(-n)), `sched_getaffinity of thread ${tid}: ${linux.errnoName(Number(-n))}`, { pid, object: `thread ${tid}` });
  return mask.subarray(0, Number(n));
}

/** A thread's credentials, to tell whether they differ from the main thread's. */
function credsText(pid: number, tid: number, securebits: number): string {
  const s = linux.readStatus(pid, tid);
  return JSON.stringify([s.uid, s.gid, s.groups, String(s.capInh), String(s.capPrm), String(s.capEff), String(s.capBnd), String(s.capAmb), s.noNewPrivs, securebits]);
}

export class ThreadRestore implements RestoreHandler {
  readonly name = 'task.threads';
  readonly order = THREAD_ORDER;
  readonly types = [ObjectType.THREAD];

  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as ThreadImage;
    validate(task, img);
    task.threads ??= [];
    if (img.tid === task.pid || task.threads.some((t) => t.tid === img.tid)) {
      throw new CptError('EBADIMG', `thread ${img.tid} appears twice`, { pid: task.pid, object: `thread ${img.tid}` });
    }
    task.threads.push({ tid: img.tid, tag: o.tag, state: new TaskState([[THREAD_KEY, img]]) });
  }

  /** Every object of the task is read, its memory is back: the threads are made and given their state. */
  finish(ctx: RestartContext, task: RestartTask): void {
    const threads = threadsOf(task);
    if (!threads.length) return;
    const main = task.tracee!;
    ctx.timed('threads', () => {
      // Threads made by the main thread's clone3 start stopped and traced, like the process.
      ptrace.setOptions(task.pid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.EXITKILL);
      const flags = linux.CLONE.VM | linux.CLONE.FS | linux.CLONE.FILES | linux.CLONE.SIGHAND | linux.CLONE.THREAD | linux.CLONE.SYSVSEM;
      for (const th of threads) {
        th.tracee = makeThread(ctx, task, main, th.tid, BigInt(flags));
        setUp(ctx, task, th);
      }
    });
  }

  abort(_ctx: RestartContext, task: RestartTask): void {
    // The process's SIGKILL (the task's abort) takes every thread; their tracees are only forgotten.
    for (const th of threadsOf(task)) th.tracee?.forget();
  }
}

function validate(task: RestartTask, img: ThreadImage): void {
  const bad = (m: string) => new CptError('EBADIMG', `thread ${img.tid}: ${m}`, { pid: task.pid, object: `thread ${img.tid}` });
  if (!Number.isInteger(img.tid) || img.tid <= 0 || img.tid > 4194304) throw bad('not a thread id');
  if (img.affinity.length > 1024 || img.affinity.length % 8 !== 0) throw bad(`a CPU mask of ${img.affinity.length} bytes`);
  if (img.pdeathsig < 0 || img.pdeathsig > linux.NSIG) throw bad(`parent-death signal ${img.pdeathsig}`);
  checkRobustList(img.robustListHead, img.robustListLen, bad);
  if (img.comm.length > 64) throw bad('a name longer than a thread name');
}

/** get_robust_list of one thread, asked by cptrst: [head, len]. */
export function robustListOf(pid: number, tid: number): [bigint, bigint] {
  const head = Buffer.alloc(8);
  const len = Buffer.alloc(8);
  const r = linux.rawSyscall(SYS.get_robust_list, tid, head, len);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `get_robust_list of thread ${tid}: ${linux.errnoName(Number(-r))}`, { pid, object: `thread ${tid}` });
  return [head.readBigUInt64LE(0), len.readBigUInt64LE(0)];
}

/** The thread's clear_child_tid (set_tid_address), asked inside it: only the thread itself may. */
export function clearChildTidOf(t: Tracee, what: string): bigint {
  const ptr = t.stage(Buffer.alloc(8), 0);
  t.syscallOk(SYS.prctl, [PR.GET_TID_ADDRESS, ptr, 0, 0, 0], `prctl(PR_GET_TID_ADDRESS) in ${what}`);
  return t.readMemory(ptr, 8).readBigUInt64LE(0);
}

/** A robust list head of the one size the kernel takes, or none. */
export function checkRobustList(head: bigint, len: bigint, bad: (m: string) => Error): void {
  if (head !== 0n && len !== ROBUST_LIST_HEAD_SIZE) throw bad(`a robust list head of ${len} bytes`);
}

/**
 * A thread's robust list and clear_child_tid back, by calls inside it (a new thread has neither),
 * in one batch with `first` (other independent calls of the caller, each checked like these).
 */
export function restoreFutexAddresses(t: Tracee, head: bigint, len: bigint, clearChildTid: bigint, what: string, first: ReadonlyArray<NamedCall> = []): void {
  const calls: NamedCall[] = [...first];
  if (head !== 0n) calls.push({ nr: SYS.set_robust_list, args: [head, len], what: `set_robust_list in ${what}` });
  // It returns the thread's id, and cannot fail.
  if (clearChildTid !== 0n) calls.push({ nr: SYS.set_tid_address, args: [clearChildTid], what: `set_tid_address in ${what}`, mayFail: true });
  runCalls(t, calls);
}

/** clone3 inside the main thread with set_tid = [tid]; a tid still held is waited for, as a PID is. */
function makeThread(ctx: RestartContext, task: RestartTask, main: Tracee, tid: number, flags: bigint): Tracee {
  const setTid = Buffer.alloc(8);
  setTid.writeInt32LE(tid, 0);
  const setTidAddr = main.stage(setTid, 128);
  const args = encodeStruct(linux.CloneArgs, { flags, exitSignal: 0n, setTid: setTidAddr, setTidSize: 1n });
  const argsAddr = main.stage(args, 0);
  const deadline = Date.now() + PID_WAIT_MS;
  for (;;) {
    const r = main.syscall(SYS.clone3, [argsAddr, args.length]);
    if (r === -BigInt(linux.ERRNO.EEXIST) && Date.now() < deadline) {
      linux.sleepMs(50);
      continue;
    }
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `clone3 of thread ${tid} failed: ${linux.errnoName(Number(-r))}`, { pid: task.pid, object: `thread ${tid}` });
    if (Number(r) !== tid) {
      linux.killAndReap(Number(r));
      throw new CptError('EINVAL', `clone3 made thread ${r}, not ${tid}`, { pid: task.pid, object: `thread ${tid}` });
    }
    break;
  }
  linux.waitForEventStop(tid, `thread ${tid}`);
  ctx.log.debug(`pid ${task.pid}: thread ${tid} made`);
  return ctx.one(Tokens.TraceeFactory).threadOf(main, tid);
}

/** The thread's own state, by calls inside it; its pending signals queued again by itself. */
function setUp(ctx: RestartContext, task: RestartTask, th: TaskThread): void {
  const img = th.state.get(THREAD_KEY)!;
  const t = th.tracee!;
  const what = (w: string) => `${w} in thread ${th.tid}`;
  t.blockedSignals = img.blocked; // applied when it is let go
  restoreFutexAddresses(t, img.robustListHead, img.robustListLen, img.clearChildTid, `thread ${th.tid}`);
  if (!(img.altstackFlags & linux.SS.DISABLE)) {
    const b = encodeStruct(linux.StackT, { sp: img.altstackSp, flags: img.altstackFlags & linux.SS.AUTODISARM, size: img.altstackSize });
    t.syscallOk(SYS.sigaltstack, [t.stage(b, 64), 0], what('sigaltstack'));
  }
  if (img.rseqAddr !== 0n) t.syscallOk(SYS.rseq, [img.rseqAddr, img.rseqLen, 0, img.rseqSig], what('rseq registration'));
  const name = Buffer.alloc(16);
  name.write(img.comm.slice(0, 15), 'utf8');
  t.syscallOk(SYS.prctl, [PR.SET_NAME, t.stage(name, 0)], what(`prctl(PR_SET_NAME, ${img.comm})`));
  if (img.affinity.length) {
    const buf = Buffer.alloc(Math.max(img.affinity.length, linux.cpuMaskBytes()));
    img.affinity.copy(buf);
    const online = new Set(linux.onlineCpus());
    const want = [...buf.keys()].flatMap((i) => [0, 1, 2, 3, 4, 5, 6, 7].filter((b) => buf[i] & (1 << b)).map((b) => i * 8 + b));
    if (want.some((c) => online.has(c))) t.syscallOk(SYS.sched_setaffinity, [0, buf.length, t.stage(buf, 0)], what('sched_setaffinity'));
    else throw new CptError('EINVAL', `thread ${th.tid} may run only on CPU(s) ${want.join(',')}, and none of them is online here`, { pid: task.pid, object: `thread ${th.tid}` });
  }
  // A real-time thread's slack is 0 and not its to set.
  if (img.timerslackNs !== 0n && img.policy !== 1 && img.policy !== 2) t.syscallOk(SYS.prctl, [PR.SET_TIMERSLACK, img.timerslackNs, 0, 0, 0], what('prctl(PR_SET_TIMERSLACK)'));
  // By the thread itself: the kernel lets only the target thread queue a siginfo that says it
  // came from kill() or tgkill().
  for (const info of th.state.get(THREAD_PENDING) ?? []) {
    const signo = info.readInt32LE(0);
    t.syscallOk(SYS.rt_tgsigqueueinfo, [task.pid, th.tid, signo, t.stage(info, 0)], what(`queueing ${linux.signalName(signo)}`));
  }
  // Its credentials first: for an image held to its owner's rights, what follows is then asked
  // with the owner's rights (its scheduling); the parent-death signal after them (a change of
  // credentials clears it).
  afterCreds(task, `credentials of thread ${th.tid}`, () => {
    const creds = th.state.get(THREAD_CREDS_KEY) ?? task.state.get(CREDS_KEY);
    if (!creds) throw new CptError('EBADIMG', 'the image gives no credentials for this task', { pid: task.pid, object: 'creds' });
    setCredentials(t, task.pid, th.tid, creds);
  });
  nowOrAfterCreds(ctx, task, `scheduling of thread ${th.tid}`, () => {
    const st = linux.readStat(task.pid, th.tid);
    if (img.policy !== st.policy || img.rtPriority !== st.rtPriority) {
      const param = encodeStruct(linux.SchedParam, { priority: img.rtPriority });
      t.syscallOk(SYS.sched_setscheduler, [0, img.policy, t.stage(param, 0)], what(`sched_setscheduler(${img.policy}, ${img.rtPriority})`));
    }
    if (img.nice !== linux.readStat(task.pid, th.tid).nice) t.syscallOk(SYS.setpriority, [0, th.tid, img.nice], what(`setpriority(nice ${img.nice})`));
  });
  if (img.pdeathsig !== 0) afterCreds(task, `parent-death signal of thread ${th.tid}`, () => t.syscallOk(SYS.prctl, [PR.SET_PDEATHSIG, img.pdeathsig, 0, 0, 0], what('prctl(PR_SET_PDEATHSIG)')));
}
