/**
 * Private memory that a child still shares copy-on-write with its parent: private anonymous
 * areas, and the pages a private file mapping holds as anonymous copies (a library's data after
 * its relocations, written before the fork).
 *
 * After fork, parent and child map the same physical pages until one of them writes. Stored per
 * process and restored as separate copies, such memory would use as much more memory as there are
 * children. Instead a child's private anonymous area is kept from its parent when the parent has
 * an area with the same range, protection, name and flags:
 *
 * Checkpoint: once the whole tree is frozen, and before any page is read (reading pages pins
 * them, and the kernel gives a process its own copy of a shared anonymous page it pins), the
 * pagemaps of both are compared page by page. A page with the same page frame (or the same swap
 * slot) in both is the same memory, so it is not stored for the child; the child's other pages
 * are stored as usual, and the pages the parent has and the child has not (untouched or discarded
 * in the child) are listed to be discarded. An area that shares no page is stored as usual. Page
 * frames are only shown to a privileged reader; without them nothing is shared and every page is
 * stored. The frozen processes change no memory, and what cptrst writes into them (a signal
 * frame on the stack) breaks the sharing of that page before any comparison, and is never what
 * is read back: a page kept is one whose contents in the parent's image are the child's.
 *
 * Restart: the child is made by clone inside its parent once the parent's memory is complete (the
 * parent's objects all come before the child's), so it already maps the parent's pages
 * copy-on-write. Its MM object lists the areas it keeps (MmImage.keptPrivate): they are left in
 * place when its address space is cleared; its VMA (inheritedAt = its own start) then gets its
 * protection and flags, the listed pages are discarded (MADV_DONTNEED: they read as zeros again,
 * as in the original), and its own pages are written over the parent's copies.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, StateKey, linux, objectType, u64s,
} from '@cptrst/core';
import { DERIVED_FLAGS, GUARD_FLAG, LOCK_FLAGS, VmaEntry, VmaImage, describeVma, protOf } from './vma';
import { isAnonCopy, isPresentOrSwapped } from './pages';

const { SYS, PROT, MADV } = linux;

/** Under the VMA of an area kept from the parent: the pages to discard after the clone. */
@objectType(ObjectType.VMA_KEPT, 'vma-kept', { parents: [ObjectType.VMA] })
export class VmaKeptImage {
  /** [first page index, count] pairs of pages the parent has and the task has not. */
  @u64s() discard: bigint[] = [];
}

/** What the comparison decided for one area of the task. */
export interface KeptArea {
  /** Runs [first page index, count) of the task's own pages, stored. */
  runs: Array<[number, number]>;
  /** Runs [first page index, count) to discard after the clone. */
  discard: Array<[number, number]>;
}

/** The task's areas kept from its parent, by start address (checkpoint side). */
const KEPT_AREAS = new StateKey<Map<bigint, KeptArea>>('mm.keptAreas');

/** The private anonymous areas of each task checked so far (parents before children), by pid. */
const ANON_SEEN = new WeakMap<CheckpointContext, Map<number, VmaEntry[]>>();

/**
 * Flags that make an area's copy in a child differ from the parent's (or absent): never kept. Guard
 * regions too: the child's are copied at fork and may differ since (guard markers also look like
 * one swap slot to the page comparison).
 */
const NOT_KEPT_FLAGS = ['dc', 'wf', 'dp', GUARD_FLAG];
const PFN_MASK = (1n << 55n) - 1n;
/** Longest run of stored pages (as pages.ts's storedRuns). */
const CHUNK_PAGES = 4096;

function flagsKey(v: VmaEntry): string {
  return v.vmFlags.filter((f) => !DERIVED_FLAGS.has(f) && !LOCK_FLAGS.has(f)).sort().join(' ');
}

function keepable(v: VmaEntry): boolean {
  return !v.vmFlags.some((f) => NOT_KEPT_FLAGS.includes(f));
}

