/**
 * The per-operation context: the image stream, the object table, the flags,
 * a logger and progress events. One is made for each sys_checkpoint or sys_restart call.
 */
import { EventEmitter } from 'events';
import * as fs from 'fs';
import { DependencyContainer } from 'tsyringe';
import { bootId } from './linux/machine';
import { CptError } from './errors';
import { Token, resolveAll, resolveOne } from './tokens';
import { HEAD_TAG, ImageReader, ImageWriter, ImageHead, PayloadFileSource, PayloadSource, layoutOf } from './image';
import type { CheckpointTask, FrozenTree } from './contract';
import type { IncrementalOptions, IncrementalReport, LazyFillReport, PreCopyReport } from './entry';

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
}

/** A logger that keeps quiet unless CPTRST_DEBUG is set. */
export const defaultLogger: Logger = {
  debug: (m) => { if (process.env.CPTRST_DEBUG) process.stderr.write(`cptrst: ${m}\n`); },
  info: (m) => { if (process.env.CPTRST_DEBUG) process.stderr.write(`cptrst: ${m}\n`); },
  warn: (m) => process.stderr.write(`cptrst: warning: ${m}\n`),
};

/** What the CLI can show while an operation runs. */
export interface ProgressEvent {
  phase: string;
  pid?: number;
  detail?: string;
  bytes?: number;
}

/** Objects written or read so far: tag -> type and parent tag (ptag: the object it belongs to). */
export class ObjectTable {
  private readonly entries = new Map<number, { type: number; ptag: number }>();
  add(tag: number, type: number, ptag: number): void {
    this.entries.set(tag, { type, ptag });
  }
  get(tag: number): { type: number; ptag: number } | undefined {
    return this.entries.get(tag);
  }
  get size(): number {
    return this.entries.size;
  }
}

abstract class OperationContext {
  readonly objects = new ObjectTable();
  readonly events = new EventEmitter();
  /** Timings of the phases (ms), for benchmarks and `--verbose`. */
  readonly timings: Record<string, number> = {};
  /** Aborted when the caller wants the operation to stop (OperationOptions.signal). */
  signal?: AbortSignal;
  constructor(
    readonly container: DependencyContainer,
    readonly flags: number,
    readonly log: Logger = defaultLogger,
  ) {}

  /**
   * A safe point: gives the event loop a turn (so that signal handlers and other callbacks run),
   * then throws CptError EINTR if the operation was aborted meanwhile. Call it only where no
   * ptrace sequence is half done (between handlers, objects, or runs of pages): while a child of
   * ours is in a ptrace stop, the event loop's own waitpid could take its notification.
   */
  async checkpointYield(): Promise<void> {
    if (!this.signal) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.throwIfAborted();
  }

  /** Throws CptError EINTR, "interrupted by <reason>", if the operation was aborted. */
  throwIfAborted(): void {
    const s = this.signal;
    if (!s?.aborted) return;
    const reason = s.reason instanceof Error ? s.reason.message : String(s.reason ?? 'a request to stop');
    throw new CptError('EINTR', `interrupted by ${reason}`);
  }

  progress(e: ProgressEvent): void {
    this.events.emit('progress', e);
  }

  /** Resolves every registration of a token; none is an empty list, not an error. */
  all<T>(tok: Token<T>): T[] {
    return resolveAll(this.container, tok);
  }

  one<T>(tok: Token<T>): T {
    return resolveOne(this.container, tok);
  }

  /** Runs `fn` and adds its duration to timings[name]. */
  timed<R>(name: string, fn: () => R): R {
    const t0 = process.hrtime.bigint();
    const add = (): void => {
      this.timings[name] = (this.timings[name] ?? 0) + Number(process.hrtime.bigint() - t0) / 1e6;
    };
    let r: R;
    try {
      r = fn();
    } catch (e) {
      add();
      throw e;
    }
    // A handler may return a promise: its time is what it takes to settle.
    if (r instanceof Promise) return r.finally(add) as R;
    add();
    return r;
  }
}

