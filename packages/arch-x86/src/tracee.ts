/**
 * A stopped thread under ptrace, and "run this syscall in that task": how both flows act inside a
 * task where the kernel offers no interface from outside.
 *
 * An injected syscall: registers point at a `syscall` instruction with the call's number and
 * arguments, orig_rax = -1 so the kernel does no syscall-restart processing on the way out of
 * the stop we are in, then PTRACE_SYSCALL to the entry stop and again to the exit stop, where
 * rax holds the result.
 *
 * cptrst may die at any moment (SIGKILL), and a SEIZEd task is then detached and resumed where it
 * stands. So a task that must survive us (the checkpoint target) never stands anywhere that
 * would harm it: every injected call returns into code that ends in rt_sigreturn on a signal
 * frame holding the task's frozen state (sigframe.ts).
 *
 * Where it can, the frame goes below the task's stack pointer (past the red zone, where the
 * kernel would put a signal frame) and stays there while we hold the task; the bytes it covers
 * are kept and shown in their place to whoever reads that memory through the tracee, and put
 * back at release. The calls then use a `syscall ... ret` sequence of the task's own code (the
 * vDSO has one) and a signal restorer `mov $15,%eax; syscall` (libc's), and the scratch area's
 * code is
 *   syscall                                      the injected call
 *   mov $11,%eax; mov $area,%rdi; mov $size,%esi munmap of the scratch area itself...
 *   mov $syscall_ret,%rcx; jmp *%rcx             ...run from the task's `syscall ... ret`,
 * whose `ret` pops the frame's pretcode (the restorer): so a task left behind removes the
 * scratch area and returns to its frozen state. The mmap of the area and its final munmap run
 * on that `syscall ... ret` directly.
 *
 * Without such code, or room on the stack, the frame goes into the top of the scratch area and
 * the code is `syscall; mov $15,%eax; syscall; int3` with rsp = frame + 8; then the mmap and the
 * munmap run unguarded (a window of one call each), and a task left behind keeps the area.
 * A task that dies with cptrst anyway (PTRACE_O_EXITKILL, at restart) gets neither, and its
 * calls run in one stop each (a single step over the `syscall`, runStep).
 *
 * A batch (syscalls) runs in one stop: a stub after the one-call code runs a table of calls and
 * raises a signal that the task ignores, which a traced task reports to its tracer and an
 * untraced one discards; the stub then goes the one-call code's way back (runBatch).
 */
import './syscalls';
import { ArchRegs, BatchCall, CptError, MemorySnapshot, ScratchArea, Tracee, TraceeFactory, TraceeOptions, isChildSubreaper, linux, requeueIntercepted } from '@cptrst/core';
import { USER_REGS_SIZE, UserRegs, asUserRegs, decodeUserRegs, userRegOffset, x86ptrace } from './regs-codec';
import { MachineCode } from './machine-code';
import { resumeRegs, syscallState } from './syscall-restart';
import { buildSigframe, sigframeBytes } from './sigframe';
import { STUB_WAIT4_AT, firstCopyArgs, forkFromFirstCopy, overlaySaved, snapshotCloneStub } from './snapshot';

const { waitpid, SYS, PROT, MAP, SIG, ERRNO, errnoName } = linux;
const ptrace = x86ptrace;

/** syscall; mov $15,%eax; syscall; int3 (see above). */
const STUB_CODE = Buffer.from([0x0f, 0x05, 0xb8, SYS.rt_sigreturn, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xcc]);
/** Where a task stands after an injected call returned: the code after the stub's `syscall`. */
const STUB_AFTER_CALL = 2n;

/** syscall; then munmap of the area through the task's `syscall ... ret` (see above). */
function selfUnmappingStub(area: bigint, size: number, syscallRet: bigint): Buffer {
  const c = new MachineCode(35);
  const { bytes, u32, u64 } = c;
  bytes(0x0f, 0x05); // syscall
  bytes(0xb8, SYS.munmap, 0, 0, 0); // mov $munmap,%eax
  bytes(0x48, 0xbf); // movabs $area,%rdi
  u64(area);
  bytes(0xbe); // mov $size,%esi
  u32(size);
  bytes(0x48, 0xb9); // movabs $syscall_ret,%rcx
  u64(syscallRet);
  bytes(0xff, 0xe1, 0xcc); // jmp *%rcx; int3
  return c.done('the self-unmapping stub');
}
/**
 * The batch stub (Tracee.syscalls in one stop): runs the table at `header` (see BATCH below),
 * storing each result and the count of calls made, stops after the first failure when asked,
 * then raises the header's signal on its own thread with rt_tgsigqueueinfo (the header's
 * siginfo, which carries a cookie; getpid and gettid give the ids in the task's own pid
 * namespace, which may not be cptrst's) and jumps to `tail`, the code after the one-call stub's
 * `syscall`: the way back to the frozen state. It touches no memory but the table, and not rsp.
 */
function batchStub(header: bigint, tail: bigint): Buffer {
  const c = new MachineCode(BATCH.raisedAt + 12);
  const { bytes, u32, u64 } = c;
  bytes(0x48, 0xbb); // movabs $header,%rbx
  u64(header);
  bytes(0x4c, 0x8b, 0x2b); // mov (%rbx),%r13              count
  bytes(0x4c, 0x8d, 0xa3, BATCH.headerSize, 0, 0, 0); // lea entries(%rbx),%r12
  bytes(0x45, 0x31, 0xf6); // xor %r14d,%r14d             calls made
  // loop:
  bytes(0x4d, 0x39, 0xee); // cmp %r13,%r14
  bytes(0x73, 0x42); // jae done
  bytes(0x49, 0x8b, 0x04, 0x24); // mov (%r12),%rax        nr
  bytes(0x49, 0x8b, 0x7c, 0x24, 0x08); // mov 8(%r12),%rdi
  bytes(0x49, 0x8b, 0x74, 0x24, 0x10); // mov 16(%r12),%rsi
  bytes(0x49, 0x8b, 0x54, 0x24, 0x18); // mov 24(%r12),%rdx
  bytes(0x4d, 0x8b, 0x54, 0x24, 0x20); // mov 32(%r12),%r10
  bytes(0x4d, 0x8b, 0x44, 0x24, 0x28); // mov 40(%r12),%r8
  bytes(0x4d, 0x8b, 0x4c, 0x24, 0x30); // mov 48(%r12),%r9
  bytes(0x0f, 0x05); // syscall
  bytes(0x49, 0x89, 0x44, 0x24, 0x38); // mov %rax,56(%r12)   result
  bytes(0x49, 0xff, 0xc6); // inc %r14
  bytes(0x4c, 0x89, 0x73, 0x10); // mov %r14,16(%rbx)      calls made
  bytes(0x49, 0x83, 0xc4, BATCH.entrySize); // add $64,%r12
  bytes(0xf6, 0x43, 0x08, 0x01); // testb $1,8(%rbx)        until an error?
  bytes(0x74, 0xc1); // je loop
  bytes(0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff); // cmp $-4095,%rax
  bytes(0x72, 0xb9); // jb loop                            not an error
  // done: the task's own ids, as its pid namespace numbers them (not as cptrst sees them)
  bytes(0xb8); // mov $getpid,%eax
  u32(SYS.getpid);
  bytes(0x0f, 0x05); // syscall
  bytes(0x49, 0x89, 0xc7); // mov %rax,%r15            tgid
  bytes(0xb8); // mov $gettid,%eax
  u32(SYS.gettid);
  bytes(0x0f, 0x05); // syscall
  bytes(0x48, 0x89, 0xc6); // mov %rax,%rsi             tid
  bytes(0x4c, 0x89, 0xff); // mov %r15,%rdi
  bytes(0xb8); // mov $rt_tgsigqueueinfo,%eax
  u32(SYS.rt_tgsigqueueinfo);
  bytes(0x48, 0x8b, 0x53, 0x28); // mov 40(%rbx),%rdx     signal
  bytes(0x4c, 0x8d, 0x53, 0x40); // lea 64(%rbx),%r10     siginfo
  bytes(0x0f, 0x05); // syscall
  if (c.offset !== BATCH.raisedAt) throw new CptError('EINVAL', `batch stub: raise ends at ${c.offset}, not ${BATCH.raisedAt}`);
  bytes(0x48, 0xb9); // movabs $tail,%rcx
  u64(tail);
  bytes(0xff, 0xe1); // jmp *%rcx
  return c.done('the batch stub');
}

