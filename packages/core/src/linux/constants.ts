/**
 * Linux constants: the one place where cptrst keeps kernel numbers.
 *
 * Values are those of the uapi headers as x86-64 (the machine cptrst runs on) sees them. Every
 * table is a frozen plain object so that `SIG.SIGKILL` etc. are typed literals. Facts only one
 * architecture has (its own ptrace requests and regsets, arch_prctl) are its arch package's, and
 * so are system call numbers (linux/syscalls.ts).
 */

/** ptrace(2) requests every architecture has (linux/ptrace.h); an arch's own are its package's. */
export const PTRACE = Object.freeze({
  TRACEME: 0, PEEKTEXT: 1, PEEKDATA: 2, PEEKUSER: 3, POKETEXT: 4, POKEDATA: 5, POKEUSER: 6,
  CONT: 7, KILL: 8, SINGLESTEP: 9, ATTACH: 16, DETACH: 17, SYSCALL: 24,
  SETOPTIONS: 0x4200, GETEVENTMSG: 0x4201, GETSIGINFO: 0x4202, SETSIGINFO: 0x4203,
  GETREGSET: 0x4204, SETREGSET: 0x4205, SEIZE: 0x4206, INTERRUPT: 0x4207, LISTEN: 0x4208,
  PEEKSIGINFO: 0x4209, GETSIGMASK: 0x420a, SETSIGMASK: 0x420b,
  SECCOMP_GET_FILTER: 0x420c, SECCOMP_GET_METADATA: 0x420d, GET_SYSCALL_INFO: 0x420e,
  GET_RSEQ_CONFIGURATION: 0x420f, SET_SYSCALL_USER_DISPATCH_CONFIG: 0x4210,
  GET_SYSCALL_USER_DISPATCH_CONFIG: 0x4211, SET_SYSCALL_INFO: 0x4212,
} as const);

/** `PTRACE_<name>` for a request number, for messages. */
export function ptraceRequestName(req: number): string {
  for (const [k, v] of Object.entries(PTRACE)) if (v === req) return `PTRACE_${k}`;
  return `PTRACE_0x${req.toString(16)}`;
}

/** PTRACE_PEEKSIGINFO flag: read the process-wide (shared) queue instead of the thread's. */
export const PTRACE_PEEKSIGINFO_SHARED = 1;

/** PTRACE_SETOPTIONS / PTRACE_SEIZE option bits (`PTRACE_O_*`). */
export const PTRACE_O = Object.freeze({
  TRACESYSGOOD: 1, TRACEFORK: 1 << 1, TRACEVFORK: 1 << 2, TRACECLONE: 1 << 3, TRACEEXEC: 1 << 4,
  TRACEVFORKDONE: 1 << 5, TRACEEXIT: 1 << 6, TRACESECCOMP: 1 << 7, EXITKILL: 1 << 20, SUSPEND_SECCOMP: 1 << 21,
} as const);

/** ptrace event codes, found in `status >> 16` of a stop (`PTRACE_EVENT_*`). */
export const PTRACE_EVENT = Object.freeze({
  FORK: 1, VFORK: 2, CLONE: 3, EXEC: 4, VFORK_DONE: 5, EXIT: 6, SECCOMP: 7, STOP: 128,
} as const);

/** ELF note types used as PTRACE_GETREGSET / SETREGSET `addr`, those of every architecture (an arch's own are its package's). */
export const NT = Object.freeze({
  PRSTATUS: 1, PRFPREG: 2, PRPSINFO: 3, TASKSTRUCT: 4, AUXV: 6, SIGINFO: 0x53494749, FILE: 0x46494c45,
} as const);
export const NT_PRSTATUS = NT.PRSTATUS;
export const NT_PRFPREG = NT.PRFPREG;

/** Signal numbers (x86-64), keyed by full name. */
export const SIG = Object.freeze({
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8,
  SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15,
  SIGSTKFLT: 16, SIGCHLD: 17, SIGCONT: 18, SIGSTOP: 19, SIGTSTP: 20, SIGTTIN: 21, SIGTTOU: 22,
  SIGURG: 23, SIGXCPU: 24, SIGXFSZ: 25, SIGVTALRM: 26, SIGPROF: 27, SIGWINCH: 28, SIGIO: 29,
  SIGPWR: 30, SIGSYS: 31,
} as const);
/** First and last real-time signal as the kernel counts them (glibc reserves 32 and 33). */
export const SIGRTMIN = 32;
export const SIGRTMAX = 64;
/** Number of signals (`_NSIG`); valid signals are 1.._NSIG. */
export const NSIG = 64;
/** SIGIOT and SIGPOLL are aliases. */
export const SIGIOT = SIG.SIGABRT;
export const SIGPOLL = SIG.SIGIO;

const SIGNAL_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(SIG).map(([k, v]) => [v as number, k]));

