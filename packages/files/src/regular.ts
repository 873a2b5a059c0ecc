/**
 * Regular files: reopened inside the task by their recorded path (openRecordedFile: canonical
 * path, no symlinks, the task's identity, the same file: kind, size, mtime, and device and inode
 * on the same boot), with their flags, at their offset. O_PATH files are reopened O_PATH. A file
 * deleted while open is made again without a name (ghost.ts). A file of the /proc directory of a
 * process of the tree is opened again once every process exists (procfile.ts).
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, KindRecords, RestartContext, RestartTask, RestoreObject, linux, openRecordedFile,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, reopenFlags, requireReachableByPath } from './kinds';
import { FileDataImage, FileImage } from './file';
import { recorded } from './fs-struct';
import { ProcFileImage, openProcStandIn, procFileOfTree, procFileRecord } from './procfile';
import { GhostSharedImage, checkGhostData, describeGhost, dumpGhostData, ghostMaker, ghostSharedRecord, openGhost } from './ghost';

const { SYS, O, SEEK, S_IF } = linux;

export class RegularFile implements FileKindHandler {
  readonly kind = 'regular';
  /** The data runs of a deleted file and who makes one the tree shares; the process of a file of a /proc directory of the tree. */
  readonly records = [FileDataImage, GhostSharedImage, ProcFileImage];
  readonly inFlight = true;
  claims(f: OpenFile): boolean {
    return f.stat.isFile() && f.link.startsWith('/');
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    // A file of the /proc directory of a process of the tree is opened again once every process exists (procfile.ts).
    procFileOfTree(ctx, task, f);
    img.deleted = f.stat.nlink === 0n;
    requireReachableByPath(task, f);
    if (img.deleted) describeGhost(ctx, task, f, img);
  }

  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage, out: KindRecordWriter): void {
    const proc = procFileOfTree(ctx, task, f);
    if (proc !== undefined) out.write(procFileRecord(ctx, task, proc, `fd ${f.fd} (${f.link})`));
    if (!img.deleted) return;
    const maker = ghostMaker(ctx, task, f, img);
    if (maker !== undefined) out.write(ghostSharedRecord(maker));
    if (img.sameAs === 0 && !img.mapped && (maker === undefined || maker === task.pid)) dumpGhostData(task, f, out);
  }

  acceptRecord(task: RestartTask, img: FileImage, o: RestoreObject, before: KindRecords, object: string): void {
    if (o.obj instanceof ProcFileImage) {
      if (before.all.length || img.deleted) throw new CptError('EBADIMG', 'a PROC_FILE record of a deleted file, or after other records', { pid: task.pid, object });
      return;
    }
    if (o.obj instanceof GhostSharedImage) {
      if (before.all.length || !img.deleted) throw new CptError('EBADIMG', 'a ghost-shared record of a file not deleted, or after other records', { pid: task.pid, object });
      return;
    }
    if (before.of(ProcFileImage).length) throw new CptError('EBADIMG', 'file data of a /proc file', { pid: task.pid, object });
    checkGhostData(task.pid, img, before.of(FileDataImage), o.obj as FileDataImage, object, before.of(GhostSharedImage)[0]?.maker);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const proc = req.records.of(ProcFileImage);
    if (proc.length > 1 || (proc.length && img.deleted)) throw new CptError('EBADIMG', 'a file with more than one PROC_FILE record, or a deleted one', { pid: task.pid, object: req.object });
    if (proc.length) return openProcStandIn(task, img, proc[0], req);
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
