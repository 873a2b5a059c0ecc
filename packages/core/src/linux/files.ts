/**
 * File system calls Node's fs lacks: an unnamed file (O_TMPFILE) and giving it a name later
 * (linkat). Every failure throws CptError with the errno name as code.
 */
import { AT, AT_FDCWD, O, SYS } from './constants';
import { errnoError, rawSyscall } from './libc';

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
