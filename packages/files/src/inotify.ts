/**
 * inotify: every watch, with its watch descriptor, its mask and the path of the watched inode.
 * fdinfo lists each watch with the inode's number, device and file handle; cptrst opens the handle
 * (open_by_handle_at on a mount of that device: CAP_DAC_READ_SEARCH) and takes the path the
 * kernel gives the opened inode, kept only if that path leads to the same inode (a hard link's
 * other name is as good: a watch is on the inode). A watch whose inode has no such path (deleted,
 * on a filesystem without file handles, outside the process's mounts) is refused, and so is a
 * symlink watched itself (IN_DONT_FOLLOW). Events queued and not read yet (FIONREAD, through a
 * copy of the fd) are refused: they cannot be put back into a queue. Events that happen between
 * the checkpoint and the end of the restart are not seen by the restored process.
 *
 * Restore: inotify_init1, then the watches in the order of their descriptors, each on the
 * recorded path opened O_PATH inside the task (openRecordedFile: the same inode on the same boot)
 * through /proc/self/fd/N. The kernel hands out descriptors in sequence, so a gap is skipped by
 * watching a placeholder (a memfd of the task's) and removing it; the IN_IGNORED events of those
 * removals are read off the queue before the fd is handed over. The next new watch may get a
 * number the process had used and removed before the checkpoint.
 *
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, StateKey, encodeStruct, linux,
  decodeStruct, i32, nonCanonicalPath, objectType, openRecordedFile, refuse, sameFile, sizeOfStruct, str, u32, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest } from './kinds';
import type { FileImage } from './file';
import { FS_KEY } from './fs-struct';
import { badImage, checkEventFlags, fdObject, requireEventFlags, withFileCopy } from './event-files';

const { O, SYS, IN, FIONREAD, S_IF } = linux;
/** The mask bits a watch may carry: events and how it behaves. */
const WATCH_BITS = IN.ALL_EVENTS | IN.ONESHOT | IN.EXCL_UNLINK;
/** The most descriptors a restart skips to give the watches their numbers (two calls each). */
const MAX_WD_GAP = 4096;

@objectType(ObjectType.INOTIFY_WATCH, 'inotify-watch', { parents: [ObjectType.FILE] })
export class InotifyWatchImage {
  @u32() wd = 0;
  @u32() mask = 0;
  @str() path = '';
  /** File type bits of the watched inode, its device and inode number (compared on the same boot). */
  @u32() type = 0;
  @u64() dev = 0n;
  @u64() ino = 0n;
  /**
   * A watch on a deleted inode: the task's fd that holds the inode (a deleted file, made again
   * unnamed at restart), through which the watch is added again; -1 for a watch by path.
   */
  @i32({ since: 6 }) fd = -1;
}

interface Watch {
  wd: number;
  mask: number;
  path: string;
  stat: fs.BigIntStats;
  /** The task's fd holding the deleted inode watched, or -1. */
  fd: number;
}

/**
 * A deleted inode the task holds open itself: an fd of the task's deleted regular file on that
 * inode (the restart makes it again unnamed, and the watch follows it), or undefined.
 */
function deletedHolder(task: CheckpointTask, w: linux.InotifyWatchInfo): { fd: number; stat: fs.BigIntStats } | undefined {
  for (const f of fs.readdirSync(`/proc/${task.pid}/fd`)) {
    try {
      const link = fs.readlinkSync(`/proc/${task.pid}/fd/${f}`);
      if (!link.startsWith('/') || !link.endsWith(' (deleted)')) continue;
      const st = fs.statSync(`/proc/${task.pid}/fd/${f}`, { bigint: true });
      if (st.isFile() && st.nlink === 0n && sameFile(st, { dev: w.dev, ino: w.ino })) return { fd: Number(f), stat: st };
    } catch {
      // closed meanwhile: not a holder
    }
  }
  return undefined;
}

const WATCHES = new StateKey<Map<number, Watch[]>>('files.inotify.watches');
/** Restart: inotify fds (temporary numbers) with watches on deleted files, to drain once the temporary fds are closed. */
const TO_DRAIN = new StateKey<bigint[]>('files.inotify.toDrain');

