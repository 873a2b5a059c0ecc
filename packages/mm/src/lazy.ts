/**
 * Lazy restart (`cptrst restart --lazy`, RestartFlags.LAZY): the private anonymous memory of a
 * restored process is not written before it runs, and the image's page data is not even read
 * before it runs. A checkpoint puts the pages of such areas (vma.ts's fillsLazily) in the image's
 * pages section, after every other record: a PagesFollow record listing each PAGES object to come
 * (its area, address and page count), then the objects, smaller areas first. The restart flow
 * reads up to that record and hands it here; the processes are then let go, and the fill reads the
 * rest of the stream while they run, a file or a pipe alike: each object is checked (its CRC, and
 * that it is the one listed) as it arrives and copied into every process that waits for it with
 * UFFDIO_COPY, then its buffer is reused. A page the process touches before its object has arrived
 * waits for it (the stream is read ahead to it, each object on the way copied in); a page the image
 * does not hold (never touched) gets a zero page at once.
 *
 * The areas are registered with a userfaultfd (MISSING mode) that the process itself makes (an
 * injected userfaultfd(2) + UFFDIO_API while it still has cptrst's capabilities). The process
 * cannot tell: a fault, by its own code or by the kernel on its behalf (a read(2) into its
 * buffer), waits until the page is in; the non-cooperative events keep the fill true to what the
 * process does meanwhile: MADV_DONTNEED/munmap (REMOVE/UNMAP: those pages are not filled any more,
 * they read zero as they would have), mremap (REMAP: the pages still to come follow the area) and
 * fork (FORK: the child's unfilled pages are filled from the same objects, through the child's own
 * userfaultfd). Once the terminator is read, every listed page is in and the userfaultfds are closed.
 *
 * Before the processes run: pages of the listed runs that are present already are copies kept from
 * a parent (the child of a tree keeps its parent's memory copy-on-write and gets its own pages over
 * it): they are discarded, and filled from the image like the others. Pages the restart's own
 * finish steps make present before the registration (the kernel writing a thread id or an rseq
 * area) get the image's data then: the stream is read ahead to their objects (small areas come
 * first), which are held until the fill copies them.
 *
 * Failures: an image that is bad or ends before the pages section's objects have arrived, before
 * the release, fails the restart as any other (nothing is left); after it, every restored process
 * (and what it forked meanwhile) is killed, and cptrst says why and exits non-zero: a process never
 * runs on with a zero page where its data should be. If cptrst dies during the fill, a small
 * watchdog (/bin/sh, holding a copy of the userfaultfds, started before the release) kills the
 * processes: their faults wait meanwhile. The fill reads its first object only after the caller
 * has heard that the processes run, so the time until then does not grow with the memory. Images
 * not owned by root are refused (EPERM): the userfaultfd must be made with CAP_SYS_PTRACE to
 * handle faults taken inside the kernel, which such a process never has.
 */
import * as fs from 'fs';
import {
  CptError, LazyFillReport, ObjectType, RestartContext, RestartFlags, RestartTask, RestoreHandler, RestoreObject, StateKey, linux,
} from '@cptrst/core';
import { VMAS_OF_RESTART, VmaImage, describeVma, fillsLazily } from './vma';
import type { PagesImage } from './pages';

const { SYS, UFFD, MADV } = linux;
/** After every other finish step (the credentials, the registers): nothing of the restart touches the memory after. */
const LAZY_ORDER = 1000;
/** Objects read between two turns of the event loop (signals, the interrupt). */
const TURN_OBJECTS = 8;
const FEATURES = UFFD.FEATURE_EVENT_FORK | UFFD.FEATURE_EVENT_REMAP | UFFD.FEATURE_EVENT_REMOVE | UFFD.FEATURE_EVENT_UNMAP;
/** Largest object the pages section may list, in pages (the writer's are 512). */
const MAX_OBJECT_PAGES = 16384;

