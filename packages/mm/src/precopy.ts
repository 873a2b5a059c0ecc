/**
 * `checkpoint --pre-copy`: the private memory of one process copied while it runs, so that the
 * frozen window copies only what it wrote since (bench/README.md "Page tables, written and read":
 * a fork's snapshot costs ~22 ms per touched GiB of page table entries in the window, reading
 * which pages were written ~0.5 ms).
 *
 * Before the freeze (DumpHandler.preCopy): the process is stopped just long enough for a
 * userfaultfd of its memory to be made inside it (an injected userfaultfd(2), taken out with
 * pidfd_getfd, closed inside at once: its fd table is as it was) and let run. cptrst alone holds the
 * fd: its death closes it, which ends every registration. Its private anonymous areas are
 * registered for asynchronous write protection (UFFD_FEATURE_WP_ASYNC: the kernel clears a page's
 * uffd-wp bit on its first write, the process sees no fault), and the present pages are
 * write-protected and copied into cptrst's memory (PAGEMAP_SCAN of PRESENT pages with
 * PM_SCAN_WP_MATCHING: only present pages get the bit, so no uffd-wp marker is put in an empty
 * entry, where the pagemap would show it as a swapped page). Then rounds: the present pages written
 * since are protected again and copied, while that set shrinks (at most MAX_ROUNDS).
 *
 * Frozen (mm's dump): the pages an area stores are chosen as usual (the present and swapped
 * pages, read from the frozen process); of those, a page is taken from the copy only if it was
 * copied after its last protection and its bit is still set (PAGEMAP_SCAN PAGE_IS_WRITTEN, the
 * kernel's fast path: a page written, dropped and faulted in again, swapped without its bit, or an
 * empty entry all count as written). Every other stored page is copied now, from the frozen
 * process. An area not registered any more (unmapped and mapped again, moved by mremap, mapped
 * since) fails the scan's PM_SCAN_CHECK_WPASYNC and is copied whole now. When that is more than
 * FROZEN_LIMIT, or the process holds a userfaultfd of its own, or has a tracker of cptrst's, the
 * checkpoint takes the copy-on-write snapshot instead (said in the result's preCopy.why).
 *
 * The image is the one the snapshot path writes, byte for byte: the copy is only where the
 * deferred page payloads are read from after the release (a MemorySnapshot), so a restart, from a
 * file or a pipe, lazy or not, knows nothing of it. The cost: cptrst holds a copy of the process's
 * private memory until it is written out, and the process takes a minor fault on its first write
 * to each page while the pre-copy runs.
 */
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, CptError, MemorySnapshot, StateKey, linux } from '@cptrst/core';
import { VmaEntry } from './vma';
import { hasOwnUserfaultfd, trackersOfAll, userfaultfdOf } from './tracking';
import { preRead } from './hints';

const { UFFD, PAGE_IS, PM_SCAN } = linux;

/** Copy rounds while the process runs, at most. */
const MAX_ROUNDS = 6;
/** A round whose written pages are fewer than this (1 MiB) is the last one: the frozen window takes them. */
const QUIET_PAGES = 256;
/** Pages of stored areas the frozen window may copy before the snapshot is taken instead (64 MiB; CPTRST_PRECOPY_FROZEN_MIB). */
const FROZEN_LIMIT_MIB = 64;
/** Pages per chunk of the copy (2 MiB): a chunk is allocated where the process has a page. */
const CHUNK_PAGES = 512;
const WRITTEN_PRESENT = PAGE_IS.WRITTEN | PAGE_IS.PRESENT;

interface Chunk {
  buf: Buffer;
  /** Per page: 1 when `buf` holds it as it is (copied after its last protection). */
  valid: Uint8Array;
}

/** A page range [first, end) in page numbers (address / page size). */
export type PageSpan = [number, number];

/** The copy of one process's memory: the pages' source once it runs again (a MemorySnapshot). */
export class PreCopy implements MemorySnapshot {
  readonly pid: number;
  private readonly page = linux.pageSize();
  private readonly chunks = new Map<number, Chunk>();
  /** Where the chunks are (reserve), and how many of its slots are taken. */
  private region: linux.MemoryRegion | undefined;
  private slots = 0;
  /** Frozen: each area's written regions (writtenIn), by range. */
  private readonly written = new Map<string, linux.PageRegion[] | null>();
  private uffd: number | undefined;
  private pagemap: number | undefined;
  private mem: linux.ProcMem | undefined;
  /** Areas registered, by start (the ranges as they were then). */
  readonly registered: Array<{ start: bigint; end: bigint }> = [];
  copiedRunning = 0;
  copiedFrozen = 0;
  rounds = 0;

