/**
 * memfds open as fds: name, size, contents, seals, mode, and each open file description's flags
 * and offset (core's memfd.ts holds what files and mm share: the records, how a memfd is made
 * again and how the second user of one reaches it).
 *
 * It claims "/memfd:" files of the internal shm mount above the regular kind (which would claim
 * them as regular files and refuse them as unreachable by path). Restart: the first FILE or VMA
 * of the memfd makes it; every FILE then gets its own description, opened inside the task through
 * /proc/self/fd/N or /proc/self/map_files/START-END with its recorded flags (memfd_create's own
 * are O_RDWR|O_LARGEFILE, which such an open gives too), at its offset.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, MemfdDataFields, MemfdFields, MemfdLayouts, ObjectType, RestartContext, RestartTask, checkMemfd, createMemfd,
  carriedIn, dumpMemfd, isMemfd, linux, memfdPath, memfdRecord, objectType, refuse, registerMemfd, takeCreatedMemfd,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, openInTask, procFdPath, reopenFlags } from './kinds';
import { FileImage } from './file';
import { objectOf } from './pipe';

const { SYS, O, F, SEEK } = linux;

/** A memfd's record, under each FILE of it (core's MemfdFields). */
@objectType(ObjectType.MEMFD, 'memfd', { parents: [ObjectType.FILE] })
export class MemfdImage extends MemfdFields {}
/** A data run of a memfd, under its carrier FILE. */
@objectType(ObjectType.MEMFD_DATA, 'memfd-data', { parents: [ObjectType.FILE] })
export class MemfdDataImage extends MemfdDataFields {}
const FILE_MEMFD: MemfdLayouts = { memfd: MemfdImage, data: MemfdDataImage };
/** What F_SETFL sets on memfd_create's description. */
const SETFL_FLAGS = O.APPEND | O.NONBLOCK | O.NOATIME;
/** Status flags a memfd's description may carry. */
const MEMFD_FLAGS = O.ACCMODE | O.APPEND | O.NONBLOCK | O.LARGEFILE | O.NOATIME | O.CLOEXEC;

export class MemfdKind implements FileKindHandler {
  readonly kind: string = 'memfd';
  /** Above the regular kind, which claims every regular file with a path. */
  readonly priority = 1;
  readonly records: Array<new () => MemfdFields | MemfdDataFields> = [MemfdImage, MemfdDataImage];
  protected readonly layouts: MemfdLayouts = FILE_MEMFD;
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.stat.isFile() && isMemfd(f.link, f.stat.dev);
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    const odd = f.fdinfo.flags & ~MEMFD_FLAGS;
    if (odd) refuse(task.pid, objectOf(f), `open flags 0${odd.toString(8)} on a memfd are not supported`);
    checkMemfd(task, { at: procFdPath(task, f), stat: f.stat, path: f.link }, objectOf(f), ctx);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    dumpMemfd(task, { at: procFdPath(task, f), stat: f.stat, path: f.link }, out, objectOf(f), this.layouts);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const { rec, data } = memfdRecord(task.pid, req.records, req.object, this.layouts);
    if (img.flags & ~MEMFD_FLAGS) throw new CptError('EBADIMG', `memfd: open flags 0${img.flags.toString(8)}`, { pid: task.pid, object: req.object });
    const t = task.tracee!;
    if (rec.carrier) {
      const made = createMemfd(task, rec, data, req.above, req.object, this.layouts.anon);
      registerMemfd(task, rec, { fd: made }, req.object, made);
      // Descendants that hold the memfd too open it from this fd, which they get by clone.
      carriedIn(ctx, task.pid).set(`memfd:${rec.inode}`, { fds: [made], shared: {} });
    }
    // memfd_create's own description for the first read-write FILE (it is O_RDWR|O_LARGEFILE), a new one for the others.
    let fd = (img.flags & O.ACCMODE) === O.RDWR ? takeCreatedMemfd(task, rec.inode, req.above, req.object) : undefined;
    if (fd !== undefined) t.syscallOk(SYS.fcntl, [fd, F.SETFL, img.flags & SETFL_FLAGS], `F_SETFL for ${req.object}`);
    else fd = openInTask(task, memfdPath(task, rec.inode, req.object, ctx), reopenFlags(img.flags) | O.CLOEXEC, `opening the memfd for ${req.object}`);
    t.syscallOk(SYS.lseek, [fd, img.pos, SEEK.SET], `lseek of ${req.object} to ${img.pos}`);
    return fd;
  }
}