/**
 * A run of pages still to fill at `start`: pages [srcPage, srcPage + done.length) of the payload of
 * object `src` of the pages section; `done[i]` once page i needs no filling.
 */
interface HeldRun {
  start: bigint;
  src: number;
  srcPage: number;
  done: Uint8Array;
}

/** One object of the pages section, as its PagesFollow record lists it. */
interface Listed {
  ptag: number;
  vaddr: bigint;
  count: number;
}

/** The stream of the pages section: what is listed, how far it is read, the objects read ahead. */
interface PagesStream {
  listed: Listed[];
  /** Index of the next object to read from the stream. */
  next: number;
  /** Objects read ahead before the processes ran, by index: copied in when the fill starts. */
  early: Map<number, Buffer>;
  /** The watchdog, started before the processes run (see watchdog()). */
  guard?: linux.PipedHelper;
}

/** One address space being filled: its userfaultfd (in cptrst) and its runs. */
interface Space {
  pid: number;
  fd: number;
  runs: HeldRun[];
  gone: boolean;
}

/** A task's lazy state at restart: its userfaultfd (in cptrst), its runs, its areas to register. */
interface TaskLazy {
  fd: number;
  runs: HeldRun[];
  areas: Map<bigint, VmaImage>;
  registered: boolean;
}
const TASK_LAZY = new StateKey<TaskLazy>('mm.lazy');
/** Every task's lazy state, for the fill once they are let go. */
const CTX_LAZY = new WeakMap<RestartContext, Array<{ pid: number; lazy: TaskLazy }>>();
const CTX_STREAM = new WeakMap<RestartContext, PagesStream>();

/** The userfaultfd of the task, made inside it, held by cptrst (pidfd_getfd), closed inside. */
function taskLazy(ctx: RestartContext, task: RestartTask): TaskLazy {
  const have = task.state.get(TASK_LAZY);
  if (have) return have;
  // The restart flow refuses a lazy restart of a user's image before anything is made.
  if (!ctx.imageTrusted) throw new CptError('EPERM', 'a lazy restart is only for images owned by root', { pid: task.pid, object: 'lazy restart' });
  const t = task.tracee!;
  const what = (s: string) => `${s} (lazy restart)`;
  const ufd = t.syscallOk(SYS.userfaultfd, [linux.O.CLOEXEC | linux.O.NONBLOCK], what('userfaultfd'));
  let mine = -1;
  try {
    const api = Buffer.alloc(24);
    api.writeBigUInt64LE(BigInt(UFFD.API), 0);
    api.writeBigUInt64LE(BigInt(FEATURES), 8);
    const r = t.syscall(SYS.ioctl, [ufd, UFFD.IOC_API, t.stage(api, 0)]);
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), 'UFFDIO_API with the fork, remap, remove and unmap events failed inside the process: this kernel cannot follow a lazily restored process; restart without --lazy', { pid: task.pid, object: 'lazy restart' });
    mine = linux.fdCopyOf(task.pid, Number(ufd));
  } finally {
    t.syscall(SYS.close, [ufd]);
  }
  const lazy: TaskLazy = { fd: mine, runs: [], areas: new Map(), registered: false };
  task.state.set(TASK_LAZY, lazy);
  const all = CTX_LAZY.get(ctx) ?? [];
  all.push({ pid: task.pid, lazy });
  CTX_LAZY.set(ctx, all);
  return lazy;
}

const runEnd = (r: HeldRun) => r.start + BigInt(r.done.length * linux.pageSize());

