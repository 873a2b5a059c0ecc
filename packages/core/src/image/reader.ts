/**
 * Reads an image sequentially. The image is untrusted: every length is bounded before anything
 * is allocated, the checksum is verified before the body is decoded, and every refusal is an
 * ImageError naming the byte offset. The reader reads exactly the image's bytes (no read-ahead),
 * so a socket can carry more after the terminator.
 *
 * From a regular file, the caller may have page payloads left where they are (leavePayloads):
 * the reader then reads an object's header, body and padding, skips its payload (lseek), and
 * returns where the payload is with the checksum of what came before it. The body of such an
 * object is decoded before its checksum is complete; the caller finishes the checksum from the
 * file (checkPayload) and must refuse the object, before anything it restored runs, if it fails.
 */
import { asCptError, CptError } from '../errors';
import type { MemoryRegion } from '../linux/libc';
import { decodeRecord } from './codec';
import type { PayloadSum } from './framing';
import {
  alignUp, crc32, decodeHeader, headerCrc, HeaderOffset, isValidPageSize, MAX_OBJ_HEADER_SIZE, OBJ_HEADER_SIZE, ObjectHeader, payloadSum,
} from './framing';
import { COMPRESSED_PAGES_HEADER, decompressPages } from './compress';
import { ImageHead, Terminator } from './head';
import { ImageError } from './image-error';
import { layoutForType, typeName } from './layout';
import { ContentKind, DEFAULT_MAX_OBJECT_BYTES, FORMAT_MAJOR, HEAD_TAG, MAGIC, ObjectFlag, ObjectType, PREAMBLE_SIZE } from './types';

/** Where image bytes come from. Returns the number of bytes read; 0 means end of stream. */
export interface ImageSource {
  read(buf: Buffer, offset: number, length: number): number;
  /** What errors call the stream: the image's path, "stdin". */
  readonly name?: string;
  /**
   * A regular file's only: moves past `length` bytes without reading them and returns the file
   * offset of the first one (past the end of the file is not an error: the next read finds it).
   */
  skip?(length: number): number;
  /** A regular file's only: reads up to `length` bytes at file offset `position` (pread), without moving. */
  readAt?(buf: Buffer, offset: number, length: number, position: number): number;
  /**
   * A regular file that no one but root can change only (so that it cannot be shortened while it
   * is mapped): gives `use` the bytes at file offset `position` mapped read-only, without a copy,
   * valid only during the call; fewer than `length` where the file ends before.
   */
  mapAt?<T>(position: number, length: number, use: (bytes: Buffer) => T): T;
  /**
   * The same file only: maps the file's pages that hold [position, position + length), from the
   * page below `position`, read-only over `region` from its offset `at` (a page), and returns the
   * bytes of that range there (fewer where the file ends before), valid until something else is
   * mapped there. Throws where it cannot map (the region's range is then anonymous memory again).
   */
  mapOver?(region: MemoryRegion, at: number, position: number, length: number): Buffer;
}

/** A page payload left in the image file (ImageReader.leavePayloads). */
export interface FilePayload {
  /** Offset in the image file of its first byte. */
  readonly fileOffset: number;
  /** Its length in bytes: whole pages. */
  readonly length: number;
  /** CRC32 of the object up to the payload: the payload's bytes must take it to `checksum` (payloadSum). */
  readonly crcBefore: number;
  readonly checksum: number;
  /** Its object's content kind: RECORD_WITH_PAGES (CRC-32) or RECORD_WITH_HASHED_PAGES (XXH3). */
  readonly kind: number;
  /** Stream offset of the object's header, and the object as errors name it. */
  readonly objectOffset: number;
  readonly desc: string;
}

