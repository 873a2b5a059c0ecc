/**
 * Regular files deleted while the process still uses them ("ghost files"), shared by two
 * subsystems: files (the file open as an fd) and mm (the file mapped, private or shared). A
 * process may do both with one inode (write through the fd, read through the mapping), so the
 * inode is made again once per process and every fd and mapping of it reaches that one inode.
 *
 * Checkpoint. Only the data runs are stored (lseek SEEK_DATA / SEEK_HOLE), with the size, so
 * that holes stay holes. mm dumps before files: a mapping, when there is one, carries the
 * contents, and the fds of the same inode say so instead of storing them again.
 *
 * Restart. The inode is made again without ever having a name:
 * 1. the directory it was in is opened inside the task, O_PATH|O_DIRECTORY, through
 *    openRecordedFile (canonical path, no symlinks, the task's own identity, the same filesystem);
 * 2. openat(dirfd, ".", O_TMPFILE|O_RDWR|O_EXCL) inside the task makes an unnamed inode that
 *    nobody can link into the tree (O_EXCL), and that vanishes with the task's last reference,
 *    even if cptrst is killed half way;
 * 3. cptrst writes the size and the data runs through /proc/PID/fd/N (an inode the task made,
 *    not a path from the image); for an image root did not write, the task writes them itself,
 *    so that its limits (RLIMIT_FSIZE) and its owner's quota apply;
 * 4. the creating descriptor stays open (above the image's fd numbers) until the end of the files
 *    restore: every other fd and mapping of the inode opens /proc/self/fd/N again;
 * 5. then owner (only for a trusted image), mode and times are put back (by the task itself for
 *    an untrusted image), and the creating descriptor is closed.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CptError } from './errors';
import { bytes, i64, recordLayout, u32, u64, bool, encodeStruct, sizeOfStruct } from './image';
import type { CheckpointTask, RestartTask } from './contract';
import type { RestartContext } from './context';
import { StateKey } from './tokens';
import { refuse } from './deny';
import { openRecordedFile, requireCanonicalPath } from './recorded-file';
import * as linux from './linux';

const { SYS, O, F, S_IF, errnoName } = linux;

/** Largest amount of data (not counting holes) of a deleted file that goes into the image. */
export const DELETED_MAX = 256 * 1024 * 1024;
/** Largest data record. */
const DATA_CHUNK = 16 * 1024 * 1024;

/**
 * The fields of a deleted mapped file's record. The record itself is mm's (a layout of its own
 * type that extends these fields): a restart gives each record type to one subsystem.
 */
@recordLayout('deleted-file-fields')
export class DeletedFileFields {
  /** Device and inode at checkpoint: every record of one inode names the same. */
  @u64() dev = 0n;
  @u64() inode = 0n;
  /** The first record of the inode in the task: it makes it; the fields below and the data runs follow. */
  @bool() carrier = false;
  @u64() size = 0n;
  @u32() mode = 0;
  @u32() uid = 0;
  @u32() gid = 0;
  @i64() atimeNs = 0n;
  @i64() mtimeNs = 0n;
}

/** The fields of a data run of a deleted file. */
@recordLayout('deleted-file-data-fields')
export class DeletedDataFields {
  @u64() offset = 0n;
  @bytes() data: Buffer = Buffer.alloc(0);
}

/** A deleted file as a checkpoint sees it: a path cptrst opens to read it (/proc/PID/fd/N or /proc/PID/map_files/A-B). */
export interface DeletedFileSource {
  at: string;
  stat: fs.BigIntStats;
  /** Its path when it had one (without " (deleted)"). */
  path: string;
}

/** Opens a deleted file for reading through its /proc link, without touching its atime where allowed. */
function openForReading(at: string): number {
  try {
    return fs.openSync(at, O.RDONLY | O.NOATIME);
  } catch {
    return fs.openSync(at, O.RDONLY);
  }
}

