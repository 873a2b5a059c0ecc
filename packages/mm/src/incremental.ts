/**
 * Incremental checkpoints (`cptrst checkpoint --parent PREV PID`, `--track`). An image of a chain
 * holds, per private area, the pages changed since its parent image (PAGES as usual), the pages
 * that are the parent's (VMA_PARENT_PAGES: runs), and the 64-bit hash of every page the area has
 * (VMA_HASHES), whichever image holds it. Under the head: the image's own id (IMAGE_ID) and its
 * parent (IMAGE_PARENT: path, id, size); under each task: how its changed pages were found
 * (TASK_TRACKING: uffd-wp, hashes or full, its identity and its tracker).
 *
 * Which pages changed: with write tracking (tracking.ts) valid since the parent, the pages the
 * kernel saw written; otherwise (no tracking here, tracker gone, another process: pid, start time
 * or boot id differ) every present page is read and compared by hash with the parent's. Pages not
 * present now are absent (as in any image), whatever the parent had.
 *
 * Restart reads the chain: a parent's path is untrusted (a relative one is taken from the
 * directory of the image that names it), and it must be a regular file of the image's owner, with
 * the recorded id and size, at most MAX_CHAIN deep and without a cycle. Each page taken from a
 * parent is checked against the hash the child recorded before it is written into the process.
 */
import type * as Crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointContext, CheckpointTask, CptError, ImageReader, ImageRecord, MemorySnapshot, ObjectType, RestartContext, RestartFlags, RestartTask, RestoreObject,
  StateKey, bytes, fileSource, hashPages, kindRecordWriter, linux, objectType, str, u32, u64, u64s,
} from '@cptrst/core';
import { archOf } from '@cptrst/core';
import { VMAS_BY_TAG, VmaEntry, VmaImage, VmaKindHandler, describeVma } from './vma';
import { PagesImage, snapshotHolds } from './pages';
import { AnonVma } from './anon';
import { payloadFrom } from './snapshot-uses';
import { Present, Span, groups, pagesIn, pushSpan, subtract } from './spans';
import { Range, TrackerRef, Tracking, boundedRanges, protect, record, registerAreas, startSpares, stopTracker, tracking, validTracking, writtenRegions } from './tracking';
import { knownTrackers } from './uffd-areas';

/** How deep a chain of parents may go at restart. */
export const MAX_CHAIN = 64;
/** Pages per PAGES object, and per VMA_HASHES object. */
const OBJECT_PAGES = 512;
const HASH_PAGES = 65536;
const HASH_BYTES = 8;
/**
 * Whether a pagemap entry is a uffd-wp marker, not a page: swapped (bit 62), not present (63), and
 * of swap type 31 (the low 5 bits), the type the kernel gives pte markers (the last of the 32).
 */
const isMarker = (pm: bigint): boolean => pm >= 1n << 62n && pm < 1n << 63n && (pm & 0x1fn) === 0x1fn;

@objectType(ObjectType.IMAGE_ID, 'image-id', { parents: [ObjectType.HEAD], optional: true })
export class ImageIdImage {
  @str() id = '';
}

@objectType(ObjectType.IMAGE_PARENT, 'image-parent', { parents: [ObjectType.HEAD] })
export class ImageParentImage {
  /** As given; a relative path is relative to the directory of this image. */
  @str() path = '';
  @str() id = '';
  @u64() size = 0n;
}

@objectType(ObjectType.TASK_TRACKING, 'task-tracking', { parents: [ObjectType.TASK], optional: true })
export class TaskTrackingImage {
  /** uffd-wp, hashes or full. */
  @str() method = '';
  @str() why = '';
  @u64() startTime = 0n;
  @str() bootId = '';
  /** The tracker holding the process's write tracking from this image on (0: none). */
  @u32() trackerPid = 0;
  @u64() trackerStart = 0n;
  @u64() storedPages = 0n;
  @u64() parentPages = 0n;
}

@objectType(ObjectType.VMA_HASHES, 'vma-hashes', { parents: [ObjectType.VMA], optional: true })
export class VmaHashesImage {
  /** [vaddr, count] pairs, in address order. */
  @u64s() runs: bigint[] = [];
  /** 8 bytes per page of the runs: CRC-32C then CRC-32 (hashPages). */
  @bytes() hashes: Buffer = Buffer.alloc(0);
}

@objectType(ObjectType.VMA_PARENT_PAGES, 'vma-parent-pages', { parents: [ObjectType.VMA] })
export class VmaParentPagesImage {
  /** [vaddr, count] pairs of the area's pages that are the parent image's, in address order. */
  @u64s() runs: bigint[] = [];
}

@objectType(ObjectType.VMA_PAGE_RUNS, 'vma-page-runs', { parents: [ObjectType.VMA] })
export class PageRunsImage {
  /** [vaddr, count] pairs in address order; the payload holds their pages one run after the other. */
  @u64s() runs: bigint[] = [];
}

/** Page hashes by page number (address / page size, exact as a double): runs in address order, with their hashes. */
class PageHashes {
  private readonly starts: number[] = [];
  private readonly counts: number[] = [];
  private readonly chunks: Buffer[] = [];
  constructor(private readonly page: bigint) {}

  add(runs: bigint[], hashes: Buffer): void {
    let o = 0;
    for (let i = 0; i + 1 < runs.length; i += 2) {
      const n = Number(runs[i + 1]);
      this.starts.push(Number(runs[i] / this.page));
      this.counts.push(n);
      this.chunks.push(hashes.subarray(o, o + n * HASH_BYTES));
      o += n * HASH_BYTES;
    }
  }