/**
 * At check: remembers the task's private anonymous areas and private file mappings, and returns
 * those of them its parent (a live task of the tree, checked before it) has with the same range,
 * protection, name, flags and (for a file) the same file at the same offset.
 */
export function keepCandidates(ctx: CheckpointContext, task: CheckpointTask, anon: VmaEntry[]): VmaEntry[] {
  const seen = ANON_SEEN.get(ctx) ?? new Map<number, VmaEntry[]>();
  ANON_SEEN.set(ctx, seen);
  seen.set(task.pid, anon);
  const parents = seen.get(linux.readStat(task.pid).ppid);
  if (!parents) return [];
  const byStart = new Map(parents.map((p) => [p.start, p]));
  return anon.filter((v) => {
    const p = byStart.get(v.start);
    return !!p && p.end === v.end && protOf(p) === protOf(v) && p.path === v.path && keepable(v) && keepable(p) && flagsKey(p) === flagsKey(v) &&
      !p.shared && !v.shared && p.inode === v.inode && p.major === v.major && p.minor === v.minor && p.offset === v.offset;
  });
}

/** The same memory: present with the same page frame, or swapped out to the same slot. */
function samePage(a: bigint, b: bigint): boolean {
  const where = a >> 62n; // 2: present, 1: swapped
  return (where === 2n || where === 1n) && where === b >> 62n && (a & PFN_MASK) !== 0n && (a & PFN_MASK) === (b & PFN_MASK);
}

/** Appends page `i` to a list of runs. */
function addPage(runs: Array<[number, number]>, i: number): void {
  const last = runs[runs.length - 1];
  if (last && last[0] + last[1] === i && last[1] < CHUNK_PAGES) last[1]++;
  else runs.push([i, 1]);
}

/**
 * At check, the tree frozen and no page read yet: compares each candidate area with the parent's
 * and keeps those that share pages (KEPT_AREAS).
 */
export function compareWithParent(task: CheckpointTask, candidates: VmaEntry[]): Map<bigint, KeptArea> {
  const kept = new Map<bigint, KeptArea>();
  task.state.set(KEPT_AREAS, kept);
  if (!candidates.length) return kept;
  const ppid = linux.readStat(task.pid).ppid;
  const PAGE = linux.pageSize();
  for (const v of candidates) {
    const n = Number((v.end - v.start) / BigInt(PAGE));
    const mine = linux.readPagemap(task.pid, v.start, n, PAGE);
    const theirs = linux.readPagemap(ppid, v.start, n, PAGE);
    const area: KeptArea = { runs: [], discard: [] };
    let shared = 0;
    // What each kind stores: any page of anonymous memory, the anonymous copies of a file mapping
    // (its other pages are the file's, the same in both); only those can be shared copies.
    const stored = v.inode === 0n ? isPresentOrSwapped : isAnonCopy;
    for (let i = 0; i < n; i++) {
      const m = mine[i];
      if (stored(m) && stored(theirs[i]) && samePage(m, theirs[i])) shared++;
      else if (stored(m)) addPage(area.runs, i);
      else if (stored(theirs[i])) addPage(area.discard, i); // discarded, a file mapping's page is the file's again
    }
    if (shared) kept.set(v.start, area);
  }
  return kept;
}

/** Checkpoint: the record of an area kept from the parent, the pages to discard (none for any other area). */
export function dumpKeptRecord(task: CheckpointTask, v: VmaEntry, out: KindRecordWriter): void {
  const kept = task.state.get(KEPT_AREAS)?.get(v.start);
  if (!kept) return;
  const rec = new VmaKeptImage();
  rec.discard = kept.discard.flatMap(([first, count]) => [BigInt(first), BigInt(count)]);
  out.write(rec);
}

// ---------------------------------------------------------------------------------------------
// restart

/** The tasks of a restart whose MM object was restored (a kept area's parent must be one). */
const MM_RESTORED = new WeakMap<RestartContext, Set<number>>();
/** The areas the task keeps from its parent: end by start (restart side). */
const KEPT_RANGES = new StateKey<Map<bigint, bigint>>('mm.keptRanges');

