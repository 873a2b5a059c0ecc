/**
 * Character devices (/dev/null, /dev/zero, /dev/urandom...) and directories: reopened inside the
 * task by their recorded path through openRecordedFile, which checks that it is the same device
 * number (or a directory), and device and inode on the same boot.
 */
import { CheckpointContext, CheckpointTask, RestartContext, RestartTask, linux, openRecordedFile, refuse } from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, reopenFlags, requireReachableByPath } from './kinds';
import { FileImage } from './file';
import { recorded } from './fs-struct';

const { SYS, O, SEEK, S_IF } = linux;
/**
 * Terminals the tty kinds (tty.ts) do not take: serial lines and virtual consoles (4), /dev/console
 * and a pty master or /dev/tty they refused to claim (5), a pty slave they did not claim (136-143).
 */
const TTY_MAJORS = new Set([4, 5, 136, 137, 138, 139, 140, 141, 142, 143]);

export class CharDevice implements FileKindHandler {
  readonly kind = 'chardev';
  readonly inFlight = true;
  claims(f: OpenFile): boolean {
    return f.stat.isCharacterDevice() && f.link.startsWith('/dev/');
  }
  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    const major = Number((f.stat.rdev >> 8n) & 0xfffn);
    if (TTY_MAJORS.has(major)) refuse(task.pid, `fd ${f.fd} (${f.link})`, 'this kind of terminal is not supported (only ptys whose master is in the tree, /dev/tty, and with --shell-job the terminal the tree runs on)');
    requireReachableByPath(task, f);
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    return openRecordedFile(task.tracee!, img.path, {
      flags: reopenFlags(img.flags),
      expect: { type: S_IF.CHR, rdev: img.rdev, dev: recorded(img.dev), ino: img.inode },
      sameBoot: ctx.sameBoot,
      object: req.object,
    });
  }
}

/** Directories (an fd from opendir, or O_PATH): reopened by path, at their directory offset. */
export class Directory implements FileKindHandler {
  readonly kind = 'directory';
  readonly inFlight = true;
  claims(f: OpenFile): boolean {
    return f.stat.isDirectory() && f.link.startsWith('/') && !f.link.endsWith(' (deleted)');
  }
  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    requireReachableByPath(task, f);
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const flags = reopenFlags(img.flags) | O.DIRECTORY;
    const fd = openRecordedFile(task.tracee!, img.path, {
      flags,
      expect: { type: S_IF.DIR, dev: recorded(img.dev), ino: img.inode },
      sameBoot: ctx.sameBoot,
      object: req.object,
    });
    // Directory offsets are cookies of the filesystem; rewinding to them is what seekdir does.
    if (!(flags & O.PATH)) task.tracee!.syscall(SYS.lseek, [fd, img.pos, SEEK.SET]);
    return fd;
  }
}