/** "SIGKILL" for 9, "SIGRTMIN+3" for 35, "SIGRTMAX" for 64, "SIG0" / "SIG<n>" otherwise. */
export function signalName(n: number): string {
  const s = SIGNAL_NAMES.get(n);
  if (s) return s;
  if (n === SIGRTMIN) return 'SIGRTMIN';
  if (n === SIGRTMAX) return 'SIGRTMAX';
  if (n > SIGRTMIN && n < SIGRTMAX) return `SIGRTMIN+${n - SIGRTMIN}`;
  return `SIG${n}`;
}

/** Inverse of signalName; accepts "SIGKILL", "KILL", "SIGRTMIN+3", "SIGRTMAX-1" or a decimal string. */
export function signalNumber(name: string): number | undefined {
  const up = name.toUpperCase();
  if (/^\d+$/.test(up)) return Number(up);
  const full = up.startsWith('SIG') ? up : `SIG${up}`;
  if (full in SIG) return SIG[full as keyof typeof SIG];
  if (full === 'SIGIOT') return SIGIOT;
  if (full === 'SIGPOLL') return SIGPOLL;
  const m = /^SIGRT(MIN|MAX)(?:([+-])(\d+))?$/.exec(full);
  if (m) {
    const base = m[1] === 'MIN' ? SIGRTMIN : SIGRTMAX;
    const d = m[3] ? Number(m[3]) * (m[2] === '-' ? -1 : 1) : 0;
    const n = base + d;
    return n >= SIGRTMIN && n <= SIGRTMAX ? n : undefined;
  }
  return undefined;
}

/** Bit of signal `sig` in a 64-bit kernel sigset (signal 1 is bit 0). */
export function sigBit(sig: number): bigint {
  return 1n << BigInt(sig - 1);
}
/** The signals whose bits are set in a 64-bit sigset. */
export function sigsetToList(mask: bigint): number[] {
  const out: number[] = [];
  for (let s = 1; s <= NSIG; s++) if (mask & sigBit(s)) out.push(s);
  return out;
}
/** A 64-bit sigset holding the given signals. */
export function sigsetFromList(sigs: Iterable<number>): bigint {
  let m = 0n;
  for (const s of sigs) m |= sigBit(s);
  return m;
}

/** The handler value for an ignored signal. */
export const SIG_IGN = 1n;

/** sigaction `sa_flags` (x86-64 kernel values). */
export const SA = Object.freeze({
  NOCLDSTOP: 0x1, NOCLDWAIT: 0x2, SIGINFO: 0x4, UNSUPPORTED: 0x400, EXPOSE_TAGBITS: 0x800,
  RESTORER: 0x04000000, ONSTACK: 0x08000000, RESTART: 0x10000000, NODEFER: 0x40000000, RESETHAND: 0x80000000,
} as const);

/** sigaltstack `ss_flags`. */
export const SS = Object.freeze({ ONSTACK: 1, DISABLE: 2, AUTODISARM: 0x80000000 } as const);
export const SS_ONSTACK = SS.ONSTACK;
export const SS_DISABLE = SS.DISABLE;

/** getitimer/setitimer `which`. */
export const ITIMER = Object.freeze({ REAL: 0, VIRTUAL: 1, PROF: 2 } as const);

/** mmap/mprotect protection bits. */
export const PROT = Object.freeze({
  NONE: 0, READ: 1, WRITE: 2, EXEC: 4, SEM: 8, GROWSDOWN: 0x01000000, GROWSUP: 0x02000000,
} as const);

/** mmap flags (x86-64). */
export const MAP = Object.freeze({
  SHARED: 0x01, PRIVATE: 0x02, SHARED_VALIDATE: 0x03, DROPPABLE: 0x08, TYPE: 0x0f, FIXED: 0x10, ANONYMOUS: 0x20,
  '32BIT': 0x40, GROWSDOWN: 0x0100, DENYWRITE: 0x0800, EXECUTABLE: 0x1000, LOCKED: 0x2000,
  NORESERVE: 0x4000, POPULATE: 0x8000, NONBLOCK: 0x10000, STACK: 0x20000, HUGETLB: 0x40000,
  SYNC: 0x80000, FIXED_NOREPLACE: 0x100000, UNINITIALIZED: 0x4000000,
} as const);

/** mremap flags. */
export const MREMAP = Object.freeze({ MAYMOVE: 1, FIXED: 2, DONTUNMAP: 4 } as const);

/** madvise advice values. */
export const MADV = Object.freeze({
  NORMAL: 0, RANDOM: 1, SEQUENTIAL: 2, WILLNEED: 3, DONTNEED: 4, FREE: 8, REMOVE: 9,
  DONTFORK: 10, DOFORK: 11, MERGEABLE: 12, UNMERGEABLE: 13, HUGEPAGE: 14, NOHUGEPAGE: 15,
  DONTDUMP: 16, DODUMP: 17, WIPEONFORK: 18, KEEPONFORK: 19, COLD: 20, PAGEOUT: 21,
  POPULATE_READ: 22, POPULATE_WRITE: 23, DONTNEED_LOCKED: 24, COLLAPSE: 25,
  HWPOISON: 100, SOFT_OFFLINE: 101, GUARD_INSTALL: 102, GUARD_REMOVE: 103,
} as const);