/** Marks the task's MM as restored (its children may keep its memory). */
export function mmRestored(ctx: RestartContext, task: RestartTask): void {
  const set = MM_RESTORED.get(ctx) ?? new Set<number>();
  MM_RESTORED.set(ctx, set);
  set.add(task.pid);
}

/**
 * Checks MmImage.keptPrivate before the address space is cleared: each range is an area of the
 * image's layout, the task's parent is a task of this restart whose memory is restored, and the
 * task maps private anonymous memory there now (its copy of the parent's). Returns the ranges,
 * which the clearing leaves alone.
 */
export function keptRanges(ctx: RestartContext, task: RestartTask, kept: bigint[], layout: Array<{ start: bigint; end: bigint }>): Array<{ start: bigint; end: bigint }> {
  const bad = (why: string) => new CptError('EBADIMG', why, { pid: task.pid, object: 'mm' });
  const ranges = new Map<bigint, bigint>();
  task.state.set(KEPT_RANGES, ranges);
  if (!kept.length) return [];
  if (kept.length % 2 || kept.length > 2 * 65536) throw bad('malformed list of areas kept from the parent');
  const ppid = linux.readStat(task.pid).ppid;
  if (!MM_RESTORED.get(ctx)?.has(ppid)) throw bad(`memory kept from the parent, but the task's parent (${ppid}) is not a restored process of the image`);
  const here = linux.readMaps(task.pid);
  const out: Array<{ start: bigint; end: bigint }> = [];
  for (let i = 0; i < kept.length; i += 2) {
    const start = kept[i];
    const end = kept[i + 1];
    const what = `memory kept from the parent at ${start.toString(16)}-${end.toString(16)}`;
    if (!layout.some((r) => r.start === start && r.end === end) || ranges.has(start)) throw bad(`${what}: not an area of the image's layout`);
    // Covered, without a gap, by private mappings of the parent's copy (a file's is checked by its kind).
    let at = start;
    for (const e of here) {
      if (e.end <= at) continue;
      if (e.start > at || e.shared || e.path === '[vdso]' || e.path === '[vvar]' || e.path === '[vvar_vclock]') break;
      at = e.end;
      if (at >= end) break;
    }
    if (at < end) throw bad(`${what}: the parent has no private memory there`);
    ranges.set(start, end);
    out.push({ start, end });
  }
  return out;
}

/**
 * Restores a kept area: the parent's copy is in place (keptRanges); it gets the area's own
 * protection, and the pages the task did not have are discarded. The caller names it and sets
 * its flags; the task's own pages follow.
 */
export function keepArea(task: RestartTask, img: VmaImage, kept: VmaKeptImage[]): void {
  const t = task.tracee!;
  const what = describeVma(img);
  const bad = (why: string) => new CptError('EBADIMG', why, { pid: task.pid, object: what });
  if (img.inheritedAt !== img.start || kept.length !== 1) throw bad('an area kept from the parent needs one vma-kept record and its own address as inheritedAt');
  if (task.state.get(KEPT_RANGES)?.get(img.start) !== img.end) throw bad('the task\'s mm object does not keep this area from the parent');
  const len = img.end - img.start;
  t.syscallOk(SYS.mprotect, [img.start, len, img.prot & (PROT.READ | PROT.WRITE | PROT.EXEC)], `mprotect of ${what}`);
  const { discard } = kept[0];
  const PAGE = BigInt(linux.pageSize());
  const pages = len / PAGE;
  if (discard.length % 2) throw bad('malformed list of pages to discard');
  for (let i = 0; i < discard.length; i += 2) {
    const first = discard[i];
    const count = discard[i + 1];
    if (count <= 0n || first + count > pages) throw bad(`pages ${first}+${count} to discard are outside the area`);
    t.syscallOk(SYS.madvise, [img.start + first * PAGE, count * PAGE, MADV.DONTNEED], `madvise(MADV_DONTNEED) of pages of ${what}`);
  }
}
