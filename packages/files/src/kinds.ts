/**
 * Kinds of open file. Each fd's open file must be claimed by a registered FileKind handler
 * (deny by default: pipes, sockets, eventfds... are refused until a handler exists).
 */
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, CptError, KindHandler, RestartContext, RestartTask, linux } from '@cptrst/core';
import { FileImage } from './file';

/** An open file as /proc shows it at checkpoint. */
export interface OpenFile {
  fd: number;
  /** readlink of /proc/PID/fd/N */
  link: string;
  fdinfo: linux.FdInfo;
  /** stat through /proc/PID/fd/N (the file itself, even if deleted or renamed) */
  stat: fs.BigIntStats;
}

export interface FileKindHandler extends KindHandler<OpenFile> {
  /** Fills the kind's fields of the FILE object, or refuses. */
  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void;
  /** Writes objects that belong to the file (its contents...), after the FILE object. */
  dumpExtra?(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage, fileTag: number): void;
  /** Opens the file again inside the restored task; returns the fd there. */
  open(ctx: RestartContext, task: RestartTask, img: FileImage, data: Buffer[]): bigint;
}

/** Open flags to use again: access mode and status flags; not the creation ones, not close-on-exec (an fd flag). */
export function reopenFlags(flags: number): number {
  const { O } = linux;
  return flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC | O.NOCTTY);
}

/** openat inside the task. */
export function openInTask(task: RestartTask, path: string, flags: number, what: string): bigint {
  const t = task.tracee!;
  return t.syscallOk(linux.SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from(path + '\0')), flags, 0], what);
}

export function changed(task: RestartTask, img: FileImage, why: string): CptError {
  return new CptError('ESTALE', `the file changed since the checkpoint: ${why}`, { pid: task.pid, object: `file ${img.path}` });
}