/** The ranges [start, end) where pages of `runs` are present in the task now. */
function presentInRuns(pid: number, runs: HeldRun[]): Array<{ start: bigint; end: bigint }> {
  const out: Array<{ start: bigint; end: bigint }> = [];
  const pm = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const P = linux.PAGE_IS;
    // One scan per stretch of adjacent runs (the runs are sorted): a GiB is one scan, not 512.
    for (let i = 0; i < runs.length;) {
      const start = runs[i].start;
      let end = runEnd(runs[i]);
      for (i++; i < runs.length && runs[i].start === end; i++) end = runEnd(runs[i]);
      const found = linux.pagemapScan(pm, start, end, P.PRESENT | P.SWAPPED, P.PRESENT | P.SWAPPED);
      if (found) {
        for (const p of found) out.push({ start: p.start, end: p.end });
        continue;
      }
      // No PAGEMAP_SCAN (before Linux 6.7): the pagemap entry by entry.
      const PAGE = linux.pageSize();
      const entries = linux.readPagemap(pid, start, Number((end - start) / BigInt(PAGE)), PAGE);
      entries.forEach((e, k) => {
        if (e & (linux.PAGEMAP.PRESENT | linux.PAGEMAP.SWAPPED)) out.push({ start: start + BigInt(k * PAGE), end: start + BigInt((k + 1) * PAGE) });
      });
    }
  } finally {
    fs.closeSync(pm);
  }
  return out;
}

export class LazyRestore implements RestoreHandler {
  readonly name = 'lazy';
  readonly order = LAZY_ORDER;
  readonly types = [ObjectType.PAGES_FOLLOW];

  /**
   * The start of the pages section, in a lazy restart: every listed object is checked against
   * the area it names, each task with pages to come gets its userfaultfd, and pages of those runs
   * present already (kept from a parent) are discarded. The flow then stops reading: the fill
   * reads the rest.
   */
  restore(ctx: RestartContext, _task: RestartTask, o: RestoreObject): void {
    if (!(ctx.flags & RestartFlags.LAZY)) return;
    const entries = ctx.pagesFollow?.entries ?? [];
    const bad = (why: string, pid?: number) => new CptError('EBADIMG', `pages section at image offset ${o.offset}: ${why}`, { pid, object: 'pages' });
    if (entries.length % 3 || entries.length === 0) throw bad(`${entries.length} numbers, not a positive multiple of 3`);
    const PAGE = BigInt(linux.pageSize());
    const areas = VMAS_OF_RESTART.get(ctx);
    const listed: Listed[] = [];
    const touched = new Set<RestartTask>();
    // The objects of one area come one after the other: its checks are made once per area.
    let cur: { ptag: number; v: VmaImage; task: RestartTask; lazy?: TaskLazy } | undefined;
    for (let i = 0; i < entries.length; i += 3) {
      const [ptag, vaddr, count] = [Number(entries[i]), entries[i + 1], Number(entries[i + 2])];
      if (cur?.ptag !== ptag) {
        const owner = areas?.get(ptag);
        const area = owner?.area();
        if (!owner || !area) throw bad(`object ${i / 3} belongs to no memory area (tag ${ptag})`);
        if (!fillsLazily(area.img, area.kind.kind)) throw bad(`object ${i / 3} is for ${describeVma(area.img)}, whose pages are not filled lazily`, owner.task.pid);
        cur = { ptag, v: area.img, task: owner.task };
      }
      const v = cur.v;
      const end = vaddr + BigInt(count) * PAGE;
      if (count <= 0 || count > MAX_OBJECT_PAGES || vaddr % PAGE || vaddr < v.start || end > v.end) throw bad(`object ${i / 3}: ${count} pages at 0x${vaddr.toString(16)} are not inside ${describeVma(v)}`, cur.task.pid);
      if (!cur.lazy) {
        cur.lazy = taskLazy(ctx, cur.task);
        cur.lazy.areas.set(v.start, v);
        touched.add(cur.task);
      }
      cur.lazy.runs.push({ start: vaddr, src: listed.length, srcPage: 0, done: new Uint8Array(count) });
      listed.push({ ptag, vaddr, count });
    }
    for (const task of touched) {
      const lazy = task.state.get(TASK_LAZY)!;
      lazy.runs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
      for (let i = 1; i < lazy.runs.length; i++) {
        if (lazy.runs[i].start < runEnd(lazy.runs[i - 1])) throw bad(`pages at 0x${lazy.runs[i].start.toString(16)} listed twice`, task.pid);
      }
      // Present now: the parent's copies (an area kept copy-on-write); the image's own come lazily.
      for (const p of presentInRuns(task.pid, lazy.runs)) {
        task.tracee!.syscallOk(SYS.madvise, [p.start, p.end - p.start, MADV.DONTNEED], `madvise(MADV_DONTNEED) of pages to fill lazily at 0x${p.start.toString(16)}`);
      }
    }
    // The watchdog is in place before anything runs: from the release on, cptrst's death must
    // kill the processes, not leave them running on zero pages.
    const spaces = CTX_LAZY.get(ctx) ?? [];
    const guard = watchdog(spaces.map((s) => s.lazy.fd), spaces.map((s) => s.pid));
    CTX_STREAM.set(ctx, { listed, next: 0, early: new Map(), guard });
    ctx.lazyFill = () => fill(ctx);
  }