export interface ImageRecord {
  type: number;
  name: string;
  tag: number;
  ptag: number;
  /** Stream offset of the object's header. */
  offset: number;
  /** The decoded record; undefined for a type this reader has no layout for (not decoded). */
  obj?: object;
  /** The header's ObjectFlag bits. */
  flags: number;
  /** Whether the writer marked the object OPTIONAL: a reader that does not know it may skip it. */
  optional: boolean;
  /** Page payload, for RECORD_WITH_PAGES objects. */
  pages?: Buffer;
  /** Stream offset of the page payload's first byte (with `pages`). */
  pagesOffset?: number;
  /** The page payload, left in the file instead of read into `pages` (leavePayloads). */
  filePayload?: FilePayload;
  pageCount: number;
}

export interface ImageReaderOptions {
  /** Largest object accepted (header + body + padding + payload). */
  maxObjectBytes?: number;
  /** Bytes of a payload mapped at a time by checkPayload (ImageSource.mapAt); tests give odd sizes. */
  mapChunkBytes?: number;
}

interface RawObject {
  start: number;
  header: ObjectHeader;
  desc: string;
  body: Buffer;
  bodyOffset: number;
  tail: Buffer;
  tailOffset: number;
  /** The payload, left in the file (the tail is then only the padding before it). */
  left?: FilePayload;
}

/** Objects at least this big are read into a buffer that recycle() can hand back for reuse. */
const RECYCLE_MIN = 1024 * 1024;
/** The checksum is computed piece by piece as the object arrives, while each piece is in the cache. */
const CRC_PIECE = 1024 * 1024;
/** A payload left in a file that may be mapped is checked this much at a time (mapped, checked, unmapped). */
const MAP_CHUNK_BYTES = 32 * 1024 * 1024;

const ZEROS = Buffer.alloc(4096);

/**
 * Refuses padding (`pad`, from the start of `raw`'s tail) that is not all zeros, naming the first
 * byte that is not: compared with zeros a page at a time (memcmp) rather than byte by byte in
 * JavaScript, as every object's padding is (up to a page each).
 */
function zeroPadding(raw: RawObject, pad: Buffer): void {
  for (let at = 0; at < pad.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, pad.length - at);
    if (pad.compare(ZEROS, 0, n, at, at + n) === 0) continue;
    for (let i = at; i < at + n; i++) if (pad[i] !== 0) throw new ImageError('non-zero padding before the page payload', raw.tailOffset + i, raw.desc);
  }
}

export class ImageReader {
  private pos = 0;
  /** The buffer of the last object returned, if big enough to be worth reusing. */
  private lastBuffer?: Buffer;
  /** A buffer the caller is done with (see recycle()). */
  private spare?: Buffer;
  private readonly maxObjectBytes: number;
  private readonly mapChunkBytes: number;
  private head?: ImageHead;
  private minor = 0;
  private index = 0;
  private lastTag = 0;
  private done = false;
  private failed?: CptError;
  private readonly tagTypes = new Map<number, number>();
  private leave?: (type: number) => boolean;
  private checkBuffer?: Buffer;

  constructor(private readonly source: ImageSource, opts: ImageReaderOptions = {}) {
    this.maxObjectBytes = opts.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES;
    this.mapChunkBytes = opts.mapChunkBytes ?? MAP_CHUNK_BYTES;
  }

  /** Bytes consumed from the stream so far. */
  get offset(): number {
    return this.pos;
  }

  /** Whether checkPayload checks payloads over a mapping of the file (ImageSource.mapAt), not a copy. */
  get mapsPayloads(): boolean {
    return this.source.mapAt !== undefined;
  }

  /** Minor format version of the image (may be above this reader's FORMAT_MINOR). */
  get formatMinor(): number {
    return this.minor;
  }

