/**
 * The task's filesystem context: working directory, root and umask, and the list of its fd
 * numbers (so that restart can keep its temporary descriptors clear of them).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, ObjectType, RestartContext, RestartTask, RestoreObject, frozenStatus, linux,
  RestoreHandler, SHARED_WITH_PARENT, StateKey, bool, i64, inheritCarried, nonCanonicalPath, requireCanonicalPath, keepDeletedFilesAbove, keepMemfdsAbove, objectType, openRecordedFile, refuse, str, u32, u32s, u64, withRootFileIdentity,
} from '@cptrst/core';
import { DeletedDir, deletedDirPath, describeDeletedDir, isDeletedDirLink, openDeletedDir } from './deleted-dir';

const { CLONE, SYS, O, S_IF, F } = linux;

/** CLONE_FILES | CLONE_FS bits the task shares with its parent (made so at restart: nothing of them is restored for it). */
export const sharedWithParent = (task: CheckpointTask | RestartTask): number => task.state.get(SHARED_WITH_PARENT) ?? 0;
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
  /** The parent's fds whose open file descriptions the task shares: kept at restart, the rest closed. */
  @u32s({ since: 4 }) inherited: number[] = [];
  /** Device and inode of the root directory when it is not "/" (a chrooted process). */
  @u64({ since: 5 }) rootDev = 0n;
  @u64({ since: 5 }) rootIno = 0n;
  /** The working directory was removed (cwd ends with " (deleted)"): made again from these (deleted-dir.ts). */
  @bool({ since: 8 }) cwdDeleted = false;
  @u32({ since: 8 }) cwdMode = 0;
  @u32({ since: 8 }) cwdUid = 0;
  @u32({ since: 8 }) cwdGid = 0;
  @i64({ since: 8 }) cwdAtimeNs = 0n;
  @i64({ since: 8 }) cwdMtimeNs = 0n;
}

/** The task's deleted working directory, described at check (the task is frozen: dump writes the same). */
const DELETED_CWD = new StateKey<DeletedDir>('files.deletedCwd');

/** The deleted working directory of the task, described (refused where it cannot be made again). */
function deletedCwd(task: CheckpointTask, cwd: string): DeletedDir {
  const known = task.state.get(DELETED_CWD);
  if (known) return known;
  const held = `/proc/${task.pid}/cwd`;
  const d = describeDeletedDir(task, `cwd ${cwd}`, cwd, fs.statSync(held, { bigint: true }), held);
  task.state.set(DELETED_CWD, d);
  return d;
}

export function fsCheck(task: CheckpointTask): void {
  const root = linux.readRoot(task.pid);
  if (root !== '/') {
    // Made again by chroot at the end of the task's restore: its root must be a directory still
    // reached by that path (the kernel's name for it, as cptrst sees it).
    if (root.endsWith(' (deleted)')) refuse(task.pid, `root ${root}`, 'the root directory of the chrooted process has been deleted');
    const why = nonCanonicalPath(root);
    if (why) refuse(task.pid, `root ${root}`, `the root directory's path cannot be used to reach it again: ${why}`);
    let st: fs.BigIntStats | undefined;
    try {
      st = fs.statSync(root, { bigint: true });
    } catch {
      /* refused below */
    }
    const at = fs.statSync(`/proc/${task.pid}/root`, { bigint: true });
    if (!st || st.dev !== at.dev || st.ino !== at.ino) refuse(task.pid, `root ${root}`, 'the path of the root directory of the chrooted process leads elsewhere now');
    if (sharedWithParent(task) & CLONE.FS) refuse(task.pid, `root ${root}`, 'a chrooted process that shares its fs struct with its parent (CLONE_FS): not supported');
  }
  const cwd = linux.readCwd(task.pid);
  if (isDeletedDirLink(cwd)) deletedCwd(task, cwd);
}