  /** The run holding page `p` and the page's index in it, or -1. */
  private find(p: number): [number, number] {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid] > p) hi = mid - 1;
      else lo = mid + 1;
    }
    if (hi < 0 || p - this.starts[hi] >= this.counts[hi]) return [-1, 0];
    return [hi, p - this.starts[hi]];
  }

  /** The hash of the page at `vaddr`, or undefined. */
  get(vaddr: bigint): Buffer | undefined {
    const [r, i] = this.find(Number(vaddr / this.page));
    return r < 0 ? undefined : this.chunks[r].subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
  }

  /**
   * The parts of pages [s, e) (page numbers) that have a hash, in order and without overlap: for
   * each, its first and end page, the hashes' buffer and the byte offset of its first page's hash.
   */
  eachIn(s: number, e: number, fn: (first: number, end: number, chunk: Buffer, at: number) => void): void {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid] + this.counts[mid] <= s) lo = mid + 1;
      else hi = mid;
    }
    let from = s;
    for (let r = lo; r < this.starts.length && this.starts[r] < e; r++) {
      const a = Math.max(from, this.starts[r]);
      const b = Math.min(e, this.starts[r] + this.counts[r]);
      if (a >= b) continue;
      fn(a, b, this.chunks[r], (a - this.starts[r]) * HASH_BYTES);
      from = b;
    }
  }

  /** Whether page number `p` has the hash found in `h` at `at`. */
  equals(p: number, h: Buffer, at: number): boolean {
    const [r, i] = this.find(p);
    return r >= 0 && this.chunks[r].compare(h, at, at + HASH_BYTES, i * HASH_BYTES, (i + 1) * HASH_BYTES) === 0;
  }
}

/**
 * The process each task-level or area-level record of an image belongs to, by its parent's tag.
 * An area's pages are not always next to it (the pages section at the end of an image holds those
 * of any process): records are given to a process by the tag they name, never by the last TASK read.
 */
class TaskOfTag {
  private readonly pids = new Map<number, number>();

  see(rec: { type: number; tag: number; ptag: number; obj?: unknown }): void {
    if (rec.type === ObjectType.TASK) this.pids.set(rec.tag, (rec.obj as { pid: number }).pid);
    else if (rec.type === ObjectType.VMA) {
      const pid = this.pids.get(rec.ptag);
      if (pid !== undefined) this.pids.set(rec.tag, pid);
    }
  }

  /** The pid of the task of tag `tag`, or of the task whose area has tag `tag`. */
  pidOf(tag: number): number | undefined {
    return this.pids.get(tag);
  }
}

// ---- checkpoint ----

interface ParentTask {
  tracking?: TaskTrackingImage;
  hashes: PageHashes;
}
interface ParentSummary {
  id: string;
  size: bigint;
  stored: string;
  tasks: Map<number, ParentTask>;
}
const PARENTS = new WeakMap<CheckpointContext, ParentSummary | null>();
const IMAGE_IDS = new WeakMap<CheckpointContext, string>();

