/**
 * Kernel structure layouts, little-endian, with encode/decode to Buffer. Sizes and offsets are
 * those of the kernel's uapi headers for 64-bit Linux; the register layouts of an instruction
 * set live in its arch package.
 */
import { CptError } from '../errors';
import { cfield, cstruct, decodeStruct, offsetOfField, sizeOfStruct } from '../image/cstruct';

function need(buf: Buffer, size: number, what: string): void {
  if (buf.length < size) throw new CptError('EINVAL', `${what}: need ${size} bytes, got ${buf.length}`);
}

/** A register as a signed value: a syscall's result (-errno on failure, e.g. -512 for ERESTARTSYS). */
export function signedReg(v: bigint): bigint {
  return BigInt.asIntN(64, v);
}

// ---------------------------------------------------------------------------------------------
// Fixed-layout structs, declared once (see image/cstruct.ts): decodeStruct(Class, buf),
// encodeStruct(instance) or encodeStruct(Class, fields), sizeOfStruct(Class).

/** Kernel struct sigaction for rt_sigaction on x86-64 (not libc's: the mask comes last). */
@cstruct('sigaction')
export class KernelSigaction {
  @cfield.u64() handler = 0n;
  @cfield.u64() flags = 0n;
  @cfield.u64() restorer = 0n;
  @cfield.u64() mask = 0n;
}

/** stack_t (sigaltstack). */
@cstruct('stack_t')
export class StackT {
  @cfield.u64() sp = 0n;
  @cfield.i32() flags = 0;
  @cfield.u64() size = 0n;
}

@cstruct('timespec')
export class Timespec {
  @cfield.i64() sec = 0n;
  @cfield.i64() nsec = 0n;
}

@cstruct('timeval')
export class Timeval {
  @cfield.i64() sec = 0n;
  @cfield.i64() usec = 0n;
}

/** struct itimerval (getitimer / setitimer). */
@cstruct('itimerval')
export class Itimerval {
  @cfield.struct(Timeval) interval = new Timeval();
  @cfield.struct(Timeval) value = new Timeval();
}

/**
 * siginfo_t, 128 bytes. The union is kept whole in `raw` (a signal is queued again from it);
 * the members decoded by name sit at their fixed offsets and mean something only for the
 * matching signal and si_code (kill: pid, uid; SIGCHLD: pid, uid, status; fault: addr;
 * rt/queue: pid, uid, value; timer: timerid, overrun, value). Encoding writes `raw` first, so
 * named fields given with it take precedence.
 */
@cstruct('siginfo_t', { size: 128 })
export class Siginfo {
  @cfield.bytes(128, { offset: 0 }) raw: Buffer = Buffer.alloc(128);
  @cfield.i32({ offset: 0 }) signo = 0;
  @cfield.i32() errno = 0;
  @cfield.i32() code = 0;
  /** _kill/_rt/_sigchld si_pid, also _timer si_tid. */
  @cfield.i32({ offset: 16 }) pid = 0;
  /** si_uid, also _timer si_overrun. */
  @cfield.u32() uid = 0;
  /** _sigchld si_status. */
  @cfield.i32() status = 0;
  /** _sigfault si_addr. */
  @cfield.u64({ offset: 16 }) addr = 0n;
  /** _rt / _timer si_value. */
  @cfield.u64({ offset: 24 }) value = 0n;
}

/** struct prctl_mm_map (PR_SET_MM / PR_SET_MM_MAP). */
@cstruct('prctl_mm_map')
export class PrctlMmMap {
  @cfield.u64() startCode = 0n;
  @cfield.u64() endCode = 0n;
  @cfield.u64() startData = 0n;
  @cfield.u64() endData = 0n;
  @cfield.u64() startBrk = 0n;
  @cfield.u64() brk = 0n;
  @cfield.u64() startStack = 0n;
  @cfield.u64() argStart = 0n;
  @cfield.u64() argEnd = 0n;
  @cfield.u64() envStart = 0n;
  @cfield.u64() envEnd = 0n;
  /** Address of the auxv array in the caller's memory (the kernel copies it). */
  @cfield.u64() auxv = 0n;
  @cfield.u32() auxvSize = 0;
  /** An fd in the caller for the new /proc/PID/exe, or 0xffffffff (-1) to leave it. */
  @cfield.u32() exeFd = 0;
}

/** struct clone_args (clone3), CLONE_ARGS_SIZE_VER2. */
@cstruct('clone_args')
export class CloneArgs {
  @cfield.u64() flags = 0n;
  @cfield.u64() pidfd = 0n;
  @cfield.u64() childTid = 0n;
  @cfield.u64() parentTid = 0n;
  @cfield.u64() exitSignal = 0n;
  @cfield.u64() stack = 0n;
  @cfield.u64() stackSize = 0n;
  @cfield.u64() tls = 0n;
  @cfield.u64() setTid = 0n;
  @cfield.u64() setTidSize = 0n;
  @cfield.u64() cgroup = 0n;
}