export class CheckpointContext extends OperationContext {
  head?: ImageHead;
  /** The tree being checkpointed, once frozen (set by the flow before the checks): for handlers that look past one task. */
  tree?: FrozenTree;
  /** The pids of the tree being checkpointed, zombies included; only `task`'s while no tree is known. */
  treePids(task: CheckpointTask): number[] {
    return this.tree?.tasks.map((t) => t.pid) ?? [task.pid];
  }
  /** Tag of the head: the parent of top-level objects. */
  readonly headTag = HEAD_TAG;
  constructor(
    container: DependencyContainer,
    readonly writer: ImageWriter,
    flags: number,
    log?: Logger,
  ) {
    super(container, flags, log);
  }

  /** Writes one object and records it in the object table; returns its tag. */
  write(obj: object, ptag: number): number {
    const tag = this.writer.write(obj, { ptag });
    this.objects.add(tag, typeOf(obj), ptag);
    return tag;
  }

  /**
   * Writes one record object that, while deferPages, is encoded only where it comes in the stream
   * when the pages are written: its fields may be filled by the payload sources of the objects
   * before it (ImageWriter.writeLater), its encoded length may not change. Else written now.
   */
  writeLater(obj: object, ptag: number): number {
    const tag = this.writer.writeLater(obj, { ptag });
    this.objects.add(tag, typeOf(obj), ptag);
    return tag;
  }

  /** Writes one object with a page payload; returns its tag. */
  writeWithPages(obj: object, pages: Buffer | Buffer[], ptag: number): number {
    const tag = this.writer.writeWithPages(obj, pages, { ptag });
    this.objects.add(tag, typeOf(obj), ptag);
    return tag;
  }

  /**
   * Whether page payloads may be read after the process is let go (from a copy-on-write snapshot,
   * with writeWithPagesLater): the flow decides, before the dump.
   */
  get deferPages(): boolean {
    return this.writer.deferring;
  }

  /**
   * Writes one object whose payload of `bytes` is read by `fill` after the process is let go (only
   * while deferPages); or put straight into the image file by `toFile`, where the image is a file
   * that allows it (ImageWriter's PayloadFileSource).
   */
  writeWithPagesLater(obj: object, bytes: number, fill: PayloadSource, ptag: number, toFile?: PayloadFileSource): number {
    const tag = this.writer.writeWithPagesLater(obj, bytes, fill, { ptag, toFile });
    this.objects.add(tag, typeOf(obj), ptag);
    return tag;
  }

  /**
   * Writes one object whose payload of `bytes` goes to the pages section at the end of the image,
   * read by `fill` then (ImageWriter.writeWithPagesAtEnd: lower ranks first).
   */
  writeWithPagesAtEnd(obj: object, bytes: number, fill: PayloadSource, ptag: number, key: bigint, rank: number, toFile?: PayloadFileSource): void {
    this.writer.writeWithPagesAtEnd(obj, bytes, fill, { ptag, key, rank, toFile });
  }

  private readonly cleanups: Array<() => void> = [];
  private readonly failed: Array<() => void> = [];
  /** An incremental or tracking checkpoint's options (OperationOptions.incremental). */
  incremental?: IncrementalOptions;
  /** Per process, how an incremental checkpoint found its changed pages. */
  readonly incrementalReport: IncrementalReport[] = [];
  /** A --pre-copy checkpoint (OperationOptions.preCopy): what it did, filled by mm (precopy.ts). */
  preCopy?: PreCopyReport;

  /** Runs `fn` if the checkpoint fails or is interrupted, after the tree is let go (e.g. to end a tracker it started). */
  onFailure(fn: () => void): void {
    this.failed.push(fn);
  }

