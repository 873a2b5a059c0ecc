import { expect } from 'chai';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CptError } from '../src/errors';
import {
  bufferSource, ContentKind, decodeRecord, encodeRecord, fileSink, fileSource, FORMAT_MAJOR, FORMAT_MINOR, HEAD_TAG,
  HeaderOffset, ImageError, ImageHead, ImageReader, ImageWriter, MAGIC, MemorySink, ObjectFlag, ObjectType, PREAMBLE_SIZE,
  describeLayouts, objectType, layoutForType,
} from '../src/image';
import { encodedLength } from '../src/image/codec';
import { expectImageError, memImage, objInfo, readAll, reseal } from './fixtures/image-helpers';
import {
  make, point, sampleHead, samplePages, sampleProc, summarize, TestHint, TestMap, TestNote, TestProc, TestVersioned,
  TestVersionedNewer, TestVersionedOlder, UNKNOWN_TYPE, writeSample,
} from './fixtures/image-test-layouts';

describe('image: stream round trip', () => {
  it('writes the preamble, then the head as tag 1, and reads the head back', () => {
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      w.writeTerminator();
    });
    expect(buf.subarray(0, 8).equals(MAGIC)).to.equal(true);
    expect(buf.readUInt16LE(8)).to.equal(FORMAT_MAJOR);
    expect(buf.readUInt16LE(10)).to.equal(FORMAT_MINOR);
    const { head, records } = readAll(buf);
    expect(head).to.be.instanceOf(ImageHead);
    expect(head).to.deep.equal(sampleHead());
    expect(records).to.deep.equal([]);
  });

  it('round-trips every field kind, tags, ptags and offsets', () => {
    let offsets: number[] = [];
    const buf = memImage((w) => {
      offsets = writeSample(w);
    });
    const { records } = readAll(buf);
    // head + 2 x (proc, note, reply, map, empty map) + unknown + last; terminator not returned
    expect(records.map((r) => r.name)).to.deep.equal([
      'TEST_PROC', 'TEST_NOTE', 'TEST_NOTE', 'TEST_MAP', 'TEST_MAP',
      'TEST_PROC', 'TEST_NOTE', 'TEST_NOTE', 'TEST_MAP', 'TEST_MAP',
      `type ${UNKNOWN_TYPE}`, 'TEST_NOTE',
    ]);
    expect(records.map((r) => r.tag)).to.deep.equal([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    expect(records.map((r) => r.ptag)).to.deep.equal([HEAD_TAG, 2, 3, 2, 2, HEAD_TAG, 7, 8, 7, 7, HEAD_TAG, HEAD_TAG]);
    expect(records.map((r) => r.offset)).to.deep.equal(offsets.slice(1, -1));
    expect(records[0].obj).to.be.instanceOf(TestProc);
    expect(records[0].obj).to.deep.equal(sampleProc(100));
    expect(records[5].obj).to.deep.equal(sampleProc(101));
    expect(records[1].obj).to.deep.equal(make(TestNote, { text: 'note of 100' }));
    expect((records[3].obj as TestMap).name).to.equal('map-100');
    expect(records[3].pageCount).to.equal(2);
    expect(records[3].pages?.equals(samplePages(2, 4096, 100))).to.equal(true);
    expect(records[4].pageCount).to.equal(0);
    expect(records[4].pages?.length).to.equal(0);
    expect(records[0].pages).to.equal(undefined);
    expect(records[0].pageCount).to.equal(0);
  });

  for (const pageSize of [4096, 16384, 65536]) {
    it(`places page payloads at stream offsets that are multiples of the page size (${pageSize})`, () => {
      const buf = memImage((w) => writeSample(w, { pageSize, pagesPerMap: 3 }));
      const { records } = readAll(buf);
      const withPages = records.filter((r) => r.pages && r.pageCount > 0);
      expect(withPages).to.have.length(2);
      for (const r of withPages) {
        const info = objInfo(buf, r.offset);
        const payloadStart = info.end - (r.pages as Buffer).length;
        expect(payloadStart % pageSize).to.equal(0);
        expect(payloadStart).to.be.at.least(info.bodyOffset + info.bodyLength);
        expect(payloadStart - (info.bodyOffset + info.bodyLength)).to.be.below(pageSize);
        expect(buf.subarray(payloadStart, info.end).equals(r.pages as Buffer)).to.equal(true);
        expect(r.pageCount).to.equal(3);
      }
    });
  }

  it('accepts pages given as several buffers, written through without copying into the buffer', () => {
    const sink = new MemorySink();
    const chunks: number[] = [];
    const w = new ImageWriter({ write: (b) => { chunks.push(b.length); sink.write(b); } });
    w.writeHead(sampleHead());
    const p = w.write(sampleProc(1));
    const a = samplePages(16, 4096, 1);
    const b = samplePages(16, 4096, 2);
    w.writeWithPages(make(TestMap, { name: 'two parts' }), [a, b], { ptag: p });
    w.writeTerminator();
    // The two 64 KiB page buffers reach the sink as they are; small writes are coalesced.
    expect(chunks.filter((n) => n === a.length)).to.have.length(2);
    expect(chunks.length).to.be.at.most(4);
    const { records } = readAll(sink.toBuffer());
    expect(records[1].pages?.equals(Buffer.concat([a, b]))).to.equal(true);
    expect(records[1].pageCount).to.equal(32);
  });

  it('coalesces small writes and flush() pushes them', () => {
    const writes: number[] = [];
    const w = new ImageWriter({ write: (b) => { writes.push(b.length); } });
    w.writeHead(sampleHead());
    for (let i = 0; i < 100; i++) w.write(make(TestNote, { text: `n${i}` }));
    expect(writes).to.deep.equal([]);
    const before = w.offset;
    w.flush();
    expect(writes).to.deep.equal([before]);
    w.writeTerminator();
    expect(writes.reduce((a, b) => a + b, 0)).to.equal(w.offset);
  });

  it('round-trips through a file (fileSink / fileSource)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-image-'));
    try {
      const file = path.join(dir, 'img');
      const wfd = fs.openSync(file, 'w');
      writeSample(new ImageWriter(fileSink(wfd)), { pagesPerMap: 40 });
      fs.closeSync(wfd);
      const expected = summarize(new ImageReader(bufferSource(memImage((w) => writeSample(w, { pagesPerMap: 40 })))));
      const rfd = fs.openSync(file, 'r');
      try {
        expect(summarize(new ImageReader(fileSource(rfd)))).to.deep.equal(expected);
      } finally {
        fs.closeSync(rfd);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const mode of ['blocking', 'non-blocking']) {
    it(`round-trips through real pipes between processes (${mode}), 8 MiB of pages`, () => {
      const fixtures = path.join(__dirname, 'fixtures');
      const flag = mode === 'non-blocking' ? ' --nonblock' : '';
      const node = JSON.stringify(process.execPath);
      const pagesPerMap = 1024; // 2 maps x 1024 pages x 4 KiB
      const cmd = `${node} ${JSON.stringify(path.join(fixtures, 'image-pipe-writer.js'))} ${pagesPerMap}${flag}` +
        ` | cat | ${node} ${JSON.stringify(path.join(fixtures, 'image-pipe-reader.js'))}${flag}`;
      const res = spawnSync('sh', ['-c', `set -e; ${cmd}`], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      expect(res.stderr).to.equal('');
      expect(res.status).to.equal(0);
      const expected = summarize(new ImageReader(bufferSource(memImage((w) => writeSample(w, { pagesPerMap })))));
      expect(JSON.parse(res.stdout)).to.deep.equal(expected);
    });
  }

  it('reads exactly the image: bytes after the terminator stay in the source', () => {
    const img = memImage((w) => writeSample(w));
    const data = Buffer.concat([img, Buffer.from('next message')]);
    let pos = 0;
    const r = new ImageReader({
      read(buf, off, len) {
        const n = Math.min(len, data.length - pos, 7); // short reads too
        data.copy(buf, off, pos, pos + n);
        pos += n;
        return n;
      },
    });
    r.readHead();
    while (r.next());
    expect(r.next()).to.equal(null);
    expect(r.offset).to.equal(img.length);
    expect(data.subarray(pos).toString()).to.equal('next message');
  });
});

describe('image: unknown types and versions', () => {
  it('skips object types without a layout (obj undefined) and keeps going', () => {
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      const u = w.writeRaw(UNKNOWN_TYPE, Buffer.from([1, 2, 3]));
      w.writeRaw(UNKNOWN_TYPE + 1, Buffer.alloc(5), { ptag: u, pages: [samplePages(1, 4096, 9)] });
      w.write(make(TestNote, { text: 'after' }));
      w.writeTerminator();
    });
    const { records } = readAll(buf);
    expect(records.map((r) => [r.type, r.obj === undefined, r.pageCount])).to.deep.equal([
      [UNKNOWN_TYPE, true, 0], [UNKNOWN_TYPE + 1, true, 1], [1002, false, 0],
    ]);
    expect(records[1].ptag).to.equal(records[0].tag);
    expect(records[2].obj).to.deep.equal(make(TestNote, { text: 'after' }));
  });

  it('the OPTIONAL header flag: written for optional layouts and by writeRaw on request, read back per object', () => {
    const offsets: number[] = [];
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      offsets.push(w.offset);
      w.write(make(TestNote, { text: 'required' }));
      offsets.push(w.offset);
      const p = w.write(sampleProc(7));
      offsets.push(w.offset);
      w.write(make(TestHint, { hint: 'skip me if you must' }), { ptag: p });
      offsets.push(w.offset);
      w.writeRaw(UNKNOWN_TYPE, Buffer.from('unknown, optional'), { flags: ObjectFlag.OPTIONAL });
      offsets.push(w.offset);
      w.writeRaw(UNKNOWN_TYPE, Buffer.from('unknown, required'));
      w.writeTerminator();
    });
    // In the header itself: bit 0 of the u16 at offset 14, nothing else set.
    expect(offsets.map((o) => buf.readUInt16LE(o + HeaderOffset.flags))).to.deep.equal([0, 0, 1, 1, 0]);
    const { records } = readAll(buf);
    expect(records.map((r) => [r.type, r.offset, r.optional, r.flags, r.obj === undefined])).to.deep.equal([
      [1002, offsets[0], false, 0, false], [1000, offsets[1], false, 0, false], [1020, offsets[2], true, 1, false],
      [UNKNOWN_TYPE, offsets[3], true, 1, true], [UNKNOWN_TYPE, offsets[4], false, 0, true],
    ]);
    expect(records[2].obj).to.deep.equal(make(TestHint, { hint: 'skip me if you must' }));
  });

  it('the flags are covered by the checksum: a flipped OPTIONAL bit is refused', () => {
    let at = 0;
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      at = w.offset;
      w.writeRaw(UNKNOWN_TYPE, Buffer.from('required'));
      w.writeTerminator();
    });
    const b = Buffer.from(buf);
    b.writeUInt16LE(ObjectFlag.OPTIONAL, at + HeaderOffset.flags);
    expectImageError(() => readAll(b), at + HeaderOffset.checksum, /checksum mismatch/);
  });

  it('reserved flag bits are kept by writeRaw and ignored by the reader', () => {
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      w.writeRaw(UNKNOWN_TYPE, Buffer.alloc(3), { flags: 0x8000 | ObjectFlag.OPTIONAL });
      w.writeRaw(1002, encodeRecord(make(TestNote, { text: 'x' })), { flags: 0x4000 });
      w.writeTerminator();
    });
    const { records } = readAll(buf);
    expect(records.map((r) => [r.flags, r.optional])).to.deep.equal([[0x8001, true], [0x4000, false]]);
    expect(records[1].obj).to.deep.equal(make(TestNote, { text: 'x' }));
  });

  it('optional layouts are described as such; HEAD and TERMINATOR cannot be optional; writeRaw checks flags', () => {
    expect(layoutForType(1020)?.optional).to.equal(true);
    expect(layoutForType(1002)?.optional).to.equal(false);
    const d = describeLayouts({ includeTestOnly: true });
    expect(d.objects.find((o) => o.type === 1020)).to.include({ optional: true });
    expect(d.objects.filter((o) => 'optional' in o).map((o) => o.type)).to.deep.equal([1020]);
    expect(() => objectType(ObjectType.TERMINATOR, 'T2', { parents: [ObjectType.HEAD], optional: true })(class X {})).to.throw(/cannot be optional/);
    const w = new ImageWriter(new MemorySink());
    w.writeHead(sampleHead());
    expect(() => w.writeRaw(UNKNOWN_TYPE, Buffer.alloc(1), { flags: 0x10000 })).to.throw(/not a u16/);
  });

  it('ignores trailing fields a newer minor version appended', () => {
    const newer = make(TestVersionedNewer, { a: 7, b: 'bee', c: 9n, d: ['x'], p: point(3, 4), e: 77, f: 'future' });
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      w.writeRaw(1010, encodeRecord(newer));
      w.writeTerminator();
    });
    const obj = readAll(buf).records[0].obj;
    expect(obj).to.be.instanceOf(TestVersioned);
    expect(obj).to.deep.equal(make(TestVersioned, { a: 7, b: 'bee', c: 9n, d: ['x'], p: point(3, 4) }));
    expect(obj).not.to.have.property('e');
  });

  it('fills defaults for {since} fields an older image lacks', () => {
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      w.writeRaw(1010, encodeRecord(make(TestVersionedOlder, { a: 1, b: 'old' })));
      w.writeTerminator();
    });
    // What a minor-0 writer would have said in the preamble (the head's checksum covers it).
    buf.writeUInt16LE(0, 10);
    reseal(buf, PREAMBLE_SIZE);
    expect(readAll(buf).records[0].obj).to.deep.equal(make(TestVersioned, { a: 1, b: 'old', c: 0n, d: [], p: point(0, 0) }));
  });

  it('refuses a record that lacks a field without {since}', () => {
    let at = 0;
    const buf = memImage((w) => {
      w.writeHead(sampleHead());
      at = w.offset;
      w.writeRaw(1000, encodeRecord(make(TestVersionedOlder, { a: 1, b: 'x' })));
      w.writeTerminator();
    });
    const bodyEnd = objInfo(buf, at).bodyOffset + 4 + 4 + 1;
    const err = expectImageError(() => readAll(buf), bodyEnd, /record TEST_PROC ends before field alive/);
    expect(err.object).to.equal(`object #1 (TEST_PROC, tag 2) at offset ${at}`);
  });

  it('requires {since} fields that the image minor version should have', () => {
    const old = encodeRecord(make(TestVersionedOlder, { a: 1, b: 'x' }));
    expect(decodeRecord(TestVersioned, old, { minor: 0 }).c).to.equal(0n);
    expectImageError(() => decodeRecord(TestVersioned, old, { minor: 1, offset: 100 }), 100 + old.length, /ends before field c/);
  });

  it('accepts an image with a higher minor version', () => {
    const buf = memImage((w) => writeSample(w));
    buf.writeUInt16LE(FORMAT_MINOR + 3, 10);
    reseal(buf, PREAMBLE_SIZE); // the preamble is covered by the head's checksum
    const r = new ImageReader(bufferSource(buf));
    r.readHead();
    expect(r.formatMinor).to.equal(FORMAT_MINOR + 3);
    let n = 0;
    while (r.next()) n++;
    expect(n).to.equal(12);
  });

  it('skips header bytes a newer minor version added (headerLength > 32)', () => {
    let at = 0;
    const orig = memImage((w) => {
      w.writeHead(sampleHead());
      at = w.offset;
      w.write(make(TestNote, { text: 'hi' }));
      w.writeTerminator();
    });
    const info = objInfo(orig, at);
    const ext = Buffer.concat([orig.subarray(0, at + 32), Buffer.from('EXTRAHDR'), orig.subarray(at + 32)]);
    ext.writeBigUInt64LE(BigInt(info.total + 8), at);
    ext.writeUInt16LE(40, at + 8);
    reseal(ext, at);
    const { records } = readAll(ext);
    expect(records[0].obj).to.deep.equal(make(TestNote, { text: 'hi' }));
  });
});

