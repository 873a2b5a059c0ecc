/**
 * Pages of the pages section, read from the image file. In a plain restart from a regular file, the
 * payloads of the pages section (private anonymous read-write areas, read after every other
 * record of every task) are left in the file by the reader, and each process with enough of them
 * gets them one of three ways, the first that it can take:
 *
 * - Copied in (UFFDIO_COPY), for a process with COPY_MIN_BYTES in the section: the process makes
 *   a userfaultfd (an injected userfaultfd(2), user-mode faults only, which needs no privilege),
 *   cptrst takes a copy of it (pidfd_getfd) and closes the
 *   process's, sets it up so that a missing page is never waited for (UFFD_FEATURE_SIGBUS) and
 *   registers the areas. Per object, cptrst maps the payload into a place of its own (a
 *   MemoryRegion; read into it where the file may not be mapped), checks its checksum there, and
 *   has the kernel copy it from there into the process on a thread of libuv's pool
 *   (uffdCopyOnPool) while it checks the next ones: one copy into pages the kernel allocates as it
 *   copies, without zeroing them or faulting them in first, exactly the bytes that were checked,
 *   and the two CPUs busy (cptrst checking, the pool copying). Once every object is read
 *   (RestartContext.afterRecords, before any finish hook) the copies are waited for and the
 *   userfaultfd closed: the areas are registered no more, and the process never ran with it.
 * - Read by the process (a smaller process, or one that cannot make a userfaultfd): cptrst's descriptor
 *   of the image is sent to it over a socketpair made inside it, and it reads its pages itself in
 *   batches of injected calls (Tracee.startSyscalls): per object, madvise(MADV_POPULATE_WRITE),
 *   then pread64. While a batch runs cptrst checks the same payloads (ImageReader.checkPayload)
 *   and, over a mapping, writes every fourth object itself. The fd is closed inside the process
 *   once every object is read.
 * - Written by cptrst (process_vm_writev), piece by piece as they are checked.
 *
 * The image is untrusted: each object is checked against its area before it is queued
 * (restorePages); a read that comes short (the file ends inside a payload) or fails, a copy that
 * fails, or a checksum that does not match, fails the restart before any process runs, and the
 * flow kills what it made. A payload may reach the process before its checksum is found wrong: it
 * has not run, and is killed. Copied in, the process gets the very bytes cptrst checked; read by
 * the process, the file may change between its read and cptrst's check: the checksum guards
 * against damage, not against the image's owner (who can fix checksums anyway), and that gives
 * nobody more than a crafted image would.
 *
 * Everything else keeps the way through cptrst: a pipe or a socket, compressed payloads, a lazy
 * restart, pages outside the section (a parent's, read-only areas, ...), a process with less than
 * MIN_BYTES of pages in the section (setting up costs more than it saves), an area kept
 * copy-on-write from the parent (its pages are present: written over), a process in which the
 * calls cannot run as a batch (seccomp, no signal to end it) or that cannot take the descriptor
 * (RLIMIT_NOFILE), and an image fd open for more than reading.
 */
import * as fs from 'fs';
import {
  BatchCall, CptError, FdsReceived, FilePayload, ObjectType, RestartContext, RestartFlags, RestartTask, linux, withFdChannel,
} from '@cptrst/core';
import { VMAS_OF_RESTART, VmaImage } from './vma';

const { SYS, MADV, MSG, UFFD } = linux;
/** Bytes of pages per batch of reads inside a process: cptrst checks one batch while the process reads it. */
const BATCH_BYTES = 32 * 1024 * 1024;
/** Objects per batch: two calls each (populate, read), within one batch of injected calls. */
const BATCH_OBJECTS = 60;
/**
 * Of each batch, every CPTRST_SHARE-th object is written by cptrst while the process reads the
 * others, where cptrst checks over a mapping of the file: the process's reads (its pages faulted
 * in, then copied) take longer than those checks, and the restart waits for both (bench/README.md).
 */