  constructor(pid: number, uffd: number) {
    this.pid = pid;
    this.uffd = uffd;
    const pagemap = fs.openSync(`/proc/${pid}/pagemap`, 'r');
    try {
      this.mem = new linux.ProcMem(pid, { readOnly: true });
    } catch (e) {
      fs.closeSync(pagemap);
      throw e;
    }
    this.pagemap = pagemap;
  }

  /** The userfaultfd (cptrst's copy); throws once closed. */
  private fd(): number {
    if (this.uffd === undefined) throw new CptError('EBADF', 'the pre-copy userfaultfd is closed', { pid: this.pid });
    return this.uffd;
  }

  private pm(): number {
    if (this.pagemap === undefined) throw new CptError('EBADF', 'the pre-copy pagemap is closed', { pid: this.pid });
    return this.pagemap;
  }

  /**
   * Registers `areas` for asynchronous write protection. An area registered already (EBUSY: with
   * the process's own userfaultfd, or a tracker's) is a reason to leave the process alone: thrown.
   */
  register(areas: Array<{ start: bigint; end: bigint }>): void {
    for (const a of areas) {
      const e = linux.uffdRegister(this.fd(), a.start, a.end, UFFD.REGISTER_MODE_WP);
      if (e === -linux.ERRNO.EBUSY) throw new CptError('EBUSY', `area ${a.start.toString(16)}-${a.end.toString(16)} is registered with another userfaultfd`, { pid: this.pid });
      // Gone or changed meanwhile (ENOMEM, EINVAL): not pre-copied, copied while frozen.
      if (e === 0) this.registered.push(a);
    }
  }

  /**
   * Whether an area the kernel shows registered (VmFlags "uw") is registered with this copy's
   * userfaultfd: registering it again through it is then a no-op (EBUSY with another's).
   */
  isMine(a: { start: bigint; end: bigint }): boolean {
    return linux.uffdRegister(this.fd(), a.start, a.end, UFFD.REGISTER_MODE_WP) === 0;
  }

  /** Frozen: the area's pages written since their protection, or null where it is not registered for asynchronous WP (read once). */
  private writtenIn(v: { start: bigint; end: bigint }): linux.PageRegion[] | null {
    const key = `${v.start}-${v.end}`;
    if (this.written.has(key)) return this.written.get(key)!;
    let regions: linux.PageRegion[] | null;
    try {
      // The kernel's fast path (mask and return mask PAGE_IS_WRITTEN alone): 0.5 ms per GiB here.
      regions = linux.pagemapScan(this.pm(), v.start, v.end, 0n, PAGE_IS.WRITTEN, { mask: PAGE_IS.WRITTEN, flags: PM_SCAN.CHECK_WPASYNC });
    } catch {
      regions = null; // EPERM: not registered with a userfaultfd in asynchronous WP mode
    }
    this.written.set(key, regions);
    return regions;
  }


  /**
   * One round while the process runs: the present pages written since the last one (every
   * present page in the first) are write-protected and copied. Returns the pages copied.
   */
  async round(ctx: CheckpointContext): Promise<number> {
    const mask = this.rounds === 0 ? PAGE_IS.PRESENT : WRITTEN_PRESENT;
    const found: linux.PageRegion[] = [];
    for (const a of this.registered) {
      try {
        found.push(...(linux.pagemapScan(this.pm(), a.start, a.end, 0n, mask, { mask, flags: PM_SCAN.WP_MATCHING }) ?? []));
      } catch {
        /* unmapped meanwhile: what is there at the freeze is copied then */
      }
    }
    // The chunks the first round fills, and room for 32 more (64 MiB: pages faulted in since).
    if (this.rounds === 0) this.reserve(chunksOf(found, this.page * CHUNK_PAGES) + 32);
    let pages = 0;
    for (const r of found) pages += await this.copyRunning(ctx, r.start, r.end);
    this.rounds++;
    return pages;
  }

  /** Copies [start, end) of the running process into the chunks; a part that cannot be read is marked not held. */
  private async copyRunning(ctx: CheckpointContext, start: bigint, end: bigint): Promise<number> {
    const P = BigInt(this.page);
    let done = 0;
    for (let at = start; at < end; ) {
      const first = Number(at / P);
      const chunk = this.chunk(Math.floor(first / CHUNK_PAGES));
      const i = first % CHUNK_PAGES;
      const n = Math.min(CHUNK_PAGES - i, Number((end - at) / P));
      let got = 0;
      try {
        got = Math.floor(this.mem!.readInto(at, chunk.buf, i * this.page, n * this.page) / this.page);
      } catch {
        got = 0;
      }
      chunk.valid.fill(1, i, i + got);
      chunk.valid.fill(0, i + got, i + n);
      done += got;
      this.copiedRunning += got * this.page;
      at += BigInt(n) * P;
      // The event loop gets a turn now and then (a SIGINT of cptrst aborts the checkpoint).
      if ((this.copiedRunning & 0x1ffffff) < got * this.page) {
        await new Promise<void>((res) => setImmediate(res));
        ctx.throwIfAborted();
      }
    }
    return done;
  }

