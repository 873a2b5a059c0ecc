/**
 * Files deleted while open ("ghost files"), as fds: core's deleted-file.ts stores their contents
 * and makes them again without a name; this is the files side of it. One deleted inode open
 * through several open file descriptions is stored once: the later FILE objects name the first
 * one (`sameAs`). An inode the process also maps is stored by its mapping (mm dumps first): the
 * FILE says so (`mapped`) and stores nothing.
 *
 * One deleted inode open in several processes of the tree, through descriptions of their own, is
 * one inode again: every FILE of it has a GHOST_SHARED record naming the lowest common ancestor
 * of its holders (core's holders.ts), which must hold an fd of it. That process makes it (its
 * first FILE of it carries the contents) and keeps the creating fd as a carried fd; its
 * descendants get that fd by clone and open their descriptions from it. Refused: such an inode
 * that a process of the tree maps, or that the common ancestor does not hold.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, StateKey, carriedIn, checkDeletedFile, checkDeletedRun,
  deletedFileCarried, deletedFilePath, describeHolders, dumpDeletedRuns, fdLocation, linux, makeDeletedFile, objectType, refuse, shareOf, u32,
} from '@cptrst/core';
import { FileDataImage, FileImage } from './file';
import { OpenFile, OpenRequest, openInTask, procFdPath, recordedPath, reopenFlags, sameOpenFile } from './kinds';

/** Under each FILE of a deleted inode open in several processes of the tree: who makes it. */
@objectType(ObjectType.GHOST_SHARED, 'ghost-shared', { parents: [ObjectType.FILE] })
export class GhostSharedImage {
  /** The process that makes the inode at restart (the common ancestor of its holders). */
  @u32() maker = 0;
}

