/**
 * fanotify groups (`anon_inode:[fanotify]`) with their marks. fdinfo shows the group's
 * fanotify_init arguments (`fanotify flags:X event-flags:Y`) and one line per mark: on an inode
 * (its device, number and file handle), on a mount (its id) or on a filesystem (its device), each
 * with its mask, ignore mask and flags (FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE,
 * FAN_MARK_IGNORE).
 *
 * Checkpoint: an inode mark's path is found from the file handle as for an inotify watch (and
 * checked to lead to the same inode); a mount mark's mount by its id in the process's
 * mountinfo (its mount point); a filesystem mark's by a mount of that device. Refused: a mark
 * with permission events (a request read and not answered yet cannot be seen, and would be lost),
 * a mark cptrst cannot tell the kind of (a mount namespace's), an inode with no usable path,
 * a mount hidden under another, and events queued and not read (FIONREAD on a copy of the fd:
 * they cannot be put back into a queue). Events that happen between the checkpoint and the end of
 * the restart are not seen by the restored process.
 *
 * Restore, inside the task as the task (the kernel checks CAP_SYS_ADMIN for what needs it, with
 * the restored task's rights): fanotify_init(flags, event_f_flags), O_NONBLOCK as the fd has it;
 * then each mark with fanotify_mark on /proc/self/fd/N of its object opened O_PATH
 * (openRecordedFile: the same inode, or the mount point's directory on the same device): the
 * ignore mask first with the mark's own flags (FAN_MARK_IGNORE or the older
 * FAN_MARK_IGNORED_MASK, surviving modification or not, evictable or not), then the mask.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, StateKey, linux, nonCanonicalPath, objectType,
  openRecordedFile, refuse, str, u32, u64,
} from '@cptrst/core';
import * as fs from 'fs';
import { FileKindHandler, OpenFile, OpenRequest } from './kinds';
import type { FileImage } from './file';
import { badImage, fdObject, withFileCopy } from './event-files';
import { pathOfHandle } from './inotify';

const { O, SYS, FAN, FIONREAD, S_IF } = linux;
const KNOWN_INIT_FLAGS = FAN.KNOWN_INIT_FLAGS;
const EVENT_F_FLAGS = O.ACCMODE | O.LARGEFILE | O.CLOEXEC | O.APPEND | O.DSYNC | O.NOATIME | O.NONBLOCK | O.SYNC;
/** Marks restored per group at most (each costs a few calls at restart). */
const MAX_MARKS = 8192;

/** What a mark is on. */
const ON = { inode: 0, mount: 1, filesystem: 2 } as const;

@objectType(ObjectType.FANOTIFY_GROUP, 'fanotify-group', { parents: [ObjectType.FILE] })
export class FanotifyGroupImage {
  /** fanotify_init's flags as fdinfo shows them. */
  @u32() flags = 0;
  /** fanotify_init's event_f_flags: how the fds of events are opened. */
  @u32() eventFlags = 0;
}

@objectType(ObjectType.FANOTIFY_MARK, 'fanotify-mark', { parents: [ObjectType.FILE] })
export class FanotifyMarkImage {
  /** 0 an inode, 1 a mount, 2 a filesystem. */
  @u32() on = 0;
  /** FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE, FAN_MARK_IGNORE. */
  @u32() mflags = 0;
  @u32() mask = 0;
  @u32() ignoredMask = 0;
  /** The inode's path, or the mount point of the mount (of a mount of the filesystem). */
  @str() path = '';
  /** File type bits, device and inode number of what `path` leads to (compared on the same boot). */
  @u32() type = 0;
  @u64() dev = 0n;
  @u64() ino = 0n;
  /** A mount mark's mount id (compared on the same boot). */
  @u32() mountId = 0;
}

interface Group {
  flags: number;
  eventFlags: number;
  marks: FanotifyMarkImage[];
}

const GROUPS = new StateKey<Map<number, Group>>('files.fanotify.groups');

function statAt(task: CheckpointTask, p: string): fs.BigIntStats | undefined {
  try {
    return fs.statSync(`/proc/${task.pid}/root${p}`, { bigint: true });
  } catch {
    return undefined;
  }
}

