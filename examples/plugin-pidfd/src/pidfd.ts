/**
 * A pidfd of the process itself (pidfd_open(getpid(), flags)): what a program keeps to wait for
 * its own exit in an event loop, or to signal itself race-free. /proc/PID/fdinfo/N of a pidfd
 * shows the process it refers to (`Pid:`); the open flags show PIDFD_NONBLOCK (O_NONBLOCK) and
 * PIDFD_THREAD (O_EXCL). A pidfd of another process is refused: the restored process would
 * refer to whatever process then has that number.
 *
 * Restore: pidfd_open(pid, flags) run inside the task, whose PID is the one it had; the files
 * subsystem then puts the fd at its numbers.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, linux, objectType,
  registerObjectType, refuse, u32,
} from '@cptrst/core';
import { FileImage, FileKindHandler, OpenFile, OpenRequest } from '@cptrst/files';

/** This module's package name: the owner of its object type number. */
export const OWNER = '@cptrst-example/plugin-pidfd';
/** Our object type number, from the range for third parties (1000-65535), kept for good: images carry it. */
export const PIDFD_TYPE = registerObjectType(4712, 'pidfd', OWNER);

const { O } = linux;
/** pidfd_open(2) flags: PIDFD_NONBLOCK is O_NONBLOCK, PIDFD_THREAD is O_EXCL. */
export const PIDFD_NONBLOCK = O.NONBLOCK;
export const PIDFD_THREAD = O.EXCL;
/** Status flags a pidfd can carry that this kind restores (O_CLOEXEC is the fd's, kept by the files subsystem). */
const KNOWN_FLAGS = O.ACCMODE | O.CLOEXEC | PIDFD_NONBLOCK | PIDFD_THREAD;

/** The pidfd's own record, under its FILE object. */
@objectType(PIDFD_TYPE, 'pidfd', { parents: [ObjectType.FILE] })
export class PidfdImage {
  /** PIDFD_NONBLOCK and PIDFD_THREAD, as pidfd_open takes them. */
  @u32() flags = 0;
}

/** The process a pidfd refers to, from its fdinfo (`Pid:`; -1 once it has been reaped). */
export function pidfdTarget(fdinfo: linux.FdInfo): number | undefined {
  const pid = fdinfo.fields['Pid'];
  return pid !== undefined && /^-?\d+$/.test(pid) ? Number(pid) : undefined;
}

export class PidfdKind implements FileKindHandler {
  readonly kind = 'pidfd';
  readonly records = [PidfdImage];

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[pidfd]';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    this.flags(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const rec = new PidfdImage();
    rec.flags = this.flags(task, f);
    out.write(rec);
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const recs = req.records.of(PidfdImage);
    const bad = (why: string) => new CptError('EBADIMG', `pidfd: ${why}`, { pid: task.pid, object: req.object });
    if (recs.length !== 1) throw bad(`${recs.length} pidfd records for one file (one is needed)`);
    const { flags } = recs[0];
    if (flags & ~(PIDFD_NONBLOCK | PIDFD_THREAD)) throw bad(`unknown pidfd flags 0${flags.toString(8)}`);
    if ((img.flags & ~KNOWN_FLAGS) !== 0 || (img.flags & O.ACCMODE) !== O.RDWR) throw bad(`open flags 0${img.flags.toString(8)}`);
    // The task's own PID: the restart gave it the one it had.
    return task.tracee!.syscallOk(linux.syscallNumber('pidfd_open'), [task.pid, flags], `pidfd_open(${task.pid}) for ${req.object}`);
  }

  /** The pidfd_open flags, or a refusal naming the fd. */
  private flags(task: CheckpointTask, f: OpenFile): number {
    const object = `fd ${f.fd} (${f.link})`;
    const target = pidfdTarget(f.fdinfo);
    if (target === undefined) refuse(task.pid, object, 'its fdinfo shows no Pid');
    if (target !== task.pid) {
      refuse(task.pid, object, target === -1
        ? 'it refers to a process that has exited and been reaped'
        : `it refers to another process (pid ${target}); only a pidfd of the process itself is supported`);
    }
    const odd = f.fdinfo.flags & ~KNOWN_FLAGS;
    if (odd) refuse(task.pid, object, `open flags 0${odd.toString(8)} on a pidfd are not supported`);
    return f.fdinfo.flags & (PIDFD_NONBLOCK | PIDFD_THREAD);
  }
}