const CPTRST_SHARE = 4;
/** A process gets its pages copied in or reads them itself only once this much of them wait; less is written by cptrst. */
const MIN_BYTES = 4 * 1024 * 1024;
/**
 * Pages copied in only for a process with this much in the section: below it, setting up (the
 * userfaultfd, the region, the pool's threads) costs about what it saves (bench/README.md: 10-15 ms
 * slower at 64 MiB, even at 256 MiB, 95 ms faster at 1 GiB), and the process reads them itself.
 * CPTRST_PAGES_COPY_IN=1 copies in from MIN_BYTES on, =0 never.
 */
const COPY_MIN_BYTES = 256 * 1024 * 1024;
/**
 * Bytes of each place in the region of copies in (the writer's objects are 2 MiB; a larger one,
 * or one off a page in the file, is copied in piece by piece from the reader's own buffer or
 * window, without the pool).
 */
const SLOT_PAYLOAD = 2 * 1024 * 1024;
/** Places in the region: the objects checked and waiting for the pool, or being copied by it. */
const SLOTS = 16;
/**
 * Objects (of 2 MiB) at most in one copy on the pool: each call costs cptrst's thread some 0.1 ms
 * (koffi's submit, the callback), which a GiB in 2 MiB calls made 50 ms (bench/README.md).
 */
const MERGE = 4;
/**
 * Copies on the pool at a time: two keep both CPUs busy with cptrst checking. koffi keeps memory
 * (stacks) for two asynchronous calls; each one more at a time would map and unmap its own, which
 * costs as much as the copy here (bench/README.md).
 */
const LANES = 2;

interface Item {
  vaddr: bigint;
  p: FilePayload;
  area: VmaImage;
}

interface TaskReads {
  task: RestartTask;
  /**
   * How its pages go in: undefined while fewer than MIN_BYTES wait (queued), 'copy' (copied in
   * through `uffd`), 'read' (by the process, through `fd`), 'write' (by cptrst).
   */
  way?: 'copy' | 'read' | 'write';
  /** cptrst's copy of the process's userfaultfd ('copy'). */
  uffd?: number;
  /** Areas registered with it by start ('copy'); false: one the kernel refused, written by cptrst. */
  areas?: Map<bigint, boolean>;
  /** The image's fd inside the process ('read'). */
  fd?: bigint;
  queue: Item[];
  queued: number;
  /** The batch the process runs now, and the objects it reads ('read'). */
  running?: { wait: () => bigint[]; items: Item[] };
}

/** Checked payloads in places of the region, one after the other there and in the process: one UFFDIO_COPY on the pool. */
interface Copy {
  r: TaskReads;
  uffd: number;
  items: Item[];
  /** Where the first byte is in the region, and the bytes. */
  at: number;
  length: number;
}

/**
 * The region the payloads are checked in and copied from, and the copies. Places are taken in
 * order, so that objects that follow each other in an area (2 MiB each) lie one after the other in
 * the region too, and up to MERGE of them go in one call; a copy waits in `queue` until it has MERGE
 * objects (or cannot grow, or a place is wanted, or at the end) for one of LANES calls on the pool.
 * A lane that ends takes the next (its callback runs on cptrst's thread at the next turn of the
 * event loop: the restart flow gives one per object).
 */
class Copies {
  private readonly busy: boolean[] = new Array<boolean>(SLOTS).fill(false);
  private next = 0;
  private readonly queue: Copy[] = [];
  private running = 0;
  /** The first copy that failed, thrown at the next object or at the end. */
  failure?: Error;
  /** Who waits for a free place, or for the last copy. */
  private waiting?: () => void;

  constructor(readonly region: linux.MemoryRegion, readonly room: number, private readonly done: (c: Copy, n: number) => void) {}