export const SCRATCH_SIZE = 64 * 1024;
const SCRATCH_CODE_SIZE = 64;
/**
 * The batch: its code after the one-call stub, then a header (count, flags, calls made, two unused
 * words, signal, siginfo at 64) and entries of 64 bytes (nr, six arguments, result), up to where the
 * data area starts.
 */
const BATCH = {
  codeAt: SCRATCH_CODE_SIZE,
  raisedAt: 0x84,
  headerAt: 256,
  headerSize: 192,
  entrySize: 64,
  dataAt: 8192,
} as const;
/** Calls one batch stub run takes; longer batches run in several. */
const BATCH_MAX = (BATCH.dataAt - BATCH.headerAt - BATCH.headerSize) / BATCH.entrySize;
const ALL_SIGNALS = 0xffffffffffffffffn;
/**
 * Calls that never run in a batch stub: those that change the thread's mask (the raise must get
 * through), never return, or return elsewhere. A batch holding one runs one call at a time.
 */
const NOT_IN_BATCH: ReadonlySet<number> = new Set(
  ['rt_sigprocmask', 'rt_sigsuspend', 'rt_sigreturn', 'exit', 'exit_group', 'execve', 'execveat', 'vfork', 'fork', 'clone', 'clone3', 'seccomp'].map((n) => linux.syscallNumber(n)),
);
/** Whether a call may run in a batch stub: nor one of NOT_IN_BATCH, nor one that starts seccomp (which could deny the stub's raise). */
function batchable(c: BatchCall): boolean {
  if (NOT_IN_BATCH.has(c.nr)) return false;
  return !(c.nr === SYS.prctl && Number(c.args?.[0]) === linux.PR.SET_SECCOMP);
}
const RAX = userRegOffset('rax');
const RIP = userRegOffset('rip');
/** The registers an injected call sets; the others keep their frozen values. */
const CALL_REGS = (['rax', 'rdi', 'rsi', 'rdx', 'r10', 'r8', 'r9'] as const).map((f) => userRegOffset(f));
const ORIG_RAX = userRegOffset('orig_rax');
const RSP = userRegOffset('rsp');
/**
 * Signals a batch never raises: sending them acts at once (SIGKILL, SIGCONT resumes a stopped
 * group) or flushes a pending SIGCONT (the stop signals); SIGTRAP is the single step's.
 */
const NEVER_RAISED = linux.sigsetFromList([SIG.SIGKILL, SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU, SIG.SIGCONT, SIG.SIGTRAP]);
/** Signals whose default action is to ignore them (SIGCONT aside). */
const DEFAULT_IGNORED: readonly number[] = [SIG.SIGURG, SIG.SIGWINCH, SIG.SIGCHLD];
/** The legacy signals (1-31): one of them pending is never queued twice, and never refused for lack of queue space. */
const LEGACY = Array.from({ length: 31 }, (_, i) => i + 1);
/** The top of the scratch area holds the signal frame (and is the injected calls' stack). */
const SCRATCH_FRAME_REGION = 16 * 1024;
/** The x86-64 ABI's red zone: the 128 bytes below rsp belong to the running function. */
const RED_ZONE = 128n;
const XSTATE_MAX = 64 * 1024;

/** How the scratch area was made and will be removed, for tests and the docs' windows. */
export type CallGuard = 'stack-frame' | 'unguarded' | 'none';

/** A batch let run (startBatch), to be waited for (finishBatch). */
interface StartedBatch {
  calls: ReadonlyArray<BatchCall>;
  from: number;
  n: number;
  untilError: boolean;
  sig: number;
  header: bigint;
  tableLen: number;
}

interface StackFrame {
  at: bigint;
  /** What the task's memory held there before. */
  saved: Buffer;
}

export class X86Tracee implements Tracee {
  /** Registers as found at the freeze (or at creation). */
  readonly frozenRegs: UserRegs;
  /** Signals dequeued while we ran syscalls inside it: they must be queued again (siginfo, 128 bytes each). */
  readonly interceptedSignals: Buffer[] = [];
  blockedSignals: bigint;
  /** Whether the task must survive cptrst's death (false: it dies with cptrst, PTRACE_O_EXITKILL). */
  readonly guarded: boolean;
  /** How the mmap of the scratch area ran, and how its munmap ran (for tests). */
  firstCall: CallGuard = 'none';
  lastCall: CallGuard = 'none';
  /** Where the code the guarded calls run on came from: found before the freeze and checked, or searched after it (for tests). */
  gadgetSource: 'none' | 'prepared' | 'searched' = 'none';
  /** Stops waited for while running calls in it (for tests and the benchmark: a batch takes one). */
  stops = 0;
  /** The mask set with PTRACE_SETSIGMASK last (undefined: the thread's own, untouched). */
  private maskSet?: bigint;
  /** The registers of every injected call: the frozen ones, with the call's own written in (struct user_regs_struct). */
  private readonly callRegs: Buffer;
  /** What the siginfo of a batch's own signal carries in si_value: anything else is a real signal. */
  private readonly cookie = linux.randomBytes(8).readBigUInt64LE(0);
  /**
   * The process's /proc status as read once (its seccomp mode, ignored and caught signals): while
   * we hold the process only our own injected rt_sigaction and seccomp calls change those, and
   * they drop it. Kept on the main thread's tracee.
   */
  private status?: linux.ProcStatus;
  /** The table of a batch as it goes in and comes back. */
  private batchBuf?: Buffer;
  private syscallInsn?: bigint;
  private scratchArea?: ScratchArea;
  /** The frame in the scratch area: injected calls run with rsp = frame + 8 (when there is no stack frame). */
  private frameAddr?: bigint;
  /** The frame below the task's stack pointer, while we hold the task: injected calls run with rsp = frame. */
  private stackFrameHeld?: StackFrame;
  private gadgets?: { syscallRet: bigint; restorer: bigint } | null;
  /** The gadgets found before the freeze (X86TraceeFactory.prepare): used once they are checked to still hold. */
  private readonly preparedGadgets?: PreparedGadgets;
  private mem?: linux.ProcMem;
  private done = false;

  /**
   * The main thread's tracee, for another thread of its process: that thread uses the main
   * thread's scratch area for its arguments, its code finder and its view of memory, and maps
   * nothing of its own. A guarded one runs each call on the task's `syscall ... ret` over a signal
   * frame below its own stack pointer (held until restore()); one that dies with cptrst runs them
   * on the main thread's `syscall`.
   */
  private readonly main?: X86Tracee;

