/**
 * Open file descriptions (FILE objects) and the fd table (FD objects). Several fds that share
 * one open file description (dup, or inherited) point at one FILE object, and at restart at one
 * opened file, dup'ed to each number: they keep sharing the offset and status flags.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, ObjectType, RecordList, RestartContext, RestartTask,
  RestoreObject, StateKey, bool, bytes, carriedOnlyBy, claim, i32, i64, kindNamed, kindRecordWriter, linux, objectType,
  refuse, requireKindRecord, str, treeTask, u32, u64, fileKey, sameFile,
} from '@cptrst/core';
import { FileKindHandler, FileKinds, OpenFile, fdAt, recordedPath, sameOpenFile } from './kinds';
import { FS_KEY, KEPT_FDS, sharedWithParent } from './fs-struct';

const { SYS, O, F } = linux;

@objectType(ObjectType.FILE, 'file', { parents: [ObjectType.TASK] })
export class FileImage {
  @str() kind = '';
  @str() path = '';
  /** open(2) flags from fdinfo: access mode and status flags. */
  @u32() flags = 0;
  @u64() pos = 0n;
  @u32() mode = 0;
  @u64() rdev = 0n;
  @u64() size = 0n;
  @u64() mtimeNs = 0n;
  @u64() inode = 0n;
  /** The file was deleted while open: its contents follow in FILE_DATA objects. */
  @bool() deleted = false;
  /** st_dev of the file (compared at restart on the same boot, with `inode`). */
  @u64({ since: 2 }) dev = 0n;
  /** Owner and group (a deleted file made again gets them back from a trusted image). */
  @u32({ since: 2 }) uid = 0;
  @u32({ since: 2 }) gid = 0;
  @i64({ since: 2 }) atimeNs = 0n;
  /**
   * A deleted file opened more than once (several open file descriptions of one inode): the tag
   * of the task's earlier FILE that carries the contents; 0 when this one carries them.
   */
  @u32({ since: 2 }) sameAs = 0;
  /**
   * The description is the parent's (the task inherited it, or got it the same way): the parent's
   * fd number that holds it, which the task keeps at restart instead of opening the file again;
   * -1 when the task has it on its own.
   */
  @i32({ since: 4 }) inherited = -1;
  /** A deleted file the process also maps: the mapping's record carries the contents (mm restores first). */
  @bool({ since: 5 }) mapped = false;
}

/** A data run of a deleted file: a record of the regular kind (ghost.ts), under its FILE. */
@objectType(ObjectType.FILE_DATA, 'file-data', { parents: [ObjectType.FILE] })
export class FileDataImage {
  @u64() offset = 0n;
  @bytes() data: Buffer = Buffer.alloc(0);
}

/**
 * The FILE is not open in the task: the task makes its object (a pipe, socket or memfd held by
 * several of its descendants) for them to inherit; it has no FDs. Written after the kind's records.
 */
@objectType(ObjectType.FILE_CARRY, 'file-carry', { parents: [ObjectType.FILE] })
export class FileCarryImage {
  /** The process (of the checkpoint) whose fd the FILE was described from, for messages. */
  @u32() from = 0;
}

@objectType(ObjectType.FD, 'fd', { parents: [ObjectType.FILE] })
export class FdImage {
  @u32() fd = 0;
  @bool() cloexec = false;
}

/** The open files listed by the files check (the task is frozen: later steps use the same list). */
export const OPEN_FILES = new StateKey<OpenFile[]>('files.open');

/** The files check's list of the task's open files, or a fresh one when that check did not run. */
export function frozenOpenFiles(task: CheckpointTask): OpenFile[] {
  return task.state.get(OPEN_FILES) ?? openFiles(task);
}

export function openFiles(task: CheckpointTask): OpenFile[] {
  return linux.listFds(task.pid).map((fd) => {
    const link = linux.readFdLink(task.pid, fd);
    return { fd, link, fdinfo: linux.readFdinfo(task.pid, fd), stat: fs.statSync(`/proc/${task.pid}/fd/${fd}`, { bigint: true }) };
  });
}