  /** The next place, if it is free: its offset in the region. */
  take(): number | undefined {
    if (this.busy[this.next]) return undefined;
    const i = this.next;
    this.busy[i] = true;
    this.next = (i + 1) % SLOTS;
    return i * this.room;
  }

  /** The next place, once it is free (what waits to be copied is started meanwhile). */
  async slot(): Promise<number> {
    for (;;) {
      const at = this.take();
      if (at !== undefined) return at;
      this.pump(true);
      await new Promise<void>((resolve) => (this.waiting = resolve));
      if (this.failure) throw this.failure;
    }
  }

  /** A place given back unused (its payload failed its check). */
  giveBack(at: number): void {
    this.busy[at / this.room] = false;
  }

  /** A checked payload at `at`: joined to the copy before it where it follows it in the region and in the process, else a copy of its own. */
  add(r: TaskReads, uffd: number, it: Item, at: number, length: number): void {
    const last = this.queue[this.queue.length - 1];
    if (last && last.uffd === uffd && last.items.length < MERGE && last.at + last.length === at && last.items[0].vaddr + BigInt(last.length) === it.vaddr) {
      last.items.push(it);
      last.length += length;
    } else {
      this.queue.push({ r, uffd, items: [it], at, length });
    }
    this.pump(false);
  }

  /** Starts queued copies while a lane is free: only whole ones (MERGE objects, or one that cannot grow), unless `all`. */
  private pump(all: boolean): void {
    while (this.running < LANES && this.queue.length && !this.failure) {
      const c = this.queue[0];
      if (!all && this.queue.length === 1 && c.items.length < MERGE) return;
      this.queue.shift();
      this.running++;
      linux.uffdCopyOnPool(c.uffd, c.items[0].vaddr, this.region.address(c.at), c.length)
        .then((n) => this.done(c, n))
        .catch((e: unknown) => {
          this.failure ??= e instanceof Error ? e : new CptError('EIO', String(e), { object: 'pages' });
        })
        .finally(() => {
          this.running--;
          for (let at = c.at; at < c.at + c.length; at += this.room) this.busy[at / this.room] = false;
          this.pump(false);
          const w = this.waiting;
          this.waiting = undefined;
          w?.();
        });
    }
  }

  /** Every copy done (or given up after a failure: those queued are dropped, the restart fails). */
  async settled(): Promise<void> {
    for (;;) {
      if (this.failure) this.queue.length = 0;
      this.pump(true);
      if (!this.running && !this.queue.length) return;
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
  }
}

const OF_RESTART = new WeakMap<RestartContext, FilePages>();

/**
 * Has the reader leave the payloads of the pages section in the file, for FilePages. Not in a
 * lazy restart (the fill reads them), and not where the image's fd could do more than read.
 */
export function leaveSectionPayloads(ctx: RestartContext): void {
  if (OF_RESTART.has(ctx) || ctx.flags & RestartFlags.LAZY || process.env.CPTRST_PAGES_THROUGH_CPTRST === '1') return;
  const fl = linux.rawSyscall(SYS.fcntl, ctx.imageFd, linux.F.GETFL);
  if (fl < 0n || (Number(fl) & linux.O.ACCMODE) !== linux.O.RDONLY) return;
  const pages = new FilePages(ctx);
  OF_RESTART.set(ctx, pages);
  ctx.afterRecords(() => ctx.timed('pages', () => pages.drain()));
  ctx.reader.leavePayloads((type) => type === ObjectType.PAGES && ctx.pagesFollow !== undefined);
}

/** The pages read from the file of this restart (a payload left in the file comes with one). */
export function filePagesOf(ctx: RestartContext): FilePages {
  const p = OF_RESTART.get(ctx);
  if (!p) throw new CptError('EINVAL', 'a page payload was left in the image file, and nothing reads it', { object: 'pages' });
  return p;
}

/** What the restart is left with when it fails: batches still running are waited for, so the abort hooks find their tracees. */
export function abortFilePages(ctx: RestartContext): void {
  OF_RESTART.get(ctx)?.abort();
}

export class FilePages {
  private readonly tasks = new Map<RestartTask, TaskReads>();
  /** False once the kernel refused MADV_POPULATE_WRITE (before 5.14): the reads then fault the pages in. */
  private populate = true;
  /** The region of copies in, made at the first process whose pages are copied in; null: none could be made. */
  private copies?: Copies | null;