  /**
   * The areas are registered, last of all before the release. Pages made present before that (by
   * the restart's own steps) get the image's data now, read ahead from the stream.
   */
  finish(ctx: RestartContext, task: RestartTask): void {
    const lazy = task.state.get(TASK_LAZY);
    if (!lazy || lazy.registered) return;
    for (const v of lazy.areas.values()) {
      const r = linux.uffdRegister(lazy.fd, v.start, v.end, UFFD.REGISTER_MODE_MISSING);
      const what = describeVma(v);
      if (r < 0) throw new CptError(linux.errnoName(-r), `UFFDIO_REGISTER of ${what} failed (lazy restart)`, { pid: task.pid, object: what });
    }
    lazy.registered = true;
    const stream = CTX_STREAM.get(ctx)!;
    const PAGE = BigInt(linux.pageSize());
    for (const p of presentInRuns(task.pid, lazy.runs)) {
      for (const run of lazy.runs) {
        const end = runEnd(run);
        const from = p.start > run.start ? p.start : run.start;
        const to = p.end < end ? p.end : end;
        if (from >= to) continue;
        const i0 = Number((from - run.start) / PAGE);
        const i1 = Number((to - run.start) / PAGE);
        const payload = readAheadTo(ctx, stream, run.src);
        task.tracee!.writeMemory(from, payload.subarray((run.srcPage + i0) * Number(PAGE), (run.srcPage + i1) * Number(PAGE)));
        run.done.fill(1, i0, i1);
      }
    }
  }

  abort(ctx: RestartContext, task: RestartTask): void {
    // The restart failed before the release: the flow kills the processes; the watchdog goes
    // without killing anything (their PIDs could be another process's by the time it would).
    const stream = CTX_STREAM.get(ctx);
    if (stream?.guard) {
      stream.guard.dismiss('done\n');
      stream.guard = undefined;
    }
    const lazy = task.state.get(TASK_LAZY);
    if (!lazy || lazy.fd < 0) return;
    try {
      fs.closeSync(lazy.fd);
    } catch {
      /* closed */
    }
    lazy.fd = -1;
    CTX_LAZY.delete(ctx);
    CTX_STREAM.delete(ctx);
  }
}

/**
 * The payload of the next object of the pages section, checked against its listing (the reader has
 * checked its checksum); null once the terminator is read after the last one.
 */
function readNext(ctx: RestartContext, stream: PagesStream): Buffer | null {
  const k = stream.next;
  const bad = (why: string) => new CptError('EBADIMG', why, { object: 'pages' });
  const rec = ctx.reader.next();
  if (k >= stream.listed.length) {
    if (rec) throw bad(`an object (${rec.name}, at image offset ${rec.offset}) after the last one the pages section lists`);
    return null;
  }
  if (!rec) throw bad(`the image ends after ${k} of the ${stream.listed.length} objects its pages section lists`);
  const want = stream.listed[k];
  const img = rec.obj as PagesImage | undefined;
  if (rec.type !== ObjectType.PAGES || rec.ptag !== want.ptag || !img || img.vaddr !== want.vaddr || img.count !== want.count) {
    throw bad(`object at image offset ${rec.offset} (${rec.name}) is not the one its pages section lists (${want.count} pages at 0x${want.vaddr.toString(16)})`);
  }
  if (!rec.pages || rec.pages.length !== want.count * linux.pageSize()) throw bad(`object at image offset ${rec.offset}: a payload of ${rec.pages?.length ?? 0} bytes for ${want.count} pages`);
  stream.next++;
  return rec.pages;
}