export function kindOfFile(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): FileKindHandler {
  const kind = claim(ctx.all(FileKinds), f, task.pid, `fd ${f.fd} (${f.link})`, 'no handler for this kind of file');
  if (f.held && !kind.inFlight) refuse(task.pid, `fd ${f.fd} (${f.link}, in flight in a socket's queue)`, `${kind.kind} files in flight (SCM_RIGHTS) are not supported yet: this kind is described only through an fd of the process itself, and cptrst puts nothing into the process`);
  return kind;
}

/** Groups fds by open file description (kcmp KCMP_FILE), in fd order (files in flight after the task's own). */
function byDescription(pid: number, files: OpenFile[]): OpenFile[][] {
  const groups: OpenFile[][] = [];
  for (const f of files) {
    const g = groups.find((g) => sameFile(g[0].stat, f.stat) && sameOpenFile(fdAt({ pid }, g[0]), fdAt({ pid }, f)));
    if (g) g.push(f);
    else groups.push([f]);
  }
  return groups;
}

/**
 * Puts each open file description after those its kind says must be restored first
 * (restoreAfter), keeping fd order otherwise.
 */
function inRestoreOrder(ctx: CheckpointContext, task: CheckpointTask, groups: OpenFile[][], files: OpenFile[]): OpenFile[][] {
  const groupOf = new Map<number, OpenFile[]>();
  for (const g of groups) for (const f of g) groupOf.set(f.fd, g);
  const needs = new Map<OpenFile[], OpenFile[][]>();
  for (const g of groups) {
    const after = kindOfFile(ctx, task, g[0]).restoreAfter?.(ctx, task, g[0], files) ?? [];
    needs.set(g, after.map((fd) => groupOf.get(fd)).filter((d): d is OpenFile[] => d !== undefined && d !== g));
  }
  const out: OpenFile[][] = [];
  const done = new Set<OpenFile[]>();
  while (out.length < groups.length) {
    const next = groups.find((g) => !done.has(g) && needs.get(g)!.every((d) => done.has(d)));
    if (!next) {
      const left = groups.filter((g) => !done.has(g)).map((g) => `fd ${g[0].fd} (${g[0].link})`).join(', ');
      throw new CptError('EINVAL', `open files that must each be restored before the other: ${left}`, { pid: task.pid, object: 'fd table' });
    }
    done.add(next);
    out.push(next);
  }
  return out;
}

/**
 * The open files of the tasks of a checkpoint checked so far, by pid. The tree is checked parent
 * before children, so a task's parent (if it is in the tree) and every task before it are here.
 */
const CHECKED = new WeakMap<CheckpointContext, Map<number, OpenFile[]>>();

/** The parent's fd that holds the same open file description, or undefined. */
function holderFd(pid: number, f: OpenFile, otherPid: number, others: OpenFile[]): number | undefined {
  return others.find((o) => sameFile(o.stat, f.stat) && sameOpenFile(fdAt({ pid }, f), fdAt({ pid: otherPid }, o)))?.fd;
}

/**
 * Open file descriptions shared between processes of the tree are restored by inheritance: the
 * task keeps its parent's. That holds when the task's parent has the description too; one shared
 * with another process of the tree but not with the parent (the parent closed it, or it was
 * passed over a socket) cannot be made again, and is refused.
 */
export function checkSharedFiles(ctx: CheckpointContext, task: CheckpointTask, files: OpenFile[]): void {
  const checked = CHECKED.get(ctx) ?? new Map<number, OpenFile[]>();
  CHECKED.set(ctx, checked);
  const ppid = linux.readStat(task.pid).ppid;
  const parentFiles = checked.get(ppid);
  for (const f of files) {
    if (parentFiles && holderFd(task.pid, f, ppid, parentFiles) !== undefined) continue;
    for (const [pid, theirs] of checked) {
      const fd = holderFd(task.pid, f, pid, theirs);
      if (fd !== undefined) {
        throw new CptError('EOPNOTSUPP', `fd ${f.fd} (${f.link}) is the open file description of fd ${fd} of process ${pid}, which is not its parent's; only descriptions shared through the parent can be restored`, { pid: task.pid, object: `fd ${f.fd} (${f.link})` });
      }
    }
  }
  checked.set(task.pid, files);
}

