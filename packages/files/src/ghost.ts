/**
 * Files deleted while open ("ghost files"). Their contents go into the image: only the data runs
 * (lseek SEEK_DATA / SEEK_HOLE), each as FILE_DATA objects with their offset, plus the size in
 * the FILE object, so that holes stay holes.
 *
 * At restart the file is made again without ever having a name:
 * 1. the directory it was in is opened inside the task, O_PATH|O_DIRECTORY, through
 *    openRecordedFile (canonical path, no symlinks, the task's own identity, the same filesystem);
 * 2. openat(dirfd, ".", O_TMPFILE|O_RDWR|O_EXCL) inside the task makes an unnamed inode that
 *    nobody can link into the tree (O_EXCL), and that vanishes with the task's last fd, even if
 *    cptrst is killed half way;
 * 3. cptrst writes the size and the data runs through /proc/PID/fd/N (an inode the task made, not
 *    a path from the image); for an image root did not write, the task writes them itself;
 * 4. the task opens /proc/self/fd/N again with the recorded flags (a plain openat: this one
 *    magic link is the point), and the offset is set;
 * 5. at the end of the files restore, owner (only for a trusted image), mode and times are put
 *    back (by the task itself for an untrusted image), and the creating descriptor is closed.
 * Several open file descriptions of one deleted inode share it again: the later FILE objects
 * name the first one (`sameAs`) and reopen its inode.
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointTask, CptError, KindRecordWriter, RestartContext, RestartTask, StateKey, linux,
  openRecordedFile, refuse, requireCanonicalPath, encodeStruct, sizeOfStruct,
} from '@cptrst/core';
import { FileDataImage, FileImage } from './file';
import { recorded } from './fs-struct';
import { OpenFile, OpenRequest, openInTask, recordedPath, reopenFlags } from './kinds';

const { SYS, O, F, SEEK, S_IF, errnoName } = linux;
/** Largest amount of data (not counting holes) of a deleted file that goes into the image. */
const DELETED_MAX = 256 * 1024 * 1024;
/** Largest FILE_DATA object. */
const DATA_CHUNK = 16 * 1024 * 1024;
/** Opens a deleted file of the task for reading, through its fd (without touching its atime). */
function openForReading(pid: number, fd: number): number {
  const at = `/proc/${pid}/fd/${fd}`;
  try {
    return fs.openSync(at, O.RDONLY | O.NOATIME);
  } catch {
    return fs.openSync(at, O.RDONLY);
  }
}