/** open(2) flags, x86-64 values (octal as in the uapi headers). */
export const O = Object.freeze({
  RDONLY: 0, WRONLY: 0o1, RDWR: 0o2, ACCMODE: 0o3, CREAT: 0o100, EXCL: 0o200, NOCTTY: 0o400,
  TRUNC: 0o1000, APPEND: 0o2000, NONBLOCK: 0o4000, NDELAY: 0o4000, DSYNC: 0o10000, ASYNC: 0o20000,
  DIRECT: 0o40000, LARGEFILE: 0o100000, DIRECTORY: 0o200000, NOFOLLOW: 0o400000, NOATIME: 0o1000000,
  CLOEXEC: 0o2000000, SYNC: 0o4010000, PATH: 0o10000000, TMPFILE: 0o20200000,
} as const);

/** openat2(2) resolve flags (struct open_how.resolve). */
export const RESOLVE = Object.freeze({
  NO_XDEV: 0x01, NO_MAGICLINKS: 0x02, NO_SYMLINKS: 0x04, BENEATH: 0x08, IN_ROOT: 0x10, CACHED: 0x20,
} as const);

/** fcntl(2) commands. */
export const F = Object.freeze({
  DUPFD: 0, GETFD: 1, SETFD: 2, GETFL: 3, SETFL: 4, GETLK: 5, SETLK: 6, SETLKW: 7,
  SETOWN: 8, GETOWN: 9, SETSIG: 10, GETSIG: 11, SETOWN_EX: 15, GETOWN_EX: 16, GETOWNER_UIDS: 17,
  OFD_GETLK: 36, OFD_SETLK: 37, OFD_SETLKW: 38,
  SETLEASE: 1024, GETLEASE: 1025, NOTIFY: 1026, DUPFD_QUERY: 1027, CREATED_QUERY: 1028, DUPFD_CLOEXEC: 1030,
  SETPIPE_SZ: 1031, GETPIPE_SZ: 1032, ADD_SEALS: 1033, GET_SEALS: 1034,
  GET_RW_HINT: 1035, SET_RW_HINT: 1036, GET_FILE_RW_HINT: 1037, SET_FILE_RW_HINT: 1038,
  RDLCK: 0, WRLCK: 1, UNLCK: 2,
  OWNER_TID: 0, OWNER_PID: 1, OWNER_PGRP: 2,
  SEAL_SEAL: 0x01, SEAL_SHRINK: 0x02, SEAL_GROW: 0x04, SEAL_WRITE: 0x08, SEAL_FUTURE_WRITE: 0x10, SEAL_EXEC: 0x20,
} as const);
/** The only fd flag. */
export const FD_CLOEXEC = 1;

/** prctl(2) options. */
export const PR = Object.freeze({
  SET_PDEATHSIG: 1, GET_PDEATHSIG: 2, GET_DUMPABLE: 3, SET_DUMPABLE: 4, GET_UNALIGN: 5, SET_UNALIGN: 6,
  GET_KEEPCAPS: 7, SET_KEEPCAPS: 8, GET_FPEMU: 9, SET_FPEMU: 10, GET_FPEXC: 11, SET_FPEXC: 12,
  GET_TIMING: 13, SET_TIMING: 14, SET_NAME: 15, GET_NAME: 16, GET_ENDIAN: 19, SET_ENDIAN: 20,
  GET_SECCOMP: 21, SET_SECCOMP: 22, CAPBSET_READ: 23, CAPBSET_DROP: 24, GET_TSC: 25, SET_TSC: 26,
  GET_SECUREBITS: 27, SET_SECUREBITS: 28, SET_TIMERSLACK: 29, GET_TIMERSLACK: 30,
  TASK_PERF_EVENTS_DISABLE: 31, TASK_PERF_EVENTS_ENABLE: 32, MCE_KILL: 33, MCE_KILL_GET: 34,
  SET_MM: 35, SET_CHILD_SUBREAPER: 36, GET_CHILD_SUBREAPER: 37, SET_NO_NEW_PRIVS: 38, GET_NO_NEW_PRIVS: 39,
  GET_TID_ADDRESS: 40, SET_THP_DISABLE: 41, GET_THP_DISABLE: 42, SET_FP_MODE: 45, GET_FP_MODE: 46,
  CAP_AMBIENT: 47, GET_SPECULATION_CTRL: 52, SET_SPECULATION_CTRL: 53,
  SET_TAGGED_ADDR_CTRL: 55, GET_TAGGED_ADDR_CTRL: 56, SET_IO_FLUSHER: 57, GET_IO_FLUSHER: 58,
  SET_SYSCALL_USER_DISPATCH: 59, SCHED_CORE: 62, SET_MDWE: 65, GET_MDWE: 66,
  SET_MEMORY_MERGE: 67, GET_MEMORY_MERGE: 68,
  SET_PTRACER: 0x59616d61, SET_VMA: 0x53564d41, GET_AUXV: 0x41555856,
} as const);
/** PR_CAP_AMBIENT: arg2. */
export const PR_CAP_AMBIENT = Object.freeze({ IS_SET: 1, RAISE: 2, LOWER: 3, CLEAR_ALL: 4 } as const);
/** PR_MCE_KILL: arg2 of the set/clear form, and the policies (PR_MCE_KILL_GET returns one). */
export const PR_MCE_KILL = Object.freeze({ CLEAR: 0, SET: 1, LATE: 0, EARLY: 1, DEFAULT: 2 } as const);
/**
 * PR_GET/SET_SPECULATION_CTRL: which mitigation (arg2), and the bits of its state. PRCTL says the
 * state can be set per task; the others are the state.
 */