describe('image: writer checks', () => {
  const open = (): ImageWriter => {
    const w = new ImageWriter(new MemorySink());
    w.writeHead(sampleHead());
    return w;
  };
  const einval = (fn: () => unknown, re: RegExp): void => {
    expect(fn).to.throw(CptError, re).with.property('code', 'EINVAL');
  };

  it('returns increasing tags and checks parents like the reader will', () => {
    const w = open();
    const p = w.write(sampleProc(1));
    expect(p).to.equal(2);
    expect(w.write(make(TestNote, { text: '' }), { ptag: p })).to.equal(3);
    einval(() => w.write(make(TestMap, {})), /TEST_MAP cannot be a child of HEAD/);
    einval(() => w.write(make(TestMap, {}), { ptag: 99 }), /parent tag 99 has not been written/);
    einval(() => w.write(make(TestNote, {}), { ptag: 3 + 1 }), /parent tag 4/);
  });

  it('refuses misuse', () => {
    einval(() => new ImageWriter(new MemorySink()).write(sampleProc(1)), /writeHead\(\) must come first/);
    einval(() => new ImageWriter(new MemorySink()).writeHead(sampleHead(5000)), /pageSize 5000/);
    const w = open();
    einval(() => w.writeHead(sampleHead()), /once/);
    einval(() => w.write({ a: 1 }), /not an @objectType class/);
    einval(() => w.write(new ImageHead()), /writeHead/);
    const p = w.write(sampleProc(1));
    einval(() => w.writeWithPages(make(TestMap, {}), Buffer.alloc(100), { ptag: p }), /not a multiple of the page size/);
    einval(() => w.write(make(TestProc, { pid: -1 })), /TEST_PROC\.pid: expected u32/);
    einval(() => w.write(make(TestProc, { start: 5 as unknown as bigint })), /TEST_PROC\.start: expected u64/);
    einval(() => w.write(make(TestProc, { path: [point(1, 2), { x: 0.5, y: 1 }] })), /TEST_PROC\.path\[1\]\.x: expected i32/);
    w.writeTerminator();
    einval(() => w.write(sampleProc(2)), /already terminated/);
  });

  it('refuses objects larger than maxObjectBytes (E2BIG), which the reader would refuse', () => {
    const w = new ImageWriter(new MemorySink(), { maxObjectBytes: 8192 });
    w.writeHead(sampleHead());
    const p = w.write(sampleProc(1));
    expect(() => w.writeWithPages(make(TestMap, {}), samplePages(2, 4096, 1), { ptag: p }))
      .to.throw(CptError).with.property('code', 'E2BIG');
  });

  it('reports sink failures as CptError and stops', () => {
    let fail = false;
    const w = new ImageWriter({ write: () => { if (fail) throw Object.assign(new Error('broken pipe'), { code: 'EPIPE' }); } }, { bufferSize: 64 });
    w.writeHead(sampleHead());
    fail = true;
    expect(() => w.write(sampleProc(1))).to.throw(CptError).with.property('code', 'EPIPE');
    einval(() => w.write(sampleProc(1)), /earlier write to the sink failed/);
  });

  it('encodes records with no type number only nested, and decodes by class or type number', () => {
    const body = encodeRecord(make(TestNote, { text: 'by type' }));
    expect(decodeRecord(1002, body)).to.deep.equal(make(TestNote, { text: 'by type' }));
    expect(decodeRecord(TestNote, body)).to.be.instanceOf(TestNote);
    expect(() => decodeRecord(4321, body)).to.throw(ImageError, /no layout registered for type 4321/);
    expect(ContentKind.RECORD_WITH_PAGES).to.equal(1);
    expect(ObjectType.FILE_DATA).to.equal(43);
  });
});