/** Checkpoint: what a deleted file needs, refused before anything is written. */
export function describeGhost(task: CheckpointTask, f: OpenFile): void {
  const object = `fd ${f.fd} (${f.link})`;
  const dir = path.posix.dirname(recordedPath(f));
  let dst: fs.BigIntStats | undefined;
  try {
    dst = fs.statSync(dir, { bigint: true });
  } catch {
    /* refused below */
  }
  if (!dst || !dst.isDirectory() || dst.dev !== f.stat.dev) {
    refuse(task.pid, object, `the directory ${dir} of the deleted file is gone or on another filesystem now; restart makes the file again in it`);
  }
  const size = f.stat.size;
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) refuse(task.pid, object, `the deleted file is ${size} bytes long`);
  const fd = openForReading(task.pid, f.fd);
  try {
    const stored = linux.dataRuns(fd, Number(size)).reduce((n, r) => n + r.length, 0);
    if (stored > DELETED_MAX) {
      refuse(task.pid, object, `the deleted file holds ${stored} bytes of data; at most ${DELETED_MAX} are stored in an image`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Checkpoint: FILE_DATA objects for the data runs of a deleted file. */
export function dumpGhostData(task: CheckpointTask, f: OpenFile, out: KindRecordWriter, make: () => FileDataImage): void {
  const fd = openForReading(task.pid, f.fd);
  try {
    for (const run of linux.dataRuns(fd, Number(f.stat.size))) {
      for (let off = run.offset; off < run.offset + run.length; off += DATA_CHUNK) {
        const chunk = Buffer.alloc(Math.min(DATA_CHUNK, run.offset + run.length - off));
        const n = fs.readSync(fd, chunk, 0, chunk.length, off);
        if (n !== chunk.length) throw new CptError('EIO', `short read of the deleted file at ${off}: ${n} of ${chunk.length} bytes`, { pid: task.pid, object: `fd ${f.fd} (${f.link})` });
        const d = make();
        d.offset = BigInt(off);
        d.data = chunk;
        out.write(d);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Restart: checks one FILE_DATA object against its FILE and the ones before it (EBADIMG). */
export function checkGhostData(pid: number, img: FileImage, before: FileDataImage[], d: FileDataImage, object: string): void {
  const bad = (why: string) => new CptError('EBADIMG', `contents of the deleted file: ${why}`, { pid, object });
  if (img.kind !== 'regular' || !img.deleted || img.sameAs !== 0) throw bad('the file carries no contents of its own');
  const prev = before[before.length - 1];
  const prevEnd = prev ? prev.offset + BigInt(prev.data.length) : 0n;
  if (d.offset < prevEnd) throw bad(`a run at ${d.offset} overlaps or precedes the one before it (ending at ${prevEnd})`);
  if (d.offset + BigInt(d.data.length) > img.size) throw bad(`a run at ${d.offset} of ${d.data.length} bytes ends beyond the size ${img.size}`);
  const total = before.reduce((n, x) => n + x.data.length, 0) + d.data.length;
  if (total > DELETED_MAX) throw bad(`more than ${DELETED_MAX} bytes of data`);
}

/** A deleted file made again, until its attributes are set at the end of the files restore. */
interface Ghost {
  img: FileImage;
  /** The creating O_RDWR descriptor in the task, above the image's fd numbers. */
  fd: bigint;
  object: string;
}

/** The deleted files made again so far, by FILE tag (a later FILE of the same inode names it: sameAs). */
const GHOSTS = new StateKey<Map<number, Ghost>>('files.ghosts');
function ghosts(task: RestartTask): Map<number, Ghost> {
  return task.state.ensure(GHOSTS, () => new Map<number, Ghost>());
}

/** Restart: makes a deleted file again (see the top of this file) and returns the fd with the recorded flags. */
export function openGhost(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
  const t = task.tracee!;
  if (img.sameAs !== 0) {
    const first = ghosts(task).get(img.sameAs);
    if (!first) throw new CptError('EBADIMG', `the deleted file is said to be the one of FILE tag ${img.sameAs}, which is no deleted file restored before it`, { pid: task.pid, object: req.object });
    return reopenGhost(task, first.fd, img, req.object);
  }
  requireCanonicalPath(img.path, task.pid, req.object);
  if (img.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new CptError('EBADIMG', `the deleted file's size ${img.size} is too large`, { pid: task.pid, object: req.object });
  if (!ctx.imageTrusted && img.uid !== ctx.imageOwner.uid) {
    throw new CptError('EPERM', `the deleted file was owned by uid ${img.uid}, but the image belongs to uid ${ctx.imageOwner.uid}; only root's images may restore files of other users`, { pid: task.pid, object: req.object });
  }
  const dir = path.posix.dirname(img.path);
  const dirObject = `${req.object}: its directory ${dir}`;
  const dirfd = openRecordedFile(t, dir, { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR, dev: recorded(img.dev) }, sameBoot: ctx.sameBoot, object: dirObject });
  let made: bigint;
  try {
    if (fs.statSync(`/proc/${task.pid}/fd/${dirfd}`, { bigint: true }).nlink === 0n) {
      throw new CptError('ENOENT', `${dir} has been deleted`, { pid: task.pid, object: dirObject });
    }
    made = t.syscall(SYS.openat, [dirfd, t.stage(Buffer.from('.\0')), O.TMPFILE | O.RDWR | O.EXCL, 0o600]);
  } finally {
    t.syscall(SYS.close, [dirfd]);
  }
  if (made < 0n) {
    const code = errnoName(Number(-made));
    const why = code === 'EOPNOTSUPP' || code === 'EISDIR' ? 'its filesystem cannot make unnamed files (O_TMPFILE)' : code === 'EACCES' ? 'the restored process may not create files there' : code;
    throw new CptError(code, `cannot make the deleted file again in ${dir}: ${why}`, { pid: task.pid, object: req.object });
  }
  const fd = t.syscallOk(SYS.fcntl, [made, F.DUPFD_CLOEXEC, req.above], 'fcntl(F_DUPFD_CLOEXEC) of the new unnamed file');
  t.syscall(SYS.close, [made]);
  ghosts(task).set(req.tag, { img, fd, object: req.object });
  if (ctx.imageTrusted) writeContents(task, fd, img, req);
  else writeContentsInTask(task, fd, img, req);
  return reopenGhost(task, fd, img, req.object);
}

/** Size and data runs, written by cptrst through the task's descriptor of the inode it just made. */
function writeContents(task: RestartTask, fd: bigint, img: FileImage, req: OpenRequest): void {
  const w = fs.openSync(`/proc/${task.pid}/fd/${fd}`, O.WRONLY);
  try {
    // Owner read and write until the end (umask may have taken some): the reopen below needs them.
    fs.fchmodSync(w, 0o600);
    checkedOn(task, req, linux.rawSyscall(SYS.ftruncate, w, img.size), `ftruncate to ${img.size}`);
    for (const d of req.records.of(FileDataImage)) {
      let done = 0;
      while (done < d.data.length) done += fs.writeSync(w, d.data, done, d.data.length - done, Number(d.offset) + done);
    }
  } finally {
    fs.closeSync(w);
  }
}

/**
 * The same, by the task itself, for an image root did not write: the task's limits (RLIMIT_FSIZE)
 * and its owner's disk quota then apply, as they would have to the process writing it.
 */
function writeContentsInTask(task: RestartTask, fd: bigint, img: FileImage, req: OpenRequest): void {
  const t = task.tracee!;
  t.syscallOk(SYS.fchmod, [fd, 0o600], `fchmod of the deleted file for ${req.object}`);
  t.syscallOk(SYS.ftruncate, [fd, img.size], `ftruncate of the deleted file for ${req.object} to ${img.size}`);
  const room = Math.max(4096, Math.floor(t.scratch().dataSize / 4096) * 4096);
  for (const d of req.records.of(FileDataImage)) {
    let done = 0;
    while (done < d.data.length) {
      const n = Math.min(room, d.data.length - done);
      const at = t.stage(d.data.subarray(done, done + n), 0);
      const w = t.syscallOk(SYS.pwrite64, [fd, at, n, d.offset + BigInt(done)], `writing the deleted file for ${req.object}`);
      if (w === 0n) throw new CptError('EIO', `writing the deleted file at ${d.offset + BigInt(done)} made no progress`, { pid: task.pid, object: req.object });
      done += Number(w);
    }
  }
}

function checkedOn(task: RestartTask, req: OpenRequest, r: bigint, what: string): void {
  if (r < 0n) throw new CptError(errnoName(Number(-r)), `${what} of the deleted file failed: ${errnoName(Number(-r))}`, { pid: task.pid, object: req.object });
}

/** A second open of the unnamed inode, with exactly the recorded flags, and the recorded offset. */
function reopenGhost(task: RestartTask, fd: bigint, img: FileImage, object: string): bigint {
  const t = task.tracee!;
  const flags = reopenFlags(img.flags);
  const r = openInTask(task, `/proc/self/fd/${fd}`, flags, `reopening the deleted file for ${object}`);
  if (!(flags & O.PATH)) t.syscallOk(SYS.lseek, [r, img.pos, SEEK.SET], `lseek of ${object} to ${img.pos}`);
  return r;
}

/**
 * The mode a restored deleted file gets: the recorded permission bits, except that it must never
 * become a setuid or setgid binary. With any execute bit, S_ISUID and S_ISGID are dropped. Without
 * one the file cannot be executed at all (execve wants an x bit, even from root), and the kernel
 * clears S_ISGID when a later chmod by a non-member adds one; so there they stay, as fstat showed.
 */
export function ghostMode(recorded: number): number {
  const perm = recorded & 0o7777;
  return perm & linux.S_IXUGO ? perm & ~(linux.S_ISUID | linux.S_ISGID) : perm;
}

/**
 * End of the files restore: owner, mode and times of every deleted file made again, then its
 * creating descriptor goes. For root's own image cptrst sets them as recorded (fchown too). For
 * any other image the file stays the task's (whose identity is the image owner's), and the task
 * itself sets mode and times, with its own rights: the kernel then drops S_ISGID for a group it
 * is not in.
 */
export function finishGhosts(ctx: RestartContext, task: RestartTask): void {
  const t = task.tracee!;
  for (const g of ghosts(task).values()) {
    const mode = ghostMode(g.img.mode);
    const ts = sizeOfStruct(linux.Timespec);
    const times = Buffer.alloc(2 * ts);
    encodeStruct(linux.Timespec, nsToTimespec(g.img.atimeNs), times, 0);
    encodeStruct(linux.Timespec, nsToTimespec(g.img.mtimeNs), times, ts);
    if (ctx.imageTrusted) {
      const a = fs.openSync(`/proc/${task.pid}/fd/${g.fd}`, O.RDONLY);
      try {
        fs.fchownSync(a, g.img.uid, g.img.gid);
        fs.fchmodSync(a, mode);
        const r = linux.rawSyscall(SYS.utimensat, a, null, times, 0);
        if (r < 0n) throw new CptError(errnoName(Number(-r)), 'setting the times of the deleted file failed', { pid: task.pid, object: g.object });
      } finally {
        fs.closeSync(a);
      }
    } else {
      t.syscallOk(SYS.fchmod, [g.fd, mode], `fchmod of the deleted file for ${g.object}`);
      t.syscallOk(SYS.utimensat, [g.fd, 0, t.stage(times), 0], `setting the times of the deleted file for ${g.object}`);
    }
    t.syscall(SYS.close, [g.fd]);
  }
  ghosts(task).clear();
}

function nsToTimespec(ns: bigint): linux.Timespec {
  const sec = ns >= 0n ? ns / 1000000000n : -((-ns + 999999999n) / 1000000000n);
  return { sec, nsec: ns - sec * 1000000000n };
}