/** Object `k`'s payload before the processes run: the stream is read ahead to it, what is on the way held. */
function readAheadTo(ctx: RestartContext, stream: PagesStream, k: number): Buffer {
  while (stream.next <= k) {
    const at = stream.next;
    const p = readNext(ctx, stream);
    if (!p) break;
    stream.early.set(at, p);
  }
  const p = stream.early.get(k);
  if (!p) throw new CptError('EBADIMG', `object ${k} of the pages section is missing`, { object: 'pages' });
  return p;
}

/** The run holding `addr` (runs are sorted by address), or undefined. */
function runAt(runs: HeldRun[], addr: bigint): HeldRun | undefined {
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = runs[mid];
    if (addr < r.start) hi = mid - 1;
    else if (addr >= runEnd(r)) lo = mid + 1;
    else return r;
  }
  return undefined;
}

/** The runs with [start, end) cut out as their own runs (the same source), so that a range can be marked or moved whole. */
function cut(runs: HeldRun[], start: bigint, end: bigint, page: number): HeldRun[] {
  const out: HeldRun[] = [];
  const P = BigInt(page);
  for (const r of runs) {
    const rEnd = runEnd(r);
    const points = [start, end].filter((x) => x > r.start && x < rEnd).map((x) => Number((x - r.start) / P)).sort((a, b) => a - b);
    let from = 0;
    for (const at of [...points, r.done.length]) {
      if (at > from) out.push({ start: r.start + BigInt(from) * P, src: r.src, srcPage: r.srcPage + from, done: r.done.subarray(from, at) });
      from = at;
    }
  }
  return out;
}

const inRange = (r: HeldRun, start: bigint, end: bigint) => r.start >= start && r.start < end;

/** The errors of a UFFDIO_COPY/ZEROPAGE that say the page needs nothing more, or the process is gone. */
const EEXIST = -linux.ERRNO.EEXIST;
const EAGAIN = -linux.ERRNO.EAGAIN;
const ENOENT = -linux.ERRNO.ENOENT;
const ESRCH = -linux.ERRNO.ESRCH;
const EFAULT = -linux.ERRNO.EFAULT;

class Filler {
  private readonly page = linux.pageSize();
  private readonly spaces: Space[] = [];
  private readonly msgs = Buffer.alloc(UFFD.MSG_SIZE * 64);
  pages = 0;
  faults = 0;
  /** Events by kind, for the debug log. */
  readonly seen: Record<string, number> = {};

  constructor(tasks: Array<{ pid: number; lazy: TaskLazy }>) {
    for (const { pid, lazy } of tasks) this.spaces.push({ pid, fd: lazy.fd, runs: lazy.runs, gone: false });
  }

  /** Serves every message waiting on every space. */
  events(): void {
    for (let i = 0; i < this.spaces.length; i++) {
      const s = this.spaces[i];
      if (s.gone) continue;
      for (;;) {
        const msgs = linux.uffdRead(s.fd, this.msgs);
        if (!msgs.length) break;
        for (const m of msgs) this.event(s, m);
      }
    }
  }

