/**
 * Directories removed (rmdir) while a process still had them as its working directory or open as
 * an fd: /proc shows `PATH (deleted)`. Such a directory is empty (rmdir takes only empty ones, and
 * nothing can be made in it since), so what it was is its path, mode, owner and times.
 *
 * Restart makes it again at its path, inside the first task that needs it and as that task
 * (mkdirat in the recorded parent directory, opened without symlinks), gives it the recorded
 * mode, owner and times, and opens it for every working directory and fd the image names; once
 * every object is read (before any process runs) cptrst removes it again, through its own
 * descriptor of the parent directory and only if the entry is still the directory it made: the
 * processes then hold `PATH (deleted)` as before, one inode for all of them, as in the original.
 * A failed restart removes it too. The path must be free at restart (EEXIST) and its parent must
 * exist (ENOENT); two deleted directories at one path in one image are refused (EBADIMG).
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointTask, CptError, RestartContext, RestartTask, RestoreHandler, encodeStruct, linux, nonCanonicalPath, openRecordedFile, refuse, requireCanonicalPath, withRootFileIdentity,
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

/** Checkpoint: a deleted directory's description, or a refusal naming it. */
export function describeDeletedDir(task: CheckpointTask, object: string, link: string, st: fs.BigIntStats): DeletedDir {
  const p = link.slice(0, -DELETED.length);
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
  return { path: p, dev: st.dev, ino: st.ino, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), atimeNs: st.atimeNs, mtimeNs: st.mtimeNs };
}

/** A deleted directory made again for a restart, until it is removed. */
interface Made {
  /** The image's identity of it (one path, one directory). */
  dev: bigint;
  ino: bigint;
  /** What was made. */
  madeDev: bigint;
  madeIno: bigint;
  /** cptrst's descriptor of its parent directory, and its name there. */
  parentFd: number;
  name: string;
}

const MADE = new WeakMap<RestartContext, Map<string, Made>>();

/** Removes what was made, where the entry is still that directory. Never throws. */
function removeMade(ctx: RestartContext): void {
  const made = MADE.get(ctx);
  if (!made) return;
  MADE.delete(ctx);
  for (const [p, m] of made) {
    const at = `/proc/self/fd/${m.parentFd}/${m.name}`;
    try {
      const st = fs.lstatSync(at, { bigint: true });
      if (st.isDirectory() && st.dev === m.madeDev && st.ino === m.madeIno) fs.rmdirSync(at);
      else ctx.log.warn(`${p}: not removed, it is no longer the directory made for the restart`);
    } catch (e) {
      ctx.log.warn(`${p}: the directory made for the restart could not be removed: ${(e as Error).message}`);
    } finally {
      fs.closeSync(m.parentFd);
    }
  }
}

function timespecs(atimeNs: bigint, mtimeNs: bigint): Buffer {
  const ts = (ns: bigint) => encodeStruct(linux.Timespec, { sec: ns / 1000000000n, nsec: ns % 1000000000n });
  return Buffer.concat([ts(atimeNs), ts(mtimeNs)]);
}

