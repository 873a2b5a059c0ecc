/**
 * Lazy restart (`cptrst restart --lazy`, RestartFlags.LAZY): the private anonymous memory of a
 * restored process is not written before it runs. The image is read and checked to its end as
 * always; the pages of a file image are found again by their offset in the file when filled (and
 * a file cut short, changed or unreadable by then kills the process), a pipe's are held by cptrst
 * (the reader's payload buffers, not copied again: none can be missed). The areas are registered with a userfaultfd (MISSING mode) that the process itself
 * makes (an injected userfaultfd(2) + UFFDIO_API while it still has cptrst's capabilities), and
 * once the process runs cptrst copies each page in with UFFDIO_COPY: the ones it touches first,
 * as it touches them, and all the others in the background, in address order. A page the process
 * touches that the image does not hold is an untouched page: it gets a zero page.
 *
 * The process cannot tell: a fault, by its own code or by the kernel on its behalf (a read(2)
 * into its buffer), waits until the page is in; the non-cooperative events keep the fill true to
 * what the process does meanwhile: MADV_DONTNEED/munmap (REMOVE/UNMAP: those pages are not filled
 * any more, they read zero as they would have), mremap (REMAP: the held pages move along) and
 * fork (FORK: the child's copy of the unfilled pages is filled from the same data, through the
 * child's own userfaultfd). Once every held page is in, the userfaultfds are closed: what is
 * left unfilled is memory the image does not hold, which then reads zero as it did.
 *
 * Which areas: private anonymous areas mapped read-write, not droppable and not locked (mlock
 * populates them at once, which would fill them with zeros before the registration). Others are
 * written before the process runs, as in a plain restart. Pages the restart itself makes present
 * before the registration (the kernel writing a thread id or an rseq area during the finish
 * steps) are written with the image's data while the process is still stopped.
 *
 * If cptrst dies during the fill, a small watchdog (/bin/sh, holding a copy of the userfaultfds)
 * kills the process: its faults wait meanwhile, it never runs on zero pages. If a copy fails
 * (ENOMEM...) or cptrst is interrupted, the process (and what it forked meanwhile) is killed,
 * with a message naming it. Threads and trees: one userfaultfd per process. Images
 * not owned by root are refused (EPERM): the userfaultfd must be made with CAP_SYS_PTRACE to
 * handle faults taken inside the kernel, which such a process never has.
 */
import { spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import { CptError, LazyFillReport, RestartContext, RestartFlags, RestartTask, RestoreHandler, StateKey, linux } from '@cptrst/core';
import { RestoredVma, VmaImage, describeVma } from './vma';

const { SYS, UFFD, PROT, O } = linux;
/** After every other finish step (the credentials, the registers): nothing of the restart touches the memory after. */
const LAZY_ORDER = 1000;
/** Pages copied per UFFDIO_COPY in the background (2 MiB). */
const CHUNK_PAGES = 512;
/** Background copies between two turns of the event loop (signals, the interrupt). */
const TURN_COPIES = 64;
const FEATURES = UFFD.FEATURE_EVENT_FORK | UFFD.FEATURE_EVENT_REMAP | UFFD.FEATURE_EVENT_REMOVE | UFFD.FEATURE_EVENT_UNMAP;

/**
 * A run of held pages at `start`: their bytes in `data` (an image read from a pipe), or at `at` in
 * the image file (read again when they are filled); `done[i]` once page i needs no filling.
 */
interface HeldRun {
  start: bigint;
  data?: Buffer;
  at?: number;
  done: Uint8Array;
}

/** The image file a lazy restart reads pages from again: a copy of its fd, and what it was. */
interface ImageFile {
  fd: number;
  st: fs.BigIntStats;
}
const IMAGE_FILE = new WeakMap<RestartContext, ImageFile | null>();

/**
 * The image file, when the image is one whose stream offsets are its file offsets (a regular file
 * read from its start): its pages are read again at fill time instead of being held in memory.
 */
function imageFile(ctx: RestartContext): ImageFile | null {
  let f = IMAGE_FILE.get(ctx);
  if (f !== undefined) return f;
  f = null;
  try {
    const st = fs.fstatSync(ctx.imageFd, { bigint: true });
    const pos = linux.rawSyscall(SYS.lseek, ctx.imageFd, 0, linux.SEEK.CUR);
    if (st.isFile() && pos === BigInt(ctx.reader.offset)) {
      const fd = fs.openSync(`/proc/self/fd/${ctx.imageFd}`, 'r');
      f = { fd, st };
    }
  } catch {
    f = null; // read from memory then
  }
  IMAGE_FILE.set(ctx, f);
  return f;
}

function closeImageFile(ctx: RestartContext): void {
  const f = IMAGE_FILE.get(ctx);
  if (f) fs.closeSync(f.fd);
  IMAGE_FILE.set(ctx, null);
}

/** One address space being filled: its userfaultfd (in cptrst) and its held pages. */
interface Space {
  pid: number;
  fd: number;
  runs: HeldRun[];
  /** Background position: run index and page. */
  at: [number, number];
  gone: boolean;
}

/** A task's lazy state at restart: its userfaultfd (in cptrst), its held runs, its areas to register. */
interface TaskLazy {
  fd: number;
  runs: HeldRun[];
  areas: Map<bigint, VmaImage>;
  registered: boolean;
}
const TASK_LAZY = new StateKey<TaskLazy>('mm.lazy');
/** Every task's lazy state, for the fill once they are let go. */
const CTX_LAZY = new WeakMap<RestartContext, Array<{ pid: number; lazy: TaskLazy }>>();

/** Whether the pages of `area` wait for a lazy fill rather than being written now. */
function fillsLazily(ctx: RestartContext, area: RestoredVma): boolean {
  if (!(ctx.flags & RestartFlags.LAZY)) return false;
  const v = area.img;
  const rw = PROT.READ | PROT.WRITE;
  return area.kind.kind === 'anon' && !v.shared && (v.prot & rw) === rw && !v.vmFlags.some((f) => f === 'dp' || f === 'lo' || f === 'lf');
}

/** The userfaultfd of the task, made inside it on first need, held by cptrst (pidfd_getfd), closed inside. */
function taskLazy(ctx: RestartContext, task: RestartTask): TaskLazy {
  const have = task.state.get(TASK_LAZY);
  if (have) return have;
  // The restart flow refuses a lazy restart of a user's image before anything is made.
  if (!ctx.imageTrusted) throw new CptError('EPERM', 'a lazy restart is only for images owned by root', { pid: task.pid, object: 'lazy restart' });
  const t = task.tracee!;
  const what = (s: string) => `${s} (lazy restart)`;
  const ufd = t.syscallOk(SYS.userfaultfd, [O.CLOEXEC | O.NONBLOCK], what('userfaultfd'));
  let mine = -1;
  try {
    const api = Buffer.alloc(24);
    api.writeBigUInt64LE(BigInt(UFFD.API), 0);
    api.writeBigUInt64LE(BigInt(FEATURES), 8);
    const r = t.syscall(SYS.ioctl, [ufd, UFFD.IOC_API, t.stage(api, 0)]);
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), 'UFFDIO_API with the fork, remap, remove and unmap events failed inside the process: this kernel cannot follow a lazily restored process; restart without --lazy', { pid: task.pid, object: 'lazy restart' });
    const pidfd = linux.pidfdOpen(task.pid);
    try {
      mine = linux.pidfdGetfd(pidfd, Number(ufd));
    } finally {
      fs.closeSync(pidfd);
    }
  } finally {
    t.syscall(SYS.close, [ufd]);
  }
  const lazy: TaskLazy = { fd: mine, runs: [], areas: new Map(), registered: false };
  task.state.set(TASK_LAZY, lazy);
  const all = CTX_LAZY.get(ctx) ?? [];
  all.push({ pid: task.pid, lazy });
  CTX_LAZY.set(ctx, all);
  if (!ctx.lazyFill) ctx.lazyFill = () => fill(ctx);
  return lazy;
}

/**
 * Called for each PAGES object (validated, inside `area`): true when its pages wait for the fill.
 * A file image's are found again by their offset (the reader gets its buffer back); any other
 * image's payload buffer is kept. Runs must come in address order (as a checkpoint writes them).
 */
