/**
 * Page contents. Only pages that hold something of the process's own are stored: present or
 * swapped anonymous pages, and the modified (anonymous copy) pages of private file mappings.
 * Untouched pages are not stored. Runs of stored pages become PAGES objects whose payload is
 * page aligned in the stream; at restart they are written straight into the new process.
 *
 * Speed (bench/README.md): page data is copied once into one buffer that is reused for every
 * run (a fresh buffer per run costs a kernel zero-fill and page faults per page), and once out
 * of it (into the image, or into the new process); the memory copies themselves go through
 * process_vm_readv/writev (linux/memory.ts). Pages written from a copy-on-write snapshot into an
 * image file go there from the snapshot's pipes with splice(2), without reaching cptrst's memory
 * (MemorySnapshot.spliceInto, core image/payload-file.ts).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, MemorySnapshot, ObjectType, RestartContext, RestartTask, RestoreObject, StateKey, isChildSubreaper, linux,
  objectType, u32, u64,
} from '@cptrst/core';
import { VMAS_BY_TAG, VmaEntry, VmaKindHandler, describeVma, fillsLazily } from './vma';
import { filePagesOf } from './file-pages';
import { payloadFrom, trackUses } from './snapshot-uses';

/** The page size pages are counted in: the image head's (the machine's, checked equal at restart). */
function pageOf(ctx: CheckpointContext | RestartContext): number {
  return ctx.head?.pageSize ?? linux.pageSize();
}
/** Longest run storedRuns returns (16 MiB). */
const CHUNK_PAGES = 4096;
/**
 * Pages per PAGES object (2 MiB; the reader refuses objects over 64 MiB). Small objects keep each
 * one's copy in, checksum and copy out within the CPU cache, and the buffers small; bigger ones
 * measured slower (bench/README.md). The header and padding cost one page per object (0.2%).
 */
const OBJECT_PAGES = 512;
const { PRESENT: PM_PRESENT, SWAPPED: PM_SWAPPED, FILE_OR_SHARED_ANON: PM_FILE_OR_SHARED } = linux.PAGEMAP;
const PM_PRESENT_FILE = PM_PRESENT | PM_FILE_OR_SHARED;
const PM_PRESENT_SWAPPED = PM_PRESENT | PM_SWAPPED;

// These run once per page (262144 times for 1 GiB): written as comparisons of the unsigned entry,
// which V8 does without allocating, rather than with `&`, which makes a new BigInt each time.
/** Bit 63 or 62: pm >= 2^62. */
export const isPresentOrSwapped = (pm: bigint): boolean => pm >= PM_SWAPPED;
/**
 * A private file mapping's page that is the process's own copy, not the file's page: swapped
 * (bit 62), or present (63) and not file/shared (61). That is pm >= 2^62 except for entries with
 * bits 63,62,61 = 1,0,1, i.e. pm in [2^63 + 2^61, 2^63 + 2^62).
 */
export const isAnonCopy = (pm: bigint): boolean => pm >= PM_SWAPPED && !(pm >= PM_PRESENT_FILE && pm < PM_PRESENT_SWAPPED);

@objectType(ObjectType.PAGES, 'pages', { parents: [ObjectType.VMA] })
export class PagesImage {
  @u64() vaddr = 0n;
  @u32() count = 0;
}

/** Runs [first page index, count) of the pages of `vma` that `kind` stores. */
export function storedRuns(ctx: CheckpointContext, task: CheckpointTask, vma: VmaEntry, kind: VmaKindHandler): Array<[number, number]> {
  if (vma.rss === 0 && vma.swap === 0) return []; // nothing resident: skip the pagemap read
  return wholeAreaRuns(vma, kind) ?? scannedRuns(ctx, task, vma, kind) ?? pagemapRuns(task, vma, kind);
}

const PAGEMAP = new StateKey<number>('mm.pagemap');

/**
 * The task's /proc/PID/pagemap, opened once per checkpoint (closed at its end, ctx.atEnd): an
 * open per area was 20 opens in the frozen window of an idle process. Undefined if it cannot be
 * opened (the entry-by-entry path reports the error).
 */
export function pagemapOf(ctx: CheckpointContext, task: CheckpointTask): number | undefined {
  let fd = task.state.get(PAGEMAP);
  if (fd !== undefined) return fd;
  try {
    fd = fs.openSync(`/proc/${task.pid}/pagemap`, 'r');
  } catch {
    return undefined;
  }
  const opened = fd;
  task.state.set(PAGEMAP, opened);
  ctx.atEnd(() => {
    task.state.delete(PAGEMAP);
    fs.closeSync(opened);
  });
  return opened;
}

