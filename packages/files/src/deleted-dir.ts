/**
 * Directories removed (rmdir) while a process still had them as its working directory or open as
 * an fd: /proc shows `PATH (deleted)`. Such a directory is empty (rmdir takes only empty ones, and
 * nothing can be made in it since), so what it was is its path, mode, owner and times.
 *
 * Restart makes it again at its path, inside the first task that needs it and as that task
 * (mkdirat in the recorded parent directory, opened without symlinks), gives it the recorded
 * mode, owner and times, opens it (O_PATH) and removes it again at once (cptrst, through the
 * task's fd of the parent, only if the entry is still the directory made): it is visible for a
 * few calls only, and the task holds `PATH (deleted)` as before. cptrst keeps a copy of that fd
 * until every object is read, and hands it (SCM_RIGHTS) to each other working directory or fd of
 * the image that names the same directory: one inode for all of them, as in the original. The
 * path must be free at restart (EEXIST) and its parent must exist (ENOENT); two deleted
 * directories at one path in one image are refused (EBADIMG).
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointTask, CptError, RestartContext, RestartTask, RestoreHandler, encodeStruct, linux, nonCanonicalPath, openRecordedFile, refuse, requireCanonicalPath, withFdChannel,
  withRootFileIdentity,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, reopenFlags } from './kinds';
import { FileImage } from './file';

const { AT, O, S_IF, SEEK, SYS } = linux;
const DELETED = ' (deleted)';

/** What a deleted directory is made again from. */
export interface DeletedDir {
  /** Its path, without " (deleted)". */
  path: string;
  dev: bigint;
  ino: bigint;
  /** Permission bits (and setgid, sticky). */
  mode: number;
  uid: number;
  gid: number;
  atimeNs: bigint;
  mtimeNs: bigint;
}

export const isDeletedDirLink = (link: string): boolean => link.startsWith('/') && link.endsWith(DELETED);
/** The path of a deleted directory's link (isDeletedDirLink), without " (deleted)". */
export const deletedDirPath = (link: string): string => link.slice(0, -DELETED.length);

/** Checkpoint: a deleted directory's description (`held`: a /proc path of it), or a refusal naming it. */
export function describeDeletedDir(task: CheckpointTask, object: string, link: string, st: fs.BigIntStats, held: string): DeletedDir {
  const p = deletedDirPath(link);
  const why = nonCanonicalPath(p);
  if (why) refuse(task.pid, object, `the deleted directory's path cannot be used to make it again: ${why}`);
  if (p === '/') refuse(task.pid, object, 'the deleted directory is the root directory');
  let parent: fs.Stats | undefined;
  try {
    parent = fs.lstatSync(path.dirname(p));
  } catch {
    /* refused below */
  }
  if (!parent?.isDirectory()) refuse(task.pid, object, `the deleted directory's parent ${path.dirname(p)} is gone too (or is no directory)`);
  // Made again with mkdir: only where mkdir makes a plain directory (not /proc's, sysfs', cgroupfs'...).
  const fd = fs.openSync(held, O.PATH | O.CLOEXEC);
  try {
    if (!linux.onLocalFilesystem(fd)) refuse(task.pid, object, 'the deleted directory is on a filesystem where it cannot be made again with mkdir (only tmpfs, ext4, xfs, btrfs, overlayfs)');
  } finally {
    fs.closeSync(fd);
  }
  return { path: p, dev: st.dev, ino: st.ino, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), atimeNs: st.atimeNs, mtimeNs: st.mtimeNs };
}

/** A deleted directory made again for a restart (and removed again at once): cptrst's fd of it. */
interface Made {
  /** The image's identity of it (one path, one directory). */
  dev: bigint;
  ino: bigint;
  /** What was made. */
  madeDev: bigint;
  madeIno: bigint;
  /** cptrst's O_PATH descriptor of it, handed to each task that holds it. */
  fd: number;
}

const MADE = new WeakMap<RestartContext, Map<string, Made>>();

/** Closes cptrst's descriptors of the directories made (removed already). Never throws. */
function closeMade(ctx: RestartContext): void {
  for (const m of MADE.get(ctx)?.values() ?? []) {
    try {
      fs.closeSync(m.fd);
    } catch {
      /* closed */
    }
  }
  MADE.delete(ctx);
}

function timespecs(atimeNs: bigint, mtimeNs: bigint): Buffer {
  const ts = (ns: bigint) => encodeStruct(linux.Timespec, { sec: ns / 1000000000n, nsec: ns % 1000000000n });
  return Buffer.concat([ts(atimeNs), ts(mtimeNs)]);
}

/**
 * Makes the directory inside the task (its first use in this restart) and removes it again at
 * once: the task keeps an O_PATH fd of it (returned), cptrst a copy. Only the few calls between
 * mkdir and rmdir leave it visible; a failure among them removes it before throwing.
 */
