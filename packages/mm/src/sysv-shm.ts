/**
 * SysV shared memory attached by the process (shmat): the area shows as `/SYSV<key> (deleted)`
 * on the kernel's internal shm mount, its inode number is the segment's id. The segment (key,
 * id, size, mode, owner, removed or not) is the area's own record; its contents are the area's
 * pages.
 *
 * A segment belongs to the IPC namespace, not to the process, and cptrst's namespace is shared
 * with everyone. So:
 * - checkpoint refuses a segment that another process has attached too (its contents are not
 *   the process's alone), one attached only in part, and huge-page segments;
 * - restart makes the segment again with its id and key only where both are free (the id chosen
 *   through /proc/sys/kernel/shm_next_id, the key with IPC_EXCL), or takes back the very segment
 *   the process left: same id, key, size and creator, attached by nobody, last detached by the
 *   process itself (its death). Any other segment holding the id or key is someone else's:
 *   EEXIST, never taken over;
 * - the segment's owner, group and mode are given back only from an image root wrote; another
 *   user's image is refused (EPERM), since the kernel would check the attach against the
 *   restoring task's credentials, not the owner's.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, KindRecords, ObjectType, RestartContext, RestartTask, StateKey, bool,
  decodeStruct, encodeStruct, i32, linux, objectType, refuse, sizeOfStruct, u32, u64,
} from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, describeVma, LOCK_FLAGS } from './vma';
import { applyVmFlags } from './madvise';

const { PROT } = linux;
const shmctl = (): number => linux.syscallNumber('shmctl');

@objectType(ObjectType.SYSV_SHM, 'sysv-shm', { parents: [ObjectType.VMA] })
export class SysvShmImage {
  /** The key it was made with (a removed segment's reads IPC_PRIVATE, but its areas keep this name). */
  @i32() key = 0;
  @i32() id = 0;
  /** Permission bits (0o777). */
  @u32() mode = 0;
  @u64() size = 0n;
  @u32() uid = 0;
  @u32() gid = 0;
  /** The process that made it (recognises the segment left behind, at a restart on the same machine). */
  @i32() cpid = 0;
  /** Removed (IPC_RMID) while attached: gone once the last process detaches. */
  @bool() removed = false;
}

const SHM_FLAGS = new Set(['dc', 'dd', 'hg', 'nh', 'sr', 'rr', ...LOCK_FLAGS]);
const pageUp = (n: bigint): bigint => (n + 0xfffn) & ~0xfffn;
/** The key in the area's name: `/SYSV` and 8 hex digits. */
const keyOf = (path: string): number | undefined => {
  const m = /^\/SYSV([0-9a-f]{8})$/.exec(path);
  return m ? parseInt(m[1], 16) | 0 : undefined;
};

function segmentOf(task: CheckpointTask, v: VmaEntry): linux.SysvShm {
  const id = Number(v.inode);
  const seg = linux.readSysvShm().find((s) => s.id === id);
  if (!seg) refuse(task.pid, describeVma(v), `SysV segment ${id} is not in /proc/sysvipc/shm (another IPC namespace?)`);
  // A removed segment's key reads IPC_PRIVATE; the area keeps the key it was made with.
  if (keyOf(v.path) !== seg.key && !(seg.mode & linux.SHM_DEST && seg.key === linux.IPC.PRIVATE)) refuse(task.pid, describeVma(v), `SysV segment ${id} has key ${seg.key}, not the area's`);
  return seg;
}

/** Segments made or taken back at this restart, by id. */
const SEGMENTS = new StateKey<Set<number>>('mm.sysv-shm.segments');

export class SysvShmVma implements VmaKindHandler {
  readonly kind = 'sysv-shm';
  /** Above the file kind, which refuses these areas. */
  readonly priority = 1;
  readonly records = [SysvShmImage];

  claims(v: VmaEntry): boolean {
    return v.shared && v.deleted && keyOf(v.path) !== undefined;
  }

  describe(task: CheckpointTask, v: VmaEntry): void {
    if (v.vmFlags.includes('ht')) refuse(task.pid, describeVma(v), 'huge-page SysV shared memory is not supported');
    const seg = segmentOf(task, v);
    if (v.offset !== 0n || v.end - v.start !== pageUp(seg.size)) refuse(task.pid, describeVma(v), `only part of SysV segment ${seg.id} is attached here (split by munmap or mremap); not supported`);
    const mine = linux.readSmaps(task.pid).filter((x) => x.inode === v.inode && keyOf(x.path) !== undefined).length;
    if (seg.nattch > mine) refuse(task.pid, describeVma(v), `SysV segment ${seg.id} is attached by another process too (${seg.nattch} attachments, ${mine} of them the process's); its contents are not the process's alone`);
  }