export function holdPages(ctx: RestartContext, task: RestartTask, area: RestoredVma, vaddr: bigint, pages: Buffer, pagesOffset?: number): boolean {
  if (!fillsLazily(ctx, area)) return false;
  const lazy = taskLazy(ctx, task);
  const count = pages.length / linux.pageSize();
  const last = lazy.runs[lazy.runs.length - 1];
  if (last && vaddr < runEnd(last)) throw new CptError('EBADIMG', `pages at 0x${vaddr.toString(16)} overlap or precede the pages before them`, { pid: task.pid, object: 'pages' });
  if (pagesOffset !== undefined && imageFile(ctx)) {
    // Read again from the file when filled: nothing held, and the reader reuses its buffer.
    lazy.runs.push({ start: vaddr, at: pagesOffset, done: new Uint8Array(count) });
    ctx.reader.recycle(pages);
  } else {
    lazy.runs.push({ start: vaddr, data: pages, done: new Uint8Array(count) });
  }
  lazy.areas.set(area.img.start, area.img);
  return true;
}

export class LazyRestore implements RestoreHandler {
  readonly name = 'lazy';
  readonly order = LAZY_ORDER;
  readonly types = [];

  /** It owns no object type: its work is all in finish. */
  restore(): void {}

  /**
   * The areas are registered, last of all before the release. Pages made present before that (by
   * the restart's own steps) get the image's data now; the fill leaves them alone.
   */
  finish(ctx: RestartContext, task: RestartTask): void {
    const lazy = task.state.get(TASK_LAZY);
    if (!lazy || lazy.registered) return;
    const PAGE = BigInt(linux.pageSize());
    for (const v of lazy.areas.values()) {
      const r = linux.uffdRegister(lazy.fd, v.start, v.end, UFFD.REGISTER_MODE_MISSING);
      const what = describeVma(v);
      if (r < 0) throw new CptError(linux.errnoName(-r), `UFFDIO_REGISTER of ${what} failed (lazy restart)`, { pid: task.pid, object: what });
    }
    lazy.registered = true;
    const pm = fs.openSync(`/proc/${task.pid}/pagemap`, 'r');
    try {
      for (const { start, end } of lazy.areas.values()) {
        const P = linux.PAGE_IS;
        const present = linux.pagemapScan(pm, start, end, P.PRESENT | P.SWAPPED, P.PRESENT) ?? [];
        for (const p of present) {
          for (const run of lazy.runs) {
            const end = runEnd(run);
            const from = p.start > run.start ? p.start : run.start;
            const to = p.end < end ? p.end : end;
            if (from >= to) continue;
            const i0 = Number((from - run.start) / PAGE);
            const i1 = Number((to - run.start) / PAGE);
            task.tracee!.writeMemory(from, pagesOf(run, i0, i1, imageFile(ctx), Buffer.allocUnsafe((i1 - i0) * Number(PAGE))));
            run.done.fill(1, i0, i1);
          }
        }
      }
    } finally {
      fs.closeSync(pm);
    }
  }

  abort(ctx: RestartContext, task: RestartTask): void {
    const lazy = task.state.get(TASK_LAZY);
    if (!lazy || lazy.fd < 0) return;
    try {
      fs.closeSync(lazy.fd);
    } catch {
      /* closed */
    }
    lazy.fd = -1;
    CTX_LAZY.delete(ctx);
    closeImageFile(ctx);
  }
}

const runEnd = (r: HeldRun) => r.start + BigInt(r.done.length * linux.pageSize());

/**
 * Pages [i0, i1) of a run: a view of its data, or read again from the image file into `buf`. A
 * file that changed since it was read (size, mtime, inode), or that cannot be read, is an error:
 * the pages would not be the image's.
 */
