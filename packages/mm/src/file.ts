/**
 * File mappings, private or shared. A private mapping's unmodified pages come back from the
 * file, so the file must be the same one: its kind, size and mtime are checked at restart.
 * Pages the process changed (anonymous copies, pagemap bit 61 clear) go into the image.
 */
import * as fs from 'fs';
import { CheckpointTask, CptError, RestartContext, RestartTask, linux, refuse } from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, describeVma, mapAt } from './vma';
import { applyMadvise } from './madvise';
import { isAnonCopy } from './pages';

const { MAP, PROT, SYS, O } = linux;

export class FileVma implements VmaKindHandler {
  readonly kind = 'file';
  claims(v: VmaEntry): boolean {
    return v.inode !== 0n && v.path.startsWith('/') && !(v.shared && v.path === '/dev/zero' && v.deleted);
  }
  describe(task: CheckpointTask, v: VmaEntry, img: VmaImage): void {
    if (v.deleted) refuse(task.pid, describeVma(v), 'the mapped file has been deleted; deleted mapped files are not supported yet');
    if (v.path.startsWith('/dev/') || v.path.startsWith('/SYSV') || v.path.startsWith('/memfd:')) {
      refuse(task.pid, describeVma(v), 'device, SysV and memfd mappings are not supported yet');
    }
    // The process's view of the file, through its own map_files link (same inode even if renamed).
    const st = fs.statSync(`/proc/${task.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`, { bigint: true });
    if (!st.isFile()) refuse(task.pid, describeVma(v), 'only regular files can be mapped back');
    img.inode = st.ino;
    img.fileSize = st.size;
    img.fileMtimeNs = st.mtimeNs;
  }
  storesPage(pm: bigint): boolean {
    return isAnonCopy(pm);
  }
  map(_ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean): void {
    checkSameFile(task, img);
    const t = task.tracee!;
    const mayWrite = img.shared && img.vmFlags.includes('mw');
    const fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from(img.path + '\0')), (mayWrite ? O.RDWR : O.RDONLY) | O.CLOEXEC, 0], `open of ${img.path}`);
    try {
      const prot = img.prot | (writable ? PROT.WRITE : 0);
      mapAt(task, img, prot, img.shared ? MAP.SHARED : MAP.PRIVATE, fd, img.path);
    } finally {
      t.syscall(SYS.close, [fd]);
    }
    applyMadvise(task, img);
  }
}

export function checkSameFile(task: RestartTask, img: VmaImage): void {
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(img.path, { bigint: true });
  } catch (e) {
    throw new CptError('ENOENT', `the mapped file is gone: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { pid: task.pid, object: describeVma(img) });
  }
  const diffs: string[] = [];
  if (!st.isFile()) diffs.push('it is no longer a regular file');
  if (st.size !== img.fileSize) diffs.push(`size ${st.size} instead of ${img.fileSize}`);
  if (st.mtimeNs !== img.fileMtimeNs) diffs.push(`modified at ${new Date(Number(st.mtimeNs / 1000000n)).toISOString()}, after the checkpoint's ${new Date(Number(img.fileMtimeNs / 1000000n)).toISOString()}`);
  if (diffs.length) throw new CptError('ESTALE', `the mapped file changed since the checkpoint: ${diffs.join(', ')}`, { pid: task.pid, object: describeVma(img) });
}
