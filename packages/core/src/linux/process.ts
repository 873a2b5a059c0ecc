/**
 * Process-level system calls: signals, kcmp, prlimit, cross-process memory, pidfds.
 * Every failure throws CptError with the errno name as code.
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { KCMP, RLIM_INFINITY } from './constants';
import { SYS } from './syscalls';
import { checkedSyscall, errnoError, libcProcessVm, rawSyscall } from './libc';
import { decodeStruct, encodeStruct, sizeOfStruct } from '../image/cstruct';
import { KcmpEpollSlot, Rlimit } from './structs';

export { RLIM_INFINITY };

/** Made at the first wait, not when the module loads (a start-up snapshot has no SharedArrayBuffer). */
let sleeper: Int32Array | undefined;

/**
 * Sleeps `ms` milliseconds (fractions allowed), blocking the JavaScript thread: cptrst's flow is
 * synchronous, and while a tree is frozen nothing else is waited for meanwhile.
 */
export function sleepMs(ms: number): void {
  sleeper ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(sleeper, 0, 0, ms);
}

/** kill(2). */
export function kill(pid: number, sig: number): void {
  checkedSyscall(`kill(${pid}, ${sig})`, pid, SYS.kill, pid, sig);
}

/** tgkill(2): signal one thread. */
export function tgkill(tgid: number, tid: number, sig: number): void {
  checkedSyscall(`tgkill(${tgid}, ${tid}, ${sig})`, tgid, SYS.tgkill, tgid, tid, sig);
}

/** gettid(2) of the calling (JavaScript main) thread. */
export function gettid(): number {
  return Number(rawSyscall(SYS.gettid));
}

/**
 * kcmp(2): 0 when the two objects are the same, 1 / 2 for an ordering, 3 when not equal and
 * unordered. `type` is a KCMP_* value; idx1/idx2 are fds for KCMP_FILE.
 */
export function kcmp(pid1: number, pid2: number, type: number, idx1: number | bigint = 0, idx2: number | bigint = 0): number {
  return Number(checkedSyscall(`kcmp(${pid1}, ${pid2}, ${type})`, pid1, SYS.kcmp, pid1, pid2, type, idx1, idx2));
}

/**
 * prlimit64(2): returns the old limit, and sets `newLimit` when given. Unlimited is
 * RLIM_INFINITY (2^64-1). pid 0 is the caller.
 */
export function prlimit(pid: number, resource: number, newLimit?: Rlimit): Rlimit {
  const old = Buffer.alloc(sizeOfStruct(Rlimit));
  const nu = newLimit ? encodeStruct(Rlimit, newLimit) : null;
  checkedSyscall(`prlimit64(${pid}, ${resource})`, pid, SYS.prlimit64, pid, resource, nu, old);
  return decodeStruct(Rlimit, old);
}

/**
 * process_vm_readv(2) of buf.length bytes at `addr` of `pid` into `buf`. Returns bytes read,
 * which can be short when the range crosses into unmapped or unreadable memory. It does not use
 * FOLL_FORCE: PROT_NONE pages fail with EFAULT (use ProcMem for those).
 */
export function processVmReadv(pid: number, addr: bigint, buf: Buffer): number {
  const r = libcProcessVm(false, pid, buf, addr);
  if (r < 0) throw errnoError(-r, `process_vm_readv(${pid}, 0x${addr.toString(16)}, ${buf.length})`, pid);
  return r;
}

/** process_vm_writev(2): honours page protections (no FOLL_FORCE). Returns bytes written. */
export function processVmWritev(pid: number, addr: bigint, buf: Buffer): number {
  const r = libcProcessVm(true, pid, buf, addr);
  if (r < 0) throw errnoError(-r, `process_vm_writev(${pid}, 0x${addr.toString(16)}, ${buf.length})`, pid);
  return r;
}

/** pidfd_open(2); `flags` from PIDFD (NONBLOCK, THREAD). Close the fd with fs.closeSync. */
export function pidfdOpen(pid: number, flags = 0): number {
  return Number(checkedSyscall(`pidfd_open(${pid})`, pid, SYS.pidfd_open, pid, flags));
}

/** pidfd_getfd(2): a duplicate, in this process, of fd `targetFd` of the pidfd's process. */
export function pidfdGetfd(pidfd: number, targetFd: number, flags = 0): number {
  return Number(checkedSyscall(`pidfd_getfd(${pidfd}, ${targetFd})`, undefined, SYS.pidfd_getfd, pidfd, targetFd, flags));
}

/** A duplicate, in this process, of fd `fd` of process `pid` (the same open file description). Close it with fs.closeSync. */
export function fdCopyOf(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    fs.closeSync(pidfd);
  }
}

/** Runs `use` on a copy of fd `fd` of process `pid` (fdCopyOf), closed afterwards. */
export function withFdCopy<T>(pid: number, fd: number, use: (copy: number) => T): T {
  const copy = fdCopyOf(pid, fd);
  try {
    return use(copy);
  } finally {
    fs.closeSync(copy);
  }
}

/** True when `pid` exists (kill(pid, 0) does not fail with ESRCH). Zombies count as existing. */
export function processExists(pid: number): boolean {
  const r = rawSyscall(SYS.kill, pid, 0);
  if (r === 0n || r === -1n /* EPERM */) return true;
  if (r === -3n) return false;
  throw new CptError('EINVAL', `kill(${pid}, 0) failed with ${r}`, { pid });
}

/**
 * kcmp(KCMP_EPOLL_TFD): whether fd `fd` of `pid` is the file registered in epoll `epfd` (of
 * process `epPid`, the same one unless given) under fd number `tfd`, the `toff`-th entry with that
 * number. True when it is.
 */
export function kcmpEpollTarget(pid: number, fd: number, epfd: number, tfd: number, toff: number, epPid = pid): boolean {
  const slot = encodeStruct(KcmpEpollSlot, { efd: epfd, tfd, toff });
  return checkedSyscall(`kcmp(${pid}, ${epPid}, KCMP_EPOLL_TFD, ${fd}, {${epfd}, ${tfd}, ${toff}})`, pid, SYS.kcmp, pid, epPid, KCMP.EPOLL_TFD, fd, slot) === 0n;
}