  constructor(readonly pid: number, readonly tid: number, opts: { syscallInsn?: bigint; main?: X86Tracee; prepared?: PreparedGadgets } & TraceeOptions = {}) {
    const regs = Buffer.alloc(USER_REGS_SIZE);
    ptrace.getRegsRaw(tid, regs);
    this.frozenRegs = decodeUserRegs(regs);
    this.callRegs = regs;
    this.blockedSignals = ptrace.getSigmask(tid);
    this.syscallInsn = opts.syscallInsn;
    this.main = opts.main;
    this.guarded = opts.main ? opts.main.guarded : !opts.diesWithTracer;
    this.preparedGadgets = opts.prepared;
    this.status = opts.status;
  }

  get released(): boolean {
    return this.done;
  }

  syscall(nr: number, args: ReadonlyArray<number | bigint> = []): bigint {
    this.alive();
    let r: bigint;
    if (this.main) {
      r = this.threadSyscall(nr, args, this.main);
    } else {
      // A task that must survive us gets its scratch area (and with it the signal frame) first.
      if (this.guarded && !this.scratchArea) this.scratch();
      const s = this.scratchArea;
      r = this.call(nr, args, s ? s.addr : this.insn(), s ? this.callStack() : undefined);
    }
    if (nr === SYS.rt_sigaction) this.sigactionRan(args);
    if (nr === SYS.seccomp || (nr === SYS.prctl && Number(args[0]) === linux.PR.SET_SECCOMP)) (this.main ?? this).status = undefined;
    return r;
  }

  /**
   * A call that must return within `ms` milliseconds, else ETIMEDOUT with the call still running
   * (the caller then kills the task: only for a copy that dies with cptrst, see snapshot.ts).
   */
  syscallWithin(nr: number, args: ReadonlyArray<number | bigint>, ms: number): bigint {
    this.waitUntil = Date.now() + ms;
    try {
      return this.syscall(nr, args);
    } finally {
      this.waitUntil = undefined;
    }
  }
  private waitUntil?: number;

  /** The process's status, read once (see `status`). */
  private processStatus(): linux.ProcStatus {
    const owner = this.main ?? this;
    return (owner.status ??= linux.readStatus(this.pid));
  }

  /** Whether the process runs under seccomp (strict or a filter). */
  private underSeccomp(): boolean {
    return this.processStatus().seccomp !== 0;
  }

  syscallOk(nr: number, args: ReadonlyArray<number | bigint>, what: string): bigint {
    return this.check(this.syscall(nr, args), what);
  }

  /**
   * In one stop per BATCH_MAX calls where it can (see runBatch); one call at a time in another
   * thread of the process, or where no signal can end the batch.
   */
  syscalls(calls: ReadonlyArray<BatchCall>, opts: { untilError?: boolean } = {}): bigint[] {
    this.alive();
    const untilError = opts.untilError === true;
    const out: bigint[] = [];
    let i = 0;
    while (i < calls.length) {
      const n = Math.min(BATCH_MAX, calls.length - i);
      const part = n > 1 && !this.main && calls.every(batchable) ? this.runBatch(calls, i, n, untilError) : undefined;
      if (!part) break;
      out.push(...part);
      i += n;
      if (untilError && (part.length < n || isError(part[part.length - 1]))) return out;
    }
    for (; i < calls.length; i++) {
      const r = this.syscall(calls[i].nr, calls[i].args ?? []);
      out.push(r);
      if (untilError && isError(r)) break;
    }
    return out;
  }

  scratch(): ScratchArea {
    if (this.main) return this.main.scratch();
    if (this.scratchArea) return this.scratchArea;
    this.alive();
    const args = [0, SCRATCH_SIZE, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0];
    const what = 'mmap of the scratch area';
    // One read of the mappings for both the gadgets and the stack; the other threads' stacks are
    // in it too (the scratch area is about to come, and no stack is in it).
    const maps = this.guarded ? linux.readMaps(this.pid) : undefined;
    if (maps) this.threadMaps ??= maps;
    const g = maps ? this.findGadgets(maps) : undefined;
    const frame = g ? this.stackFrame(g.restorer, maps) : undefined;
    if (!g || !frame) {
      this.firstCall = this.guarded ? 'unguarded' : 'none';
      const addr = this.check(this.call(SYS.mmap, args, this.insn(), undefined), what);
      this.adoptScratch(addr);
      if (this.guarded) this.park();
      requeueIntercepted(this);
      return this.scratchArea!;
    }
    this.firstCall = 'stack-frame';
    let addr: bigint;
    try {
      addr = this.check(this.run(SYS.mmap, args, g.syscallRet, frame.at), what);
      this.stackFrameHeld = frame;
      this.adoptScratch(addr);
    } catch (e) {
      // Stand at the release position (what the frame would give), then give the stack its bytes back.
      this.stackFrameHeld = undefined;
      this.putBackFrozen();
      this.unwriteStackFrame(frame);
      throw e;
    }
    // The task stands on `ret` over the stack frame: move it onto the scratch area's code, which
    // would unmap the area and then come back to the same frame.
    this.park();
    // Intercepted signals go back into the queue now that they can: cptrst's death then loses none.
    requeueIntercepted(this);
    return this.scratchArea!;
  }

  /** Makes an existing mapping at `addr` (SCRATCH_SIZE, rwx) the scratch area and puts the syscall code in it. */
  adoptScratch(addr: bigint): void {
    if (this.main) throw new CptError('EINVAL', `thread ${this.tid} uses the main thread's scratch area`, { pid: this.pid, object: `thread ${this.tid}` });
    const frameAt = addr + BigInt(SCRATCH_SIZE - SCRATCH_FRAME_REGION);
    const area: ScratchArea = {
      addr,
      size: SCRATCH_SIZE,
      dataAddr: addr + BigInt(BATCH.dataAt),
      dataSize: SCRATCH_SIZE - BATCH.dataAt - SCRATCH_FRAME_REGION, // the frame region is the injected calls' stack
    };
    const code = Buffer.alloc(BATCH.headerAt);
    (this.stackFrameHeld && this.gadgets ? selfUnmappingStub(addr, SCRATCH_SIZE, this.gadgets.syscallRet) : STUB_CODE).copy(code, 0);
    batchStub(addr + BigInt(BATCH.headerAt), addr + STUB_AFTER_CALL).copy(code, BATCH.codeAt);
    this.writeMemory(addr, code);
    if (this.guarded && !this.stackFrameHeld) {
      const xsave = this.xsave();
      if (sigframeBytes(xsave.length) > SCRATCH_FRAME_REGION) {
        throw new CptError('E2BIG', `a signal frame with an XSAVE area of ${xsave.length} bytes does not fit the scratch area`, { pid: this.pid, object: 'scratch area' });
      }
      this.writeMemory(frameAt, buildSigframe({ at: frameAt, regs: this.frameRegs(), sigmask: this.blockedSignals, xsave }));
    }
    this.scratchArea = area;
    this.frameAddr = frameAt;
    this.syscallInsn = addr;
  }

  stage(data: Buffer, offset = 0): bigint {
    const s = this.scratch();
    if (offset < 0 || offset + data.length > s.dataSize) {
      throw new CptError('E2BIG', `${data.length} bytes do not fit the scratch area at offset ${offset}`, { pid: this.pid, object: 'scratch area' });
    }
    const at = s.dataAddr + BigInt(offset);
    this.writeMemory(at, data);
    return at;
  }

