/**
 * Kinds of open file. Each fd's open file must be claimed by a registered FileKind handler
 * (deny by default: pipes, sockets, eventfds... are refused until a handler exists).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, KindHandler, KindRecordWriter, KindRecords, RestartContext, RestartTask, RestoreObject, StateKey, Token,
  Tokens, fdLocation, linux, nonCanonicalPath, refuse,
} from '@cptrst/core';
import type { FileImage } from './file';

/** An open file as /proc shows it at checkpoint. */
export interface OpenFile {
  fd: number;
  /** readlink of /proc/PID/fd/N */
  link: string;
  fdinfo: linux.FdInfo;
  /** stat through /proc/PID/fd/N (the file itself, even if deleted or renamed) */
  stat: fs.BigIntStats;
  /**
   * A file in flight in a queue of one of the task's sockets (unix-scm.ts): not in the task's fd
   * table but held by cptrst, at fd `held.fd` of process `held.pid`, where it is read (link,
   * fdinfo, stat, a copy, kcmp). `fd` is the number the task holds it at in the image.
   */
  held?: { pid: number; fd: number };
}

/** Where an open file is read: the task's fd, or cptrst's fd of a file in flight. */
export function fdAt(task: { pid: number }, f: OpenFile): { pid: number; fd: number } {
  return f.held ?? fdLocation(task.pid, f.fd);
}

/** /proc/PID/fd/N of an open file, where it is read (fdAt). */
export function procFdPath(task: { pid: number }, f: OpenFile): string {
  const at = fdAt(task, f);
  return `/proc/${at.pid}/fd/${at.fd}`;
}

/** Runs `use` on cptrst's copy of an open file (the same open file description), closed afterwards. */
export function withOpenFileCopy<T>(task: { pid: number }, f: OpenFile, use: (copy: number) => T): T {
  const at = fdAt(task, f);
  return linux.withFdCopy(at.pid, at.fd, use);
}

/** Whether two open files (of two tasks, or files in flight) are one open file description (kcmp KCMP_FILE). */
export function sameOpenFile(a: { pid: number; fd: number }, b: { pid: number; fd: number }): boolean {
  try {
    return linux.kcmp(a.pid, b.pid, linux.KCMP.FILE, a.fd, b.fd) === 0;
  } catch {
    return false;
  }
}

/** What restart knows when it opens a FILE again. */
export interface OpenRequest {
  /** Tag of the FILE object. */
  tag: number;
  /** Names the file in errors: `fd 3 (/path)`, with the first fd number of the FILE. */
  object: string;
  /** The kind's own records under the FILE object (declared in `records`), in stream order. */
  records: KindRecords;
  /** The lowest fd number above every fd of the image: where temporary descriptors go. */
  above: number;
}

/**
 * One kind of open file. Registered under FileKinds; a third party adds kinds (or takes one over
 * with a higher `priority`). A kind with records of its own declares their layouts in `records`
 * (object types whose parents include FILE), writes them in dumpRecords, may check each as it is
 * read (acceptRecord), and gets them all in open(), which runs at the file's first FD.
 */
export interface FileKindHandler extends KindHandler<OpenFile> {
  /**
   * The kind describes a file in flight (OpenFile.held: read through cptrst's fd of it, never the
   * task's). A file in flight of a kind without it is refused.
   */
  readonly inFlight?: boolean;
  /** Fills the kind's fields of the FILE object, or refuses. Runs at check time and again at dump. */
  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void;
  /** Writes the kind's own records of the file (its contents...), after the FILE object, before its FDs. */
  dumpRecords?(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage, out: KindRecordWriter): void;
  /**
   * Checks one of its records as it is read at restart (EBADIMG), given the FILE object and the
   * records before it; `object` names it in errors. Without it the records are checked in open().
   */
  acceptRecord?(task: RestartTask, img: FileImage, record: RestoreObject, before: KindRecords, object: string): void;
  /** Opens the file again inside the restored task; returns the fd there. */
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint;
  /**
   * Makes the object of a FILE that the task does not hold itself but makes for its descendants
   * (a pipe, socket or memfd shared by processes of the tree: their lowest common ancestor makes
   * it), keeping it on carried fds (core's carriedIn). Kinds without it are never shared so.
   */
  carry?(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): void;
  /**
   * The fds (of `files`) whose open files must be open again before this one is, at restart (an
   * epoll's targets). The files subsystem writes those files first; by the time open() runs,
   * they stand at all their fd numbers. Without it, files are written in fd order.
   */
  restoreAfter?(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, files: OpenFile[]): number[];
}

/** The container token of the file kinds (the same registrations as core's Tokens.FileKind, typed). */
export const FileKinds = Tokens.FileKind as Token<FileKindHandler>;

/**
 * Open flags to use again: access mode and status flags; not the creation ones, not
 * close-on-exec (an fd flag). An O_PATH file keeps only what O_PATH allows; the O_TMPFILE bits of
 * a file made unnamed are not for reopening it.
 */
export function reopenFlags(flags: number): number {
  const { O } = linux;
  if (flags & O.PATH) return flags & (O.PATH | O.DIRECTORY | O.NOFOLLOW);
  let f = flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC | O.NOCTTY);
  if (f & (O.TMPFILE & ~O.DIRECTORY)) f &= ~O.TMPFILE;
  return f;
}

/** openat inside the task, for paths that cptrst itself chose (never a path from the image). */
export function openInTask(task: RestartTask, path: string, flags: number, what: string): bigint {
  const t = task.tracee!;
  return t.syscallOk(linux.SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from(path + '\0')), flags, 0], what);
}

/** The path in the FILE object: the fd's link without the " (deleted)" mark. */
export function recordedPath(f: OpenFile): string {
  return f.link.replace(/ \(deleted\)$/, '');
}

/** Mount ids the task sees, read once per task. */
const MOUNT_IDS = new StateKey<Set<number>>('files.mountIds');
function mountIds(task: CheckpointTask): Set<number> {
  return task.state.ensure(MOUNT_IDS, () => {
    const ids = new Set(linux.readMountinfo(task.pid).map((m) => m.mountId));
    // A chrooted process's mountinfo shows only the mounts under its root; the others of its mount
    // namespace (cptrst's: another one is refused) stay reachable by the restart, which opens the
    // image's files before it chroots.
    if (linux.readRoot(task.pid) !== '/') for (const m of linux.readMountinfo(process.pid)) ids.add(m.mountId);
    return ids;
  });
}

/**
 * Refuses a file that restart could not find again by its path: a memfd or any file on a mount
 * the process cannot see (the kernel's internal mounts: memfd, shmem, secretmem...), a path that
 * is not canonical, a name removed while the file still has other links.
 */
export function requireReachableByPath(task: CheckpointTask, f: OpenFile): void {
  const object = `fd ${f.fd} (${f.link})`;
  if (!mountIds(task).has(f.fdinfo.mntId)) {
    // memfds of the internal shm mount have a kind of their own; hugetlbfs ones come here.
    if (f.link.startsWith('/memfd:')) refuse(task.pid, object, 'memfds on hugetlbfs are not supported yet');
    refuse(task.pid, object, `the file is on a mount the process does not see (mount id ${f.fdinfo.mntId}); it cannot be opened again by path`);
  }
  if (f.link.endsWith(' (deleted)') && f.stat.nlink > 0n) {
    refuse(task.pid, object, `the file was unlinked from this name but still has ${f.stat.nlink} other link(s), whose names are not known`);
  }
  const why = nonCanonicalPath(recordedPath(f));
  if (why) refuse(task.pid, object, `its path cannot be used to open it again: ${why}`);
}