export const PR_SPEC = Object.freeze({
  STORE_BYPASS: 0, INDIRECT_BRANCH: 1, L1D_FLUSH: 2,
  NOT_AFFECTED: 0, PRCTL: 1, ENABLE: 2, DISABLE: 4, FORCE_DISABLE: 8, DISABLE_NOEXEC: 16,
} as const);
/** ioprio_get/ioprio_set: `which` for one process (thread group leader or thread). */
export const IOPRIO_WHO_PROCESS = 1;
/**
 * seccomp(2): the modes /proc/PID/status shows, the operations, the filter flags, and what a
 * classic BPF filter returns (an action in the top 16 bits).
 */
export const SECCOMP = Object.freeze({
  MODE_DISABLED: 0, MODE_STRICT: 1, MODE_FILTER: 2,
  SET_MODE_STRICT: 0, SET_MODE_FILTER: 1,
  FILTER_FLAG_TSYNC: 1, FILTER_FLAG_LOG: 2, FILTER_FLAG_SPEC_ALLOW: 4,
  RET_ACTION_FULL: 0xffff0000, RET_USER_NOTIF: 0x7fc00000,
} as const);
/** Classic BPF (struct sock_filter): the size of an instruction, and the class and source bits of a return. */
export const BPF = Object.freeze({ INSN_SIZE: 8, MAXINSNS: 4096, CLASS_MASK: 0x07, RET: 0x06, RVAL_MASK: 0x18, K: 0x00 } as const);
/** PR_SET_DUMPABLE values (2, "root only", is set by the kernel, never by prctl). */
export const SUID_DUMP = Object.freeze({ DISABLE: 0, USER: 1, ROOT: 2 } as const);
/** PR_SET_MM sub-options. */
export const PR_SET_MM = Object.freeze({
  START_CODE: 1, END_CODE: 2, START_DATA: 3, END_DATA: 4, START_STACK: 5, START_BRK: 6, BRK: 7,
  ARG_START: 8, ARG_END: 9, ENV_START: 10, ENV_END: 11, AUXV: 12, EXE_FILE: 13, MAP: 14, MAP_SIZE: 15,
} as const);
export const PR_SET_MM_MAP = PR_SET_MM.MAP;
export const PR_SET_MM_MAP_SIZE = PR_SET_MM.MAP_SIZE;
/** PR_SET_VMA sub-option. */
export const PR_SET_VMA_ANON_NAME = 0;
/**
 * clone/clone3 flags. Values above bit 30 do not survive JavaScript's 32-bit `|`: combine them
 * as bigint (`BigInt(CLONE.VM) | CLONE.CLEAR_SIGHAND`) for clone3's 64-bit `flags`.
 */
export const CLONE = Object.freeze({
  NEWTIME: 0x80, VM: 0x100, FS: 0x200, FILES: 0x400, SIGHAND: 0x800, PIDFD: 0x1000, PTRACE: 0x2000,
  VFORK: 0x4000, PARENT: 0x8000, THREAD: 0x10000, NEWNS: 0x20000, SYSVSEM: 0x40000, SETTLS: 0x80000,
  PARENT_SETTID: 0x100000, CHILD_CLEARTID: 0x200000, DETACHED: 0x400000, UNTRACED: 0x800000,
  CHILD_SETTID: 0x1000000, NEWCGROUP: 0x2000000, NEWUTS: 0x4000000, NEWIPC: 0x8000000,
  NEWUSER: 0x10000000, NEWPID: 0x20000000, NEWNET: 0x40000000, IO: 0x80000000,
  CLEAR_SIGHAND: 0x100000000n, INTO_CGROUP: 0x200000000n,
} as const);

