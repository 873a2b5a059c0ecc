/**
 * A fanotify group with no marks and no queued events (fanotify_init(flags, event_f_flags)): what
 * a program holds between making its group and marking what it watches, or after removing every
 * mark. cptrst itself refuses every fanotify group (its marks and queued permission events
 * cannot be restored); this kind takes over, with a higher priority, the groups that have
 * neither, and leaves the others to cptrst's refusal.
 *
 * /proc/PID/fdinfo/N of a group shows `fanotify flags:X event-flags:Y` (the fanotify_init
 * arguments, in hex) and one `fanotify ...` line per mark. Queued events are counted with FIONREAD
 * on cptrst's copy of the fd (pidfd_getfd: the same group).
 *
 * Restore: fanotify_init(flags, event_f_flags) run inside the task, so the kernel checks it with
 * the rights the restored task has (an image not owned by root gets only what its owner may
 * make), with the flags the group shows, then O_NONBLOCK as the fd has it (F_SETFL may have
 * changed it since fanotify_init).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, linux, objectType,
  registerObjectType, refuse, u32,
} from '@cptrst/core';
import { FileImage, FileKindHandler, OpenFile, OpenRequest } from '@cptrst/files';

/** This module's package name: the owner of its object type number. */
export const OWNER = '@cptrst-example/plugin-fanotify';
/** Our object type number, from the range for third parties (1000-65535), kept for good: images carry it. */
export const FANOTIFY_TYPE = registerObjectType(4713, 'fanotify-group', OWNER);

const { O, SYS } = linux;
/** fanotify_init's FAN_NONBLOCK: the fd's O_NONBLOCK at first (F_SETFL can change it). */
export const FAN_NONBLOCK = 0x2;
/** Every fanotify_init flag the kernel knows (FAN_ALL_INIT_FLAGS and the FAN_REPORT_* bits): anything else is not a group this kind understands. */
const KNOWN_INIT_FLAGS = 0x3 | 0xc | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000 | 0x2000 | 0x4000;
const FIONREAD = 0x541b;

/** The group's own record, under its FILE object. */
@objectType(FANOTIFY_TYPE, 'fanotify-group', { parents: [ObjectType.FILE] })
export class FanotifyGroupImage {
  /** fanotify_init's flags as the group shows them (FAN_CLASS_*, FAN_UNLIMITED_*, FAN_REPORT_*, FAN_CLOEXEC, FAN_NONBLOCK). */
  @u32() flags = 0;
  /** fanotify_init's event_f_flags: how the fds of events are opened. */
  @u32() eventFlags = 0;
}

/** The group's init flags and marks, from its fdinfo. */
export function fanotifyFdinfo(fdinfo: linux.FdInfo): { flags: number; eventFlags: number; marks: number } | undefined {
  let head: { flags: number; eventFlags: number } | undefined;
  let marks = 0;
  for (const line of fdinfo.extra) {
    const m = /^fanotify flags:([0-9a-f]+) event-flags:([0-9a-f]+)$/.exec(line.trim());
    if (m) head = { flags: parseInt(m[1], 16), eventFlags: parseInt(m[2], 16) };
    else if (line.startsWith('fanotify ')) marks++;
  }
  return head && { ...head, marks };
}

export class FanotifyGroupKind implements FileKindHandler {
  readonly kind = 'fanotify-group';
  /** Above cptrst's own fanotify kind, which refuses every group. */
  readonly priority = 1;
  readonly records = [FanotifyGroupImage];

  claims(f: OpenFile): boolean {
    if (f.link !== 'anon_inode:[fanotify]') return false;
    // Only the groups this kind can restore: the others stay cptrst's, which refuses them by name.
    return fanotifyFdinfo(f.fdinfo)?.marks === 0;
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    this.read(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    out.write(this.read(task, f));
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const recs = req.records.of(FanotifyGroupImage);
    const bad = (why: string) => new CptError('EBADIMG', `fanotify group: ${why}`, { pid: task.pid, object: req.object });
    if (recs.length !== 1) throw bad(`${recs.length} fanotify records for one file (one is needed)`);
    const { flags, eventFlags } = recs[0];
    if (flags & ~KNOWN_INIT_FLAGS) throw bad(`fanotify_init flags 0x${flags.toString(16)}`);
    if (eventFlags & ~(O.ACCMODE | O.LARGEFILE | O.CLOEXEC | O.APPEND | O.DSYNC | O.NOATIME | O.NONBLOCK | O.SYNC)) throw bad(`event flags 0x${eventFlags.toString(16)}`);
    if ((img.flags & ~(O.ACCMODE | O.NONBLOCK | O.LARGEFILE)) !== 0) throw bad(`open flags 0${img.flags.toString(8)}`);
    const t = task.tracee!;
    const what = `fanotify_init(0x${flags.toString(16)}, 0x${eventFlags.toString(16)}) for ${req.object}`;
    // The flags as they were (fdinfo shows them); O_NONBLOCK as the fd has it now (F_SETFL may have changed it since).
    const fd = t.syscallOk(linux.syscallNumber('fanotify_init'), [flags, eventFlags], what);
    if (((flags & FAN_NONBLOCK) !== 0) !== ((img.flags & O.NONBLOCK) !== 0)) {
      t.syscallOk(SYS.fcntl, [fd, linux.F.SETFL, img.flags & O.NONBLOCK], `fcntl(F_SETFL) of ${req.object}`);
    }
    return fd;
  }

  /** The group's record, or a refusal naming the fd. */
  private read(task: CheckpointTask, f: OpenFile): FanotifyGroupImage {
    const object = `fd ${f.fd} (${f.link})`;
    const info = fanotifyFdinfo(f.fdinfo);
    if (!info) refuse(task.pid, object, 'its fdinfo shows no fanotify flags');
    if (info.marks > 0) refuse(task.pid, object, `the group has ${info.marks} mark(s); only a group with none is supported`);
    if (info.flags & ~KNOWN_INIT_FLAGS) refuse(task.pid, object, `fanotify_init flags 0x${info.flags.toString(16)} are not known to this plugin`);
    const odd = f.fdinfo.flags & ~(O.ACCMODE | O.NONBLOCK | O.LARGEFILE | O.CLOEXEC);
    if (odd) refuse(task.pid, object, `open flags 0${odd.toString(8)} on a fanotify group are not supported`);
    const queued = queuedBytes(task, f.fd);
    if (queued > 0) refuse(task.pid, object, `${queued} bytes of events are queued on the group; they cannot be restored`);
    const rec = new FanotifyGroupImage();
    rec.flags = info.flags;
    rec.eventFlags = info.eventFlags;
    return rec;
  }
}

/** FIONREAD on cptrst's copy of the task's fd (pidfd_getfd: the same group). */
function queuedBytes(task: CheckpointTask, fd: number): number {
  const pidfd = linux.pidfdOpen(task.pid);
  try {
    const copy = linux.pidfdGetfd(pidfd, fd);
    try {
      const n = Buffer.alloc(4);
      const r = linux.rawSyscall(SYS.ioctl, copy, FIONREAD, n);
      if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `FIONREAD on a copy of fd ${fd}: ${linux.errnoName(Number(-r))}`, { pid: task.pid, object: `fd ${fd}` });
      return n.readInt32LE(0);
    } finally {
      fs.closeSync(copy);
    }
  } finally {
    fs.closeSync(pidfd);
  }
}
