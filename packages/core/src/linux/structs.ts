/**
 * Kernel structure layouts, little-endian, with encode/decode to Buffer. Sizes and offsets are
 * those of the kernel's uapi headers for 64-bit Linux; the register layouts of an instruction
 * set live in its arch package.
 */
import { CptError } from '../errors';

function need(buf: Buffer, size: number, what: string): void {
  if (buf.length < size) throw new CptError('EINVAL', `${what}: need ${size} bytes, got ${buf.length}`);
}
const u64 = (b: Buffer, o: number): bigint => b.readBigUInt64LE(o);
const i64 = (b: Buffer, o: number): bigint => b.readBigInt64LE(o);
const put64 = (b: Buffer, o: number, v: bigint | number): void => {
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), o);
};

/** A register as a signed value: a syscall's result (-errno on failure, e.g. -512 for ERESTARTSYS). */
export function signedReg(v: bigint): bigint {
  return BigInt.asIntN(64, v);
}

// ---------------------------------------------------------------------------------------------
// struct iovec

export const IOVEC_SIZE = 16;

// ---------------------------------------------------------------------------------------------
// kernel struct sigaction for rt_sigaction on x86-64 (sa_handler, sa_flags, sa_restorer, sa_mask)

export interface KernelSigaction {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}
export const KERNEL_SIGACTION_SIZE = 32;
export function decodeKernelSigaction(buf: Buffer): KernelSigaction {
  need(buf, KERNEL_SIGACTION_SIZE, 'struct sigaction');
  return { handler: u64(buf, 0), flags: u64(buf, 8), restorer: u64(buf, 16), mask: u64(buf, 24) };
}
export function encodeKernelSigaction(sa: KernelSigaction): Buffer {
  const b = Buffer.alloc(KERNEL_SIGACTION_SIZE);
  put64(b, 0, sa.handler);
  put64(b, 8, sa.flags);
  put64(b, 16, sa.restorer);
  put64(b, 24, sa.mask);
  return b;
}

// ---------------------------------------------------------------------------------------------
// stack_t (ss_sp u64, ss_flags i32, pad, ss_size u64)

export interface StackT {
  sp: bigint;
  flags: number;
  size: bigint;
}
export const STACK_T_SIZE = 24;
export function decodeStackT(buf: Buffer): StackT {
  need(buf, STACK_T_SIZE, 'stack_t');
  return { sp: u64(buf, 0), flags: buf.readInt32LE(8), size: u64(buf, 16) };
}
export function encodeStackT(s: StackT): Buffer {
  const b = Buffer.alloc(STACK_T_SIZE);
  put64(b, 0, s.sp);
  b.writeInt32LE(s.flags | 0, 8);
  put64(b, 16, s.size);
  return b;
}

// ---------------------------------------------------------------------------------------------
// struct timespec / timeval / itimerval

export interface Timespec {
  sec: bigint;
  nsec: bigint;
}
export const TIMESPEC_SIZE = 16;
export function decodeTimespec(buf: Buffer, off = 0): Timespec {
  need(buf, off + TIMESPEC_SIZE, 'timespec');
  return { sec: i64(buf, off), nsec: i64(buf, off + 8) };
}
export function encodeTimespec(t: Timespec, out: Buffer = Buffer.alloc(TIMESPEC_SIZE), off = 0): Buffer {
  out.writeBigInt64LE(BigInt(t.sec), off);
  out.writeBigInt64LE(BigInt(t.nsec), off + 8);
  return out;
}

export interface Timeval {
  sec: bigint;
  usec: bigint;
}
export interface Itimerval {
  interval: Timeval;
  value: Timeval;
}
export const ITIMERVAL_SIZE = 32;
export function decodeItimerval(buf: Buffer): Itimerval {
  need(buf, ITIMERVAL_SIZE, 'itimerval');
  return {
    interval: { sec: i64(buf, 0), usec: i64(buf, 8) },
    value: { sec: i64(buf, 16), usec: i64(buf, 24) },
  };
}
export function encodeItimerval(t: Itimerval): Buffer {
  const b = Buffer.alloc(ITIMERVAL_SIZE);
  b.writeBigInt64LE(BigInt(t.interval.sec), 0);
  b.writeBigInt64LE(BigInt(t.interval.usec), 8);
  b.writeBigInt64LE(BigInt(t.value.sec), 16);
  b.writeBigInt64LE(BigInt(t.value.usec), 24);
  return b;
}

// ---------------------------------------------------------------------------------------------
// siginfo_t (128 bytes). The union is kept raw; common fields are decoded at their fixed offsets
// and are meaningful only for the matching signal/si_code (kill: pid+uid; SIGCHLD: pid, uid,
// status; fault: addr; rt/queue: pid, uid, value; timer: timerid, overrun, value).