/** The parent image's ids, trackers and page hashes (read once per checkpoint). */
function parentSummary(ctx: CheckpointContext): ParentSummary | null {
  if (PARENTS.has(ctx)) return PARENTS.get(ctx)!;
  const given = ctx.incremental?.parent;
  if (!given) {
    PARENTS.set(ctx, null);
    return null;
  }
  const object = `parent image ${given}`;
  const bad = (why: string) => new CptError('EINVAL', `${object}: ${why}`, { object });
  let fd: number;
  try {
    fd = fs.openSync(given, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw bad(`cannot be opened (${(e as NodeJS.ErrnoException).code})`);
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile()) throw bad('is not a regular file');
    const reader = new ImageReader(fileSource(fd, object));
    const head = reader.readHead();
    if (head.pageSize !== linux.pageSize()) throw bad(`has ${head.pageSize}-byte pages`);
    const PAGE = BigInt(head.pageSize);
    const summary: ParentSummary = { id: '', size: st.size, stored: storedParentPath(ctx, given), tasks: new Map() };
    const owners = new TaskOfTag();
    for (let rec = reader.next(); rec; rec = reader.next()) {
      if (rec.pages) {
        if (rec.pagesOffset === undefined) throw bad('has compressed pages: an image taken with --compress cannot be a parent');
        reader.recycle(rec.pages);
      }
      owners.see(rec);
      if (rec.type === ObjectType.IMAGE_ID) summary.id = (rec.obj as ImageIdImage).id;
      else if (rec.type === ObjectType.TASK) summary.tasks.set((rec.obj as { pid: number }).pid, { hashes: new PageHashes(PAGE) });
      else if (rec.type === ObjectType.TASK_TRACKING) {
        const t = summary.tasks.get(owners.pidOf(rec.ptag) ?? 0);
        if (t) t.tracking = rec.obj as TaskTrackingImage;
      } else if (rec.type === ObjectType.VMA_HASHES) {
        const h = rec.obj as VmaHashesImage;
        summary.tasks.get(owners.pidOf(rec.ptag) ?? 0)?.hashes.add(h.runs, h.hashes);
      }
    }
    if (!summary.id) throw bad('has no image id and no page hashes: only an image taken with --track or --parent can be a parent');
    PARENTS.set(ctx, summary);
    return summary;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads the parent image (before the freeze); with `root`, starts a tracker for each process of
 * its tree that has no valid tracking since the parent (tracking.ts startSpares: armed while
 * frozen, or ended with the checkpoint).
 */
export function prepareIncremental(ctx: CheckpointContext, root?: number): void {
  // A chain reads its parents' pages where they are in the file; compressed payloads have no such place.
  if (ctx.writer.compresses) throw new CptError('EINVAL', 'an incremental or tracking checkpoint cannot compress its image: a compressed image cannot be a parent, nor take pages from one', { object: 'incremental image' });
  const parent = parentSummary(ctx);
  if (!FRESH_IDS.has(ctx)) FRESH_IDS.set(ctx, newImageId());
  if (root !== undefined) {
    const boot = linux.bootId();
    const want: Array<{ pid: number; start: bigint }> = [];
    for (const pid of linux.descendants(root)) {
      if (linux.stateIfAlive(pid) === 'Z') continue;
      let start: bigint;
      try {
        start = BigInt(linux.readStat(pid).startTime);
      } catch {
        continue; // gone
      }
      const { recorded, parentId } = trackedBy(parent, pid, start, boot);
      if (!validTracking(recorded, pid, start, parentId).t) want.push({ pid, start });
    }
    ctx.timed('prepare trackers', () => startSpares(ctx, want));
  }
  // The CRC code loads on first use (a few ms): not in the frozen window, where areas that are not
  // tracked have their pages hashed.
  const page = linux.pageSize();
  hashPages(Buffer.alloc(page), page, Buffer.alloc(HASH_BYTES));
}

/** The parent's path as the image records it: absolute as given, or relative to the new image's directory. */
function storedParentPath(ctx: CheckpointContext, given: string): string {
  if (path.isAbsolute(given)) return given;
  const out = ctx.incremental?.imagePath;
  if (!out || out === '-') return path.resolve(given);
  return path.relative(path.dirname(path.resolve(out)), path.resolve(given)) || '.';
}

/** The id of the image being taken, made before the freeze (loading crypto takes a few ms). */
const FRESH_IDS = new WeakMap<CheckpointContext, string>();

function newImageId(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded by incremental checkpoints only
  return (require('crypto') as typeof Crypto).randomUUID();
}

/** Writes the image's id and its parent under the head, once per image. */
function writeImageIds(ctx: CheckpointContext): string {
  let id = IMAGE_IDS.get(ctx);
  if (id) return id;
  id = FRESH_IDS.get(ctx) ?? newImageId();
  IMAGE_IDS.set(ctx, id);
  const idImg = new ImageIdImage();
  idImg.id = id;
  ctx.write(idImg, ctx.headTag);
  const parent = parentSummary(ctx);
  if (parent) {
    const p = new ImageParentImage();
    p.path = parent.stored;
    p.id = parent.id;
    p.size = parent.size;
    ctx.write(p, ctx.headTag);
  }
  return id;
}

/**
 * The pages of the tracked areas written since the parent, read while frozen (nothing cleared):
 * those of the registered areas the bits show, every page of an area registered only now or whose
 * bits cannot be read, and what the tracker carried from an image before (its base is the parent).
 */
function writtenSinceParent(pid: number, vmas: VmaEntry[], registered: Set<bigint>, carried: Range[]): Range[] {
  const out = [...carried];
  const pm = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    for (const v of vmas) {
      const w = registered.has(v.start) ? writtenRegions(pm, v.start, v.end) : null;
      if (w) out.push(...w);
      else out.push({ start: v.start, end: v.end });
    }
  } finally {
    fs.closeSync(pm);
  }
  return out;
}

/**
 * What the parent image says of process `pid` (started at `start`): whether it holds this very
 * process (pid, start time and boot id), and then its recorded tracker and the parent's id.
 */
function trackedBy(parent: ParentSummary | null, pid: number, start: bigint, boot: string): { same: boolean; recorded?: TrackerRef; parentId?: string } {
  const rec = parent?.tasks.get(pid)?.tracking;
  if (!parent || !rec || rec.startTime !== start || rec.bootId !== boot) return { same: false };
  return { same: true, recorded: rec.trackerPid ? { pid: rec.trackerPid, start: rec.trackerStart } : undefined, parentId: parent.id };
}

/** A process's incremental dump. */
export class IncrementalDump {
  private stored = 0;
  private fromParent = 0;
  private constructor(
    private readonly ctx: CheckpointContext,
    private readonly task: CheckpointTask,
    private readonly method: string,
    private readonly why: string,
    private readonly parent: ParentTask | undefined,
    private readonly track: Tracking | undefined,
    private readonly start: bigint,
    private readonly registered: Set<bigint>,
    /** Pages written since the parent, as page-number ranges [first, end) in order (uffd-wp). */
    private readonly written: Array<[number, number]>,
    /** Whether the tracker's state was recorded for this image: its bits are then cleared at finish. */
    private readonly recorded: boolean,
    private readonly snap: MemorySnapshot | undefined,
  ) {}

  /**
   * Decides how the task's changed pages are found, and starts or continues its tracking: the
   * pages written since the parent are read from the bits (and what the tracker carried) while
   * frozen and recorded in the tracker for this image (tracking.ts); finish() clears the bits.
   */
  static begin(ctx: CheckpointContext, task: CheckpointTask, vmas: VmaEntry[], registered: Set<bigint>, snap?: MemorySnapshot): IncrementalDump {
    const imageId = writeImageIds(ctx);
    const start = BigInt(linux.readStat(task.pid).startTime);
    const parent = parentSummary(ctx);
    const pt = parent?.tasks.get(task.pid);
    const { same, recorded, parentId } = trackedBy(parent, task.pid, start, linux.bootId());
    let why = '';
    if (parent && !pt) why = 'the parent image does not hold this process';
    else if (parent && !same) why = 'the parent image is of another process (pid, start time or boot id differ)';
    const got = ctx.timed('tracking', () => tracking(ctx, task, start, recorded, parentId, knownTrackers(ctx, task.pid)));
    let t = got.t;
    if (!why && got.why && parent) why = got.why;
    if (t) {
      // Areas not registered yet (new since the parent, or all of them for a new tracker).
      const todo = vmas.filter((v) => t!.fresh || !registered.has(v.start));
      try {
        ctx.timed('tracking', () => {
          registerAreas(t!.tracker, todo);
          t!.arm?.();
        });
      } catch (e) {
        stopTracker(t.tracker);
        if (parent) why = `write tracking failed: ${(e as Error).message}`;
        ctx.log.info(`pid ${task.pid}: no write tracking: ${(e as Error).message}`);
        t = undefined;
      }
    } else if (got.why) ctx.log.info(`pid ${task.pid}: no write tracking: ${got.why}`);
    let written: Range[] = [];
    let armed = false;
    if (t) {
      const mine = t;
      // A checkpoint that fails leaves no tracker it made (one it reused holds for this image's parent still).
      if (mine.fresh) ctx.onFailure(() => stopTracker(mine.tracker));
      if (mine.valid) written = ctx.timed('written pages', () => writtenSinceParent(task.pid, vmas, registered, mine.carried));
      try {
        ctx.timed('tracking', () => record(mine.tracker, imageId, mine.valid && parentId ? parentId : '', written));
        armed = true;
      } catch (e) {
        // The bits are left as they are: they hold for whatever the tracker said before.
        ctx.log.warn(`pid ${task.pid}: write tracking not re-armed: ${(e as Error).message}`);
      }
    }
    const method = !parent || !pt ? 'full' : t?.valid ? 'uffd-wp' : 'hashes';
    // In doubles (addresses are exact there): thousands of scattered ranges, where BigInt division costs.
    const PAGE = linux.pageSize();
    const pagesWritten = boundedRanges(written, Infinity).map((r): [number, number] => [Math.floor(Number(r.start) / PAGE), Math.ceil(Number(r.end) / PAGE)]);
    return new IncrementalDump(ctx, task, method, why, pt, t, start, registered, pagesWritten, armed, snap);
  }

  /** Whether the area is written incrementally: private memory whose pages the image stores. */
  static handles(v: VmaEntry, kind: VmaKindHandler, img: VmaImage, keptFromParent: boolean): boolean {
    return !v.shared && kind.storesPages(img) && !keptFromParent;
  }

  /** Whether an area is one write tracking registers: private anonymous memory (not droppable). */
  static tracks(v: VmaEntry, kind: VmaKindHandler): boolean {
    return kind instanceof AnonVma && !v.shared && !v.vmFlags.includes('dp');
  }

  /**
   * Writes the area: its VMA, its records, its changed pages, its hashes and its parent runs. The
   * plan is made by runs of pages (present, written, the parent's), never page by page: it is made
   * while the process is frozen, and a GiB is 262144 pages.
   */
  async dumpArea(v: VmaEntry, kind: VmaKindHandler, img: VmaImage, runs: Array<[number, number]>): Promise<void> {
    const ctx = this.ctx;
    const PAGE = linux.pageSize();
    const base = Number(v.start / BigInt(PAGE));
    let spans: Span[] = [];
    for (const [first, count] of runs) pushSpan(spans, base + first, base + first + count);
    // In a registered area, a page never populated carries a write-protect marker, which the scan
    // counts as swapped: it is no page. None where smaps counts every page anonymous or swapped (it
    // counts no marker): the pagemap is not read then.
    if (this.registered.has(v.start) && spans.length && v.anonymous + v.swap !== v.size) spans = subtract(spans, this.markers(v));
    const present = new Present(spans);
    // Every present page's hash is filled in below: copied from the parent's, or computed when read.
    const hashes = Buffer.allocUnsafe(present.count * HASH_BYTES);
    const fromParent: Span[] = [];
    const ph = this.parent?.hashes;
    if (ph && this.method === 'uffd-wp' && this.registered.has(v.start)) {
      // The pages present and not written since the parent, where the parent has their hash. The
      // parent's hashes are copied by present run (a few large copies, not one per gap between
      // written pages): those of the pages stored are replaced when the pages are read.
      const covered: Span[] = [];
      for (const [s, e] of spans) {
        ph.eachIn(s, e, (a, b, chunk, at) => {
          pushSpan(covered, a, b);
          chunk.copy(hashes, present.at(a) * HASH_BYTES, at, at + (b - a) * HASH_BYTES);
        });
      }
      const unwritten = subtract(spans, this.written);
      for (const r of subtract(unwritten, subtract(spans, covered))) fromParent.push(r);
    } else if (ph && this.method !== 'full') {
      // Compared by content: every present page is read and hashed (page by page, while frozen).
      await this.forEachChunk(spans, (p, buf, n) => {
        const at = present.at(p);
        hashPages(buf, PAGE, hashes, at * HASH_BYTES);
        for (let k = 0; k < n; k++) if (ph.equals(p + k, hashes, (at + k) * HASH_BYTES)) pushSpan(fromParent, p + k, p + k + 1);
      });
    }
    img.pageCount = BigInt(present.count);
    const vmaTag = ctx.write(img, this.task.tag);
    kind.dumpRecords?.(ctx, this.task, v, img, kindRecordWriter(ctx, kind, vmaTag));
    // The changed pages, read (again) and hashed as they are written: up to OBJECT_PAGES per object,
    // one PAGES object for a single run, else one VMA_PAGE_RUNS object (scattered pages would each
    // cost a page of header and padding as PAGES objects).
    const stored = subtract(spans, fromParent);
    // From the copy-on-write snapshot once the process runs again, where it holds the area: the
    // pages are read, and hashed, when written out; the hashes' objects are encoded after them.
    const snap = ctx.deferPages && this.snap && snapshotHolds(v) ? this.snap : undefined;
    const src = snap ?? this.task.tracee;
    const addr = (p: number): bigint => BigInt(p) * BigInt(PAGE);
    let storedCount = 0;
    for (const chunk of groups(stored, OBJECT_PAGES)) {
      const n = pagesIn(chunk);
      storedCount += n;
      const fill = (buf: Buffer): void => {
        ctx.timed('read pages', () => {
          let o = 0;
          for (const [s, e] of chunk) {
            src.readMemoryInto(addr(s), buf, o, (e - s) * PAGE);
            o += (e - s) * PAGE;
          }
        });
        let o = 0;
        for (const [s, e] of chunk) {
          hashPages(buf.subarray(o, o + (e - s) * PAGE), PAGE, hashes, present.at(s) * HASH_BYTES);
          o += (e - s) * PAGE;
        }
      };
      let obj: PagesImage | PageRunsImage;
      if (chunk.length === 1) {
        obj = new PagesImage();
        obj.vaddr = addr(chunk[0][0]);
        obj.count = n;
      } else {
        obj = new PageRunsImage();
        obj.runs = chunk.flatMap(([s, e]) => [addr(s), BigInt(e - s)]);
      }
      if (snap) {
        for (const [s, e] of chunk) snap.expect?.(addr(s), (e - s) * PAGE);
        ctx.writeWithPagesLater(obj, n * PAGE, payloadFrom(snap, fill).fill, vmaTag);
        continue;
      }
      const buf = Buffer.allocUnsafe(n * PAGE);
      fill(buf);
      ctx.timed('write pages', () => ctx.writeWithPages(obj, buf, vmaTag));
      ctx.progress({ phase: 'pages', pid: this.task.pid, bytes: buf.length });
      await ctx.checkpointYield();
    }
    this.stored += storedCount;
    this.fromParent += present.count - storedCount;
    // Every page's hash, in runs of consecutive pages, up to HASH_PAGES per object.
    for (const group of groups(spans, HASH_PAGES)) {
      const hi = new VmaHashesImage();
      hi.runs = group.flatMap(([s, e]) => [addr(s), BigInt(e - s)]);
      const from = present.at(group[0][0]);
      hi.hashes = hashes.subarray(from * HASH_BYTES, (from + pagesIn(group)) * HASH_BYTES);
      // With pages from the snapshot, encoded once they (and so their hashes) have been read.
      if (snap) ctx.writeLater(hi, vmaTag);
      else ctx.write(hi, vmaTag);
    }
    if (fromParent.length) {
      const pr = new VmaParentPagesImage();
      pr.runs = fromParent.flatMap(([s, e]) => [addr(s), BigInt(e - s)]);
      ctx.write(pr, vmaTag);
    }
  }

  /**
   * The pages of a registered area that are write-protect markers. Only pages the scan says are
   * swapped can be (a marker is a swap entry to the kernel): those alone are looked at one by one
   * in the pagemap.
   */
  private markers(v: VmaEntry): Span[] {
    const PAGE = linux.pageSize();
    const P = linux.PAGE_IS;
    const fd = fs.openSync(`/proc/${this.task.pid}/pagemap`, 'r');
    let regions: Array<{ start: bigint; end: bigint; categories: bigint }> | null;
    try {
      regions = linux.pagemapScan(fd, v.start, v.end, P.SWAPPED, P.SWAPPED | P.PRESENT);
    } finally {
      fs.closeSync(fd);
    }
    const unsure = regions ? regions.filter((r) => !(r.categories & P.PRESENT)) : [{ start: v.start, end: v.end }];
    const out: Span[] = [];
    const BATCH = 65536;
    for (const r of unsure) {
      const end = Number(r.end / BigInt(PAGE));
      for (let s = Number(r.start / BigInt(PAGE)); s < end; s += BATCH) {
        const n = Math.min(BATCH, end - s);
        const pm = linux.readPagemap(this.task.pid, BigInt(s) * BigInt(PAGE), n, PAGE);
        for (let i = 0; i < n; i++) if (isMarker(pm[i])) pushSpan(out, s + i, s + i + 1);
      }
    }
    return out;
  }

  /** Reads the pages of `spans` (page numbers) from the process, up to OBJECT_PAGES at a time. */
  private async forEachChunk(spans: Span[], fn: (p: number, buf: Buffer, n: number) => void): Promise<void> {
    const PAGE = linux.pageSize();
    const buf = Buffer.allocUnsafe(OBJECT_PAGES * PAGE);
    for (const [s0, e] of spans) {
      for (let s = s0; s < e; s += OBJECT_PAGES) {
        const n = Math.min(OBJECT_PAGES, e - s);
        this.ctx.timed('read pages', () => this.task.tracee.readMemoryInto(BigInt(s) * BigInt(PAGE), buf, 0, n * PAGE));
        fn(s, buf.subarray(0, n * PAGE), n);
        await this.ctx.checkpointYield();
      }
    }
  }

  /**
   * The task's TASK_TRACKING record, and its line in the checkpoint's report; its write bits are
   * cleared (still frozen: at the image's instant), the tracker having recorded what they held.
   */
  finish(): void {
    if (this.track && this.recorded) this.ctx.timed('write-protect', () => protect(this.task.pid, archOf(this.ctx.container).userSpaceTop));
    const r = new TaskTrackingImage();
    r.method = this.method;
    r.why = this.why;
    r.startTime = this.start;
    r.bootId = linux.bootId();
    r.trackerPid = this.track?.tracker.pid ?? 0;
    r.trackerStart = this.track?.tracker.start ?? 0n;
    r.storedPages = BigInt(this.stored);
    r.parentPages = BigInt(this.fromParent);
    this.ctx.write(r, this.task.tag);
    this.ctx.incrementalReport.push({ pid: this.task.pid, method: this.method, ...(this.why ? { why: this.why } : {}), storedPages: this.stored, parentPages: this.fromParent });
  }
}

// ---- restart ----

interface Segment {
  start: bigint;
  count: number;
  fd: number;
  off: number;
  file: string;
}
interface ImageIndex {
  tasks: Map<number, Segment[]>;
}
/** The chain below the image being restarted, and the fds of its files (closed at finish or abort). */
interface Chain {
  index: ImageIndex;
  fds: number[];
}
const CHAINS = new WeakMap<RestartContext, Chain>();
const OWN_IDS = new WeakMap<RestartContext, string>();
const HASHES = new StateKey<Map<number, PageHashes>>('mm.incremental.hashes');

function badImage(why: string, pid?: number): CptError {
  return new CptError('EBADIMG', why, { pid, object: 'parent image' });
}

/** The segments of `list` covering [vaddr, vaddr + count pages), or an error naming what is missing. */
function resolve(list: Segment[] | undefined, vaddr: bigint, count: number, PAGE: bigint, what: string): Segment[] {
  const out: Segment[] = [];
  let at = vaddr;
  const end = vaddr + BigInt(count) * PAGE;
  const segs = list ?? [];
  let lo = 0;
  let hi = segs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (segs[mid].start > at) hi = mid - 1;
    else lo = mid + 1;
  }
  for (let i = Math.max(hi, 0); at < end; i++) {
    const s = segs[i];
    const sEnd = s ? s.start + BigInt(s.count) * PAGE : 0n;
    if (!s || s.start > at || sEnd <= at) throw badImage(`${what}: the page at 0x${at.toString(16)} is in no parent image`);
    const skip = Number((at - s.start) / PAGE);
    const n = Math.min(s.count - skip, Number((end - at) / PAGE));
    out.push({ start: at, count: n, fd: s.fd, off: s.off + skip * Number(PAGE), file: s.file });
    at += BigInt(n) * PAGE;
  }
  return out;
}