/**
 * Every page of a private anonymous area, without reading its pagemap, when smaps (read while the
 * process is frozen, as the pagemap would be) already says each page is an anonymous page or
 * swapped: Anonymous + Swap = Size. smaps counts each page table entry once (a present anonymous
 * page, or a migration entry to one, under Anonymous; a swap entry under Swap), and neither counts
 * the zero page or a marker, so no entry is left that the pagemap would show otherwise than
 * present or swapped and not a file's. Those are stored by every kind that stores both, so the
 * runs are what the pagemap gives, cut the same way; the page walk (16 ms per touched GiB here)
 * is saved from the frozen window. Not for a file mapping: smaps counts a tmpfs file's swapped
 * pages under Swap where the page table has nothing. Null otherwise (the pagemap decides).
 */
export function wholeAreaRuns(vma: VmaEntry, kind: VmaKindHandler): Array<[number, number]> | null {
  if (vma.shared || vma.inode !== 0n || vma.size <= 0 || vma.anonymous + vma.swap !== vma.size) return null;
  if (!kind.storesPage(PM_PRESENT) || !kind.storesPage(PM_SWAPPED)) return null;
  const PAGE = linux.pageSize();
  const n = Number((vma.end - vma.start) / BigInt(PAGE));
  if (n * (PAGE / 1024) !== vma.size) return null; // smaps disagrees with the range: not to be trusted
  const runs: Array<[number, number]> = [];
  for (let first = 0; first < n; first += CHUNK_PAGES) runs.push([first, Math.min(CHUNK_PAGES, n - first)]);
  return runs;
}

/**
 * The same through PAGEMAP_SCAN (Linux 6.7): the kernel returns regions of pages that share
 * their categories, so a fully touched GiB is one region instead of 262144 entries read and
 * tested one by one. Each region is put to the kind as the pagemap entry its pages would have
 * (present, swapped, file bits). Null where the kernel has no PAGEMAP_SCAN.
 */
export function scannedRuns(ctx: CheckpointContext, task: CheckpointTask, vma: VmaEntry, kind: VmaKindHandler): Array<[number, number]> | null {
  const PAGE = linux.pageSize();
  const P = linux.PAGE_IS;
  const fd = pagemapOf(ctx, task);
  if (fd === undefined) return null;
  // PAGE_IS_FILE is asked only where a page may be a file's: for each present page the kernel then
  // looks up the page itself (vm_normal_page), 23 ms of a touched GiB's 25 here (bench/README.md
  // "The pre-copy"). A private anonymous area holds anonymous pages and the zero page, never a
  // file's (the vDSO's special pages are not anonymous: [vdso] keeps the question).
  const anonymous = !vma.shared && vma.inode === 0n && !vma.path.startsWith('[v');
  const regions = linux.pagemapScan(fd, vma.start, vma.end, P.PRESENT | P.SWAPPED, P.PRESENT | P.SWAPPED | (anonymous ? 0n : P.FILE));
  if (!regions) return null;
  const runs: Array<[number, number]> = [];
  for (const r of regions) {
    const entry = (r.categories & P.PRESENT ? PM_PRESENT : 0n) | (r.categories & P.SWAPPED ? PM_SWAPPED : 0n) | (r.categories & P.FILE ? PM_FILE_OR_SHARED : 0n);
    if (!kind.storesPage(entry)) continue;
    let first = Number((r.start - vma.start) / BigInt(PAGE));
    let count = Number((r.end - r.start) / BigInt(PAGE));
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === first && last[1] < CHUNK_PAGES) {
      const add = Math.min(count, CHUNK_PAGES - last[1]);
      last[1] += add;
      first += add;
      count -= add;
    }
    for (; count > 0; first += CHUNK_PAGES, count -= CHUNK_PAGES) runs.push([first, Math.min(CHUNK_PAGES, count)]);
  }
  return runs;
}

