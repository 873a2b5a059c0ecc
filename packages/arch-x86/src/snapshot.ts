/**
 * A copy-on-write snapshot of a frozen process's memory: a process made by fork from it that
 * never runs its code, so that the process can run again while its pages are written out.
 *
 * Who is whose child matters. A child of the target would stay its zombie (cptrst, only its
 * tracer, cannot reap it: the kernel hands a traced child's exit back to its real parent), and
 * its death would be visible to the target. So the target makes a first child (clone3 with
 * CLONE_VM and exit signal 0: no SIGCHLD), which closes every fd and forks the snapshot,
 * the first child is killed, and the target reaps it before it is let go. The snapshot, orphaned,
 * is adopted by init (or by a child subreaper among the target's ancestors), which reaps it when
 * cptrst kills it at the end; a target that is itself a subreaper would adopt it, so it gets no
 * snapshot.
 *
 * cptrst may die at any moment. The clone runs on code staged in the scratch area:
 *   syscall                           clone3(args, size)
 *   test %rax,%rax; jnz parent
 *   xor %edi,%edi; mov $exit,%eax; syscall     the first copy, if ever let run: exits at once
 * parent:
 *   js done                           (clone3 failed: nothing to reap)
 *   mov %rax,%rdi; xor %esi,%esi; mov $__WALL,%edx; xor %r10,%r10; mov $wait4,%eax; syscall
 * done:
 *   movabs $continuation,%rcx; jmp *%rcx      the scratch area's own code after a call
 * so a target let go anywhere in it reaps the first copy and then returns to its frozen state as
 * after any injected call. The first copy gets PTRACE_O_EXITKILL at its first stop (before that,
 * let run, it exits); the snapshot inherits EXITKILL from it at birth. No fd is held by the
 * snapshot (a pipe or socket the target closes meanwhile closes for real), nor timers, locks
 * or pending signals (fork does not copy them).
 */
import { CptError, MemorySnapshot, encodeStruct, linux, sizeOfStruct } from '@cptrst/core';

const { ptrace, waitpid, PTRACE_O, WAIT, killAndReap, ProcMem } = linux;

/** The clone code above; `continuation` is where the scratch area's code goes on after a call. */
export function snapshotCloneStub(continuation: bigint): Buffer {
  const exitNr = linux.syscallNumber('exit');
  const wait4Nr = linux.syscallNumber('wait4');
  const b = Buffer.alloc(0x33);
  let o = 0;
  const bytes = (...x: number[]): void => {
    for (const v of x) b[o++] = v;
  };
  const u32 = (v: number): void => {
    b.writeUInt32LE(v, o);
    o += 4;
  };
  bytes(0x0f, 0x05); // 0x00 syscall
  bytes(0x48, 0x85, 0xc0); // 0x02 test %rax,%rax
  bytes(0x75, 0x09); // 0x05 jnz 0x10
  bytes(0x31, 0xff); // 0x07 xor %edi,%edi
  bytes(0xb8);
  u32(exitNr); // 0x09 mov $exit,%eax
  bytes(0x0f, 0x05); // 0x0e syscall
  bytes(0x78, 0x14); // 0x10 js 0x26
  bytes(0x48, 0x89, 0xc7); // 0x12 mov %rax,%rdi
  bytes(0x31, 0xf6); // 0x15 xor %esi,%esi
  bytes(0xba);
  u32(WAIT.__WALL); // 0x17 mov $__WALL,%edx
  bytes(0x4d, 0x31, 0xd2); // 0x1c xor %r10,%r10
  bytes(0xb8);
  u32(wait4Nr); // 0x1f mov $wait4,%eax
  bytes(0x0f, 0x05); // 0x24 syscall
  bytes(0x48, 0xb9); // 0x26 movabs $continuation,%rcx
  b.writeBigUInt64LE(continuation, o);
  o += 8;
  bytes(0xff, 0xe1, 0xcc); // 0x30 jmp *%rcx; int3
  if (o !== b.length) throw new Error(`snapshot stub is ${o} bytes`);
  return b;
}

/** Offset of the wait4's `syscall` in the stub: where the target stands after the clone returned is 2. */
export const STUB_WAIT4_AT = 0x24;