/** Reads one image of the chain (and, first, its own parents): where each of its pages is. */
function indexImage(ctx: RestartContext, chain: Chain, file: string, wantId: string, wantSize: bigint, depth: number, seen: Set<string>): ImageIndex {
  const object = `parent image ${file}`;
  if (depth > MAX_CHAIN) throw badImage(`${object}: the chain of parent images is deeper than ${MAX_CHAIN}`);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (e) {
    throw new CptError('ENOENT', `${object} cannot be opened (${(e as NodeJS.ErrnoException).code}): an incremental image needs its parents`, { object });
  }
  chain.fds.push(fd);
  const st = fs.fstatSync(fd, { bigint: true });
  if (!st.isFile()) throw badImage(`${object} is not a regular file`);
  // A user's image may only take pages from that user's images (never from root's, say).
  if (Number(st.uid) !== ctx.imageOwner.uid) throw new CptError('EPERM', `${object} is owned by uid ${st.uid}, the image by uid ${ctx.imageOwner.uid}: a parent must have the image's owner`, { object });
  if (st.size !== wantSize) throw badImage(`${object} has ${st.size} bytes, not the ${wantSize} recorded when the image was taken: it is not the same parent`);
  const reader = new ImageReader(fileSource(fd, object));
  const head = reader.readHead();
  if (head.pageSize !== linux.pageSize()) throw badImage(`${object} has ${head.pageSize}-byte pages`);
  // Only where each page is: the payloads stay in the file, unread. Every page taken from a parent
  // is checked against this image's hash of it when it is read (restoreParentPages), which an
  // object's checksum (left unfinished here) adds nothing to.
  reader.leavePayloads((type) => type === ObjectType.PAGES || type === ObjectType.VMA_PAGE_RUNS);
  const PAGE = BigInt(head.pageSize);
  const index: ImageIndex = { tasks: new Map() };
  let id = '';
  let parent: ImageIndex | undefined;
  const owners = new TaskOfTag();
  /** The segments of the process whose area is the record's parent. */
  const segsOf = (rec: { ptag: number; offset: number }): Segment[] => {
    const pid = owners.pidOf(rec.ptag);
    const segs = pid === undefined ? undefined : index.tasks.get(pid);
    if (!segs) throw badImage(`${object}: pages at offset ${rec.offset} belong to no memory area of a process`);
    return segs;
  };
  for (let rec = reader.next(); rec; rec = reader.next()) {
    owners.see(rec);
    if (rec.type === ObjectType.IMAGE_ID) {
      id = (rec.obj as ImageIdImage).id;
      if (id !== wantId) throw badImage(`${object} has id ${id}, not ${wantId}: it is not the image this one was taken against`);
      if (seen.has(id)) throw badImage(`${object}: the chain of parent images has a cycle`);
      seen.add(id);
    } else if (rec.type === ObjectType.IMAGE_PARENT) {
      if (!id || parent) throw badImage(`${object}: a parent reference without an id, or two`);
      const p = rec.obj as ImageParentImage;
      parent = indexImage(ctx, chain, path.resolve(path.dirname(file), p.path), p.id, p.size, depth + 1, seen);
    } else if (rec.type === ObjectType.TASK) {
      const pid = (rec.obj as { pid: number }).pid;
      if (index.tasks.has(pid)) throw badImage(`${object} holds process ${pid} twice`);
      index.tasks.set(pid, []);
    } else if (rec.type === ObjectType.PAGES && (rec.pages || rec.filePayload)) {
      // In place after its area, or in the pages section at the end: found by its area's tag.
      const at = payloadIn(rec, object);
      const pi = rec.obj as PagesImage;
      segsOf(rec).push({ start: pi.vaddr, count: pi.count, fd, off: at.off, file });
      reader.recycle(rec.pages);
    } else if (rec.type === ObjectType.VMA_PAGE_RUNS && (rec.pages || rec.filePayload)) {
      const at = payloadIn(rec, object);
      const runs = (rec.obj as PageRunsImage).runs;
      const segs = segsOf(rec);
      let off = at.off;
      for (let i = 0; i + 1 < runs.length; i += 2) {
        segs.push({ start: runs[i], count: Number(runs[i + 1]), fd, off, file });
        off += Number(runs[i + 1] * PAGE);
      }
      if (off !== at.off + at.length) throw badImage(`${object}: page runs at offset ${rec.offset} do not match their payload`);
      reader.recycle(rec.pages);
    } else if (rec.type === ObjectType.VMA_PARENT_PAGES) {
      if (!parent) throw badImage(`${object} has parent pages and no parent`);
      const runs = (rec.obj as VmaParentPagesImage).runs;
      const segs = segsOf(rec);
      const inParent = parent.tasks.get(owners.pidOf(rec.ptag)!);
      for (let i = 0; i + 1 < runs.length; i += 2) segs.push(...resolve(inParent, runs[i], Number(runs[i + 1]), PAGE, object));
    }
  }
  if (!id) throw badImage(`${object} has no image id`);
  for (const segs of index.tasks.values()) {
    segs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    for (let i = 1; i < segs.length; i++) if (segs[i - 1].start + BigInt(segs[i - 1].count) * PAGE > segs[i].start) throw badImage(`${object}: pages at 0x${segs[i].start.toString(16)} are given twice`);
  }
  return index;
}