  acceptsVmFlag(flag: string): boolean {
    return SHM_FLAGS.has(flag);
  }
  storesPages(): boolean {
    return true;
  }
  storesPage(pm: bigint): boolean {
    return (pm & (linux.PAGEMAP.PRESENT | linux.PAGEMAP.SWAPPED)) !== 0n;
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, _img: VmaImage, out: KindRecordWriter): void {
    const seg = segmentOf(task, v);
    const r = new SysvShmImage();
    r.key = keyOf(v.path)!;
    r.id = seg.id;
    r.mode = seg.mode & 0o777;
    r.size = seg.size;
    r.uid = seg.uid;
    r.gid = seg.gid;
    r.cpid = seg.cpid;
    r.removed = (seg.mode & linux.SHM_DEST) !== 0;
    out.write(r);
  }

  map(ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean, records: KindRecords): void {
    const list = records.of(SysvShmImage);
    const object = describeVma(img);
    if (list.length !== 1) throw new CptError('EBADIMG', `${list.length} segment records for one area`, { pid: task.pid, object });
    const r = list[0];
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object });
    if (r.id < 0 || r.size <= 0n || pageUp(r.size) !== img.end - img.start || img.pgoff !== 0n || (r.mode & ~0o777) !== 0) throw bad(`SysV segment ${r.id}: id, size or mode out of range`);
    if (!ctx.imageTrusted) {
      throw new CptError('EPERM', `SysV shared memory is restored only from an image root wrote (segment ${r.id})`, { pid: task.pid, object });
    }
    const t = task.tracee!;
    const made = task.state.ensure(SEGMENTS, () => new Set<number>());
    if (!made.has(r.id)) {
      this.segment(task, r, object);
      made.add(r.id);
    }
    const flags = (img.prot & PROT.WRITE || writable ? 0 : linux.SHM_RDONLY) | (img.prot & PROT.EXEC ? linux.SHM_EXEC : 0);
    const at = t.syscallOk(linux.syscallNumber('shmat'), [r.id, img.start, flags], `shmat(${r.id}) at ${img.start.toString(16)}`);
    if (at !== img.start) throw new CptError('EFAULT', `shmat(${r.id}) landed at 0x${at.toString(16)}`, { pid: task.pid, object });
    if (r.removed) t.syscallOk(shmctl(), [r.id, linux.IPC.RMID, 0], `shmctl(${r.id}, IPC_RMID)`);
    applyVmFlags(task, img);
  }

  /** Makes the segment again with its id and key, or takes back the one the process left. */
  private segment(task: RestartTask, r: SysvShmImage, object: string): void {
    const all = linux.readSysvShm();
    const here = all.find((s) => s.id === r.id);
    if (here) {
      const left = here.key === (r.removed ? linux.IPC.PRIVATE : r.key) && here.size === r.size && here.cpid === r.cpid && here.nattch === 0 && here.lpid === task.pid;
      if (!left) throw new CptError('EEXIST', `SysV segment id ${r.id} is taken by another segment (key ${here.key}, ${here.nattch} attached, last used by ${here.lpid}); it is not taken over`, { pid: task.pid, object });
      return;
    }
    if (r.key !== linux.IPC.PRIVATE && all.some((s) => s.key === r.key)) {
      throw new CptError('EEXIST', `SysV key ${r.key} is taken by another segment; it is not taken over`, { pid: task.pid, object });
    }
    const t = task.tracee!;
    linux.setIpcNextId('shm', r.id);
    const id = Number(t.syscallOk(linux.syscallNumber('shmget'), [r.key, r.size, linux.IPC.CREAT | linux.IPC.EXCL | r.mode], `shmget(key ${r.key}, ${r.size} bytes)`));
    if (id !== r.id) {
      t.syscall(shmctl(), [id, linux.IPC.RMID, 0]);
      throw new CptError('EBUSY', `shmget made segment ${id}, not ${r.id} (another process made one at the same moment)`, { pid: task.pid, object });
    }
    // The owner and mode of the image (IPC_SET takes uid, gid and mode from the struct).
    const size = sizeOfStruct(linux.ShmidDs);
    const at = t.stage(Buffer.alloc(size));
    t.syscallOk(shmctl(), [id, linux.IPC.STAT, at], `shmctl(${id}, IPC_STAT)`);
    const ds = t.readMemory(at, size);
    const set = encodeStruct(linux.ShmidDs, { ...decodeStruct(linux.ShmidDs, ds), uid: r.uid, gid: r.gid, mode: r.mode });
    ds.set(set.subarray(0, 24)); // the perm members only; the rest as the kernel gave it
    t.writeMemory(at, ds);
    t.syscallOk(shmctl(), [id, linux.IPC.SET, at], `shmctl(${id}, IPC_SET)`);
  }
}
