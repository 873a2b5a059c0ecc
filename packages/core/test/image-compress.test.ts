import { expect } from 'chai';
import { ContentKind, HeaderOffset, ImageError, ImageWriter, MemorySink } from '../src/image';
import { expectImageError, objInfo, readAll, reseal } from './fixtures/image-helpers';
import { make, sampleHead, samplePages, sampleProc, TestMap, TestNote } from './fixtures/image-test-layouts';

/** Pages that compress well: a few distinct bytes per page, the rest a repeated pattern. */
function textPages(count: number, pageSize = 4096, seed = 1): Buffer {
  const b = Buffer.alloc(count * pageSize);
  for (let p = 0; p < count; p++) b.write(`page ${p} of ${seed} `.repeat(pageSize / 16), p * pageSize, 'latin1');
  return b;
}

interface Built { buf: Buffer; offsets: number[] }

/** An image with a compressible, an incompressible and an empty payload, and records between them. */
async function build(compress: boolean, defer = false): Promise<Built> {
  const sink = new MemorySink();
  const w = new ImageWriter(sink, compress ? { compress: 'lz4' } : {});
  const offsets: number[] = [];
  w.writeHead(sampleHead());
  if (defer) w.deferWrites();
  const p = w.write(sampleProc(100));
  const maps: Array<[string, Buffer]> = [['text', textPages(64)], ['random', samplePages(8, 4096, 7)], ['empty', Buffer.alloc(0)], ['text2', textPages(3, 4096, 2)]];
  for (const [name, pages] of maps) {
    offsets.push(w.offset);
    const map = make(TestMap, { start: 0x400000n, end: 0x400000n + BigInt(pages.length), name });
    if (defer && pages.length) w.writeWithPagesLater(map, pages.length, (buf) => pages.copy(buf), { ptag: p });
    else w.writeWithPages(map, pages, { ptag: p });
    w.write(make(TestNote, { text: `after ${name}` }), { ptag: p });
  }
  w.writeTerminator();
  await w.flushDeferred();
  return { buf: sink.toBuffer(), offsets };
}

describe('image: compressed page payloads (--compress)', () => {
  it('reads back the same records and pages as a plain image, and is smaller', async () => {
    const plainBuf = (await build(false)).buf;
    const plain = readAll(plainBuf);
    const z = await build(true);
    const packed = readAll(z.buf);
    expect(packed.records.map((r) => [r.name, r.tag, r.ptag, r.pageCount])).to.deep.equal(plain.records.map((r) => [r.name, r.tag, r.ptag, r.pageCount]));
    for (let i = 0; i < plain.records.length; i++) {
      expect(packed.records[i].obj).to.deep.equal(plain.records[i].obj);
      expect(packed.records[i].pages?.equals(plain.records[i].pages!) ?? plain.records[i].pages === undefined, plain.records[i].name).to.equal(true);
    }
    expect(z.buf.length).to.be.below(plainBuf.length / 2);
  });

  it('compresses only the payloads that shrink: random pages stay plain and page aligned', async () => {
    const { buf } = await build(true);
    const { records } = readAll(buf);
    const kinds = records.filter((r) => r.name === 'TEST_MAP').map((r) => buf.readUInt16LE(r.offset + HeaderOffset.kind));
    expect(kinds).to.deep.equal([ContentKind.RECORD_WITH_COMPRESSED_PAGES, ContentKind.RECORD_WITH_PAGES, ContentKind.RECORD_WITH_PAGES, ContentKind.RECORD_WITH_COMPRESSED_PAGES]);
    const random = records.find((r) => (r.obj as TestMap).name === 'random')!;
    const info = objInfo(buf, random.offset);
    expect((info.end - random.pages!.length) % 4096, 'plain payload after a compressed one is page aligned').to.equal(0);
  });

  it('deferred objects (the snapshot path) come out byte for byte as written at once', async () => {
    expect((await build(true, true)).buf.equals((await build(true)).buf)).to.equal(true);
  });

  describe('a corrupt compressed payload is EBADIMG, never a crash or a hang', () => {
    /** The first compressed object, its payload offset (after the body), and the image. */
    async function firstCompressed(): Promise<{ buf: Buffer; at: number; payload: number }> {
      const { buf, offsets } = await build(true);
      const info = objInfo(buf, offsets[0]);
      return { buf, at: offsets[0], payload: info.bodyOffset + info.bodyLength };
    }

    it('flipped compressed bytes fail the checksum', async () => {
      const { buf, at, payload } = await firstCompressed();
      buf[payload + 40] ^= 0xff;
      expectImageError(() => readAll(buf), at + HeaderOffset.checksum, /checksum mismatch/);
    });

    it('garbage with a valid checksum fails decompression', async () => {
      const { buf, at, payload } = await firstCompressed();
      const end = objInfo(buf, at).end;
      for (let i = payload + 8; i < end; i++) buf[i] = (i * 131) & 0xff;
      reseal(buf, at);
      expectImageError(() => readAll(buf), payload + 8, /LZ4/);
    });

    it('a truncated compressed block fails decompression', async () => {
      const { buf, at } = await firstCompressed();
      const end = objInfo(buf, at).end;
      // The last 100 bytes of the block become zeros: a block that ends early or runs off its end.
      buf.fill(0, end - 100, end);
      reseal(buf, at);
      expect(() => readAll(buf)).to.throw(ImageError).with.property('code', 'EBADIMG');
    });

    it('an uncompressed length that is not whole pages, too big, or wrong is refused before decompressing', async () => {
      for (const [len, msg] of [[4095, /whole number/], [0, /whole number/], [0x7ffff000, /whole number/], [4096, /LZ4 data holds|corrupt LZ4/]] as const) {
        const { buf, at, payload } = await firstCompressed();
        buf.writeUInt32LE(len, payload + 4);
        reseal(buf, at);
        expectImageError(() => readAll(buf), payload + (msg.source.includes('whole') ? 4 : 8), msg);
      }
    });

    it('an unknown codec is refused', async () => {
      const { buf, at, payload } = await firstCompressed();
      buf.writeUInt32LE(99, payload);
      reseal(buf, at);
      expectImageError(() => readAll(buf), payload, /unknown page codec 99/);
    });

    it('a compressed payload too short for its codec header is refused', async () => {
      const { buf, at } = await firstCompressed();
      const info = objInfo(buf, at);
      // Cut the object to its body plus 4 bytes; the image ends there (truncated) or the header is refused.
      const cut = Buffer.from(buf.subarray(0, info.bodyOffset + info.bodyLength + 4));
      cut.writeBigUInt64LE(BigInt(info.bodyOffset + info.bodyLength + 4 - at), at + HeaderOffset.totalLength);
      reseal(cut, at);
      expectImageError(() => readAll(cut), info.bodyOffset + info.bodyLength, /no codec header/);
    });
  });
});