/** Where a parent's page payload is in its file: left there by the reader, or read (plain pages only). */
function payloadIn(rec: ImageRecord, object: string): { off: number; length: number } {
  if (rec.filePayload) return { off: rec.filePayload.fileOffset, length: rec.filePayload.length };
  if (rec.pagesOffset === undefined || !rec.pages) throw badImage(`${object} has compressed pages`);
  return { off: rec.pagesOffset, length: rec.pages.length };
}

/** The directory relative parent paths are taken from: the restarted image's (cwd for a pipe). */
function imageDir(ctx: RestartContext): string {
  try {
    const p = fs.readlinkSync(`/proc/self/fd/${ctx.imageFd}`);
    if (p.startsWith('/')) return path.dirname(p.replace(/ \(deleted\)$/, ''));
  } catch {
    /* not a file */
  }
  return process.cwd();
}

export function restoreIncremental(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  const PAGE = BigInt(linux.pageSize());
  switch (o.type) {
    case ObjectType.IMAGE_ID:
      OWN_IDS.set(ctx, (o.obj as ImageIdImage).id);
      return;
    case ObjectType.IMAGE_PARENT: {
      if (ctx.flags & RestartFlags.LAZY) throw new CptError('EOPNOTSUPP', 'a lazy restart of an incremental image (one with a parent image) is not supported: restart it without --lazy', { object: 'lazy restart' });
      if (CHAINS.has(ctx)) throw badImage('the image names two parents');
      const p = o.obj as ImageParentImage;
      const chain: Chain = { index: { tasks: new Map() }, fds: [] };
      CHAINS.set(ctx, chain);
      const own = OWN_IDS.get(ctx);
      if (!own) throw badImage('the image names a parent but has no id of its own');
      if (!p.path || p.path.includes('\0')) throw badImage('the parent image has no path');
      chain.index = ctx.timed('parent images', () => indexImage(ctx, chain, path.resolve(imageDir(ctx), p.path), p.id, p.size, 1, new Set([own])));
      return;
    }
    case ObjectType.TASK_TRACKING:
      return;
    case ObjectType.VMA_HASHES: {
      const h = o.obj as VmaHashesImage;
      const area = task.state.get(VMAS_BY_TAG)?.get(o.ptag);
      if (!area) throw badImage(`page hashes at image offset ${o.offset} belong to no memory area`, task.pid);
      let n = 0n;
      for (let i = 0; i + 1 < h.runs.length; i += 2) {
        if (h.runs[i] < area.img.start || h.runs[i] + h.runs[i + 1] * PAGE > area.img.end || h.runs[i] % PAGE) throw badImage(`page hashes at image offset ${o.offset} are outside ${describeVma(area.img)}`, task.pid);
        n += h.runs[i + 1];
      }
      if (h.runs.length % 2 || BigInt(h.hashes.length) !== n * BigInt(HASH_BYTES)) throw badImage(`page hashes at image offset ${o.offset}: ${h.hashes.length} bytes for ${n} pages`, task.pid);
      const all = task.state.ensure(HASHES, () => new Map<number, PageHashes>());
      if (!all.has(o.ptag)) all.set(o.ptag, new PageHashes(PAGE));
      all.get(o.ptag)!.add(h.runs, h.hashes);
      return;
    }
    case ObjectType.VMA_PARENT_PAGES:
      return ctx.timed('parent pages', () => restoreParentPages(ctx, task, o, PAGE));
    case ObjectType.VMA_PAGE_RUNS:
      return ctx.timed('pages', () => restorePageRuns(ctx, task, o, PAGE));
  }
}

