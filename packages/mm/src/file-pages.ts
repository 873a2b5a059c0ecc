/**
 * Pages a restored process reads itself, straight from the image file. In a plain restart from a
 * regular file, the payloads of the pages section (private anonymous read-write areas, read after
 * every other record of every task) are left in the file by the reader. Each process that has
 * enough of them gets cptrst's descriptor of the image (sent over a socketpair made inside it,
 * received there by an injected recvmsg), and reads its pages itself in batches of injected calls
 * (Tracee.startSyscalls): per object, madvise(MADV_POPULATE_WRITE) to fault the pages in without
 * a fault per page, then pread64 into them. One copy, from the file into the process, instead of
 * two (file to cptrst, cptrst to the process); while a batch runs, cptrst checks the checksums of
 * the same payloads (ImageReader.checkPayload: over a mapping of the file where no one but root
 * can change it, else read back), and, over a mapping, writes every fourth object of the batch
 * itself as it checks it (the process's faults and copies are the longer of the two). Once every
 * object is read (RestartContext.afterRecords, before any finish hook) the last batch is waited for and the
 * descriptor closed inside the process: it never runs its own code with it, and its fd table is
 * the image's again (the fd took a number the image left free, as every record of the process
 * had been restored; it is close-on-exec too).
 *
 * The image is untrusted: each object is checked against its area before it is queued (restorePages);
 * a read that comes short (the file ends inside a payload) or fails, or a checksum that does not
 * match, fails the restart before any process runs, and the flow kills what it made. The checksum
 * of a payload may be found wrong after the process read it: it has not run, and is killed.
 * The checksum guards against damage, not against the image's owner (who can fix checksums
 * anyway): that the file may change between the process's read and cptrst's gives nobody more
 * than a crafted image would.
 *
 * Everything else keeps the way through cptrst: a pipe or a socket, compressed payloads, a lazy
 * restart, pages outside the section (a parent's, read-only areas, ...), a process with less than
 * MIN_BYTES of pages in the section (the descriptor costs more than it saves), a process in which
 * the calls cannot run as a batch (seccomp, no signal to end it) or that cannot take the descriptor
 * (RLIMIT_NOFILE), and an image fd open for more than reading.
 */
import {
  BatchCall, CptError, FdsReceived, FilePayload, ObjectType, RestartContext, RestartFlags, RestartTask, linux, withFdChannel,
} from '@cptrst/core';

const { SYS, MADV, MSG } = linux;
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
/** A process gets the image's descriptor only once this much of its pages wait; less is written by cptrst. */
const MIN_BYTES = 4 * 1024 * 1024;

interface Item {
  vaddr: bigint;
  p: FilePayload;
}

interface TaskReads {
  task: RestartTask;
  /** The image's fd inside the process; null: cptrst writes this process's pages (it could not take the fd). */
  fd?: bigint | null;
  queue: Item[];
  queued: number;
  /** The batch the process runs now, and the objects it reads. */
  running?: { wait: () => bigint[]; items: Item[] };
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

  constructor(private readonly ctx: RestartContext) {}

  /** Pages of a private read-write area, at `vaddr` (checked inside it): queued for the process to read. */
  add(task: RestartTask, vaddr: bigint, p: FilePayload): void {
    if (!task.tracee?.startSyscalls) return this.write(task, vaddr, p);
    let r = this.tasks.get(task);
    if (!r) this.tasks.set(task, (r = { task, queue: [], queued: 0 }));
    if (r.fd === null) return this.write(task, vaddr, p);
    r.queue.push({ vaddr, p });
    r.queued += p.length;
    if (r.fd === undefined) {
      if (r.queued < MIN_BYTES) return;
      r.fd = this.giveImageFd(task);
      if (r.fd === null) return this.writeQueued(r);
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

  /** Every object read: the rest of each queue, the last batches waited for, the descriptors closed. */
  drain(): void {
    for (const r of this.tasks.values()) {
      if (typeof r.fd !== 'bigint') {
        this.writeQueued(r);
        continue;
      }
      if (r.queue.length) this.pump(r);
      this.collect(r);
      r.task.tracee!.syscallOk(SYS.close, [r.fd], 'close of the image file inside the process');
      r.fd = null;
    }
    this.tasks.clear();
  }

  abort(): void {
    for (const r of this.tasks.values()) {
      try {
        this.collect(r);
      } catch {
        /* the process is killed anyway */
      }
    }
    this.tasks.clear();
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
    const fd = r.fd as bigint;
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