  readMemory(addr: bigint, length: number): Buffer {
    const b = this.memory().read(addr, length);
    this.showSaved(addr, b, 0, b.length);
    return b;
  }

  writeMemory(addr: bigint, data: Buffer): void {
    this.memory().write(addr, data);
  }

  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void {
    this.memory().readFully(addr, buf, offset, length);
    this.showSaved(addr, buf, offset, length);
  }

  /** Where the stack frame covers what was read, the task's own bytes are shown instead. */
  private showSaved(addr: bigint, buf: Buffer, offset: number, length: number): void {
    overlaySaved(this.stackFrameHeld, addr, buf, offset, length);
  }

  /**
   * A copy-on-write snapshot of the process's memory (snapshot.ts): clone3 on the staged stub,
   * the first copy forks the snapshot and is killed, then the task reaps it in the stub's wait4
   * and stands where it stands after any injected call.
   */
  snapshotMemory(log: (why: string) => void): MemorySnapshot | undefined {
    this.alive();
    if (!this.guarded) {
      log('only a process that outlives cptrst gets a snapshot');
      return undefined;
    }
    const s = this.scratch();
    if (isChildSubreaper(this) !== false) {
      log('the process is a child subreaper (it would adopt the snapshot process)');
      return undefined;
    }
    const { args, size } = firstCopyArgs();
    const argsAt = this.stage(args, 0);
    const stub = snapshotCloneStub(s.addr + STUB_AFTER_CALL);
    const stubAt = this.stage(stub, s.dataSize - stub.length);
    const first = this.run(SYS.clone3, [argsAt, size], stubAt, this.callStack());
    if (first <= 0n) {
      this.park();
      log(`clone3 inside the process failed: ${errnoName(Number(-first))}`);
      return undefined;
    }
    // The task stands between the clone and the wait4 that reaps the first copy: every way on
    // from here (ours, or the kernel's if cptrst dies) reaps it.
    const firstPid = Number(first);
    const frame = this.stackFrameHeld ? { at: this.stackFrameHeld.at, saved: Buffer.from(this.stackFrameHeld.saved) } : undefined;
    let snap: MemorySnapshot | undefined;
    try {
      // Tracees of the first child and the snapshot, made at their first stop (they read the
      // registers); both have the scratch area's `syscall` at the same address.
      const copies = new Map<number, X86Tracee>();
      const status = this.processStatus();
      const runIn = (pid: number, nr: number, a: number[], withinMs?: number): bigint => {
        let c = copies.get(pid);
        // A copy has the process's seccomp mode and signal dispositions (clone3 and fork copy them).
        if (!c) copies.set(pid, (c = new X86Tracee(pid, pid, { diesWithTracer: true, syscallInsn: s.addr, status })));
        return withinMs === undefined ? c.syscall(nr, a) : c.syscallWithin(nr, a, withinMs);
      };
      try {
        snap = forkFromFirstCopy(firstPid, runIn, frame, status.seccomp !== 0);
      } finally {
        for (const c of copies.values()) c.forget();
      }
    } catch (e) {
      log(`no snapshot: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      linux.killAndReap(firstPid);
    }
    // The stub's wait4, from its entry to its exit stop.
    try {
      const at = ptrace.getRegs(this.tid).rip;
      if (at !== stubAt + 2n) throw new CptError('EIO', `after clone3 the process stands at 0x${at.toString(16)}, not in the snapshot code`, { pid: this.pid, object: 'memory snapshot' });
      const wait4 = linux.syscallNumber('wait4');
      this.stepToSyscallStop(wait4);
      this.stepToSyscallStop(wait4);
      const reaped = BigInt.asIntN(64, ptrace.getRegs(this.tid).rax);
      if (reaped !== first) throw new CptError('EIO', `the process's wait4 for the first copy (${firstPid}) returned ${reaped}`, { pid: this.pid, object: 'memory snapshot' });
      if (ptrace.getRegs(this.tid).rip !== stubAt + BigInt(STUB_WAIT4_AT) + 2n) throw new CptError('EIO', 'the wait4 ran elsewhere', { pid: this.pid, object: 'memory snapshot' });
    } catch (e) {
      snap?.close();
      throw e;
    }
    this.park();
    return snap;
  }

  reservedRanges(): Array<{ start: bigint; end: bigint }> {
    if (this.main) return this.main.reservedRanges();
    return this.scratchArea ? [{ start: this.scratchArea.addr, end: this.scratchArea.addr + BigInt(this.scratchArea.size) }] : [];
  }

  /** Forgets the scratch area without unmapping it (restart unmaps everything else around it). */
  dropScratchRecord(): void {
    this.scratchArea = undefined;
  }

  /**
   * Ends the injected calls (the release order of the safety design): the scratch area's munmap is
   * the last call, run through the task's `syscall ... ret` over a stack frame where there is one;
   * then the mask and `regs`. The stack bytes under the frame are put back in any case.
   */
  restore(regs: ArchRegs): void {
    this.alive();
    const final = asUserRegs(regs);
    if (this.main) {
      // Nothing of its own to unmap: its mask, its registers, then its stack bytes back.
      const held = this.stackFrameHeld;
      try {
        this.setMask(this.blockedSignals);
        ptrace.setRegs(this.tid, final);
      } finally {
        if (held) {
          this.stackFrameHeld = undefined;
          this.unwriteStackFrame(held);
        }
      }
      return;
    }
    if (this.scratchArea) {
      // The syscall instruction lives in the scratch area: this munmap is the last call we run.
      const s = this.scratchArea;
      const held = this.stackFrameHeld;
      const g = this.guarded && !held ? this.findGadgets() : this.gadgets;
      const frame = held ?? (g ? this.stackFrame(g.restorer) : undefined);
      if (g && frame) {
        this.lastCall = 'stack-frame';
        try {
          this.run(SYS.munmap, [s.addr, s.size], g.syscallRet, frame.at);
          this.scratchArea = undefined;
          this.setMask(this.blockedSignals);
          ptrace.setRegs(this.tid, final);
        } finally {
          this.stackFrameHeld = undefined;
          this.unwriteStackFrame(frame);
        }
      } else {
        this.lastCall = this.guarded ? 'unguarded' : 'none';
        this.call(SYS.munmap, [s.addr, s.size], s.addr, this.callStack());
        this.scratchArea = undefined;
      }
    }
    this.setMask(this.blockedSignals);
    ptrace.setRegs(this.tid, final);
  }

  detach(): void {
    this.alive();
    try {
      ptrace.detach(this.tid, 0);
    } finally {
      this.forget();
    }
  }

  /** Marks the tracee gone (it died, or something else released it). */
  forget(): void {
    this.done = true;
    if (!this.main) this.mem?.close();
  }

  /** One call in another thread of the main thread's process (see `main`). */
  private threadSyscall(nr: number, args: ReadonlyArray<number | bigint>, main: X86Tracee): bigint {
    if (!this.guarded) return this.call(nr, args, main.insn(), undefined);
    main.scratch(); // its data area holds the arguments
    const g = main.findGadgets();
    if (!g) {
      throw new CptError('EOPNOTSUPP', `no \`syscall ... ret\` and signal restorer in the task's code: a call cannot run in thread ${this.tid} safely`, { pid: this.pid, object: `thread ${this.tid}` });
    }
    if (!this.stackFrameHeld) {
      const f = this.stackFrame(g.restorer);
      if (!f) throw new CptError('EOPNOTSUPP', `no writable room below the stack pointer of thread ${this.tid} for a signal frame`, { pid: this.pid, object: `thread ${this.tid}` });
      this.stackFrameHeld = f;
    }
    return this.run(nr, args, g.syscallRet, this.stackFrameHeld.at);
  }

  /**
   * One call: in one stop by a single step where that is safe (runStep), else in two (run). A call
   * that sets SIGTRAP's handler takes two: the step's own SIGTRAP would meet the new disposition.
   */
  private call(nr: number, args: ReadonlyArray<number | bigint>, rip: bigint, rsp: bigint | undefined): bigint {
    const setsTrap = nr === SYS.rt_sigaction && Number(args[0]) === SIG.SIGTRAP && args.length > 1 && BigInt(args[1]) !== 0n;
    return !setsTrap && this.stepsSafely() ? this.runStep(nr, args, rip, rsp) : this.run(nr, args, rip, rsp);
  }

  /**
   * Runs one call with rip at a `syscall` instruction and (when given) that stack pointer. The
   * registers are set before the mask: a tracer that dies in between leaves the task on its way
   * into the call, and from there into rt_sigreturn, which gives it its own mask back.
   */
  private run(nr: number, args: ReadonlyArray<number | bigint>, rip: bigint, rsp: bigint | undefined): bigint {
    this.setCallRegs(nr, args, rip, rsp);
    // No signal may be delivered while we borrow the thread: they stay pending instead.
    this.useMask(this.callMask());
    this.stepToSyscallStop(nr); // entry
    this.stepToSyscallStop(nr); // exit
    return BigInt.asIntN(64, ptrace.peekUser(this.tid, RAX));
  }

  /**
   * One call in one stop, for a task that dies with cptrst: PTRACE_SINGLESTEP over the `syscall`
   * instruction, which the kernel reports at the call's exit with a SIGTRAP (TRAP_BRKPT). The
   * trap flag would outlive a tracer's death, and a SIGTRAP forced on a task that blocks or
   * ignores it resets its handler: so never for a guarded task, SIGTRAP is left unblocked while
   * we borrow the thread (callMask), and none of this once SIGTRAP may be ignored (stepsSafely).
   */
  private runStep(nr: number, args: ReadonlyArray<number | bigint>, rip: bigint, rsp: bigint | undefined): bigint {
    this.setCallRegs(nr, args, rip, rsp);
    this.useMask(this.callMask());
    const after = rip + 2n;
    ptrace.singlestep(this.tid, 0);
    const regs = this.stopRegs();
    for (;;) {
      const s = this.waitStop(nr);
      if (s.event !== 0 || s.sig === (SIG.SIGTRAP | 0x80)) {
        ptrace.singlestep(this.tid, 0);
        continue;
      }
      const info = ptrace.getSiginfo(this.tid);
      if (s.sig === SIG.SIGTRAP) {
        ptrace.getRegsRaw(this.tid, regs);
        if (regs.readBigUInt64LE(RIP) === after) {
          // A SIGTRAP of someone else's that was pending already took the place of ours: keep it.
          if (info.readInt32LE(8) !== linux.TRAP_BRKPT) this.interceptedSignals.push(info);
          return BigInt.asIntN(64, regs.readBigUInt64LE(RAX));
        }
      }
      // A signal delivered before the call ran: kept to be queued again, and suppressed.
      this.interceptedSignals.push(info);
      ptrace.singlestep(this.tid, 0);
    }
  }
  private stopRegsBuf?: Buffer;
  private stopRegs(): Buffer {
    return (this.stopRegsBuf ??= Buffer.alloc(USER_REGS_SIZE));
  }

  /** The frozen registers with the call's own (rax, the arguments, rip, rsp, orig_rax = -1), set with one PTRACE_SETREGS. */
  private setCallRegs(nr: number, args: ReadonlyArray<number | bigint>, rip: bigint, rsp: bigint | undefined): void {
    const b = this.callRegs;
    b.writeBigUInt64LE(BigInt(nr), CALL_REGS[0]);
    for (let i = 0; i < 6; i++) b.writeBigUInt64LE(i < args.length ? u64(args[i]) : 0n, CALL_REGS[i + 1]);
    b.writeBigUInt64LE(ALL_SIGNALS, ORIG_RAX);
    b.writeBigUInt64LE(rip, RIP);
    b.writeBigUInt64LE(rsp ?? this.frozenRegs.rsp, RSP);
    ptrace.setRegsRaw(this.tid, b);
  }

  /**
   * The mask while we borrow the thread: every signal, so that none is delivered under our feet
   * (they stay pending). A task that dies with cptrst keeps SIGTRAP unblocked for the single step.
   */
  private callMask(): bigint {
    return this.guarded ? ALL_SIGNALS : ALL_SIGNALS & ~linux.sigBit(SIG.SIGTRAP);
  }

  private useMask(mask: bigint): void {
    if (this.maskSet !== mask) this.setMask(mask);
  }

  /** Whether calls may run by a single step: never in a guarded task, and only while SIGTRAP is not ignored (see runStep). */
  private stepsSafely(): boolean {
    if (this.guarded) return false;
    return (this.processStatus().sigIgn & linux.sigBit(SIG.SIGTRAP)) === 0n;
  }

  /** After an injected rt_sigaction that set a handler: what we knew of the dispositions may be stale. */
  private sigactionRan(args: ReadonlyArray<number | bigint>): void {
    if (args.length < 2 || BigInt(args[1]) === 0n) return;
    (this.main ?? this).status = undefined;
  }

  /**
   * Runs calls[from, from + n) in one stop: the table goes into the scratch area in one write,
   * the task runs the batch stub under PTRACE_CONT with only the batch's signal unblocked, and
   * the stub ends by raising that signal on its own thread. A traced task reports even an ignored
   * signal to its tracer (a signal-delivery stop, here right after the raise); the results come
   * back in one read. Undefined (nothing ran) when no signal can end the batch (batchSignal).
   *
   * A task whose tracer dies runs the rest of the table, then the raise, which an untraced task
   * discards (the signal is one it ignores), then the one-call stub's way back to its frozen state
   * (rt_sigreturn on the signal frame). So a batch in a guarded task holds calls that are harmless
   * to run to their end, as any injected call in flight is.
   */
  private runBatch(calls: ReadonlyArray<BatchCall>, from: number, n: number, untilError: boolean): bigint[] | undefined {
    const started = this.startBatch(calls, from, n, untilError);
    return started && this.finishBatch(started);
  }

  /**
   * startSyscalls: a batch that the task runs while cptrst goes on (a restart's task, which dies
   * with cptrst: a batch in a guarded task is never left running behind our back). The tracee
   * is busy until the returned function has collected the results.
   */
  startSyscalls(calls: ReadonlyArray<BatchCall>): (() => bigint[]) | undefined {
    this.alive();
    if (this.guarded || this.main || calls.length < 1 || calls.length > BATCH_MAX || !calls.every(batchable)) return undefined;
    const started = this.startBatch(calls, 0, calls.length, false);
    if (!started) return undefined;
    this.running = true;
    let results: bigint[] | undefined;
    return () => {
      if (results) return results;
      if (this.done) throw new CptError('ESRCH', 'the process is no longer under cptrst control', { pid: this.pid });
      this.running = false;
      results = this.finishBatch(started);
      return results;
    };
  }
  private running = false;

  /** The first half of runBatch: the table written, the task let run (PTRACE_CONT). Undefined (nothing done) when no signal can end it. */
  private startBatch(calls: ReadonlyArray<BatchCall>, from: number, n: number, untilError: boolean): StartedBatch | undefined {
    if (this.guarded && !this.scratchArea) this.scratch();
    // In a guarded task, not a signal whose handler the batch sets: on the death path the raise
    // must stay a signal the task ignores. (A traced task reports the raise whatever its handler.)
    let handled = 0n;
    for (let k = from; k < from + n && this.guarded; k++) {
      const a = calls[k].args ?? [];
      if (calls[k].nr === SYS.rt_sigaction && a.length > 1 && BigInt(a[1]) !== 0n) handled |= linux.sigBit(Number(a[0]));
    }
    // A seccomp filter may deny the raise (or getpid/gettid): the task would go back to its
    // frozen state and run on, and no stop would ever come. Such a task gets one call at a time.
    if (this.underSeccomp()) return undefined;
    const sig = this.batchSignal(handled);
    if (sig === undefined) return undefined;
    const s = this.scratch();
    const tableLen = BATCH.headerSize + n * BATCH.entrySize;
    const b = (this.batchBuf ??= Buffer.alloc(BATCH.headerSize + BATCH_MAX * BATCH.entrySize));
    b.fill(0, 0, tableLen);
    b.writeBigUInt64LE(BigInt(n), 0);
    b.writeBigUInt64LE(untilError ? 1n : 0n, 8);
    b.writeBigUInt64LE(BigInt(sig), 40);
    // The siginfo of the raise (SI_QUEUE, the cookie in si_value).
    b.writeInt32LE(sig, 64);
    b.writeInt32LE(linux.SI_QUEUE, 64 + 8);
    b.writeInt32LE(this.pid, 64 + 16);
    b.writeBigUInt64LE(this.cookie, 64 + 24);
    for (let k = 0; k < n; k++) {
      const c = calls[from + k];
      const o = BATCH.headerSize + k * BATCH.entrySize;
      b.writeBigUInt64LE(BigInt(c.nr), o);
      const a = c.args ?? [];
      for (let j = 0; j < a.length && j < 6; j++) b.writeBigUInt64LE(u64(a[j]), o + 8 + j * 8);
    }
    const header = s.addr + BigInt(BATCH.headerAt);
    this.writeMemory(header, b.subarray(0, tableLen));
    // Registers first, then the mask (as for one call): the stub's way back gives the task its own mask.
    this.setCallRegs(0, [], s.addr + BigInt(BATCH.codeAt), this.callStack());
    this.useMask(this.callMask() & ~linux.sigBit(sig));
    ptrace.cont(this.tid, 0);
    return { calls, from, n, untilError, sig, header, tableLen };
  }

  /** The second half: waits for the batch's end and reads its results. */
  private finishBatch({ calls, from, n, untilError, sig, header, tableLen }: StartedBatch): bigint[] {
    const s = this.scratchArea!;
    const b = this.batchBuf!;
    this.awaitRaise(sig, s.addr + BigInt(BATCH.codeAt + BATCH.raisedAt));
    this.useMask(this.callMask());
    this.readMemoryInto(header, b, 0, tableLen);
    const ran = Number(b.readBigUInt64LE(16));
    if (ran > n || (!untilError && ran !== n)) {
      throw new CptError('EIO', `the batch of ${n} calls inside the process made ${ran}`, { pid: this.pid, object: 'injected calls' });
    }
    const out: bigint[] = [];
    for (let k = 0; k < ran; k++) out.push(BigInt.asIntN(64, b.readBigUInt64LE(BATCH.headerSize + k * BATCH.entrySize + 56)));
    for (let k = 0; k < ran; k++) if (calls[from + k].nr === SYS.rt_sigaction) this.sigactionRan(calls[from + k].args ?? []);
    return out;
  }

  /**
   * Waits (the task was let run with PTRACE_CONT) for the batch's signal-delivery stop: the raise's siginfo (the cookie), or the
   * signal at the stub's raise with someone else's siginfo (a real one, pending when ours came,
   * took its place). Any other signal is taken off the task to be queued again, as in
   * stepToSyscallStop. The task then stands in that stop, right after the raise: resumed without a
   * signal by the next call, or, if cptrst dies, it discards the ignored signal and goes back to
   * its frozen state.
   */
  private awaitRaise(sig: number, raisedAt: bigint): void {
    for (;;) {
      const s = this.waitStop(-1);
      if (s.event === 0 && s.sig !== (SIG.SIGTRAP | 0x80)) {
        const info = ptrace.getSiginfo(this.tid);
        if (s.sig === sig) {
          if (info.readInt32LE(8) === linux.SI_QUEUE && info.readBigUInt64LE(24) === this.cookie && info.readInt32LE(16) === this.pid) return;
          if (ptrace.peekUser(this.tid, RIP) === raisedAt) {
            this.interceptedSignals.push(info);
            return;
          }
        }
        this.interceptedSignals.push(info);
      }
      ptrace.cont(this.tid, 0);
    }
  }

  /**
   * A legacy signal to end a batch with, or undefined. It must not be pending (a second one is not
   * queued) nor raised with side effects (NEVER_RAISED). In a guarded task it must also be one the
   * process ignores (SIG_IGN, or by default and not caught) and the thread does not block: an
   * untraced task discards it then, as it would any other of that signal sent meanwhile.
   */
  private batchSignal(exclude: bigint): number | undefined {
    let pending = exclude;
    for (const shared of [false, true]) for (const info of ptrace.peekAllSiginfo(this.tid, shared)) pending |= linux.sigBit(info.readInt32LE(0));
    const usable = (sig: number) => (linux.sigBit(sig) & (pending | NEVER_RAISED)) === 0n;
    if (!this.guarded) return [...DEFAULT_IGNORED, ...LEGACY].find(usable);
    const st = this.processStatus();
    const d = { ignored: st.sigIgn, caught: st.sigCgt };
    const ignored = (sig: number) => {
      const bit = linux.sigBit(sig);
      if (bit & this.blockedSignals) return false;
      return (bit & d.ignored) !== 0n || (DEFAULT_IGNORED.includes(sig) && (bit & d.caught) === 0n);
    };
    return [...DEFAULT_IGNORED, ...LEGACY].find((sig) => usable(sig) && ignored(sig));
  }

  private check(r: bigint, what: string): bigint {
    if (r < 0n && r > -4096n) {
      throw new CptError(errnoName(Number(-r)), `${what} failed inside the process: ${errnoName(Number(-r))}`, { pid: this.pid, object: what });
    }
    return r;
  }

  private setMask(mask: bigint): void {
    ptrace.setSigmask(this.tid, mask);
    this.maskSet = BigInt.asUintN(64, mask);
  }

  /**
   * The registers a signal frame gives back: the frozen ones in their resume form. A call cut
   * short by ERESTART_RESTARTBLOCK gets EINTR: rt_sigreturn itself resets the restart_block, as
   * when a signal handler returns, so restart_syscall could do nothing else.
   */
  private frameRegs(): UserRegs {
    const st = syscallState(this.frozenRegs);
    return resumeRegs(this.frozenRegs, st.restartCode === ERRNO.ERESTART_RESTARTBLOCK ? 'restored' : 'original');
  }

  private xsave(): Buffer {
    return ptrace.getXstate(this.tid, XSTATE_MAX);
  }

  /** The stack pointer of injected calls: at the stack frame, or over the scratch area's frame. */
  private callStack(): bigint {
    return this.stackFrameHeld ? this.stackFrameHeld.at : this.frameAddr! + 8n;
  }

  /** The task at an exit stop moves onto the scratch area's code after the call, over its frame. */
  private park(): void {
    ptrace.setRegs(this.tid, { ...this.frozenRegs, orig_rax: 0xffffffffffffffffn, rip: this.scratchArea!.addr + STUB_AFTER_CALL, rsp: this.callStack() });
  }

  /** Where the task stands after a failed first call: as at release, with its own mask. */
  private putBackFrozen(): void {
    try {
      this.setMask(this.blockedSignals);
      ptrace.setRegs(this.tid, resumeRegs(this.frozenRegs, 'original'));
    } catch {
      /* it died: nothing to put back */
    }
  }

  /**
   * Writes a frame below the task's stack pointer (past the red zone, where the kernel would put
   * a signal frame), keeping the bytes it covers. Undefined when that memory is not a writable
   * mapping with room for it.
   */
  private stackFrame(restorer: bigint, maps = this.stackMaps()): StackFrame | undefined {
    const xsave = this.xsave();
    const len = sigframeBytes(xsave.length);
    const top = this.frozenRegs.rsp - RED_ZONE;
    const at = (top - BigInt(len)) & ~63n;
    const m = maps.find((x) => x.start <= at && top <= x.end);
    if (!m || !m.prot.write || !m.prot.read) return undefined;
    let saved: Buffer;
    try {
      saved = this.readMemory(at, Number(top - at));
    } catch {
      return undefined;
    }
    this.writeMemory(at, buildSigframe({ at, regs: this.frameRegs(), sigmask: this.blockedSignals, xsave, pretcode: restorer }));
    return { at, saved };
  }

  /**
   * The mappings, to find a stack in. The other threads of a frozen process ask the main thread,
   * which reads them once: their stacks do not move while every thread is stopped (only the
   * scratch area comes and goes, and no stack is in it).
   */
  private stackMaps(): linux.MapEntry[] {
    if (!this.main) return linux.readMaps(this.pid);
    this.main.threadMaps ??= linux.readMaps(this.pid);
    return this.main.threadMaps;
  }
  private threadMaps?: linux.MapEntry[];

  private unwriteStackFrame(f: StackFrame): void {
    try {
      this.writeMemory(f.at, f.saved);
    } catch {
      /* it died */
    }
  }

  /**
   * Code of the task's own that the stack-frame calls need: a `syscall` followed only by
   * register-clearing instructions and `ret` (the vDSO has these), and a signal restorer
   * `mov $15,%eax|%rax; syscall` (libc's). Null when either is missing.
   */
  /** The task's `syscall ... ret` and signal restorer, once looked for (for tests). */
  get codeGadgets(): { syscallRet: bigint; restorer: bigint } | null | undefined {
    return this.main ? this.main.codeGadgets : this.gadgets;
  }

  private findGadgets(maps?: linux.MapEntry[]): { syscallRet: bigint; restorer: bigint } | null {
    if (this.main) return this.main.findGadgets(maps);
    if (this.gadgets !== undefined) return this.gadgets;
    maps ??= linux.readMaps(this.pid);
    const p = this.preparedGadgets;
    const mem = this.memory();
    if (p && gadgetHolds(mem, maps, p.syscallRet) && gadgetHolds(mem, maps, p.restorer)) {
      this.gadgets = { syscallRet: p.syscallRet.addr, restorer: p.restorer.addr };
      this.gadgetSource = 'prepared';
    } else {
      const found = searchGadgets(mem, maps);
      this.gadgetSource = 'searched';
      this.gadgets = found ? { syscallRet: found.syscallRet.addr, restorer: found.restorer.addr } : null;
    }
    return this.gadgets;
  }

  private memory(): linux.ProcMem {
    if (this.main) return this.main.memory();
    if (!this.mem) this.mem = new linux.ProcMem(this.pid);
    return this.mem;
  }

  private alive(): void {
    if (this.done) throw new CptError('ESRCH', 'the process is no longer under cptrst control', { pid: this.pid });
    if ((this.main ?? this).running) throw new CptError('EBUSY', 'the process is running a batch of calls that cptrst has not collected yet', { pid: this.pid, object: 'injected calls' });
  }

  /** The address of a `syscall` instruction in the task: the scratch copy, else one found in the vDSO or any executable mapping. */
  private insn(): bigint {
    if (this.main) return this.main.insn();
    if (this.syscallInsn !== undefined) return this.syscallInsn;
    for (const { start, code } of executableCode(this.memory(), linux.readMaps(this.pid))) {
      for (let i = code.indexOf(0x0f); i >= 0 && i < code.length - 1; i = code.indexOf(0x0f, i + 1)) {
        if (code[i + 1] === 0x05) {
          this.syscallInsn = start + BigInt(i);
          return this.syscallInsn;
        }
      }
    }
    throw new CptError('ENOEXEC', 'no syscall instruction found in any executable mapping', { pid: this.pid, object: 'address space' });
  }

  /** The next stop of the thread; ESRCH (and the tracee forgotten) if it died instead. */
  private waitStop(nr: number): linux.WaitStop {
    const w = this.waitUntil === undefined ? waitpid(this.tid, linux.WAIT.__WALL) : this.waitBefore(this.waitUntil, nr);
    this.stops++;
    if (w.exited !== undefined || w.signaled !== undefined) {
      this.forget();
      throw new CptError('ESRCH', nr >= 0 ? `the process died while running syscall ${nr} inside it` : 'the process died while running a batch of calls inside it', { pid: this.pid });
    }
    return w.stopped!;
  }

  /** The next stop, polled for until `until` (Date.now()); ETIMEDOUT after it, the task left as it is. */
  private waitBefore(until: number, nr: number): linux.WaitResult {
    for (let pause = 0.05; ; pause = Math.min(pause * 2, 5)) {
      const w = waitpid(this.tid, linux.WAIT.__WALL | linux.WAIT.WNOHANG);
      if (w.pid !== 0) return w;
      if (Date.now() > until) throw new CptError('ETIMEDOUT', `syscall ${nr} inside the process did not return in time`, { pid: this.pid });
      linux.sleepMs(pause);
    }
  }

  /** Resumes to the next syscall stop; signals arriving meanwhile are intercepted and queued again at release. */
  private stepToSyscallStop(nr: number): void {
    ptrace.syscall(this.tid, 0);
    for (;;) {
      const s = this.waitStop(nr);
      if (s.sig === (SIG.SIGTRAP | 0x80)) return; // syscall stop (PTRACE_O_TRACESYSGOOD)
      if (s.event !== 0) {
        // An event stop (e.g. PTRACE_EVENT_STOP from a group stop): carry on.
        ptrace.syscall(this.tid, 0);
        continue;
      }
      // A signal-delivery stop (SIGKILL/SIGSTOP cannot be blocked; others only before the mask took):
      // keep the signal to queue it again, and suppress it now.
      this.interceptedSignals.push(ptrace.getSiginfo(this.tid));
      ptrace.syscall(this.tid, 0);
    }
  }
}

export class X86TraceeFactory implements TraceeFactory {
  /** What prepare found, by process, until its tracee is made. */
  private readonly prepared = new Map<number, PreparedGadgets>();

