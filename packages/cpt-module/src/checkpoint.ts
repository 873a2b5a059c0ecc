/**
 * The checkpoint flow: freeze the tree, let every subsystem refuse
 * what it cannot handle, write the head, let every subsystem dump each task in order, write the
 * terminator and sync, then release the tree (run, stop, or kill once the image is safe).
 * On failure, or when interrupted (options.signal, checked at safe points between handlers and
 * inside the page dump), the tree is let run as it was and the partial image is cut off.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointFlags, CheckpointTask, CheckpointResult, CptError, ImageWriter,
  OperationOptions, ReleaseMode, Tokens, asCptError, buildImageHead, fileSink, linux,
} from '@cptrst/core';
import { DependencyContainer } from 'tsyringe';
import { TOOL_VERSION } from './version';

export async function checkpoint(container: DependencyContainer, pid: number, fd: number, flags: number, options: OperationOptions = {}): Promise<CheckpointResult> {
  if (!Number.isInteger(pid) || pid <= 0) throw new CptError('EINVAL', `not a process id: ${pid}`);
  if ((flags & CheckpointFlags.KILL) && (flags & CheckpointFlags.LEAVE_STOPPED)) throw new CptError('EINVAL', 'KILL and LEAVE_STOPPED exclude each other');
  const startOffset = regularFileOffset(fd);
  const writer = new ImageWriter(fileSink(fd, options.imageName));
  const ctx = new CheckpointContext(container, writer, flags, options.log);
  ctx.signal = options.signal;
  if (options.onProgress) ctx.events.on('progress', options.onProgress);
  try {
    ctx.throwIfAborted();
  } catch (e) {
    throw naming(e, pid);
  }
  const handlers = ctx.all(Tokens.DumpHandler).sort((a, b) => a.order - b.order);
  const freezer = ctx.one(Tokens.Freezer);

  const t0 = process.hrtime.bigint();
  const tree = freezer.freeze(ctx, pid);
  let mode: ReleaseMode = 'run';
  try {
    await ctx.checkpointYield();
    // A zombie has only its identity: the handlers that do not declare `zombies` skip it.
    const handlersOf = (task: CheckpointTask) => (task.zombie ? handlers.filter((h) => h.zombies) : handlers);
    for (const task of tree.tasks) for (const h of handlersOf(task)) ctx.timed(`check ${h.name}`, () => h.check?.(ctx, task));
    const head = buildImageHead(ctx.container, TOOL_VERSION);
    ctx.head = head;
    writer.writeHead(head);
    for (const task of tree.tasks) {
      for (const h of handlersOf(task)) {
        await ctx.checkpointYield();
        await ctx.timed(h.name, () => h.dump(ctx, task));
      }
      ctx.progress({ phase: 'dumped', pid: task.pid });
    }
    await ctx.checkpointYield();
    writer.writeTerminator();
    ctx.timed('sync', () => syncIfFile(fd));
    // The last chance to back out: after this the image is complete and the process is let go as asked.
    await ctx.checkpointYield();
    if (options.commitImage) ctx.timed('commit', () => options.commitImage!());
    mode = flags & CheckpointFlags.KILL ? 'kill' : flags & CheckpointFlags.LEAVE_STOPPED ? 'stop' : 'run';
  } catch (e) {
    freezer.release(ctx, tree, 'run');
    if (startOffset !== undefined) truncateTo(fd, startOffset);
    throw naming(e, pid);
  }
  freezer.release(ctx, tree, mode);
  const frozenMs = Number(process.hrtime.bigint() - t0) / 1e6;
  ctx.progress({ phase: 'done', pid, bytes: writer.offset });
  return { pid, tasks: tree.tasks.length, bytes: writer.offset, frozenMs, timings: ctx.timings };
}

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
