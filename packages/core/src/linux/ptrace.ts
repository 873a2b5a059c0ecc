/**
 * ptrace(2) requests, one function each, on top of the raw system call.
 *
 * All requests must be issued from the thread that attached; koffi's synchronous calls run on
 * the JavaScript main thread, so call these synchronously (never from a worker) and do not
 * interleave another tracer. Failures throw CptError with the errno name as code and a message
 * like "ptrace(PTRACE_SEIZE, 1234): Operation not permitted".
 */
import { CptError } from '../errors';
import { NT, PTRACE, PTRACE_PEEKSIGINFO_SHARED, ptraceRequestName } from './constants';
import { errnoError, libcPtrace, libcPtraceRegset, rawSyscall } from './libc';
import { SYS } from './syscalls';
import { decodeStruct, encodeStruct, sizeOfStruct } from '../image/cstruct';
import {
  PeeksiginfoArgs,
  RseqConfiguration,
  SeccompMetadata,
  SYSCALL_INFO_SIZE,
  Siginfo,
  SyscallInfo,
  decodeSyscallInfo,
} from './structs';

const SIGINFO_SIZE = sizeOfStruct(Siginfo);
/** The word that PEEKUSER, GETSIGMASK and SETSIGMASK move (requests are synchronous: one is enough). */
const word = Buffer.alloc(8);

type Arg = number | bigint | Buffer | null;

function req(request: number, tid: number, addr: Arg, data: Arg, name = ptraceRequestName(request)): bigint {
  // An integer address (all but PEEKSIGINFO) takes the fixed declarations.
  const r = typeof addr === 'number' || typeof addr === 'bigint' ? libcPtrace(request, tid, addr, data) : rawSyscall(SYS.ptrace, request, tid, addr, data);
  if (r < 0n && r >= -4095n) throw errnoError(Number(-r), `ptrace(${name}, ${tid})`, tid);
  return r;
}

function sigArg(sig: number): number {
  if (!Number.isInteger(sig) || sig < 0 || sig > 64) throw new CptError('EINVAL', `ptrace: bad signal ${sig}`);
  return sig;
}

export interface PeekSiginfoOptions {
  /** Read the process-wide shared queue instead of the thread's private queue. */
  shared?: boolean;
  /** Index of the first queued signal to read. */
  off?: number;
  /** How many to read at most. */
  nr: number;
}

