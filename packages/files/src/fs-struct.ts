/**
 * The task's filesystem context: working directory, root and umask, and the list of its fd
 * numbers (so that restart can keep its temporary descriptors clear of them).
 */
import {
  CheckpointContext, CheckpointTask, ObjectType, RestartContext, RestartTask, RestoreObject, linux,
  objectType, refuse, str, u32, u32s,
} from '@cptrst/core';

const { SYS } = linux;
export const FILES_ORDER = 300;

@objectType(ObjectType.FS, 'fs', { parents: [ObjectType.TASK] })
export class FsImage {
  @str() cwd = '';
  @str() root = '/';
  @u32() umask = 0o022;
  @u32s() fds: number[] = [];
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
  ctx.write(img, task.tag);
}

/** Working directory and umask; and the helper's descriptors are closed, the image's come next. */
export function restoreFs(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  const img = o.obj as FsImage;
  const t = task.tracee!;
  t.syscallOk(SYS.close_range, [0, 0xffffffff, 0], 'close_range of the helper\'s descriptors');
  t.syscallOk(SYS.chdir, [t.stage(Buffer.from(img.cwd + '\0'))], `chdir(${img.cwd})`);
  t.syscall(SYS.umask, [img.umask]); // returns the old mask
  task.state.set('files.fs', img);
}