/** The mark's record, or a refusal naming it. */
function markOf(task: CheckpointTask, object: string, m: linux.FanotifyMarkInfo, mounts: linux.MountInfo[]): FanotifyMarkImage {
  const what = m.on === 'mount' ? `its mark on mount ${m.mountId}` : m.on === 'inode' ? `its mark on inode ${m.ino}` : `its mark on filesystem ${m.dev}`;
  const perm = (m.mask | m.ignoredMask) & FAN.PERMISSION_EVENTS;
  if (perm) refuse(task.pid, object, `${what} asks for permission events (0x${perm.toString(16)}); a request read and not answered yet could not be restored`);
  const odd = ((m.mask | m.ignoredMask) & ~FAN.NOTIFY_BITS) | (m.mflags & ~FAN.SHOWN_MARK_FLAGS);
  if (odd) refuse(task.pid, object, `${what} has bits 0x${odd.toString(16)} that are not known`);
  if (m.mflags & (FAN.MARK_IGNORED_SURV_MODIFY | FAN.MARK_IGNORE) && m.ignoredMask === 0) refuse(task.pid, object, `${what} has ignore flags but an empty ignore mask, which cannot be made again`);
  if (m.mask === 0 && m.ignoredMask === 0) refuse(task.pid, object, `${what} has empty masks`);
  const r = new FanotifyMarkImage();
  r.mflags = m.mflags;
  r.mask = m.mask;
  r.ignoredMask = m.ignoredMask;
  if (m.on === 'inode') {
    const found = pathOfHandle(task, m);
    if (typeof found === 'string') refuse(task.pid, object, `the path of ${what} cannot be found faithfully: ${found}`);
    r.on = ON.inode;
    r.path = found.path;
    r.type = Number(found.stat.mode) & S_IF.MT;
    r.dev = found.stat.dev;
    r.ino = found.stat.ino;
    return r;
  }
  const mount = m.on === 'mount' ? mounts.find((x) => x.mountId === m.mountId) : mounts.find((x) => linux.makeDev(x.major, x.minor) === m.dev);
  if (!mount) refuse(task.pid, object, `${what}: no such mount is visible to the process`);
  // The mount point must reach this mount, not one mounted over it.
  const top = [...mounts].reverse().find((x) => x.mountPoint === mount.mountPoint);
  if (top !== mount) refuse(task.pid, object, `${what}: its mount point ${mount.mountPoint} is covered by another mount`);
  const bad = nonCanonicalPath(mount.mountPoint);
  if (bad) refuse(task.pid, object, `${what}: its mount point ${mount.mountPoint} cannot be used: ${bad}`);
  const st = statAt(task, mount.mountPoint);
  if (!st || st.dev !== linux.makeDev(mount.major, mount.minor)) refuse(task.pid, object, `${what}: its mount point ${mount.mountPoint} cannot be examined`);
  if (!st.isDirectory()) refuse(task.pid, object, `${what}: its mount point ${mount.mountPoint} is not a directory (a file bind-mounted), which is not supported`);
  r.on = m.on === 'mount' ? ON.mount : ON.filesystem;
  r.path = mount.mountPoint;
  r.type = Number(st.mode) & S_IF.MT;
  r.dev = st.dev;
  r.ino = st.ino;
  r.mountId = m.on === 'mount' ? m.mountId : 0;
  return r;
}

function groupOf(task: CheckpointTask, f: OpenFile): Group {
  const known = task.state.ensure(GROUPS, () => new Map<number, Group>());
  const had = known.get(f.fd);
  if (had) return had;
  const object = fdObject(f);
  const info = linux.parseFanotifyFdinfo(f.fdinfo);
  if (!info) refuse(task.pid, object, 'its fdinfo shows a fanotify mark cptrst does not know (a mount namespace\'s?) or no flags');
  if (info.flags & ~KNOWN_INIT_FLAGS) refuse(task.pid, object, `fanotify_init flags 0x${(info.flags & ~KNOWN_INIT_FLAGS).toString(16)} are not known`);
  if (info.eventFlags & ~EVENT_F_FLAGS) refuse(task.pid, object, `event flags 0${info.eventFlags.toString(8)} are not known`);
  const odd = f.fdinfo.flags & ~(O.ACCMODE | O.NONBLOCK | O.LARGEFILE | O.CLOEXEC);
  if (odd) refuse(task.pid, object, `open flags 0${odd.toString(8)} on a fanotify group are not supported`);
  if (info.marks.length > MAX_MARKS) refuse(task.pid, object, `${info.marks.length} marks (at most ${MAX_MARKS} are restored)`);
  const mounts = info.marks.some((m) => m.on !== 'inode') ? linux.readMountinfo(task.pid) : [];
  const g = { flags: info.flags, eventFlags: info.eventFlags, marks: info.marks.map((m) => markOf(task, object, m, mounts)) };
  known.set(f.fd, g);
  return g;
}

function refuseQueued(task: CheckpointTask, f: OpenFile): void {
  const n = withFileCopy(task, f, (copy) => {
    const b = Buffer.alloc(4);
    linux.checkedSyscall(`ioctl(FIONREAD) of ${fdObject(f)}`, task.pid, SYS.ioctl, copy, FIONREAD, b);
    return b.readInt32LE(0);
  });
  if (n > 0) refuse(task.pid, fdObject(f), `${n} bytes of fanotify events are queued and not read; queued events cannot be restored`);
}