/** Checkpoint: what a deleted file needs, refused before anything is written; whether a mapping of the task carries it. */
export function describeGhost(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void {
  const src = { at: procFdPath(task, f), stat: f.stat, path: recordedPath(f) };
  checkDeletedFile(task, src, `fd ${f.fd} (${f.link})`);
  img.mapped = deletedFileCarried(task, f.stat);
  ghostMaker(ctx, task, f, img);
}

/**
 * The process of the tree that makes a deleted inode other processes of the tree hold too
 * (undefined when only the task holds it); refuses what cannot be made once for all.
 */
export function ghostMaker(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): number | undefined {
  const { shared } = shareOf(ctx, task, { stat: f.stat });
  if (!shared || !ownDescriptions(shared.holders)) return undefined;
  const object = `fd ${f.fd} (${f.link})`;
  const mapped = shared.holders.filter((h) => h.fd < 0);
  if (mapped.length || img.mapped) refuse(task.pid, object, `the deleted file is open in several processes of the tree (${describeHolders(shared.holders)}) and mapped${mapped.length ? ` in ${describeHolders(mapped)}` : ' too'}; not supported`);
  if (!shared.holders.some((h) => h.pid === shared.maker && h.fd >= 0)) {
    refuse(task.pid, object, `the deleted file is open in several processes of the tree (${describeHolders(shared.holders)}) and not in their common ancestor ${shared.maker}, which would make it again; not supported`);
  }
  return shared.maker;
}

/**
 * Whether some process of the tree holds the inode through a description another holder does
 * not have: only then is it made once for all. Descriptions that all come from one process
 * (inherited) are restored by inheritance, each process's mappings as they always are.
 */
function ownDescriptions(holders: readonly { pid: number; fd: number }[]): boolean {
  const byPid = new Map<number, number[]>();
  for (const h of holders) if (h.fd >= 0) byPid.set(h.pid, [...(byPid.get(h.pid) ?? []), h.fd]);
  // An fd in flight is read where cptrst holds it (fdLocation).
  const same = (p: number, a: number, q: number, b: number) => sameOpenFile(fdLocation(p, a), fdLocation(q, b));
  for (const [p, fds] of byPid) {
    for (const [q, theirs] of byPid) {
      if (p !== q && fds.some((a) => !theirs.some((b) => same(p, a, q, b)))) return true;
    }
  }
  return false;
}

/** Checkpoint: the GHOST_SHARED record of a FILE of a deleted inode the tree shares. */
export function ghostSharedRecord(maker: number): GhostSharedImage {
  const rec = new GhostSharedImage();
  rec.maker = maker;
  return rec;
}

/** Checkpoint: FILE_DATA objects for the data runs of a deleted file. */
export function dumpGhostData(task: CheckpointTask, f: OpenFile, out: KindRecordWriter): void {
  const src = { at: procFdPath(task, f), stat: f.stat, path: recordedPath(f) };
  dumpDeletedRuns(task.pid, src, `fd ${f.fd} (${f.link})`, (offset, data) => {
    const d = new FileDataImage();
    d.offset = offset;
    d.data = data;
    out.write(d);
  });
}

/** Restart: checks one FILE_DATA object against its FILE and the ones before it (EBADIMG). */
export function checkGhostData(pid: number, img: FileImage, before: FileDataImage[], d: FileDataImage, object: string, maker?: number): void {
  if (img.kind !== 'regular' || !img.deleted || img.sameAs !== 0 || img.mapped || (maker !== undefined && maker !== pid)) {
    throw new CptError('EBADIMG', 'contents of the deleted file: the file carries no contents of its own', { pid, object });
  }
  checkDeletedRun(pid, img.size, before, d, object);
}

/** The deleted inodes made again by FILE objects so far: FILE tag -> the inode's recorded device and number (and where an ancestor's carried fd reaches it). */
const GHOSTS = new StateKey<Map<number, { dev: bigint; inode: bigint; at?: string }>>('files.ghosts');

/** The id of a deleted inode among the objects a process carries for its descendants. */
const carryId = (img: FileImage) => `ghost:${img.dev}:${img.inode}`;

/** Restart: makes a deleted file again (or reaches the one made earlier) and returns an fd with the recorded flags. */
export function openGhost(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
  const ghosts = task.state.ensure(GHOSTS, () => new Map<number, { dev: bigint; inode: bigint; at?: string }>());
  const share = req.records.of(GhostSharedImage);
  if (share.length > 1) throw new CptError('EBADIMG', 'the deleted file has more than one ghost-shared record', { pid: task.pid, object: req.object });
  const maker = share[0]?.maker;
  let at: string;
  let carried: string | undefined;
  if (img.sameAs !== 0) {
    const first = ghosts.get(img.sameAs);
    if (!first || first.dev !== img.dev || first.inode !== img.inode) throw new CptError('EBADIMG', `the deleted file is said to be the one of FILE tag ${img.sameAs}, which is no deleted file restored before it`, { pid: task.pid, object: req.object });
    at = first.at ?? deletedFilePath(task, first.dev, first.inode, req.object);
    carried = first.at;
  } else if (maker !== undefined && maker !== task.pid) {
    // Made by an ancestor: the fd it carries for its descendants, which this task got by clone.
    const c = carriedIn(ctx, task.pid).get(carryId(img));
    if (!c || (c.shared as { maker?: number }).maker !== maker) throw new CptError('EBADIMG', `the deleted file is said to be made by process ${maker}, which made none of this inode for its descendants`, { pid: task.pid, object: req.object });
    at = carried = `/proc/self/fd/${c.fds[0]}`;
  } else if (img.mapped) {
    if (maker !== undefined) throw new CptError('EBADIMG', 'a deleted file shared in the tree cannot be carried by a mapping', { pid: task.pid, object: req.object });
    at = deletedFilePath(task, img.dev, img.inode, req.object);
  } else {
    const fd = makeDeletedFile(ctx, task, img, req.records.of(FileDataImage), req.above, req.object);
    at = `/proc/self/fd/${fd}`;
    // Its descendants that hold the inode too open it from this fd (kept until the files' end).
    if (maker !== undefined) carriedIn(ctx, task.pid).set(carryId(img), { fds: [fd], shared: { maker: task.pid } });
  }
  ghosts.set(req.tag, { dev: img.dev, inode: img.inode, at: carried });
  return reopenGhost(task, at, img, req.object);
}

/** A new open of the unnamed inode, with exactly the recorded flags, and the recorded offset. */
function reopenGhost(task: RestartTask, at: string, img: FileImage, object: string): bigint {
  const flags = reopenFlags(img.flags);
  const r = openInTask(task, at, flags, `reopening the deleted file for ${object}`);
  if (!(flags & linux.O.PATH)) task.tracee!.syscallOk(linux.SYS.lseek, [r, img.pos, linux.SEEK.SET], `lseek of ${object} to ${img.pos}`);
  return r;
}
