/**
 * eventfd: a 64-bit counter and its mode. fdinfo shows the counter (`eventfd-count`) and, since
 * Linux 6.5, whether it counts as a semaphore (`eventfd-semaphore`); the open flags show
 * O_NONBLOCK. Where the kernel does not show the mode the fd is refused: restored in the wrong
 * mode, every read(2) would return something else.
 *
 * Restore: eventfd2(count, flags) inside the task; a counter above what eventfd2 takes (an
 * unsigned int) is added with a write(2).
 */
import {
  CheckpointContext, CheckpointTask, KindRecordWriter, ObjectType, RestartContext, RestartTask, linux, objectType, refuse, u32, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest } from './kinds';
import type { FileImage } from './file';
import { badImage, checkEventFlags, fdObject, fdinfoNow, requireEventFlags } from './event-files';

const { O, SYS, EFD_SEMAPHORE } = linux;
/** The largest value an eventfd counter holds. */
const EVENTFD_MAX = 0xfffffffffffffffen;
const UINT_MAX = 0xffffffffn;

/** The eventfd's record, under its FILE object. */
@objectType(ObjectType.EVENTFD, 'eventfd', { parents: [ObjectType.FILE] })
export class EventfdImage {
  @u64() count = 0n;
  /** EFD_SEMAPHORE or 0 (O_NONBLOCK is in the FILE object's flags). */
  @u32() flags = 0;
}

export class EventfdKind implements FileKindHandler {
  readonly kind = 'eventfd';
  readonly records = [EventfdImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[eventfd]';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    state(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    // Read again: the counter may have moved since the check (another process may write to it).
    const s = state(task, { ...f, fdinfo: fdinfoNow(task, f) });
    const rec = new EventfdImage();
    rec.count = s.count;
    rec.flags = s.semaphore ? EFD_SEMAPHORE : 0;
    out.write(rec);
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const bad = badImage(task, req.object, 'eventfd');
    const recs = req.records.of(EventfdImage);
    if (recs.length !== 1) throw bad(`${recs.length} eventfd records for one file (one is needed)`);
    const { count, flags } = recs[0];
    if (flags & ~EFD_SEMAPHORE) throw bad(`unknown eventfd flags 0x${flags.toString(16)}`);
    if (count > EVENTFD_MAX) throw bad(`counter 0x${count.toString(16)} is above the largest an eventfd holds`);
    checkEventFlags(task, img, O.RDWR, req.object, 'an eventfd');
    const t = task.tracee!;
    const fd = t.syscallOk(linux.syscallNumber('eventfd2'), [count <= UINT_MAX ? count : 0n, flags | (img.flags & O.NONBLOCK)], `eventfd2 for ${req.object}`);
    if (count > UINT_MAX) {
      const v = Buffer.alloc(8);
      v.writeBigUInt64LE(count);
      t.syscallOk(SYS.write, [fd, t.stage(v), 8], `write of the eventfd counter for ${req.object}`);
    }
    return fd;
  }
}

function state(task: CheckpointTask, f: OpenFile): { count: bigint; semaphore: boolean } {
  const s = linux.parseEventfdInfo(f.fdinfo);
  if (!s) refuse(task.pid, fdObject(f), 'its fdinfo shows no eventfd-count');
  if (s.semaphore === undefined) refuse(task.pid, fdObject(f), 'this kernel does not show whether the eventfd is a semaphore (no eventfd-semaphore in its fdinfo): it cannot be restored faithfully');
  requireEventFlags(task, f, 'an eventfd');
  return { count: s.count, semaphore: s.semaphore };
}