/** For each of the task's descriptions that its parent holds too: the parent's fd (by the task's first fd of it). */
export function inheritedDescriptions(ctx: CheckpointContext, task: CheckpointTask, files: OpenFile[]): Map<number, number> {
  const out = new Map<number, number>();
  const ppid = linux.readStat(task.pid).ppid;
  const parentFiles = CHECKED.get(ctx)?.get(ppid);
  if (!parentFiles) return out;
  for (const group of byDescription(task.pid, files)) {
    const fd = holderFd(task.pid, group[0], ppid, parentFiles);
    if (fd !== undefined) out.set(group[0].fd, fd);
  }
  return out;
}

/** The FILE object of an open file, filled by its kind. */
function describedFile(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, kind: FileKindHandler): FileImage {
  const img = new FileImage();
  img.kind = kind.kind;
  img.path = recordedPath(f);
  img.flags = f.fdinfo.flags & ~O.CLOEXEC;
  img.pos = f.fdinfo.pos;
  img.mode = Number(f.stat.mode);
  img.rdev = f.stat.rdev;
  img.size = f.stat.size;
  img.mtimeNs = f.stat.mtimeNs;
  img.atimeNs = f.stat.atimeNs;
  img.inode = f.stat.ino;
  img.dev = f.stat.dev;
  img.uid = Number(f.stat.uid);
  img.gid = Number(f.stat.gid);
  kind.describe(ctx, task, f, img);
  return img;
}

export function dumpFiles(ctx: CheckpointContext, task: CheckpointTask, files: OpenFile[], inheritedFrom = new Map<number, number>()): void {
  if (sharedWithParent(task) & linux.CLONE.FILES) return; // the parent's fd table, written with the parent
  /** Deleted inodes already written: "dev:ino" -> tag of their FILE. */
  const ghosts = new Map<string, number>();
  for (const group of inRestoreOrder(ctx, task, byDescription(task.pid, files), files)) {
    const f = group[0];
    const kind = kindOfFile(ctx, task, f);
    const inherited = inheritedFrom.get(f.fd);
    if (inherited !== undefined) {
      // The parent's description: nothing of the file itself is written again.
      const img = new FileImage();
      img.kind = kind.kind;
      img.path = recordedPath(f);
      img.flags = f.fdinfo.flags & ~O.CLOEXEC;
      img.pos = f.fdinfo.pos;
      img.inherited = inherited;
      const tag = ctx.write(img, task.tag);
      writeFds(ctx, tag, group);
      continue;
    }
    const img = describedFile(ctx, task, f, kind);
    const inode = fileKey(f.stat);
    if (img.deleted) img.sameAs = ghosts.get(inode) ?? 0;
    const tag = ctx.write(img, task.tag);
    if (img.deleted && img.sameAs === 0) ghosts.set(inode, tag);
    kind.dumpRecords?.(ctx, task, f, img, kindRecordWriter(ctx, kind, tag));
    writeFds(ctx, tag, group);
  }
}

/**
 * The objects the task makes at restart for its descendants without holding them (it is the
 * lowest common ancestor of their holders): a FILE described from one holder's fd, with its
 * kind's records (the carrier: the object's contents), and a FILE_CARRY instead of FDs.
 */
export function dumpCarried(ctx: CheckpointContext, task: CheckpointTask): void {
  for (const s of carriedOnlyBy(ctx, task.pid)) {
    const h = s.holders.find((x) => x.fd >= 0 && treeTask(ctx, x.pid));
    const holder = h && treeTask(ctx, h.pid);
    if (!h || !holder) refuse(task.pid, s.key, 'an object shared by its descendants through mappings only cannot be made again');
    const f: OpenFile = {
      fd: h.fd,
      link: linux.readFdLink(h.pid, h.fd),
      fdinfo: linux.readFdinfo(h.pid, h.fd),
      stat: fs.statSync(`/proc/${h.pid}/fd/${h.fd}`, { bigint: true }),
    };
    const kind = kindOfFile(ctx, holder, f);
    if (!kind.carry) refuse(task.pid, s.key, `${kind.kind} files held by several processes cannot be made by their common ancestor`);
    const img = describedFile(ctx, holder, f, kind);
    const tag = ctx.write(img, task.tag);
    kind.dumpRecords?.(ctx, holder, f, img, kindRecordWriter(ctx, kind, tag));
    const carry = new FileCarryImage();
    carry.from = h.pid;
    ctx.write(carry, tag);
  }
}

