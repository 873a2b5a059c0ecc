/**
 * Linux facts about files: the calls Node's fs lacks (an unnamed O_TMPFILE file, giving it a name
 * later with linkat), lseek whences, mode bits, the capabilities that bypass file permissions,
 * struct f_owner_ex, and the lock lines of /proc/PID/fdinfo/N and /proc/locks.
 */
import * as fs from 'fs';
import { AT, AT_FDCWD, F, LOCAL_FS_MAGIC, O, SPLICE_F } from './constants';
import { SYS } from './syscalls';
import { errnoError, rawSyscall } from './libc';
import { readProcText, readProcTextInBackground } from './proc';

/** One run of data of a file (between holes). */
export interface DataRun {
  offset: number;
  length: number;
}

/**
 * The data runs of an open file of `size` bytes (lseek SEEK_DATA / SEEK_HOLE; one run where the
 * filesystem knows no holes), so that an image stores data and leaves holes as holes.
 */
export function dataRuns(fd: number, size: number): DataRun[] {
  const ENXIO = -6n;
  const runs: DataRun[] = [];
  let off = 0;
  while (off < size) {
    const d = rawSyscall(SYS.lseek, fd, off, SEEK.DATA);
    if (d === ENXIO) break; // no data after off
    if (d < 0n) return size > 0 ? [{ offset: 0, length: size }] : []; // no SEEK_DATA here: all of it
    const start = Number(d);
    if (start >= size) break;
    const h = rawSyscall(SYS.lseek, fd, start, SEEK.HOLE);
    const end = h < 0n ? size : Math.min(Number(h), size);
    if (end <= start) break;
    runs.push({ offset: start, length: end - start });
    off = end;
  }
  return runs;
}

function cPath(p: string): Buffer {
  return Buffer.from(p + '\0');
}

/**
 * open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, mode): a regular file with no name in `dir`, that
 * vanishes with its last fd unless linkFd gives it one. A file system without O_TMPFILE answers
 * EOPNOTSUPP, a kernel older than 3.11 EISDIR (it sees O_DIRECTORY) or EINVAL.
 */
export function openTmpfile(dir: string, mode: number): number {
  const r = rawSyscall(SYS.openat, AT_FDCWD, cPath(dir), O.TMPFILE | O.WRONLY | O.CLOEXEC, mode);
  if (r < 0n) throw errnoError(Number(-r), `open(${dir}, O_TMPFILE)`, undefined, dir);
  return Number(r);
}

/** Whether an openTmpfile failure means "not supported here" (use a named file instead). */
export function tmpfileUnsupported(code: string): boolean {
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EISDIR' || code === 'EINVAL';
}

/**
 * Gives the open file `fd` the name `newPath`, which must not exist (EEXIST otherwise: the name
 * is taken atomically). linkat(fd, "", AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH on older
 * kernels; without it the /proc/self/fd link is followed instead (AT_SYMLINK_FOLLOW).
 */
export function linkFd(fd: number, newPath: string): void {
  let r = rawSyscall(SYS.linkat, fd, cPath(''), AT_FDCWD, cPath(newPath), AT.EMPTY_PATH);
  if (r === -1n /* EPERM */ || r === -2n /* ENOENT: no AT_EMPTY_PATH for this caller */) {
    r = rawSyscall(SYS.linkat, AT_FDCWD, cPath(`/proc/self/fd/${fd}`), AT_FDCWD, cPath(newPath), AT.SYMLINK_FOLLOW);
  }
  if (r < 0n) throw errnoError(Number(-r), `linkat(fd ${fd}, ${newPath})`, undefined, newPath);
}

/** lseek(2) whences; DATA and HOLE find the data runs of a sparse file. */
export const SEEK = Object.freeze({ SET: 0, CUR: 1, END: 2, DATA: 3, HOLE: 4 } as const);

/** Permission bits of st_mode beyond rwx. */
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
/** Any execute bit (user, group, other). */
export const S_IXUGO = 0o111;

/** One lock as /proc/locks and the `lock:` lines of fdinfo show it. */
export interface LockEntry {
  /** FLOCK, POSIX, OFDLCK, LEASE, DELEG, ... */
  kind: string;
  /** ADVISORY, MANDATORY, ACTIVE, BREAKING, BREAKER, UNLOCK_PENDING... */
  mode: string;
  /** READ, WRITE, UNLCK (and RW/NONE for old kinds). */
  access: string;
  /** The pid that took it (-1 for OFD locks and leases taken through a description). */
  pid: number;
  major: number;
  minor: number;
  ino: bigint;
  /** A blocked request ("->" lines), not a lock that is held. */
  waiter: boolean;
  /** First byte of the range (0 for flock locks and leases). */
  start: bigint;
  /** Last byte of the range, or undefined for "EOF" (to the end of the file, and beyond). */
  end: bigint | undefined;
  line: string;
}

/**
 * Parses one lock line: `1: FLOCK  ADVISORY  WRITE 9661 fe:00:2146978 0 EOF` or a waiter
 * `1: -> POSIX  ADVISORY  WRITE 9662 fe:00:2146978 0 EOF`; the text after "lock:" in fdinfo is
 * the same. Undefined for a line of another shape.
 */
