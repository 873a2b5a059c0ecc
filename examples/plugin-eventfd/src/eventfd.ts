/**
 * eventfd: a 64-bit counter, and its flags. /proc/PID/fdinfo/N shows the counter
 * * ("eventfd-count", in hex) and, on recent kernels, whether it counts as a semaphore
 * ("eventfd-semaphore"); the open flags show O_NONBLOCK. Where the kernel does not show the
 * semaphore mode it cannot be told, so the fd is refused: restoring it in the wrong mode would
 * change what every read(2) returns.
 *
 * Restore: eventfd2(count, flags) run inside the task; the files subsystem then puts the fd at its
 * numbers. A counter above what eventfd2 takes (an unsigned int) is added with a write(2).
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, linux, objectType,
  registerObjectType, refuse, u32, u64,
} from '@cptrst/core';
import { FileImage, FileKindHandler, OpenFile, OpenRequest } from '@cptrst/files';

/** This module's package name: the owner of its object type number. */
export const OWNER = '@cptrst-example/plugin-eventfd';
/** Our object type number, from the range for third parties (1000-65535), kept for good: images carry it. */
export const EVENTFD_TYPE = registerObjectType(4711, 'eventfd', OWNER);

/** Flags of eventfd2(2) (EFD_NONBLOCK is O_NONBLOCK, EFD_CLOEXEC is O_CLOEXEC). */
export const EFD_SEMAPHORE = 1;
/** The largest value an eventfd counter holds. */
export const EVENTFD_MAX = 0xfffffffffffffffen;
const UINT_MAX = 0xffffffffn;
const { O, SYS } = linux;

/** The eventfd's own record, under its FILE object. */
@objectType(EVENTFD_TYPE, 'eventfd', { parents: [ObjectType.FILE] })
export class EventfdImage {
  @u64() count = 0n;
  /** EFD_SEMAPHORE or 0 (O_NONBLOCK is in the FILE object's flags). */
  @u32() flags = 0;
}

/** What fdinfo says about an eventfd: its counter, and its mode when the kernel shows it. */
export interface EventfdState {
  count: bigint;
  semaphore?: boolean;
}

export function eventfdState(fdinfo: linux.FdInfo): EventfdState | undefined {
  const count = fdinfo.fields['eventfd-count'];
  if (count === undefined || !/^[0-9a-f]+$/i.test(count)) return undefined;
  const sem = fdinfo.fields['eventfd-semaphore'];
  return { count: BigInt('0x' + count), ...(sem === '0' || sem === '1' ? { semaphore: sem === '1' } : {}) };
}

/** Status flags an eventfd can carry that this kind restores. */
const KNOWN_FLAGS = O.ACCMODE | O.NONBLOCK | O.CLOEXEC;

export class EventfdKind implements FileKindHandler {
  readonly kind = 'eventfd';
  readonly records = [EventfdImage];

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[eventfd]';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    this.state(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const s = this.state(task, f);
    const rec = new EventfdImage();
    rec.count = s.count;
    rec.flags = s.semaphore ? EFD_SEMAPHORE : 0;
    out.write(rec);
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const recs = req.records.of(EventfdImage);
    const bad = (why: string) => new CptError('EBADIMG', `eventfd: ${why}`, { pid: task.pid, object: req.object });
    if (recs.length !== 1) throw bad(`${recs.length} eventfd records for one file (one is needed)`);
    const { count, flags } = recs[0];
    if (flags & ~EFD_SEMAPHORE) throw bad(`unknown eventfd flags 0x${flags.toString(16)}`);
    if (count > EVENTFD_MAX) throw bad(`counter 0x${count.toString(16)} is above the largest an eventfd holds`);
    if (img.flags & ~KNOWN_FLAGS || (img.flags & O.ACCMODE) !== O.RDWR) throw bad(`open flags 0${img.flags.toString(8)}`);
    const t = task.tracee!;
    const efd = flags | (img.flags & O.NONBLOCK);
    const fd = t.syscallOk(linux.syscallNumber('eventfd2'), [count <= UINT_MAX ? count : 0n, efd], 'eventfd2');
    if (count > UINT_MAX) {
      const v = Buffer.alloc(8);
      v.writeBigUInt64LE(count);
      t.syscallOk(SYS.write, [fd, t.stage(v), 8], `write of the eventfd counter for ${req.object}`);
    }
    return fd;
  }

  /** The counter and mode, or a refusal naming the fd. */
  private state(task: CheckpointTask, f: OpenFile): EventfdState & { semaphore: boolean } {
    const object = `fd ${f.fd} (${f.link})`;
    const s = eventfdState(f.fdinfo);
    if (!s) refuse(task.pid, object, 'its fdinfo shows no eventfd-count');
    if (s.semaphore === undefined) refuse(task.pid, object, 'this kernel does not show whether the eventfd is a semaphore (no eventfd-semaphore in its fdinfo): it cannot be restored faithfully');
    const odd = f.fdinfo.flags & ~KNOWN_FLAGS;
    if (odd) refuse(task.pid, object, `open flags 0${odd.toString(8)} on an eventfd are not supported`);
    return { count: s.count, semaphore: s.semaphore };
  }
}