function make(ctx: RestartContext, task: RestartTask, d: DeletedDir, object: string): { made: Made; inTask: bigint } {
  const t = task.tracee!;
  const fail = (code: string, why: string) => new CptError(code, `the deleted directory ${d.path} cannot be made again: ${why}`, { pid: task.pid, object });
  const parent = openRecordedFile(t, path.dirname(d.path), { flags: O.PATH | O.DIRECTORY, sameBoot: ctx.sameBoot, object });
  const name = path.basename(d.path);
  const call = (nr: number, args: Array<number | bigint>) => withRootFileIdentity(t, object, () => t.syscall(nr, args));
  const nameAt = () => t.stage(Buffer.from(name + '\0'));
  try {
    const r = call(SYS.mkdirat, [parent, nameAt(), 0o700]);
    if (r < 0n) throw fail(linux.errnoName(Number(-r)), Number(-r) === linux.ERRNO.EEXIST ? 'its path exists' : `mkdir failed inside the process (${linux.errnoName(Number(-r))})`);
    // The entry is removed (by cptrst, through the task's fd of the parent, and only if it is the
    // directory made) whatever happens next.
    return linux.withFdCopy(task.pid, Number(parent), (parentCopy) => {
      const at = `/proc/self/fd/${parentCopy}/${name}`;
      const st = fs.lstatSync(at, { bigint: true });
      let inTask: bigint | undefined;
      let fd: number | undefined;
      try {
        inTask = openRecordedFile(t, d.path, { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR, dev: st.dev, ino: st.ino }, sameBoot: true, object });
        const own = call(SYS.fchownat, [parent, nameAt(), d.uid, d.gid, AT.SYMLINK_NOFOLLOW]);
        if (own < 0n && (st.uid !== BigInt(d.uid) || st.gid !== BigInt(d.gid))) throw fail(linux.errnoName(Number(-own)), `the restored process may not give it owner ${d.uid}:${d.gid}`);
        const mode = call(SYS.fchmodat, [parent, nameAt(), d.mode]);
        if (mode < 0n) throw fail(linux.errnoName(Number(-mode)), `chmod failed inside the process (${linux.errnoName(Number(-mode))})`);
        const times = call(SYS.utimensat, [parent, nameAt(), t.stage(timespecs(d.atimeNs, d.mtimeNs), 256), AT.SYMLINK_NOFOLLOW]);
        if (times < 0n) throw fail(linux.errnoName(Number(-times)), `its times could not be set (${linux.errnoName(Number(-times))})`);
        fd = linux.fdCopyOf(task.pid, Number(inTask));
        const made: Made = { dev: d.dev, ino: d.ino, madeDev: st.dev, madeIno: st.ino, fd };
        return { made, inTask };
      } catch (e) {
        if (inTask !== undefined) t.syscall(SYS.close, [inTask]);
        if (fd !== undefined) fs.closeSync(fd);
        throw e;
      } finally {
        const now = fs.lstatSync(at, { bigint: true, throwIfNoEntry: false });
        if (now?.isDirectory() && now.dev === st.dev && now.ino === st.ino) fs.rmdirSync(at);
      }
    });
  } finally {
    t.syscall(SYS.close, [parent]);
  }
}

/**
 * Restart: an fd inside the task of the deleted directory `d` (with `flags`): made and removed at
 * the first call of a restart, handed over from cptrst's fd of it at the next (the same inode).
 */
export function openDeletedDir(ctx: RestartContext, task: RestartTask, d: DeletedDir, flags: number, object: string): bigint {
  requireCanonicalPath(d.path, task.pid, object);
  if (d.path === '/') throw new CptError('EBADIMG', 'a deleted directory at /', { pid: task.pid, object });
  const t = task.tracee!;
  const all = MADE.get(ctx) ?? new Map<string, Made>();
  let m = all.get(d.path);
  if (m && (m.dev !== d.dev || m.ino !== d.ino)) throw new CptError('EBADIMG', `two deleted directories at ${d.path}`, { pid: task.pid, object });
  let held: bigint;
  if (m) {
    const got = withFdChannel(t, object, `the deleted directory ${d.path}`, (give) => give([m!.fd]));
    if (got.fds.length !== 1) throw new CptError('EMFILE', `the deleted directory ${d.path} could not be handed to the process`, { pid: task.pid, object });
    held = BigInt(got.fds[0]);
  } else {
    const first = make(ctx, task, d, object);
    m = first.made;
    held = first.inTask;
    if (!MADE.has(ctx)) {
      MADE.set(ctx, all);
      ctx.afterRecords(() => closeMade(ctx));
    }
    all.set(d.path, m);
  }
  try {
    // "." opens a removed directory again with the file's own flags.
    const r = t.syscall(SYS.openat, [held, t.stage(Buffer.from('.\0')), (flags | O.DIRECTORY) & ~O.CREAT, 0]);
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `the deleted directory ${d.path} could not be opened inside the process (${linux.errnoName(Number(-r))})`, { pid: task.pid, object });
    return r;
  } finally {
    t.syscall(SYS.close, [held]);
  }
}

/** Closes cptrst's fds of the directories made for a failed restart (they were removed when made). */
export class DeletedDirsRestore implements RestoreHandler {
  readonly name = 'files.deleted-dirs';
  readonly order = 299;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own: the FS object and the FILEs of deleted directories name them */
  }
  abort(ctx: RestartContext): void {
    closeMade(ctx);
  }
}

/** The FILE of a directory deleted while open: made again, opened, removed again (above). */
export class DeletedDirectory implements FileKindHandler {
  readonly kind = 'deleted-directory';
  claims(f: OpenFile): boolean {
    return f.stat.isDirectory() && isDeletedDirLink(f.link);
  }
  describe(_ctx: unknown, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    const d = describeDeletedDir(task, `fd ${f.fd} (${f.link})`, f.link, f.stat, `/proc/${task.pid}/fd/${f.fd}`);
    img.path = d.path;
    img.mode = d.mode;
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const flags = reopenFlags(img.flags);
    const d: DeletedDir = { path: img.path, dev: img.dev, ino: img.inode, mode: img.mode & 0o7777, uid: img.uid, gid: img.gid, atimeNs: img.atimeNs, mtimeNs: img.mtimeNs };
    const fd = openDeletedDir(ctx, task, d, flags, req.object);
    // Directory offsets are cookies of the filesystem; rewinding to them is what seekdir does.
    if (!(flags & O.PATH)) task.tracee!.syscall(SYS.lseek, [fd, img.pos, SEEK.SET]);
    return fd;
  }
}