/** The same from /proc/PID/pagemap, entry by entry. */
export function pagemapRuns(task: CheckpointTask, vma: VmaEntry, kind: VmaKindHandler): Array<[number, number]> {
  const PAGE = linux.pageSize();
  const n = Number((vma.end - vma.start) / BigInt(PAGE));
  const runs: Array<[number, number]> = [];
  const BATCH = 65536;
  let start = -1; // the run being built: [start, start + len)
  let len = 0;
  for (let base = 0; base < n; base += BATCH) {
    const pm = linux.readPagemap(task.pid, vma.start + BigInt(base * PAGE), Math.min(BATCH, n - base), PAGE);
    for (let i = 0; i < pm.length; i++) {
      if (!kind.storesPage(pm[i])) continue;
      const idx = base + i;
      if (start >= 0 && start + len === idx && len < CHUNK_PAGES) {
        len++;
        continue;
      }
      if (start >= 0) runs.push([start, len]);
      start = idx;
      len = 1;
    }
  }
  if (start >= 0) runs.push([start, len]);
  return runs;
}

/**
 * Whether an area's pages can come from a copy-on-write snapshot: private memory that fork
 * copies. Shared mappings are the same memory in the copy, MADV_DONTFORK areas (VmFlags `dc`)
 * are absent from it and MADV_WIPEONFORK areas (`wf`) empty: those are read while frozen.
 */
export function snapshotHolds(vma: VmaEntry): boolean {
  return !vma.shared && !vma.vmFlags.includes('dc') && !vma.vmFlags.includes('wf');
}

/**
 * The task's snapshot, taken now (the task is frozen) when the flow defers pages and the task
 * can be copied; it ends with the checkpoint. Undefined otherwise: pages are then read while frozen.
 */
export function takeSnapshot(ctx: CheckpointContext, task: CheckpointTask): MemorySnapshot | undefined {
  if (!ctx.deferPages || !task.tracee.snapshotMemory) return undefined;
  const none = (why: string) => ctx.log.info(`pid ${task.pid}: no copy-on-write snapshot: ${why}; its pages are copied while it is frozen`);
  const adopter = adoptedInTree(ctx, task);
  if (adopter !== undefined) {
    none(`its ancestor ${adopter}, a process of the tree, is a child subreaper or cannot tell (it would adopt the snapshot process)`);
    return undefined;
  }
  const snap = ctx.timed('snapshot', () => task.tracee.snapshotMemory!(none));
  if (snap) trackUses(ctx, snap);
  return snap;
}

/** Per checkpoint, whether a process of the tree is a child subreaper (undefined: it could not tell). */
const SUBREAPERS = new WeakMap<CheckpointContext, Map<number, boolean | undefined>>();

/**
 * A snapshot process is orphaned on purpose (arch snapshot.ts): the kernel gives it to the nearest
 * child subreaper among the ancestors of the task (or to init). Where that is a process of the
 * tree, the tree would see it (a child, its SIGCHLD, its wait status): returns that ancestor's pid,
 * or one that cannot tell (a zombie, a failed call). The task itself is asked by snapshotMemory;
 * ancestors outside the tree may adopt it, as for a single process.
 */
function adoptedInTree(ctx: CheckpointContext, task: CheckpointTask): number | undefined {
  const tasks = ctx.tree?.tasks;
  if (!tasks || tasks.length < 2) return undefined;
  const known = SUBREAPERS.get(ctx) ?? new Map<number, boolean | undefined>();
  SUBREAPERS.set(ctx, known);
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  for (let pid = task.pid; pid !== ctx.tree!.root; ) {
    const parent = byPid.get(linux.readStat(pid).ppid);
    if (!parent) return undefined; // not below the root any more (the root's own ancestors may adopt it)
    if (!known.has(parent.pid)) known.set(parent.pid, parent.zombie ? undefined : isChildSubreaper(parent.tracee));
    if (known.get(parent.pid) !== false) return parent.pid;
    pid = parent.pid;
  }
  return undefined;
}

/** One page buffer per checkpoint, reused for every run of pages. */
const pageBuffers = new WeakMap<CheckpointContext, Buffer>();

function pageBuffer(ctx: CheckpointContext, bytes: number): Buffer {
  let b = pageBuffers.get(ctx);
  if (!b || b.length < bytes) {
    b = Buffer.allocUnsafe(Math.max(bytes, b?.length ?? 0));
    pageBuffers.set(ctx, b);
  }
  return b.subarray(0, bytes);
}

/** Bytes of pages between two safe points of the dump (ctx.checkpointYield). */
const YIELD_BYTES = 32 * 1024 * 1024;
const sinceYield = new WeakMap<CheckpointContext, number>();

/**
 * Writes the PAGES objects of one area: read now from the frozen task, or, given a snapshot,
 * read from it once the task runs again (the objects are deferred: ctx.writeWithPagesLater).
 */
