/**
 * A stopped thread under ptrace, and "run this syscall in that task" (design.md, the flows).
 *
 * An injected syscall: registers point at a `syscall` instruction with the call's number and
 * arguments, orig_rax = -1 so the kernel does no syscall-restart processing on the way out of
 * the stop we are in, then PTRACE_SYSCALL to the entry stop and again to the exit stop, where
 * rax holds the result. At checkpoint the instruction is found in the vDSO (or another
 * executable mapping); once a scratch area exists, its own copy is used, which survives the
 * teardown of the address space at restart.
 */
import { CptError, ReleaseMode, ScratchArea, Tracee, TraceeFactory, linux } from '@cptrst/core';
import { resumeRegs } from './syscall-restart';

const { ptrace, waitpid, SYS, PROT, MAP, SIG, errnoName } = linux;
type UserRegs = linux.UserRegs;

/** syscall; int3 — the int3 is never reached (we stop at syscall exit), it guards a runaway. */
const SYSCALL_CODE = Buffer.from([0x0f, 0x05, 0xcc, 0xcc]);
export const SCRATCH_SIZE = 64 * 1024;
const SCRATCH_CODE_SIZE = 64;

export class X86Tracee implements Tracee {
  /** Registers as found at the freeze (or at creation). */
  readonly frozenRegs: UserRegs;
  /** Registers to set when the thread is let go; arch handlers decide them. */
  finalRegs?: UserRegs;
  /** Signals dequeued while we ran syscalls inside it: they must be queued again (siginfo, 128 bytes each). */
  readonly interceptedSignals: Buffer[] = [];
  blockedSignals: bigint;
  private allBlocked = false;
  private syscallInsn?: bigint;
  private scratchArea?: ScratchArea;
  private mem?: linux.ProcMem;
  private done = false;

  constructor(readonly pid: number, readonly tid: number, opts: { syscallInsn?: bigint } = {}) {
    this.frozenRegs = ptrace.getRegs(tid);
    this.blockedSignals = ptrace.getSigmask(tid);
    this.syscallInsn = opts.syscallInsn;
  }

  get released(): boolean {
    return this.done;
  }

  syscall(nr: number, args: ReadonlyArray<number | bigint> = []): bigint {
    this.alive();
    if (!this.allBlocked) {
      // No signal may be delivered while we borrow the thread: they stay pending instead.
      ptrace.setSigmask(this.tid, 0xffffffffffffffffn);
      this.allBlocked = true;
    }
    const a = args.map((x) => BigInt.asUintN(64, BigInt(x)));
    const base = this.scratchArea ? { ...this.frozenRegs, rsp: this.scratchArea.addr + BigInt(this.scratchArea.size) - 256n } : this.frozenRegs;
    const regs: UserRegs = {
      ...base,
      rax: BigInt(nr),
      orig_rax: 0xffffffffffffffffn,
      rdi: a[0] ?? 0n,
      rsi: a[1] ?? 0n,
      rdx: a[2] ?? 0n,
      r10: a[3] ?? 0n,
      r8: a[4] ?? 0n,
      r9: a[5] ?? 0n,
      rip: this.insn(),
    };
    ptrace.setRegs(this.tid, regs);
    this.stepToSyscallStop(nr); // entry
    this.stepToSyscallStop(nr); // exit
    return BigInt.asIntN(64, ptrace.getRegs(this.tid).rax);
  }

  syscallOk(nr: number, args: ReadonlyArray<number | bigint>, what: string): bigint {
    const r = this.syscall(nr, args);
    if (r < 0n && r > -4096n) {
      throw new CptError(errnoName(Number(-r)), `${what} failed inside the process: ${errnoName(Number(-r))}`, { pid: this.pid, object: what });
    }
    return r;
  }

  scratch(): ScratchArea {
    if (this.scratchArea) return this.scratchArea;
    const addr = this.syscallOk(
      SYS.mmap,
      [0, SCRATCH_SIZE, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0],
      'mmap of the scratch area',
    );
    this.adoptScratch(addr);
    return this.scratchArea!;
  }

  /** Makes an existing mapping at `addr` (SCRATCH_SIZE, rwx) the scratch area and puts the syscall code in it. */
  adoptScratch(addr: bigint): void {
    this.scratchArea = {
      addr,
      size: SCRATCH_SIZE,
      dataAddr: addr + BigInt(SCRATCH_CODE_SIZE),
      dataSize: SCRATCH_SIZE - SCRATCH_CODE_SIZE - 4096, // the top page is the injected calls' stack
    };
    this.writeMemory(addr, SYSCALL_CODE);
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
    return this.memory().read(addr, length);
  }

  writeMemory(addr: bigint, data: Buffer): void {
    this.memory().write(addr, data);
  }

  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void {
    this.memory().readFully(addr, buf, offset, length);
  }