  readHead(): ImageHead {
    return this.guard(() => {
      if (this.head) return this.head;
      const pre = Buffer.alloc(PREAMBLE_SIZE);
      const n = this.fill(pre);
      if (n < PREAMBLE_SIZE) {
        throw new ImageError(n === 0 ? 'empty stream: no image' : 'truncated in the image preamble', n, 'image preamble');
      }
      if (!pre.subarray(0, MAGIC.length).equals(MAGIC)) {
        throw new ImageError(`bad magic ${pre.subarray(0, MAGIC.length).toString('hex')}: not a cptrst image`, 0, 'image preamble');
      }
      const major = pre.readUInt16LE(8);
      if (major !== FORMAT_MAJOR) {
        throw new ImageError(`image format major version ${major}, this reader reads only ${FORMAT_MAJOR}.x`, 8, 'image preamble');
      }
      this.minor = pre.readUInt16LE(10);
      // Checked before anything else is read: no object may come before the head.
      const raw = this.readObject(crc32(pre));
      if (!raw) throw new ImageError('truncated: no head after the preamble', this.pos, 'image head');
      const h = raw.header;
      if (h.type !== ObjectType.HEAD) {
        throw new ImageError(`first object is ${typeName(h.type)}, not HEAD`, raw.start + HeaderOffset.type, raw.desc);
      }
      if (h.tag !== HEAD_TAG || h.ptag !== 0) {
        throw new ImageError(`head has tag ${h.tag}, ptag ${h.ptag}; expected ${HEAD_TAG}, 0`, raw.start + HeaderOffset.tag, raw.desc);
      }
      this.checkRecordOnly(raw);
      const head = decodeRecord(ImageHead, raw.body, { offset: raw.bodyOffset, object: raw.desc, minor: this.minor });
      if (!isValidPageSize(head.pageSize)) {
        throw new ImageError(`head pageSize ${head.pageSize} is not a power of two in [4096, 65536]`, raw.bodyOffset, raw.desc);
      }
      this.accept(raw);
      this.head = head;
      return head;
    });
  }

  /**
   * From now on, the page payload (plain pages, not compressed) of each object whose type `leave`
   * accepts is left in the file: next() returns it as `filePayload`, without `pages`, and its
   * checksum is the caller's to finish (checkPayload). Only where the source is a regular file
   * (it can skip and read at an offset); otherwise nothing changes. Only for types whose body is
   * a few fixed fields: it is decoded before the checksum is complete.
   */
  leavePayloads(leave: (type: number) => boolean): void {
    if (this.source.skip && this.source.readAt) this.leave = leave;
  }

  /**
   * Reads a payload left in the file and finishes its object's checksum: EBADIMG if the file ends
   * inside it or the checksum does not match. With `into` (payload.length bytes), the payload is
   * read into it; otherwise it goes through a buffer of its own, piece by piece, or, from a file
   * that may be mapped (ImageSource.mapAt), is checked where it is in the page cache, without a copy.
   * With `into` a function, each piece (its bytes, valid only during the call, and their offset in
   * the payload) is given to it as it is checked: before the checksum of the whole is known.
   */
  checkPayload(p: FilePayload, into?: Buffer | ((bytes: Buffer, at: number) => void)): void {
    const source = this.source;
    if (!source.readAt) throw new CptError('EINVAL', 'this image source cannot read at an offset', { object: 'image reader' });
    if (Buffer.isBuffer(into) && into.length !== p.length) throw new CptError('EINVAL', `a ${into.length}-byte buffer for a ${p.length}-byte payload`, { object: 'image reader' });
    const give = (bytes: Buffer, at: number): void => {
      if (typeof into === 'function') into(bytes, at);
      else if (into && bytes.buffer !== into.buffer) into.set(bytes, at);
    };
    const sum = payloadSum(p.kind, p.crcBefore);
    let from = 0;
    if (source.mapAt) {
      for (; from < p.length; from += this.mapChunkBytes) {
        const n = Math.min(this.mapChunkBytes, p.length - from);
        let got: number;
        let mapped = false;
        try {
          got = source.mapAt(p.fileOffset + from, n, (bytes) => {
            mapped = true;
            sum.update(bytes);
            give(bytes, from);
            return bytes.length;
          });
        } catch (e) {
          if (mapped) throw e; // the caller's own failure
          break; // not mapped (no memory for it, ...): the rest is read as from any file
        }
        if (got < n) this.truncatedPayload(p, from + got);
      }
    }
    for (let at = from; at < p.length; at += CRC_PIECE) {
      const n = Math.min(CRC_PIECE, p.length - at);
      const piece = Buffer.isBuffer(into) ? into.subarray(at, at + n) : (this.checkBuffer ??= Buffer.allocUnsafe(CRC_PIECE)).subarray(0, n);
      let got = 0;
      while (got < n) {
        let r: number;
        try {
          r = source.readAt(piece, got, n - got, p.fileOffset + at + got);
        } catch (e) {
          throw asCptError(e, { object: `${this.source.name ?? 'image source'} at file offset ${p.fileOffset + at + got}` });
        }
        if (r <= 0) this.truncatedPayload(p, at + got);
        got += r;
      }
      sum.update(piece);
      give(piece, at);
    }
    this.checkCrc(p, sum.digest());
  }