/** kcmp(2) types. */
export const KCMP = Object.freeze({
  FILE: 0, VM: 1, FILES: 2, FS: 3, SIGHAND: 4, IO: 5, SYSVSEM: 6, EPOLL_TFD: 7,
} as const);

/** Resource limits (getrlimit/prlimit64). */
export const RLIMIT = Object.freeze({
  CPU: 0, FSIZE: 1, DATA: 2, STACK: 3, CORE: 4, RSS: 5, NPROC: 6, NOFILE: 7, MEMLOCK: 8, AS: 9,
  LOCKS: 10, SIGPENDING: 11, MSGQUEUE: 12, NICE: 13, RTPRIO: 14, RTTIME: 15,
} as const);
export const RLIM_NLIMITS = 16;
/** RLIM_INFINITY as the kernel's unsigned 64-bit value. */
export const RLIM_INFINITY = 0xffffffffffffffffn;
const RLIMIT_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(RLIMIT).map(([k, v]) => [v as number, `RLIMIT_${k}`]));
/** "RLIMIT_NOFILE" for 7. */
export function rlimitName(n: number): string {
  return RLIMIT_NAMES.get(n) ?? `RLIMIT_${n}`;
}

/** *at() flags and the AT_FDCWD pseudo-fd. */
export const AT = Object.freeze({
  FDCWD: -100, SYMLINK_NOFOLLOW: 0x100, REMOVEDIR: 0x200, EACCESS: 0x200, SYMLINK_FOLLOW: 0x400,
  NO_AUTOMOUNT: 0x800, EMPTY_PATH: 0x1000, STATX_SYNC_AS_STAT: 0x0000, STATX_FORCE_SYNC: 0x2000,
  STATX_DONT_SYNC: 0x4000, RECURSIVE: 0x8000,
} as const);
export const AT_FDCWD = AT.FDCWD;
/** access/faccessat2 modes. */
export const ACCESS = Object.freeze({ F_OK: 0, X_OK: 1, W_OK: 2, R_OK: 4 } as const);

/** The mount API (fsopen, fsconfig, fsmount): the flags and the command cptrst uses, and the attributes of a mount. */
export const FSOPEN_CLOEXEC = 1;
export const FSCONFIG_CMD_CREATE = 6;
export const FSMOUNT_CLOEXEC = 1;
export const MOUNT_ATTR = Object.freeze({ RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8 } as const);
export const AT_EMPTY_PATH = AT.EMPTY_PATH;

/** Auxiliary vector entry types (`AT_*` in elf.h; a separate table to avoid the *at() flags). */
export const AUXV = Object.freeze({
  NULL: 0, IGNORE: 1, EXECFD: 2, PHDR: 3, PHENT: 4, PHNUM: 5, PAGESZ: 6, BASE: 7, FLAGS: 8, ENTRY: 9,
  NOTELF: 10, UID: 11, EUID: 12, GID: 13, EGID: 14, PLATFORM: 15, HWCAP: 16, CLKTCK: 17, SECURE: 23,
  BASE_PLATFORM: 24, RANDOM: 25, HWCAP2: 26, RSEQ_FEATURE_SIZE: 27, RSEQ_ALIGN: 28, HWCAP3: 29,
  HWCAP4: 30, EXECFN: 31, SYSINFO_EHDR: 33, MINSIGSTKSZ: 51,
} as const);

/** securebits (PR_GET_SECUREBITS): keep the permitted capabilities when the uids leave 0 (PR_SET_KEEPCAPS). */
export const SECBIT_KEEP_CAPS = 0x10;

/** rseq(2). */
export const RSEQ_FLAG_UNREGISTER = 1;

/** wait4/waitpid/waitid option bits. */
export const WAIT = Object.freeze({
  WNOHANG: 0x1, WUNTRACED: 0x2, WSTOPPED: 0x2, WEXITED: 0x4, WCONTINUED: 0x8, WNOWAIT: 0x01000000,
  __WNOTHREAD: 0x20000000, __WALL: 0x40000000, __WCLONE: 0x80000000,
} as const);
export const WNOHANG = WAIT.WNOHANG;
export const WUNTRACED = WAIT.WUNTRACED;
export const WCONTINUED = WAIT.WCONTINUED;
export const __WNOTHREAD = WAIT.__WNOTHREAD;
export const __WALL = WAIT.__WALL;
export const __WCLONE = WAIT.__WCLONE;

/** pidfd_open flags. */
export const PIDFD = Object.freeze({ NONBLOCK: 0o4000, THREAD: 0o200 } as const);
/**
 * ioctl(PIDFD_GET_INFO) on a pidfd (struct pidfd_info, 72 bytes: _IOWR(0xFF, 11, ...)); with
 * PIDFD_INFO_EXIT in the mask, a process that has been reaped reports its wait status (kernels
 * from 6.15; older ones answer without that bit, or ENOTTY).
 */
