/**
 * The checkpoint flow: freeze the tree, let every subsystem refuse
 * what it cannot handle, write the head, let every subsystem dump each task in order, write the
 * terminator and sync, then release the tree (run, stop, or kill once the image is safe).
 * On failure, or when interrupted (options.signal, checked at safe points between handlers and
 * inside the page dump), the tree is let run as it was and the partial image is cut off.
 */
import * as fs from 'fs';
import type * as V8 from 'v8';
import * as vm from 'vm';
import {
  CheckpointContext, CheckpointFlags, CheckpointTask, CheckpointResult, CptError, DumpHandler, Freezer, ImageWriter,
  OperationOptions, ReleaseMode, Tokens, asCptError, buildImageHead, defaultLogger, fileSink, linux,
} from '@cptrst/core';
import { DependencyContainer } from 'tsyringe';
import { TOOL_VERSION } from './version';

export async function checkpoint(container: DependencyContainer, pid: number, fd: number, flags: number, options: OperationOptions = {}): Promise<CheckpointResult> {
  if (!Number.isInteger(pid) || pid <= 0) throw new CptError('EINVAL', `not a process id: ${pid}`);
  if ((flags & CheckpointFlags.KILL) && (flags & CheckpointFlags.LEAVE_STOPPED)) throw new CptError('EINVAL', 'KILL and LEAVE_STOPPED exclude each other');
  if (options.preCopy) {
    // The copy made before the freeze stands for a snapshot of a process let run: nothing else fits it.
    const clash = flags & CheckpointFlags.KILL ? '--kill' : flags & CheckpointFlags.LEAVE_STOPPED ? '--leave-stopped' : flags & CheckpointFlags.NO_SNAPSHOT ? '--no-snapshot' : options.incremental?.parent !== undefined ? '--parent' : options.incremental ? '--track' : undefined;
    if (clash) throw new CptError('EINVAL', `--pre-copy copies the memory of a process that runs on, with write tracking of its own: it does not go with ${clash}`, { pid });
  }
  const startOffset = regularFileOffset(fd);
  const first = await checkpointOnce(container, pid, fd, flags, options, startOffset, true);
  if (!('stale' in first)) return first;
  // Hints read before the freeze proved stale (ctx.memoryHints): the image was cut back and the
  // process runs on as before; taken again, everything read while frozen.
  (options.log ?? defaultLogger).info(`pid ${pid}: ${first.stale}; the checkpoint is taken again without hints`);
  linux.rawSyscall(linux.SYS.lseek, fd, startOffset!, 0 /* SEEK_SET */);
  return (await checkpointOnce(container, pid, fd, flags, options, startOffset, false)) as CheckpointResult;
}

