/**
 * Memory areas (VMAs). At checkpoint each area of /proc/PID/smaps must be claimed by a
 * registered VmaKind handler (deny by default); the handler says how its pages are chosen and
 * how the area is mapped again. Each VMA object is followed by the PAGES objects that fill it.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindHandler, KindRecordWriter, KindRecords, NamedCall, ObjectType, RestartContext, RestartTask,
  RestoreObject, StateKey, Token, Tokens, bool, claim, linux, objectType, refuse, runCalls, shmemDev, str, strs, u32, u64,
} from '@cptrst/core';

const { SYS, PROT, MAP } = linux;

@objectType(ObjectType.VMA, 'vma', { parents: [ObjectType.TASK] })
export class VmaImage {
  @u64() start = 0n;
  @u64() end = 0n;
  /** PROT_READ | PROT_WRITE | PROT_EXEC */
  @u32() prot = 0;
  @bool() shared = false;
  /** The VmaKind handler that made it: anon, file, shared-anon, vdso, ... */
  @str() kind = '';
  /** File path, or the kernel's name ([heap], [stack], [vdso]...). */
  @str() path = '';
  /** File offset of `start`. */
  @u64() pgoff = 0n;
  /** VmFlags of smaps (two-letter codes). */
  @strs() vmFlags: string[] = [];
  /** Identity of the mapped file, checked at restart. */
  @u64() inode = 0n;
  @u64() fileSize = 0n;
  @u64() fileMtimeNs = 0n;
  /** Pages of this area stored in the PAGES objects that follow. */
  @u64() pageCount = 0n;
  /** st_dev of the mapped file, checked at restart when the image was made since this boot. */
  @u64({ since: 2 }) fileDev = 0n;
  /**
   * Shared anonymous memory that is one memory with the parent's (inherited across fork): where
   * the area starts in the parent's mapping of it, which the task keeps at restart (moved here)
   * instead of mapping new memory; no pages are stored for it. Private anonymous memory still
   * shared copy-on-write with the parent: its own start, the parent's copy is kept in place and
   * only the task's own pages are stored (cow.ts). 0: the task's own.
   */
  @u64({ since: 4 }) inheritedAt = 0n;
}

/** A VMA as the kind handlers see it at checkpoint. */
export type VmaEntry = linux.SmapsEntry;

/**
 * One kind of memory area. Registered under VmaKinds; a third party can add kinds (or take one
 * over with a higher `priority`). A kind with records of its own (`records`, layouts whose
 * parents include VMA) writes them in dumpRecords and gets them in map(); such an area is mapped
 * once its records are read (at its first PAGES, the next VMA, or the end of the task's objects).
 */
export interface VmaKindHandler extends KindHandler<VmaEntry> {
  /**
   * Fills the kind-specific fields (file identity...) or refuses with a CptError. It runs in the
   * check pass, before anything is written, so every refusal of the kind belongs here.
   */
  describe(task: CheckpointTask, vma: VmaEntry, img: VmaImage): void;
  /** Whether this kind restores the VmFlag (beyond DERIVED_FLAGS); an area with any other flag is refused. */
  acceptsVmFlag(flag: string): boolean;
  /**
   * Whether the area's pages may be stored at all: false where the contents are a file's (a
   * shared file mapping), so that no page of an image is ever written into a file.
   */
  storesPages(img: VmaImage): boolean;
  /** Which pages of the area go into the image, from their pagemap entries. */
  storesPage(pagemapEntry: bigint): boolean;
  /**
   * Whether this area has records of the kind to wait for (default: any area of a kind with
   * `records`). An area that has none is mapped at once.
   */
  expectsRecords?(img: VmaImage): boolean;
  /** Writes the kind's own records of the area (declared in `records`), after its VMA object, before its pages. */
  dumpRecords?(ctx: CheckpointContext, task: CheckpointTask, vma: VmaEntry, img: VmaImage, out: KindRecordWriter): void;
  /**
   * Maps the area again in the restored task. `writable`: map it writable for now, the pages go
   * in next. `records`: the kind's own records of this area, from the image.
   */
  map(ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean, records: KindRecords): void;
}

/** A VMA of the image as restart keeps it: its object and the kind that mapped it. */
export interface RestoredVma {
  img: VmaImage;
  kind: VmaKindHandler;
}

/** The image's layout of the task's address space (every area's range), once its MM object is read. */
export const MM_LAYOUT = new StateKey<ReadonlyArray<{ start: bigint; end: bigint }>>('mm.layout');

/** The areas mapped so far at restart, by the tag of their VMA object (their PAGES name it). */
export const VMAS_BY_TAG = new StateKey<Map<number, RestoredVma>>('mm.vmasByTag');

/**
 * Every area of a restart by the tag of its VMA object, across tasks: the task, and how to get the
 * area once mapped (an area whose kind waits for its records is mapped on demand). The pages
 * section at the end of an image names areas of any task.
 */
export const VMAS_OF_RESTART = new WeakMap<RestartContext, Map<number, { task: RestartTask; area: () => RestoredVma | undefined }>>();

/**
 * Whether the pages of an area are filled lazily: private anonymous memory mapped read-write,
 * not droppable and not locked (mlock populates an area at once, with zeros before it could be
 * registered). At checkpoint these go to the image's pages section (a lazy restart fills them while
 * the process runs); the others are written before it runs.
 */
export function fillsLazily(img: VmaImage, kind: string): boolean {
  const rw = PROT.READ | PROT.WRITE;
  return kind === 'anon' && !img.shared && (img.prot & rw) === rw && !img.vmFlags.some((f) => f === 'dp' || f === 'lo' || f === 'lf');
}