/** struct ptrace_rseq_configuration (PTRACE_GET_RSEQ_CONFIGURATION). */
@cstruct('ptrace_rseq_configuration')
export class RseqConfiguration {
  @cfield.u64() rseqAbiPointer = 0n;
  @cfield.u32() rseqAbiSize = 0;
  @cfield.u32() signature = 0;
  @cfield.u32() flags = 0;
}

/** struct seccomp_metadata (PTRACE_SECCOMP_GET_METADATA): which filter (0 is the oldest), and its flags. */
@cstruct('seccomp_metadata')
export class SeccompMetadata {
  @cfield.u64() filterOff = 0n;
  @cfield.u64() flags = 0n;
}

/** struct sock_fprog: a classic BPF program (a seccomp filter), `len` instructions at `filter`. */
@cstruct('sock_fprog')
export class SockFprog {
  @cfield.u16() len = 0;
  @cfield.u64({ offset: 8 }) filter = 0n;
}

/** struct ptrace_peeksiginfo_args. */
@cstruct('ptrace_peeksiginfo_args')
export class PeeksiginfoArgs {
  @cfield.u64() off = 0n;
  @cfield.u32() flags = 0;
  @cfield.i32() nr = 0;
}

/** struct open_how (openat2). */
@cstruct('open_how')
export class OpenHow {
  @cfield.u64() flags = 0n;
  @cfield.u64() mode = 0n;
  @cfield.u64() resolve = 0n;
}

/** struct f_owner_ex (F_GETOWN_EX / F_SETOWN_EX). */
@cstruct('f_owner_ex')
export class FOwnerEx {
  @cfield.i32() type = 0;
  @cfield.i32() pid = 0;
}

/** struct __user_cap_header_struct (capget / capset). */
@cstruct('__user_cap_header_struct')
export class CapUserHeader {
  @cfield.u32() version = 0;
  @cfield.i32() pid = 0;
}

/** struct __user_cap_data_struct; version 3 takes two of them (low and high 32 bits). */
@cstruct('__user_cap_data_struct')
export class CapUserData {
  @cfield.u32() effective = 0;
  @cfield.u32() permitted = 0;
  @cfield.u32() inheritable = 0;
}

/** struct sched_param (sched_setscheduler). */
@cstruct('sched_param')
export class SchedParam {
  @cfield.i32() priority = 0;
}

/** Elf64_auxv_t: one /proc/PID/auxv entry. */
@cstruct('Elf64_auxv_t')
export class AuxvEntry {
  @cfield.u64() type = 0n;
  @cfield.u64() value = 0n;
}

/** struct rlimit64 (prlimit64). */
@cstruct('rlimit64')
export class Rlimit {
  @cfield.u64() cur = 0n;
  @cfield.u64() max = 0n;
}

