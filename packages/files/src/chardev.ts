/** Character devices (/dev/null, /dev/zero, /dev/urandom...): reopened by path, the same device number checked. */
import { CheckpointContext, CheckpointTask, RestartContext, RestartTask, refuse } from '@cptrst/core';
import * as fs from 'fs';
import { FileKindHandler, OpenFile, changed, openInTask, reopenFlags } from './kinds';
import { FileImage } from './file';

/** Terminals need their session and foreground group restored too: not yet. */
const TTY_MAJORS = new Set([4, 5, 136]);

export class CharDevice implements FileKindHandler {
  readonly kind = 'chardev';
  claims(f: OpenFile): boolean {
    return f.stat.isCharacterDevice() && f.link.startsWith('/dev/');
  }
  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    const major = Number((f.stat.rdev >> 8n) & 0xfffn);
    if (TTY_MAJORS.has(major)) refuse(task.pid, `fd ${f.fd} (${f.link})`, 'terminals are not supported yet');
  }
  open(_ctx: RestartContext, task: RestartTask, img: FileImage): bigint {
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(img.path, { bigint: true });
    } catch {
      throw changed(task, img, 'the device node is gone');
    }
    if (!st.isCharacterDevice() || st.rdev !== img.rdev) throw changed(task, img, `it is not the same device (rdev ${st.rdev}, was ${img.rdev})`);
    return openInTask(task, img.path, reopenFlags(img.flags), `open of ${img.path}`);
  }
}

/** Directories (an fd from opendir, or O_PATH): reopened by path. */
export class Directory implements FileKindHandler {
  readonly kind = 'directory';
  claims(f: OpenFile): boolean {
    return f.stat.isDirectory() && f.link.startsWith('/') && !f.link.endsWith(' (deleted)');
  }
  describe(): void {}
  open(_ctx: RestartContext, task: RestartTask, img: FileImage): bigint {
    if (!fs.existsSync(img.path) || !fs.statSync(img.path).isDirectory()) throw changed(task, img, 'the directory is gone');
    const fd = openInTask(task, img.path, reopenFlags(img.flags), `open of ${img.path}`);
    // Directory offsets are cookies of the filesystem; rewinding to them is what seekdir does.
    task.tracee!.syscall(8 /* lseek */, [fd, img.pos, 0]);
    return fd;
  }
}