  /**
   * Payload `p`, checked as checkPayload checks it, in `region` from its offset `at` (a page), where
   * `room` bytes are the caller's (at least the payload, and a page more where it does not start on
   * a page of the file): mapped there, without a copy,
   * from a file that may be mapped (ImageSource.mapOver), read into it otherwise. The bytes stay
   * there, and the address of each is known (region.address), until the caller puts something
   * else there: a place the kernel can copy them from while cptrst goes on.
   */
  loadPayload(p: FilePayload, region: MemoryRegion, at: number, room: number): Buffer {
    const page = this.head?.pageSize ?? 4096;
    if (p.length + (p.fileOffset % page ? page : 0) > room || at + room > region.size) throw new CptError('EINVAL', `${room} bytes of room for a ${p.length}-byte payload`, { object: 'image reader' });
    if (this.source.mapOver) {
      let bytes: Buffer | undefined;
      try {
        bytes = this.source.mapOver(region, at, p.fileOffset, p.length);
      } catch {
        region.clear(at, room); // not mapped (no memory for it, ...): read as from any file
      }
      if (bytes) {
        if (bytes.length < p.length) this.truncatedPayload(p, bytes.length);
        const sum = payloadSum(p.kind, p.crcBefore);
        sum.update(bytes);
        this.checkCrc(p, sum.digest());
        return bytes;
      }
    }
    const into = region.view.subarray(at, at + p.length);
    this.checkPayload(p, into);
    return into;
  }

  private checkCrc(p: FilePayload, crc: number): void {
    if (crc !== p.checksum) {
      throw new ImageError(`checksum mismatch: stored ${p.checksum.toString(16)}, computed ${crc.toString(16)} (the page payload read from the file)`, p.objectOffset + HeaderOffset.checksum, p.desc);
    }
  }

  private truncatedPayload(p: FilePayload, got: number): never {
    throw new ImageError(`truncated: the file ends inside the page payload (${got} of ${p.length} bytes)`, p.objectOffset, p.desc);
  }

