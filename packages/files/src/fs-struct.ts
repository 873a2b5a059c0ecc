/**
 * The task's filesystem context: working directory, root and umask, and the list of its fd
 * numbers (so that restart can keep its temporary descriptors clear of them).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, ObjectType, RestartContext, RestartTask, RestoreObject, linux,
  StateKey, keepMemfdsAbove, objectType, openRecordedFile, refuse, str, u32, u32s, u64,
} from '@cptrst/core';

const { SYS, O, S_IF } = linux;
export const FILES_ORDER = 300;

@objectType(ObjectType.FS, 'fs', { parents: [ObjectType.TASK] })
export class FsImage {
  @str() cwd = '';
  @str() root = '/';
  @u32() umask = 0o022;
  @u32s() fds: number[] = [];
  /** Device and inode of the working directory (compared at restart on the same boot). */
  @u64({ since: 2 }) cwdDev = 0n;
  @u64({ since: 2 }) cwdIno = 0n;
}

export function fsCheck(task: CheckpointTask): void {
  const root = linux.readRoot(task.pid);
  if (root !== '/') refuse(task.pid, `root ${root}`, 'the process is chrooted; a root other than / is not supported yet');
  const cwd = linux.readCwd(task.pid);
  if (cwd.endsWith(' (deleted)')) refuse(task.pid, `cwd ${cwd}`, 'the working directory has been deleted');
}

export function dumpFs(ctx: CheckpointContext, task: CheckpointTask, fds: number[]): void {
  const img = new FsImage();
  img.cwd = linux.readCwd(task.pid);
  img.root = linux.readRoot(task.pid);
  img.umask = linux.readStatus(task.pid).umask ?? 0o022;
  img.fds = fds;
  const st = fs.statSync(`/proc/${task.pid}/cwd`, { bigint: true });
  img.cwdDev = st.dev;
  img.cwdIno = st.ino;
  ctx.write(img, task.tag);
}

/**
 * The restored task opens the image's files with its own identity; for an image that root did not
 * write, that identity must be the image owner's by now (no file-related capability, fsuid the
 * owner's), or the task could open what the owner may not.
 */
function requireOwnerIdentity(ctx: RestartContext, task: RestartTask): void {
  if (ctx.imageTrusted) return;
  const st = linux.readStatus(task.pid);
  const fsuid = st.uid[3];
  const caps = st.capEff & linux.CAP_FS_MASK;
  if (fsuid !== ctx.imageOwner.uid || caps !== 0n) {
    throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, but the restored process would open its files as fsuid ${fsuid}` +
      (caps ? ` with capabilities 0x${caps.toString(16)} that bypass file permissions` : ''), { pid: task.pid, object: 'files' });
  }
}

/** The FS object read at restart: the fd numbers of the image, checked by each FD. */
export const FS_KEY = new StateKey<FsImage>('files.fs');

/** A device or inode number the image recorded; 0 is an image from before they were recorded. */
export const recorded = (n: bigint): bigint | undefined => (n === 0n ? undefined : n);

/** Working directory (opened as a recorded file, then fchdir) and umask; the helper's descriptors are closed, the image's come next. */
export function restoreFs(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  const img = o.obj as FsImage;
  const t = task.tracee!;
  requireOwnerIdentity(ctx, task);
  // The helper's fds go; fds made for the image before the fd table (memfds mm made) move above the image's and stay.
  let from = 0n;
  for (const keep of keepMemfdsAbove(task, Math.max(-1, ...img.fds) + 1)) {
    if (keep > from) t.syscallOk(SYS.close_range, [from, keep - 1n, 0], 'close_range of the helper\'s descriptors');
    from = keep + 1n;
  }
  t.syscallOk(SYS.close_range, [from, 0xffffffff, 0], 'close_range of the helper\'s descriptors');
  const dir = openRecordedFile(t, img.cwd, {
    flags: O.PATH | O.DIRECTORY,
    expect: { type: S_IF.DIR, dev: recorded(img.cwdDev), ino: recorded(img.cwdIno) },
    sameBoot: ctx.sameBoot,
    object: `cwd ${img.cwd}`,
  });
  try {
    t.syscallOk(SYS.fchdir, [dir], `fchdir to ${img.cwd}`);
  } finally {
    t.syscall(SYS.close, [dir]);
  }
  t.syscall(SYS.umask, [img.umask]); // returns the old mask
  task.state.set(FS_KEY, img);
}