export const PIDFD_GET_INFO = 0xc048ff0b;
export const PIDFD_INFO = Object.freeze({ PID: 0x1, CREDS: 0x2, CGROUPID: 0x4, EXIT: 0x8, COREDUMP: 0x10 } as const);

/** mlock2 flag and mlockall flags. */
export const MLOCK_ONFAULT = 1;
export const MCL = Object.freeze({ CURRENT: 1, FUTURE: 2, ONFAULT: 4 } as const);

/**
 * membarrier(2) commands. GET_REGISTRATIONS (Linux 6.3) returns the REGISTER_* commands the
 * process has issued, as a mask of those command bits.
 */
export const MEMBARRIER_CMD = Object.freeze({
  QUERY: 0, GLOBAL: 1, GLOBAL_EXPEDITED: 2, REGISTER_GLOBAL_EXPEDITED: 4, PRIVATE_EXPEDITED: 8,
  REGISTER_PRIVATE_EXPEDITED: 16, PRIVATE_EXPEDITED_SYNC_CORE: 32, REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: 64,
  PRIVATE_EXPEDITED_RSEQ: 128, REGISTER_PRIVATE_EXPEDITED_RSEQ: 256, GET_REGISTRATIONS: 512,
} as const);

/** memfd_create flags. */
export const MFD = Object.freeze({ CLOEXEC: 1, ALLOW_SEALING: 2, HUGETLB: 4, NOEXEC_SEAL: 8, EXEC: 0x10 } as const);

/** Bits of a /proc/PID/pagemap entry. */
export const PAGEMAP = Object.freeze({
  PFN_MASK: (1n << 55n) - 1n, SOFT_DIRTY: 1n << 55n, EXCLUSIVE: 1n << 56n, UFFD_WP: 1n << 57n,
  GUARD_REGION: 1n << 58n, FILE_OR_SHARED_ANON: 1n << 61n, SWAPPED: 1n << 62n, PRESENT: 1n << 63n,
} as const);

/** File type bits of st_mode. */
export const S_IF = Object.freeze({
  MT: 0o170000, SOCK: 0o140000, LNK: 0o120000, REG: 0o100000, BLK: 0o060000, DIR: 0o040000,
  CHR: 0o020000, FIFO: 0o010000,
} as const);

/** Capability numbers C/R checks for. */
export const CAP = Object.freeze({
  CHOWN: 0, DAC_OVERRIDE: 1, KILL: 5, SETGID: 6, SETUID: 7, SETPCAP: 8, NET_ADMIN: 12,
  SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_RESOURCE: 24, CHECKPOINT_RESTORE: 40,
} as const);

// ---------------------------------------------------------------------------------------------
// event files

/** eventfd2(2) flags of its own (EFD_NONBLOCK and EFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC). */
export const EFD_SEMAPHORE = 1;

/** epoll_ctl(2) operations and event bits. */
export const EPOLL_CTL = Object.freeze({ ADD: 1, DEL: 2, MOD: 3 } as const);
export const EPOLL = Object.freeze({
  IN: 0x1, PRI: 0x2, OUT: 0x4, ERR: 0x8, HUP: 0x10, NVAL: 0x20, RDNORM: 0x40, RDBAND: 0x80, WRNORM: 0x100,
  WRBAND: 0x200, MSG: 0x400, RDHUP: 0x2000, EXCLUSIVE: 0x10000000, WAKEUP: 0x20000000, ONESHOT: 0x40000000,
  ET: 0x80000000,
} as const);

/** sigevent notify kinds (timer_create); THREAD_ID is or'ed with SIGNAL. */
export const SIGEV = Object.freeze({ SIGNAL: 0, NONE: 1, THREAD: 2, THREAD_ID: 4 } as const);
/**
 * Clock ids (clock_gettime, timerfd_create, timer_create). A negative id is a CPU clock of a
 * given process or thread (see cpuClockPid).
 */
export const CLOCK = Object.freeze({
  REALTIME: 0, MONOTONIC: 1, PROCESS_CPUTIME_ID: 2, THREAD_CPUTIME_ID: 3, MONOTONIC_RAW: 4,
  REALTIME_COARSE: 5, MONOTONIC_COARSE: 6, BOOTTIME: 7, REALTIME_ALARM: 8, BOOTTIME_ALARM: 9, TAI: 11,
} as const);

/** timerfd_settime(2) flags and TFD_IOC_SET_TICKS (_IOW('T', 0, u64): set the unread expirations). */
export const TFD_TIMER = Object.freeze({ ABSTIME: 1, CANCEL_ON_SET: 2 } as const);
export const TFD_IOC_SET_TICKS = 0x40085400;

/** poll(2) event bits. */
export const POLL = Object.freeze({ IN: 0x1, PRI: 0x2, OUT: 0x4, ERR: 0x8, HUP: 0x10, NVAL: 0x20 } as const);