  private event(s: Space, m: linux.UffdMessage): void {
    const PAGE = BigInt(this.page);
    this.seen[m.event] = (this.seen[m.event] ?? 0) + 1;
    switch (m.event) {
      case 'pagefault': {
        const addr = m.address & ~(PAGE - 1n);
        const run = runAt(s.runs, addr);
        this.faults++;
        // A page still to come: it is copied (and its waiter woken) when its object arrives.
        if (run && !run.done[Number((addr - run.start) / PAGE)]) return;
        const r = linux.uffdZeropage(s.fd, addr, this.page).r;
        if (r === EEXIST) linux.uffdWake(s.fd, addr, this.page);
        else if (r === ESRCH) s.gone = true;
        else if (r < 0 && r !== ENOENT && r !== EAGAIN) this.fail(s, `UFFDIO_ZEROPAGE at 0x${addr.toString(16)}`, r);
        return;
      }
      case 'remove':
      case 'unmap': {
        // The process dropped these pages: they read zero now, the image's data must not come back.
        s.runs = cut(s.runs, m.start, m.end, this.page);
        for (const r of s.runs) if (inRange(r, m.start, m.end)) r.done.fill(1);
        return;
      }
      case 'remap': {
        // The pages still to come follow the area.
        const end = m.from + m.len;
        s.runs = cut(s.runs, m.from, end, this.page);
        for (const r of s.runs) if (inRange(r, m.from, end)) r.start = r.start - m.from + m.to;
        s.runs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
        return;
      }
      case 'fork': {
        // The child's unfilled pages are the parent's: the same objects, its own progress.
        const runs = s.runs.map((r) => ({ ...r, done: Uint8Array.from(r.done) }));
        this.spaces.push({ pid: 0, fd: m.fd, runs, gone: false });
        return;
      }
      default:
        return;
    }
  }

  /** Object `k` has arrived: its pages go into every space that still waits for them. */
  arrive(k: number, payload: Buffer): void {
    for (let n = 0; n < this.spaces.length; n++) {
      const s = this.spaces[n];
      for (;;) {
        if (s.gone) break;
        const run = s.runs.find((r) => r.src === k && r.done.includes(0));
        if (!run) break;
        this.copy(s, run, payload);
      }
    }
  }

  /** UFFDIO_COPY of the pages of `run` not done yet; returns early after reading events (the runs may have changed). */
  private copy(s: Space, run: HeldRun, payload: Buffer): void {
    const PAGE = this.page;
    let i = 0;
    while (i < run.done.length && !s.gone) {
      if (run.done[i]) {
        i++;
        continue;
      }
      let j = i;
      while (j < run.done.length && !run.done[j]) j++;
      const dst = run.start + BigInt(i * PAGE);
      const { r, copied } = linux.uffdCopy(s.fd, dst, payload.subarray((run.srcPage + i) * PAGE, (run.srcPage + j) * PAGE));
      const n = Math.floor(copied / PAGE);
      run.done.fill(1, i, i + n);
      this.pages += n;
      i += n;
      if (r === 0) continue;
      if (r === EEXIST) {
        // Present already: nothing to do, but whoever waits on it must wake.
        linux.uffdWake(s.fd, run.start + BigInt(i * PAGE), PAGE);
        run.done[i] = 1;
        i++;
      } else if (r === EAGAIN) {
        // The layout is changing (an event to read first): read it, then go on from the new state.
        this.events();
        return;
      } else if (r === ESRCH) {
        s.gone = true;
      } else if (r === ENOENT || r === EFAULT) {
        // No area there any more and no event yet: read them; if still nothing, it is gone.
        this.events();
        run.done[i] = 1;
        return;
      } else {
        this.fail(s, `UFFDIO_COPY at 0x${(run.start + BigInt(i * PAGE)).toString(16)}`, r);
      }
    }
  }

  private fail(s: Space, what: string, r: number): never {
    throw new CptError(linux.errnoName(-r), `${what} failed while filling the memory of process ${s.pid || '(a child it forked)'}`, { pid: s.pid, object: 'lazy restart' });
  }

  /** Pages listed and never filled (every object has arrived): none, unless something went wrong. */
  missing(): number {
    let n = 0;
    for (const s of this.spaces) if (!s.gone) for (const r of s.runs) for (const d of r.done) n += d ? 0 : 1;
    return n;
  }

