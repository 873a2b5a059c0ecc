/**
 * The file of shared anonymous memory open as an fd: a process that mapped MAP_SHARED|MAP_ANONYMOUS
 * memory opened it through /proc/self/map_files ("/dev/zero (deleted)", on the internal shm mount),
 * and may have unmapped the memory since, resized the file, or mapped it again. It is kept as a
 * memfd is (memfd.ts; core's memfd.ts makes it again without a name): contents, size, mode, each
 * description's flags and offset, held by several processes of the tree through fds (their common
 * ancestor makes it), and one inode with the task's mappings of it (mm's shmem-file.ts).
 */
import { CheckpointContext, CheckpointTask, MemfdDataFields, MemfdFields, MemfdLayouts, ObjectType, isShmemFile, objectType, refuse } from '@cptrst/core';
import { OpenFile } from './kinds';
import { MemfdKind } from './memfd';
import { objectOf } from './pipe';

/** The file's record, under each FILE of it (core's MemfdFields, no name). */
@objectType(ObjectType.SHMEM_FILE, 'shmem-file', { parents: [ObjectType.FILE] })
export class ShmemFileImage extends MemfdFields {}
/** A data run of the file, under its carrier FILE. */
@objectType(ObjectType.SHMEM_FILE_DATA, 'shmem-file-data', { parents: [ObjectType.FILE] })
export class ShmemFileDataImage extends MemfdDataFields {}
const FILE_SHMEM: MemfdLayouts = { memfd: ShmemFileImage, data: ShmemFileDataImage, anon: true };

export class ShmemFileKind extends MemfdKind {
  override readonly kind = 'shmem-file';
  override readonly records = [ShmemFileImage, ShmemFileDataImage];
  protected override readonly layouts = FILE_SHMEM;

  override claims(f: OpenFile): boolean {
    return f.stat.isFile() && isShmemFile(f.link, f.stat.dev);
  }

  override describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    if (f.stat.nlink !== 0n) refuse(task.pid, objectOf(f), 'a file of the shm mount named /dev/zero that has links; not shared anonymous memory');
    super.describe(ctx, task, f);
  }
}