describe('image: deferred writes (a checkpoint that lets the process run before its pages are written)', () => {
  /** The sample image, with each map's pages either given now or filled later by `fill`. */
  async function sample(defer: boolean, onFill: (n: number) => void = () => undefined): Promise<{ buf: Buffer; sinkBeforeFlush: number; tags: number[] }> {
    const sink = new MemorySink();
    const w = new ImageWriter(sink);
    const tags: number[] = [];
    w.writeHead(sampleHead());
    if (defer) w.deferWrites();
    let fills = 0;
    for (const pid of [100, 101]) {
      const p = w.write(sampleProc(pid));
      tags.push(p);
      const n = w.write(make(TestNote, { text: `note of ${pid}` }), { ptag: p });
      tags.push(w.write(make(TestNote, { text: 'reply' }), { ptag: n }));
      const map = make(TestMap, { start: 0x400000n, end: 0x400000n + 8192n, name: `map-${pid}` });
      if (defer) {
        tags.push(w.writeWithPagesLater(map, 8192, (buf) => {
          onFill(++fills);
          samplePages(2, 4096, pid).copy(buf);
        }, { ptag: p }));
      } else {
        tags.push(w.writeWithPages(map, samplePages(2, 4096, pid), { ptag: p }));
      }
    }
    tags.push(w.write(make(TestNote, { text: 'last' })));
    w.writeTerminator();
    const sinkBeforeFlush = sink.length;
    await w.flushDeferred();
    return { buf: sink.toBuffer(), sinkBeforeFlush, tags };
  }

  it('gives the same bytes and tags as writing at once; nothing reaches the sink and no payload is read before flushDeferred', async () => {
    let filled = 0;
    const now = await sample(false);
    const later = await sample(true, (n) => (filled = n));
    expect(later.tags).to.deep.equal(now.tags);
    expect(later.buf.equals(now.buf)).to.equal(true);
    expect(filled).to.equal(2);
    expect(later.sinkBeforeFlush, 'bytes written before flushDeferred (the preamble and head only)').to.be.lessThan(now.buf.length);
    const { records } = readAll(later.buf);
    expect((records.find((r) => r.name === 'TEST_MAP')!.pages ?? Buffer.alloc(0)).equals(samplePages(2, 4096, 100))).to.equal(true);
  });

  it('a record is encoded as it was when written: changing the object (its buffers, arrays, nested records) after changes nothing; offset stays exact', async () => {
    const write = async (defer: boolean, change: boolean) => {
      const sink = new MemorySink();
      const w = new ImageWriter(sink);
      w.writeHead(sampleHead());
      if (defer) w.deferWrites();
      const proc = sampleProc(100);
      const p = w.write(proc);
      if (change) {
        proc.pid = 999;
        proc.blob[0] ^= 0xff;
        proc.addrs.push(1n);
        proc.argv[0] = 'changed';
        proc.origin.x = -5;
        proc.path[0].y = 77;
        proc.path.pop();
      }
      const offsets = [w.offset];
      if (defer) w.writeWithPagesLater(make(TestMap, { start: 0x400000n, end: 0x401000n, name: 'm' }), 4096, (buf) => samplePages(1, 4096, 1).copy(buf), { ptag: p });
      else w.writeWithPages(make(TestMap, { start: 0x400000n, end: 0x401000n, name: 'm' }), samplePages(1, 4096, 1), { ptag: p });
      offsets.push(w.offset);
      w.write(make(TestNote, { text: 'after the pages' }), { ptag: p });
      offsets.push(w.offset);
      w.writeTerminator();
      await w.flushDeferred();
      return { buf: sink.toBuffer(), offsets, end: w.offset };
    };
    const now = await write(false, false);
    const later = await write(true, true);
    expect(sampleProc(100).path.length, 'the sample has a nested record to change').to.be.greaterThan(0);
    expect(later.buf.equals(now.buf)).to.equal(true);
    expect(later.offsets).to.deep.equal(now.offsets);
    expect(later.end).to.equal(now.buf.length);
  });

  it('a payload filled differently later is what the image holds (and its checksum is computed then)', async () => {
    const sink = new MemorySink();
    const w = new ImageWriter(sink);
    w.writeHead(sampleHead());
    w.deferWrites();
    const p = w.write(sampleProc(100));
    let value = 1;
    w.writeWithPagesLater(make(TestMap, { start: 0x400000n, end: 0x401000n, name: 'm' }), 4096, (buf) => buf.fill(value), { ptag: p });
    w.writeTerminator();
    value = 7; // changed after the object was "written": the fill runs at flush time
    await w.flushDeferred();
    const { records } = readAll(sink.toBuffer());
    expect(records[1].pages![0]).to.equal(7);
  });

  it('writeLater encodes a record where it stands in the stream, after the payloads before it were filled; a changed length is refused', async () => {
    for (const badLength of [false, true]) {
      const sink = new MemorySink();
      const w = new ImageWriter(sink);
      w.writeHead(sampleHead());
      w.deferWrites();
      const p = w.write(sampleProc(100));
      const note = make(TestNote, { text: 'xxxx' });
      w.writeWithPagesLater(make(TestMap, { start: 0x400000n, end: 0x401000n, name: 'm' }), 4096, (buf) => {
        buf.fill(3);
        note.text = badLength ? 'longer' : 'done';
      }, { ptag: p });
      w.writeLater(note, { ptag: p });
      w.writeTerminator();
      if (badLength) {
        let err: unknown;
        await w.flushDeferred().catch((e) => (err = e));
        expect(err).to.be.instanceOf(CptError);
        continue;
      }
      await w.flushDeferred();
      const { records } = readAll(sink.toBuffer());
      expect((records[2].obj as TestNote).text).to.equal('done');
    }
  });

  it('encodedLength is the length encodeRecord gives, without encoding (every field kind, nested records, UTF-8); a value of the wrong kind is refused', () => {
    const big = make(TestProc, { ...sampleProc(7), blob: Buffer.alloc(3 << 20, 1), addrs: Array.from({ length: 1000 }, (_, i) => BigInt(i)), argv: ['é', '', 'x'.repeat(300)] });
    for (const obj of [sampleProc(1), make(TestProc, {}), big, make(TestNote, { text: '∞∞' }), make(TestMap, { start: 1n, end: 2n, name: 'm' })]) {
      expect(encodedLength(obj)).to.equal(encodeRecord(obj).length);
      expect(encodeRecord(obj, encodedLength(obj)).equals(encodeRecord(obj))).to.equal(true);
    }
    expect(() => encodedLength(make(TestProc, { ...sampleProc(2), blob: 'no' as unknown as Buffer }))).to.throw(CptError, /Buffer/);
    expect(() => encodedLength(make(TestProc, { ...sampleProc(2), path: {} as unknown as [] }))).to.throw(CptError, /array/);
  });

  it('refuses writeWithPagesLater without deferWrites, and payloads that are not whole pages', () => {
    const w = new ImageWriter(new MemorySink());
    w.writeHead(sampleHead());
    const p = w.write(sampleProc(100));
    const map = make(TestMap, { start: 0n, end: 4096n, name: 'm' });
    expect(() => w.writeWithPagesLater(map, 4096, () => undefined, { ptag: p })).to.throw(CptError, /deferWrites/);
    w.deferWrites();
    expect(() => w.writeWithPagesLater(map, 100, () => undefined, { ptag: p })).to.throw(CptError, /multiple of the page size/);
  });
});

