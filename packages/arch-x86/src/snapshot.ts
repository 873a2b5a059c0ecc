/**
 * A copy-on-write snapshot of a frozen process's memory: a process made by fork from it that
 * never runs its code, so that the process can run again while its pages are written out.
 *
 * Who is whose child matters. A child of the target would stay its zombie (cptrst, only its
 * tracer, cannot reap it: the kernel hands a traced child's exit back to its real parent), and
 * its death would be visible to the target. So the target makes a first child (clone3 with
 * CLONE_VM and exit signal 0: no SIGCHLD), which closes every fd, takes a session of its own (so
 * that the snapshot is never born with the target's controlling terminal) and forks the snapshot,
 * the first child is killed, and the target reaps it before it is let go. The snapshot, orphaned,
 * is adopted by init (or by a child subreaper among the target's ancestors), which reaps it when
 * cptrst kills it at the end; a target that is itself a subreaper would adopt it, so it gets no
 * snapshot (nor, in a tree, a task below a subreaper of the tree: mm's takeSnapshot).
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
import * as fs from 'fs';
import { CptError, MemorySnapshot, encodeStruct, linux, sizeOfStruct } from '@cptrst/core';
import { MachineCode } from './machine-code';
import { UserRegs, x86ptrace } from './regs-codec';

const { waitpid, PTRACE_O, WAIT, killAndReap, ProcMem, rawSyscall, SYS } = linux;
const ptrace = x86ptrace;

/** The clone code above; `continuation` is where the scratch area's code goes on after a call. */
export function snapshotCloneStub(continuation: bigint): Buffer {
  const exitNr = linux.syscallNumber('exit');
  const wait4Nr = linux.syscallNumber('wait4');
  const c = new MachineCode(0x33);
  const { bytes, u32, u64 } = c;
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
  u64(continuation);
  bytes(0xff, 0xe1, 0xcc); // 0x30 jmp *%rcx; int3
  return c.done('the snapshot stub');
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

/** How long the first copy's fork may take (its page tables are copied): CPTRST_SNAPSHOT_FORK_TIMEOUT_MS, default 10 s. */
function forkTimeoutMs(): number {
  const v = Number(process.env.CPTRST_SNAPSHOT_FORK_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : 10_000;
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

/** The part of `saved` within [addr, addr+length): [its start in saved, its end, where it goes in the range]. */
function savedWithin(f: SavedBytes | undefined, addr: bigint, length: number): [number, number, number] | undefined {
  if (!f) return undefined;
  const lo = addr > f.at ? addr : f.at;
  const fEnd = f.at + BigInt(f.saved.length);
  const end = addr + BigInt(length);
  const hi = end < fEnd ? end : fEnd;
  if (lo >= hi) return undefined;
  return [Number(lo - f.at), Number(hi - f.at), Number(lo - addr)];
}

/** Where `saved` covers [addr, addr+length), its bytes are put into buf. */
export function overlaySaved(f: SavedBytes | undefined, addr: bigint, buf: Buffer, offset: number, length: number): void {
  const w = savedWithin(f, addr, length);
  if (w) f!.saved.copy(buf, offset + w[2], w[0], w[1]);
}

/** The same for [addr, addr+length) put into the file fd at position. */
function overlaySavedInFile(f: SavedBytes | undefined, addr: bigint, length: number, fd: number, position: number): void {
  const w = savedWithin(f, addr, length);
  if (!w) return;
  for (let done = 0; done < w[1] - w[0]; ) done += fs.writeSync(fd, f!.saved, w[0] + done, w[1] - w[0] - done, position + w[2] + done);
}

/** Reads this big or bigger go through the pipes. */
const SPLICE_MIN = 64 * 1024;
/** Ranges (PAGES objects, 2 MiB) sent ahead of their reads, at most. */
const AHEAD = 4;
/** What the pipes hold together: the objects sent ahead and the one being read. */
const PIPES_HOLD = (AHEAD + 1) * 2 * 1024 * 1024;
/** At most this many data pipes (where the pipe size is limited to less than PIPES_HOLD / MAX_PIPES, the loop waits for room). */
const MAX_PIPES = 10;
/** How long one wait for a pipe lasts before cptrst asks whether the snapshot stopped (ns). */
const POLL_NS = 2_000_000n;
/** Where the splice code starts in its page (the message it is working on is at 0). */
const SPLICE_CODE_AT = 0x40;
/** Where the code's two int3 leave rip: after a failed vmsplice, after a failed read of the next message. */
const SPLICE_FAILED_AT = 0x85;
const SPLICE_ENDED_AT = 0x86;
/** sched_setscheduler's policy for batch work (no wake-up preemption). */
const SCHED_BATCH = 3;
/** A message to the loop: {base, len, fd}, 8 bytes each. */
const MESSAGE = 24;

/**
 * The splice loop, run by the snapshot in a page of its own whose first 24 bytes hold the message
 * it works on, {base, len, fd}: vmsplice [base, base+len) into pipe fd. cptrst sends the messages
 * through a control pipe:
 *   next: xor %eax,%eax; mov $ctl,%edi; lea msg(%rip),%rsi; mov $24,%edx; syscall    read(ctl, msg, 24)
 *         cmp $24,%rax; jne ended
 *   loop: mov $vmsplice,%eax; lea msg(%rip),%rsi; mov 16(%rsi),%edi; mov $1,%edx; xor %r10d,%r10d
 *         syscall                               vmsplice(fd, msg, 1, 0): returns once the pipe is full
 *         test %rax,%rax; jle failed            (EFAULT at a page it cannot take)
 *         add %rax,(%rsi); sub %rax,8(%rsi)     what is left of the range
 *         jnz loop; jmp next
 *   failed: int3                                msg.len is what was not spliced
 *   ended:  int3
 */
function spliceLoopCode(ctl: number): Buffer {
  if (linux.syscallNumber('read') !== 0) throw new Error('the splice loop reads with eax = 0');
  const c = new MachineCode(SPLICE_ENDED_AT - SPLICE_CODE_AT);
  const { bytes, u32 } = c;
  bytes(0x31, 0xc0); // 0x40 xor %eax,%eax (read)
  bytes(0xbf);
  u32(ctl); // 0x42 mov $ctl,%edi
  bytes(0x48, 0x8d, 0x35);
  u32(-0x4e); // 0x47 lea msg(%rip),%rsi (the next instruction is at 0x4e)
  bytes(0xba, MESSAGE, 0x00, 0x00, 0x00); // 0x4e mov $24,%edx
  bytes(0x0f, 0x05); // 0x53 syscall
  bytes(0x48, 0x83, 0xf8, MESSAGE); // 0x55 cmp $24,%rax
  bytes(0x75, 0x2a); // 0x59 jne 0x85
  bytes(0xb8);
  u32(linux.syscallNumber('vmsplice')); // 0x5b mov $vmsplice,%eax
  bytes(0x48, 0x8d, 0x35);
  u32(-0x67); // 0x60 lea msg(%rip),%rsi (next at 0x67)
  bytes(0x8b, 0x7e, 0x10); // 0x67 mov 16(%rsi),%edi
  bytes(0xba, 0x01, 0x00, 0x00, 0x00); // 0x6a mov $1,%edx
  bytes(0x45, 0x31, 0xd2); // 0x6f xor %r10d,%r10d
  bytes(0x0f, 0x05); // 0x72 syscall
  bytes(0x48, 0x85, 0xc0); // 0x74 test %rax,%rax
  bytes(0x7e, 0x0b); // 0x77 jle 0x84
  bytes(0x48, 0x01, 0x06); // 0x79 add %rax,(%rsi)
  bytes(0x48, 0x29, 0x46, 0x08); // 0x7c sub %rax,8(%rsi)
  bytes(0x75, 0xd9); // 0x80 jne 0x5b
  bytes(0xeb, 0xbc); // 0x82 jmp 0x40
  bytes(0xcc); // 0x84 failed: int3
  bytes(0xcc); // 0x85 ended: int3
  return c.done('the splice loop');
}

/**
 * Takes up to `n` bytes out of the pipe `rfd`, the bytes of the range being received from `at`
 * on (into a buffer, or a file): how many it took, or -errno.
 */
type Take = (rfd: number, at: number, n: number) => bigint;

/** One data pipe: the snapshot's write end, cptrst's read end (non-blocking), what it holds. */
interface DataPipe {
  wfd: number;
  rfd: number;
  capacity: number;
  poll: Buffer;
}

/**
 * The snapshot's pages through pipes: the snapshot runs a loop of vmsplice(2) (above) that puts
 * references to its pages into pipes (no copy), which cptrst reads into its buffer (one copy), or
 * splices into the image file (one copy, by the kernel: spliceTo).
 * The mem file copies each page twice (through a kernel bounce page) and looks it up in the other
 * process's page tables one page at a time. vmsplice takes plain page references, not FOLL_PIN,
 * so the kernel does not unshare the pages the snapshot shares copy-on-write with the process
 * (checked with the page frames in /proc/PID/pagemap), and the process, writing a page a pipe
 * still holds, gets a copy as for any shared page. The snapshot runs only that code, with every
 * signal blocked, and dies with cptrst.
 *
 * Each read is cut into pieces of a pipe's capacity, sent to the pipes in turn; cptrst reads them
 * back in the same order. The pipes hold AHEAD + 1 objects together, so the objects that follow
 * the one just read (announced by MemorySnapshot.expect) are sent in one message write and wait in
 * the pipes while cptrst checksums and writes: the snapshot is woken once per few objects, and not
 * while cptrst reads (on a loaded machine every wake-up can cost a scheduler slice). Where a
 * vmsplice fails (a PROT_NONE page) the rest of that read goes through the mem file; where anything
 * else goes wrong, every read from then on.
 */
class SplicePipe {
  private msg = Buffer.alloc(MESSAGE * MAX_PIPES);
  private readonly timeout = Buffer.alloc(16);
  private broken = false;
  /** The loop waits for messages (else it is stopped at an int3). */
  private running = false;
  /** The ranges the loop was sent and cptrst has not taken out of the pipes yet, in order. */
  private readonly inFlight: Array<[bigint, number]> = [];
  /** Pieces sent and taken so far: piece k goes through pipe k mod the number of pipes. */
  private sent = 0;
  private taken = 0;
  /** Where a range fetched ahead for nothing is dropped. */
  private scratch?: Buffer;

  private constructor(
    private readonly pid: number,
    private readonly regs: UserRegs,
    /** The page of the message and the loop, in the snapshot. */
    private readonly page: bigint,
    private readonly pipes: DataPipe[],
    /** cptrst's copies of the control pipe's write end, and of its read end (to drop what a stopped loop left). */
    private readonly ctl: number,
    private readonly ctlRead: number,
    /** The ranges announced (MemorySnapshot.expect) and not read yet: length by address. */
    private readonly expected: Map<bigint, number>,
  ) {}

  /**
   * Sets the pipes up in the snapshot (stopped, as `runIn` leaves it): a page of its own for the
   * message and the loop, data pipes whose read ends cptrst takes, and a control pipe. Undefined
   * where any step fails (a process that may not map executable memory, say): the mem file does
   * it all then.
   */
  static open(pid: number, runIn: (pid: number, nr: number, args: number[]) => bigint, expected: Map<bigint, number>): SplicePipe | undefined {
    const { PROT, MAP, O, F } = linux;
    const page = runIn(pid, SYS.mmap, [0, 4096, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0]);
    if (page < 0n && page > -4096n) return undefined;
    const mine: number[] = [];
    const take = (fd: number): number => {
      const copy = linux.fdCopyOf(pid, fd);
      mine.push(copy);
      return copy;
    };
    /** A pipe in the snapshot: its [read end, write end] there. */
    const pipe = (): [number, number] => {
      const r = runIn(pid, SYS.pipe2, [Number(page), O.CLOEXEC]);
      if (r !== 0n) throw new Error(`pipe2: ${r}`);
      const fds = ptrace.peekData(pid, page);
      return [Number(fds & 0xffffffffn), Number(fds >> 32n)];
    };
    try {
      let max = 0;
      try {
        max = Number(fs.readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim());
      } catch {
        /* the default size then */
      }
      const pipes: DataPipe[] = [];
      let held = 0;
      while (held < PIPES_HOLD && pipes.length < MAX_PIPES) {
        const [r, w] = pipe();
        const rfd = take(r);
        runIn(pid, SYS.close, [r]);
        const size = (n: number) => rawSyscall(SYS.fcntl, rfd, F.SETPIPE_SZ, n);
        let capacity = size(PIPES_HOLD - held);
        if (capacity < 0n && max > 0) capacity = size(Math.min(max, PIPES_HOLD - held));
        if (capacity < 0n) capacity = rawSyscall(SYS.fcntl, rfd, F.GETPIPE_SZ, 0);
        if (capacity <= 0n || rawSyscall(SYS.fcntl, rfd, F.SETFL, O.NONBLOCK) < 0n) throw new Error('pipe size or flags');
        const poll = Buffer.alloc(8);
        poll.writeInt32LE(rfd, 0);
        poll.writeInt16LE(1 /* POLLIN */, 4);
        pipes.push({ wfd: w, rfd, capacity: Number(capacity), poll });
        held += Number(capacity);
      }
      const [cr, cw] = pipe();
      const ctl = take(cw);
      const ctlRead = take(cr);
      runIn(pid, SYS.close, [cw]);
      const code = spliceLoopCode(cr);
      const padded = Buffer.concat([code, Buffer.alloc((8 - (code.length % 8)) % 8)]);
      for (let i = 0; i < padded.length; i += 8) ptrace.pokeData(pid, page + BigInt(SPLICE_CODE_AT + i), padded.readBigUInt64LE(i));
      // SCHED_BATCH: woken by a message, the snapshot does not preempt cptrst (on a busy machine a
      // preempted cptrst can wait a whole scheduler slice for its CPU back); it runs while cptrst
      // waits for a pipe, or on another CPU. Best effort.
      rawSyscall(SYS.sched_setscheduler, pid, SCHED_BATCH, Buffer.alloc(4));
      return new SplicePipe(pid, ptrace.getRegs(pid), page, pipes, ctl, ctlRead, expected);
    } catch {
      for (const fd of mine) fs.closeSync(fd);
      return undefined;
    }
  }

  /**
   * Reads [addr, addr+length) of the snapshot into buf at offset through the pipes; returns how
   * many bytes it read (from the start). Fewer than `length` where a vmsplice failed: the caller
   * reads the rest through the mem file. Once it has all of it, the loop is sent the announced
   * ranges that follow, which it puts into the pipes while the caller checksums and writes.
   */
  read(addr: bigint, buf: Buffer, offset: number, length: number): number {
    return this.transfer(addr, length, (rfd, at, n) => rawSyscall(SYS.read, rfd, buf.subarray(offset + at, offset + at + n), n));
  }

  /** The same into the file fd at position, with splice(2): the pages never reach cptrst's memory. */
  spliceTo(addr: bigint, length: number, fd: number, position: number): number {
    return this.transfer(addr, length, (rfd, at, n) => linux.spliceToFile(rfd, fd, position + at, n));
  }

  private transfer(addr: bigint, length: number, take: Take): number {
    if (this.broken) return 0;
    const f = this.inFlight;
    while (f.length && (f[0][0] !== addr || f[0][1] !== length)) {
      // Fetched for a read that does not come now: taken out of the pipes and dropped.
      const [, n] = f.shift()!;
      if (!this.scratch || this.scratch.length < n) this.scratch = Buffer.allocUnsafe(n);
      const scratch = this.scratch;
      this.receive(n, (rfd, at, k) => rawSyscall(SYS.read, rfd, scratch.subarray(at, at + k), k));
      if (this.broken) return 0;
    }
    if (!f.length && !this.send([[addr, length]])) return 0;
    f.shift();
    const got = this.receive(length, take);
    if (this.expected.get(addr) === length) this.expected.delete(addr);
    // The pages of an area are read one object after the other: the next ones are sent ahead,
    // a few at a time, and the loop splices them while the caller checksums and writes.
    if (got === length && !this.broken && f.length <= 1) {
      const more: Array<[bigint, number]> = [];
      let at = f.length ? f[f.length - 1][0] + BigInt(f[f.length - 1][1]) : addr + BigInt(length);
      for (let next = this.expected.get(at); next !== undefined && f.length + more.length < AHEAD; next = this.expected.get(at)) {
        more.push([at, next]);
        at += BigInt(next);
      }
      if (more.length && !this.send(more)) return got;
    }
    return got;
  }

  /**
   * The pieces of a range: [offset in it, length, pipe], in the order the loop fills them, the
   * first one through the pipe of piece number `first`.
   */
  private *pieces(length: number, first: number): Generator<[number, number, DataPipe]> {
    for (let at = 0, k = first; at < length; k++) {
      const p = this.pipes[k % this.pipes.length];
      const n = Math.min(p.capacity, length - at);
      yield [at, n, p];
      at += n;
    }
  }

  /** Sends the loop the pieces of ranges (starting the loop again if it stopped); false if it could not. */
  private send(ranges: Array<[bigint, number]>): boolean {
    if (!this.running) {
      // Messages a stopped loop did not take are dropped (it has stopped: the pipe cannot change).
      const waiting = linux.ioctlInt(this.ctlRead, linux.FIONREAD);
      if (waiting > 0) rawSyscall(SYS.read, this.ctlRead, Buffer.alloc(waiting), waiting);
      else if (waiting < 0) {
        this.fail(0);
        return false;
      }
      // Waiting for its next message from the start of the loop.
      ptrace.setRegs(this.pid, { ...this.regs, rip: this.page + BigInt(SPLICE_CODE_AT) });
      ptrace.cont(this.pid, 0);
      this.running = true;
    }
    // One write for all of them: the loop is woken once.
    let bytes = 0;
    for (const [addr, length] of ranges) {
      for (const [at, n, p] of this.pieces(length, this.sent)) {
        if (bytes + MESSAGE > this.msg.length) this.msg = Buffer.concat([this.msg, Buffer.alloc(this.msg.length)]);
        this.msg.writeBigUInt64LE(addr + BigInt(at), bytes);
        this.msg.writeBigUInt64LE(BigInt(n), bytes + 8);
        this.msg.writeBigUInt64LE(BigInt(p.wfd), bytes + 16);
        bytes += MESSAGE;
        this.sent++;
      }
      this.inFlight.push([addr, length]);
    }
    if (rawSyscall(SYS.write, this.ctl, this.msg, bytes) === BigInt(bytes)) return true;
    this.fail(0);
    return false;
  }

  /**
   * Takes the first range in flight out of the pipes with `take`: `length` bytes, or fewer where a
   * vmsplice failed (the loop has then stopped at its int3) or `take` did.
   */
  private receive(length: number, take: Take): number {
    let got = 0;
    for (const [at, n, p] of this.pieces(length, this.taken)) {
      this.taken++;
      let end = n; // bytes this pipe will give
      let done = 0;
      while (done < end) {
        const r = take(p.rfd, at + done, end - done);
        if (r > 0n) {
          done += Number(r);
          continue;
        }
        if ((r !== -11n /* EAGAIN */ && r !== -4n) /* EINTR */ || !this.running) return this.fail(got + done);
        const w = waitpid(this.pid, WAIT.__WALL | WAIT.WNOHANG);
        if (w.pid === 0) {
          this.timeout.writeBigInt64LE(POLL_NS, 8); // ppoll leaves the time remaining in it
          rawSyscall(linux.syscallNumber('ppoll'), p.poll, 1, this.timeout, 0, 8);
          continue;
        }
        const stop = this.stoppedAt(w);
        if (stop === undefined) continue;
        // Stopped: what it had not done yet is dropped with its messages, and the pipes are empty
        // once this piece is taken.
        this.running = false;
        this.inFlight.length = 0;
        this.sent = this.taken = 0;
        if (stop !== SPLICE_FAILED_AT) return this.fail(got + done);
        // A vmsplice failed on this piece: what the loop spliced of it is in the pipe, `left` bytes were not.
        const left = Number(ptrace.peekData(this.pid, this.page + 8n));
        if (!(left > 0 && left <= n)) return this.fail(got + done);
        // No vmsplice here, or a refusal, would fail every time.
        if (at === 0 && left === n && BigInt.asIntN(64, ptrace.getRegs(this.pid).rax) !== -14n /* EFAULT */) this.broken = true;
        end = n - left;
      }
      got += done;
      if (done < n) return got;
    }
    return got;
  }

  /**
   * Where in the code a stop of the snapshot left it (an int3's offset), or undefined for any
   * other stop, which is let go without its signal (a SIGSTOP, which cannot be blocked). Throws
   * if the snapshot died.
   */
  private stoppedAt(w: linux.WaitResult): number | undefined {
    if (w.exited !== undefined || w.signaled !== undefined) throw new CptError('ESRCH', 'the snapshot process died', { pid: this.pid, object: 'memory snapshot' });
    const s = w.stopped;
    if (s && s.event === 0 && s.sig === linux.SIG.SIGTRAP) {
      const at = Number(ptrace.getRegs(this.pid).rip - this.page);
      if (at === SPLICE_FAILED_AT || at === SPLICE_ENDED_AT) return at;
    }
    ptrace.cont(this.pid, 0);
    return undefined;
  }

  /** The pipes are out of step with the snapshot: this read and every later one go through the mem file. */
  private fail(got: number): number {
    this.broken = true;
    return got;
  }

  close(): void {
    for (const p of this.pipes) fs.closeSync(p.rfd);
    fs.closeSync(this.ctl);
    fs.closeSync(this.ctlRead);
  }
}

/**
 * Runs a system call in the snapshot, stopped at a syscall stop, on the `syscall` instruction at
 * `insn` (the one it came out of). Other stops on the way are let go without their signal.
 */
function callIn(pid: number, regs: UserRegs, insn: bigint, nr: number, args: number[]): bigint {
  const a = args.map((x) => BigInt.asUintN(64, BigInt(x)));
  ptrace.setRegs(pid, { ...regs, rax: BigInt(nr), orig_rax: 0xffffffffffffffffn, rdi: a[0] ?? 0n, rsi: a[1] ?? 0n, rdx: a[2] ?? 0n, r10: a[3] ?? 0n, r8: a[4] ?? 0n, r9: a[5] ?? 0n, rip: insn });
  for (let stops = 0; stops < 2; ) {
    ptrace.syscall(pid, 0);
    const w = waitpid(pid, WAIT.__WALL);
    if (w.exited !== undefined || w.signaled !== undefined) throw new CptError('ESRCH', 'the snapshot process died', { pid, object: 'memory snapshot' });
    if (w.stopped?.syscallStop) stops++; // entry, then exit
  }
  return BigInt.asIntN(64, ptrace.getRegs(pid).rax);
}

/** The snapshot process. */
class ForkSnapshot implements MemorySnapshot {
  private readonly mem: linux.ProcMem;
  private closed = false;
  /** The pipes, set up at the first read big enough (after the process was let go); null: the mem file only. */
  private pipe: SplicePipe | null | undefined;
  private readonly expected = new Map<bigint, number>();
  /** The snapshot's registers at its last syscall stop, and the `syscall` it came out of. */
  private readonly regs: UserRegs;
  private readonly insn: bigint;

  constructor(readonly pid: number, private readonly frame: SavedBytes | undefined) {
    // Not process_vm_readv: its pins would make the kernel copy every shared page (memory.ts).
    this.mem = new ProcMem(pid, { readOnly: true, memFileOnly: true });
    this.regs = ptrace.getRegs(pid);
    this.insn = this.regs.rip - 2n;
    // The pipes need a `syscall` to run their setup on (0f 05); CPTRST_SNAPSHOT_MEMFILE=1 does without them.
    if (process.env.CPTRST_SNAPSHOT_MEMFILE || (ptrace.peekData(pid, this.insn) & 0xffffn) !== 0x050fn) this.pipe = null;
  }

  expect(addr: bigint, length: number): void {
    if (this.pipe !== null && length >= SPLICE_MIN) this.expected.set(addr, length);
  }

  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void {
    if (this.closed) throw new CptError('ESRCH', 'the snapshot is closed', { pid: this.pid, object: 'memory snapshot' });
    let got = 0;
    if (length >= SPLICE_MIN && this.pipe !== null) {
      const pipe = this.openPipe();
      if (pipe) got = pipe.read(addr, buf, offset, length);
    }
    if (got < length) this.mem.readFully(addr + BigInt(got), buf, offset + got, length - got);
    overlaySaved(this.frame, addr, buf, offset, length);
  }

  /** The pipes, set up at the first read that uses them (after the process was let go: outside the frozen window). */
  private openPipe(): SplicePipe | null {
    this.pipe ??= SplicePipe.open(this.pid, (pid, nr, args) => callIn(pid, this.regs, this.insn, nr, args), this.expected) ?? null;
    return this.pipe;
  }

  spliceInto(addr: bigint, length: number, fd: number, position: number): number {
    if (this.closed) throw new CptError('ESRCH', 'the snapshot is closed', { pid: this.pid, object: 'memory snapshot' });
    if (length < SPLICE_MIN || this.pipe === null) return 0;
    const pipe = this.openPipe();
    if (!pipe) return 0;
    const got = pipe.spliceTo(addr, length, fd, position);
    // What a held signal frame covers is shown as it was before (as readMemoryInto does).
    overlaySavedInFile(this.frame, addr, got, fd, position);
    return got;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mem.close();
    this.pipe?.close();
    killAndReap(this.pid);
  }
}

/**
 * The first child, stopped at its first stop: makes it fork the snapshot and returns it. The
 * caller kills the first child afterwards, whatever happens. `runIn(pid, nr, args)` runs a
 * syscall in the first child or the snapshot (both stopped, both die with cptrst).
 */
export function forkFromFirstCopy(
  first: number, runIn: (pid: number, nr: number, args: number[], withinMs?: number) => bigint, frame: SavedBytes | undefined, underSeccomp?: boolean,
): MemorySnapshot {
  const run = (nr: number, args: number[], withinMs?: number): bigint => runIn(first, nr, args, withinMs);
  if (!waitStop(first)) throw new CptError('ESRCH', 'the first copy died before its first stop', { pid: first, object: 'memory snapshot' });
  // A copy of a process under seccomp keeps its filters suspended, as the process has them
  // (`underSeccomp`: the process's mode, which the copy has; read from the copy by default).
  const suspend = (underSeccomp ?? linux.readStatus(first).seccomp !== 0) ? PTRACE_O.SUSPEND_SECCOMP : 0;
  ptrace.setOptions(first, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.EXITKILL | suspend);
  const closed = run(linux.SYS.close_range, [0, 0xffffffff, 0]);
  if (closed < 0n) throw new CptError(linux.errnoName(Number(-closed)), 'close_range in the first copy failed', { pid: first, object: 'memory snapshot' });
  // A session of its own before the fork: the snapshot is never born with the target's controlling
  // terminal. A snapshot killed before its own setsid (cptrst dying) would otherwise hold the
  // terminal until init reaps it, and a checkpoint of the tree meanwhile would find the terminal
  // held outside the tree. (The first copy itself the target reaps at once.)
  const session = run(linux.SYS.setsid, []);
  if (session !== BigInt(first)) throw new CptError(linux.errnoName(Number(-session)), 'setsid in the first copy failed', { pid: first, object: 'memory snapshot' });
  // Bounded: an area registered with a userfaultfd that has UFFD_FEATURE_EVENT_FORK makes the fork
  // post a fork event and wait (killably) until the fd's holder reads it. The checkpoint refuses
  // such areas before any snapshot (mm's uffd-areas.ts); should one get through, cptrst does not
  // wait forever: the caller kills the first copy, which ends the wait and withdraws the event.
  const second = run(linux.syscallNumber('fork'), [], forkTimeoutMs());
  if (second <= 0n) throw new CptError(linux.errnoName(Number(-second)), 'fork in the first copy failed', { pid: first, object: 'memory snapshot' });
  const pid = Number(second);
  // Born traced, with EXITKILL (inherited), and stopped before it runs anything.
  if (!waitStop(pid)) throw new CptError('ESRCH', 'the snapshot died before its first stop', { pid, object: 'memory snapshot' });
  try {
    // A session of its own (out of the first copy's, already out of the target's): signals to the
    // target's group or from its terminal miss it, and once dead it keeps no other process's PID
    // in use as a group or session ID until init reaps it (a restart of the target with its PID
    // would wait for that).
    const sid = runIn(pid, linux.SYS.setsid, []);
    if (sid !== BigInt(pid)) throw new CptError(linux.errnoName(Number(-sid)), 'setsid in the snapshot failed', { pid, object: 'memory snapshot' });
    return new ForkSnapshot(pid, frame);
  } catch (e) {
    killAndReap(pid);
    throw e;
  }
}