/** Makes the directory inside the task (first use in this restart). */
function make(ctx: RestartContext, task: RestartTask, d: DeletedDir, object: string): Made {
  const t = task.tracee!;
  const fail = (code: string, why: string) => new CptError(code, `the deleted directory ${d.path} cannot be made again: ${why}`, { pid: task.pid, object });
  const parent = openRecordedFile(t, path.dirname(d.path), { flags: O.PATH | O.DIRECTORY, sameBoot: ctx.sameBoot, object });
  const name = path.basename(d.path);
  let taken: number | undefined;
  try {
    const call = (nr: number, args: Array<number | bigint>) => withRootFileIdentity(t, object, () => t.syscall(nr, args));
    const nameAt = () => t.stage(Buffer.from(name + '\0'));
    const made = call(SYS.mkdirat, [parent, nameAt(), 0o700]);
    if (made < 0n) throw fail(linux.errnoName(Number(-made)), Number(-made) === linux.ERRNO.EEXIST ? 'its path exists' : `mkdir failed inside the process (${linux.errnoName(Number(-made))})`);
    // From here on the directory is the restart's to remove, whatever fails next.
    taken = linux.withFdCopy(task.pid, Number(parent), (fd) => fs.openSync(`/proc/self/fd/${fd}`, O.PATH | O.DIRECTORY | O.CLOEXEC));
    const st = fs.lstatSync(`/proc/self/fd/${taken}/${name}`, { bigint: true });
    const m: Made = { dev: d.dev, ino: d.ino, madeDev: st.dev, madeIno: st.ino, parentFd: taken, name };
    const all = MADE.get(ctx) ?? new Map<string, Made>();
    if (!MADE.has(ctx)) {
      MADE.set(ctx, all);
      ctx.afterRecords(() => removeMade(ctx));
    }
    all.set(d.path, m);
    taken = undefined;
    const own = call(SYS.fchownat, [parent, nameAt(), d.uid, d.gid, AT.SYMLINK_NOFOLLOW]);
    if (own < 0n && (st.uid !== BigInt(d.uid) || st.gid !== BigInt(d.gid))) throw fail(linux.errnoName(Number(-own)), `the restored process may not give it owner ${d.uid}:${d.gid}`);
    const mode = call(SYS.fchmodat, [parent, nameAt(), d.mode]);
    if (mode < 0n) throw fail(linux.errnoName(Number(-mode)), `chmod failed inside the process (${linux.errnoName(Number(-mode))})`);
    const times = call(SYS.utimensat, [parent, nameAt(), t.stage(timespecs(d.atimeNs, d.mtimeNs), 256), AT.SYMLINK_NOFOLLOW]);
    if (times < 0n) throw fail(linux.errnoName(Number(-times)), `its times could not be set (${linux.errnoName(Number(-times))})`);
    return m;
  } finally {
    if (taken !== undefined) fs.closeSync(taken);
    t.syscall(SYS.close, [parent]);
  }
}

/**
 * Restart: an fd inside the task of the deleted directory `d`, made at the first call of a
 * restart and opened again (the same one, checked) at the next.
 */
export function openDeletedDir(ctx: RestartContext, task: RestartTask, d: DeletedDir, flags: number, object: string): bigint {
  requireCanonicalPath(d.path, task.pid, object);
  if (d.path === '/') throw new CptError('EBADIMG', 'a deleted directory at /', { pid: task.pid, object });
  let m = MADE.get(ctx)?.get(d.path);
  if (m && (m.dev !== d.dev || m.ino !== d.ino)) throw new CptError('EBADIMG', `two deleted directories at ${d.path}`, { pid: task.pid, object });
  m ??= make(ctx, task, d, object);
  return openRecordedFile(task.tracee!, d.path, { flags: flags | O.DIRECTORY, expect: { type: S_IF.DIR, dev: m.madeDev, ino: m.madeIno }, sameBoot: true, object });
}

/** Removes the directories made for a failed restart (the entries made, checked to be them). */
export class DeletedDirsRestore implements RestoreHandler {
  readonly name = 'files.deleted-dirs';
  readonly order = 299;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own: the FS object and the FILEs of deleted directories name them */
  }
  abort(ctx: RestartContext): void {
    removeMade(ctx);
  }
}

/** The FILE of a directory deleted while open: made again, opened, removed again (above). */
export class DeletedDirectory implements FileKindHandler {
  readonly kind = 'deleted-directory';
  claims(f: OpenFile): boolean {
    return f.stat.isDirectory() && isDeletedDirLink(f.link);
  }
  describe(_ctx: unknown, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    const d = describeDeletedDir(task, `fd ${f.fd} (${f.link})`, f.link, f.stat);
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
