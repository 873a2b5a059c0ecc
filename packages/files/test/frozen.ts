/**
 * A real, ptrace-stopped process to open files in, as restart does: the task package's freezer
 * and the arch-x86 Tracee are loaded at run time (they are not dependencies of this package; build
 * them first: npm run build).
 */
import * as fs from 'fs';
import * as path from 'path';
import { container, DependencyContainer } from 'tsyringe';
import {
  CheckpointContext, Freezer, FrozenTree, ImageHead, ImageReader, ImageWriter, MemorySink, RestartContext, RestartTask, TaskState, Tokens, bufferSource, linux,
} from '@cptrst/core';
import { startSleeping, tmpDir } from './support';

function loadRuntime(c: DependencyContainer): void {
  for (const name of ['@cptrst/arch-x86', '@cptrst/task']) {
    let mod: { register(c: DependencyContainer): void };
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      mod = require(name);
    } catch (e) {
      throw new Error(`these tests need ${name}, built (npm run build): ${(e as Error).message.split('\n')[0]}`);
    }
    mod.register(c);
  }
}

export interface Frozen {
  task: RestartTask;
  /** SIGKILLs it (through the freezer). */
  kill(): void;
}

/** A /bin/sleep, frozen: its tracee takes the restored task's place. */
export async function frozenSleeper(): Promise<Frozen> {
  const { pid } = await startSleeping('/bin/sleep', ['1000']);
  const c = container.createChildContainer();
  loadRuntime(c);
  const w = new ImageWriter(new MemorySink());
  w.writeHead(new ImageHead());
  const cctx = new CheckpointContext(c, w, 0);
  const freezer = c.resolve<Freezer>(Tokens.Freezer);
  const tree: FrozenTree = freezer.freeze(cctx, pid);
  const tracee = tree.tasks[0].tracee;
  return { task: { pid, tid: pid, tag: 2, tracee, state: new TaskState() }, kill: () => freezer.release(cctx, tree, 'kill') };
}

/**
 * A restart context whose image is a file owned by `owner` (root's: trusted; another uid's: not),
 * and that was written on this boot when `sameBoot`.
 */
export function restartContext(opts: { owner?: number; sameBoot?: boolean } = {}): RestartContext {
  const p = path.join(tmpDir(), `image-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(p, '');
  if (opts.owner !== undefined) fs.chownSync(p, opts.owner, opts.owner);
  const fd = fs.openSync(p, 'r');
  const ctx = new RestartContext(container.createChildContainer(), new ImageReader(bufferSource(Buffer.alloc(0))), fd, 0);
  fs.closeSync(fd);
  const head = new ImageHead();
  head.bootId = opts.sameBoot === false ? '00000000-0000-0000-0000-000000000000' : linux.bootId();
  ctx.head = head;
  return ctx;
}