describe('image: the pages section (writeWithPagesAtEnd)', () => {
  for (const defer of [false, true]) {
    it(`puts its objects after every other record, listed first in a pages-follow record, lower ranks first, payloads read then${defer ? ' (deferred)' : ''}`, async () => {
      const sink = new MemorySink();
      const w = new ImageWriter(sink);
      w.writeHead(sampleHead());
      if (defer) w.deferWrites();
      const fills: number[] = [];
      const maps: number[] = [];
      for (const pid of [100, 101]) {
        const p = w.write(sampleProc(pid));
        const m = w.write(make(TestMap, { start: 0x400000n, end: 0x402000n, name: `map-${pid}` }), { ptag: p });
        maps.push(m);
        w.writeWithPagesAtEnd(make(TestMap, { start: 0x400000n, end: 0x402000n, name: `pages-${pid}` }), 8192, (buf) => {
          fills.push(pid);
          samplePages(2, 4096, pid).copy(buf);
        }, { ptag: p, key: BigInt(pid), rank: 200 - pid });
        w.write(make(TestNote, { text: `after ${pid}` }), { ptag: p });
      }
      expect(() => w.writeTerminator(), 'the terminator before the pages section').to.throw(CptError, /writeTail/);
      expect(fills, 'no payload read before writeTail').to.deep.equal([]);
      await w.writeTail();
      w.writeTerminator();
      await w.flushDeferred();
      const { records } = readAll(sink.toBuffer());
      const names = records.map((r) => r.name);
      const at = names.indexOf('pages-follow');
      expect(names.slice(at)).to.deep.equal(['pages-follow', 'TEST_MAP', 'TEST_MAP']);
      expect(names.slice(0, at)).to.not.include('pages-follow');
      // Rank 99 (pid 101) before rank 100 (pid 100); each listed as [parent tag, key, pages].
      const listed = (records[at].obj as { entries: bigint[] }).entries;
      const ptags = [records[at + 1].ptag, records[at + 2].ptag];
      expect(listed).to.deep.equal([BigInt(ptags[0]), 101n, 2n, BigInt(ptags[1]), 100n, 2n]);
      expect(fills).to.deep.equal([101, 100]);
      expect(records[at + 1].pages!.equals(samplePages(2, 4096, 101))).to.equal(true);
      expect(records[at + 2].pages!.equals(samplePages(2, 4096, 100))).to.equal(true);
      expect(maps).to.have.length(2);
    });
  }
});