  /**
   * Room for `chunks` chunks in one region of cptrst's memory (linux.MemoryRegion), reserved once:
   * a Buffer per chunk is memory V8 counts as external, and each few dozen MiB of it started a
   * garbage collection, which went on into the frozen window. Chunks beyond it are Buffers.
   */
  private reserve(chunks: number): void {
    if (this.region || chunks <= 0) return;
    this.region = linux.MemoryRegion.reserve(chunks * CHUNK_PAGES * this.page) ?? undefined;
  }

  private chunk(index: number): Chunk {
    let c = this.chunks.get(index);
    if (!c) {
      const bytes = CHUNK_PAGES * this.page;
      const at = this.slots * bytes;
      const buf = this.region && at + bytes <= this.region.size ? this.region.view.subarray(at, at + bytes) : Buffer.allocUnsafeSlow(bytes);
      if (this.region && at + bytes <= this.region.size) this.slots++;
      c = { buf, valid: new Uint8Array(CHUNK_PAGES) };
      this.chunks.set(index, c);
    }
    return c;
  }

  /**
   * Frozen: the pages of `runs` (page indices in the area `v`) the copy does not hold as they are
   * now, as spans: all of them where the area is not registered with this copy's userfaultfd.
   */
  stale(v: VmaEntry, runs: Array<[number, number]>): PageSpan[] {
    const base = Number(v.start / BigInt(this.page));
    const written = this.writtenIn(v);
    const out: PageSpan[] = [];
    if (written === null) {
      for (const [f, c] of runs) out.push([base + f, base + f + c]);
      return out;
    }
    for (const r of written) this.forget(Number(r.start / BigInt(this.page)), Number(r.end / BigInt(this.page)));
    // Chunk by chunk, the gaps found by the typed array's indexOf (a GiB is 262144 pages).
    const push = (first: number, end: number) => {
      const last = out[out.length - 1];
      if (last && last[1] === first) last[1] = end;
      else out.push([first, end]);
    };
    for (const [f, c] of runs) {
      for (let p = base + f, end = base + f + c; p < end; ) {
        const chunk = this.chunks.get(Math.floor(p / CHUNK_PAGES));
        const i = p % CHUNK_PAGES;
        const n = Math.min(CHUNK_PAGES - i, end - p);
        if (!chunk) push(p, p + n);
        else {
          for (let k = i; k < i + n; ) {
            const gap = chunk.valid.indexOf(0, k);
            if (gap < 0 || gap >= i + n) break;
            const back = chunk.valid.indexOf(1, gap);
            const stop = back < 0 || back > i + n ? i + n : back;
            push(p - i + gap, p - i + stop);
            k = stop;
          }
        }
        p += n;
      }
    }
    return out;
  }

  /** Marks [first, end) not held. */
  private forget(first: number, end: number): void {
    for (let p = first; p < end; ) {
      const c = this.chunks.get(Math.floor(p / CHUNK_PAGES));
      const i = p % CHUNK_PAGES;
      const n = Math.min(CHUNK_PAGES - i, end - p);
      c?.valid.fill(0, i, i + n);
      p += n;
    }
  }

  /** Frozen: copies the spans from the frozen process (through its tracee) into the copy. */
  copyFrozen(task: CheckpointTask, spans: PageSpan[]): void {
    for (const [first, end] of spans) {
      for (let p = first; p < end; ) {
        const chunk = this.chunk(Math.floor(p / CHUNK_PAGES));
        const i = p % CHUNK_PAGES;
        const n = Math.min(CHUNK_PAGES - i, end - p);
        task.tracee.readMemoryInto(BigInt(p) * BigInt(this.page), chunk.buf, i * this.page, n * this.page);
        chunk.valid.fill(1, i, i + n);
        this.copiedFrozen += n * this.page;
        p += n;
      }
    }
  }

