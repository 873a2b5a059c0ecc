/**
 * Areas of the file of shared anonymous memory ("/dev/zero (deleted)") that a process also uses as
 * a file: it holds an fd of it (opened through /proc/self/map_files) or maps it privately. Such
 * an area is not memory of its own but a view of one file, which may be larger or smaller than
 * the area and mapped at other offsets, shared or private, by other areas; each is kept as an area
 * of a memfd is (memfd.ts): the first area of the file carries it (size, mode, contents), every
 * area maps it at its offset, a private one with the pages the process changed. Restart makes the
 * file without a name (core's memfd.ts). The plain case, shared anonymous memory only ever mapped
 * shared and held by no fd, stays with the shared-anon kind (anon.ts).
 *
 * A file shared with another process (an fd or a mapping) is refused: it would come back as a copy.
 */
import * as fs from 'fs';
import { CheckpointTask, MemfdDataFields, MemfdFields, MemfdLayouts, ObjectType, checkMemfd, describeHolders, linux, objectType, otherHolders, refuse } from '@cptrst/core';
import { VmaEntry, VmaImage, describeVma, internalShmDev, mappedFile } from './vma';
import { MemfdVma } from './memfd';

/** The file's record, under each VMA of it (core's MemfdFields, no name). */
@objectType(ObjectType.VMA_SHMEM_FILE, 'vma-shmem-file', { parents: [ObjectType.VMA] })
export class VmaShmemFileImage extends MemfdFields {}
/** A data run of the file, under its carrier VMA. */
@objectType(ObjectType.VMA_SHMEM_FILE_DATA, 'vma-shmem-file-data', { parents: [ObjectType.VMA] })
export class VmaShmemFileDataImage extends MemfdDataFields {}
const VMA_SHMEM: MemfdLayouts = { memfd: VmaShmemFileImage, data: VmaShmemFileDataImage, anon: true };

const SHMEM_FILE_PATH = '/dev/zero (deleted)';

let used: Set<bigint> | undefined;
/**
 * The inodes of shared anonymous memory that some process holds as an fd or maps privately: one
 * scan of /proc, kept for the synchronous pass over one task's areas (claims sees only the area).
 */
function usedAsFiles(): Set<bigint> {
  if (used) return used;
  const found = new Set<bigint>();
  const dev = internalShmDev();
  for (const pid of linux.allPids()) {
    try {
      for (const { fd, link } of linux.fdLinks(pid)) {
        try {
          if (link !== SHMEM_FILE_PATH) continue;
          const st = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
          if (st.dev === dev) found.add(st.ino);
        } catch {
          /* closed meanwhile */
        }
      }
      for (const m of linux.readMaps(pid)) {
        if (!m.shared && m.deleted && m.path === '/dev/zero' && linux.makeDev(m.major, m.minor) === dev) found.add(m.inode);
      }
    } catch {
      /* gone, or a kernel thread */
    }
  }
  used = found;
  queueMicrotask(() => {
    used = undefined;
  });
  return found;
}

export class ShmemFileVma extends MemfdVma {
  override readonly kind = 'shmem-file';
  /** Above the shared-anon kind (and the file kind, which claims the private areas to refuse them). */
  override readonly priority = 2;
  override readonly records = [VmaShmemFileImage, VmaShmemFileDataImage];
  protected override readonly layouts = VMA_SHMEM;

  override claims(v: VmaEntry): boolean {
    return v.path === '/dev/zero' && v.deleted && v.inode !== 0n && (!v.shared || usedAsFiles().has(v.inode));
  }

  override describe(task: CheckpointTask, v: VmaEntry, img: VmaImage): void {
    const what = describeVma(v);
    const src = mappedFile(task, v, 'file of shared anonymous memory');
    if (src.stat.dev !== internalShmDev() || src.stat.nlink !== 0n) refuse(task.pid, what, 'an area named /dev/zero (deleted) that is not shared anonymous memory');
    const others = otherHolders(task, { stat: src.stat });
    if (others.length) {
      refuse(task.pid, what, `the file of this shared anonymous memory (held as an fd or mapped privately) is also open or mapped in ${describeHolders(others)}; such a file shared between processes is not supported yet`);
    }
    checkMemfd(task, src, what);
    img.inode = src.stat.ino;
    img.fileDev = src.stat.dev;
    img.fileSize = src.stat.size;
  }
}