export const SIGINFO_SIZE = 128;
export interface Siginfo {
  raw: Buffer;
  signo: number;
  errno: number;
  code: number;
  /** _kill/_rt/_sigchld si_pid (offset 16), also _timer si_tid. */
  pid: number;
  /** si_uid (offset 20), also _timer si_overrun. */
  uid: number;
  /** _sigchld si_status (offset 24, i32). */
  status: number;
  /** _sigfault si_addr (offset 16). */
  addr: bigint;
  /** _rt / _timer si_value (offset 24, u64). */
  value: bigint;
}
export function decodeSiginfo(buf: Buffer): Siginfo {
  need(buf, SIGINFO_SIZE, 'siginfo_t');
  const raw = Buffer.from(buf.subarray(0, SIGINFO_SIZE));
  return {
    raw,
    signo: raw.readInt32LE(0),
    errno: raw.readInt32LE(4),
    code: raw.readInt32LE(8),
    pid: raw.readInt32LE(16),
    uid: raw.readUInt32LE(20),
    status: raw.readInt32LE(24),
    addr: u64(raw, 16),
    value: u64(raw, 24),
  };
}
/** A siginfo buffer: copies `raw` when given, then overwrites signo/errno/code. */
export function encodeSiginfo(si: Pick<Siginfo, 'signo' | 'errno' | 'code'> & { raw?: Buffer }): Buffer {
  const b = Buffer.alloc(SIGINFO_SIZE);
  if (si.raw) si.raw.copy(b, 0, 0, Math.min(SIGINFO_SIZE, si.raw.length));
  b.writeInt32LE(si.signo, 0);
  b.writeInt32LE(si.errno, 4);
  b.writeInt32LE(si.code, 8);
  return b;
}

// ---------------------------------------------------------------------------------------------
// struct prctl_mm_map (PR_SET_MM / PR_SET_MM_MAP), 104 bytes

export interface PrctlMmMap {
  startCode: bigint;
  endCode: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  brk: bigint;
  startStack: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  /** Address of the auxv array in the caller's memory (the kernel copies it). */
  auxv: bigint;
  auxvSize: number;
  /** An fd in the caller for the new /proc/PID/exe, or 0xffffffff (-1) to leave it. */
  exeFd: number;
}
export const PRCTL_MM_MAP_SIZE = 104;
const MM_MAP_U64 = [
  'startCode', 'endCode', 'startData', 'endData', 'startBrk', 'brk', 'startStack',
  'argStart', 'argEnd', 'envStart', 'envEnd', 'auxv',
] as const;
export function encodePrctlMmMap(m: PrctlMmMap): Buffer {
  const b = Buffer.alloc(PRCTL_MM_MAP_SIZE);
  MM_MAP_U64.forEach((k, i) => put64(b, i * 8, m[k]));
  b.writeUInt32LE(m.auxvSize >>> 0, 96);
  b.writeUInt32LE(m.exeFd >>> 0, 100);
  return b;
}
export function decodePrctlMmMap(buf: Buffer): PrctlMmMap {
  need(buf, PRCTL_MM_MAP_SIZE, 'prctl_mm_map');
  const m = {} as PrctlMmMap;
  MM_MAP_U64.forEach((k, i) => {
    m[k] = u64(buf, i * 8);
  });
  m.auxvSize = buf.readUInt32LE(96);
  m.exeFd = buf.readUInt32LE(100);
  return m;
}

// ---------------------------------------------------------------------------------------------
// struct clone_args (clone3), 88 bytes (CLONE_ARGS_SIZE_VER2)

export interface CloneArgs {
  flags: bigint;
  pidfd: bigint;
  childTid: bigint;
  parentTid: bigint;
  exitSignal: bigint;
  stack: bigint;
  stackSize: bigint;
  tls: bigint;
  setTid: bigint;
  setTidSize: bigint;
  cgroup: bigint;
}
export const CLONE_ARGS_SIZE = 88;
const CLONE_ARGS_FIELDS = [
  'flags', 'pidfd', 'childTid', 'parentTid', 'exitSignal', 'stack', 'stackSize', 'tls', 'setTid', 'setTidSize', 'cgroup',
] as const;
export function encodeCloneArgs(a: Partial<CloneArgs>): Buffer {
  const b = Buffer.alloc(CLONE_ARGS_SIZE);
  CLONE_ARGS_FIELDS.forEach((k, i) => put64(b, i * 8, a[k] ?? 0n));
  return b;
}
export function decodeCloneArgs(buf: Buffer): CloneArgs {
  need(buf, CLONE_ARGS_SIZE, 'clone_args');
  const a = {} as CloneArgs;
  CLONE_ARGS_FIELDS.forEach((k, i) => {
    a[k] = u64(buf, i * 8);
  });
  return a;
}

