/**
 * Files that a restart opens again by the path its image recorded. The image is untrusted, so:
 * - the path must be absolute and canonical (no `.`, `..`, empty or trailing components);
 * - it is opened inside the restored task, hence with that task's identity (fsuid, fsgid,
 *   groups, capabilities), never with cptrst's own; only for an image root owns, while its task
 *   still holds root's permitted capabilities (before its final credentials), a file that identity
 *   may not reach is opened by the task with root's file identity (fsuid 0) instead: a process
 *   that changed its uid after exec cannot reach its own executable in a root-only directory, yet
 *   it had the file mapped and open before the checkpoint;
 * - openat2 with RESOLVE_NO_SYMLINKS refuses any symlink on the way: the recorded path is the
 *   kernel's canonical name of the file, so a symlink there was swapped in after the checkpoint;
 * - what was opened must be the file the image describes: kind, size and mtime always, and device
 *   and inode as well when the image was written since this machine booted (inode numbers mean
 *   nothing on another host or after a reboot).
 */
import * as fs from 'fs';
import { CptError } from './errors';
import type { Tracee } from './contract';
import { AT_FDCWD, O, RESOLVE } from './linux/constants';
import { SYS } from './linux/syscalls';
import { ERRNO, errnoName as errnoCode } from './linux/errno';
import { encodeStruct } from './image/cstruct';
import { OpenHow } from './linux/structs';
import { readStatus } from './linux/proc';
import { encodeCapData, encodeCapHeader } from './linux/taskinfo';

/** Processes of a root-owned image whose recorded files may be opened with root's file identity (see above). */
const rootFileIdentity = new Set<number>();

/**
 * Lets task `pid` (an image root owns, before its final credentials) open recorded files that its
 * own file identity may not reach with fsuid 0, or takes that back (`false`: before the
 * credentials drop, and when a restart fails).
 */
export function allowRootFileIdentity(pid: number, allow: boolean): void {
  if (allow) rootFileIdentity.add(pid);
  else rootFileIdentity.delete(pid);
}

/** What the image says about a file, to compare with what restart finds. Unset fields are not compared. */
export interface RecordedFileIdentity {
  /** The file type bits of st_mode (S_IFREG, S_IFDIR, S_IFCHR, ...). */
  readonly type?: number;
  readonly size?: bigint;
  readonly mtimeNs?: bigint;
  readonly dev?: bigint;
  readonly ino?: bigint;
  readonly rdev?: bigint;
}

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
const TYPE_NAMES: Record<number, string> = {
  0o140000: 'socket', 0o120000: 'symlink', 0o100000: 'regular file', 0o060000: 'block device',
  0o040000: 'directory', 0o020000: 'character device', 0o010000: 'FIFO',
};
export function fileTypeName(mode: number): string {
  return TYPE_NAMES[mode & S_IFMT] ?? `file type 0${(mode & S_IFMT).toString(8)}`;
}

/** Why `path` is not an absolute canonical path, or undefined when it is one. */
export function nonCanonicalPath(path: string): string | undefined {
  if (typeof path !== 'string' || path.length === 0) return 'the path is empty';
  if (path.length >= 4096) return 'the path is longer than PATH_MAX';
  if (path.includes('\0')) return 'the path holds a NUL byte';
  if (!path.startsWith('/')) return 'the path is not absolute';
  if (path === '/') return undefined;
  const parts = path.slice(1).split('/');
  for (const p of parts) {
    if (p === '') return 'the path has an empty component';
    if (p === '.' || p === '..') return `the path has a "${p}" component`;
    if (p.length > 255) return 'a path component is longer than NAME_MAX';
  }
  return undefined;
}

/** Throws EBADIMG unless `path` (read from an image) is absolute and canonical. */
export function requireCanonicalPath(path: string, pid: number, object: string): void {
  const why = nonCanonicalPath(path);
  if (why) throw new CptError('EBADIMG', `refusing the path ${JSON.stringify(path)} from the image: ${why}`, { pid, object });
}

/** Device and inode number: which file an fd, a mapping or a lock is on (within one boot). */
export interface InodeId {
  readonly dev: bigint;
  readonly ino: bigint;
}

/** Whether two stats (or an image's identity and a stat) are of the same file. */
export function sameFile(a: InodeId, b: InodeId): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** A map key that is equal for the same file: see sameFile. */
export function fileKey(f: InodeId): string {
  return `${f.dev}:${f.ino}`;
}

/** How `st` differs from what the image recorded (empty when it is the same file). */
function identityDifferences(st: fs.BigIntStats, expect: RecordedFileIdentity, sameBoot: boolean): string[] {
  const diffs: string[] = [];
  const mode = Number(st.mode);
  if (expect.type !== undefined && (mode & S_IFMT) !== (expect.type & S_IFMT)) {
    diffs.push(`it is a ${fileTypeName(mode)}, not a ${fileTypeName(expect.type)}`);
  }
  if (expect.size !== undefined && st.size !== expect.size) diffs.push(`size ${st.size} instead of ${expect.size}`);
  if (expect.mtimeNs !== undefined && st.mtimeNs !== expect.mtimeNs) {
    diffs.push(`modified at ${new Date(Number(st.mtimeNs / 1000000n)).toISOString()}, not ${new Date(Number(expect.mtimeNs / 1000000n)).toISOString()} as at the checkpoint`);
  }
  if (expect.rdev !== undefined && st.rdev !== expect.rdev) diffs.push(`device number ${st.rdev} instead of ${expect.rdev}`);
  if (sameBoot) {
    if (expect.dev !== undefined && st.dev !== expect.dev) diffs.push(`on device ${st.dev}, not ${expect.dev}`);
    if (expect.ino !== undefined && st.ino !== expect.ino) diffs.push(`inode ${st.ino}, not ${expect.ino}`);
  }
  return diffs;
}

