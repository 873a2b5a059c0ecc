/** Each kind of corruption the reader checks, with the exact byte offset it must name. */
import { expect } from 'chai';
import { CptError } from '../src/errors';
import { crc32 } from 'zlib';
import { bufferSource, ContentKind, HeaderOffset, ImageError, ImageReader, ImageWriterOptions, objectChecksum, PREAMBLE_SIZE } from '../src/image';
import { expectImageError, memImage, objInfo, readAll, reseal } from './fixtures/image-helpers';
import { writeSample } from './fixtures/image-test-layouts';

/**
 * The sample image; `at[i]` is the stream offset of object i: 0 preamble+head, 1 proc (tag 2),
 * 2 note (tag 3), 3 reply (tag 4), 4 map with 2 pages (tag 5), 5 empty map (tag 6), 6..10 the
 * same for the second proc (tags 7..11), 11 unknown type (tag 12), 12 note (tag 13), 13 terminator.
 */
function sample(opts?: ImageWriterOptions): { buf: Buffer; at: number[] } {
  let at: number[] = [];
  const buf = memImage((w) => {
    at = writeSample(w);
  }, opts);
  at[0] = PREAMBLE_SIZE; // the head object itself
  return { buf, at };
}

const F = HeaderOffset;

function splice(buf: Buffer, start: number, deleteCount: number, insert: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([buf.subarray(0, start), insert, buf.subarray(start + deleteCount)]);
}

