/**
 * Regular files: reopened inside the task by their recorded path (openRecordedFile: canonical
 * path, no symlinks, the task's identity, the same file: kind, size, mtime, and device and inode
 * on the same boot), with their flags, at their offset. O_PATH files are reopened O_PATH. A file
 * deleted while open is made again without a name (ghost.ts).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, KindRecordWriter, KindRecords, RestartContext, RestartTask, RestoreObject, linux, openRecordedFile, refuse,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, reopenFlags, requireReachableByPath } from './kinds';
import { FileDataImage, FileImage } from './file';
import { recorded } from './fs-struct';
import { checkGhostData, describeGhost, dumpGhostData, openGhost } from './ghost';

const { SYS, O, SEEK, S_IF } = linux;

let procStDev: bigint | undefined;
function procDev(): bigint {
  procStDev ??= fs.statSync('/proc', { bigint: true }).dev;
  return procStDev;
}

/** Whether process `n` descends from `pid` (its chain of parents reaches it). */
function isDescendant(n: number, pid: number): boolean {
  for (let p = n, steps = 0; p > 1 && steps < 4096; steps++) {
    try {
      p = linux.readStat(p).ppid;
    } catch {
      return false;
    }
    if (p === pid) return true;
  }
  return false;
}

export class RegularFile implements FileKindHandler {
  readonly kind = 'regular';
  /** The data runs of a deleted file. */
  readonly records = [FileDataImage];
  claims(f: OpenFile): boolean {
    return f.stat.isFile() && f.link.startsWith('/');
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    // The process's own /proc files are new files for the restored process: never the one recorded.
    if (f.stat.dev === procDev()) {
      const n = Number(/^\/proc\/(\d+)\//.exec(f.link)?.[1] ?? 0);
      if (n === task.pid || n === task.tid || (n !== 0 && linux.listThreads(task.pid).includes(n))) {
        refuse(task.pid, `fd ${f.fd} (${f.link})`, 'a file of the process\'s own /proc directory: the restored process has new ones, which restart cannot take for it');
      }
      // A restart makes a process's descendants after its files: theirs do not exist yet then.
      if (n !== 0 && isDescendant(n, task.pid)) {
        refuse(task.pid, `fd ${f.fd} (${f.link})`, `a file of the /proc directory of its descendant ${n}, which a restart makes only after this process's files`);
      }
    }
    img.deleted = f.stat.nlink === 0n;
    requireReachableByPath(task, f);
    if (img.deleted) describeGhost(task, f, img);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage, out: KindRecordWriter): void {
    if (img.deleted && img.sameAs === 0 && !img.mapped) dumpGhostData(task, f, out);
  }

  acceptRecord(task: RestartTask, img: FileImage, o: RestoreObject, before: KindRecords, object: string): void {
    checkGhostData(task.pid, img, before.of(FileDataImage), o.obj as FileDataImage, object);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    if (img.deleted) return openGhost(ctx, task, img, req);
    const t = task.tracee!;
    const flags = reopenFlags(img.flags);
    const fd = openRecordedFile(t, img.path, {
      flags,
      expect: { type: S_IF.REG, size: img.size, mtimeNs: img.mtimeNs, dev: recorded(img.dev), ino: img.inode },
      sameBoot: ctx.sameBoot,
      object: req.object,
    });
    if (!(flags & O.PATH)) t.syscallOk(SYS.lseek, [fd, img.pos, SEEK.SET], `lseek of ${req.object} to ${img.pos}`);
    return fd;
  }
}