export async function dumpPages(ctx: CheckpointContext, task: CheckpointTask, vma: VmaEntry, runs: Array<[number, number]>, vmaTag: number, snap?: MemorySnapshot, atEnd?: { rank: number }): Promise<void> {
  const t = task.tracee;
  const PAGE = pageOf(ctx);
  for (const [runFirst, runCount] of runs) for (let done = 0; done < runCount; done += OBJECT_PAGES) {
    const first = runFirst + done;
    const count = Math.min(OBJECT_PAGES, runCount - done);
    const img = new PagesImage();
    img.vaddr = vma.start + BigInt(first * PAGE);
    img.count = count;
    const bytes = count * PAGE;
    if (snap) snap.expect?.(img.vaddr, bytes);
    // From the snapshot straight into the image file, where the image is a file that allows it.
    const toFile = snap?.spliceInto && ((fd: number, position: number) => ctx.timed('splice pages', () => snap.spliceInto!(img.vaddr, bytes, fd, position)));
    const read = (buf: Buffer) => ctx.timed('read pages', () => (snap ?? t).readMemoryInto(img.vaddr, buf, 0, bytes));
    // Read from the snapshot: the last such read lets it go (snapshot-uses.ts).
    const later = snap ? payloadFrom(snap, read, toFile) : undefined;
    if (atEnd) {
      // To the pages section: read when it is written, from the snapshot or the task, frozen until
      // then; a task let go before the pages are written and without a snapshot: read now.
      let fill = later?.fill ?? read;
      if (!snap && ctx.deferPages) {
        const copy = Buffer.allocUnsafe(bytes);
        fill(copy);
        fill = (buf) => copy.copy(buf);
      }
      ctx.writeWithPagesAtEnd(img, bytes, fill, vmaTag, img.vaddr, atEnd.rank, later?.toFile);
      continue;
    }
    if (later) {
      ctx.writeWithPagesLater(img, bytes, later.fill, vmaTag, later.toFile);
      continue;
    }
    const data = ctx.timed('read pages', () => {
      const buf = pageBuffer(ctx, bytes);
      t.readMemoryInto(img.vaddr, buf, 0, bytes);
      return buf;
    });
    ctx.timed('write pages', () => ctx.writeWithPages(img, data, vmaTag));
    ctx.progress({ phase: 'pages', pid: task.pid, bytes });
    const n = (sinceYield.get(ctx) ?? 0) + bytes;
    sinceYield.set(ctx, n >= YIELD_BYTES ? 0 : n);
    if (n >= YIELD_BYTES) await ctx.checkpointYield();
  }
}

export function restorePages(ctx: RestartContext, task: RestartTask, o: RestoreObject): void | Promise<void> {
  const img = o.obj as PagesImage;
  const PAGE = pageOf(ctx);
  const vmas = task.state.get(VMAS_BY_TAG);
  const area = vmas?.get(o.ptag);
  const vma = area?.img;
  const end = img.vaddr + BigInt(img.count * PAGE);
  const bad = (why: string) => new CptError('EBADIMG', `pages at 0x${img.vaddr.toString(16)} (image offset ${o.offset}): ${why}`, { pid: task.pid, object: 'pages' });
  if (!area || !vma) throw bad('they belong to no memory area');
  // Never through a shared file mapping: that would write the image's data into the file.
  if (!area.kind.storesPages(vma)) throw bad(`${describeVma(vma)} is a ${vma.shared ? 'shared ' : ''}${vma.kind} mapping, whose contents are not kept in an image (a shared file mapping's are the file's; a droppable area's may be dropped)`);
  const length = o.pages?.length ?? o.filePayload?.length ?? 0;
  if (length !== img.count * PAGE || (!o.pages && !o.filePayload)) throw bad(`payload is ${length} bytes for ${img.count} pages`);
  if (img.vaddr < vma.start || end > vma.end || img.vaddr % BigInt(PAGE) !== 0n) throw bad(`outside ${describeVma(vma)}`);
  if (o.filePayload) {
    // Left in the image file: read by the process itself where it can write the area, else by cptrst.
    const file = filePagesOf(ctx);
    if (fillsLazily(vma, vma.kind)) return file.add(task, vma, img.vaddr, o.filePayload);
    file.write(task, img.vaddr, o.filePayload);
    return;
  }
  task.tracee!.writeMemory(img.vaddr, o.pages!);
  ctx.reader.recycle(o.pages); // written: the reader may read the next payload into the same memory
}