export class FanotifyKind implements FileKindHandler {
  readonly kind = 'fanotify';
  readonly records = [FanotifyGroupImage, FanotifyMarkImage];

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[fanotify]';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    groupOf(task, f);
    refuseQueued(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    refuseQueued(task, f); // events may have come since the check: the checkpoint fails then, the process runs on
    const g = groupOf(task, f);
    const head = new FanotifyGroupImage();
    head.flags = g.flags;
    head.eventFlags = g.eventFlags;
    out.write(head);
    for (const m of g.marks) out.write(m);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const bad = badImage(task, req.object, 'fanotify');
    const heads = req.records.of(FanotifyGroupImage);
    if (heads.length !== 1) throw bad(`${heads.length} group records for one group`);
    const { flags, eventFlags } = heads[0];
    if (flags & ~KNOWN_INIT_FLAGS) throw bad(`fanotify_init flags 0x${flags.toString(16)}`);
    if (eventFlags & ~EVENT_F_FLAGS) throw bad(`event flags 0${eventFlags.toString(8)}`);
    if ((img.flags & ~(O.ACCMODE | O.NONBLOCK | O.LARGEFILE)) !== 0) throw bad(`open flags 0${img.flags.toString(8)}`);
    const marks = req.records.of(FanotifyMarkImage);
    if (marks.length > MAX_MARKS) throw bad(`${marks.length} marks`);
    for (const m of marks) {
      const what = `a mark on ${m.path}`;
      if (m.on > ON.filesystem) throw bad(`${what} is on an object of kind ${m.on}`);
      if ((m.mask | m.ignoredMask) & ~FAN.NOTIFY_BITS || m.mflags & ~FAN.SHOWN_MARK_FLAGS) throw bad(`${what} has the masks 0x${m.mask.toString(16)}/0x${m.ignoredMask.toString(16)}, flags 0x${m.mflags.toString(16)}`);
      if ((m.mask === 0 && m.ignoredMask === 0) || (m.mflags & (FAN.MARK_IGNORED_SURV_MODIFY | FAN.MARK_IGNORE) && m.ignoredMask === 0)) throw bad(`${what} has empty masks`);
      if (m.type === S_IF.LNK || (m.type & ~S_IF.MT) !== 0 || (m.on !== ON.inode && m.type !== S_IF.DIR)) throw bad(`${what} is on a file of type 0${m.type.toString(8)}`);
    }
    const t = task.tracee!;
    const gfd = t.syscallOk(linux.syscallNumber('fanotify_init'), [flags, eventFlags], `fanotify_init(0x${flags.toString(16)}, 0x${eventFlags.toString(16)}) for ${req.object}`);
    if (((flags & FAN.NONBLOCK) !== 0) !== ((img.flags & O.NONBLOCK) !== 0)) {
      t.syscallOk(SYS.fcntl, [gfd, linux.F.SETFL, img.flags & O.NONBLOCK], `fcntl(F_SETFL) of ${req.object}`);
    }
    const markNr = linux.syscallNumber('fanotify_mark');
    // fdinfo lists the newest mark first: added oldest first, they list in the same order again.
    for (const m of [...marks].reverse()) {
      const object = `${req.object} mark on ${m.on === ON.inode ? '' : m.on === ON.mount ? 'the mount at ' : 'the filesystem at '}${m.path}`;
      const pfd = openRecordedFile(t, m.path, {
        flags: O.PATH,
        expect: m.on === ON.inode ? { type: m.type, dev: m.dev, ino: m.ino } : { type: S_IF.DIR, dev: m.dev, ino: m.ino },
        sameBoot: ctx.sameBoot,
        object,
      });
      try {
        if (m.on === ON.mount && ctx.sameBoot) {
          // The mount at that point must be the one marked (its id on the same boot).
          const top = [...linux.readMountinfo(task.pid)].reverse().find((x) => x.mountPoint === m.path);
          if (top?.mountId !== m.mountId) throw new CptError('ESTALE', `the mount at ${m.path} is mount ${top?.mountId ?? 'none'}, not the marked mount ${m.mountId}`, { pid: task.pid, object });
        }
        const at = t.stage(Buffer.from(`/proc/self/fd/${pfd}\0`));
        const where = m.on === ON.mount ? FAN.MARK_MOUNT : m.on === ON.filesystem ? FAN.MARK_FILESYSTEM : 0;
        const evictable = m.mflags & FAN.MARK_EVICTABLE;
        if (m.ignoredMask) {
          const style = m.mflags & FAN.MARK_IGNORE ? FAN.MARK_IGNORE : FAN.MARK_IGNORED_MASK;
          const fl = FAN.MARK_ADD | where | evictable | style | (m.mflags & FAN.MARK_IGNORED_SURV_MODIFY);
          t.syscallOk(markNr, [gfd, fl, m.ignoredMask, linux.AT_FDCWD, at], `fanotify_mark(0x${fl.toString(16)}, ignore 0x${m.ignoredMask.toString(16)}) of ${object}`);
        }
        if (m.mask) {
          const fl = FAN.MARK_ADD | where | evictable;
          t.syscallOk(markNr, [gfd, fl, m.mask, linux.AT_FDCWD, at], `fanotify_mark(0x${fl.toString(16)}, 0x${m.mask.toString(16)}) of ${object}`);
        }
      } finally {
        t.syscall(SYS.close, [pfd]);
      }
    }
    return gfd;
  }
}
