/**
 * signalfd: the set of signals it reads (fdinfo `sigmask:`) and O_NONBLOCK. The signals it would
 * read are the task's pending signals, which the task's signal handlers restore (they come after
 * the files). Restore: signalfd4(-1, mask, 8, flags) inside the task.
 */
import {
  CheckpointContext, CheckpointTask, KindRecordWriter, ObjectType, RestartContext, RestartTask, linux, objectType, refuse, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest } from './kinds';
import type { FileImage } from './file';
import { badImage, checkEventFlags, fdObject, requireEventFlags } from './event-files';

const { O } = linux;
/** SIGKILL and SIGSTOP, which a signalfd never reads (the kernel drops them from any mask). */
const UNREADABLE = (1n << 8n) | (1n << 18n);

@objectType(ObjectType.SIGNALFD, 'signalfd', { parents: [ObjectType.FILE] })
export class SignalfdImage {
  /** Bit n-1 for signal n. */
  @u64() mask = 0n;
}

export class SignalfdKind implements FileKindHandler {
  readonly kind = 'signalfd';
  readonly records = [SignalfdImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[signalfd]';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    mask(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const rec = new SignalfdImage();
    rec.mask = mask(task, f);
    out.write(rec);
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const bad = badImage(task, req.object, 'signalfd');
    const recs = req.records.of(SignalfdImage);
    if (recs.length !== 1) throw bad(`${recs.length} signalfd records for one file (one is needed)`);
    if (recs[0].mask & UNREADABLE) throw bad(`its mask 0x${recs[0].mask.toString(16)} holds SIGKILL or SIGSTOP`);
    checkEventFlags(task, img, O.RDWR, req.object, 'a signalfd');
    const t = task.tracee!;
    const set = Buffer.alloc(8);
    set.writeBigUInt64LE(recs[0].mask);
    return t.syscallOk(linux.syscallNumber('signalfd4'), [-1, t.stage(set), 8, img.flags & O.NONBLOCK], `signalfd4 for ${req.object}`);
  }
}

function mask(task: CheckpointTask, f: OpenFile): bigint {
  const m = linux.parseSignalfdMask(f.fdinfo);
  if (m === undefined) refuse(task.pid, fdObject(f), 'its fdinfo shows no sigmask');
  requireEventFlags(task, f, 'a signalfd');
  return m;
}