export function parseLockLine(line: string): LockEntry | undefined {
  const m = /^\s*(?:lock:\s*)?\d+:\s+(->\s+)?(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(?:(\d+)\s+(\d+|EOF)\s)?/.exec(line + ' ');
  if (!m) return undefined;
  return {
    waiter: m[1] !== undefined,
    kind: m[2],
    mode: m[3],
    access: m[4],
    pid: Number(m[5]),
    major: parseInt(m[6], 16),
    minor: parseInt(m[7], 16),
    ino: BigInt(m[8]),
    start: m[9] !== undefined ? BigInt(m[9]) : 0n,
    end: m[10] !== undefined && m[10] !== 'EOF' ? BigInt(m[10]) : undefined,
    line: line.trim(),
  };
}

/** Every lock of /proc/locks (held ones and waiters). */
export function readLocks(): LockEntry[] {
  return parseLocks(readProcText('/proc/locks'));
}

/**
 * The same, read off the main thread: the kernel's /proc/locks waits for an RCU grace period
 * (several ms) before it lists anything, which other work can use.
 */
export async function readLocksAsync(): Promise<LockEntry[]> {
  return parseLocks(await readProcTextInBackground('/proc/locks'));
}

function parseLocks(text: string): LockEntry[] {
  const out: LockEntry[] = [];
  for (const line of text.split('\n')) {
    const e = line ? parseLockLine(line) : undefined;
    if (e) out.push(e);
  }
  return out;
}

/**
 * The type of a lease that is being broken toward "unlocked": /proc/locks and F_GETLEASE show
 * only where the break goes, not what was held. A read-only, non-blocking open of the same inode
 * (through /proc/PID/fd/FD) tells: a write lease conflicts with it (EWOULDBLOCK, and the kernel
 * neither signals the holder again nor changes the lease, whose break is already pending), a read
 * lease does not (the open succeeds and is closed at once). O_NOATIME keeps the file's atime when
 * the caller may; an inotify or fanotify watcher of the file does see an open and a close.
 * Returns F_WRLCK or F_RDLCK, or -errno when the file cannot be opened for reading.
 */
export function leaseTypeOfBreak(pid: number, fd: number): number {
  const path = cPath(`/proc/${pid}/fd/${fd}`);
  const flags = O.RDONLY | O.NONBLOCK | O.NOCTTY | O.CLOEXEC;
  let r = rawSyscall(SYS.openat, AT_FDCWD, path, flags | O.NOATIME, 0);
  if (r === -1n /* EPERM: O_NOATIME on another's file without CAP_FOWNER */) r = rawSyscall(SYS.openat, AT_FDCWD, path, flags, 0);
  if (r === -11n /* EWOULDBLOCK */) return F.WRLCK;
  if (r < 0n) return Number(r);
  rawSyscall(SYS.close, r);
  return F.RDLCK;
}

/**
 * Whether no one but root can change or shorten the regular file open as `fd`: owned by root,
 * writable by no group or other (with POSIX ACLs the group bits are the mask, so no ACL entry grants
 * writing either), on a local filesystem. Only such a file may be mapped into cptrst
 * (withFileMapping): another owner could shorten it meanwhile, and cptrst would die of SIGBUS.
 */
export function onlyRootCanChange(fd: number): boolean {
  const st = fs.fstatSync(fd);
  if (!st.isFile() || st.uid !== 0 || (st.mode & 0o022) !== 0) return false;
  return onLocalFilesystem(fd);
}

/** Whether the file open as `fd` (O_PATH will do) is on one of the LOCAL_FS_MAGIC filesystems. */
export function onLocalFilesystem(fd: number): boolean {
  // struct statfs begins with f_type (a long); the rest is not needed here.
  const statfs = Buffer.alloc(120);
  if (rawSyscall(SYS.fstatfs, fd, statfs) < 0n) return false;
  const type = Number(statfs.readBigInt64LE(0));
  return (Object.values(LOCAL_FS_MAGIC) as number[]).includes(type);
}

/**
 * The regular file open as `fd` (perhaps write-only), opened again read-only through
 * /proc/self/fd so that withFileMapping can map it (mmap needs read access); undefined unless the
 * new fd is the same file and onlyRootCanChange accepts it. The caller closes the fd it gets.
 */
export function openForMapping(fd: number): number | undefined {
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
    if (!st.isFile()) return undefined;
  } catch {
    return undefined;
  }
  const r = rawSyscall(SYS.openat, AT_FDCWD, cPath(`/proc/self/fd/${fd}`), O.RDONLY | O.CLOEXEC | O.NOCTTY, 0);
  if (r < 0n) return undefined;
  const rfd = Number(r);
  try {
    const again = fs.fstatSync(rfd);
    if (again.dev === st.dev && again.ino === st.ino && onlyRootCanChange(rfd)) return rfd;
  } catch {
    /* closed below */
  }
  fs.closeSync(rfd);
  return undefined;
}

const spliceOffset = Buffer.alloc(8);

/**
 * splice(2) of up to `length` bytes from the pipe `pipeFd` into the file `fd` at `position` (the
 * file's own position stays where it is), without waiting for the pipe (SPLICE_F_NONBLOCK): the
 * bytes moved, or -errno (-EAGAIN: the pipe is empty). The kernel copies the pipe's pages into
 * the file; they never pass through cptrst's memory.
 */
export function spliceToFile(pipeFd: number, fd: number, position: number, length: number): bigint {
  spliceOffset.writeBigInt64LE(BigInt(position));
  return rawSyscall(SYS.splice, pipeFd, null, fd, spliceOffset, length, SPLICE_F.NONBLOCK);
}
