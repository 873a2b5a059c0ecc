/**
 * Mappings of memfds, shared or private (core's memfd.ts holds the records and how a memfd is
 * made again, shared with the files subsystem).
 *
 * Checkpoint: a "/memfd:" area whose file (its map_files link) is on the kernel's internal shm
 * mount. The first area of a memfd carries it whole (name, size, seals, mode, contents), whether
 * or not an fd of it is open: mm dumps before files. A shared mapping stores no pages (they are
 * the memfd's contents); a private one stores the pages the process changed (anonymous copies),
 * as a private file mapping does.
 *
 * Restart: the carrier makes the memfd inside the task and maps it; a later area of the same
 * memfd opens it through /proc/self/map_files of the carrier's area. O_RDWR for a shared mapping
 * that may write, as for a file.
 */
import {
  CheckpointContext, CheckpointTask, KindRecordWriter, KindRecords, MemfdDataFields, MemfdFields, MemfdLayouts, ObjectType, RestartContext, RestartTask, checkMemfd,
  createMemfd, dumpMemfd, isMemfd, linux, memfdPath, memfdRecord, objectType, refuse, registerMemfd,
} from '@cptrst/core';
import { LOCK_FLAGS, MADVISE_FLAGS, SEAL_FLAG, VmaEntry, VmaImage, VmaKindHandler, describeVma, mapAt, mappedFile } from './vma';
import { applyVmFlags } from './madvise';
import { MappedFilePages } from './file';

const { MAP, SYS, O } = linux;

/** A mapped memfd's record, under each VMA of it (core's MemfdFields). */
@objectType(ObjectType.VMA_MEMFD, 'vma-memfd', { parents: [ObjectType.VMA] })
export class VmaMemfdImage extends MemfdFields {}
/** A data run of a mapped memfd, under its carrier VMA. */
@objectType(ObjectType.VMA_MEMFD_DATA, 'vma-memfd-data', { parents: [ObjectType.VMA] })
export class VmaMemfdDataImage extends MemfdDataFields {}
const VMA_MEMFD: MemfdLayouts = { memfd: VmaMemfdImage, data: VmaMemfdDataImage };

/** As for a file: madvise's flags but wipeonfork, noreserve, locks, seal. */
const MEMFD_FLAGS = new Set(['nr', ...Object.keys(MADVISE_FLAGS).filter((f) => f !== 'wf'), ...LOCK_FLAGS, SEAL_FLAG]);

export class MemfdVma extends MappedFilePages implements VmaKindHandler {
  readonly kind: string = 'memfd';
  /** Above the file kind, which claims every mapped file with a path (and refuses memfds). */
  readonly priority: number = 1;
  readonly records: Array<new () => MemfdFields | MemfdDataFields> = [VmaMemfdImage, VmaMemfdDataImage];
  protected readonly layouts: MemfdLayouts = VMA_MEMFD;

  /** By name here; describe then requires the file of the shm mount (the name is the process's choice). */
  claims(v: VmaEntry): boolean {
    return v.inode !== 0n && v.deleted && v.path.startsWith('/memfd:');
  }

  describe(task: CheckpointTask, v: VmaEntry, img: VmaImage): void {
    const src = mappedFile(task, v, 'mapped memfd');
    if (!isMemfd(v.path, src.stat.dev)) refuse(task.pid, describeVma(v), 'a memfd of hugetlbfs, or a deleted file named like a memfd: not supported');
    checkMemfd(task, src, describeVma(v));
    img.inode = src.stat.ino;
    img.fileDev = src.stat.dev;
    img.fileSize = src.stat.size;
  }

  acceptsVmFlag(flag: string): boolean {
    return MEMFD_FLAGS.has(flag);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, _img: VmaImage, out: KindRecordWriter): void {
    dumpMemfd(task, mappedFile(task, v, 'mapped memfd'), out, describeVma(v), this.layouts);
  }

  map(_ctx: RestartContext, task: RestartTask, img: VmaImage, _writable: boolean, records: KindRecords): void {
    const t = task.tracee!;
    const what = describeVma(img);
    const { rec, data } = memfdRecord(task.pid, records, what, this.layouts);
    let fd: bigint;
    if (rec.carrier) {
      fd = createMemfd(task, rec, data, 0, what, this.layouts.anon);
    } else {
      const mayWrite = img.shared && img.vmFlags.includes('mw');
      const at = t.stage(Buffer.from(`${memfdPath(task, rec.inode, what)}\0`));
      fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, at, (mayWrite ? O.RDWR : O.RDONLY) | O.CLOEXEC, 0], `opening the memfd for ${what}`);
    }
    try {
      mapAt(task, img, img.prot, img.shared ? MAP.SHARED : MAP.PRIVATE, fd, img.path);
    } catch (e) {
      t.syscall(SYS.close, [fd]);
      throw e;
    }
    // memfd_create's fd stays for an fd of the image (the fd table restore moves it out of the way).
    if (rec.carrier) registerMemfd(task, rec, { start: img.start, end: img.end }, what, fd);
    else t.syscall(SYS.close, [fd]);
    applyVmFlags(task, img);
  }
}