  constructor(private readonly ctx: RestartContext) {}

  /**
   * Pages of a private read-write area, at `vaddr` (checked inside `area`): queued for the way the
   * process takes them. A promise where it waits for a place to check them in.
   */
  add(task: RestartTask, area: VmaImage, vaddr: bigint, p: FilePayload): void | Promise<void> {
    if (!task.tracee?.startSyscalls) return this.write(task, vaddr, p);
    let r = this.tasks.get(task);
    if (!r) this.tasks.set(task, (r = { task, queue: [], queued: 0 }));
    if (r.way === 'write') return this.write(task, vaddr, p);
    if (r.way === 'copy') return this.copyIn(r, { vaddr, p, area });
    r.queue.push({ vaddr, p, area });
    r.queued += p.length;
    if (r.way === undefined) {
      if (r.queued < MIN_BYTES) return;
      this.chooseWay(r);
      if (r.way === 'write') return this.writeQueued(r);
      if (r.way === 'copy') return this.copyQueued(r);
    }
    if (r.queue.length >= BATCH_OBJECTS || r.queued >= BATCH_BYTES) this.pump(r);
  }

  /**
   * Pages cptrst reads from the file, checks and writes itself (process_vm_writev, or /proc/PID/mem
   * where the area is not writable), piece by piece as they are checked (the process has not run:
   * a checksum found wrong at the end kills it).
   */
  write(task: RestartTask, vaddr: bigint, p: FilePayload): void {
    this.ctx.timed('pages written by cptrst', () => this.ctx.reader.checkPayload(p, (bytes, at) => task.tracee!.writeMemory(vaddr + BigInt(at), bytes)));
  }

  /** Every object read: the rest of each queue, the last batches and copies waited for, the descriptors closed. */
  async drain(): Promise<void> {
    for (const r of this.tasks.values()) {
      if (r.way === undefined || r.way === 'write') {
        this.writeQueued(r);
        continue;
      }
      if (r.way === 'copy') continue;
      if (r.queue.length) this.pump(r);
      this.collect(r);
      r.task.tracee!.syscallOk(SYS.close, [r.fd!], 'close of the image file inside the process');
      r.fd = undefined;
      r.way = 'write';
    }
    const copies = this.copies;
    if (copies) {
      await this.ctx.timed('pages copied in', () => copies.settled());
      this.copies = undefined;
      copies.region.release();
      if (copies.failure) throw copies.failure;
    }
    for (const r of this.tasks.values()) this.closeUffd(r);
    this.tasks.clear();
  }

  abort(): void {
    for (const r of this.tasks.values()) {
      try {
        this.collect(r);
      } catch {
        /* the process is killed anyway */
      }
      // Copies still running go into a process about to be killed; its areas are let go with the fd.
      this.closeUffd(r);
    }
    this.tasks.clear();
    const copies = this.copies;
    this.copies = undefined;
    // The region is given back once the pool no longer reads it.
    if (copies) {
      copies.failure ??= new CptError('EINTR', 'the restart failed', { object: 'pages' });
      void copies.settled().then(() => copies.region.release());
    }
  }