export function dumpFs(ctx: CheckpointContext, task: CheckpointTask, fds: number[], inherited: number[] = []): void {
  const img = new FsImage();
  // An fd table shared with the parent is the parent's: nothing of it is inherited or written.
  img.inherited = sharedWithParent(task) & CLONE.FILES ? [] : inherited;
  img.cwd = linux.readCwd(task.pid);
  img.root = linux.readRoot(task.pid);
  if (img.root !== '/') {
    const rs = fs.statSync(`/proc/${task.pid}/root`, { bigint: true });
    img.rootDev = rs.dev;
    img.rootIno = rs.ino;
  }
  img.umask = frozenStatus(task).umask ?? 0o022;
  img.fds = fds;
  const st = fs.statSync(`/proc/${task.pid}/cwd`, { bigint: true });
  img.cwdDev = st.dev;
  img.cwdIno = st.ino;
  if (isDeletedDirLink(img.cwd)) {
    const d = deletedCwd(task, img.cwd);
    Object.assign(img, { cwdDeleted: true, cwdMode: d.mode, cwdUid: d.uid, cwdGid: d.gid, cwdAtimeNs: d.atimeNs, cwdMtimeNs: d.mtimeNs });
  }
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

/** The fds a task keeps from its parent (FsImage.inherited), by the parent's number: where they are now. */
export const KEPT_FDS = new StateKey<Map<number, bigint>>('files.keptFds');

/** The first task of each restart: the root, whose descriptors are the helper's, never inherited. */
const ROOT = new WeakMap<RestartContext, RestartTask>();

/**
 * The task is a copy of the helper (the root) or of its restored parent: every descriptor goes but
 * the parent's that the image says it shares, which move above the image's fd numbers (where the
 * FDs find them, KEPT_FDS) until they are dup'ed into place.
 */
function keepInherited(ctx: RestartContext, task: RestartTask, img: FsImage): void {
  const t = task.tracee!;
  if (!ROOT.has(ctx)) ROOT.set(ctx, task);
  const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: 'fs' });
  if (img.inherited.length > 0 && ROOT.get(ctx) === task) throw bad('the root task cannot inherit descriptors');
  if (img.inherited.length > 65536 || img.fds.length > 1048576) throw bad('too many descriptors');
  const above = Math.max(-1, ...img.fds) + 1;
  const kept = new Map<number, bigint>();
  for (const fd of img.inherited) {
    if (!Number.isInteger(fd) || fd < 0 || kept.has(fd)) throw bad(`inherited fd ${fd}`);
    const r = t.syscall(SYS.fcntl, [fd, F.DUPFD_CLOEXEC, Math.max(above, 1 + Math.max(...img.inherited))]);
    if (r < 0n) throw new CptError('EBADIMG', `the parent has no fd ${fd} to inherit (${linux.errnoName(Number(-r))})`, { pid: task.pid, object: `fd ${fd}` });
    kept.set(fd, r);
  }
  // Fds made for the image before the fd table (memfds mm made) move above those and stay too.
  const floor = Math.max(above, ...[...kept.values()].map((k) => Number(k) + 1));
  const keep = [...kept.values(), ...keepMemfdsAbove(task, floor), ...keepDeletedFilesAbove(task, floor)];
  // Objects an ancestor made for its descendants (pipes, sockets, memfds held by several of them).
  if (ROOT.get(ctx) !== task) keep.push(...inheritCarried(ctx, task, linux.readStat(task.pid).ppid, Math.max(floor, ...keep.map((k) => Number(k) + 1))));
  // Everything else goes, in the gaps between the kept ones.
  let from = 0n;
  for (const k of keep.sort((a, b) => (a < b ? -1 : 1))) {
    if (k > from) t.syscallOk(SYS.close_range, [from, k - 1n, 0], 'close_range of the helper\'s descriptors');
    from = k + 1n;
  }
  t.syscallOk(SYS.close_range, [from, 0xffffffff, 0], 'close_range of the helper\'s descriptors');
  task.state.set(KEPT_FDS, kept);
}