  close(): void {
    for (const s of this.spaces) {
      try {
        fs.closeSync(s.fd);
      } catch {
        /* closed */
      }
    }
  }
}

/**
 * The watchdog: a shell holding a copy of each userfaultfd. If cptrst dies before it says
 * "done", its stdin ends and it kills the processes: the faults wait for it meanwhile. Started
 * with posix_spawn (linux.spawnPipedHelper), in a session of its own: a fork of cptrst's address
 * space (child_process.spawn) cost a few ms more here, before the processes could run.
 */
function watchdog(fds: number[], pids: number[]): linux.PipedHelper {
  const script = `read line; [ "$line" = done ] && exit 0; kill -9 ${pids.join(' ')} 2>/dev/null; exit 0`;
  return linux.spawnPipedHelper('/bin/sh', ['-c', script], fds, 'the lazy restart\'s watchdog');
}

/** Runs once the processes are let go: reads the rest of the image into them, then closes the userfaultfds. */
async function fill(ctx: RestartContext): Promise<LazyFillReport> {
  const t0 = Date.now();
  const tasks = CTX_LAZY.get(ctx) ?? [];
  const stream = CTX_STREAM.get(ctx)!;
  CTX_LAZY.delete(ctx);
  CTX_STREAM.delete(ctx);
  const f = new Filler(tasks);
  const guard = stream.guard!;
  try {
    // The caller hears that the processes run (restart prints the PID) before the first object
    // is read: the time until then does not include any page data. A fault meanwhile waits.
    await new Promise<void>((resolve) => setImmediate(resolve));
    f.events();
    for (const [k, payload] of [...stream.early.entries()].sort((a, b) => a[0] - b[0])) {
      f.arrive(k, payload);
      stream.early.delete(k);
    }
    for (let n = 1; ; n++) {
      f.events();
      const k = stream.next;
      let payload: Buffer | null;
      try {
        payload = readNext(ctx, stream);
      } catch (e) {
        const ce = e instanceof CptError ? e : new CptError('EIO', String((e as Error).message ?? e), { object: 'image' });
        throw new CptError(ce.code, `the image became unreadable half way (${ce.message})`, { object: 'image' });
      }
      if (!payload) break;
      f.arrive(k, payload);
      ctx.reader.recycle(payload);
      if (n % TURN_OBJECTS === 0) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (ctx.signal?.aborted) throw new CptError('EINTR', 'interrupted before the memory was complete', { pid: tasks[0]?.pid, object: 'lazy restart' });
      }
    }
    f.events();
    const missing = f.missing();
    if (missing) throw new CptError('EIO', `${missing} pages could not be filled`, { pid: tasks[0]?.pid, object: 'lazy restart' });
  } catch (e) {
    // It cannot go on without its memory: killed, never left running with pages missing, and so
    // is every process it forked meanwhile (their unfilled pages are the same), while the
    // userfaultfds are still open (their faults wait until then).
    for (const pid of linux.descendants(tasks.map((t) => t.pid))) {
      try {
        linux.kill(pid, 9);
      } catch {
        /* gone */
      }
    }
    f.close();
    guard.dismiss('done\n');
    const ce = e instanceof CptError ? e : new CptError('EIO', String((e as Error).message ?? e), { object: 'lazy restart' });
    throw new CptError(ce.code, `${ce.message}; the restored process${tasks.length > 1 ? 'es were' : ' was'} killed (${tasks.map((t) => t.pid).join(', ')}): it cannot run without its memory`, { pid: tasks[0]?.pid, object: 'lazy restart' });
  }
  f.close();
  guard.dismiss('done\n');
  ctx.log.debug(`lazy fill: ${f.pages} pages in, events ${JSON.stringify(f.seen)}`);
  return { pages: f.pages, faults: f.faults, ms: Date.now() - t0 };
}