/** FIONREAD: bytes ready to read (a pipe, a socket's receive queue, an inotify fd's queued events). */
export const FIONREAD = 0x541b;

/** inotify mask bits that are not events: how a watch behaves. */
export const IN = Object.freeze({
  ALL_EVENTS: 0xfff, IGNORED: 0x8000, ONLYDIR: 0x01000000, DONT_FOLLOW: 0x02000000, EXCL_UNLINK: 0x04000000,
  MASK_CREATE: 0x10000000, MASK_ADD: 0x20000000, ISDIR: 0x40000000, ONESHOT: 0x80000000,
} as const);
/** The pid (or tid) a negative CPU clock id names: the kernel encodes it as (~pid << 3) | type. */
export function cpuClockPid(clock: number): number {
  return ~(clock >> 3);
}
/** Bit 2 of a CPU clock id: the clock of one thread, not of the whole process. */
export const CPUCLOCK_PERTHREAD = 4;
/** si_code of a POSIX timer's signal. */
export const SI_TIMER = -2;
/** si_code of a signal sent by sigqueue / rt_sigqueueinfo. */
export const SI_QUEUE = -1;
/** si_code of the SIGTRAP of a breakpoint, and of a single step over a system call. */
export const TRAP_BRKPT = 1;
/** prctl(PR_TIMER_CREATE_RESTORE_IDS, ON): timer_create takes the id found at its third argument. */
export const PR_TIMER_CREATE_RESTORE_IDS = 77;
export const PR_TIMER_CREATE_RESTORE_IDS_OFF = 0;
export const PR_TIMER_CREATE_RESTORE_IDS_ON = 1;
/** flock(2) operations. */
export const LOCK = Object.freeze({ SH: 1, EX: 2, NB: 4, UN: 8 } as const);

/** PAGEMAP_SCAN page categories (PAGE_IS_*, linux/fs.h). */
export const PAGE_IS = Object.freeze({
  WPALLOWED: 1n << 0n, WRITTEN: 1n << 1n, FILE: 1n << 2n, PRESENT: 1n << 3n, SWAPPED: 1n << 4n, PFNZERO: 1n << 5n,
  HUGE: 1n << 6n, SOFT_DIRTY: 1n << 7n, GUARD: 1n << 8n,
});
/** PAGEMAP_SCAN flags: write-protect the pages that match (re-arming uffd-wp tracking); fail on an area without async uffd-wp. */
export const PM_SCAN = Object.freeze({ WP_MATCHING: 1n << 0n, CHECK_WPASYNC: 1n << 1n });

/**
 * Terminal ioctls (asm-generic/ioctls.h). On a pty master, the termios, window size and
 * foreground-group requests act on its slave; TIOCSTI pushes one byte into the input of the
 * terminal of the fd, through its line discipline, at once (CAP_SYS_ADMIN for another's terminal).
 */
export const TIOC = Object.freeze({
  TCGETS: 0x5401, TCSETS: 0x5402, EXCL: 0x540c, NXCL: 0x540d, SCTTY: 0x540e, GPGRP: 0x540f, SPGRP: 0x5410,
  STI: 0x5412, GWINSZ: 0x5413, SWINSZ: 0x5414, PKT: 0x5420, NOTTY: 0x5422, GETD: 0x5424, GSID: 0x5429,
  GPTN: 0x80045430, SPTLCK: 0x40045431, GDEV: 0x80045432, GPKT: 0x80045438, GPTLCK: 0x80045439, GEXCL: 0x80045440, GPTPEER: 0x5441,
  GLCKTRMIOS: 0x5456,
} as const);

/** termios bits (asm-generic/termbits.h): input, output and local modes, c_cc indices, the default line discipline. */
export const TERMIOS = Object.freeze({
  /* c_iflag */
  INLCR: 0o100, IGNCR: 0o200, ICRNL: 0o400, IUCLC: 0o1000, IXON: 0o2000, ISTRIP: 0o40, PARMRK: 0o10, IMAXBEL: 0o20000,
  /* c_oflag */
  OPOST: 0o1,
  /* c_lflag */
  ISIG: 0o1, ICANON: 0o2, ECHO: 0o10, ECHOE: 0o20, ECHOK: 0o40, ECHONL: 0o100, IEXTEN: 0o100000, ECHOCTL: 0o1000,
  ECHOPRT: 0o2000, ECHOKE: 0o4000, EXTPROC: 0o200000,
  /* c_cc */
  VINTR: 0, VQUIT: 1, VERASE: 2, VKILL: 3, VEOF: 4, VTIME: 5, VMIN: 6, VSTART: 8, VSTOP: 9, VSUSP: 10, VEOL: 11,
  VREPRINT: 12, VDISCARD: 13, VWERASE: 14, VLNEXT: 15, VEOL2: 16,
  /** c_cc value that disables a special character. */
  VDISABLE: 0,
  N_TTY: 0,
} as const);

