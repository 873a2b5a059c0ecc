/**
 * Page payloads left in the image file (ImageReader.leavePayloads): the reader skips them and says
 * where they are; checkPayload reads them back and finishes the object's checksum, refusing a
 * damaged or cut payload with EBADIMG; anything not a regular file is read whole as before.
 */
import { expect } from 'chai';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  ContentKind, FilePayload, HeaderOffset, ImageError, ImageReader, ImageRecord, ImageWriter, bufferSource, fileSink, fileSource,
} from '../src/image';
import { MemoryRegion, onlyRootCanChange } from '../src/linux';
import { samplePages, summarize, writeSample } from './fixtures/image-test-layouts';

const TEST_MAP = 1001;
/** Payloads mapped a bit over three pages at a time: several mappings each, none page-aligned but the first. */
const OPTS = { mapChunkBytes: 3 * 4096 + 512 };

/**
 * Each test runs four times: payloads read back with pread, and mapped (a file only root can
 * change); checksummed with CRC-32 (RECORD_WITH_PAGES) and with XXH3 (RECORD_WITH_HASHED_PAGES).
 */
for (const mode of ['read', 'mapped'] as const) for (const hashed of [false, true]) describe(`image: payloads left in the file (${mode}, ${hashed ? 'XXH3' : 'CRC-32'})`, () => {
  let dir: string;
  let file: string;
  const PAGES = 300; // over one checksum piece (1 MiB) per payload
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-left-'));
    file = path.join(dir, 'img');
    const fd = fs.openSync(file, 'w');
    writeSample(new ImageWriter(fileSink(fd), { hashPagesAfter: hashed ? 0 : Infinity }), { pagesPerMap: PAGES });
    fs.closeSync(fd);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
  before(function () {
    if (mode === 'mapped' && !mappable()) this.skip();
  });

  /** The image file opened for reading, as this mode reads it: writable by others (not mapped) or root's only. */
  function openImage(f: string): number {
    fs.chmodSync(f, mode === 'mapped' ? 0o644 : 0o666);
    const fd = fs.openSync(f, 'r');
    expect('mapAt' in fileSource(fd)).to.equal(mode === 'mapped');
    return fd;
  }

  /** Reads `f` from byte `at` (where its image starts), leaving the payloads `leave` says. */
  function readLeaving(f: string, leave: (t: number) => boolean = (t) => t === TEST_MAP, at = 0): { reader: ImageReader; records: ImageRecord[]; fd: number } {
    const fd = openImage(f);
    fs.readSync(fd, Buffer.alloc(at), 0, at, null); // the file's position at the image
    const reader = new ImageReader(fileSource(fd), OPTS);
    reader.readHead();
    reader.leavePayloads(leave);
    const records: ImageRecord[] = [];
    for (let rec = reader.next(); rec; rec = reader.next()) records.push(rec);
    return { reader, records, fd };
  }

  it('skips the payloads it is asked to leave, says where they are, and each checks against the file', () => {
    const { reader, records, fd } = readLeaving(file);
    try {
      const maps = records.filter((r) => r.type === TEST_MAP && r.pageCount > 0);
      expect(maps).to.have.length(2);
      const img = fs.readFileSync(file);
      for (const [i, m] of maps.entries()) {
        expect(m.pages).to.equal(undefined);
        const p = m.filePayload!;
        expect(p.length).to.equal(PAGES * 4096);
        expect(p.fileOffset % 4096).to.equal(0);
        expect(p.kind).to.equal(hashed ? ContentKind.RECORD_WITH_HASHED_PAGES : ContentKind.RECORD_WITH_PAGES);
        // The bytes at that offset are the payload as written.
        expect(img.subarray(p.fileOffset, p.fileOffset + p.length).equals(samplePages(PAGES, 4096, 100 + i))).to.equal(true);
        reader.checkPayload(p);
        const into = Buffer.alloc(p.length);
        reader.checkPayload(p, into);
        expect(into.equals(samplePages(PAGES, 4096, 100 + i))).to.equal(true);
        // Piece by piece to a function: in order, together the payload.
        const pieces: Buffer[] = [];
        reader.checkPayload(p, (bytes, at) => {
          expect(at).to.equal(pieces.reduce((n, b) => n + b.length, 0));
          pieces.push(Buffer.from(bytes));
        });
        expect(pieces.length).to.be.greaterThan(1);
        expect(Buffer.concat(pieces).equals(samplePages(PAGES, 4096, 100 + i))).to.equal(true);
      }
      // Everything else reads as without leaving: the same records, offsets and end.
      const whole = openImage(file);
      try {
        const expected = summarize(new ImageReader(fileSource(whole))) as Array<{ pages?: unknown; name?: string; pageCount?: number }>;
        const got = [expected[0], ...records.map((r) => ({
          type: r.type, name: r.name, tag: r.tag, ptag: r.ptag, offset: r.offset, pageCount: r.pageCount,
          obj: r.obj === undefined ? null : JSON.parse(JSON.stringify(r.obj, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x))),
          pages: r.filePayload ? 'left' : r.pages ? 'read' : null,
        })), { end: reader.offset }];
        expect(got.length).to.equal(expected.length);
        got.forEach((g, i) => {
          const e = expected[i] as Record<string, unknown>;
          if ((g as { pages?: unknown }).pages === 'left') expect({ ...g, pages: null }).to.deep.equal({ ...e, pages: null });
          else if ((g as { pages?: unknown }).pages === 'read') expect({ ...g, pages: null }).to.deep.equal({ ...e, pages: null });
          else expect(g).to.deep.equal(e);
        });
      } finally {
        fs.closeSync(whole);
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a payload byte changed: its object still reads, and checkPayload refuses it (EBADIMG, checksum, naming the object)', () => {
    const first = readLeaving(file);
    const p = first.records.find((r) => r.filePayload)!.filePayload!;
    fs.closeSync(first.fd);
    const img = fs.readFileSync(file);
    img[p.fileOffset + 5000] ^= 0x40;
    fs.writeFileSync(file, img);
    const { reader, records, fd } = readLeaving(file);
    try {
      const q = records.find((r) => r.filePayload)!.filePayload!;
      const e = thrown(() => reader.checkPayload(q));
      expect(e).to.be.instanceOf(ImageError);
      expect(e.code).to.equal('EBADIMG');
      expect(e.message).to.match(/checksum mismatch/);
      expect((e as ImageError).object).to.equal(q.desc);
      expect(thrown(() => reader.checkPayload(q, Buffer.alloc(q.length))).message).to.match(/checksum mismatch/);
      expect(thrown(() => reader.checkPayload(q, () => undefined)).message).to.match(/checksum mismatch/);
      // The function's own failure is its own, not a reason to read the file another way.
      expect(thrown(() => reader.checkPayload(q, () => {
        throw new Error('no room');
      })).message).to.equal('no room');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a file cut inside a payload: the stream refuses to end (truncated), and checkPayload says where the file ends', () => {
    const whole = readLeaving(file);
    const last = whole.records.filter((r) => r.filePayload).pop()!.filePayload!;
    fs.closeSync(whole.fd);
    fs.truncateSync(file, last.fileOffset + 4096 * 3 + 10);
    const fd = openImage(file);
    try {
      const reader = new ImageReader(fileSource(fd), OPTS);
      reader.readHead();
      reader.leavePayloads((t) => t === TEST_MAP);
      let left: FilePayload | undefined;
      const e = thrown(() => {
        for (let rec = reader.next(); rec; rec = reader.next()) if (rec.filePayload) left = rec.filePayload;
      });
      expect(e.code).to.equal('EBADIMG');
      expect(e.message).to.match(/truncated/);
      expect(left?.fileOffset).to.equal(last.fileOffset);
      const c = thrown(() => reader.checkPayload(left!));
      expect(c.code).to.equal('EBADIMG');
      expect(c.message).to.match(/truncated: the file ends inside the page payload \(12298 of/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('reads payloads whole where asked for nothing, for other types, and from a source that is not a regular file', () => {
    const none = readLeaving(file, () => false);
    fs.closeSync(none.fd);
    expect(none.records.some((r) => r.filePayload)).to.equal(false);
    expect(none.records.filter((r) => r.pages && r.pages.length).length).to.equal(2);
    const reader = new ImageReader(bufferSource(fs.readFileSync(file)));
    reader.readHead();
    reader.leavePayloads(() => true);
    let n = 0;
    for (let rec = reader.next(); rec; rec = reader.next()) {
      expect(rec.filePayload).to.equal(undefined);
      if (rec.pages?.length) n++;
    }
    expect(n).to.equal(2);
    // A pipe is no regular file either.
    const [r, w] = pipe();
    try {
      const src = fileSource(r);
      expect('skip' in src || 'readAt' in src).to.equal(false);
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
  });

  it('an image that starts inside the file, off a page boundary: its payloads read and check from where they are', () => {
    const img = fs.readFileSync(file);
    const prefix = 1000;
    fs.writeFileSync(file, Buffer.concat([Buffer.alloc(prefix, 0x5a), img]));
    const { reader, records, fd } = readLeaving(file, undefined, prefix);
    try {
      const left = payloadsLeft(records);
      expect(left).to.have.length(2);
      for (const [i, p] of left.entries()) {
        expect(p.fileOffset % 4096).to.equal(prefix);
        reader.checkPayload(p);
        const into = Buffer.alloc(p.length);
        reader.checkPayload(p, into);
        expect(into.equals(samplePages(PAGES, 4096, 100 + i))).to.equal(true);
      }
      // A changed byte, on this path too.
      const data = fs.readFileSync(file);
      data[left[1].fileOffset + left[1].length - 1] ^= 0x80;
      fs.writeFileSync(file, data);
      const e = thrown(() => reader.checkPayload(left[1]));
      expect(e.code).to.equal('EBADIMG');
      expect(e.message).to.match(/checksum mismatch/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('loadPayload: each payload checked in a place of a region (mapped there or read into it), and stays there; a changed byte, a cut file, an image off a page boundary', () => {
    const room = PAGES * 4096 + 4096;
    const region = MemoryRegion.reserve(3 * room)!;
    expect(region).to.not.equal(null);
    try {
      // Off a page boundary too: the image after 1000 bytes of something else.
      for (const prefix of [0, 1000]) {
        const f = path.join(dir, `img-${prefix}`);
        fs.writeFileSync(f, Buffer.concat([Buffer.alloc(prefix, 0x5a), fs.readFileSync(file)]));
        const { reader, records, fd } = readLeaving(f, undefined, prefix);
        try {
          const left = payloadsLeft(records);
          expect(left).to.have.length(2);
          // Both in places of their own (the second place, then the third): each stays as it was loaded.
          const got = left.map((p, i) => reader.loadPayload(p, region, (i + 1) * room, room));
          got.forEach((b, i) => {
            expect(b.buffer).to.equal(region.view.buffer);
            expect(b.byteOffset - region.view.byteOffset).to.be.within((i + 1) * room, (i + 2) * room - b.length);
            expect(b.equals(samplePages(PAGES, 4096, 100 + i)), `payload ${i}`).to.equal(true);
          });
          // The same place again, for the other payload: it holds that one now.
          expect(reader.loadPayload(left[0], region, 2 * room, room).equals(samplePages(PAGES, 4096, 100))).to.equal(true);
          expect(thrown(() => reader.loadPayload(left[0], region, 0, left[0].length - 4096)).code).to.equal('EINVAL');
          // Room for the payload alone: enough where it starts on a page of the file.
          if (prefix === 0) expect(reader.loadPayload(left[0], region, 0, left[0].length).equals(samplePages(PAGES, 4096, 100))).to.equal(true);
          // A changed byte: EBADIMG, the checksum.
          const data = fs.readFileSync(f);
          data[left[1].fileOffset + 4096 * 7 + 3] ^= 0x10;
          fs.writeFileSync(f, data);
          const e = thrown(() => reader.loadPayload(left[1], region, room, room));
          expect(e.code).to.equal('EBADIMG');
          expect(e.message).to.match(/checksum mismatch/);
          // The file cut inside it: EBADIMG, truncated, where it ends (a mapping never reaches past it).
          fs.truncateSync(f, left[1].fileOffset + 4096 * 2 + 10);
          const c = thrown(() => reader.loadPayload(left[1], region, room, room));
          expect(c.code).to.equal('EBADIMG');
          expect(c.message).to.match(/truncated: the file ends inside the page payload \(8202 of/);
        } finally {
          fs.closeSync(fd);
        }
      }
      // What was mapped is let go: zero, writable memory again.
      region.clear();
      expect(region.view.subarray(room, 2 * room).every((b) => b === 0)).to.equal(true);
      region.view[room] = 1;
    } finally {
      region.release();
    }
  });

  it('the checksum error names the stored checksum\'s offset', () => {
    const first = readLeaving(file);
    const p = first.records.find((r) => r.filePayload)!.filePayload!;
    fs.closeSync(first.fd);
    const img = fs.readFileSync(file);
    img[p.fileOffset] ^= 1;
    fs.writeFileSync(file, img);
    const { reader, fd } = readLeaving(file);
    try {
      const e = thrown(() => reader.checkPayload(p)) as ImageError;
      expect(e.offset).to.equal(p.objectOffset + HeaderOffset.checksum);
    } finally {
      fs.closeSync(fd);
    }
  });
});

/** Whether this test run can map an image: it runs as root, and its temporary directory is on a local filesystem. */
/** The payloads the reader left in the file, in the order of their records. */
function payloadsLeft(records: ImageRecord[]): FilePayload[] {
  return records.flatMap((r) => (r.filePayload ? [r.filePayload] : []));
}

function mappable(): boolean {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-probe-'));
  try {
    fs.writeFileSync(path.join(d, 'f'), 'x', { mode: 0o644 });
    const fd = fs.openSync(path.join(d, 'f'), 'r');
    try {
      return onlyRootCanChange(fd);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}

function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('nothing was thrown');
}

/** A pipe's two ends (read, write): a FIFO opened both ways, then unlinked. */
function pipe(): [number, number] {
  const fifo = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-fifo-')), 'f');
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fs.rmSync(path.dirname(fifo), { recursive: true, force: true });
  return [r, w];
}