/** Pages in runs: each run checked inside the area, in order, and the payload exactly theirs. */
function restorePageRuns(ctx: RestartContext, task: RestartTask, o: RestoreObject, PAGE: bigint): void {
  const where = `page runs at image offset ${o.offset}`;
  const area = task.state.get(VMAS_BY_TAG)?.get(o.ptag);
  if (!area || area.img.shared || !area.kind.storesPages(area.img)) throw badImage(`${where} belong to no private memory area`, task.pid);
  const runs = (o.obj as PageRunsImage).runs;
  if (runs.length % 2 || !o.pages) throw badImage(`${where}: malformed`, task.pid);
  let off = 0;
  let prevEnd = area.img.start;
  for (let i = 0; i < runs.length; i += 2) {
    const len = runs[i + 1] * PAGE;
    if (runs[i + 1] <= 0n || runs[i] < prevEnd || runs[i] + len > area.img.end || runs[i] % PAGE || off + Number(len) > o.pages.length) throw badImage(`${where} are outside ${describeVma(area.img)}, out of order, or longer than their payload`, task.pid);
    task.tracee!.writeMemory(runs[i], o.pages.subarray(off, off + Number(len)));
    off += Number(len);
    prevEnd = runs[i] + len;
  }
  if (off !== o.pages.length) throw badImage(`${where}: ${o.pages.length - off} bytes of payload belong to no run`, task.pid);
  ctx.reader.recycle(o.pages);
}