/** The inotify fds to keep open through closeTemporaries, for drainInotifyQueues. */
export function inotifyQueuesToDrain(task: RestartTask): bigint[] {
  return task.state.get(TO_DRAIN) ?? [];
}

/**
 * Restart, after the temporary fds are closed: a watch on a deleted file saw the close of the
 * temporary fd its file was made through (IN_CLOSE_WRITE); whatever is queued is cptrst's doing
 * (the process has not run yet) and is read off. The fds are closed then.
 */
export function drainInotifyQueues(task: RestartTask): void {
  const t = task.tracee!;
  for (const ifd of task.state.get(TO_DRAIN) ?? []) {
    const n = t.stage(Buffer.alloc(4));
    for (let i = 0; i < 1024; i++) {
      t.syscallOk(SYS.ioctl, [ifd, FIONREAD, n], 'ioctl(FIONREAD) of an inotify fd');
      const queued = t.readMemory(n, 4).readInt32LE(0);
      if (queued <= 0) break;
      // FIONREAD's bytes are whole events: a read of that many returns at once, even on a blocking fd.
      t.syscallOk(SYS.read, [ifd, t.stage(Buffer.alloc(Math.min(queued, 32768)), 64), Math.min(queued, 32768)], 'read of the events cptrst caused');
    }
    t.syscall(SYS.close, [ifd]);
  }
  task.state.delete(TO_DRAIN);
}

/** The path of a watched (or marked) inode, found through its file handle, or why there is none. */
export function pathOfHandle(task: CheckpointTask, w: { dev: bigint; ino: bigint; handle?: { type: number; bytes: Buffer } }): { path: string; stat: fs.BigIntStats } | string {
  if (!w.handle) return 'its filesystem gives no file handle for it';
  const head = encodeStruct(linux.FileHandleHead, { bytes: w.handle.bytes.length, type: w.handle.type });
  const handle = Buffer.concat([head, w.handle.bytes]);
  let why = 'no mount of its filesystem is visible to the process';
  for (const m of linux.readMountinfo(task.pid)) {
    if (linux.makeDev(m.major, m.minor) !== w.dev) continue;
    let mfd: number;
    try {
      mfd = fs.openSync(m.mountPoint, O.RDONLY | O.DIRECTORY | O.CLOEXEC); // not O_PATH: open_by_handle_at refuses those (EBADF)
    } catch {
      continue;
    }
    try {
      const r = linux.rawSyscall(linux.syscallNumber('open_by_handle_at'), mfd, handle, O.PATH | O.CLOEXEC | O.NOFOLLOW);
      if (r < 0n) {
        why = r === -1n ? 'cptrst may not open file handles (it needs CAP_DAC_READ_SEARCH)' : `open_by_handle_at: ${linux.errnoName(Number(-r))}`;
        continue;
      }
      const hfd = Number(r);
      try {
        const p = fs.readlinkSync(`/proc/self/fd/${hfd}`);
        const bad = p.endsWith(' (deleted)') ? 'it has been deleted' : nonCanonicalPath(p);
        if (bad) {
          why = `the path the kernel gives it (${p}) cannot be used: ${bad}`;
          continue;
        }
        let st: fs.BigIntStats;
        try {
          st = fs.lstatSync(p, { bigint: true });
        } catch {
          why = `its path ${p} does not lead to it`;
          continue;
        }
        if (!sameFile(st, { dev: w.dev, ino: w.ino })) {
          why = `its path ${p} leads to another inode`;
          continue;
        }
        if (st.isSymbolicLink()) return 'it is a symlink watched itself (IN_DONT_FOLLOW, FAN_MARK_DONT_FOLLOW), which is not supported';
        return { path: p, stat: st };
      } finally {
        fs.closeSync(hfd);
      }
    } finally {
      fs.closeSync(mfd);
    }
  }
  return why;
}

function queuedBytes(task: CheckpointTask, f: OpenFile): number {
  return withFileCopy(task, f, (copy) => {
    const n = Buffer.alloc(4);
    linux.checkedSyscall(`ioctl(FIONREAD) of ${fdObject(f)}`, task.pid, SYS.ioctl, copy, FIONREAD, n);
    return n.readInt32LE(0);
  });
}

