/**
 * Page payloads put into the image file in place (ImageWriterOptions.file, payload-file.ts): moved
 * from a pipe into the file with splice(2) and checksummed over a mapping of the file. The file
 * must come out byte for byte as the same objects written at once, whatever took the in-place
 * path and whatever fell back to the usual one.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ContentKind, HeaderOffset, ImageWriter, MemorySink, fileSink, PayloadFileSource, PREAMBLE_SIZE } from '../src/image';
import { F, O, SYS, rawSyscall, spliceToFile } from '../src/linux';
import { readAll } from './fixtures/image-helpers';
import { make, sampleHead, samplePages, sampleProc, TestMap, TestNote } from './fixtures/image-test-layouts';

function pipe(): [number, number] {
  const b = Buffer.alloc(8);
  const r = rawSyscall(SYS.pipe2, b, O.CLOEXEC);
  if (r !== 0n) throw new Error(`pipe2: ${r}`);
  return [b.readInt32LE(0), b.readInt32LE(4)];
}

/**
 * A source that moves `pages` into the file as the snapshot's pipes do: through a pipe, with
 * splice. With `limit`, it puts only that many bytes (as where a page cannot be spliced).
 */
function throughPipe(pages: Buffer, limit = Infinity): PayloadFileSource {
  return (fd, position, bytes) => {
    expect(bytes).to.equal(pages.length);
    const n = Math.min(bytes, limit);
    const [r, w] = pipe();
    try {
      // A pipe's default capacity (64 KiB) at a time.
      let done = 0;
      while (done < n) {
        const chunk = Math.min(n - done, 65536);
        expect(fs.writeSync(w, pages, done, chunk)).to.equal(chunk);
        for (let moved = 0; moved < chunk; ) {
          const k = spliceToFile(r, fd, position + done + moved, chunk - moved);
          if (k <= 0n) throw new Error(`splice: ${k}`);
          moved += Number(k);
        }
        done += chunk;
      }
      return done;
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
  };
}

interface Options {
  /** Bytes of the source to put in place (the rest is read and written). */
  limit?: number;
  compress?: boolean;
  /** This many more objects of 2 MiB (more than one mapping's worth, checksummed in turns). */
  big?: number;
  /** Every payload checksummed with XXH3 (RECORD_WITH_HASHED_PAGES). */
  hashed?: boolean;
}

/**
 * Writes the same objects twice: at once into memory, and deferred into `fd` (whose payloads have
 * in-place sources) or into memory too when `fd` is undefined. Returns the bytes of the deferred
 * one (from memory, or what `fd` got from its position on) and the writer.
 */
async function write(fd: number | undefined, opts: Options = {}): Promise<{ atOnce: Buffer; deferred: Buffer; writer: ImageWriter }> {
  const build = async (w: ImageWriter, defer: boolean) => {
    w.writeHead(sampleHead());
    if (defer) w.deferWrites();
    const p = w.write(sampleProc(100));
    const maps: Array<[string, Buffer]> = [['a', samplePages(16, 4096, 1)], ['b', samplePages(1, 4096, 2)], ['c', samplePages(9, 4096, 3)], ['d', samplePages(32, 4096, 4)]];
    for (let i = 0; i < (opts.big ?? 0); i++) maps.push([`big${i}`, samplePages(512, 4096, 10 + i)]);
    for (const [name, pages] of maps) {
      const map = make(TestMap, { start: 0x400000n, end: 0x400000n + BigInt(pages.length), name });
      // 'b' has no in-place source: read and written as usual between the others.
      const toFile = name === 'b' || name === 'big7' ? undefined : throughPipe(pages, opts.limit);
      if (defer) w.writeWithPagesLater(map, pages.length, (buf) => pages.copy(buf), { ptag: p, toFile });
      else w.writeWithPages(map, pages, { ptag: p });
      w.write(make(TestNote, { text: `after ${name}: ${'x'.repeat(name.charCodeAt(0) * 7)}` }), { ptag: p });
    }
    // The pages section too.
    const tail = samplePages(5, 4096, 9);
    w.writeWithPagesAtEnd(make(TestMap, { start: 0x800000n, end: 0x805000n, name: 'tail' }), tail.length, (buf) => tail.copy(buf), { ptag: p, key: 0x800000n, rank: 0, toFile: throughPipe(tail, opts.limit) });
    await w.writeTail();
    w.writeTerminator();
    await w.flushDeferred();
  };
  const codec = { ...(opts.compress ? { compress: 'lz4' as const } : {}), ...(opts.hashed ? { hashPagesAfter: 0 } : {}) };
  const mem = new MemorySink();
  await build(new ImageWriter(mem, codec), false);
  const atOnce = mem.toBuffer();
  if (fd === undefined) {
    const m = new MemorySink();
    const writer = new ImageWriter(m, codec);
    await build(writer, true);
    return { atOnce, deferred: m.toBuffer(), writer };
  }
  // Where the image starts: the position, or the end for a file opened O_APPEND.
  const append = (Number(rawSyscall(SYS.fcntl, fd, F.GETFL, 0)) & O.APPEND) !== 0;
  const start = append ? fs.fstatSync(fd).size : Number(rawSyscall(SYS.lseek, fd, 0, 1 /* SEEK_CUR */));
  const writer = new ImageWriter(fileSink(fd), { ...codec, file: fd });
  await build(writer, true);
  const end = Number(rawSyscall(SYS.lseek, fd, 0, 1));
  const all = fs.readFileSync(`/proc/self/fd/${fd}`);
  expect(end, 'the file position is at the end of the image').to.equal(all.length);
  return { atOnce, deferred: all.subarray(start), writer };
}

describe('image: page payloads put into the image file in place', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-inplace-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A new file in the test directory, open write-only (as the CLI's image file is). */
  function newFile(name: string, flags = 0, prefix?: Buffer): number {
    const p = path.join(dir, name);
    if (prefix) fs.writeFileSync(p, prefix, { mode: 0o600 });
    const fd = fs.openSync(p, O.WRONLY | O.CREAT | flags, 0o600);
    if (prefix && !(flags & O.APPEND)) fs.writeSync(fd, prefix, 0, prefix.length, null);
    return fd;
  }

  function rootOnly(ctx: Mocha.Context): void {
    // Only a file no one but root can change is mapped (onlyRootCanChange).
    if (process.getuid?.() !== 0) ctx.skip();
  }

  for (const hashed of [false, true]) it(`come out byte for byte as the objects written at once, and read back${hashed ? ' (XXH3 checksums)' : ''}`, async function () {
    rootOnly(this);
    const fd = newFile(hashed ? 'plain-hashed' : 'plain');
    try {
      const { atOnce, deferred, writer } = await write(fd, { hashed });
      expect(writer.payloadsInPlace, 'payloads put in place').to.equal(4);
      expect(deferred.equals(atOnce)).to.equal(true);
      const kinds = new Set<number>();
      for (let at = PREAMBLE_SIZE; at < deferred.length; at += Number(deferred.readBigUInt64LE(at))) kinds.add(deferred.readUInt16LE(at + HeaderOffset.kind));
      expect(kinds.has(ContentKind.RECORD_WITH_HASHED_PAGES)).to.equal(hashed);
      expect(kinds.has(ContentKind.RECORD_WITH_PAGES)).to.equal(!hashed);
      const { records } = readAll(deferred);
      expect(records.filter((r) => r.pages).map((r) => (r.obj as TestMap).name)).to.deep.equal(['a', 'b', 'c', 'd', 'tail']);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('more payloads than one mapping takes (checksummed in turns): the same bytes', async function () {
    rootOnly(this);
    const fd = newFile('big');
    try {
      const { atOnce, deferred, writer } = await write(fd, { big: 40 });
      expect(writer.payloadsInPlace).to.equal(4 + 39);
      expect(deferred.length).to.be.greaterThan(80 << 20);
      expect(deferred.equals(atOnce)).to.equal(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('an image that starts inside a page of the file: the same bytes after what was there', async function () {
    rootOnly(this);
    const before = Buffer.from('earlier content, not page aligned\n');
    const fd = newFile('offset', 0, before);
    try {
      const { atOnce, deferred, writer } = await write(fd);
      expect(writer.payloadsInPlace).to.equal(4);
      expect(deferred.equals(atOnce)).to.equal(true);
      expect(fs.readFileSync(path.join(dir, 'offset')).subarray(0, before.length).equals(before)).to.equal(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a source that puts only part of a payload: the rest is read and written, same bytes', async function () {
    rootOnly(this);
    const fd = newFile('partial');
    try {
      const { atOnce, deferred, writer } = await write(fd, { limit: 3 * 4096 + 512 });
      expect(writer.payloadsInPlace).to.equal(0);
      expect(deferred.equals(atOnce)).to.equal(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('not in place, same bytes: a file opened O_APPEND, a file another user owns, a compressed image', async function () {
    rootOnly(this);
    const before = Buffer.from('x'.repeat(5000));
    const append = newFile('append', O.APPEND, before);
    const other = newFile('other');
    fs.fchownSync(other, 65534, 65534);
    const packed = newFile('packed');
    try {
      for (const fd of [append, other]) {
        const { atOnce, deferred, writer } = await write(fd);
        expect(writer.payloadsInPlace).to.equal(0);
        expect(deferred.equals(atOnce)).to.equal(true);
      }
      const z = await write(packed, { compress: true });
      expect(z.writer.payloadsInPlace).to.equal(0);
      expect(z.deferred.equals((await write(undefined, { compress: true })).deferred)).to.equal(true);
    } finally {
      for (const fd of [append, other, packed]) fs.closeSync(fd);
    }
  });
});
