/**
 * Mappings of regular files deleted while mapped, private or shared (core's deleted-file.ts holds
 * how their contents are stored and how the inode is made again, shared with the files subsystem).
 *
 * Checkpoint: an area whose file has no name left (nlink 0). The first area of an inode in the
 * process carries it whole (attributes and data runs), whether or not an fd of it is open: mm
 * dumps before files, and the fds then refer to it. A shared mapping stores no pages (they are
 * the file's contents, stored once); a private one stores the pages the process changed
 * (anonymous copies), as a private file mapping does. Refused: a deleted file another process
 * also maps or holds (it would come back as a copy), one still linked under another name (the
 * name is not known), one too large for an image.
 *
 * Restart: the carrier makes the file again inside the task, in the directory it was in, without
 * a name (O_TMPFILE), and maps it; a later area of the same inode opens the carrier's descriptor
 * again. The descriptor stays until the end of the files restore, when owner, mode and times are
 * put back.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DeletedDataFields, DeletedFileFields, KindRecordWriter, KindRecords, ObjectType, RestartContext, RestartTask,
  S_IFMT, S_IFREG, carryDeletedFile, checkDeletedFile, checkDeletedRun, deletedFilePath, describeHolders, dumpDeletedRuns, fileTypeName, linux,
  makeDeletedFile, objectType, otherHolders, refuse,
} from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, describeVma, internalShmDev, mapAt, mappedFile } from './vma';
import { FILE_FLAGS, MappedFilePages } from './file';
import { applyVmFlags } from './madvise';

const { MAP, SYS, O } = linux;

/** A deleted mapped file's record, under each VMA of it (core's DeletedFileFields). */
@objectType(ObjectType.VMA_DELETED_FILE, 'vma-deleted-file', { parents: [ObjectType.VMA] })
export class VmaDeletedFileImage extends DeletedFileFields {}
/** A data run of a deleted mapped file, under its carrier VMA. */
@objectType(ObjectType.VMA_DELETED_DATA, 'vma-deleted-data', { parents: [ObjectType.VMA] })
export class VmaDeletedDataImage extends DeletedDataFields {}

export class DeletedFileVma extends MappedFilePages implements VmaKindHandler {
  readonly kind = 'deleted-file';
  /** Above the file kind, which claims every mapped file with a path (and refuses deleted ones). */
  readonly priority = 1;
  readonly records = [VmaDeletedFileImage, VmaDeletedDataImage];

  /**
   * Memfds, SysV segments, shared anonymous memory and the kernel's own files (an aio ring is
   * "/[aio] (deleted)") show as deleted files too: they have kinds of their own.
   */
  claims(v: VmaEntry): boolean {
    return v.inode !== 0n && v.deleted && v.path.startsWith('/') && !v.path.startsWith('/memfd:') && !v.path.startsWith('/SYSV') && !v.path.startsWith('/[') && v.path !== '/dev/zero';
  }

  describe(task: CheckpointTask, v: VmaEntry, img: VmaImage): void {
    const what = describeVma(v);
    const src = mappedFile(task, v);
    if (src.stat.dev === internalShmDev()) refuse(task.pid, what, 'memory of the kernel\'s internal shm mount (a file opened through map_files) is mapped; not supported');
    if ((Number(src.stat.mode) & S_IFMT) !== S_IFREG) refuse(task.pid, what, `the deleted mapped file is a ${fileTypeName(Number(src.stat.mode))}; only regular files are mapped back`);
    if (src.stat.nlink !== 0n) refuse(task.pid, what, `the file was unlinked from this name but still has ${src.stat.nlink} other link(s), whose names are not known`);
    const others = otherHolders(task, { stat: src.stat });
    if (others.length) refuse(task.pid, what, `the deleted file is also open or mapped in ${describeHolders(others)}; it would come back as a copy`);
    checkDeletedFile(task, src, what);
    img.inode = src.stat.ino;
    img.fileDev = src.stat.dev;
    img.fileSize = src.stat.size;
    img.fileMtimeNs = src.stat.mtimeNs;
  }

  acceptsVmFlag(flag: string): boolean {
    return FILE_FLAGS.has(flag);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, _img: VmaImage, out: KindRecordWriter): void {
    const src = mappedFile(task, v);
    const rec = new VmaDeletedFileImage();
    rec.dev = src.stat.dev;
    rec.inode = src.stat.ino;
    if (!carryDeletedFile(task, src.stat)) {
      out.write(rec);
      return;
    }
    rec.carrier = true;
    rec.size = src.stat.size;
    rec.mode = Number(src.stat.mode) & 0o7777;
    rec.uid = Number(src.stat.uid);
    rec.gid = Number(src.stat.gid);
    rec.atimeNs = src.stat.atimeNs;
    rec.mtimeNs = src.stat.mtimeNs;
    out.write(rec);
    dumpDeletedRuns(task.pid, src, describeVma(v), (offset, data) => {
      const d = new VmaDeletedDataImage();
      d.offset = offset;
      d.data = data;
      out.write(d);
    });
  }

  map(ctx: RestartContext, task: RestartTask, img: VmaImage, _writable: boolean, records: KindRecords): void {
    const t = task.tracee!;
    const what = describeVma(img);
    const bad = (why: string) => new CptError('EBADIMG', `deleted mapped file: ${why}`, { pid: task.pid, object: what });
    const recs = records.of(VmaDeletedFileImage);
    if (recs.length !== 1) throw bad(`${recs.length} records for one area (one is needed)`);
    const rec = recs[0];
    if (rec.inode !== img.inode || rec.dev !== img.fileDev) throw bad('the record names another inode than its area');
    const data = records.of(VmaDeletedDataImage);
    let fd: bigint;
    if (rec.carrier) {
      if (rec.size !== img.fileSize) throw bad(`size ${rec.size}, but the area says ${img.fileSize}`);
      if (rec.mode & ~0o7777) throw bad(`mode 0${rec.mode.toString(8)}`);
      data.forEach((d, i) => checkDeletedRun(task.pid, rec.size, data.slice(0, i), d, what));
      fd = makeDeletedFile(ctx, task, { ...rec, path: img.path }, data, 0, what);
    } else {
      if (data.length) throw bad('data runs under a record that does not carry the file');
      const mayWrite = img.shared && img.vmFlags.includes('mw');
      const at = t.stage(Buffer.from(`${deletedFilePath(task, rec.dev, rec.inode, what)}\0`));
      fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, at, (mayWrite ? O.RDWR : O.RDONLY) | O.CLOEXEC, 0], `opening the deleted file for ${what}`);
    }
    try {
      mapAt(task, img, img.prot, img.shared ? MAP.SHARED : MAP.PRIVATE, fd, img.path);
    } finally {
      // The carrier's descriptor stays (core's deleted-file.ts closes it at the end of the files restore).
      if (!rec.carrier) t.syscall(SYS.close, [fd]);
    }
    applyVmFlags(task, img);
  }
}