// ---------------------------------------------------------------------------------------------
// struct ptrace_rseq_configuration (PTRACE_GET_RSEQ_CONFIGURATION), 24 bytes

export interface RseqConfiguration {
  rseqAbiPointer: bigint;
  rseqAbiSize: number;
  signature: number;
  flags: number;
}
export const RSEQ_CONFIGURATION_SIZE = 24;
export function decodeRseqConfiguration(buf: Buffer): RseqConfiguration {
  need(buf, RSEQ_CONFIGURATION_SIZE, 'ptrace_rseq_configuration');
  return {
    rseqAbiPointer: u64(buf, 0),
    rseqAbiSize: buf.readUInt32LE(8),
    signature: buf.readUInt32LE(12),
    flags: buf.readUInt32LE(16),
  };
}

// ---------------------------------------------------------------------------------------------
// struct ptrace_peeksiginfo_args {u64 off; u32 flags; s32 nr}

export const PEEKSIGINFO_ARGS_SIZE = 16;
export function encodePeeksiginfoArgs(off: bigint | number, flags: number, nr: number): Buffer {
  const b = Buffer.alloc(PEEKSIGINFO_ARGS_SIZE);
  put64(b, 0, off);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeInt32LE(nr | 0, 12);
  return b;
}

// ---------------------------------------------------------------------------------------------
// struct ptrace_syscall_info (PTRACE_GET_SYSCALL_INFO)

export interface SyscallInfo {
  /** PTRACE_SYSCALL_INFO_{NONE,ENTRY,EXIT,SECCOMP} */
  op: number;
  arch: number;
  instructionPointer: bigint;
  stackPointer: bigint;
  /** entry / seccomp: the syscall number and its six arguments. */
  nr?: bigint;
  args?: bigint[];
  /** exit: the return value (signed) and whether it is an error. */
  rval?: bigint;
  isError?: boolean;
  /** seccomp: SECCOMP_RET_DATA. */
  retData?: number;
}
export const SYSCALL_INFO_SIZE = 88;
export function decodeSyscallInfo(buf: Buffer): SyscallInfo {
  need(buf, 24, 'ptrace_syscall_info');
  const info: SyscallInfo = {
    op: buf.readUInt8(0),
    arch: buf.readUInt32LE(4),
    instructionPointer: u64(buf, 8),
    stackPointer: u64(buf, 16),
  };
  if ((info.op === 1 || info.op === 3) && buf.length >= 80) {
    info.nr = u64(buf, 24);
    info.args = [0, 1, 2, 3, 4, 5].map((i) => u64(buf, 32 + i * 8));
    if (info.op === 3 && buf.length >= 84) info.retData = buf.readUInt32LE(80);
  } else if (info.op === 2 && buf.length >= 33) {
    info.rval = i64(buf, 24);
    info.isError = buf.readUInt8(32) !== 0;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// struct stat (x86-64, 144 bytes)

export interface KernelStat {
  dev: bigint;
  ino: bigint;
  nlink: bigint;
  mode: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: bigint;
  blksize: bigint;
  blocks: bigint;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
}
export const STAT_SIZE = 144;
export function decodeStat(buf: Buffer): KernelStat {
  need(buf, STAT_SIZE, 'struct stat');
  return {
    dev: u64(buf, 0),
    ino: u64(buf, 8),
    nlink: u64(buf, 16),
    mode: buf.readUInt32LE(24),
    uid: buf.readUInt32LE(28),
    gid: buf.readUInt32LE(32),
    rdev: u64(buf, 40),
    size: i64(buf, 48),
    blksize: i64(buf, 56),
    blocks: i64(buf, 64),
    atime: decodeTimespec(buf, 72),
    mtime: decodeTimespec(buf, 88),
    ctime: decodeTimespec(buf, 104),
  };
}
/** major/minor of a kernel dev_t (new encoding). */
export function devMajor(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn & 0xfffff000n));
}
export function devMinor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
}
export function makeDev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

// ---------------------------------------------------------------------------------------------
// struct rlimit64 (prlimit64)

export interface Rlimit {
  cur: bigint;
  max: bigint;
}
export const RLIMIT64_SIZE = 16;
export function decodeRlimit(buf: Buffer): Rlimit {
  need(buf, RLIMIT64_SIZE, 'rlimit64');
  return { cur: u64(buf, 0), max: u64(buf, 8) };
}
export function encodeRlimit(r: Rlimit): Buffer {
  const b = Buffer.alloc(RLIMIT64_SIZE);
  put64(b, 0, r.cur);
  put64(b, 8, r.max);
  return b;
}