/** One attempt; `{ stale }` when hints proved stale and the image was cut back (only with `hints`). */
async function checkpointOnce(
  container: DependencyContainer, pid: number, fd: number, flags: number, options: OperationOptions, startOffset: number | undefined, hints: boolean,
): Promise<CheckpointResult | { stale: string }> {
  // With CPTRST_SPLICE_PAGES=1, a regular file takes the snapshot's page payloads in place (spliced
  // into it, checksummed where they land: core image/payload-file.ts). Not by default: on the
  // machine of bench/README.md it measured slower than reading the pages while the thread pool writes.
  const inPlace = startOffset !== undefined && process.env.CPTRST_SPLICE_PAGES === '1';
  const writer = new ImageWriter(fileSink(fd, options.imageName), options.compress ? { compress: options.compress } : { file: inPlace ? fd : undefined });
  const ctx = new CheckpointContext(container, writer, flags, options.log);
  ctx.signal = options.signal;
  ctx.incremental = options.incremental;
  // Hints are verified against the snapshot after the release, and a stale one means taking the
  // checkpoint again: only where a snapshot is taken and the image can be cut back.
  ctx.memoryHints = hints && startOffset !== undefined && !ctx.incremental && !(flags & (CheckpointFlags.KILL | CheckpointFlags.LEAVE_STOPPED | CheckpointFlags.NO_SNAPSHOT));
  if (options.preCopy) ctx.preCopy = { path: 'snapshot', stoppedMs: 0, rounds: 0, copiedRunning: 0, copiedFrozen: 0 };
  if (options.onProgress) ctx.events.on('progress', options.onProgress);
  try {
    ctx.throwIfAborted();
  } catch (e) {
    throw naming(e, pid);
  }
  const handlers = ctx.all(Tokens.DumpHandler).sort((a, b) => a.order - b.order);
  const freezer = ctx.one(Tokens.Freezer);

  let head;
  const prepared: Promise<void>[] = [];
  try {
    for (const h of handlers) {
      // Timed up to its return: what it started is timed as `prepared`.
      const started = ctx.timed(`prepare ${h.name}`, () => {
        const r = h.prepare?.(ctx, pid);
        return r instanceof Promise ? { r } : undefined;
      });
      if (started) {
        started.r.catch(() => undefined); // awaited below, unless a later prepare throws first
        prepared.push(started.r);
      }
    }
    // Machine facts only (the XSAVE probe runs a helper process): gathered before the freeze, so
    // that the process is not kept waiting for them, and after the prepares, whose background
    // work (a slow /proc read) goes on meanwhile.
    head = ctx.timed('head', () => buildImageHead(ctx.container, TOOL_VERSION));
    if (freezer.prepare) ctx.timed('prepare freeze', () => freezer.prepare!(ctx));
    const tracees = ctx.one(Tokens.TraceeFactory);
    // The tree as it is now is a hint: the freeze lists it again, frozen.
    if (tracees.prepare) ctx.timed('prepare tracees', () => { for (const p of linux.descendants(pid)) tracees.prepare!(p); });
    ctx.timed('collect garbage', collectBeforeFreeze);
    // What the prepares started and the freeze needs finished (the event loop runs meanwhile).
    if (prepared.length) {
      await ctx.timed('prepared', () => Promise.all(prepared));
      ctx.throwIfAborted();
    }
    if (ctx.preCopy) await preCopy(ctx, handlers, freezer, pid);
  } catch (e) {
    // What the prepares started (mm: trackers started before the freeze) and what a pre-copy holds
    // (its userfaultfd: the process's areas registered) end with the checkpoint.
    ctx.runAtEnd();
    throw naming(e, pid);
  }
  const t0 = process.hrtime.bigint();
  let tree;
  try {
    tree = freezer.freeze(ctx, pid);
  } catch (e) {
    ctx.runAtEnd();
    throw e;
  }
  ctx.tree = tree;
  // Hints (read before the freeze) are for one process: a tree's areas are read while frozen,
  // though its pages come from snapshots too.
  if (tree.tasks.length !== 1) ctx.memoryHints = false;
  let mode: ReleaseMode = 'run';
  // Released before the pages are written (a copy-on-write snapshot holds them): the frozen window ends there.
  let releasedEarly = false;
  let frozenMs = 0;
  try {
    for (const h of handlers) h.frozen?.(ctx);
    await ctx.checkpointYield();
    // A zombie has only its identity: the handlers that do not declare `zombies` skip it.
    const handlersOf = (task: CheckpointTask) => (task.zombie ? handlers.filter((h) => h.zombies) : handlers);
    for (const task of tree.tasks) {
      for (const h of handlersOf(task)) {
        // Between checks no injected call is half done: awaiting there is safe (see checkpointYield).
        const r = ctx.timed(`check ${h.name}`, () => h.check?.(ctx, task));
        if (r) await r;
      }
    }
    ctx.head = head;
    writer.writeHead(head);
    // A checkpoint that lets the tree run: objects are kept in memory, and private pages are read
    // from a snapshot of each process after the release (the stream comes out as from a frozen
    // dump). A process whose snapshot a process of the tree would adopt (mm pages.ts) has its
    // pages copied while frozen. Write tracking is re-armed while frozen, at the image's instant
    // (mm tracking.ts), each process's by its own tracker: it needs no commit, for one process or a
    // tree (a step that fails after the release leaves each tracker what it carried since the parent).
    const snapshot = !(flags & (CheckpointFlags.KILL | CheckpointFlags.LEAVE_STOPPED | CheckpointFlags.NO_SNAPSHOT));
    if (snapshot) writer.deferWrites();
    for (const task of tree.tasks) {
      for (const h of handlersOf(task)) {
        await ctx.checkpointYield();
        await ctx.timed(h.name, () => h.dump(ctx, task));
      }
      ctx.progress({ phase: 'dumped', pid: task.pid });
    }
    await ctx.checkpointYield();
    // The pages section (pages a lazy restart fills while the process runs): read now from the
    // frozen tree, or queued for the snapshot.
    let tailBytes = 0;
    await ctx.timed('write pages', () => writer.writeTail(async (bytes) => {
      ctx.progress({ phase: 'pages', pid, bytes });
      tailBytes += bytes;
      if (tailBytes >= 32 * 1024 * 1024) {
        tailBytes = 0;
        await ctx.checkpointYield();
      }
    }));
    writer.writeTerminator();
    if (writer.deferring) {
      // Everything but the snapshotted pages is recorded: the process runs on from here.
      ctx.runBeforeRelease();
      freezer.release(ctx, tree, 'run');
      releasedEarly = true;
      frozenMs = Number(process.hrtime.bigint() - t0) / 1e6;
      // Verified while the pages are written (their reads run in libuv's pool); awaited before the sync.
      const verified = ctx.runAfterRelease();
      verified.catch(() => undefined); // awaited below; a failure of the writes must not leave it unhandled
      let sinceYield = 0;
      await ctx.timed('write pages', () => writer.flushDeferred(async (bytes) => {
        ctx.progress({ phase: 'pages', pid, bytes });
        sinceYield += bytes;
        if (sinceYield >= 32 * 1024 * 1024) {
          sinceYield = 0;
          await ctx.checkpointYield();
        }
      }));
      await ctx.timed('verify hints', () => verified);
      ctx.runAtEnd();
      if (writer.payloadsInPlace) ctx.log.debug(`${writer.payloadsInPlace} page payloads spliced into the image file`);
    }
    ctx.timed('sync', () => syncIfFile(fd));
    // The last chance to back out: after this the image is complete and the process is let go as asked.
    await ctx.checkpointYield();
    if (options.commitImage) ctx.timed('commit', () => options.commitImage!());
    mode = flags & CheckpointFlags.KILL ? 'kill' : flags & CheckpointFlags.LEAVE_STOPPED ? 'stop' : 'run';
  } catch (e) {
    ctx.runBeforeRelease();
    if (!releasedEarly) freezer.release(ctx, tree, 'run');
    ctx.runAtEnd();
    ctx.runOnFailure();
    if (startOffset !== undefined) truncateTo(fd, startOffset);
    if (ctx.staleHints && hints && startOffset !== undefined) return { stale: ctx.staleHints };
    throw naming(e, pid);
  }
  ctx.runBeforeRelease();
  ctx.runAtEnd();
  if (!releasedEarly) {
    freezer.release(ctx, tree, mode);
    frozenMs = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  ctx.progress({ phase: 'done', pid, bytes: writer.offset });
  return {
    pid, tasks: tree.tasks.length, bytes: writer.offset, frozenMs, timings: ctx.timings,
    ...(ctx.incremental ? { incremental: ctx.incrementalReport } : {}), ...(ctx.preCopy ? { preCopy: ctx.preCopy } : {}),
  };
}

/**
 * Before the freeze of a --pre-copy checkpoint (mm precopy.ts): the process is stopped for as
 * long as the handlers need it stopped (mm: to make a userfaultfd of its memory), then runs while
 * they copy. One process only: a tree is taken from snapshots as usual (ctx.preCopy says why).
 */
async function preCopy(ctx: CheckpointContext, handlers: DumpHandler[], freezer: Freezer, pid: number): Promise<void> {
  const report = ctx.preCopy!;
  const others = linux.descendants(pid).length - 1;
  const copiers = handlers.filter((h) => h.preCopy !== undefined);
  if (others > 0 || !copiers.length) {
    report.why = others > 0 ? `process ${pid} has ${others} descendant(s): a pre-copy is made of one process only` : 'no subsystem copies memory before the freeze';
    ctx.log.info(`pid ${pid}: no pre-copy: ${report.why}; its pages come from a copy-on-write snapshot`);
    return;
  }
  const t0 = process.hrtime.bigint();
  const brief = freezer.freeze(ctx, pid);
  let running = false;
  const resume = () => {
    if (running) return;
    running = true;
    freezer.release(ctx, brief, 'run');
    report.stoppedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  };
  try {
    if (brief.tasks.length !== 1) {
      report.why = `process ${pid} made a child meanwhile: a pre-copy is made of one process only`;
      return;
    }
    for (const h of copiers) await ctx.timed(`pre-copy ${h.name}`, () => h.preCopy!(ctx, brief.tasks[0], resume));
  } finally {
    resume();
  }
  ctx.throwIfAborted();
}

/**
 * A scavenge (V8's young-generation collection) right before the freeze. A fresh process has
 * everything it loaded at start-up in the young generation, and the first scavenge after that
 * copies it all (2-7 ms here): without this one it comes inside the frozen window of an idle
 * checkpoint. The work is the same, done while the process still runs; a scavenge's cost is
 * bounded by the young generation's size, whatever the caller's heap. V8's `gc` is reached by
 * exposing it to a new context (`--expose-gc` set at run time), as test runners do.
 */
function collectBeforeFreeze(): void {
  try {
    if (!collect) {
      // Node's v8 module is loaded here, by a checkpoint only: its load (streams, the heap
      // snapshot machinery) is a few ms of a restart that has no use for it.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use
      (require('v8') as typeof V8).setFlagsFromString('--expose-gc');
      collect = vm.runInNewContext('gc') as Collect;
    }
    collect({ type: 'minor' });
  } catch {
    /* no collection: it happens when V8 decides */
  }
}
type Collect = (options: { type: 'minor' | 'major' }) => void;
let collect: Collect | undefined;

/** The offset a regular-file image starts at (to cut a partial one off), or undefined for a pipe or socket. */
function regularFileOffset(fd: number): number | undefined {
  try {
    if (!fs.fstatSync(fd).isFile()) return undefined;
    const r = linux.rawSyscall(linux.SYS.lseek, fd, 0, 1 /* SEEK_CUR */);
    return r >= 0n ? Number(r) : undefined;
  } catch {
    return undefined;
  }
}

function truncateTo(fd: number, offset: number): void {
  try {
    fs.ftruncateSync(fd, offset);
  } catch {
    /* best effort: the CLI also removes the file */
  }
}

function syncIfFile(fd: number): void {
  if (fs.fstatSync(fd).isFile()) fs.fsyncSync(fd);
}

/** The error as a CptError that names the process (an interruption, found between handlers, names none). */
export function naming(e: unknown, pid: number | undefined): CptError {
  const ce = asCptError(e, { pid });
  return ce.pid !== undefined || pid === undefined ? ce : new CptError(ce.code, ce.message, { pid, object: ce.object, cause: ce });
}