  /** The next object, or null after the terminator. */
  next(): ImageRecord | null {
    return this.guard(() => {
      if (!this.head) throw new CptError('EINVAL', 'readHead() must be called before next()', { object: 'image reader' });
      if (this.done) return null;
      const raw = this.readObject(0);
      if (!raw) throw new ImageError('truncated: stream ended before the terminator', this.pos, `object #${this.index}`);
      const h = raw.header;
      if (h.type === ObjectType.HEAD) throw new ImageError('a second HEAD object', raw.start + HeaderOffset.type, raw.desc);
      if (h.tag <= this.lastTag) {
        throw new ImageError(`tag ${h.tag} is not greater than the previous tag ${this.lastTag}`, raw.start + HeaderOffset.tag, raw.desc);
      }
      const ptype = this.tagTypes.get(h.ptag);
      if (ptype === undefined) {
        throw new ImageError(`parent tag ${h.ptag} does not name an earlier object`, raw.start + HeaderOffset.ptag, raw.desc);
      }
      const layout = layoutForType(h.type);
      if (layout && !layout.parents.includes(ptype)) {
        throw new ImageError(
          `wrong nesting: ${layout.name} cannot be a child of ${typeName(ptype)} (tag ${h.ptag}); allowed: ${layout.parents.map(typeName).join(', ')}`,
          raw.start + HeaderOffset.ptag, raw.desc);
      }
      const ctx = { offset: raw.bodyOffset, object: raw.desc, minor: this.minor };
      if (h.type === ObjectType.TERMINATOR) {
        this.checkRecordOnly(raw);
        const t = decodeRecord(Terminator, raw.body, ctx);
        if (t.objectCount !== this.index) {
          throw new ImageError(`terminator counts ${t.objectCount} objects but ${this.index} came before it`, raw.bodyOffset, raw.desc);
        }
        this.accept(raw);
        this.done = true;
        return null;
      }
      const pages = raw.left ? this.padding(raw) : this.payload(raw);
      const rec: ImageRecord = {
        type: h.type,
        name: typeName(h.type),
        tag: h.tag,
        ptag: h.ptag,
        offset: raw.start,
        obj: layout ? decodeRecord(h.type, raw.body, ctx) : undefined,
        flags: h.flags,
        optional: (h.flags & ObjectFlag.OPTIONAL) !== 0,
        pageCount: pages ? pages.length / (this.head.pageSize) : 0,
      };
      if (raw.left) {
        rec.filePayload = raw.left;
        rec.pageCount = raw.left.length / this.head.pageSize;
      } else if (pages) {
        rec.pages = pages;
        // Compressed pages exist only decompressed: no offset in the stream holds them as they are.
        if (raw.header.kind !== ContentKind.RECORD_WITH_COMPRESSED_PAGES) rec.pagesOffset = raw.tailOffset + raw.tail.length - pages.length;
      }
      this.accept(raw);
      return rec;
    });
  }

  /**
   * Says that the caller is done with `pages`, the payload of the object next() returned last:
   * the reader may then read a later object into the same memory instead of allocating (and the
   * kernel zero-filling) a new buffer for each one. The caller must keep no reference to it.
   * Anything else is ignored.
   */
  recycle(pages: Buffer | undefined): void {
    const last = this.lastBuffer;
    if (!pages || !last || pages.buffer !== last.buffer) return;
    if (pages.byteOffset < last.byteOffset || pages.byteOffset + pages.length > last.byteOffset + last.length) return;
    this.lastBuffer = undefined;
    this.spare = last;
  }

  /** Errors are sticky: after a refusal the stream position is meaningless. */
  private guard<T>(fn: () => T): T {
    if (this.failed) throw this.failed;
    try {
      return fn();
    } catch (e) {
      const err = e instanceof CptError ? e
        : new ImageError(`unexpected failure while reading: ${(e as Error)?.message ?? String(e)}`, this.pos, `object #${this.index}`);
      if (err.code !== 'EINVAL') this.failed = err;
      throw err;
    }
  }

  private accept(raw: RawObject): void {
    this.lastTag = raw.header.tag;
    this.tagTypes.set(raw.header.tag, raw.header.type);
    this.index++;
  }

  /** Reads up to buf.length bytes; fewer only at end of stream. */
  private fill(buf: Buffer): number {
    let got = 0;
    while (got < buf.length) {
      let n: number;
      try {
        n = this.source.read(buf, got, buf.length - got);
      } catch (e) {
        throw asCptError(e, { object: `${this.source.name ?? 'image source'} at offset ${this.pos}` });
      }
      if (!Number.isInteger(n) || n < 0 || n > buf.length - got) {
        throw new CptError('EIO', `image source returned ${n} for a ${buf.length - got}-byte read`, { object: this.source.name ?? 'image source' });
      }
      if (n === 0) break;
      got += n;
      this.pos += n;
    }
    return got;
  }

