/**
 * Files deleted while open ("ghost files"), as fds: core's deleted-file.ts stores their contents
 * and makes them again without a name; this is the files side of it. One deleted inode open
 * through several open file descriptions is stored once: the later FILE objects name the first
 * one (`sameAs`). An inode the process also maps is stored by its mapping (mm dumps first): the
 * FILE says so (`mapped`) and stores nothing.
 */
import {
  CheckpointTask, CptError, KindRecordWriter, RestartContext, RestartTask, StateKey, checkDeletedFile, checkDeletedRun,
  deletedFileCarried, deletedFilePath, dumpDeletedRuns, linux, makeDeletedFile,
} from '@cptrst/core';
import { FileDataImage, FileImage } from './file';
import { OpenFile, OpenRequest, openInTask, recordedPath, reopenFlags } from './kinds';

/** Checkpoint: what a deleted file needs, refused before anything is written; whether a mapping of the task carries it. */
export function describeGhost(task: CheckpointTask, f: OpenFile, img: FileImage): void {
  const src = { at: `/proc/${task.pid}/fd/${f.fd}`, stat: f.stat, path: recordedPath(f) };
  checkDeletedFile(task, src, `fd ${f.fd} (${f.link})`);
  img.mapped = deletedFileCarried(task, f.stat);
}

/** Checkpoint: FILE_DATA objects for the data runs of a deleted file. */
export function dumpGhostData(task: CheckpointTask, f: OpenFile, out: KindRecordWriter): void {
  const src = { at: `/proc/${task.pid}/fd/${f.fd}`, stat: f.stat, path: recordedPath(f) };
  dumpDeletedRuns(task.pid, src, `fd ${f.fd} (${f.link})`, (offset, data) => {
    const d = new FileDataImage();
    d.offset = offset;
    d.data = data;
    out.write(d);
  });
}

/** Restart: checks one FILE_DATA object against its FILE and the ones before it (EBADIMG). */
export function checkGhostData(pid: number, img: FileImage, before: FileDataImage[], d: FileDataImage, object: string): void {
  if (img.kind !== 'regular' || !img.deleted || img.sameAs !== 0 || img.mapped) {
    throw new CptError('EBADIMG', 'contents of the deleted file: the file carries no contents of its own', { pid, object });
  }
  checkDeletedRun(pid, img.size, before, d, object);
}

/** The deleted inodes made again by FILE objects so far: FILE tag -> the inode's recorded device and number. */
const GHOSTS = new StateKey<Map<number, { dev: bigint; inode: bigint }>>('files.ghosts');

/** Restart: makes a deleted file again (or reaches the one made earlier) and returns an fd with the recorded flags. */
export function openGhost(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
  const ghosts = task.state.ensure(GHOSTS, () => new Map<number, { dev: bigint; inode: bigint }>());
  let at: string;
  if (img.sameAs !== 0) {
    const first = ghosts.get(img.sameAs);
    if (!first) throw new CptError('EBADIMG', `the deleted file is said to be the one of FILE tag ${img.sameAs}, which is no deleted file restored before it`, { pid: task.pid, object: req.object });
    at = deletedFilePath(task, first.dev, first.inode, req.object);
  } else if (img.mapped) {
    at = deletedFilePath(task, img.dev, img.inode, req.object);
  } else {
    const fd = makeDeletedFile(ctx, task, img, req.records.of(FileDataImage), req.above, req.object);
    at = `/proc/self/fd/${fd}`;
  }
  ghosts.set(req.tag, { dev: img.dev, inode: img.inode });
  return reopenGhost(task, at, img, req.object);
}

/** A new open of the unnamed inode, with exactly the recorded flags, and the recorded offset. */
function reopenGhost(task: RestartTask, at: string, img: FileImage, object: string): bigint {
  const flags = reopenFlags(img.flags);
  const r = openInTask(task, at, flags, `reopening the deleted file for ${object}`);
  if (!(flags & linux.O.PATH)) task.tracee!.syscallOk(linux.SYS.lseek, [r, img.pos, linux.SEEK.SET], `lseek of ${object} to ${img.pos}`);
  return r;
}