  /** The pages as they were at the freeze (every one asked for was made held while frozen). */
  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void {
    const P = BigInt(this.page);
    if (addr % P !== 0n || length % this.page !== 0) throw new CptError('EINVAL', `pre-copy: read of ${length} bytes at 0x${addr.toString(16)} is not in whole pages`, { pid: this.pid });
    for (let p = Number(addr / P), o = offset, left = length; left > 0; ) {
      const c = this.chunks.get(Math.floor(p / CHUNK_PAGES));
      const i = p % CHUNK_PAGES;
      const n = Math.min(CHUNK_PAGES - i, left / this.page);
      for (let k = i; k < i + n; k++) {
        if (c?.valid[k] !== 1) throw new CptError('EIO', `pre-copy holds no copy of the page at 0x${(BigInt(p + k - i) * P).toString(16)}`, { pid: this.pid });
      }
      c!.buf.copy(buf, o, i * this.page, (i + n) * this.page);
      o += n * this.page;
      left -= n * this.page;
      p += n;
    }
  }

  /** Ends the write protection (closing the userfaultfd unregisters every area). Never throws. */
  unregister(): void {
    if (this.uffd === undefined) return;
    try {
      fs.closeSync(this.uffd);
    } catch {
      /* closed */
    }
    this.uffd = undefined;
  }

  /** Ends it all: the registrations, the files, the copy. Never throws. */
  close(): void {
    this.unregister();
    if (this.pagemap !== undefined) {
      try {
        fs.closeSync(this.pagemap);
      } catch {
        /* closed */
      }
      this.pagemap = undefined;
    }
    this.mem?.close();
    this.mem = undefined;
    this.chunks.clear();
    // At the checkpoint's end only (ctx.atEnd): every page was read out of it by then.
    this.region?.release();
    this.region = undefined;
  }
}

/** How many distinct chunks of `bytes` (aligned) the sorted regions touch. */
function chunksOf(regions: linux.PageRegion[], bytes: number): number {
  const size = BigInt(bytes);
  let n = 0;
  let last = -1n;
  for (const r of regions) {
    const first = r.start / size;
    const end = (r.end - 1n) / size;
    n += Number(end - (first > last ? first : last + 1n)) + 1;
    last = end;
  }
  return n;
}

const PRE_COPY = new StateKey<PreCopy>('mm.preCopy');
/** The pre-copy of the checkpoint's process (one process: kept by pid between the stop before the freeze and the freeze). */
const BY_PID = new WeakMap<CheckpointContext, Map<number, PreCopy>>();

/** The areas a pre-copy registers: private anonymous memory (not droppable, not the kernel's vDSO pages). */
function precopiedAreas(pid: number): Array<{ start: bigint; end: bigint }> {
  return linux.readMaps(pid).filter((m) => !m.shared && m.inode === 0n && m.prot.write && !m.path.startsWith('[v')).map((m) => ({ start: m.start, end: m.end }));
}

const LEAVE_ALONE = new WeakMap<CheckpointContext, string>();

/**
 * Before the freeze (mm's prepare): whether the process must be left alone (a userfaultfd of its
 * own, or a live write tracker of cptrst's: their registrations are theirs, not to be disturbed).
 */
export function preparePreCopy(ctx: CheckpointContext, pid: number): void {
  try {
    if (hasOwnUserfaultfd(pid)) LEAVE_ALONE.set(ctx, 'it holds a userfaultfd of its own');
    else if (trackersOfAll([{ pid, start: BigInt(linux.readStat(pid).startTime) }]).get(pid)?.length) LEAVE_ALONE.set(ctx, 'a write tracker of cptrst (--track) holds its areas');
  } catch {
    /* gone: the freeze says so */
  }
}