/**
 * The clone_args of the first copy: CLONE_VM (it shares the target's memory, so the page tables
 * are copied once, by its fork; let run, it only exits, touching no memory), exit signal 0 (no
 * SIGCHLD to the target). Its fd table is its own copy, which it empties.
 */
export function firstCopyArgs(): { args: Buffer; size: number } {
  return { args: encodeStruct(linux.CloneArgs, { flags: BigInt(linux.CLONE.VM), exitSignal: 0n }), size: sizeOfStruct(linux.CloneArgs) };
}

/** Waits for a traced process's next stop; false when it died instead. */
function waitStop(pid: number): boolean {
  const w = waitpid(pid, WAIT.__WALL);
  return w.stopped !== undefined;
}

/** Bytes of the task's stack shown instead of what a held signal frame covers. */
export interface SavedBytes {
  at: bigint;
  saved: Buffer;
}

/** Where `saved` covers [addr, addr+length), its bytes are put into buf. */
export function overlaySaved(f: SavedBytes | undefined, addr: bigint, buf: Buffer, offset: number, length: number): void {
  if (!f) return;
  const lo = addr > f.at ? addr : f.at;
  const fEnd = f.at + BigInt(f.saved.length);
  const end = addr + BigInt(length);
  const hi = end < fEnd ? end : fEnd;
  if (lo >= hi) return;
  f.saved.copy(buf, offset + Number(lo - addr), Number(lo - f.at), Number(hi - f.at));
}

/** The snapshot process. */
class ForkSnapshot implements MemorySnapshot {
  private readonly mem: linux.ProcMem;
  private closed = false;
  constructor(readonly pid: number, private readonly frame: SavedBytes | undefined) {
    // Not process_vm_readv: its pins would make the kernel copy every shared page (memory.ts).
    this.mem = new ProcMem(pid, { readOnly: true, memFileOnly: true });
  }

  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void {
    if (this.closed) throw new CptError('ESRCH', 'the snapshot is closed', { pid: this.pid, object: 'memory snapshot' });
    this.mem.readFully(addr, buf, offset, length);
    overlaySaved(this.frame, addr, buf, offset, length);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mem.close();
    killAndReap(this.pid);
  }
}

/**
 * The first child, stopped at its first stop: makes it fork the snapshot and returns it. The
 * caller kills the first child afterwards, whatever happens. `runIn(pid, nr, args)` runs a
 * syscall in the first child or the snapshot (both stopped, both die with cptrst).
 */
export function forkFromFirstCopy(first: number, runIn: (pid: number, nr: number, args: number[]) => bigint, frame: SavedBytes | undefined): MemorySnapshot {
  const run = (nr: number, args: number[]): bigint => runIn(first, nr, args);
  if (!waitStop(first)) throw new CptError('ESRCH', 'the first copy died before its first stop', { pid: first, object: 'memory snapshot' });
  // A copy of a process under seccomp keeps its filters suspended, as the process has them.
  const suspend = linux.readStatus(first).seccomp !== 0 ? PTRACE_O.SUSPEND_SECCOMP : 0;
  ptrace.setOptions(first, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.EXITKILL | suspend);
  const closed = run(linux.SYS.close_range, [0, 0xffffffff, 0]);
  if (closed < 0n) throw new CptError(linux.errnoName(Number(-closed)), 'close_range in the first copy failed', { pid: first, object: 'memory snapshot' });
  const second = run(linux.syscallNumber('fork'), []);
  if (second <= 0n) throw new CptError(linux.errnoName(Number(-second)), 'fork in the first copy failed', { pid: first, object: 'memory snapshot' });
  const pid = Number(second);
  // Born traced, with EXITKILL (inherited), and stopped before it runs anything.
  if (!waitStop(pid)) throw new CptError('ESRCH', 'the snapshot died before its first stop', { pid, object: 'memory snapshot' });
  try {
    // Out of the target's session and process group: signals to the group or from its terminal
    // miss it, and once dead it does not keep the target's PID in use as a group or session ID
    // until init reaps it (a restart of the target with its PID would wait for that).
    const sid = runIn(pid, linux.SYS.setsid, []);
    if (sid !== BigInt(pid)) throw new CptError(linux.errnoName(Number(-sid)), 'setsid in the snapshot failed', { pid, object: 'memory snapshot' });
    return new ForkSnapshot(pid, frame);
  } catch (e) {
    killAndReap(pid);
    throw e;
  }
}