function refuseQueued(task: CheckpointTask, f: OpenFile): void {
  const n = queuedBytes(task, f);
  if (n > 0) refuse(task.pid, fdObject(f), `${n} bytes of inotify events are queued and not read; queued events cannot be restored`);
}

function watchesOf(task: CheckpointTask, f: OpenFile): Watch[] {
  const known = task.state.ensure(WATCHES, () => new Map<number, Watch[]>());
  const had = known.get(f.fd);
  if (had) return had;
  const object = fdObject(f);
  requireEventFlags(task, f, 'an inotify fd');
  const lines = linux.parseInotifyWatches(f.fdinfo);
  if (!lines) refuse(task.pid, object, 'its fdinfo lists a watch cptrst cannot read');
  const watches = lines.map((w): Watch => {
    const what = `its watch ${w.wd} (inode ${w.ino})`;
    if (w.ignoredMask !== 0) refuse(task.pid, object, `${what} has an ignored mask 0x${w.ignoredMask.toString(16)}, which inotify does not make`);
    if (w.mask & ~WATCH_BITS) refuse(task.pid, object, `${what} has mask bits 0x${(w.mask & ~WATCH_BITS).toString(16)} that are not known`);
    const found = pathOfHandle(task, w);
    if (typeof found === 'string') {
      const held = deletedHolder(task, w);
      if (held) return { wd: w.wd, mask: w.mask, path: '', stat: held.stat, fd: held.fd };
      refuse(task.pid, object, `the path of ${what} cannot be found faithfully: ${found}${found.includes('deleted') ? ', and no fd of the process holds the deleted inode' : ''}`);
    }
    return { wd: w.wd, mask: w.mask, path: found.path, stat: found.stat, fd: -1 };
  });
  watches.sort((a, b) => a.wd - b.wd);
  let next = 1;
  let skipped = 0;
  for (const w of watches) {
    skipped += Math.max(0, w.wd - next);
    next = w.wd + 1;
  }
  if (skipped > MAX_WD_GAP) refuse(task.pid, object, `its watch descriptors leave ${skipped} numbers unused below the highest (${next - 1}); more than ${MAX_WD_GAP} cannot be skipped at restart`);
  known.set(f.fd, watches);
  return watches;
}