  /** The way the pages of a process that has MIN_BYTES of them waiting go in. */
  private chooseWay(r: TaskReads): void {
    const copyIn = process.env.CPTRST_PAGES_COPY_IN;
    if (this.copies !== null && copyIn !== '0' && (copyIn === '1' || this.sectionBytes(r.task) >= COPY_MIN_BYTES)) {
      const uffd = this.makeUffd(r.task);
      if (uffd !== null) {
        this.copies ??= this.makeCopies();
        if (this.copies) {
          r.way = 'copy';
          r.uffd = uffd;
          r.areas = new Map();
          return;
        }
        fs.closeSync(uffd);
      }
    }
    const fd = this.giveImageFd(r.task);
    if (fd === null) r.way = 'write';
    else {
      r.way = 'read';
      r.fd = fd;
    }
  }

  /** Bytes of pages the pages section lists for areas of `task`. */
  private sectionBytes(task: RestartTask): number {
    const e = this.ctx.pagesFollow?.entries ?? [];
    const areas = VMAS_OF_RESTART.get(this.ctx);
    let pages = 0;
    for (let i = 0; i + 2 < e.length; i += 3) if (areas?.get(Number(e[i]))?.task === task) pages += Number(e[i + 2]);
    return pages * linux.pageSize();
  }

  private makeCopies(): Copies | null {
    const room = SLOT_PAYLOAD;
    const region = linux.MemoryRegion.reserve(SLOTS * room);
    if (!region) this.ctx.log.info('no memory for the region of copies in: the processes read their pages');
    return region ? new Copies(region, room, (c, n) => this.copied(c, n)) : null;
  }

  /**
   * A userfaultfd of the process, made inside it (user-mode faults only: any process may make
   * one) and held by cptrst (pidfd_getfd; the process's own is closed at once), set so that a
   * fault on a missing page of its areas is SIGBUS, never a wait. Null where it cannot be made (the
   * reason is logged): the process then reads its pages itself.
   */
  private makeUffd(task: RestartTask): number | null {
    const t = task.tracee!;
    const no = (why: string): null => {
      this.ctx.log.info(`pid ${task.pid}: its pages cannot be copied in (${why}): it reads them itself`);
      return null;
    };
    const ufd = t.syscall(SYS.userfaultfd, [linux.O.CLOEXEC | linux.O.NONBLOCK | UFFD.USER_MODE_ONLY]);
    if (ufd < 0n) return no(`userfaultfd: ${linux.errnoName(Number(-ufd))}`);
    let mine: number;
    try {
      mine = linux.fdCopyOf(task.pid, Number(ufd));
    } catch (e) {
      return no(`pidfd_getfd: ${(e as Error).message}`);
    } finally {
      t.syscall(SYS.close, [ufd]);
    }
    const api = Buffer.alloc(24);
    api.writeBigUInt64LE(BigInt(UFFD.API), 0);
    api.writeBigUInt64LE(BigInt(UFFD.FEATURE_SIGBUS), 8);
    const r = linux.rawSyscall(SYS.ioctl, mine, UFFD.IOC_API, api);
    if (r < 0n) {
      fs.closeSync(mine);
      return no(`UFFDIO_API with UFFD_FEATURE_SIGBUS: ${linux.errnoName(Number(-r))}`);
    }
    return mine;
  }

  private closeUffd(r: TaskReads): void {
    if (r.uffd === undefined) return;
    const fd = r.uffd;
    r.uffd = undefined;
    r.way = 'write';
    try {
      fs.closeSync(fd);
    } catch {
      /* closed */
    }
  }

  private async copyQueued(r: TaskReads): Promise<void> {
    const items = r.queue.splice(0);
    r.queued = 0;
    for (const it of items) await this.copyIn(r, it);
  }