/** The ptrace requests cptrst uses. `tid` is a kernel thread id (the pid for a main thread). */
export const ptrace = Object.freeze({
  /**
   * Any request, for an arch package's own (x86's PTRACE_GETREGS...), which names it for messages
   * (`name`, e.g. "PTRACE_GETREGS"): the raw result, a CptError on failure.
   */
  request(request: number, tid: number, addr: Arg, data: Arg, name?: string): bigint {
    return req(request, tid, addr, data, name);
  },
  /** PTRACE_SEIZE: attach without stopping; `options` are PTRACE_O_* bits. */
  seize(tid: number, options = 0): void {
    req(PTRACE.SEIZE, tid, 0, options);
  },
  /** PTRACE_ATTACH (sends SIGSTOP; prefer seize). */
  attach(tid: number): void {
    req(PTRACE.ATTACH, tid, 0, 0);
  },
  /** PTRACE_INTERRUPT: stop a seized tracee; it reports a PTRACE_EVENT_STOP to waitpid. */
  interrupt(tid: number): void {
    req(PTRACE.INTERRUPT, tid, 0, 0);
  },
  /** PTRACE_CONT, delivering `sig` (0 = none). */
  cont(tid: number, sig = 0): void {
    req(PTRACE.CONT, tid, 0, sigArg(sig));
  },
  /** PTRACE_SYSCALL: resume to the next syscall entry/exit stop. */
  syscall(tid: number, sig = 0): void {
    req(PTRACE.SYSCALL, tid, 0, sigArg(sig));
  },
  /** PTRACE_SINGLESTEP. */
  singlestep(tid: number, sig = 0): void {
    req(PTRACE.SINGLESTEP, tid, 0, sigArg(sig));
  },
  /** PTRACE_DETACH, delivering `sig` (0 = none). The tracee must be in a ptrace-stop. */
  detach(tid: number, sig = 0): void {
    req(PTRACE.DETACH, tid, 0, sigArg(sig));
  },
  /** PTRACE_LISTEN: leave a group-stopped seized tracee stopped but let it hear SIGCONT. */
  listen(tid: number): void {
    req(PTRACE.LISTEN, tid, 0, 0);
  },
  /** PTRACE_KILL (deprecated; prefer kill(SIGKILL)). */
  kill(tid: number): void {
    req(PTRACE.KILL, tid, 0, 0);
  },
  /** PTRACE_SETOPTIONS. */
  setOptions(tid: number, options: number): void {
    req(PTRACE.SETOPTIONS, tid, 0, options);
  },
  /** PTRACE_GETEVENTMSG: new child's pid for fork/clone events, exit status for EXIT, etc. */
  getEventMsg(tid: number): bigint {
    const b = Buffer.alloc(8);
    req(PTRACE.GETEVENTMSG, tid, 0, b);
    return b.readBigUInt64LE(0);
  },
  /**
   * PTRACE_GETREGSET for note type `nt` (NT_PRSTATUS, NT_PRFPREG, or an arch's own, which names
   * it for messages: `name`), with a buffer of `maxSize` bytes; returns the buffer trimmed to the
   * length the kernel reported.
   */
  getRegset(tid: number, nt: number, maxSize = 16384, name = ntName(nt)): Buffer {
    const b = Buffer.alloc(maxSize);
    const [r, len] = libcPtraceRegset(PTRACE.GETREGSET, tid, nt, b);
    if (r < 0) throw errnoError(-r, `ptrace(PTRACE_GETREGSET, ${tid}, ${name})`, tid);
    return b.subarray(0, len);
  },
  /** PTRACE_SETREGSET; returns how many bytes the kernel consumed. */
  setRegset(tid: number, nt: number, buf: Buffer, name = ntName(nt)): number {
    const [r, len] = libcPtraceRegset(PTRACE.SETREGSET, tid, nt, buf);
    if (r < 0) throw errnoError(-r, `ptrace(PTRACE_SETREGSET, ${tid}, ${name})`, tid);
    return len;
  },
  /** PTRACE_PEEKUSER: the word at `offset` in struct user (registers, u_debugreg). */
  peekUser(tid: number, offset: number): bigint {
    req(PTRACE.PEEKUSER, tid, offset, word);
    return word.readBigUInt64LE(0);
  },
  /** PTRACE_POKEUSER. */
  pokeUser(tid: number, offset: number, value: bigint): void {
    req(PTRACE.POKEUSER, tid, offset, BigInt.asUintN(64, value));
  },
  /** PTRACE_PEEKDATA: one 8-byte word of tracee memory. */
  peekData(tid: number, addr: bigint): bigint {
    const b = Buffer.alloc(8);
    req(PTRACE.PEEKDATA, tid, addr, b);
    return b.readBigUInt64LE(0);
  },
  /** PTRACE_POKEDATA: write one 8-byte word (works on read-only private pages, like /proc/PID/mem). */
  pokeData(tid: number, addr: bigint, value: bigint): void {
    req(PTRACE.POKEDATA, tid, addr, BigInt.asUintN(64, value));
  },
  /** PTRACE_GETSIGINFO: the 128-byte siginfo of the current stop. */
  getSiginfo(tid: number): Buffer {
    const b = Buffer.alloc(SIGINFO_SIZE);
    req(PTRACE.GETSIGINFO, tid, 0, b);
    return b;
  },
  /** PTRACE_SETSIGINFO. */
  setSiginfo(tid: number, siginfo: Buffer): void {
    if (siginfo.length < SIGINFO_SIZE) throw new CptError('EINVAL', `ptrace(PTRACE_SETSIGINFO, ${tid}): siginfo of ${siginfo.length} bytes < 128`, { pid: tid });
    req(PTRACE.SETSIGINFO, tid, 0, siginfo);
  },
  /**
   * PTRACE_PEEKSIGINFO: queued (pending) signals without dequeuing them; one 128-byte siginfo
   * per element. `shared` reads the thread group's queue.
   */
  peekSiginfo(tid: number, opts: PeekSiginfoOptions): Buffer[] {
    const nr = opts.nr;
    if (!Number.isInteger(nr) || nr <= 0) return [];
    const args = encodeStruct(PeeksiginfoArgs, { off: BigInt(opts.off ?? 0), flags: opts.shared ? PTRACE_PEEKSIGINFO_SHARED : 0, nr });
    const b = Buffer.alloc(nr * SIGINFO_SIZE);
    const n = Number(req(PTRACE.PEEKSIGINFO, tid, args, b));
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) out.push(Buffer.from(b.subarray(i * SIGINFO_SIZE, (i + 1) * SIGINFO_SIZE)));
    return out;
  },
  /** Every queued siginfo of one queue, reading in batches. */
  peekAllSiginfo(tid: number, shared: boolean, batch = 32): Buffer[] {
    const all: Buffer[] = [];
    for (;;) {
      const part = ptrace.peekSiginfo(tid, { shared, off: all.length, nr: batch });
      all.push(...part);
      if (part.length < batch) return all;
    }
  },
  /** PTRACE_GETSIGMASK: the thread's blocked mask (64-bit sigset, bit n-1 = signal n). */
  getSigmask(tid: number): bigint {
    req(PTRACE.GETSIGMASK, tid, 8, word);
    return word.readBigUInt64LE(0);
  },
  /** PTRACE_SETSIGMASK. */
  setSigmask(tid: number, mask: bigint): void {
    word.writeBigUInt64LE(BigInt.asUintN(64, mask), 0);
    req(PTRACE.SETSIGMASK, tid, 8, word);
  },
  /** PTRACE_GET_RSEQ_CONFIGURATION: the registered rseq area (pointer 0 and size 0 when none). */
  getRseqConfiguration(tid: number): RseqConfiguration {
    const b = Buffer.alloc(sizeOfStruct(RseqConfiguration));
    req(PTRACE.GET_RSEQ_CONFIGURATION, tid, b.length, b);
    return decodeStruct(RseqConfiguration, b);
  },
  /**
   * PTRACE_SECCOMP_GET_FILTER: the classic BPF program of the thread's filter number `index`
   * (0 is the oldest), as struct sock_filter[]. ENOENT past the last filter.
   */
  seccompGetFilter(tid: number, index: number): Buffer {
    const n = Number(req(PTRACE.SECCOMP_GET_FILTER, tid, index, null));
    const b = Buffer.alloc(n * 8);
    const m = Number(req(PTRACE.SECCOMP_GET_FILTER, tid, index, b));
    return b.subarray(0, Math.min(m, n) * 8);
  },
  /** PTRACE_SECCOMP_GET_METADATA: the flags (SECCOMP_FILTER_FLAG_LOG) of filter number `index`. */
  seccompGetMetadata(tid: number, index: number): bigint {
    const b = encodeStruct(SeccompMetadata, { filterOff: BigInt(index) });
    req(PTRACE.SECCOMP_GET_METADATA, tid, b.length, b);
    return decodeStruct(SeccompMetadata, b).flags;
  },
  /** PTRACE_GET_SYSCALL_INFO: what the current stop is (syscall entry/exit/seccomp or none). */
  getSyscallInfo(tid: number): SyscallInfo {
    const b = Buffer.alloc(SYSCALL_INFO_SIZE);
    const n = Number(req(PTRACE.GET_SYSCALL_INFO, tid, SYSCALL_INFO_SIZE, b));
    return decodeSyscallInfo(b.subarray(0, Math.min(n, SYSCALL_INFO_SIZE)));
  },
});

function ntName(nt: number): string {
  for (const [k, v] of Object.entries(NT)) if (v === nt) return `NT_${k}`;
  return `0x${nt.toString(16)}`;
}
