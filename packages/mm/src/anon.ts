/**
 * Anonymous memory. Private: heap, stack, plain anonymous maps, named ones ([anon:name]) and
 * droppable ones (MAP_DROPPABLE, VmFlag "dp": pages the kernel may free under memory pressure at
 * any moment, so a process must expect them gone; their contents are not stored, and a restored
 * droppable area starts empty, as CRIU's does). Shared: MAP_SHARED|MAP_ANONYMOUS.
 */
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, CptError, KindRecordWriter, KindRecords, NamedCall, RestartContext, RestartTask, StateKey, linux, refuse, runCalls } from '@cptrst/core';
import {
  GUARD_FLAG, LOCK_FLAGS, MADVISE_FLAGS, MM_LAYOUT, SEAL_FLAG, VmaEntry, VmaImage, VmaKindHandler, describeVma, internalShmDev, mapAt, mapFilesPath,
} from './vma';
import { applyVmFlags, vmFlagCalls } from './madvise';
import { isPresentOrSwapped } from './pages';
import { VmaKeptImage, dumpKeptRecord, keepArea } from './cow';
import { VmaSharedAnonDataImage, VmaSharedAnonImage, dumpTreeShared, mapTreeShared, treeShared } from './shared-anon';

const { MAP, MREMAP, PROT, SYS } = linux;

/** Flags a private anonymous area may carry: growsdown (stacks), noreserve, droppable, guard regions, madvise's, locks, seal. */
const ANON_FLAGS = new Set(['gd', 'nr', 'dp', GUARD_FLAG, ...Object.keys(MADVISE_FLAGS), ...LOCK_FLAGS, SEAL_FLAG]);
/** Shared anonymous memory: no growsdown, no droppable; wipeonfork and mergeable never apply to it. */
const SHARED_ANON_FLAGS = new Set(['nr', 'dc', 'dd', 'hg', 'nh', 'sr', 'rr', ...LOCK_FLAGS, SEAL_FLAG]);

export class AnonVma implements VmaKindHandler {
  readonly kind = 'anon';
  /** An area kept copy-on-write from the parent (cow.ts) has one: the pages to discard. */
  readonly records = [VmaKeptImage];
  claims(v: VmaEntry): boolean {
    return !v.shared && v.inode === 0n && (v.path === '' || v.path === '[heap]' || v.path === '[stack]' || v.path.startsWith('[anon:'));
  }
  describe(): void {}
  acceptsVmFlag(flag: string): boolean {
    return ANON_FLAGS.has(flag);
  }
  storesPages(img: VmaImage): boolean {
    return !img.vmFlags.includes('dp');
  }
  storesPage(pm: bigint): boolean {
    return isPresentOrSwapped(pm);
  }
  /** Only an area kept from the parent has a record. */
  expectsRecords(img: VmaImage): boolean {
    return img.inheritedAt !== 0n;
  }
  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, _img: VmaImage, out: KindRecordWriter): void {
    dumpKeptRecord(task, v, out);
  }
  map(_ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean, records: KindRecords): void {
    const prot = img.prot | (writable ? PROT.WRITE : 0);
    const type = img.vmFlags.includes('dp') ? MAP.DROPPABLE : MAP.PRIVATE;
    const kept = records.of(VmaKeptImage);
    // Its name and VmFlags are set in the same batch as the mmap.
    const then: NamedCall[] = [];
    const m = /^\[anon:(.*)\]$/.exec(img.path);
    if (m) {
      const t = task.tracee!;
      const name = Buffer.from(m[1] + '\0');
      then.push({ nr: SYS.prctl, args: [linux.PR.SET_VMA, linux.PR_SET_VMA_ANON_NAME, img.start, img.end - img.start, t.stage(name)], what: `naming ${img.path}` });
    }
    then.push(...vmFlagCalls(img));
    if (kept.length || img.inheritedAt !== 0n) {
      keepArea(task, img, kept);
      runCalls(task.tracee!, then);
    } else {
      mapAt(task, img, prot, type | MAP.ANONYMOUS, -1, `anonymous memory ${img.start.toString(16)}`, then);
    }
  }
}

/** MAP_SHARED|MAP_ANONYMOUS: shown as /dev/zero (deleted); its pages are shmem. */
export class SharedAnonVma implements VmaKindHandler {
  readonly kind = 'shared-anon';
  /** An area of memory made once for the tree has them (shared-anon.ts). */
  readonly records = [VmaSharedAnonImage, VmaSharedAnonDataImage];
  claims(v: VmaEntry): boolean {
    return v.shared && v.path === '/dev/zero' && v.deleted;
  }
  /** Only the kernel names an area so; its file must also be on the internal shm mount. */
  describe(task: CheckpointTask, v: VmaEntry): void {
    let dev: bigint | undefined;
    try {
      dev = fs.statSync(mapFilesPath(task.pid, v), { bigint: true }).dev;
    } catch {
      dev = undefined;
    }
    if (dev !== internalShmDev()) refuse(task.pid, describeVma(v), 'an area named /dev/zero (deleted) that is not shared anonymous memory');
  }
  acceptsVmFlag(flag: string): boolean {
    return SHARED_ANON_FLAGS.has(flag);
  }
  /** An area inherited from the parent has the parent's pages, one of memory made once for the tree its object's: none of its own are stored. */
  storesPages(img: VmaImage): boolean {
    return img.inheritedAt === 0n && !treeShared(img);
  }
  /** An area kept from the parent has no records. */
  expectsRecords(img: VmaImage): boolean {
    return img.inheritedAt === 0n;
  }
  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, img: VmaImage, out: KindRecordWriter): void {
    dumpTreeShared(task, v, img, out);
  }
  storesPage(pm: bigint): boolean {
    return isPresentOrSwapped(pm);
  }
  map(ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean, records: KindRecords): void {
    const prot = img.prot | (writable ? PROT.WRITE : 0);
    if (records.all.length) {
      mapTreeShared(ctx, task, img, records, task.state.get(MM_LAYOUT) ?? []);
      applyVmFlags(task, img);
      return;
    }
    if (img.inheritedAt !== 0n) {
      keepInherited(task, img);
      applyVmFlags(task, img);
      return;
    }
    mapAt(task, { ...img, pgoff: 0n }, prot, MAP.SHARED | MAP.ANONYMOUS, -1, `shared anonymous memory ${img.start.toString(16)}`, vmFlagCalls(img));
  }
}

/**
 * The parent's shared anonymous areas a task keeps (MmImage.inherited), moved out of the image's
 * way when the address space is cleared: where each one waits, by its address in the parent.
 */
export const INHERITED_AREAS = new StateKey<Map<bigint, bigint>>('mm.inheritedAreas');

/** Moves the kept copy of the parent's area into place, with the area's own protection. */
function keepInherited(task: RestartTask, img: VmaImage): void {
  const t = task.tracee!;
  const what = describeVma(img);
  const at = task.state.get(INHERITED_AREAS)?.get(img.inheritedAt);
  if (at === undefined) throw new CptError('EBADIMG', `${what} is said to be the parent's memory at 0x${img.inheritedAt.toString(16)}, which the task's mm object does not keep`, { pid: task.pid, object: what });
  const len = img.end - img.start;
  const r = t.syscallOk(SYS.mremap, [at, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, img.start], `mremap of ${what} (kept from the parent)`);
  if (r !== img.start) throw new CptError('EFAULT', `mremap of ${what} landed at 0x${r.toString(16)}`, { pid: task.pid, object: what });
  t.syscallOk(SYS.mprotect, [img.start, len, img.prot], `mprotect of ${what}`);
}
