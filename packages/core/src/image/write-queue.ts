/**
 * Writes to a sink while the caller goes on: the image writer, writing page payloads it reads
 * and checksums one after the other, queues each object's bytes here and reads the next payload
 * while the sink writes (ImageSink.writeAsync: on the libuv thread pool for a file, a pipe or a
 * socket). The bytes keep their order: one write in flight at a time, each taking all that was
 * queued meanwhile (bigger writes the faster the caller is). Payloads are read into buffers of a
 * small pool, each given back once the write that holds it is done.
 */
import { CptError, asCptError } from '../errors';

/**
 * At most this many payload buffers, and (above two) this many bytes of them: one being written,
 * one being filled, two waiting. At 1 GiB on a loaded 2-CPU machine, 4 did at least as well as
 * 2, 3 or 8 (more buffers cost more cache misses between the read, the checksum and the write).
 */
const MAX_BUFFERS = 4;
const MAX_POOL_BYTES = 16 * 1024 * 1024;
/** Pieces per write: what one writev(2) takes (IOV_MAX). */
const MAX_PIECES = 1024;

interface PoolBuffer {
  buf: Buffer;
  /** Queued or written-now pieces in it. */
  uses: number;
  /** The caller has it (between buffer() and the next buffer() or drain()). */
  lent: boolean;
}

export class WriteQueue {
  private pending: Buffer[] = [];
  private flight?: Promise<void>;
  private error?: CptError;
  private readonly pool = new Map<ArrayBufferLike, PoolBuffer>();
  private readonly spare: PoolBuffer[] = [];
  private lent?: PoolBuffer;

  constructor(private readonly write: (bufs: Buffer[]) => Promise<void>) {}

  /** Queues `b` (left untouched until written: a fresh buffer, or one of buffer()'s). Throws once a write failed. */
  push(b: Buffer): void {
    this.throwIfFailed();
    if (b.length === 0) return;
    const p = this.pool.get(b.buffer);
    if (p) p.uses++;
    this.pending.push(b);
    this.start();
  }

  /**
   * A buffer of `bytes` for the next payload. The one it gave before goes back to the pool (once
   * written, if queued). Waits for a write to finish when every buffer is taken.
   */
  async buffer(bytes: number): Promise<Buffer> {
    this.giveBack();
    // The callbacks of finished writes run only when the event loop turns: let them in, so that
    // the next write starts now rather than when the pool runs dry.
    if (this.flight) await new Promise<void>((resolve) => setImmediate(resolve));
    for (;;) {
      this.throwIfFailed();
      const i = this.spare.findIndex((p) => p.buf.length >= bytes);
      if (i >= 0) return this.lend(this.spare.splice(i, 1)[0], bytes);
      if (this.spare.length) {
        this.pool.delete(this.spare.pop()!.buf.buffer); // too small: made again bigger
        continue;
      }
      const n = this.pool.size;
      // Every buffer waits to be written, so a write is in flight (one starts whenever bytes wait):
      // wait for it, unless the pool may grow.
      if (!this.flight || n < 2 || (n < MAX_BUFFERS && (n + 1) * bytes <= MAX_POOL_BYTES)) {
        const p: PoolBuffer = { buf: Buffer.allocUnsafe(bytes), uses: 0, lent: false };
        this.pool.set(p.buf.buffer, p);
        return this.lend(p, bytes);
      }
      await this.flight;
    }
  }

  /** Waits until everything queued is written; throws if a write failed. */
  async drain(): Promise<void> {
    this.giveBack();
    while (this.flight) await this.flight;
    this.throwIfFailed();
  }

  /** Drops what waits to be written and waits for the write in flight; never throws. */
  async abandon(): Promise<void> {
    this.pending = [];
    this.giveBack();
    while (this.flight) await this.flight;
  }

  private lend(p: PoolBuffer, bytes: number): Buffer {
    p.lent = true;
    this.lent = p;
    return p.buf.subarray(0, bytes);
  }

  private giveBack(): void {
    const p = this.lent;
    if (!p) return;
    this.lent = undefined;
    p.lent = false;
    if (p.uses === 0) this.spare.push(p);
  }

  private start(): void {
    if (this.flight || this.error || !this.pending.length) return;
    const batch = this.pending.splice(0, MAX_PIECES);
    const done = (): void => {
      for (const b of batch) {
        const p = this.pool.get(b.buffer);
        if (p && --p.uses === 0 && !p.lent) this.spare.push(p);
      }
      this.flight = undefined;
    };
    this.flight = this.write(batch).then(
      () => {
        done();
        this.start();
      },
      (e: unknown) => {
        done();
        this.error ??= asCptError(e, { object: 'image sink' });
      },
    );
  }

  private throwIfFailed(): void {
    if (this.error) throw this.error;
  }
}