/** Checkpoint: what making the file again needs (its directory, a bounded size), refused before anything is written. */
export function checkDeletedFile(task: CheckpointTask, src: DeletedFileSource, object: string): void {
  const dir = path.posix.dirname(src.path);
  let dst: fs.BigIntStats | undefined;
  try {
    dst = fs.statSync(dir, { bigint: true });
  } catch {
    /* refused below */
  }
  if (!dst || !dst.isDirectory() || dst.dev !== src.stat.dev) {
    refuse(task.pid, object, `the directory ${dir} of the deleted file is gone or on another filesystem now; restart makes the file again in it`);
  }
  const size = src.stat.size;
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) refuse(task.pid, object, `the deleted file is ${size} bytes long`);
  const fd = openForReading(src.at);
  try {
    const stored = linux.dataRuns(fd, Number(size)).reduce((n, r) => n + r.length, 0);
    if (stored > DELETED_MAX) refuse(task.pid, object, `the deleted file holds ${stored} bytes of data; at most ${DELETED_MAX} are stored in an image`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Checkpoint: the data runs of a deleted file, each handed to `write` in chunks, in offset order. */
export function dumpDeletedRuns(pid: number, src: DeletedFileSource, object: string, write: (offset: bigint, data: Buffer) => void): void {
  const fd = openForReading(src.at);
  try {
    for (const run of linux.dataRuns(fd, Number(src.stat.size))) {
      for (let off = run.offset; off < run.offset + run.length; off += DATA_CHUNK) {
        const chunk = Buffer.alloc(Math.min(DATA_CHUNK, run.offset + run.length - off));
        const n = fs.readSync(fd, chunk, 0, chunk.length, off);
        if (n !== chunk.length) throw new CptError('EIO', `short read of the deleted file at ${off}: ${n} of ${chunk.length} bytes`, { pid, object });
        write(BigInt(off), chunk);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

const CARRIED = new StateKey<Set<string>>('deletedFile.carried');
const keyOf = (dev: bigint, ino: bigint) => `${dev}:${ino}`;

/** Checkpoint: marks the inode as carried by the task's image (its first record stores the contents); false if already carried. */
export function carryDeletedFile(task: CheckpointTask, stat: fs.BigIntStats): boolean {
  const carried = task.state.ensure(CARRIED, () => new Set<string>());
  const key = keyOf(stat.dev, stat.ino);
  if (carried.has(key)) return false;
  carried.add(key);
  return true;
}

/** Checkpoint: whether an earlier record of the task (a mapping, or another fd) carries this inode. */
export function deletedFileCarried(task: CheckpointTask, stat: fs.BigIntStats): boolean {
  return task.state.get(CARRIED)?.has(keyOf(stat.dev, stat.ino)) ?? false;
}

/** Restart: checks a data run against the file's size and the runs before it (EBADIMG). */
export function checkDeletedRun(pid: number, size: bigint, before: DeletedDataFields[], d: DeletedDataFields, object: string): void {
  const bad = (why: string) => new CptError('EBADIMG', `contents of the deleted file: ${why}`, { pid, object });
  const prev = before[before.length - 1];
  const prevEnd = prev ? prev.offset + BigInt(prev.data.length) : 0n;
  if (d.offset < prevEnd) throw bad(`a run at ${d.offset} overlaps or precedes the one before it (ending at ${prevEnd})`);
  if (d.offset + BigInt(d.data.length) > size) throw bad(`a run at ${d.offset} of ${d.data.length} bytes ends beyond the size ${size}`);
  const total = before.reduce((n, x) => n + x.data.length, 0) + d.data.length;
  if (total > DELETED_MAX) throw bad(`more than ${DELETED_MAX} bytes of data`);
}

/** What restart needs to make a deleted file again. */
export interface DeletedFileSpec {
  /** The recorded path (its directory is where the file is made). */
  path: string;
  dev: bigint;
  inode: bigint;
  size: bigint;
  mode: number;
  uid: number;
  gid: number;
  atimeNs: bigint;
  mtimeNs: bigint;
}

interface MadeFile {
  spec: DeletedFileSpec;
  /** The creating O_RDWR descriptor in the task. */
  fd: bigint;
  object: string;
}

const MADE = new StateKey<Map<string, MadeFile>>('deletedFile.made');
function made(task: RestartTask): Map<string, MadeFile> {
  return task.state.ensure(MADE, () => new Map<string, MadeFile>());
}

/**
 * Restart: makes the deleted file again inside the task (see the top of this file), with its
 * size and data runs; returns the creating descriptor (O_RDWR, close-on-exec, at or above
 * `above`), which stays open until finishDeletedFiles.
 */
export function makeDeletedFile(ctx: RestartContext, task: RestartTask, spec: DeletedFileSpec, runs: DeletedDataFields[], above: number, object: string): bigint {
  const t = task.tracee!;
  const key = keyOf(spec.dev, spec.inode);
  if (made(task).has(key)) throw new CptError('EBADIMG', `a second record carries the deleted file of inode ${spec.inode}`, { pid: task.pid, object });
  requireCanonicalPath(spec.path, task.pid, object);
  if (spec.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new CptError('EBADIMG', `the deleted file's size ${spec.size} is too large`, { pid: task.pid, object });
  if (!ctx.imageTrusted && spec.uid !== ctx.imageOwner.uid) {
    throw new CptError('EPERM', `the deleted file was owned by uid ${spec.uid}, but the image belongs to uid ${ctx.imageOwner.uid}; only root's images may restore files of other users`, { pid: task.pid, object });
  }
  const dir = path.posix.dirname(spec.path);
  const dirObject = `${object}: its directory ${dir}`;
  const dirfd = openRecordedFile(t, dir, { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR, dev: spec.dev === 0n ? undefined : spec.dev }, sameBoot: ctx.sameBoot, object: dirObject });
  let created: bigint;
  try {
    if (fs.statSync(`/proc/${task.pid}/fd/${dirfd}`, { bigint: true }).nlink === 0n) {
      throw new CptError('ENOENT', `${dir} has been deleted`, { pid: task.pid, object: dirObject });
    }
    created = t.syscall(SYS.openat, [dirfd, t.stage(Buffer.from('.\0')), O.TMPFILE | O.RDWR | O.EXCL, 0o600]);
  } finally {
    t.syscall(SYS.close, [dirfd]);
  }
  if (created < 0n) {
    const code = errnoName(Number(-created));
    const why = code === 'EOPNOTSUPP' || code === 'EISDIR' ? 'its filesystem cannot make unnamed files (O_TMPFILE)' : code === 'EACCES' ? 'the restored process may not create files there' : code;
    throw new CptError(code, `cannot make the deleted file again in ${dir}: ${why}`, { pid: task.pid, object });
  }
  const fd = t.syscallOk(SYS.fcntl, [created, F.DUPFD_CLOEXEC, above], 'fcntl(F_DUPFD_CLOEXEC) of the new unnamed file');
  t.syscall(SYS.close, [created]);
  made(task).set(key, { spec, fd, object });
  if (ctx.imageTrusted) writeContents(task, fd, spec, runs, object);
  else writeContentsInTask(task, fd, spec, runs, object);
  return fd;
}

function failed(task: RestartTask, object: string, r: bigint, what: string): void {
  if (r < 0n) throw new CptError(errnoName(Number(-r)), `${what} of the deleted file failed: ${errnoName(Number(-r))}`, { pid: task.pid, object });
}

/** Size and data runs, written by cptrst through the task's descriptor of the inode it just made. */
function writeContents(task: RestartTask, fd: bigint, spec: DeletedFileSpec, runs: DeletedDataFields[], object: string): void {
  const w = fs.openSync(`/proc/${task.pid}/fd/${fd}`, O.WRONLY);
  try {
    // Owner read and write until the end (umask may have taken some): later reopens need them.
    fs.fchmodSync(w, 0o600);
    failed(task, object, linux.rawSyscall(SYS.ftruncate, w, spec.size), `ftruncate to ${spec.size}`);
    for (const d of runs) {
      let done = 0;
      while (done < d.data.length) done += fs.writeSync(w, d.data, done, d.data.length - done, Number(d.offset) + done);
    }
  } finally {
    fs.closeSync(w);
  }
}

/** The same, by the task itself, for an image root did not write. */
function writeContentsInTask(task: RestartTask, fd: bigint, spec: DeletedFileSpec, runs: DeletedDataFields[], object: string): void {
  const t = task.tracee!;
  t.syscallOk(SYS.fchmod, [fd, 0o600], `fchmod of the deleted file for ${object}`);
  t.syscallOk(SYS.ftruncate, [fd, spec.size], `ftruncate of the deleted file for ${object} to ${spec.size}`);
  const room = Math.max(4096, Math.floor(t.scratch().dataSize / 4096) * 4096);
  for (const d of runs) {
    let done = 0;
    while (done < d.data.length) {
      const n = Math.min(room, d.data.length - done);
      const at = t.stage(d.data.subarray(done, done + n), 0);
      const w = t.syscallOk(SYS.pwrite64, [fd, at, n, d.offset + BigInt(done)], `writing the deleted file for ${object}`);
      if (w === 0n) throw new CptError('EIO', `writing the deleted file at ${d.offset + BigInt(done)} made no progress`, { pid: task.pid, object });
      done += Number(w);
    }
  }
}

/** Restart: the path inside the task that opens a deleted file made earlier (EBADIMG when no record made it). */
export function deletedFilePath(task: RestartTask, dev: bigint, inode: bigint, object: string): string {
  const m = made(task).get(keyOf(dev, inode));
  if (!m) throw new CptError('EBADIMG', `the deleted file of inode ${inode} is used before the record that carries it`, { pid: task.pid, object });
  return `/proc/self/fd/${m.fd}`;
}

/**
 * Restart, before the fd table is cleared (close_range of the helper's fds): moves the creating
 * descriptors kept so far (by mm, which runs before the fd table exists) above the image's fd
 * numbers; returns the fds to spare.
 */
export function keepDeletedFilesAbove(task: RestartTask, above: number): bigint[] {
  const t = task.tracee!;
  const kept: bigint[] = [];
  for (const m of made(task).values()) {
    if (m.fd < BigInt(above)) {
      const moved = t.syscallOk(SYS.fcntl, [m.fd, F.DUPFD_CLOEXEC, above], `fcntl(F_DUPFD_CLOEXEC) of the deleted file for ${m.object}`);
      t.syscall(SYS.close, [m.fd]);
      m.fd = moved;
    }
    kept.push(m.fd);
  }
  return kept;
}

/**
 * The mode a restored deleted file gets: the recorded permission bits, except that it must never
 * become a setuid or setgid binary. With any execute bit, S_ISUID and S_ISGID are dropped. Without
 * one the file cannot be executed at all (execve wants an x bit, even from root), and the kernel
 * clears S_ISGID when a later chmod by a non-member adds one; so there they stay, as fstat showed.
 */
export function deletedFileMode(recorded: number): number {
  const perm = recorded & 0o7777;
  return perm & linux.S_IXUGO ? perm & ~(linux.S_ISUID | linux.S_ISGID) : perm;
}

function nsToTimespec(ns: bigint): linux.Timespec {
  const sec = ns >= 0n ? ns / 1000000000n : -((-ns + 999999999n) / 1000000000n);
  return { sec, nsec: ns - sec * 1000000000n };
}

/**
 * Restart, at the end of the files restore (every fd and mapping made): owner, mode and times of
 * every deleted file made again, then its creating descriptor goes. For root's own image cptrst
 * sets them as recorded (fchown too). For any other image the file stays the task's (whose
 * identity is the image owner's), and the task itself sets mode and times, with its own rights:
 * the kernel then drops S_ISGID for a group it is not in.
 */
export function finishDeletedFiles(ctx: RestartContext, task: RestartTask): void {
  const t = task.tracee!;
  for (const m of made(task).values()) {
    const mode = deletedFileMode(m.spec.mode);
    const ts = sizeOfStruct(linux.Timespec);
    const times = Buffer.alloc(2 * ts);
    encodeStruct(linux.Timespec, nsToTimespec(m.spec.atimeNs), times, 0);
    encodeStruct(linux.Timespec, nsToTimespec(m.spec.mtimeNs), times, ts);
    if (ctx.imageTrusted) {
      const a = fs.openSync(`/proc/${task.pid}/fd/${m.fd}`, O.RDONLY);
      try {
        fs.fchownSync(a, m.spec.uid, m.spec.gid);
        fs.fchmodSync(a, mode);
        const r = linux.rawSyscall(SYS.utimensat, a, null, times, 0);
        if (r < 0n) throw new CptError(errnoName(Number(-r)), 'setting the times of the deleted file failed', { pid: task.pid, object: m.object });
      } finally {
        fs.closeSync(a);
      }
    } else {
      t.syscallOk(SYS.fchmod, [m.fd, mode], `fchmod of the deleted file for ${m.object}`);
      t.syscallOk(SYS.utimensat, [m.fd, 0, t.stage(times), 0], `setting the times of the deleted file for ${m.object}`);
    }
    t.syscall(SYS.close, [m.fd]);
  }
  made(task).clear();
}