  /**
   * One object copied in: checked in a free place of the region (waiting for one if the pool is
   * behind), then queued for the pool. Its area is registered first; an area the kernel refuses,
   * or one kept from the parent (its pages are present), is written by cptrst.
   */
  private copyIn(r: TaskReads, it: Item): void | Promise<void> {
    const copies = this.copies!;
    if (copies.failure) throw copies.failure;
    if (!this.registered(r, it.area)) return this.write(r.task, it.vaddr, it.p);
    // Larger than a place, or off a page in the file (an image that starts inside a file): piece by piece.
    if (it.p.length > SLOT_PAYLOAD || it.p.fileOffset % linux.pageSize() !== 0) return this.copyLarge(r, it);
    const at = copies.take();
    if (at !== undefined) return this.check(r, it, at);
    return this.ctx.timed('pages copied in', () => copies.slot()).then((slot) => this.check(r, it, slot));
  }

  private check(r: TaskReads, it: Item, at: number): void {
    const copies = this.copies!;
    let bytes: Buffer;
    try {
      bytes = this.ctx.timed('page checksums', () => this.ctx.reader.loadPayload(it.p, copies.region, at, copies.room));
    } catch (e) {
      copies.giveBack(at);
      throw e;
    }
    copies.add(r, r.uffd!, it, bytes.byteOffset - copies.region.view.byteOffset, bytes.length);
  }

  private registered(r: TaskReads, area: VmaImage): boolean {
    let ok = r.areas!.get(area.start);
    if (ok !== undefined) return ok;
    // Kept copy-on-write from the parent: its pages are there, to be written over, not copied in.
    ok = area.inheritedAt === 0n;
    if (ok) {
      const e = linux.uffdRegister(r.uffd!, area.start, area.end, UFFD.REGISTER_MODE_MISSING);
      if (e < 0) this.ctx.log.info(`pid ${r.task.pid}: UFFDIO_REGISTER of 0x${area.start.toString(16)}-0x${area.end.toString(16)}: ${linux.errnoName(-e)}: cptrst writes its pages`);
      ok = e === 0;
    }
    r.areas!.set(area.start, ok);
    return ok;
  }

  /** A copy the pool ended: what it did not copy (a page present already, an error) is copied here, where errno is known. */
  private copied(c: Copy, n: number): void {
    if (n === c.length) return;
    const bytes = this.copies!.region.view.subarray(c.at, c.at + c.length);
    this.copyRest(c.r, c.uffd, c.items[0], bytes, n > 0 ? n : 0);
  }

  /** A payload larger than a place of the region: copied in piece by piece as the reader checks it, on this thread. */
  private copyLarge(r: TaskReads, it: Item): void {
    this.ctx.timed('pages copied in', () => this.ctx.reader.checkPayload(it.p, (bytes, at) => this.copyRest(r, r.uffd!, it, bytes, 0, at)));
  }

  /**
   * UFFDIO_COPY of `bytes` from `from` on, to it.vaddr + base: a page present already (made by an
   * earlier step, or a zero page) is written over through process_vm_writev (present: no fault);
   * any other failure fails the restart.
   */
  private copyRest(r: TaskReads, uffd: number, it: Item, bytes: Buffer, from: number, base = 0): void {
    const PAGE = linux.pageSize();
    let at = from - (from % PAGE);
    let again = 0;
    while (at < bytes.length) {
      const dst = it.vaddr + BigInt(base + at);
      const { r: e, copied } = linux.uffdCopy(uffd, dst, bytes.subarray(at));
      at += copied - (copied % PAGE);
      // Some copied (the kernel says EAGAIN then): why it stopped shows at the next call.
      if (e === 0 || copied > 0) continue;
      if (e === -linux.ERRNO.EEXIST) {
        r.task.tracee!.writeMemory(it.vaddr + BigInt(base + at), bytes.subarray(at, at + PAGE));
        at += PAGE;
      } else if (e !== -linux.ERRNO.EAGAIN || ++again > 100) {
        const name = linux.errnoName(-e);
        throw new CptError(name, `UFFDIO_COPY of the pages at 0x${dst.toString(16)} (${it.p.desc}) into the process failed: ${name}`, { pid: r.task.pid, object: 'pages' });
      }
    }
  }