function pagesOf(run: HeldRun, i0: number, i1: number, file: ImageFile | null, buf: Buffer): Buffer {
  const PAGE = linux.pageSize();
  if (run.data) return run.data.subarray(i0 * PAGE, i1 * PAGE);
  const len = (i1 - i0) * PAGE;
  const where = run.at! + i0 * PAGE;
  const bad = (why: string) => new CptError('EIO', `the image became unreadable half way (${why}, at image offset ${where})`, { object: 'image' });
  if (!file) throw bad('the image file is closed');
  let st: fs.BigIntStats;
  let n: number;
  try {
    st = fs.fstatSync(file.fd, { bigint: true });
    n = fs.readSync(file.fd, buf, 0, len, where);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (st.size !== file.st.size || st.mtimeNs !== file.st.mtimeNs || st.ino !== file.st.ino) throw bad('the image file changed since it was read');
  if (n !== len) throw bad(`${n} bytes read of ${len}`);
  return buf.subarray(0, len);
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

/**
 * The runs with [start, end) cut out as their own runs (views of the same data), so that a range
 * can be marked or moved whole.
 */
function cut(runs: HeldRun[], start: bigint, end: bigint, page: number): HeldRun[] {
  const out: HeldRun[] = [];
  const P = BigInt(page);
  for (const r of runs) {
    const rEnd = runEnd(r);
    const points = [start, end].filter((x) => x > r.start && x < rEnd).map((x) => Number((x - r.start) / P));
    let from = 0;
    for (const at of [...points, r.done.length]) {
      if (at > from) {
        out.push({
          start: r.start + BigInt(from) * P,
          ...(r.data ? { data: r.data.subarray(from * page, at * page) } : { at: r.at! + from * page }),
          done: r.done.subarray(from, at),
        });
      }
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
  /** Where pages read again from the image file go before UFFDIO_COPY. */
  private readonly buf = Buffer.allocUnsafe(CHUNK_PAGES * linux.pageSize());
  pages = 0;
  faults = 0;
  /** Events by kind, for the debug log. */
  readonly seen: Record<string, number> = {};

  constructor(tasks: Array<{ pid: number; lazy: TaskLazy }>, private readonly file: ImageFile | null) {
    for (const { pid, lazy } of tasks) this.spaces.push({ pid, fd: lazy.fd, runs: lazy.runs, at: [0, 0], gone: false });
  }

  get fds(): number[] {
    return this.spaces.map((s) => s.fd);
  }

  get pids(): number[] {
    return this.spaces.map((s) => s.pid);
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
        const i = run ? Number((addr - run.start) / PAGE) : -1;
        this.faults++;
        if (run && !run.done[i]) {
          this.copy(s, run, i, Math.min(run.done.length, i + 1));
        } else {
          const r = linux.uffdZeropage(s.fd, addr, this.page).r;
          if (r === EEXIST) linux.uffdWake(s.fd, addr, this.page);
          else if (r === ESRCH) s.gone = true;
          else if (r < 0 && r !== ENOENT && r !== EAGAIN) this.fail(s, `UFFDIO_ZEROPAGE at 0x${addr.toString(16)}`, r);
        }
        return;
      }
      case 'remove':
      case 'unmap': {
        // The process dropped these pages: they read zero now, the image's data must not come back.
        s.runs = cut(s.runs, m.start, m.end, this.page);
        for (const r of s.runs) if (inRange(r, m.start, m.end)) r.done.fill(1);
        s.at = [0, 0];
        return;
      }
      case 'remap': {
        // The unfilled pages moved with the area: so do their data.
        const end = m.from + m.len;
        s.runs = cut(s.runs, m.from, end, this.page);
        for (const r of s.runs) if (inRange(r, m.from, end)) r.start = r.start - m.from + m.to;
        s.runs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
        s.at = [0, 0];
        return;
      }
      case 'fork': {
        // The child's unfilled pages are the parent's: the same data, its own progress.
        const runs = s.runs.map((r) => ({ ...r, done: Uint8Array.from(r.done) }));
        this.spaces.push({ pid: 0, fd: m.fd, runs, at: [0, 0], gone: false });
        return;
      }
      default:
        return;
    }
  }

  /** UFFDIO_COPY of pages [i0, i1) of `run` that are not done; marks them. */
  private copy(s: Space, run: HeldRun, i0: number, i1: number): void {
    const PAGE = this.page;
    let i = i0;
    while (i < i1 && !s.gone) {
      if (run.done[i]) {
        i++;
        continue;
      }
      let j = i;
      while (j < i1 && !run.done[j]) j++;
      const dst = run.start + BigInt(i * PAGE);
      const { r, copied } = linux.uffdCopy(s.fd, dst, pagesOf(run, i, j, this.file, this.buf));
      const n = Math.floor(copied / PAGE);
      run.done.fill(1, i, i + n);
      this.pages += n;
      i += n;
      if (r === 0) continue;
      if (r === EEXIST) {
        // Present already (filled before): nothing to do, but whoever waits on it must wake.
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
        if (!run.done[i]) run.done[i] = 1;
        i++;
      } else {
        this.fail(s, `UFFDIO_COPY at 0x${(run.start + BigInt(i * PAGE)).toString(16)}`, r);
      }
    }
  }

  private fail(s: Space, what: string, r: number): never {
    throw new CptError(linux.errnoName(-r), `${what} failed while filling the memory of process ${s.pid || '(a child it forked)'}`, { pid: s.pid, object: 'lazy restart' });
  }

  /** One background chunk; false when every space is complete. */
  step(): boolean {
    for (const s of this.spaces) {
      if (s.gone) continue;
      while (s.at[0] < s.runs.length) {
        const run = s.runs[s.at[0]];
        let i = s.at[1];
        while (i < run.done.length && run.done[i]) i++;
        if (i >= run.done.length) {
          s.at = [s.at[0] + 1, 0];
          continue;
        }
        const end = Math.min(run.done.length, i + CHUNK_PAGES);
        s.at = [s.at[0], i];
        this.copy(s, run, i, end);
        return true;
      }
      // Complete: a restart of the walk finds nothing left (events may have rewound it).
      if (s.runs.every((r) => r.done.every((d) => d === 1))) s.gone = true;
      else s.at = [0, 0];
      return true;
    }
    return false;
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
 * "done", its stdin ends and it kills the processes: the faults wait for it meanwhile.
 */
function watchdog(fds: number[], pids: number[]): ChildProcess {
  const script = `read line; [ "$line" = done ] && exit 0; kill -9 ${pids.join(' ')} 2>/dev/null; exit 0`;
  const w = spawn('/bin/sh', ['-c', script], { stdio: ['pipe', 'ignore', 'ignore', ...fds], detached: true });
  w.unref();
  (w.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  w.on('error', () => undefined);
  return w;
}

/** The processes and all their descendants, as /proc shows them now. */
function withDescendants(pids: number[]): number[] {
  const out = new Set<number>();
  const todo = [...pids];
  while (todo.length) {
    const pid = todo.pop()!;
    if (out.has(pid)) continue;
    out.add(pid);
    try {
      todo.push(...linux.listChildren(pid));
    } catch {
      /* gone */
    }
  }
  return [...out];
}

/** Runs once the processes are let go: fills every held page, then closes the userfaultfds. */
async function fill(ctx: RestartContext): Promise<LazyFillReport> {
  const t0 = Date.now();
  const tasks = CTX_LAZY.get(ctx) ?? [];
  CTX_LAZY.delete(ctx);
  const f = new Filler(tasks, IMAGE_FILE.get(ctx) ?? null);
  const guard = watchdog(f.fds, f.pids);
  try {
    for (;;) {
      let more = true;
      for (let n = 0; n < TURN_COPIES && more; n++) {
        f.events();
        more = f.step();
      }
      if (!more) break;
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (ctx.signal?.aborted) throw new CptError('EINTR', 'interrupted before the memory was complete', { pid: tasks[0]?.pid, object: 'lazy restart' });
    }
  } catch (e) {
    // It cannot go on without its memory: killed, never left running with pages missing, and so
    // is every process it forked meanwhile (their unfilled pages are the same), while the
    // userfaultfds are still open (their faults wait until then).
    for (const pid of withDescendants(tasks.map((t) => t.pid))) {
      try {
        linux.kill(pid, 9);
      } catch {
        /* gone */
      }
    }
    f.close();
    closeImageFile(ctx);
    guard.stdin?.end('done\n');
    const ce = e instanceof CptError ? e : new CptError('EIO', String((e as Error).message ?? e), { object: 'lazy restart' });
    throw new CptError(ce.code, `${ce.message}; the restored process${tasks.length > 1 ? 'es were' : ' was'} killed (${tasks.map((t) => t.pid).join(', ')}): it cannot run without its memory`, { pid: tasks[0]?.pid, object: 'lazy restart' });
  }
  f.close();
  closeImageFile(ctx);
  guard.stdin?.end('done\n');
  ctx.log.debug(`lazy fill: ${f.pages} pages in, events ${JSON.stringify(f.seen)}`);
  return { pages: f.pages, faults: f.faults, ms: Date.now() - t0 };
}