  /**
   * Finds the gadgets of a process that still runs, so that the frozen window only checks them
   * (gadgetHolds). Nothing found, or the process gone: its tracee searches after the freeze.
   */
  prepare(pid: number): void {
    this.prepared.delete(pid);
    let mem: linux.ProcMem | undefined;
    try {
      mem = new linux.ProcMem(pid, { readOnly: true, memFileOnly: true });
      const found = searchGadgets(mem, linux.readMaps(pid));
      if (found) this.prepared.set(pid, found);
    } catch {
      /* gone, or not ours to read: the freeze says why */
    } finally {
      mem?.close();
    }
  }

  fromStopped(pid: number, tid: number, opts?: TraceeOptions): X86Tracee {
    const prepared = opts?.diesWithTracer ? undefined : this.prepared.get(pid);
    this.prepared.delete(pid);
    return new X86Tracee(pid, tid, { ...opts, prepared });
  }
  threadOf(main: Tracee, tid: number): X86Tracee {
    if (!(main instanceof X86Tracee)) throw new CptError('EINVAL', 'not a tracee of this arch', { pid: main.pid, object: `thread ${tid}` });
    return new X86Tracee(main.pid, tid, { main });
  }
}

/** A piece of the task's code, where it was found: its bytes and the mapping that held them. */
interface Gadget {
  addr: bigint;
  bytes: Buffer;
  map: Pick<linux.MapEntry, 'start' | 'end' | 'offset' | 'inode' | 'major' | 'minor' | 'prot'>;
}
interface PreparedGadgets {
  syscallRet: Gadget;
  restorer: Gadget;
}

/** Code is read this much at a time, so that the search stops soon after both are found. */
const CODE_CHUNK = 64 * 1024;
/** Each piece also holds the start of the next: a gadget (at most 2 + 16 * 3 + 1 bytes) across the border is seen whole. */
const CODE_OVERLAP = 64;

/**
 * The task's executable code in pieces, the vDSO first (always there, and small), then every
 * other executable mapping that can be read; mappings over 64 MiB are passed over.
 */
function* executableCode(mem: linux.ProcMem, maps: linux.MapEntry[]): Generator<{ start: bigint; code: Buffer; map: linux.MapEntry }> {
  const ordered = [...maps.filter((m) => m.path === '[vdso]'), ...maps.filter((m) => m.prot.exec && m.path !== '[vdso]' && m.path !== '[vsyscall]')];
  for (const m of ordered) {
    const len = Number(m.end - m.start);
    if (len > 64 * 1024 * 1024) continue;
    for (let off = 0; off < len; off += CODE_CHUNK) {
      let code: Buffer;
      try {
        code = mem.read(m.start + BigInt(off), Math.min(CODE_CHUNK + CODE_OVERLAP, len - off));
      } catch {
        break;
      }
      yield { start: m.start + BigInt(off), code, map: m };
    }
  }
}

/** The first `syscall ... ret` and signal restorer in the task's code (the order of executableCode); null when either is missing. */
function searchGadgets(mem: linux.ProcMem, maps: linux.MapEntry[]): PreparedGadgets | null {
  let syscallRet: Gadget | undefined;
  let restorer: Gadget | undefined;
  const gadget = (start: bigint, code: Buffer, map: linux.MapEntry, i: number, len: number): Gadget => ({
    addr: start + BigInt(i),
    bytes: Buffer.from(code.subarray(i, i + len)),
    map: { start: map.start, end: map.end, offset: map.offset, inode: map.inode, major: map.major, minor: map.minor, prot: { ...map.prot } },
  });
  for (const { start, code, map } of executableCode(mem, maps)) {
    if (!syscallRet) {
      const i = findSyscallRet(code);
      if (i >= 0) syscallRet = gadget(start, code, map, i, syscallRetLength(code, i));
    }
    if (!restorer) {
      const i = findRestorer(code);
      if (i >= 0) restorer = gadget(start, code, map, i, code[i] === 0xb8 ? RESTORERS[0].length : RESTORERS[1].length);
    }
    if (syscallRet && restorer) return { syscallRet, restorer };
  }
  return null;
}

/**
 * Whether a gadget found while the task ran is still there: in the same mapping (start, end,
 * file, offset, protection) and with the same bytes. The task is stopped by then, so what holds
 * now holds while we hold it.
 */
function gadgetHolds(mem: linux.ProcMem, maps: linux.MapEntry[], g: Gadget): boolean {
  const m = maps.find((x) => x.start <= g.addr && g.addr < x.end);
  const was = g.map;
  if (!m || m.start !== was.start || m.end !== was.end || m.offset !== was.offset || m.inode !== was.inode || m.major !== was.major || m.minor !== was.minor) return false;
  if (m.prot.read !== was.prot.read || m.prot.write !== was.prot.write || m.prot.exec !== was.prot.exec) return false;
  try {
    return mem.read(g.addr, g.bytes.length).equals(g.bytes);
  } catch {
    return false;
  }
}

function isError(r: bigint): boolean {
  return r < 0n && r > -4096n;
}

function u64(x: number | bigint): bigint {
  return typeof x === 'bigint' ? BigInt.asUintN(64, x) : BigInt.asUintN(64, BigInt(x));
}

/** `mov $15,%eax; syscall` and `mov $15,%rax; syscall` (rt_sigreturn, as libc's restorer does it). */
const RESTORERS = [Buffer.from([0xb8, SYS.rt_sigreturn, 0, 0, 0, 0x0f, 0x05]), Buffer.from([0x48, 0xc7, 0xc0, SYS.rt_sigreturn, 0, 0, 0, 0x0f, 0x05])];

export function findRestorer(code: Buffer): number {
  for (const r of RESTORERS) {
    const i = code.indexOf(r);
    if (i >= 0) return i;
  }
  return -1;
}

/**
 * Offset of a `syscall` followed by nothing but `xor reg,reg` (32- or 64-bit, any register),
 * `nop` and then `ret`, or -1. After such a call the task reaches `ret` with only scratch registers
 * cleared, whatever the call returned.
 */
export function findSyscallRet(code: Buffer): number {
  for (let i = code.indexOf(SYSCALL_INSN); i >= 0; i = code.indexOf(SYSCALL_INSN, i + 1)) {
    if (syscallRetLength(code, i) > 0) return i;
  }
  return -1;
}

/** The length of the `syscall ... ret` at `i` (up to and with its `ret`), or -1 if there is none. */
function syscallRetLength(code: Buffer, i: number): number {
  if (code[i] !== SYSCALL_INSN[0] || code[i + 1] !== SYSCALL_INSN[1]) return -1;
  let j = i + 2;
  for (let n = 0; n < 16 && j < code.length; n++) {
    const c = code[j];
    if (c === 0xc3) return j + 1 - i;
    if (c === 0x90) {
      j += 1;
      continue;
    }
    const rex = c >= 0x40 && c <= 0x4f ? 1 : 0;
    if (code[j + rex] === 0x31 && j + rex + 1 < code.length && code[j + rex + 1] >= 0xc0) {
      // xor r/m,reg with both operands registers (mod = 11)
      const modrm = code[j + rex + 1];
      const reg = ((modrm >> 3) & 7) | (rex && c & 4 ? 8 : 0);
      const rm = (modrm & 7) | (rex && c & 1 ? 8 : 0);
      if (reg === rm) {
        j += rex + 2;
        continue;
      }
    }
    break;
  }
  return -1;
}
const SYSCALL_INSN = Buffer.from([0x0f, 0x05]);