/** DumpHandler.preCopy of mm: the userfaultfd made while stopped, then the copy rounds while it runs. */
export async function preCopyMemory(ctx: CheckpointContext, task: CheckpointTask, resume: () => void): Promise<void> {
  const report = ctx.preCopy!;
  // Looked at before the stop (a look at every process's command line), and the fds again now.
  const why = LEAVE_ALONE.get(ctx) ?? (hasOwnUserfaultfd(task.pid) ? 'it holds a userfaultfd of its own' : undefined);
  if (why) {
    resume();
    report.why = why;
    ctx.log.info(`pid ${task.pid}: no pre-copy: ${why}; its pages come from a copy-on-write snapshot`);
    return;
  }
  let pre: PreCopy;
  let fd = -1;
  try {
    fd = ctx.timed('pre-copy userfaultfd', () => userfaultfdOf(task));
    pre = new PreCopy(task.pid, fd);
  } catch (e) {
    if (fd >= 0) fs.closeSync(fd);
    resume();
    report.why = `no userfaultfd: ${(e as Error).message}`;
    ctx.log.info(`pid ${task.pid}: no pre-copy: ${report.why}`);
    return;
  }
  resume();
  // Ended with the checkpoint whatever becomes of it (its death closes the fd all the same).
  ctx.atEnd(() => pre.close());
  try {
    ctx.timed('pre-copy register', () => pre.register(precopiedAreas(task.pid)));
    let last = Infinity;
    for (let i = 0; i < MAX_ROUNDS; i++) {
      const pages = await ctx.timed(`pre-copy round`, () => pre.round(ctx));
      ctx.log.debug(`pid ${task.pid}: pre-copy round ${pre.rounds}: ${pages} pages`);
      // Not only while it halves: the first round is the slow one (cptrst's copy is new memory,
      // about 0.5 s per GiB to allocate here), so the second may find most of a busy process written.
      if (pages < QUIET_PAGES || pages >= last) break;
      last = pages;
    }
  } catch (e) {
    pre.close();
    if ((e as CptError).code === 'EINTR') throw e;
    report.why = `the pre-copy failed: ${(e as Error).message}`;
    ctx.log.info(`pid ${task.pid}: no pre-copy: ${report.why}`);
    return;
  }
  report.rounds = pre.rounds;
  report.copiedRunning = pre.copiedRunning;
  // The hints (hints.ts) read again, now, nearer the freeze: the first, read before the rounds, is
  // older by their time. The pre-copy's own registrations are not the process's.
  ctx.timed('pre-copy hints', () => preRead(ctx, task.pid, (v) => pre.isMine(v)));
  const known = BY_PID.get(ctx) ?? new Map<number, PreCopy>();
  BY_PID.set(ctx, known);
  known.set(task.pid, pre);
}

/** The pre-copy of the frozen task, if one was made (taken once). */
export function preCopyOf(ctx: CheckpointContext, task: CheckpointTask): PreCopy | undefined {
  let pre = task.state.get(PRE_COPY);
  if (pre) return pre;
  pre = BY_PID.get(ctx)?.get(task.pid);
  if (pre) task.state.set(PRE_COPY, pre);
  return pre;
}

/**
 * Frozen, before any page is read: the pages each area (`held`: the areas whose pages a snapshot
 * would hold, with the runs they store) lacks in the copy, by area start; undefined when the
 * pre-copy is not used: the task holds a userfaultfd of its own now, or what it lacks (written
 * since the last round, or in areas not registered with it) is over the limit. The snapshot is
 * then taken (the caller does) and the pre-copy dropped.
 */
export function preCopyPlan(ctx: CheckpointContext, task: CheckpointTask, pre: PreCopy, held: Array<{ v: VmaEntry; runs: Array<[number, number]> }>): Map<bigint, PageSpan[]> | undefined {
  const report = ctx.preCopy!;
  const plan = new Map<bigint, PageSpan[]>();
  let why: string | undefined = hasOwnUserfaultfd(task.pid) ? 'it made a userfaultfd of its own meanwhile' : undefined;
  if (!why) {
    let pages = 0;
    ctx.timed('pre-copy scan', () => {
      for (const { v, runs } of held) {
        const spans = pre.stale(v, runs);
        plan.set(v.start, spans);
        for (const [f, e] of spans) pages += e - f;
      }
    });
    const limit = Number(process.env.CPTRST_PRECOPY_FROZEN_MIB ?? FROZEN_LIMIT_MIB);
    const mib = (pages * linux.pageSize()) / 1048576;
    if (mib > limit) why = `${Math.round(mib)} MiB of its pages changed since the last round or are in areas the pre-copy does not track, over the ${limit} MiB it copies while frozen`;
  }
  if (why) {
    report.why = why;
    ctx.log.info(`pid ${task.pid}: pre-copy not used: ${why}; its pages come from a copy-on-write snapshot`);
    pre.close();
    return undefined;
  }
  report.path = 'pre-copy';
  // After the release: the write protection ends (the process runs on without it).
  ctx.afterRelease(() => ctx.timed('pre-copy unregister', () => pre.unregister()));
  ctx.log.debug(`pid ${task.pid}: pages from the pre-copy (${pre.rounds} rounds, ${pre.copiedRunning} bytes copied while it ran)`);
  return plan;
}

/** Frozen: copies the area's lacking pages into the copy, which is then the area's page source. */
export function preCopyArea(ctx: CheckpointContext, task: CheckpointTask, pre: PreCopy, lacking: PageSpan[]): MemorySnapshot {
  ctx.timed('pre-copy frozen', () => pre.copyFrozen(task, lacking));
  ctx.preCopy!.copiedFrozen = pre.copiedFrozen;
  return pre;
}