  /** Reads one whole object and verifies its checksum; null at a clean end of stream. */
  private readObject(initialCrc: number): RawObject | null {
    const start = this.pos;
    const where = `object #${this.index} at offset ${start}`;
    const hb = Buffer.alloc(OBJ_HEADER_SIZE);
    const n = this.fill(hb);
    if (n === 0) return null;
    if (n < OBJ_HEADER_SIZE) throw new ImageError(`truncated in an object header (${n} of ${OBJ_HEADER_SIZE} bytes)`, start + n, where);
    const h = decodeHeader(hb);
    const desc = `object #${this.index} (${typeName(h.type)}, tag ${h.tag}) at offset ${start}`;
    if (h.headerLength < OBJ_HEADER_SIZE || h.headerLength > MAX_OBJ_HEADER_SIZE) {
      throw new ImageError(`header length ${h.headerLength} is outside [${OBJ_HEADER_SIZE}, ${MAX_OBJ_HEADER_SIZE}]`, start + HeaderOffset.headerLength, desc);
    }
    if (h.totalLength > BigInt(this.maxObjectBytes)) {
      throw new ImageError(`object length ${h.totalLength} exceeds the ${this.maxObjectBytes}-byte limit`, start + HeaderOffset.totalLength, desc);
    }
    const total = Number(h.totalLength);
    if (total < h.headerLength + h.bodyLength) {
      throw new ImageError(`object length ${total} is less than header ${h.headerLength} + body ${h.bodyLength}`, start + HeaderOffset.totalLength, desc);
    }
    if (h.kind !== ContentKind.RECORD && h.kind !== ContentKind.RECORD_WITH_PAGES && h.kind !== ContentKind.RECORD_WITH_COMPRESSED_PAGES && h.kind !== ContentKind.RECORD_WITH_HASHED_PAGES) {
      throw new ImageError(`unknown content kind ${h.kind}`, start + HeaderOffset.kind, desc);
    }
    const left = this.readLeaving(start, hb, h, total, initialCrc, desc);
    if (left) return left;
    const rest = this.objectBuffer(total - OBJ_HEADER_SIZE);
    // A hashed payload (from the page boundary after the body on) has a checksum of its own, seeded
    // with the CRC of what comes before it; a payload that is not there is refused by payload().
    const prefix = h.kind === ContentKind.RECORD_WITH_HASHED_PAGES && this.head
      ? Math.min(rest.length, alignUp(start + h.headerLength + h.bodyLength, this.head.pageSize) - start - OBJ_HEADER_SIZE) : rest.length;
    let crc = headerCrc(hb, initialCrc);
    let sum: PayloadSum | undefined;
    for (let at = 0; at < rest.length; at += CRC_PIECE) {
      const piece = rest.subarray(at, Math.min(rest.length, at + CRC_PIECE));
      const got = this.fill(piece);
      if (got < piece.length) {
        throw new ImageError(`truncated: object needs ${total} bytes, stream ended after ${OBJ_HEADER_SIZE + at + got}`, this.pos, desc);
      }
      // Checksummed piece by piece as it arrives, while it is in the cache.
      if (at < prefix) crc = crc32(piece.subarray(0, prefix - at), crc);
      if (at + piece.length > prefix) (sum ??= payloadSum(h.kind, crc)).update(piece.subarray(Math.max(0, prefix - at)));
    }
    if (h.kind === ContentKind.RECORD_WITH_HASHED_PAGES) crc = (sum ?? payloadSum(h.kind, crc)).digest();
    if (crc !== h.checksum) {
      throw new ImageError(`checksum mismatch: stored ${h.checksum.toString(16)}, computed ${crc.toString(16)}`, start + HeaderOffset.checksum, desc);
    }
    const bodyStart = h.headerLength - OBJ_HEADER_SIZE; // header bytes from a newer minor are skipped
    const tailStart = bodyStart + h.bodyLength;
    return {
      start, header: h, desc,
      body: rest.subarray(bodyStart, tailStart), bodyOffset: start + h.headerLength,
      tail: rest.subarray(tailStart), tailOffset: start + h.headerLength + h.bodyLength,
    };
  }

