/**
 * When a process's copy-on-write snapshot is ended. A snapshot holds memory (every page the
 * process writes meanwhile is duplicated) and a process; in a tree there is one per process, and
 * the pages are written one process after the other. So each snapshot is closed as soon as what
 * reads it is done: every deferred payload read from it (written out, or put into the image file
 * in place) and every other user that holds it (the hints' check of its smaps). Uses are counted
 * while the tree is frozen; once it is let go (ctx.afterRelease) no new one can come, and the
 * count reaching zero closes the snapshot. The end of the checkpoint closes it all the same
 * (ctx.atEnd: a failure, an interruption), and cptrst's death kills it (PTRACE_O_EXITKILL,
 * arch snapshot.ts): no snapshot outlives its checkpoint.
 */
import { CheckpointContext, MemorySnapshot, PayloadFileSource, PayloadSource } from '@cptrst/core';

class SnapshotUses {
  private pending = 0;
  private sealed = false;

  constructor(private readonly ctx: CheckpointContext, private readonly snap: MemorySnapshot) {}

  /** One use; the function returned ends it (once, whatever it is called). */
  hold(): () => void {
    this.pending++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.pending--;
      this.closeIfDone();
    };
  }

  /** No use comes after this one (the tree is let go). */
  seal(): void {
    this.sealed = true;
    this.closeIfDone();
  }

  private closeIfDone(): void {
    if (!this.sealed || this.pending > 0) return;
    this.ctx.timed('close snapshot', () => this.snap.close());
    this.ctx.log.debug(`snapshot ${this.snap.pid} closed: its pages are read`);
  }
}

const USES = new WeakMap<MemorySnapshot, SnapshotUses>();

/** A snapshot taken for this checkpoint: closed once its uses are done after the release, or at the end. */
export function trackUses(ctx: CheckpointContext, snap: MemorySnapshot): void {
  const uses = new SnapshotUses(ctx, snap);
  USES.set(snap, uses);
  ctx.afterRelease(() => uses.seal());
  ctx.atEnd(() => snap.close());
}

/** A use of `snap` other than a payload (ended by the function returned). */
export function holdSnapshot(snap: MemorySnapshot): () => void {
  return USES.get(snap)?.hold() ?? (() => undefined);
}

/**
 * A deferred payload read from `snap`: its sources, which end the use when the payload is in
 * (read by `fill`, or all of it put into the file by `toFile`; else `fill` reads it after).
 */
export function payloadFrom(snap: MemorySnapshot, fill: PayloadSource, toFile?: PayloadFileSource): { fill: PayloadSource; toFile?: PayloadFileSource } {
  const done = holdSnapshot(snap);
  return {
    fill: (buf) => {
      fill(buf);
      done();
    },
    toFile: toFile && ((fd, position, bytes) => {
      const put = toFile(fd, position, bytes);
      if (put >= bytes) done();
      return put;
    }),
  };
}
