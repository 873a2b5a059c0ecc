/**
 * SysV shared memory attached by the process (shmat): the area shows as `/SYSV<key> (deleted)`
 * on the kernel's internal shm mount, its inode number is the segment's id. The segment (key,
 * id, size, mode, owner, removed or not) is the area's own record; its contents are the area's
 * pages.
 *
 * A segment belongs to the IPC namespace, not to the process, and cptrst's namespace is shared
 * with everyone. So:
 * - checkpoint refuses a segment that another process has attached too (its contents are not
 *   the process's alone), one attached only in part (an attachment split by mprotect is fine),
 *   one the process attached only read-only (its contents are written back through a writable
 *   attachment, and a read-only one must not become writable), and huge-page segments;
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

const { PROT, SYS } = linux;
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
/** Attachments made at this restart, by address: the segment and where the attachment ends. */
const ATTACHED = new StateKey<Map<bigint, { id: number; end: bigint }>>('mm.sysv-shm.attached');

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
    const mine = linux.readSmaps(task.pid).filter((x) => x.inode === v.inode && keyOf(x.path) !== undefined);
    // One attachment may show as several areas (mprotect of a part): together they must cover
    // the whole segment from the attach address, or a part of it was unmapped or moved.
    const base = v.start - v.offset;
    const pieces = mine.filter((x) => x.start - x.offset === base).sort((a, b) => (a.start < b.start ? -1 : 1));
    let at = base;
    for (const x of pieces) {
      if (x.start !== at) break;
      at = x.end;
    }
    if (at !== base + pageUp(seg.size)) refuse(task.pid, describeVma(v), `only part of SysV segment ${seg.id} is attached here (split by munmap or mremap); not supported`);
    if (seg.nattch > mine.length) refuse(task.pid, describeVma(v), `SysV segment ${seg.id} is attached by another process too (${seg.nattch} attachments, ${mine.length} of them the process's); its contents are not the process's alone`);
    // Contents are written back through a writable attachment: a read-only one stores none.
    if (!mine.some((x) => x.vmFlags.includes('mw'))) refuse(task.pid, describeVma(v), `SysV segment ${seg.id} is attached only read-only; its contents could not be written back`);
  }

  acceptsVmFlag(flag: string): boolean {
    return SHM_FLAGS.has(flag);
  }
  /** Only a writable attachment (VM_MAYWRITE: attached without SHM_RDONLY) carries the contents. */
  storesPages(img: VmaImage): boolean {
    return img.vmFlags.includes('mw');
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
    const size = pageUp(r.size);
    if (r.id < 0 || r.size <= 0n || img.pgoff + (img.end - img.start) > size || (r.mode & ~0o777) !== 0) throw bad(`SysV segment ${r.id}: id, size or mode out of range`);
    if (!ctx.imageTrusted) {
      throw new CptError('EPERM', `SysV shared memory is restored only from an image root wrote (segment ${r.id})`, { pid: task.pid, object });
    }
    const t = task.tracee!;
    const base = img.start - img.pgoff;
    const attached = task.state.ensure(ATTACHED, () => new Map<bigint, { id: number; end: bigint }>());
    if (img.pgoff === 0n) {
      const made = task.state.ensure(SEGMENTS, () => new Set<number>());
      if (!made.has(r.id)) {
        this.segment(task, r, object);
        made.add(r.id);
      }
      // The whole segment, as it was attached: writable (VM_MAYWRITE) or not, executable or not.
      const flags = (img.vmFlags.includes('mw') ? 0 : linux.SHM_RDONLY) | (img.prot & PROT.EXEC ? linux.SHM_EXEC : 0);
      const at = t.syscallOk(linux.syscallNumber('shmat'), [r.id, base, flags], `shmat(${r.id}) at ${base.toString(16)}`);
      if (at !== base) throw new CptError('EFAULT', `shmat(${r.id}) landed at 0x${at.toString(16)}`, { pid: task.pid, object });
      attached.set(base, { id: r.id, end: base + size });
      if (r.removed) t.syscallOk(shmctl(), [r.id, linux.IPC.RMID, 0], `shmctl(${r.id}, IPC_RMID)`);
    } else {
      // A later piece of an attachment whose first piece made it.
      const a = attached.get(base);
      if (!a || a.id !== r.id || img.end > a.end) throw bad(`a piece of SysV segment ${r.id} at offset ${img.pgoff} with no attachment at 0x${base.toString(16)}`);
    }
    // Each piece its own protection (mm restores it after the pages when it is mapped writable for them).
    t.syscallOk(SYS.mprotect, [img.start, img.end - img.start, img.prot | (writable ? PROT.WRITE : 0)], `mprotect of ${object}`);
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