  /**
   * An object whose page payload stays in the file (leavePayloads): its header, body and padding
   * are read and checksummed, the payload skipped. Null where this object is read whole: not
   * asked for, not plain pages, or a shape the whole read refuses with its own message.
   */
  private readLeaving(start: number, hb: Buffer, h: ObjectHeader, total: number, initialCrc: number, desc: string): RawObject | null {
    if (!this.leave || !this.head || (h.kind !== ContentKind.RECORD_WITH_PAGES && h.kind !== ContentKind.RECORD_WITH_HASHED_PAGES) || !this.leave(h.type)) return null;
    const pageSize = this.head.pageSize;
    const tailOffset = start + h.headerLength + h.bodyLength;
    const before = alignUp(tailOffset, pageSize) - start - OBJ_HEADER_SIZE; // header rest, body, padding
    const length = total - OBJ_HEADER_SIZE - before;
    if (length <= 0 || length % pageSize !== 0) return null;
    const head = Buffer.allocUnsafe(before);
    const got = this.fill(head);
    if (got < before) throw new ImageError(`truncated: object needs ${total} bytes, stream ended after ${OBJ_HEADER_SIZE + got}`, this.pos, desc);
    const crcBefore = crc32(head, headerCrc(hb, initialCrc));
    let fileOffset: number;
    try {
      fileOffset = this.source.skip!(length);
    } catch (e) {
      throw asCptError(e, { object: `${this.source.name ?? 'image source'} at offset ${this.pos}` });
    }
    this.pos += length;
    this.lastBuffer = undefined;
    const bodyStart = h.headerLength - OBJ_HEADER_SIZE;
    const tailStart = bodyStart + h.bodyLength;
    return {
      start, header: h, desc,
      body: head.subarray(bodyStart, tailStart), bodyOffset: start + h.headerLength,
      tail: head.subarray(tailStart), tailOffset,
      left: { fileOffset, length, crcBefore, checksum: h.checksum, kind: h.kind, objectOffset: start, desc },
    };
  }

  /** The padding before a payload left in the file: zero bytes, as payload() checks them. */
  private padding(raw: RawObject): undefined {
    zeroPadding(raw, raw.tail);
    return undefined;
  }

  /** A buffer for `n` bytes of object: a recycled one when it fits, else a new one (not zero-filled). */
  private objectBuffer(n: number): Buffer {
    this.lastBuffer = undefined;
    if (n < RECYCLE_MIN) return Buffer.allocUnsafe(n);
    let b = this.spare;
    this.spare = undefined;
    if (!b || b.length < n) b = Buffer.allocUnsafe(n);
    this.lastBuffer = b;
    return b.subarray(0, n);
  }

  private checkRecordOnly(raw: RawObject): void {
    if (raw.header.kind !== ContentKind.RECORD) {
      throw new ImageError(`${typeName(raw.header.type)} must be a plain RECORD`, raw.start + HeaderOffset.kind, raw.desc);
    }
    this.payload(raw);
  }

  /** The page payload (RECORD_WITH_PAGES, RECORD_WITH_HASHED_PAGES) after checking padding and alignment; undefined for RECORD. */
  private payload(raw: RawObject): Buffer | undefined {
    if (raw.header.kind === ContentKind.RECORD) {
      if (raw.tail.length) throw new ImageError(`${raw.tail.length} stray bytes after the body of a RECORD object`, raw.tailOffset, raw.desc);
      return undefined;
    }
    const pageSize = (this.head as ImageHead).pageSize;
    if (raw.header.kind === ContentKind.RECORD_WITH_COMPRESSED_PAGES) {
      if (raw.tail.length < COMPRESSED_PAGES_HEADER) {
        throw new ImageError(`compressed page payload of ${raw.tail.length} bytes has no codec header`, raw.tailOffset, raw.desc);
      }
      return decompressPages(raw.tail, pageSize, this.maxObjectBytes, (why, at) => new ImageError(why, raw.tailOffset + at, raw.desc));
    }
    const pad = alignUp(raw.tailOffset, pageSize) - raw.tailOffset;
    const payloadLen = raw.tail.length - pad;
    if (payloadLen < 0 || payloadLen % pageSize !== 0) {
      throw new ImageError(
        `page payload of ${raw.tail.length} bytes after the body does not fill whole ${pageSize}-byte pages from the next page boundary`,
        raw.tailOffset, raw.desc);
    }
    zeroPadding(raw, raw.tail.subarray(0, pad));
    return raw.tail.subarray(pad);
  }
}
