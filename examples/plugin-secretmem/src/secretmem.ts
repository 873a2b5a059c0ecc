/**
 * A memfd_secret fd made and not sized yet (memfd_secret(flags), size 0): what a program holds
 * between making its secret memory and sizing and mapping it. cptrst's own kind for regular files
 * claims it (the fd's link is `/secretmem (deleted)`, a regular file) and refuses it: its
 * filesystem is mounted nowhere the process could open it again. This kind takes over, with a
 * higher priority, the secret-memory fds of size 0 and leaves the others to that refusal (their
 * contents cannot be read: the kernel keeps secret memory out of every other process's reach).
 *
 * A secret-memory fd is told apart by its filesystem (statfs: SECRETMEM_MAGIC), not only by its
 * link. It must not be mapped by the task (a mapping of size 0 would be cptrst's memory kinds'
 * to refuse, but the kind says so by name).
 *
 * Restore: memfd_secret(0) run inside the task, as the task; the files subsystem gives it its fd
 * numbers, its close-on-exec and the sharing of one description by several fds.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, decodeStruct, linux, objectType,
  registerObjectType, refuse, sizeOfStruct, u32, u64,
} from '@cptrst/core';
import { FileImage, FileKindHandler, OpenFile, OpenRequest } from '@cptrst/files';

/** This module's package name: the owner of its object type number. */
export const OWNER = '@cptrst-example/plugin-secretmem';
/** Our object type number, from the range for third parties (1000-65535), kept for good: images carry it. */
export const SECRETMEM_TYPE = registerObjectType(4714, 'secretmem-fd', OWNER);

const { O } = linux;
/** statfs f_type of the secret-memory filesystem. */
export const SECRETMEM_MAGIC = 0x5345434d;
/** What the fd's link reads. */
const LINK = '/secretmem (deleted)';

/** The fd's own record, under its FILE object. */
@objectType(SECRETMEM_TYPE, 'secretmem-fd', { parents: [ObjectType.FILE] })
export class SecretmemImage {
  /** The file's size: 0 (a larger one is never written). */
  @u64() size = 0n;
  /** Its mode bits as the kernel made them (checked against the new one at restart). */
  @u32() mode = 0;
}

/** Whether the fd of `pid` is on the secret-memory filesystem (statfs through /proc). */
export function isSecretmem(pid: number, fd: number): boolean {
  try {
    return fs.statfsSync(`/proc/${pid}/fd/${fd}`).type === SECRETMEM_MAGIC;
  } catch {
    return false;
  }
}

let secretmemDevice: bigint | null | undefined;
/** The device of the secret-memory filesystem (one per boot), from a memfd_secret of cptrst's own; null where there is none. */
export function secretmemDev(): bigint | null {
  if (secretmemDevice !== undefined) return secretmemDevice;
  const r = linux.rawSyscall(linux.syscallNumber('memfd_secret'), O.CLOEXEC);
  if (r < 0n) return (secretmemDevice = null);
  try {
    secretmemDevice = fs.fstatSync(Number(r), { bigint: true }).dev;
  } finally {
    fs.closeSync(Number(r));
  }
  return secretmemDevice;
}

export class SecretmemKind implements FileKindHandler {
  readonly kind = 'secretmem';
  /** Above cptrst's own regular-file kind, which claims these fds and refuses them. */
  readonly priority = 1;
  readonly records = [SecretmemImage];

  claims(f: OpenFile): boolean {
    // Only what this kind can restore: size 0. The others stay cptrst's, which refuses them.
    return f.link === LINK && f.stat.size === 0n && f.stat.dev === secretmemDev();
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    this.read(task, f);
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    out.write(this.read(task, f));
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const recs = req.records.of(SecretmemImage);
    const bad = (why: string) => new CptError('EBADIMG', `secret memory: ${why}`, { pid: task.pid, object: req.object });
    if (recs.length !== 1) throw bad(`${recs.length} secretmem records for one file (one is needed)`);
    if (recs[0].size !== 0n) throw bad(`a size of ${recs[0].size} bytes (only 0 is restored)`);
    if ((img.flags & ~(O.ACCMODE | O.LARGEFILE)) !== 0 || (img.flags & O.ACCMODE) !== O.RDWR) throw bad(`open flags 0${img.flags.toString(8)}`);
    const t = task.tracee!;
    const fd = t.syscallOk(linux.syscallNumber('memfd_secret'), [0], `memfd_secret for ${req.object}`);
    // The same kind of file as recorded (the kernel gives the mode; a different kernel might not).
    const at = t.stage(Buffer.alloc(sizeOfStruct(linux.KernelStat)));
    t.syscallOk(linux.SYS.fstat, [fd, at], `fstat of ${req.object}`);
    const mode = decodeStruct(linux.KernelStat, t.readMemory(at, sizeOfStruct(linux.KernelStat))).mode;
    if (mode !== recs[0].mode) {
      t.syscall(linux.SYS.close, [fd]);
      throw new CptError('EIO', `memfd_secret made a file of mode 0${mode.toString(8)}, not 0${recs[0].mode.toString(8)}`, { pid: task.pid, object: req.object });
    }
    return fd;
  }

  /** The fd's record, or a refusal naming it. */
  private read(task: CheckpointTask, f: OpenFile): SecretmemImage {
    const object = `fd ${f.fd} (${f.link})`;
    if (!isSecretmem(task.pid, f.fd)) refuse(task.pid, object, 'it is not on the secret-memory filesystem');
    const st = fs.statSync(`/proc/${task.pid}/fd/${f.fd}`, { bigint: true });
    if (st.size !== 0n) refuse(task.pid, object, `secret memory of ${st.size} bytes: its contents cannot be read; only an fd of size 0 is supported`);
    const odd = f.fdinfo.flags & ~(O.ACCMODE | O.LARGEFILE | O.CLOEXEC);
    if (odd || (f.fdinfo.flags & O.ACCMODE) !== O.RDWR) refuse(task.pid, object, `open flags 0${f.fdinfo.flags.toString(8)} on secret memory are not supported`);
    const mapped = linux.readMaps(task.pid).find((m) => m.path === LINK && m.inode === st.ino);
    if (mapped) refuse(task.pid, object, `the task maps it at 0x${mapped.start.toString(16)}; only an fd not mapped is supported`);
    const rec = new SecretmemImage();
    rec.size = st.size;
    rec.mode = Number(st.mode);
    return rec;
  }
}