  /** The flow's step after a failure: every onFailure() function, last registered first. Never throws. */
  runOnFailure(): void {
    while (this.failed.length) {
      try {
        this.failed.pop()!();
      } catch (e) {
        this.log.warn(`cleanup after the failure: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  /** Runs `fn` when the checkpoint ends, whether it succeeded or not (e.g. to end a snapshot's process). */
  atEnd(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /**
   * Whether handlers may build on what they read before the freeze (hints, checked while frozen and
   * verified against the copy-on-write snapshot once the tree runs again, ctx.afterRelease): set by
   * the flow for a checkpoint of one process that lets it run from a snapshot into an image file
   * it can cut back; false when the checkpoint is taken again because hints proved stale.
   */
  memoryHints = false;
  /** Set by a handler whose hints proved stale (why) before it throws: the flow takes the checkpoint again without hints. */
  staleHints?: string;
  private readonly afterReleases: Array<() => void | Promise<void>> = [];

  /**
   * Runs `fn` once the tree runs again from a copy-on-write snapshot (to verify what was decided
   * while frozen): started right after the release, awaited before the image is synced. A throw
   * or a rejection fails the checkpoint.
   */
  afterRelease(fn: () => void | Promise<void>): void {
    this.afterReleases.push(fn);
  }

  /** The flow's step right after an early release: starts every afterRelease() function, in order; settles when all have. */
  runAfterRelease(): Promise<void> {
    const fns = this.afterReleases.splice(0);
    return Promise.all(fns.map(async (fn) => fn())).then(() => undefined);
  }

  private readonly beforeReleases: Array<() => void> = [];

  /**
   * Runs `fn` while the tree is still frozen and its tracees are held, just before the tree is let
   * go, whether the checkpoint succeeded or not (e.g. to close descriptors cptrst made inside a task).
   */
  beforeRelease(fn: () => void): void {
    this.beforeReleases.push(fn);
  }

  /** Every beforeRelease() function, last registered first, once. Never throws. */
  runBeforeRelease(): void {
    while (this.beforeReleases.length) {
      try {
        this.beforeReleases.pop()!();
      } catch (e) {
        this.log.warn(`cleanup before the release failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  /** The flow's last step: every atEnd() function, last registered first. Never throws. */
  runAtEnd(): void {
    while (this.cleanups.length) {
      try {
        this.cleanups.pop()!();
      } catch (e) {
        this.log.warn(`cleanup failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
}

export class RestartContext extends OperationContext {
  head?: ImageHead;
  /**
   * Who owns the image: the owner of the file (or pipe, or socket) it is read from. An image owned
   * by root is trusted; any other owner's image may restore only processes with that owner's
   * identity and no more privilege (docs/security.md).
   */
  readonly imageOwner: { uid: number; gid: number };
  /** The fd number, in this process, of the image stream. */
  constructor(
    container: DependencyContainer,
    readonly reader: ImageReader,
    readonly imageFd: number,
    flags: number,
    log?: Logger,
  ) {
    super(container, flags, log);
    this.imageOwner = ownerOf(imageFd);
  }

  /** Root's own image: restored as recorded. Otherwise every restored task is held to the owner's rights. */
  get imageTrusted(): boolean {
    return this.imageOwner.uid === 0;
  }

  private readonly afterRecordsFns: Array<() => void | Promise<void>> = [];

  /**
   * Runs `fn` once every object of the image has been read and handed to its handler, before any
   * finish hook (work a handler left running, such as pages a process reads itself, ends there).
   */
  afterRecords(fn: () => void | Promise<void>): void {
    this.afterRecordsFns.push(fn);
  }

  /** The restart flow's step between the objects and the finish hooks: every afterRecords() function, in order. */
  async runAfterRecords(): Promise<void> {
    for (const fn of this.afterRecordsFns.splice(0)) await fn();
  }

  /** Lazy restart: started once the processes are let go; settles when their last page is in. */
  lazyFill?: () => Promise<LazyFillReport>;

  /**
   * The image's pages section (PagesFollow), once the flow has read it. In a lazy restart the flow
   * stops reading there: the reader is left before the first object it lists, for the fill.
   */
  pagesFollow?: { entries: bigint[]; offset: number };

  /** Whether the image was written on this machine since it booted: then device and inode numbers in it can be compared. */
  get sameBoot(): boolean {
    return !!this.head?.bootId && this.head.bootId === bootId();
  }
}

/** The owner of the image stream's file, pipe or socket; nobody's (never trusted) when it cannot be told. */
function ownerOf(fd: number): { uid: number; gid: number } {
  try {
    const st = fs.fstatSync(fd);
    return { uid: st.uid, gid: st.gid };
  } catch {
    return { uid: -1, gid: -1 };
  }
}

function typeOf(obj: object): number {
  return layoutOf(obj.constructor)?.type ?? -1;
}