  reservedRanges(): Array<{ start: bigint; end: bigint }> {
    return this.scratchArea ? [{ start: this.scratchArea.addr, end: this.scratchArea.addr + BigInt(this.scratchArea.size) }] : [];
  }

  /** Forgets the scratch area without unmapping it (restart unmaps everything else around it). */
  dropScratchRecord(): void {
    this.scratchArea = undefined;
  }

  release(mode: ReleaseMode): void {
    if (this.done) return;
    try {
      if (mode === 'kill') {
        linux.kill(this.pid, SIG.SIGKILL);
        this.reapIfTraced();
        return;
      }
      // Signals dequeued before the freeze stop go back into the queue, while everything is blocked.
      for (const info of this.interceptedSignals.splice(0)) {
        const at = this.stage(info, 0);
        this.syscallOk(SYS.rt_tgsigqueueinfo, [this.pid, this.tid, info.readInt32LE(0), at], 'queueing an intercepted signal again');
      }
      if (this.scratchArea) {
        // The syscall instruction lives in the scratch area: this munmap is the last call we run.
        this.syscall(SYS.munmap, [this.scratchArea.addr, this.scratchArea.size]);
        this.scratchArea = undefined;
      }
      if (this.allBlocked || ptrace.getSigmask(this.tid) !== this.blockedSignals) ptrace.setSigmask(this.tid, this.blockedSignals);
      ptrace.setRegs(this.tid, this.finalRegs ?? resumeRegs(this.frozenRegs, 'original'));
      if (mode === 'stop') linux.kill(this.pid, SIG.SIGSTOP);
      ptrace.detach(this.tid, 0);
      if (mode === 'stop') waitUntilStopped(this.pid);
    } finally {
      this.done = true;
      this.mem?.close();
    }
  }

  /** Marks the tracee gone (it died, or something else released it). */
  forget(): void {
    this.done = true;
    this.mem?.close();
  }

  /**
   * After SIGKILL. As its tracer we collect the exit, which hands the zombie on to its parent.
   * When we are that parent too (the API used by the process that started the target), the exit
   * is left for the caller's own wait: collecting it here would take it from them.
   */
  private reapIfTraced(): void {
    try {
      if (linux.readStat(this.pid).ppid === process.pid) return;
    } catch {
      return; // gone already
    }
    try {
      for (;;) {
        const w = waitpid(this.tid, linux.WAIT.__WALL);
        if (w.exited !== undefined || w.signaled !== undefined) return;
        ptrace.cont(this.tid, 0);
      }
    } catch {
      /* already reaped or not ours to wait for */
    }
  }

  private memory(): linux.ProcMem {
    if (!this.mem) this.mem = new linux.ProcMem(this.pid);
    return this.mem;
  }

  private alive(): void {
    if (this.done) throw new CptError('ESRCH', 'the process is no longer under cptrst control', { pid: this.pid });
  }

  /** The address of a `syscall` instruction in the task: the scratch copy, else one found in the vDSO or any executable mapping. */
  private insn(): bigint {
    if (this.syscallInsn !== undefined) return this.syscallInsn;
    const maps = linux.readMaps(this.pid);
    const ordered = [...maps.filter((m) => m.path === '[vdso]'), ...maps.filter((m) => m.prot.exec && m.path !== '[vdso]' && m.path !== '[vsyscall]')];
    for (const m of ordered) {
      const len = Number(m.end - m.start);
      if (len > 64 * 1024 * 1024) continue;
      let buf: Buffer;
      try {
        buf = this.readMemory(m.start, len);
      } catch {
        continue;
      }
      for (let i = buf.indexOf(0x0f); i >= 0 && i < buf.length - 1; i = buf.indexOf(0x0f, i + 1)) {
        if (buf[i + 1] === 0x05) {
          this.syscallInsn = m.start + BigInt(i);
          return this.syscallInsn;
        }
      }
    }
    throw new CptError('ENOEXEC', 'no syscall instruction found in any executable mapping', { pid: this.pid, object: 'address space' });
  }

  /** Resumes to the next syscall stop; signals arriving meanwhile are intercepted and queued again at release. */
  private stepToSyscallStop(nr: number): void {
    ptrace.syscall(this.tid, 0);
    for (;;) {
      const w = waitpid(this.tid, linux.WAIT.__WALL);
      if (w.exited !== undefined || w.signaled !== undefined) {
        this.forget();
        throw new CptError('ESRCH', `the process died while running syscall ${nr} inside it`, { pid: this.pid });
      }
      const s = w.stopped!;
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
  fromStopped(pid: number, tid: number): X86Tracee {
    return new X86Tracee(pid, tid);
  }
}

/**
 * The SIGSTOP queued before the detach takes effect only once the task runs again: wait (a
 * little) until it is stopped, so that "left stopped" holds when release returns.
 */
function waitUntilStopped(pid: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 2000; i++) {
    try {
      if (linux.readStat(pid).state === 'T') return;
    } catch {
      return; // gone
    }
    Atomics.wait(pause, 0, 0, 1);
  }
}
