/**
 * Symbolic links held themselves (open(path, O_PATH|O_NOFOLLOW)): reopened inside the task the
 * same way, by their recorded path, through openRecordedFile, whose openat2 with
 * RESOLVE_NO_SYMLINKS returns the link itself for a trailing link opened O_PATH|O_NOFOLLOW, and
 * refuses a symlink anywhere before it. It must be the same link: its length (the target's
 * length), mtime, and device and inode on the same boot. A link deleted since it was opened is
 * refused: nothing can make the same link again without a name.
 */
import { CheckpointContext, CheckpointTask, RestartContext, RestartTask, linux, openRecordedFile, refuse } from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, requireReachableByPath } from './kinds';
import { FileImage } from './file';
import { recorded } from './fs-struct';

const { O, S_IF } = linux;

export class SymlinkFile implements FileKindHandler {
  readonly kind = 'symlink';
  readonly inFlight = true;
  claims(f: OpenFile): boolean {
    return f.stat.isSymbolicLink() && f.link.startsWith('/');
  }
  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    if (f.stat.nlink === 0n) refuse(task.pid, `fd ${f.fd} (${f.link})`, 'the symbolic link has been deleted; a link without a name cannot be made again');
    requireReachableByPath(task, f);
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    return openRecordedFile(task.tracee!, img.path, {
      // Only O_PATH opens a link itself: that is all such an fd can be.
      flags: O.PATH | O.NOFOLLOW,
      expect: { type: S_IF.LNK, size: img.size, mtimeNs: img.mtimeNs, dev: recorded(img.dev), ino: img.inode },
      sameBoot: ctx.sameBoot,
      object: req.object,
    });
  }
}
