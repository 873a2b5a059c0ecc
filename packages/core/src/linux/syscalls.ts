/**
 * System calls by name. The numbers belong to an ABI, so they live in the arch package (its
 * Arch.syscalls); core only names the calls cptrst makes. The arch package hands its table to
 * core when it is loaded (useSyscallTable): cptrst's own raw calls (linux/*.ts) and the calls
 * that subsystems inject (`SYS.mmap`) then use it. cptrst runs on the machine whose processes it
 * checkpoints, so the host's table and the tracee's are the same one.
 */
import { CptError } from '../errors';

/** The system calls cptrst makes, itself or inside a task. */
export type SyscallName =
  'access' | 'brk' | 'capset' | 'clock_nanosleep' | 'clone3' | 'close' | 'close_range' | 'dup' |
  'chroot' | 'dup3' | 'exit_group' | 'fchdir' | 'fchmod' | 'fchmodat' | 'fchownat' | 'fcntl' | 'fstat' | 'fstatfs' | 'ftruncate' | 'getcwd' | 'getitimer' |
  'getpid' | 'getppid' | 'gettid' | 'ioctl' | 'ioprio_get' | 'ioprio_set' | 'kcmp' | 'kill' | 'linkat' | 'lseek' | 'madvise' |
  'membarrier' | 'memfd_create' | 'mkdirat' | 'mlock2' | 'mlockall' | 'mmap' | 'mprotect' | 'mremap' |
  'mseal' | 'munmap' | 'openat' | 'openat2' | 'pause' | 'personality' | 'pidfd_getfd' |
  'pidfd_open' | 'pidfd_send_signal' | 'pipe2' | 'prctl' | 'pread64' | 'prlimit64' | 'ptrace' |
  'pwrite64' | 'read' | 'restart_syscall' | 'rseq' | 'rt_sigaction' | 'rt_sigqueueinfo' |
  'rt_sigreturn' | 'rt_sigtimedwait' | 'rt_tgsigqueueinfo' | 'sched_getaffinity' | 'sched_getscheduler' | 'sched_setaffinity' |
  'sched_setscheduler' | 'setfsgid' | 'setfsuid' | 'setgroups' | 'setitimer' | 'setpgid' |
  'setpriority' | 'setresgid' | 'setresuid' | 'setsid' | 'sigaltstack' | 'splice' | 'tgkill' | 'umask' |
  'uname' | 'utimensat' | 'wait4' | 'write' | 'get_robust_list' | 'set_robust_list' | 'set_tid_address' | 'seccomp' |
  'userfaultfd';

/** System call numbers of one ABI, by name. */
export type SyscallTable = Readonly<Record<SyscallName, number>>;

let table: SyscallTable | undefined;
let names: ReadonlyMap<number, string> = new Map();

/** Called by the arch package when it is loaded: the numbers of the machine cptrst runs on. */
export function useSyscallTable(t: SyscallTable): void {
  table = t;
  names = new Map(Object.entries(t).map(([k, v]) => [v, k]));
}

/** The table in use (a CptError ENOSYS before an arch package is loaded). */
export function syscallTable(): SyscallTable {
  if (!table) throw new CptError('ENOSYS', 'no system call table: no arch package (such as @cptrst/arch-x86) is loaded', { object: 'arch' });
  return table;
}

/**
 * `SYS.mmap` etc.: the number of a call in the table in use, looked up when read, so that code
 * can name calls at module level before the arch package is loaded.
 */
export const SYS: SyscallTable = new Proxy({} as SyscallTable, {
  get(_t, key) {
    if (typeof key !== 'string') return undefined;
    const v = (syscallTable() as Record<string, number>)[key];
    if (v === undefined) throw new CptError('ENOSYS', `system call ${key} has no number on this arch`, { object: 'arch' });
    return v;
  },
  has(_t, key) {
    return typeof key === 'string' && table !== undefined && key in table;
  },
  ownKeys() {
    return table ? Object.keys(table) : [];
  },
  getOwnPropertyDescriptor(_t, key) {
    if (typeof key !== 'string' || !table || !(key in table)) return undefined;
    return { value: (table as Record<string, number>)[key], enumerable: true, configurable: true, writable: false };
  },
});

/**
 * The number of any call the loaded arch knows, by name: for calls core itself does not name
 * (a plugin's, such as eventfd2). ENOSYS when this arch has no such call.
 */
export function syscallNumber(name: string): number {
  const v = (syscallTable() as Readonly<Record<string, number>>)[name];
  if (v === undefined) throw new CptError('ENOSYS', `system call ${name} has no number on this arch`, { object: 'arch' });
  return v;
}

/** System call name for a number, or `syscall_<n>` when unknown. */
export function syscallName(nr: number | bigint): string {
  const n = typeof nr === 'bigint' ? Number(BigInt.asIntN(64, nr)) : nr;
  return names.get(n) ?? `syscall_${n}`;
}