function restoreParentPages(ctx: RestartContext, task: RestartTask, o: RestoreObject, PAGE: bigint): void {
  const where = `parent pages at image offset ${o.offset}`;
  const area = task.state.get(VMAS_BY_TAG)?.get(o.ptag);
  if (!area || area.img.shared || !area.kind.storesPages(area.img)) throw badImage(`${where} belong to no private memory area`, task.pid);
  const chain = CHAINS.get(ctx);
  if (!chain) throw badImage(`${where}, but the image names no parent image`, task.pid);
  const hashes = task.state.get(HASHES)?.get(o.ptag);
  if (!hashes) throw badImage(`${where} come without the page hashes they are checked against`, task.pid);
  const runs = (o.obj as VmaParentPagesImage).runs;
  if (runs.length % 2) throw badImage(`${where}: malformed runs`, task.pid);
  const pageSize = Number(PAGE);
  const got = Buffer.alloc(HASH_BYTES);
  for (let i = 0; i < runs.length; i += 2) {
    const count = Number(runs[i + 1]);
    if (runs[i] < area.img.start || runs[i] + runs[i + 1] * PAGE > area.img.end || runs[i] % PAGE || count <= 0) throw badImage(`${where} are outside ${describeVma(area.img)}`, task.pid);
    // A window of up to OBJECT_PAGES pages is gathered from its files, checked, and written at once.
    for (let done = 0; done < count; done += OBJECT_PAGES) {
      const n = Math.min(OBJECT_PAGES, count - done);
      const at = runs[i] + BigInt(done) * PAGE;
      const buf = Buffer.allocUnsafe(n * pageSize);
      let o = 0;
      for (const s of resolve(chain.index.tasks.get(task.pid), at, n, PAGE, where)) {
        const r = fs.readSync(s.fd, buf, o, s.count * pageSize, s.off);
        if (r !== s.count * pageSize) throw badImage(`parent image ${s.file} ends inside the pages at 0x${s.start.toString(16)}`, task.pid);
        for (let k = 0; k < s.count; k++) {
          const va = s.start + BigInt(k) * PAGE;
          const want = hashes.get(va);
          hashPages(buf.subarray(o + k * pageSize, o + (k + 1) * pageSize), pageSize, got);
          if (!want || !want.equals(got)) throw badImage(`the page at 0x${va.toString(16)} in parent image ${s.file} does not match the hash this image recorded: the parent was changed or replaced`, task.pid);
        }
        o += s.count * pageSize;
      }
      task.tracee!.writeMemory(at, buf);
    }
  }
}

/** Closes the chain's files (the image has been read through, or the restart failed). */
export function closeChain(ctx: RestartContext): void {
  const c = CHAINS.get(ctx);
  if (!c) return;
  for (const fd of c.fds.splice(0)) {
    try {
      fs.closeSync(fd);
    } catch {
      /* closed */
    }
  }
}