export interface OpenRecordedOptions {
  /** open(2) flags (access mode and status flags; O_CREAT and O_TMPFILE are not for recorded files). */
  flags: number;
  /** What the file must be; undefined to skip the comparison (the caller checks it). */
  expect?: RecordedFileIdentity;
  /** Whether device and inode numbers can be compared (the image was written since this boot). */
  sameBoot: boolean;
  /** Names the object in errors, e.g. `fd 3 (/etc/passwd)`. */
  object: string;
}

/**
 * Opens a recorded path inside the stopped task `tracee`, as that task, refusing symlinks, and
 * checks that it is the recorded file. Returns the fd in the task. Throws EBADIMG for a bad path,
 * the open's errno (EACCES, ENOENT, ELOOP for a symlink...) or ESTALE for another file; the fd is
 * closed again on failure.
 */
export function openRecordedFile(tracee: Tracee, path: string, opts: OpenRecordedOptions): bigint {
  requireCanonicalPath(path, tracee.pid, opts.object);
  if (opts.flags & (O.CREAT | (O.TMPFILE & ~O.DIRECTORY))) {
    throw new CptError('EINVAL', 'recorded files are opened, never created', { pid: tracee.pid, object: opts.object });
  }
  const how = encodeStruct(OpenHow, { flags: BigInt(opts.flags >>> 0), resolve: BigInt(RESOLVE.NO_SYMLINKS | RESOLVE.NO_MAGICLINKS) });
  const pathBuf = Buffer.from(path + '\0');
  const pathAt = tracee.stage(pathBuf, 0);
  const howAt = tracee.stage(how, align8(pathBuf.length));
  const r = withRootFileIdentity(tracee, opts.object, () => tracee.syscall(SYS.openat2, [AT_FDCWD, pathAt, howAt, how.length]));
  if (r < 0n) {
    const errno = Number(-r);
    const code = errnoCode(errno);
    const why = code === 'ELOOP' ? 'a symlink is in the way (the recorded path had none)' : code === 'EACCES' || code === 'EPERM' ? 'the restored process may not open it' : code;
    throw new CptError(code, `cannot open ${path} inside the restored process: ${why}`, { pid: tracee.pid, object: opts.object });
  }
  if (opts.expect) {
    let diffs: string[];
    try {
      diffs = identityDifferences(fs.statSync(`/proc/${tracee.pid}/fd/${r}`, { bigint: true }), opts.expect, opts.sameBoot);
    } catch (e) {
      diffs = [`it cannot be examined (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`];
    }
    if (diffs.length) {
      tracee.syscall(SYS.close, [r]);
      throw new CptError('ESTALE', `${path} is not the file of the checkpoint: ${diffs.join(', ')}`, { pid: tracee.pid, object: opts.object });
    }
  }
  return r;
}

/**
 * Runs `call` (a system call in the task on a recorded file: its result or -errno) as the task;
 * where that is refused (EACCES, EPERM) and the task may use root's file identity (an image root
 * owns, see allowRootFileIdentity), runs it again with fsuid 0.
 */
export function withRootFileIdentity(tracee: Tracee, object: string, call: () => bigint): bigint {
  const r = call();
  if ((r !== -BigInt(ERRNO.EACCES) && r !== -BigInt(ERRNO.EPERM)) || !rootFileIdentity.has(tracee.pid)) return r;
  return asRoot(tracee, call, object);
}

/**
 * Runs `open` in the task with fsuid 0: the kernel then gives the file capabilities of its
 * permitted set back to its effective set. Afterwards its fsuid and its effective set are exactly
 * what they were.
 */
function asRoot(tracee: Tracee, open: () => bigint, object: string): bigint {
  const before = readStatus(tracee.pid, tracee.tid);
  tracee.syscall(SYS.setfsuid, [0]);
  let r = 0n;
  let failure: Error | undefined;
  try {
    r = open();
  } catch (e) {
    failure = e instanceof Error ? e : new CptError('EIO', String(e), { pid: tracee.pid, object });
  }
  tracee.syscall(SYS.setfsuid, [before.uid[3]]);
  const after = readStatus(tracee.pid, tracee.tid);
  if (after.capEff !== before.capEff) {
    const hdr = tracee.stage(encodeCapHeader(0), 0);
    const data = tracee.stage(encodeCapData({ effective: before.capEff, permitted: after.capPrm, inheritable: after.capInh }), 64);
    tracee.syscall(SYS.capset, [hdr, data]);
  }
  const now = readStatus(tracee.pid, tracee.tid);
  if (now.uid[3] !== before.uid[3] || now.capEff !== before.capEff) {
    throw new CptError('EPERM', `the file-system identity could not be put back after an open as root (fsuid ${now.uid[3]}, want ${before.uid[3]})`, { pid: tracee.pid, object });
  }
  if (failure !== undefined) throw failure;
  return r;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}