describe('image: corrupt input is refused with ImageError at the right offset', () => {
  describe('preamble and head', () => {
    it('empty stream', () => {
      expectImageError(() => readAll(Buffer.alloc(0)), 0, /empty stream/);
    });

    it('truncated preamble', () => {
      expectImageError(() => readAll(sample().buf.subarray(0, 10)), 10, /truncated in the image preamble/);
    });

    it('bad magic', () => {
      const { buf } = sample();
      buf[3] ^= 0x20;
      expectImageError(() => readAll(buf), 0, /bad magic .*not a cptrst image/);
    });

    it('a different major version', () => {
      const { buf } = sample();
      buf.writeUInt16LE(2, 8);
      expectImageError(() => readAll(buf), 8, /major version 2, this reader reads only 1\.x/);
    });

    it('a changed preamble breaks the head checksum', () => {
      const { buf } = sample();
      buf.writeUInt16LE(9, 10);
      expectImageError(() => readAll(buf), PREAMBLE_SIZE + F.checksum, /checksum mismatch/);
    });

    it('a first object that is not HEAD, or a head with the wrong tag', () => {
      let { buf, at } = sample();
      buf.writeUInt16LE(1002, at[0] + F.type);
      reseal(buf, at[0]);
      expectImageError(() => readAll(buf), at[0] + F.type, /first object is TEST_NOTE, not HEAD/);
      ({ buf, at } = sample());
      buf.writeUInt32LE(7, at[0] + F.tag);
      reseal(buf, at[0]);
      expectImageError(() => readAll(buf), at[0] + F.tag, /head has tag 7/);
    });

    for (const pageSize of [0, 2048, 5000, 131072]) {
      it(`head pageSize ${pageSize}`, () => {
        const { buf, at } = sample();
        const { bodyOffset } = objInfo(buf, at[0]);
        // arch "x86_64" (4 + 6 bytes), kernelRelease "6.8.0-test" (4 + 10 bytes), then pageSize
        expect(buf.readUInt32LE(bodyOffset + 24)).to.equal(4096);
        buf.writeUInt32LE(pageSize, bodyOffset + 24);
        reseal(buf, at[0]);
        expectImageError(() => readAll(buf), bodyOffset, new RegExp(`pageSize ${pageSize} is not a power of two`));
      });
    }
  });

  describe('object header', () => {
    it('header length too small or too large', () => {
      for (const hl of [0, 8, 31, 4097, 65535]) {
        const { buf, at } = sample();
        buf.writeUInt16LE(hl, at[1] + F.headerLength);
        expectImageError(() => readAll(buf), at[1] + F.headerLength, new RegExp(`header length ${hl} is outside`));
      }
    });

    it('total length below header + body', () => {
      const { buf, at } = sample();
      buf.writeBigUInt64LE(40n, at[2]);
      expectImageError(() => readAll(buf), at[2] + F.totalLength, /object length 40 is less than header 32 \+ body/);
    });

    it('huge total lengths are refused before any allocation', () => {
      for (const total of [0xffffffffffffffffn, 1n << 40n, BigInt(64 * 1024 * 1024 + 65536 + 1)]) {
        const { buf, at } = sample();
        buf.writeBigUInt64LE(total, at[2]);
        const err = expectImageError(() => readAll(buf), at[2] + F.totalLength, /exceeds the \d+-byte limit/);
        expect(err.object).to.equal(`object #2 (TEST_NOTE, tag 3) at offset ${at[2]}`);
      }
    });

    it('objects above a smaller maxObjectBytes', () => {
      const { buf, at } = sample();
      expectImageError(() => readAll(buf, { maxObjectBytes: 8192 }), at[4] + F.totalLength, /exceeds the 8192-byte limit/);
    });

    it('a checksum mismatch anywhere in the object', () => {
      for (const rel of [F.type, F.flags, F.bodyLength, 40]) {
        const { buf, at } = sample();
        buf[at[2] + rel] ^= 0x01;
        expectImageError(() => readAll(buf), at[2] + F.checksum, /checksum mismatch/);
      }
      const { buf, at } = sample();
      buf[at[5] - 1] ^= 0x80; // last byte of the first map's pages
      expectImageError(() => readAll(buf), at[4] + F.checksum, /checksum mismatch/);
    });

    it('an unknown content kind', () => {
      const { buf, at } = sample();
      buf.writeUInt16LE(7, at[3] + F.kind);
      reseal(buf, at[3]);
      expectImageError(() => readAll(buf), at[3] + F.kind, /unknown content kind 7/);
    });
  });

  describe('body and payload', () => {
    it('stray bytes after the body of a RECORD object', () => {
      const { buf: orig, at } = sample();
      const info = objInfo(orig, at[2]);
      const buf = splice(orig, info.end, 0, Buffer.from([1, 2, 3, 4]));
      buf.writeBigUInt64LE(BigInt(info.total + 4), at[2]);
      reseal(buf, at[2]);
      expectImageError(() => readAll(buf), info.end, /4 stray bytes after the body/);
    });

    it('a page payload that does not start at a page boundary', () => {
      const { buf: orig, at } = sample();
      const info = objInfo(orig, at[4]);
      const bodyEnd = info.bodyOffset + info.bodyLength;
      const pad = 4096 - (bodyEnd % 4096);
      const buf = splice(orig, bodyEnd, pad); // payload right after the body, unaligned
      buf.writeBigUInt64LE(BigInt(info.total - pad), at[4]);
      reseal(buf, at[4]);
      expectImageError(() => readAll(buf), bodyEnd, /does not fill whole 4096-byte pages from the next page boundary/);
    });

    it('a page payload that is not a whole number of pages', () => {
      const { buf: orig, at } = sample();
      const info = objInfo(orig, at[4]);
      const buf = splice(orig, info.end - 512, 512);
      buf.writeBigUInt64LE(BigInt(info.total - 512), at[4]);
      reseal(buf, at[4]);
      expectImageError(() => readAll(buf), info.bodyOffset + info.bodyLength, /does not fill whole 4096-byte pages/);
    });

    it('non-zero padding before the payload', () => {
      const { buf, at } = sample();
      const info = objInfo(buf, at[4]);
      const bodyEnd = info.bodyOffset + info.bodyLength;
      buf[bodyEnd + 3] = 0xaa;
      reseal(buf, at[4]);
      expectImageError(() => readAll(buf), bodyEnd + 3, /non-zero padding/);
    });

    describe('fields inside a record', () => {
      // TEST_PROC body: pid u32, comm str, alive bool, nice u8, flags u16, exitCode i32, start u64,
      // delta i64, blob bytes(4), addrs u64s, fds u32s, argv strs, origin record, path records
      const commLen = Buffer.byteLength('proc-100 ✓');
      const fieldAt = (buf: Buffer, at: number[], rel: number): number => objInfo(buf, at[1]).bodyOffset + rel;

      it('a string length beyond the record', () => {
        const { buf, at } = sample();
        const off = fieldAt(buf, at, 4);
        buf.writeUInt32LE(0xfffffff0, off);
        reseal(buf, at[1]);
        expectImageError(() => readAll(buf), off, /TEST_PROC\.comm needs 4294967280 bytes but the record has \d+ left/);
      });

      it('an array count beyond the record', () => {
        const { buf, at } = sample();
        const off = fieldAt(buf, at, 8 + commLen + 1 + 1 + 2 + 4 + 8 + 8 + 8);
        expect(buf.readUInt32LE(off)).to.equal(2); // addrs count
        buf.writeUInt32LE(0x7fffffff, off);
        reseal(buf, at[1]);
        expectImageError(() => readAll(buf), off, /TEST_PROC\.addrs claims 2147483647 elements/);
      });

      it('a nested record length beyond the record', () => {
        const { buf, at } = sample();
        const info = objInfo(buf, at[1]);
        // path: count 2, then (len 8, x, y) twice at the very end of the body
        const off = info.bodyOffset + info.bodyLength - 12;
        expect(buf.readUInt32LE(off)).to.equal(8);
        buf.writeUInt32LE(13, off);
        reseal(buf, at[1]);
        expectImageError(() => readAll(buf), off, /TEST_PROC\.path\[1\] needs 13 bytes/);
      });

      it('a bool that is not 0 or 1', () => {
        const { buf, at } = sample();
        const off = fieldAt(buf, at, 8 + commLen);
        buf[off] = 2;
        reseal(buf, at[1]);
        expectImageError(() => readAll(buf), off, /TEST_PROC\.alive is a bool but holds 2/);
      });

      it('a string that is not UTF-8', () => {
        const { buf, at } = sample();
        const off = fieldAt(buf, at, 8);
        buf[off] = 0xff;
        reseal(buf, at[1]);
        expectImageError(() => readAll(buf), off, /TEST_PROC\.comm is not valid UTF-8/);
      });
    });
  });

  describe('page payloads checksummed with XXH3 (RECORD_WITH_HASHED_PAGES)', () => {
    const hashed = (): { buf: Buffer; at: number[] } => sample({ hashPagesAfter: 0 });

    it('the writer takes that kind for page payloads (records keep CRC-32), and the sample reads back', () => {
      const { buf, at } = hashed();
      expect(buf.readUInt16LE(at[4] + F.kind)).to.equal(ContentKind.RECORD_WITH_HASHED_PAGES);
      expect(buf.readUInt16LE(at[2] + F.kind)).to.equal(ContentKind.RECORD);
      const { records } = readAll(buf);
      expect(records.filter((r) => r.pages?.length).map((r) => r.pages!.length)).to.deep.equal([8192, 8192]);
      const info = objInfo(buf, at[4]);
      const obj = Buffer.from(buf.subarray(at[4], info.end));
      obj.writeUInt32LE(0, F.checksum);
      expect(objectChecksum(obj, at[4], 4096)).to.equal(buf.readUInt32LE(at[4] + F.checksum));
      // Not the CRC-32 of the object: a reader that took it for RECORD_WITH_PAGES would refuse it.
      expect(crc32(obj)).to.not.equal(buf.readUInt32LE(at[4] + F.checksum));
    });

    it('a changed byte in the header, the body, the padding or the payload is a checksum mismatch', () => {
      const info = objInfo(sample().buf, sample().at[4]);
      for (const rel of [F.type, F.flags, F.ptag, 40, info.bodyLength + 40, 4096, info.total - 1]) {
        const { buf, at } = hashed();
        buf[at[4] + rel] ^= 0x01;
        expectImageError(() => readAll(buf), at[4] + F.checksum, /checksum mismatch/);
      }
      // The kind changed to the CRC one (or from it) and nothing else: the checksum no longer holds.
      const { buf, at } = hashed();
      buf.writeUInt16LE(ContentKind.RECORD_WITH_PAGES, at[4] + F.kind);
      expectImageError(() => readAll(buf), at[4] + F.checksum, /checksum mismatch/);
      const plain = sample();
      plain.buf.writeUInt16LE(ContentKind.RECORD_WITH_HASHED_PAGES, plain.at[4] + F.kind);
      expectImageError(() => readAll(plain.buf), plain.at[4] + F.checksum, /checksum mismatch/);
    });

    it('padding, alignment and whole pages are checked as for RECORD_WITH_PAGES (resealed)', () => {
      {
        const { buf, at } = hashed();
        const info = objInfo(buf, at[4]);
        buf[info.bodyOffset + info.bodyLength + 3] = 0xaa;
        reseal(buf, at[4]);
        expectImageError(() => readAll(buf), info.bodyOffset + info.bodyLength + 3, /non-zero padding/);
      }
      {
        const { buf: orig, at } = hashed();
        const info = objInfo(orig, at[4]);
        const buf = splice(orig, info.end - 512, 512);
        buf.writeBigUInt64LE(BigInt(info.total - 512), at[4]);
        reseal(buf, at[4]);
        expectImageError(() => readAll(buf), info.bodyOffset + info.bodyLength, /does not fill whole 4096-byte pages/);
      }
      {
        const { buf: orig, at } = hashed();
        const info = objInfo(orig, at[4]);
        const bodyEnd = info.bodyOffset + info.bodyLength;
        const pad = 4096 - (bodyEnd % 4096);
        const buf = splice(orig, bodyEnd, pad);
        buf.writeBigUInt64LE(BigInt(info.total - pad), at[4]);
        reseal(buf, at[4]);
        expectImageError(() => readAll(buf), bodyEnd, /does not fill whole 4096-byte pages from the next page boundary/);
      }
    });

    it('the head and the terminator cannot take it', () => {
      const { buf, at } = hashed();
      buf.writeUInt16LE(ContentKind.RECORD_WITH_HASHED_PAGES, at[0] + F.kind);
      reseal(buf, at[0]);
      expectImageError(() => readAll(buf), at[0] + F.kind, /HEAD must be a plain RECORD/);
    });
  });

  describe('tags and nesting', () => {
    it('a tag that does not increase', () => {
      for (const tag of [0, 1, 2]) {
        const { buf, at } = sample();
        buf.writeUInt32LE(tag, at[2] + F.tag);
        reseal(buf, at[2]);
        expectImageError(() => readAll(buf), at[2] + F.tag, new RegExp(`tag ${tag} is not greater than the previous tag 2`));
      }
    });

    it('gaps between tags are fine', () => {
      const { buf, at } = sample();
      buf.writeUInt32LE(1000, at[13] + F.tag);
      reseal(buf, at[13]);
      expect(readAll(buf).records).to.have.length(12);
    });

    it('a ptag that names no earlier object (unknown or forward)', () => {
      for (const ptag of [0, 4, 50]) {
        const { buf, at } = sample();
        buf.writeUInt32LE(ptag, at[2] + F.ptag);
        reseal(buf, at[2]);
        expectImageError(() => readAll(buf), at[2] + F.ptag, new RegExp(`parent tag ${ptag} does not name an earlier object`));
      }
    });

    it('wrong nesting: a parent whose type is not in the layout parents', () => {
      const { buf, at } = sample();
      buf.writeUInt32LE(3, at[4] + F.ptag); // map under the note
      reseal(buf, at[4]);
      const err = expectImageError(() => readAll(buf), at[4] + F.ptag,
        /wrong nesting: TEST_MAP cannot be a child of TEST_NOTE \(tag 3\); allowed: TEST_PROC/);
      expect(err.object).to.equal(`object #4 (TEST_MAP, tag 5) at offset ${at[4]}`);
    });

    it('a second HEAD', () => {
      const { buf, at } = sample();
      buf.writeUInt16LE(1, at[2] + F.type);
      reseal(buf, at[2]);
      expectImageError(() => readAll(buf), at[2] + F.type, /a second HEAD/);
    });

    it('a terminator whose count disagrees (an object was cut out)', () => {
      const { buf: orig, at } = sample();
      const buf = splice(orig, at[12], at[13] - at[12]);
      const term = objInfo(buf, at[12]);
      expectImageError(() => readAll(buf), term.bodyOffset, /terminator counts 13 objects but 12 came before it/);
    });
  });

  describe('end of stream', () => {
    it('EOF at an object boundary before the terminator', () => {
      const { buf, at } = sample();
      expectImageError(() => readAll(buf.subarray(0, at[5])), at[5], /truncated: stream ended before the terminator/);
    });

    it('EOF inside a header, a body or a payload', () => {
      const { buf, at } = sample();
      expectImageError(() => readAll(buf.subarray(0, at[5] + 10)), at[5] + 10, /truncated in an object header/);
      expectImageError(() => readAll(buf.subarray(0, at[2] + 35)), at[2] + 35, /truncated: object needs/);
      expectImageError(() => readAll(buf.subarray(0, at[5] - 100)), at[5] - 100, /truncated: object needs/);
    });

    it('nothing is read after the terminator: next() keeps returning null', () => {
      const { buf } = sample();
      const r = new ImageReader(bufferSource(Buffer.concat([buf, buf])));
      r.readHead();
      let n = 0;
      while (r.next()) n++;
      expect(n).to.equal(12);
      expect(r.next()).to.equal(null);
      expect(r.offset).to.equal(buf.length);
    });
  });

  describe('reader behaviour', () => {
    it('errors are sticky', () => {
      const { buf, at } = sample();
      buf[at[3] + 40] ^= 1;
      const r = new ImageReader(bufferSource(buf));
      r.readHead();
      r.next();
      r.next();
      let first: unknown;
      try {
        r.next();
      } catch (e) {
        first = e;
      }
      expect(first).to.be.instanceOf(ImageError);
      expect(() => r.next()).to.throw().that.equals(first);
    });

    it('next() before readHead() is a usage error', () => {
      const r = new ImageReader(bufferSource(sample().buf));
      expect(() => r.next()).to.throw(CptError, /readHead/).with.property('code', 'EINVAL');
    });

    it('source failures become CptError', () => {
      const r = new ImageReader({ read: () => { throw Object.assign(new Error('io'), { code: 'EIO' }); } });
      expect(() => r.readHead()).to.throw(CptError).with.property('code', 'EIO');
      const r2 = new ImageReader({ read: (_b, _o, len) => len + 1 });
      expect(() => r2.readHead()).to.throw(CptError, /returned 17 for a 16-byte read/).with.property('code', 'EIO');
    });
  });
});