export class InotifyKind implements FileKindHandler {
  readonly kind = 'inotify';
  readonly records = [InotifyWatchImage];

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:inotify';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    watchesOf(task, f);
    refuseQueued(task, f);
  }

  /** The deleted files watched through the task's fds are made again first. */
  restoreAfter(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): number[] {
    return watchesOf(task, f).filter((w) => w.fd >= 0).map((w) => w.fd);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    refuseQueued(task, f); // events may have come since the check: the checkpoint fails then, the process runs on
    for (const w of watchesOf(task, f)) {
      const rec = new InotifyWatchImage();
      rec.wd = w.wd;
      rec.mask = w.mask;
      rec.path = w.path;
      rec.type = Number(w.stat.mode) & S_IF.MT;
      rec.dev = w.stat.dev;
      rec.ino = w.stat.ino;
      rec.fd = w.fd;
      out.write(rec);
    }
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const bad = badImage(task, req.object, 'inotify');
    checkEventFlags(task, img, O.RDONLY, req.object, 'an inotify fd');
    const watches = [...req.records.of(InotifyWatchImage)].sort((a, b) => a.wd - b.wd);
    const fds = task.state.get(FS_KEY)?.fds ?? [];
    let next = 1;
    let skipped = 0;
    for (const w of watches) {
      if (w.wd < next) throw bad(`watch descriptor ${w.wd} is given twice or is not positive`);
      if (w.mask & ~WATCH_BITS || (w.mask & IN.ALL_EVENTS) === 0) throw bad(`watch ${w.wd} has the mask 0x${w.mask.toString(16)}`);
      if (w.type === S_IF.LNK || (w.type & ~S_IF.MT) !== 0) throw bad(`watch ${w.wd} is on a file of type 0${w.type.toString(8)}`);
      if (w.fd !== -1 && (w.path !== '' || w.type !== S_IF.REG || !fds.includes(w.fd))) throw bad(`watch ${w.wd} on a deleted file is through fd ${w.fd}, which is not one of the task's deleted files`);
      skipped += w.wd - next;
      next = w.wd + 1;
    }
    if (skipped > MAX_WD_GAP) throw bad(`its watch descriptors would skip ${skipped} numbers (at most ${MAX_WD_GAP})`);
    const t = task.tracee!;
    const addWatch = linux.syscallNumber('inotify_add_watch');
    const procPath = (fd: bigint) => t.stage(Buffer.from(`/proc/self/fd/${fd}\0`));
    // Non-blocking while cptrst reads its own events off the queue; the image's flags at the end.
    const ifd = t.syscallOk(linux.syscallNumber('inotify_init1'), [O.NONBLOCK], `inotify_init1 for ${req.object}`);
    let placeholder: bigint | undefined;
    try {
      next = 1;
      for (const w of watches) {
        while (next < w.wd) {
          placeholder ??= t.syscallOk(SYS.memfd_create, [t.stage(Buffer.from('cptrst-inotify\0')), linux.MFD.CLOEXEC], 'memfd_create of a placeholder');
          const got = t.syscallOk(addWatch, [ifd, procPath(placeholder), IN.ALL_EVENTS], `inotify_add_watch of a placeholder for ${req.object}`);
          t.syscallOk(linux.syscallNumber('inotify_rm_watch'), [ifd, got], `inotify_rm_watch of a placeholder for ${req.object}`);
          if (got !== BigInt(next)) throw new CptError('EIO', `the kernel gave watch descriptor ${got}, not ${next}`, { pid: task.pid, object: req.object });
          next++;
        }
        const object = `${req.object} watch ${w.wd} (${w.fd >= 0 ? `the deleted file at fd ${w.fd}` : w.path})`;
        let got: bigint;
        if (w.fd >= 0) {
          // The deleted file made again (restoreAfter): the same kind of file, restored as the task's fd.
          const st = t.stage(Buffer.alloc(sizeOfStruct(linux.KernelStat)));
          t.syscallOk(SYS.fstat, [w.fd, st], `fstat of fd ${w.fd} for ${object}`);
          const mode = decodeStruct(linux.KernelStat, t.readMemory(st, sizeOfStruct(linux.KernelStat))).mode;
          if ((mode & S_IF.MT) !== S_IF.REG) throw bad(`watch ${w.wd} is through fd ${w.fd}, which is not a regular file`);
          got = t.syscall(addWatch, [ifd, procPath(BigInt(w.fd)), w.mask]);
        } else {
          const pfd = openRecordedFile(t, w.path, { flags: O.PATH, expect: { type: w.type, dev: w.dev, ino: w.ino }, sameBoot: ctx.sameBoot, object });
          got = t.syscall(addWatch, [ifd, procPath(pfd), w.mask]);
          t.syscall(SYS.close, [pfd]);
        }
        if (got < 0n) throw linux.errnoError(Number(-got), `inotify_add_watch of ${w.path || `fd ${w.fd}`}`, task.pid, object);
        if (got !== BigInt(w.wd)) throw new CptError('EIO', `the kernel gave watch descriptor ${got}, not ${w.wd}`, { pid: task.pid, object });
        next = w.wd + 1;
      }
      // Whatever is queued now is cptrst's doing (placeholder removals) or happened during the restart.
      const buf = t.stage(Buffer.alloc(4096));
      for (let i = 0; i < 1024 && t.syscall(SYS.read, [ifd, buf, 4096]) > 0n; i++);
    } finally {
      if (placeholder !== undefined) t.syscall(SYS.close, [placeholder]);
    }
    if (!(img.flags & O.NONBLOCK)) t.syscallOk(SYS.fcntl, [ifd, linux.F.SETFL, 0], `fcntl(F_SETFL) of ${req.object}`);
    if (watches.some((w) => w.fd >= 0)) {
      task.state.ensure(TO_DRAIN, () => []).push(t.syscallOk(SYS.fcntl, [ifd, linux.F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) of ${req.object}`));
    }
    return ifd;
  }
}