/** Unix98 pty devices: /dev/ptmx is 5:2, /dev/tty 5:0, the slave of pty N is 136:N. */
export const PTY = Object.freeze({ TTYAUX_MAJOR: 5, PTMX_MINOR: 2, TTY_MINOR: 0, SLAVE_MAJOR: 136, SLAVE_MAJORS: 8 } as const);

/**
 * userfaultfd (linux/userfaultfd.h): the API version, the ioctls (_IOWR/_IOR on 0xAA), the
 * features and events of the non-cooperative mode, and the registration modes.
 */
export const UFFD = Object.freeze({
  API: 0xaa,
  USER_MODE_ONLY: 1,
  IOC_API: 0xc018aa3f,
  IOC_REGISTER: 0xc020aa00,
  IOC_UNREGISTER: 0x8010aa01,
  IOC_WAKE: 0x8010aa02,
  IOC_COPY: 0xc028aa03,
  IOC_ZEROPAGE: 0xc020aa04,
  FEATURE_EVENT_FORK: 1 << 1,
  FEATURE_EVENT_REMAP: 1 << 2,
  FEATURE_EVENT_REMOVE: 1 << 3,
  FEATURE_EVENT_UNMAP: 1 << 6,
  /** A fault on a registered page that is missing is SIGBUS (EFAULT for the kernel's own access), never a wait. */
  FEATURE_SIGBUS: 1 << 7,
  EVENT_PAGEFAULT: 0x12,
  EVENT_FORK: 0x13,
  EVENT_REMAP: 0x14,
  EVENT_REMOVE: 0x15,
  EVENT_UNMAP: 0x16,
  /** Write-protect faults resolved by the kernel itself (Linux 6.7): the pages' uffd-wp bit says "not written since armed". */
  FEATURE_WP_ASYNC: 1 << 15,
  /** Write protection of pages not yet populated (markers), needed for PAGEMAP_SCAN's PAGE_IS_WRITTEN on anonymous memory. */
  FEATURE_WP_UNPOPULATED: 1 << 13,
  REGISTER_MODE_MISSING: 1n,
  REGISTER_MODE_WP: 2n,
  /** struct uffd_msg: 32 bytes. */
  MSG_SIZE: 32,
} as const);

/** aio rings (fs/aio.c): the header's magic and features, an io_event's size, the request opcodes cptrst uses. */
export const AIO = Object.freeze({
  RING_MAGIC: 0xa10a10a1,
  COMPAT_FEATURES: 1,
  INCOMPAT_FEATURES: 0,
  EVENT_SIZE: 32,
  IOCB_CMD_PWRITE: 1,
} as const);

/** fanotify (linux/fanotify.h): mark flags and the event bits cptrst tells apart. */
export const FAN = Object.freeze({
  MARK_ADD: 0x1,
  MARK_IGNORED_MASK: 0x20,
  MARK_IGNORED_SURV_MODIFY: 0x40,
  MARK_EVICTABLE: 0x200,
  MARK_IGNORE: 0x400,
  MARK_MOUNT: 0x10,
  MARK_FILESYSTEM: 0x100,
  /** Events that wait for the listener's answer (FAN_OPEN_PERM, FAN_ACCESS_PERM, FAN_OPEN_EXEC_PERM, FAN_PRE_ACCESS). */
  PERMISSION_EVENTS: 0x10000 | 0x20000 | 0x40000 | 0x100000,
  /** Every event and flag bit a mark's mask may carry that is not a permission event. */
  NOTIFY_BITS: 0xfff | 0x1000 | 0x8000 | 0x08000000 | 0x10000000 | 0x40000000,
  /** The mflags fdinfo shows: FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE, FAN_MARK_IGNORE. */
  SHOWN_MARK_FLAGS: 0x40 | 0x200 | 0x400,
  /** fanotify_init's FAN_NONBLOCK: the fd's O_NONBLOCK at first (F_SETFL can change it). */
  NONBLOCK: 0x2,
  /** Every fanotify_init flag the kernel knows (FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_*, FAN_UNLIMITED_*, FAN_ENABLE_AUDIT, FAN_REPORT_*). */
  KNOWN_INIT_FLAGS: 0x3 | 0xc | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000 | 0x2000 | 0x4000,
} as const);

/** splice(2) flags. NONBLOCK: do not wait for the pipe (the file side is not affected). */
export const SPLICE_F = Object.freeze({ MOVE: 1, NONBLOCK: 2, MORE: 4, GIFT: 8 } as const);

/**
 * statfs f_type of the local filesystems on which a file's size and bytes change only through
 * calls on that file (not FUSE or a network filesystem, whose server decides both).
 */
export const LOCAL_FS_MAGIC = Object.freeze({
  TMPFS: 0x01021994, EXT4: 0xef53, XFS: 0x58465342, BTRFS: 0x9123683e, OVERLAYFS: 0x794c7630,
} as const);