/** struct stat (x86-64). */
@cstruct('stat', { size: 144 })
export class KernelStat {
  @cfield.u64() dev = 0n;
  @cfield.u64() ino = 0n;
  @cfield.u64() nlink = 0n;
  @cfield.u32() mode = 0;
  @cfield.u32() uid = 0;
  @cfield.u32() gid = 0;
  @cfield.u64() rdev = 0n;
  @cfield.i64() size = 0n;
  @cfield.i64() blksize = 0n;
  @cfield.i64() blocks = 0n;
  @cfield.struct(Timespec) atime = new Timespec();
  @cfield.struct(Timespec) mtime = new Timespec();
  @cfield.struct(Timespec) ctime = new Timespec();
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

/** struct ptrace_syscall_info with its union: which members mean something depends on `op`. */
@cstruct('ptrace_syscall_info')
export class KernelSyscallInfo {
  @cfield.u8() op = 0;
  @cfield.u32() arch = 0;
  @cfield.u64() instructionPointer = 0n;
  @cfield.u64() stackPointer = 0n;
  /** entry, seccomp. */
  @cfield.u64() nr = 0n;
  @cfield.array('u64', 6) args: bigint[] = [];
  /** seccomp. */
  @cfield.u32() retData = 0;
  /** exit. */
  @cfield.i64({ offset: 24 }) rval = 0n;
  @cfield.u8({ offset: 32 }) isError = 0;
}
export const SYSCALL_INFO_SIZE = sizeOfStruct(KernelSyscallInfo);

/** Decodes what PTRACE_GET_SYSCALL_INFO wrote (`buf` is as long as the kernel said it wrote). */
export function decodeSyscallInfo(buf: Buffer): SyscallInfo {
  need(buf, offsetOfField(KernelSyscallInfo, 'nr'), 'ptrace_syscall_info');
  const full = Buffer.alloc(SYSCALL_INFO_SIZE);
  buf.copy(full, 0, 0, Math.min(buf.length, SYSCALL_INFO_SIZE));
  const k = decodeStruct(KernelSyscallInfo, full);
  const info: SyscallInfo = { op: k.op, arch: k.arch, instructionPointer: k.instructionPointer, stackPointer: k.stackPointer };
  // Members past what the kernel wrote are left out.
  const has = (field: keyof KernelSyscallInfo, size: number) => buf.length >= offsetOfField(KernelSyscallInfo, field) + size;
  if ((info.op === 1 || info.op === 3) && has('args', 48)) {
    info.nr = k.nr;
    info.args = k.args;
    if (info.op === 3 && has('retData', 4)) info.retData = k.retData;
  } else if (info.op === 2 && has('isError', 1)) {
    info.rval = k.rval;
    info.isError = k.isError !== 0;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// dev_t

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

/** struct itimerspec (timerfd_settime / timerfd_gettime, timer_gettime / timer_settime). */
@cstruct('itimerspec')
export class Itimerspec {
  @cfield.struct(Timespec) interval = new Timespec();
  @cfield.struct(Timespec) value = new Timespec();
}

/** struct sigevent (timer_create), 64 bytes; only the members the kernel reads for a signal. */
@cstruct('sigevent', { size: 64 })
export class Sigevent {
  @cfield.u64() value = 0n;
  @cfield.i32() signo = 0;
  @cfield.i32() notify = 0;
  /** sigev_notify_thread_id (SIGEV_THREAD_ID). */
  @cfield.i32() tid = 0;
}

/** struct flock (fcntl F_SETLK, F_OFD_SETLK, F_GETLK...). */
@cstruct('flock')
export class Flock {
  @cfield.i16() type = 0;
  @cfield.i16() whence = 0;
  @cfield.i64() start = 0n;
  /** 0: to the end of the file, and beyond. */
  @cfield.i64() len = 0n;
  @cfield.i32() pid = 0;
}

/** struct shmid64_ds (shmctl IPC_STAT / IPC_SET), its ipc64_perm members by name. */
@cstruct('shmid64_ds', { size: 112 })
export class ShmidDs {
  @cfield.i32() key = 0;
  @cfield.u32() uid = 0;
  @cfield.u32() gid = 0;
  @cfield.u32() cuid = 0;
  @cfield.u32() cgid = 0;
  @cfield.u16() mode = 0;
  @cfield.u64({ offset: 48 }) segsz = 0n;
}

/** struct pidfd_info (ioctl PIDFD_GET_INFO): `mask` says which members the kernel filled. */
@cstruct('pidfd_info', { size: 72 })
export class PidfdInfo {
  @cfield.u64() mask = 0n;
  @cfield.u64() cgroupid = 0n;
  @cfield.u32() pid = 0;
  @cfield.u32() tgid = 0;
  @cfield.u32() ppid = 0;
  /** The wait status of a reaped process (PIDFD_INFO_EXIT). */
  @cfield.i32({ offset: 60 }) exitCode = 0;
}

/** struct semid64_ds (semctl IPC_STAT / IPC_SET), its ipc64_perm members by name. */
@cstruct('semid64_ds', { size: 104 })
export class SemidDs {
  @cfield.i32() key = 0;
  @cfield.u32() uid = 0;
  @cfield.u32() gid = 0;
  @cfield.u32() cuid = 0;
  @cfield.u32() cgid = 0;
  @cfield.u16() mode = 0;
  @cfield.i64({ offset: 48 }) otime = 0n;
  @cfield.i64({ offset: 64 }) ctime = 0n;
  @cfield.u64({ offset: 80 }) nsems = 0n;
}

/** struct msqid64_ds (msgctl IPC_STAT / IPC_SET), its ipc64_perm members by name. */
@cstruct('msqid64_ds', { size: 120 })
export class MsqidDs {
  @cfield.i32() key = 0;
  @cfield.u32() uid = 0;
  @cfield.u32() gid = 0;
  @cfield.u32() cuid = 0;
  @cfield.u32() cgid = 0;
  @cfield.u16() mode = 0;
  @cfield.i64({ offset: 48 }) stime = 0n;
  @cfield.i64() rtime = 0n;
  @cfield.i64() ctime = 0n;
  @cfield.u64() cbytes = 0n;
  @cfield.u64() qnum = 0n;
  @cfield.u64() qbytes = 0n;
  @cfield.i32() lspid = 0;
  @cfield.i32() lrpid = 0;
}

// ---------------------------------------------------------------------------------------------
// event files

/** struct epoll_event: packed on x86-64 (the data member at offset 4), so data is kept as its 8 bytes. */
@cstruct('epoll_event', { size: 12 })
export class EpollEvent {
  @cfield.u32() events = 0;
  @cfield.bytes(8, { offset: 4 }) data: Buffer = Buffer.alloc(8);
}

/** struct kcmp_epoll_slot: KCMP_EPOLL_TFD's idx2, the target registered in epoll `efd` as `tfd` (the toff-th such). */
@cstruct('kcmp_epoll_slot')
export class KcmpEpollSlot {
  @cfield.u32() efd = 0;
  @cfield.u32() tfd = 0;
  @cfield.u32() toff = 0;
}

/** struct file_handle's fixed part (open_by_handle_at): the handle's bytes follow it. */
@cstruct('file_handle', { size: 8 })
export class FileHandleHead {
  @cfield.u32() bytes = 0;
  @cfield.i32() type = 0;
}

/** struct nlmsghdr (netlink). */
@cstruct('nlmsghdr')
export class Nlmsghdr {
  @cfield.u32() len = 0;
  @cfield.u16() type = 0;
  @cfield.u16() flags = 0;
  @cfield.u32() seq = 0;
  @cfield.u32() pid = 0;
}

/** struct unix_diag_req (NETLINK_SOCK_DIAG, AF_UNIX). */
@cstruct('unix_diag_req')
export class UnixDiagReq {
  @cfield.u8() family = 0;
  @cfield.u8() protocol = 0;
  @cfield.u16() pad = 0;
  @cfield.u32() states = 0;
  @cfield.u32() ino = 0;
  @cfield.u32() show = 0;
  @cfield.array('u32', 2) cookie: number[] = [0, 0];
}

/** struct unix_diag_msg: the head of each answer, followed by netlink attributes. */
@cstruct('unix_diag_msg')
export class UnixDiagMsg {
  @cfield.u8() family = 0;
  @cfield.u8() type = 0;
  @cfield.u8() state = 0;
  @cfield.u8() pad = 0;
  @cfield.u32() ino = 0;
  @cfield.array('u32', 2) cookie: number[] = [0, 0];
}

/** The kernel's struct termios (TCGETS/TCSETS; not libc's, which is longer): NCCS is 19. */
@cstruct('termios')
export class KernelTermios {
  @cfield.u32() iflag = 0;
  @cfield.u32() oflag = 0;
  @cfield.u32() cflag = 0;
  @cfield.u32() lflag = 0;
  @cfield.u8() line = 0;
  @cfield.bytes(19) cc: Buffer = Buffer.alloc(19);
}

/** struct winsize (TIOCGWINSZ/TIOCSWINSZ). */
@cstruct('winsize')
export class Winsize {
  @cfield.u16() row = 0;
  @cfield.u16() col = 0;
  @cfield.u16() xpixel = 0;
  @cfield.u16() ypixel = 0;
}

/**
 * struct aio_ring: the header of an aio context's ring (io_setup), at the ring's first byte;
 * `nr` io_events follow it. The kernel writes `tail` (keeping its own copy, which it uses when it
 * completes a request) and reads `head`, which the process may move itself.
 */
@cstruct('aio_ring', { size: 32 })
export class AioRing {
  @cfield.u32() id = 0;
  @cfield.u32() nr = 0;
  @cfield.u32() head = 0;
  @cfield.u32() tail = 0;
  @cfield.u32() magic = 0;
  @cfield.u32() compatFeatures = 0;
  @cfield.u32() incompatFeatures = 0;
  @cfield.u32() headerLength = 0;
}

/** struct iocb (io_submit), the members cptrst sets. */
@cstruct('iocb', { size: 64 })
export class Iocb {
  @cfield.u64() data = 0n;
  @cfield.u16({ offset: 16 }) opcode = 0;
  @cfield.u32({ offset: 20 }) fildes = 0;
  @cfield.u64() buf = 0n;
  @cfield.u64() nbytes = 0n;
}

/** struct msghdr (x86-64), for sendmsg/recvmsg made inside a task. */
@cstruct('msghdr')
export class Msghdr {
  @cfield.u64() name = 0n;
  @cfield.u32() namelen = 0;
  @cfield.u64() iov = 0n;
  @cfield.u64() iovlen = 0n;
  @cfield.u64() control = 0n;
  @cfield.u64() controllen = 0n;
  @cfield.i32() flags = 0;
}

/** struct iovec. */
@cstruct('iovec')
export class Iovec {
  @cfield.u64() base = 0n;
  @cfield.u64() len = 0n;
}
