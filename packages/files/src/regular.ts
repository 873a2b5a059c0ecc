/**
 * Regular files: reopened by path with their flags and put back at their offset. The file must
 * be the same (kind, size, mtime). A file deleted while open has its contents in the image; at
 * restart it is made again, opened, and deleted again.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointContext, CheckpointTask, RestartContext, RestartTask, linux, refuse } from '@cptrst/core';
import { FileKindHandler, OpenFile, changed, openInTask, reopenFlags } from './kinds';
import { FileDataImage, FileImage } from './file';

const { SYS } = linux;
/** Largest deleted file whose contents go into the image. */
export const DELETED_MAX = 256 * 1024 * 1024;
const DATA_CHUNK = 16 * 1024 * 1024;

export class RegularFile implements FileKindHandler {
  readonly kind = 'regular';
  claims(f: OpenFile): boolean {
    return f.stat.isFile() && f.link.startsWith('/');
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    img.deleted = f.stat.nlink === 0n;
    if (img.deleted && f.stat.size > BigInt(DELETED_MAX)) {
      refuse(task.pid, `fd ${f.fd} (${f.link})`, `the deleted file is ${f.stat.size} bytes; at most ${DELETED_MAX} are stored`);
    }
  }

  dumpExtra(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage, fileTag: number): void {
    if (!img.deleted) return;
    // Readable through /proc/PID/fd/N whatever the fd's own access mode.
    const fd = fs.openSync(`/proc/${task.pid}/fd/${f.fd}`, 'r');
    try {
      const size = Number(f.stat.size);
      for (let off = 0; off < size; off += DATA_CHUNK) {
        const chunk = Buffer.alloc(Math.min(DATA_CHUNK, size - off));
        const n = fs.readSync(fd, chunk, 0, chunk.length, off);
        const d = new FileDataImage();
        d.offset = BigInt(off);
        d.data = chunk.subarray(0, n);
        ctx.write(d, fileTag);
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, data: Buffer[]): bigint {
    const t = task.tracee!;
    if (img.deleted) return this.openDeleted(task, img, data);
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(img.path, { bigint: true });
    } catch (e) {
      throw changed(task, img, `it is gone (${(e as NodeJS.ErrnoException).code})`);
    }
    if (!st.isFile()) throw changed(task, img, 'it is no longer a regular file');
    if (st.size !== img.size) throw changed(task, img, `size ${st.size} instead of ${img.size}`);
    if (st.mtimeNs !== img.mtimeNs) throw changed(task, img, 'it was modified after the checkpoint');
    const fd = openInTask(task, img.path, reopenFlags(img.flags), `open of ${img.path}`);
    t.syscallOk(SYS.lseek, [fd, img.pos, 0], `lseek of ${img.path} to ${img.pos}`);
    return fd;
  }

  /** Made again under its old name (or a free name beside it), opened, then unlinked: "(deleted)" as before. */
  private openDeleted(task: RestartTask, img: FileImage, data: Buffer[]): bigint {
    const t = task.tracee!;
    const content = Buffer.concat(data);
    if (BigInt(content.length) !== img.size) throw changed(task, img, `the image holds ${content.length} of its ${img.size} bytes`);
    let where = img.path;
    for (let i = 0; fs.existsSync(where); i++) where = path.join(path.dirname(img.path), `.${path.basename(img.path)}.cptrst-${task.pid}-${i}`);
    fs.writeFileSync(where, content, { mode: img.mode & 0o7777, flag: 'wx' });
    try {
      const fd = openInTask(task, where, reopenFlags(img.flags), `open of the deleted file ${img.path}`);
      t.syscallOk(SYS.lseek, [fd, img.pos, 0], `lseek of ${img.path}`);
      return fd;
    } finally {
      fs.unlinkSync(where);
    }
  }
}