/** Working directory (opened as a recorded file, then fchdir) and umask; the helper's descriptors are closed, the image's come next. */
export function restoreFs(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  const img = o.obj as FsImage;
  const t = task.tracee!;
  requireOwnerIdentity(ctx, task);
  const shared = sharedWithParent(task);
  task.state.set(FS_KEY, img);
  if (shared & CLONE.FILES) {
    // Made with CLONE_FILES: the table is the parent's, restored already; none of it is closed.
    if (img.inherited.length) throw new CptError('EBADIMG', 'a task sharing its parent\'s fd table inherits no descriptors', { pid: task.pid, object: 'fs' });
    task.state.set(KEPT_FDS, new Map());
  } else {
    keepInherited(ctx, task, img);
  }
  // Made with CLONE_FS: cwd, root and umask are the parent's, restored already.
  if (shared & CLONE.FS) return;
  const object = `cwd ${img.cwd}`;
  if (img.cwdDeleted !== isDeletedDirLink(img.cwd)) throw new CptError('EBADIMG', 'a deleted working directory must be named "PATH (deleted)", and only a deleted one', { pid: task.pid, object });
  const dir = img.cwdDeleted
    ? openDeletedDir(ctx, task, {
      path: deletedDirPath(img.cwd), dev: img.cwdDev, ino: img.cwdIno, mode: img.cwdMode, uid: img.cwdUid, gid: img.cwdGid, atimeNs: img.cwdAtimeNs, mtimeNs: img.cwdMtimeNs,
    }, O.PATH, object)
    : openRecordedFile(t, img.cwd, {
      flags: O.PATH | O.DIRECTORY,
      expect: { type: S_IF.DIR, dev: recorded(img.cwdDev), ino: recorded(img.cwdIno) },
      sameBoot: ctx.sameBoot,
      object,
    });
  try {
    const r = withRootFileIdentity(t, `cwd ${img.cwd}`, () => t.syscall(SYS.fchdir, [dir]));
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `fchdir to ${img.cwd} failed inside the process: ${linux.errnoName(Number(-r))}`, { pid: task.pid, object: `cwd ${img.cwd}` });
  } finally {
    t.syscall(SYS.close, [dir]);
  }
  t.syscall(SYS.umask, [img.umask]); // returns the old mask
}

/** After the files (sockets are bound by path at their finish) and the terminal, before the credentials drop. */
const FS_ROOT_ORDER = 850;

/**
 * The root directory of a chrooted process, set last: every path of the image is the host's (as
 * cptrst read it), so the task opens them all first, then chroots to the recorded directory,
 * which must be the same one (device and inode on the same boot). Only from an image root wrote:
 * chroot into a directory of the image owner's choosing is what setuid programs must not meet
 * (fake /etc files), so a user's image with a root is refused (EPERM).
 */
export class FsRootRestore implements RestoreHandler {
  readonly name = 'files.root';
  readonly order = FS_ROOT_ORDER;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own: the FS object is the files handler's */
  }
  finish(ctx: RestartContext, task: RestartTask): void {
    const img = task.state.get(FS_KEY);
    if (!img || img.root === '/' || sharedWithParent(task) & CLONE.FS) return;
    const object = `root ${img.root}`;
    if (!ctx.imageTrusted) throw new CptError('EPERM', 'a chrooted process is restored only from an image root wrote', { pid: task.pid, object });
    requireCanonicalPath(img.root, task.pid, object);
    const t = task.tracee!;
    const dir = openRecordedFile(t, img.root, { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR, dev: recorded(img.rootDev), ino: recorded(img.rootIno) }, sameBoot: ctx.sameBoot, object });
    try {
      // chroot takes a path: the task's own magic link to the directory it just checked.
      t.syscallOk(SYS.chroot, [t.stage(Buffer.from(`/proc/self/fd/${dir}\0`))], `chroot to ${img.root}`);
    } finally {
      t.syscall(SYS.close, [dir]);
    }
  }
}