/** The container token of the VMA kinds (the same registrations as core's Tokens.VmaKind, typed). */
export const VmaKinds = Tokens.VmaKind as Token<VmaKindHandler>;

/**
 * VmFlags that follow from prot and sharing, or that the kernel sets by itself (anon_vma,
 * soft-dirty): every kind accepts them. The others each kind lists for itself (acceptsVmFlag),
 * and only the ones it restores.
 */
export const DERIVED_FLAGS: ReadonlySet<string> = new Set(['rd', 'wr', 'ex', 'sh', 'mr', 'mw', 'me', 'ms', 'ac', 'sd']);
/** VmFlags set again with madvise at restart. */
export const MADVISE_FLAGS: Record<string, number> = {
  dc: linux.MADV.DONTFORK,
  dd: linux.MADV.DONTDUMP,
  wf: linux.MADV.WIPEONFORK,
  hg: linux.MADV.HUGEPAGE,
  nh: linux.MADV.NOHUGEPAGE,
  sr: linux.MADV.SEQUENTIAL,
  rr: linux.MADV.RANDOM,
  mg: linux.MADV.MERGEABLE,
};
/** mlock ("lo") and mlock on fault ("lf"), set again with mlock2; mseal ("sl"), set again at finish. */
export const LOCK_FLAGS: ReadonlySet<string> = new Set(['lo', 'lf']);
export const SEAL_FLAG = 'sl';
/** Guard regions ("gu"): installed again from the area's VMA_GUARDS object (guard.ts). */
export const GUARD_FLAG = 'gu';

export function protOf(v: VmaEntry): number {
  return (v.prot.read ? PROT.READ : 0) | (v.prot.write ? PROT.WRITE : 0) | (v.prot.exec ? PROT.EXEC : 0);
}

/** The area's /proc/PID/map_files link: the mapped file as the process sees it, even renamed. */
export function mapFilesPath(pid: number, v: { start: bigint; end: bigint }): string {
  return `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
}

/** A mapped file as the process sees it, through its own map_files link (the same inode even if renamed); refused when it cannot be examined. */
export function mappedFile(task: CheckpointTask, v: VmaEntry, what = 'mapped file'): { at: string; stat: fs.BigIntStats; path: string } {
  const at = mapFilesPath(task.pid, v);
  try {
    return { at, stat: fs.statSync(at, { bigint: true }), path: v.path };
  } catch (e) {
    return refuse(task.pid, describeVma(v), `the ${what} cannot be examined (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** The device of the kernel's internal shm mount (memfds, SysV segments, shared anonymous memory). */
export function internalShmDev(): bigint {
  return shmemDev();
}

export function describeVma(v: { start: bigint; end: bigint; path: string }): string {
  return `vma ${v.start.toString(16)}-${v.end.toString(16)}${v.path ? ' ' + v.path : ''}`;
}

/** The areas of the task's address space, less cptrst's own scratch area. */
export function taskVmas(task: CheckpointTask): VmaEntry[] {
  const reserved = task.tracee.reservedRanges();
  return linux.readSmaps(task.pid).filter((v) => v.path !== '[vsyscall]' && !reserved.some((r) => r.start === v.start && r.end === v.end));
}

export function kindOf(ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry): VmaKindHandler {
  const h = claim(ctx.all(VmaKinds), v, task.pid, describeVma(v), 'no handler for this kind of memory area');
  const odd = v.vmFlags.filter((f) => !DERIVED_FLAGS.has(f) && !h.acceptsVmFlag(f));
  if (odd.length) {
    throw new CptError('EOPNOTSUPP', `VmFlags ${odd.join(' ')} are not supported on ${h.kind} memory yet`, { pid: task.pid, object: describeVma(v) });
  }
  // A protection key other than the default one would silently become key 0.
  const pkey = v.fields.ProtectionKey;
  if (pkey !== undefined && pkey !== 0) refuse(task.pid, describeVma(v), `protection key ${pkey}: memory protection keys are not supported yet`);
  return h;
}

/** mmap flags for an area: MAP_FIXED at its address, plus what its VmFlags say. */
function mmapFlags(img: VmaImage, base: number): number {
  let f = base | MAP.FIXED;
  if (img.vmFlags.includes('gd')) f |= MAP.GROWSDOWN;
  if (img.vmFlags.includes('nr')) f |= MAP.NORESERVE;
  return f;
}

/**
 * Maps with mmap inside the task, checking the kernel put it exactly there; `then`: calls on the
 * new area (its name, its VmFlags) run in the same batch, after the mmap, unless it fails.
 */
export function mapAt(task: RestartTask, img: VmaImage, prot: number, flags: number, fd: number | bigint, what: string, then: ReadonlyArray<NamedCall> = []): void {
  const t = task.tracee!;
  const [r] = runCalls(t, [{ nr: SYS.mmap, args: [img.start, img.end - img.start, prot, mmapFlags(img, flags), fd, img.pgoff], what: `mmap of ${what}` }, ...then]);
  if (r !== img.start) throw new CptError('EFAULT', `mmap of ${what} landed at 0x${r.toString(16)}`, { pid: task.pid, object: what });
}

/** Checks an image VMA before it is used: sane, page aligned, in user space. */
export function validateVma(task: RestartTask, o: RestoreObject): VmaImage {
  const v = o.obj as VmaImage;
  const bad = (why: string) => new CptError('EBADIMG', `${describeVma(v)} at image offset ${o.offset}: ${why}`, { pid: task.pid, object: describeVma(v) });
  if (v.start >= v.end || v.start & 0xfffn || v.end & 0xfffn) throw bad('not a page-aligned range');
  if (v.end > 0x800000000000n) throw bad('outside user space');
  if (v.prot & ~7) throw bad('bad protection');
  return v;
}