function writeFds(ctx: CheckpointContext, tag: number, group: OpenFile[]): void {
  for (const member of group) {
    const fd = new FdImage();
    fd.fd = member.fd;
    fd.cloexec = member.held !== undefined || (member.fdinfo.flags & O.CLOEXEC) !== 0;
    ctx.write(fd, tag);
  }
}


interface PendingFile {
  img: FileImage;
  /** Its kind's own records (FILE_DATA of a deleted regular file...), until it is opened. */
  records: RecordList;
  /** Where it is open in the task, above every fd number of the image. */
  fd?: bigint;
  /** Made for the task's descendants only (FILE_CARRY): it has no FDs. */
  carried?: boolean;
}

/** A FILE object, or a record of a file kind under one (before the file's FDs). */
/** A task made with CLONE_FILES has its parent's fd table: an image giving it files of its own is bad. */
function ownTable(task: RestartTask, o: RestoreObject): void {
  if (sharedWithParent(task) & linux.CLONE.FILES) throw new CptError('EBADIMG', `object of type ${o.type} at image offset ${o.offset}: the task shares its parent's fd table and has no files of its own`, { pid: task.pid, object: 'files' });
}

export function restoreFileObject(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  ownTable(task, o);
  const files = fileTable(task);
  if (o.type === ObjectType.FILE) {
    files.set(o.tag, { img: o.obj as FileImage, records: new RecordList() });
    return;
  }
  const what = o.type === ObjectType.FILE_DATA ? 'file data' : `${o.type} object`;
  const f = files.get(o.ptag);
  if (!f) throw new CptError('EBADIMG', `${what} at image offset ${o.offset} belongs to no file`, { pid: task.pid, object: o.type === ObjectType.FILE_DATA ? 'file-data' : 'file' });
  if (f.fd !== undefined || f.carried) throw new CptError('EBADIMG', `${what} at image offset ${o.offset} comes after the file's fds`, { pid: task.pid, object: `file ${f.img.path}` });
  if (o.type === ObjectType.FILE_CARRY) return carryFile(ctx, task, o, f);
  const object = `file ${f.img.path} (${o.type === ObjectType.FILE_DATA ? 'data' : what} at image offset ${o.offset})`;
  const kind = kindNamed(ctx.all(FileKinds), f.img.kind);
  const why = `contents of the ${f.img.kind} file: the file carries no contents of its own of this type (${what})`;
  if (!kind) throw new CptError('EBADIMG', why, { pid: task.pid, object });
  requireKindRecord(kind, o, task.pid, object, why);
  kind.acceptRecord?.(task, f.img, o, f.records, object);
  f.records.all.push(o);
}

/** A FILE_CARRY: the task makes the FILE's object, for its descendants, now. */
function carryFile(ctx: RestartContext, task: RestartTask, o: RestoreObject, f: PendingFile): void {
  const fsImg = task.state.get(FS_KEY);
  const object = `${f.img.kind} ${f.img.path} (made for the descendants of the process)`;
  if (!fsImg) throw new CptError('EBADIMG', `a carried file at image offset ${o.offset} comes before the task's fs object`, { pid: task.pid, object });
  if (f.img.inherited >= 0) throw new CptError('EBADIMG', 'a carried file cannot be inherited', { pid: task.pid, object });
  const kind = kindNamed(ctx.all(FileKinds), f.img.kind);
  if (!kind) throw new CptError('EOPNOTSUPP', `no handler for ${f.img.kind} files is loaded`, { pid: task.pid, object });
  if (!kind.carry) throw new CptError('EBADIMG', `${f.img.kind} files cannot be carried for descendants`, { pid: task.pid, object });
  kind.carry(ctx, task, f.img, { tag: o.ptag, object, records: f.records, above: Math.max(-1, ...fsImg.fds) + 1 });
  f.records.clear();
  f.carried = true;
}

