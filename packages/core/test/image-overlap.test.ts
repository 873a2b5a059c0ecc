import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CptError } from '../src/errors';
import { fileSink, ImageWriter, ImageSink, MemorySink } from '../src/image';
import { readAll } from './fixtures/image-helpers';
import { make, sampleHead, sampleProc, TestMap, TestNote } from './fixtures/image-test-layouts';

/**
 * A sink with writeAsync that takes its bytes only when the write settles, a few event-loop turns
 * later: a writer that touched a buffer before its write was done would change the image.
 */
class SlowSink implements ImageSink {
  readonly out = new MemorySink();
  calls = 0;
  outstanding = 0;
  maxOutstanding = 0;
  /** Write calls made after the writer's flush settled (set by the test). */
  settled = false;
  callsAfterSettled = 0;
  failAt = -1;

  write(buf: Buffer): void {
    if (this.outstanding) throw new Error('write() during writeAsync');
    if (this.settled) this.callsAfterSettled++;
    this.out.write(buf);
  }

  async writeAsync(bufs: Buffer[]): Promise<void> {
    const n = this.calls++;
    if (this.settled) this.callsAfterSettled++;
    this.outstanding++;
    this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
    try {
      for (let i = 0; i < 1 + (n % 3); i++) await new Promise((resolve) => setTimeout(resolve, 1));
      if (n === this.failAt) throw new CptError('ENOSPC', 'no space left (test)', { object: 'test sink' });
      for (const b of bufs) this.out.write(b);
    } finally {
      this.outstanding--;
    }
  }
}

/** Pages that differ in every word, by object number. */
function pagesOf(i: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let o = 0; o < bytes; o += 8) b.writeUInt32LE((i * 0x9e3779b1 + o) >>> 0, o);
  return b;
}

/**
 * An image with many deferred payloads (more than the writer's buffers), small records between
 * them, and a pages section; written through `sink`.
 */
async function build(sink: ImageSink, opts: { compress?: boolean; deferred: boolean; after?: (n: number) => void }): Promise<void> {
  const w = new ImageWriter(sink, opts.compress ? { compress: 'lz4' } : {});
  w.writeHead(sampleHead());
  if (opts.deferred) w.deferWrites();
  const p = w.write(sampleProc(100));
  let objects = 0;
  for (let i = 0; i < 24; i++) {
    const bytes = (1 + (i % 5)) * 64 * 1024;
    const map = make(TestMap, { start: BigInt(i) << 24n, end: (BigInt(i) << 24n) + BigInt(bytes), name: `map-${i}` });
    // Every other one compressible (when compressing): plain and compressed payloads mix.
    const fill = (buf: Buffer) => (i % 2 ? pagesOf(i, bytes).copy(buf) : buf.fill(i));
    if (opts.deferred) w.writeWithPagesLater(map, bytes, fill, { ptag: p });
    w.write(make(TestNote, { text: `after ${i}` }), { ptag: p });
    w.writeWithPagesAtEnd(make(TestMap, { start: 0n, end: BigInt(bytes), name: `tail-${i}` }), bytes, fill, { ptag: p, key: BigInt(i), rank: i % 3 });
  }
  await w.writeTail(() => opts.after?.(++objects));
  w.writeTerminator();
  await w.flushDeferred(() => opts.after?.(++objects));
}

describe('image: writes overlapped with reading the payloads (ImageSink.writeAsync)', () => {
  for (const compress of [false, true]) {
    for (const deferred of [false, true]) {
      it(`gives the same bytes as synchronous writes${compress ? ', compressed' : ''}${deferred ? ', deferred' : ''}, one write at a time`, async () => {
        const plain = new MemorySink();
        await build(plain, { compress, deferred });
        const slow = new SlowSink();
        await build(slow, { compress, deferred });
        expect(slow.calls, 'writes went through writeAsync').to.be.greaterThan(1);
        expect(slow.maxOutstanding).to.equal(1);
        const got = slow.out.toBuffer();
        expect(got.length).to.equal(plain.length);
        expect(got.equals(plain.toBuffer())).to.equal(true);
        const { records } = readAll(got);
        expect(records.filter((r) => r.name === 'TEST_MAP')).to.have.length(deferred ? 48 : 24);
      });
    }
  }

  it('a failed write fails the flush with its error, after which nothing is written', async () => {
    const slow = new SlowSink();
    slow.failAt = 2;
    let err: unknown;
    await build(slow, { deferred: true }).catch((e) => (err = e));
    expect(err).to.be.instanceOf(CptError);
    expect((err as CptError).code).to.equal('ENOSPC');
    expect(slow.outstanding, 'no write in flight once the flush failed').to.equal(0);
    slow.settled = true;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(slow.callsAfterSettled).to.equal(0);
  });

  it('an interruption between payloads waits for the write in flight and drops the rest', async () => {
    const slow = new SlowSink();
    let err: unknown;
    await build(slow, {
      deferred: true,
      after: (n) => {
        if (n === 30) throw new CptError('EINTR', 'interrupted (test)');
      },
    }).catch((e) => (err = e));
    expect((err as CptError)?.code).to.equal('EINTR');
    expect(slow.outstanding).to.equal(0);
    const written = slow.out.length;
    slow.settled = true;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(slow.callsAfterSettled).to.equal(0);
    expect(slow.out.length).to.equal(written);
  });

  describe('fileSink', () => {
    let dir: string;
    before(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-overlap-'));
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('writes the same image to a file, after what the file already holds, as synchronous writes do', async () => {
      const plain = new MemorySink();
      await build(plain, { deferred: true, compress: true });
      const file = path.join(dir, 'img');
      const fd = fs.openSync(file, 'w');
      try {
        fs.writeSync(fd, Buffer.from('prefix'));
        await build(fileSink(fd, file), { deferred: true, compress: true });
      } finally {
        fs.closeSync(fd);
      }
      const got = fs.readFileSync(file);
      expect(got.subarray(0, 6).toString()).to.equal('prefix');
      expect(got.subarray(6).equals(plain.toBuffer())).to.equal(true);
    });

    it('writes through a non-blocking pipe that a slow reader empties (partial writes, EAGAIN)', async () => {
      const plain = new MemorySink();
      await build(plain, { deferred: true });
      const fifo = path.join(dir, 'fifo');
      fs.rmSync(fifo, { force: true });
      const { spawnSync } = await import('child_process');
      expect(spawnSync('mkfifo', [fifo]).status).to.equal(0);
      const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      const chunks: Buffer[] = [];
      let reading = true;
      // The reader takes at most 16 KiB every millisecond: the pipe is full most of the time.
      const reader = (async () => {
        const b = Buffer.alloc(16 * 1024);
        for (;;) {
          let n = 0;
          try {
            n = fs.readSync(r, b, 0, b.length, null);
          } catch (e) {
            if ((e as { code?: string }).code !== 'EAGAIN') throw e;
          }
          if (n > 0) chunks.push(Buffer.from(b.subarray(0, n)));
          else if (!reading) return;
          await new Promise((resolve) => setTimeout(resolve, n > 0 ? 0 : 1));
        }
      })();
      try {
        await build(fileSink(w, 'fifo'), { deferred: true });
      } finally {
        reading = false;
        fs.closeSync(w);
        await reader;
        fs.closeSync(r);
      }
      expect(Buffer.concat(chunks).equals(plain.toBuffer())).to.equal(true);
    });
  });
});