  private writeQueued(r: TaskReads): void {
    for (const it of r.queue.splice(0)) this.write(r.task, it.vaddr, it.p);
    r.queued = 0;
  }

  /**
   * Starts a batch of the queue in the process (after the previous one), then checks its payloads
   * while it runs; every CPTRST_SHARE-th object of the queue cptrst writes itself meanwhile (where
   * it checks over a mapping).
   */
  private pump(r: TaskReads): void {
    const all = r.queue.splice(0);
    r.queued = 0;
    this.collect(r);
    // Only with the check over a mapping: reading the payloads back, cptrst has no time to spare.
    const share = this.ctx.reader.mapsPayloads ? CPTRST_SHARE : 0;
    const mine = share ? all.filter((_, i) => i % share === share - 1) : [];
    const items = share ? all.filter((_, i) => i % share !== share - 1) : all;
    const fd = r.fd!;
    const calls: BatchCall[] = [];
    for (const { vaddr, p } of items) {
      if (this.populate) calls.push({ nr: SYS.madvise, args: [vaddr, p.length, MADV.POPULATE_WRITE] });
      calls.push({ nr: SYS.pread64, args: [fd, vaddr, p.length, p.fileOffset] });
    }
    const wait = calls.length ? r.task.tracee!.startSyscalls!(calls) : undefined;
    if (!wait) {
      // Not as one batch here: cptrst writes them.
      for (const it of all) this.write(r.task, it.vaddr, it.p);
      return;
    }
    r.running = { wait, items };
    try {
      this.ctx.timed('page checksums', () => {
        for (const it of items) this.ctx.reader.checkPayload(it.p);
      });
      for (const it of mine) this.write(r.task, it.vaddr, it.p);
    } catch (e) {
      try {
        this.collect(r);
      } catch {
        /* the checksum's error is the one to report */
      }
      throw e;
    }
  }

  /** Waits for the batch the process runs, and checks that every read got its whole payload. */
  private collect(r: TaskReads): void {
    const run = r.running;
    if (!run) return;
    r.running = undefined;
    const res = this.ctx.timed('pages read by the process', () => run.wait());
    const per = res.length / run.items.length;
    run.items.forEach(({ vaddr, p }, i) => {
      if (per === 2 && res[2 * i] === -BigInt(linux.ERRNO.EINVAL)) this.populate = false;
      const got = res[per * i + per - 1];
      const where = `pages at 0x${vaddr.toString(16)} (${p.desc})`;
      if (got < 0n) {
        const e = linux.errnoName(Number(-got));
        throw new CptError(e, `reading the ${where} from the image file inside the process failed: ${e}`, { pid: r.task.pid, object: 'pages' });
      }
      if (got !== BigInt(p.length)) {
        throw new CptError('EBADIMG', `truncated: the image file ends inside the payload of ${p.desc} (${got} of ${p.length} bytes)`, { pid: r.task.pid, object: 'pages' });
      }
    });
  }

  /**
   * A copy of cptrst's fd of the image inside the process (close-on-exec, at the lowest free number),
   * or null where it cannot take one (the reason is logged; cptrst then writes its pages).
   */
  private giveImageFd(task: RestartTask): bigint | null {
    let got: FdsReceived;
    try {
      got = withFdChannel(task.tracee!, 'pages', 'the image file', (give) => give([this.ctx.imageFd]));
    } catch (e) {
      if (!(e instanceof CptError)) throw e;
      this.ctx.log.info(`pid ${task.pid}: lending it the image file failed (${e.message}): cptrst writes its pages`);
      return null;
    }
    if (got.flags & MSG.CTRUNC || got.fds.length !== 1) {
      for (const fd of got.fds) task.tracee!.syscall(SYS.close, [fd]);
      this.ctx.log.info(`pid ${task.pid}: the image file did not fit in its fd table: cptrst writes its pages`);
      return null;
    }
    return BigInt(got.fds[0]);
  }
}