export function restoreFd(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  ownTable(task, o);
  const img = o.obj as FdImage;
  const f = fileTable(task).get(o.ptag);
  const fsImg = task.state.get(FS_KEY);
  if (!f || !fsImg) throw new CptError('EBADIMG', `fd ${img.fd} at image offset ${o.offset} has no file`, { pid: task.pid, object: `fd ${img.fd}` });
  if (f.carried) throw new CptError('EBADIMG', `fd ${img.fd} belongs to a file the task only carries for its descendants`, { pid: task.pid, object: `fd ${img.fd}` });
  if (!fsImg.fds.includes(img.fd)) throw new CptError('EBADIMG', `fd ${img.fd} is not in the task's fd list`, { pid: task.pid, object: `fd ${img.fd}` });
  const t = task.tracee!;
  if (f.fd === undefined && f.img.inherited >= 0) {
    const kept = task.state.get(KEPT_FDS)?.get(f.img.inherited);
    if (kept === undefined) throw new CptError('EBADIMG', `fd ${img.fd} is said to be inherited from the parent's fd ${f.img.inherited}, which the task's fs object does not keep`, { pid: task.pid, object: `fd ${img.fd}` });
    f.fd = kept;
  }
  if (f.fd === undefined) {
    const kind = kindNamed(ctx.all(FileKinds), f.img.kind);
    if (!kind) throw new CptError('EOPNOTSUPP', `no handler for ${f.img.kind} files is loaded`, { pid: task.pid, object: `fd ${img.fd} (${f.img.path})` });
    const above = Math.max(-1, ...fsImg.fds) + 1;
    const opened = kind.open(ctx, task, f.img, { tag: o.ptag, object: `fd ${img.fd} (${f.img.path})`, records: f.records, above });
    f.records.clear(); // used: let it go
    // Moved above the image's fds, and the first copy closed: one batch, which a failed move ends.
    const [moved] = t.syscalls([{ nr: SYS.fcntl, args: [opened, F.DUPFD_CLOEXEC, above] }, { nr: SYS.close, args: [opened] }], { untilError: true });
    if (moved < 0n) throw new CptError(linux.errnoName(Number(-moved)), `fcntl(F_DUPFD_CLOEXEC) of ${f.img.path} failed inside the process: ${linux.errnoName(Number(-moved))}`, { pid: task.pid, object: `fcntl(F_DUPFD_CLOEXEC) of ${f.img.path}` });
    f.fd = moved;
  }
  t.syscallOk(SYS.dup3, [f.fd, img.fd, img.cloexec ? O.CLOEXEC : 0], `dup3 to fd ${img.fd}`);
}

/** The temporary descriptors go (but `keep`, still needed by a later step); only the image's fd numbers stay. */
export function closeTemporaries(task: RestartTask, keep: readonly bigint[] = []): void {
  const fsImg = task.state.get(FS_KEY);
  if (!fsImg) return;
  let from = BigInt(Math.max(-1, ...fsImg.fds) + 1);
  for (const k of [...keep].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (k < from) continue;
    if (k > from) task.tracee!.syscallOk(SYS.close_range, [from, k - 1n, 0], 'close_range of temporary descriptors');
    from = k + 1n;
  }
  task.tracee!.syscallOk(SYS.close_range, [from, 0xffffffff, 0], 'close_range of temporary descriptors');
}

/** The FILE objects read so far, by tag (their FDs and kind records name it). */
const FILE_TABLE = new StateKey<Map<number, PendingFile>>('files.table');
function fileTable(task: RestartTask): Map<number, PendingFile> {
  return task.state.ensure(FILE_TABLE, () => new Map<number, PendingFile>());
}
