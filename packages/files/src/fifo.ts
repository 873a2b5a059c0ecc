/**
 * FIFOs (named pipes), opened for reading, writing or both, with their data in flight: the PIPE
 * record and the machinery of pipe.ts, keyed by the FIFO's inode.
 *
 * Checkpoint: as a pipe, but the data of a FIFO the task holds only for writing is read through
 * a new read-only, non-blocking description of cptrst's (the FIFO could be opened later by its
 * name and read); other processes of the tree may hold it too (made once, as a pipe), none outside. A FIFO whose name was unlinked is kept too
 * (it lives on for the fds that hold it): its directory must still be there, on the same
 * filesystem.
 *
 * Restart: the carrier opens the FIFO by its recorded path inside the task (openRecordedFile:
 * canonical path, no symlinks, the task's identity, a FIFO, same device and inode on the same
 * boot) O_RDWR|O_NONBLOCK, which never blocks and makes it a reader and a writer of itself: the
 * anchor. Capacity and data go in through it. Every FILE is then a new description opened
 * through /proc/self/fd/ANCHOR with its recorded access mode, so that no open blocks (the
 * anchor is both ends). An unlinked FIFO is made again in its old directory under a random
 * name (mknodat), opened, and unlinked at once, all inside the task: the name exists only for
 * the moment between those calls, and cptrst chose it.
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, RestartContext, RestartTask, linux, openRecordedFile, refuse, requireCanonicalPath,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, recordedPath, requireReachableByPath } from './kinds';
import { FileImage } from './file';
import { recorded } from './fs-struct';
import { PipeImage, dumpPipeRecord, examinePipe, moveAbove, objectOf, pipeDescription, pipeRecord, restoredPipe } from './pipe';

const { SYS, O, S_IF } = linux;

export class FifoKind implements FileKindHandler {
  readonly kind = 'fifo';
  readonly records = [PipeImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.stat.isFIFO() && f.link.startsWith('/');
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    img.deleted = f.stat.nlink === 0n;
    if (img.deleted) {
      const dir = path.posix.dirname(recordedPath(f));
      let dst: fs.BigIntStats | undefined;
      try {
        dst = fs.statSync(dir, { bigint: true });
      } catch {
        /* refused below */
      }
      if (!dst || !dst.isDirectory() || dst.dev !== f.stat.dev) {
        refuse(task.pid, objectOf(f), `the directory ${dir} of the unlinked FIFO is gone or on another filesystem now; restart makes the FIFO again in it`);
      }
    } else {
      requireReachableByPath(task, f);
    }
    examinePipe(ctx, task, f, { stat: f.stat }, 'FIFO');
  }

  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    dumpPipeRecord(ctx, task, f, { stat: f.stat }, 'FIFO', out, true);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    return pipeDescription(task, this.make(ctx, task, img, req), img, req, false);
  }

  carry(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): void {
    this.make(ctx, task, img, req);
  }

  private make(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): ReturnType<typeof restoredPipe> {
    const rec = pipeRecord(task, img, req, 'FIFO');
    return restoredPipe(ctx, task, rec, 'FIFO', req.object, () => {
      const anchor = moveAbove(task, img.deleted ? makeUnlinkedFifo(ctx, task, img, req) : openFifo(ctx, task, img, req), req.above, 'the FIFO');
      return { read: anchor, write: anchor };
    });
  }
}

const ANCHOR_FLAGS = O.RDWR | O.NONBLOCK | O.CLOEXEC;

function openFifo(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
  return openRecordedFile(task.tracee!, img.path, {
    flags: ANCHOR_FLAGS,
    expect: { type: S_IF.FIFO, dev: recorded(img.dev), ino: img.inode },
    sameBoot: ctx.sameBoot,
    object: req.object,
  });
}

/** mknodat under a random name in the old directory, open, unlink: inside the task, as the task. */
function makeUnlinkedFifo(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
  const t = task.tracee!;
  requireCanonicalPath(img.path, task.pid, req.object);
  if (!ctx.imageTrusted && img.uid !== ctx.imageOwner.uid) {
    throw new CptError('EPERM', `the unlinked FIFO was owned by uid ${img.uid}, but the image belongs to uid ${ctx.imageOwner.uid}`, { pid: task.pid, object: req.object });
  }
  const dir = path.posix.dirname(img.path);
  const dirfd = openRecordedFile(t, dir, { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR, dev: recorded(img.dev) }, sameBoot: ctx.sameBoot, object: `${req.object}: its directory ${dir}` });
  try {
    const name = t.stage(Buffer.from(`.cptrst-fifo-${linux.randomBytes(8).toString('hex')}\0`));
    t.syscallOk(linux.syscallNumber('mknodat'), [dirfd, name, S_IF.FIFO | 0o600, 0], `mknodat of the unlinked FIFO in ${dir}`);
    const fd = t.syscall(SYS.openat, [dirfd, name, ANCHOR_FLAGS, 0]);
    t.syscallOk(linux.syscallNumber('unlinkat'), [dirfd, name, 0], `unlinking the FIFO made again in ${dir}`);
    if (fd < 0n) throw new CptError(linux.errnoName(Number(-fd)), `opening the FIFO made again in ${dir} failed`, { pid: task.pid, object: req.object });
    t.syscallOk(SYS.fchmod, [fd, img.mode & 0o777], `fchmod of the unlinked FIFO for ${req.object}`);
    if (ctx.imageTrusted && (img.uid !== 0 || img.gid !== 0)) {
      t.syscallOk(linux.syscallNumber('fchown'), [fd, img.uid, img.gid], `fchown of the unlinked FIFO for ${req.object}`);
    }
    return fd;
  } finally {
    t.syscall(SYS.close, [dirfd]);
  }
}
