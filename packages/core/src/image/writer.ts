/**
 * Writes an image as one sequential stream (never seeks), so the sink may be a file, a pipe or
 * a socket. Layout: preamble (magic, major, minor, reserved), HEAD object (tag 1), objects,
 * TERMINATOR. See framing.ts for the object header and where page payloads go.
 */
import { asCptError, CptError } from '../errors';
import { CapturedRecord, captureRecord, encodeCaptured, encodeRecord, encodedLength } from './codec';
import { alignUp, crc32, encodeHeader, HASH_PAGES_AFTER, hashedPagesAvailable, headerCrc, HeaderOffset, isValidPageSize, OBJ_HEADER_SIZE, payloadSum } from './framing';
import { CompressionName, checkCompression, compressPages } from './compress';
import { ImageHead, PagesFollow, Terminator } from './head';
import { PayloadFile } from './payload-file';
import { layoutOf, typeName } from './layout';
import { ContentKind, DEFAULT_MAX_OBJECT_BYTES, FORMAT_MAJOR, FORMAT_MINOR, HEAD_TAG, MAGIC, ObjectFlag, ObjectType, PREAMBLE_SIZE } from './types';
import { WriteQueue } from './write-queue';

/** Where image bytes go. write() must consume the whole buffer before returning (it is reused). */
export interface ImageSink {
  write(buf: Buffer): void;
  /**
   * Optional: writes all of `bufs`, in order, without keeping the caller waiting (off the main
   * thread), so that the writer reads and checksums the next page payloads meanwhile. The writer
   * never has two calls outstanding, nor a write() during one, and leaves `bufs` untouched until it
   * settles.
   */
  writeAsync?(bufs: Buffer[]): Promise<void>;
}

export interface ImageWriterOptions {
  /** Small writes are coalesced up to this many bytes (default 1 MiB). */
  bufferSize?: number;
  /** Refuse objects a reader with the same limit would refuse (default DEFAULT_MAX_OBJECT_BYTES). */
  maxObjectBytes?: number;
  /**
   * Compress page payloads (ContentKind.RECORD_WITH_COMPRESSED_PAGES, compress.ts). A payload that
   * would not shrink is stored plain; readers decompress transparently.
   */
  compress?: CompressionName;
  /**
   * The sink writes this regular file at its position: deferred payloads that can be put straight
   * into the file (PayloadFileSource) go there in place, where the file allows (payload-file.ts).
   * Not with compression.
   */
  file?: number;
  /**
   * Bytes of plain page payloads checksummed with CRC-32 before the rest take XXH3
   * (RECORD_WITH_HASHED_PAGES; default HASH_PAGES_AFTER): 0 hashes every one, Infinity none.
   */
  hashPagesAfter?: number;
}

/** Fills the payload of a deferred object (writeWithPagesLater) when the object is written. */
export type PayloadSource = (buf: Buffer) => void;

/**
 * Optional beside a PayloadSource: puts the payload's `bytes` into the file `fd` at `position`
 * without passing them through cptrst (splice from a pipe); returns how many it put there, from
 * the start. Fewer (even 0) where it could not: the writer then reads the payload with the
 * PayloadSource and writes what is missing.
 */
export type PayloadFileSource = (fd: number, position: number, bytes: number) => number;

/**
 * An object with a payload, framed only when the deferred objects are written out: its padding
 * depends on its stream offset, which compressed payloads before it change.
 */
interface DeferredObject extends Framed, WithPayload {}

/** What frames an object: its type, tag, parent's tag and flags. */
interface Framed {
  type: number;
  tag: number;
  ptag: number;
  flags: number;
}

/** An object's body and the payload that follows it: `bytes` long, written by `fill` (or `toFile`). */
interface WithPayload {
  body: Buffer;
  bytes: number;
  fill: PayloadSource;
  toFile?: PayloadFileSource;
}

/**
 * A record without payload written while deferring: its values captured, encoded and framed only
 * when the deferred objects are written out (a record's bytes do not depend on its offset), so
 * that a checkpoint that lets the process run does not encode its records while it is frozen.
 */
interface DeferredRecord extends Framed {
  record: CapturedRecord;
  /** Its body, once encoded (for offset while deferring). */
  body?: Buffer;
}

/**
 * A record encoded only when the deferred objects are written out (writeLater): its fields may
 * be filled meanwhile (by the payload sources before it), its encoded length may not change.
 */
interface LateRecord extends Framed {
  late: object;
  length: number;
}

type Deferred = Buffer | DeferredObject | DeferredRecord | LateRecord;

/** An object of the pages section (writeWithPagesAtEnd): framed and given its tag by writeTail(). */
interface TailObject extends Omit<Framed, 'tag'>, WithPayload {
  key: bigint;
  rank: number;
}

/** An object put in place whose header waits for its checksum (ImageWriter.settle): stream offsets. */
interface InPlaceObject {
  start: number;
  header: Buffer;
  body: Buffer;
  pad: number;
  /** Where its payload starts. */
  at: number;
  bytes: number;
}

/**
 * Payloads put in place are checksummed from one mapping of this many bytes or a little more:
 * mapping costs per page and per call (the page table entries, then a TLB flush when unmapped),
 * and a mapping per 2 MiB object measured slower than one per 32 MiB (bench/README.md).
 */
const IN_PLACE_WINDOW = 32 * 1024 * 1024;

/** Chunks at least this big bypass the coalescing buffer (no copy). */
const DIRECT_WRITE = 64 * 1024;

function invalid(message: string): CptError {
  return new CptError('EINVAL', message, { object: 'image writer' });
}

export class ImageWriter {
  private readonly buf: Buffer;
  private used = 0;
  private flushed = 0;
  private readonly maxObjectBytes: number;
  private readonly compression?: CompressionName;
  private state: 'new' | 'open' | 'closed' | 'broken' = 'new';
  private pageSize = 0;
  private nextTag = HEAD_TAG;
  private count = 0;
  /** Type of every tag written, to check parents the way the reader will. */
  private readonly tagTypes = new Map<number, number>();
  /** While deferring: everything since deferWrites(), in stream order, kept in memory. */
  private queue?: Deferred[];
  /** The payload buffer of deferred objects, reused. */
  private payloadBuf?: Buffer;
  /** The objects of the pages section, written by writeTail(). */
  private tail: TailObject[] = [];
  /** While page payloads are written (overlapped()): the writes that go on meanwhile. */
  private writes?: WriteQueue;
  /** The image file, when payloads may go into it in place (ImageWriterOptions.file). */
  private readonly file?: number;
  private inPlace = 0;
  /** Bytes of plain page payloads framed so far (the checksum of each takes XXH3 past HASH_PAGES_AFTER). */
  private payloadBytes = 0;
  private readonly hashPagesAfter: number;

  constructor(private readonly sink: ImageSink, opts: ImageWriterOptions = {}) {
    this.buf = Buffer.allocUnsafe(opts.bufferSize ?? 1024 * 1024);
    this.maxObjectBytes = opts.maxObjectBytes ?? DEFAULT_MAX_OBJECT_BYTES;
    if (opts.compress) {
      checkCompression(opts.compress);
      this.compression = opts.compress;
    }
    if (!this.compression) this.file = opts.file;
    this.hashPagesAfter = opts.hashPagesAfter ?? HASH_PAGES_AFTER;
  }

  /** How many page payloads went into the image file in place (PayloadFileSource), so far. */
  get payloadsInPlace(): number {
    return this.inPlace;
  }

  /** Whether page payloads are compressed (then they have no place in the file to be read from later). */
  get compresses(): boolean {
    return this.compression !== undefined;
  }

  /**
   * Bytes written so far (buffered ones included): the stream offset of the next object. While
   * deferring with compression, deferred payloads count at their plain size (an upper bound).
   */
  get offset(): number {
    return this.flushed + this.used + (this.queue ? this.queuedBytes(this.queue) : 0);
  }

  /** The bytes of what is deferred, as if written now (plain: an upper bound with compression). */
  private queuedBytes(q: Deferred[]): number {
    const start = this.flushed + this.used;
    let at = start;
    for (const e of q) {
      if (Buffer.isBuffer(e)) at += e.length;
      else if ('record' in e) at += OBJ_HEADER_SIZE + this.bodyOf(e).length;
      else if ('late' in e) at += OBJ_HEADER_SIZE + e.length;
      else at = alignUp(at + OBJ_HEADER_SIZE + e.body.length, this.pageSize) + e.bytes;
    }
    return at - start;
  }

  private bodyOf(e: DeferredRecord): Buffer {
    return (e.body ??= encodeCaptured(e.record));
  }

  /**
   * From now on objects are kept in memory instead of going to the sink, and the payloads of
   * writeWithPagesLater are read only by flushDeferred(): the stream comes out byte for byte as
   * if every object had been written at once. For a checkpoint that lets the process run before
   * its pages are written (they come from a copy-on-write snapshot).
   */
  deferWrites(): void {
    this.requireOpen();
    this.flush();
    this.queue ??= [];
  }

  /** Whether objects are being deferred (deferWrites() and no flushDeferred() yet). */
  get deferring(): boolean {
    return this.queue !== undefined;
  }

  /**
   * Writes a record with a payload of `bytes` (a whole number of pages) that `fill` provides when
   * the object is finally written, by flushDeferred(); the tag is given now. Only while deferring.
   * With `toFile`, the payload may go straight into the image file instead (ImageWriterOptions.file).
   */
  writeWithPagesLater(obj: object, bytes: number, fill: PayloadSource, opts: { ptag?: number; toFile?: PayloadFileSource } = {}): number {
    const { type, ptag, flags } = this.check(obj, opts.ptag);
    if (!this.queue) throw invalid('writeWithPagesLater needs deferWrites() first');
    if (!Number.isInteger(bytes) || bytes <= 0 || bytes % this.pageSize !== 0) {
      throw invalid(`${typeName(type)}: payload of ${bytes} bytes is not a multiple of the page size ${this.pageSize}`);
    }
    return this.deferObject(type, encodeRecord(obj), bytes, fill, ptag, flags, opts.toFile);
  }

  /**
   * Writes a record object that, while deferring, is encoded only when flushDeferred() reaches it:
   * after the payload sources of the objects before it have run (which may fill its fields, e.g.
   * the hashes of those pages). Its encoded length must stay what it is now. Not deferring: written now.
   */
  writeLater(obj: object, opts: { ptag?: number } = {}): number {
    if (!this.queue) return this.write(obj, opts);
    const { type, ptag, flags } = this.check(obj, opts.ptag);
    // Its length only (a record of page hashes holds 2 MiB per GiB: encoding it here, while the
    // tree is frozen, only to learn that, cost a copy and garbage).
    const length = encodedLength(obj);
    this.checkSize(type, OBJ_HEADER_SIZE + length);
    const tag = this.takeTag(type);
    this.queue.push({ late: obj, type, tag, ptag, flags, length });
    return tag;
  }

  /** A late record (writeLater), encoded and framed now. */
  private emitLate(e: LateRecord): void {
    const body = encodeRecord(e.late, e.length);
    if (body.length !== e.length) throw invalid(`${typeName(e.type)}: ${body.length} bytes encoded late, ${e.length} announced`);
    this.emitFramed(this.header(e.type, ContentKind.RECORD, e.tag, body, 0, 0, e.ptag, e.flags), body, [], [], 0);
  }

  /** Queues an object whose payload `fill` gives at flush time; returns its tag. */
  private deferObject(type: number, body: Buffer, bytes: number, fill: PayloadSource, ptag: number, flags: number, toFile?: PayloadFileSource): number {
    const q = this.queue as Deferred[];
    // Refused now if it would be too big plain, padding aside (compressed, it can only be
    // smaller); its padding, which depends on the records deferred before it, is counted when it
    // is written out, which refuses it then if that makes it too big.
    this.checkSize(type, OBJ_HEADER_SIZE + body.length + bytes);
    const tag = this.takeTag(type);
    q.push({ type, tag, ptag, flags, body, bytes, fill, toFile });
    return tag;
  }

  /**
   * Writes out everything deferred, in order, reading each deferred payload now; `after(bytes)`
   * runs after each payload (a safe point for the caller). Then flushes.
   */
  async flushDeferred(after?: (bytes: number) => void | Promise<void>): Promise<void> {
    const q = this.queue;
    if (!q) return;
    this.queue = undefined;
    const file = this.payloadFile(q);
    if (file) {
      try {
        await this.flushInPlace(q, file, after);
      } catch (e) {
        this.state = 'broken';
        throw e;
      } finally {
        file.close();
      }
      return;
    }
    await this.overlapped(async () => {
      for (const queued of q) {
        const e = this.emitWithoutPayload(queued);
        if (!e) continue;
        const payload = await this.payloadBuffer(e.bytes);
        e.fill(payload);
        this.emitPages(e.type, e.tag, e.body, [payload], e.bytes, e.ptag, e.flags);
        await after?.(e.bytes);
      }
    });
  }

  /** Writes out a queued piece that has no payload (bytes, a captured or a late record); an object with pages is returned instead. */
  private emitWithoutPayload(e: Deferred): DeferredObject | undefined {
    if (Buffer.isBuffer(e)) this.append(e);
    else if ('record' in e) this.emitRecord(e);
    else if ('late' in e) this.emitLate(e);
    else return e;
    return undefined;
  }

  /**
   * The image file, if any deferred payload can go into it in place and the file allows it
   * (PayloadFile.open); the bytes before are flushed to it first.
   */
  private payloadFile(q: Deferred[]): PayloadFile | undefined {
    if (this.file === undefined || !q.some((e) => !Buffer.isBuffer(e) && 'toFile' in e && e.toFile)) return undefined;
    this.flush();
    return PayloadFile.open(this.file, this.offset, 'image file');
  }

  /**
   * flushDeferred() into the image file: the payloads that can go there in place do, the others
   * are read and written as usual; everything on this thread, in stream order. The file's
   * position goes on past each in-place object (its header, body, padding and payload); the
   * header, which holds the checksum, is written at its place once the payloads of up to
   * IN_PLACE_WINDOW bytes are in and checksummed from one mapping (settle()).
   */
  private async flushInPlace(q: Deferred[], file: PayloadFile, after?: (bytes: number) => void | Promise<void>): Promise<void> {
    const waiting: InPlaceObject[] = [];
    for (const queued of q) {
      const e = this.emitWithoutPayload(queued);
      if (!e) continue;
      if (e.toFile) {
        waiting.push(this.emitInPlace(e, file));
        const first = waiting[0];
        if (first.at + IN_PLACE_WINDOW <= this.offset) this.settle(waiting, file);
      } else {
        const payload = await this.payloadBuffer(e.bytes);
        e.fill(payload);
        this.emitPages(e.type, e.tag, e.body, [payload], e.bytes, e.ptag, e.flags);
      }
      await after?.(e.bytes);
    }
    this.flush();
    this.settle(waiting, file);
  }

  /**
   * One object whose payload goes into the file in place: the payload at its offset (what its
   * source could not put there read and written at its place); the file's position moves past
   * the whole object, whose header settle() writes.
   */
  private emitInPlace(e: DeferredObject, file: PayloadFile): InPlaceObject {
    const start = this.offset;
    const bodyEnd = start + OBJ_HEADER_SIZE + e.body.length;
    const pad = alignUp(bodyEnd, this.pageSize) - bodyEnd;
    const at = bodyEnd + pad;
    const header = this.header(e.type, this.pagesKind(e.bytes), e.tag, e.body, pad, e.bytes, e.ptag, e.flags);
    const put = e.toFile!(file.fd, file.position(at), e.bytes);
    if (put < e.bytes) {
      if (!this.payloadBuf || this.payloadBuf.length < e.bytes) this.payloadBuf = Buffer.allocUnsafe(e.bytes);
      const payload = this.payloadBuf.subarray(0, e.bytes);
      e.fill(payload);
      file.writeAt(payload.subarray(put), at + put);
    } else this.inPlace++;
    this.flush();
    file.skip(at + e.bytes - start);
    this.flushed += at + e.bytes - start;
    return { start, header, body: e.body, pad, at, bytes: e.bytes };
  }

  /**
   * Checksums the payloads of the objects put in place since the last call, from one read-only
   * mapping of the file from the first to the end of the last (holes where headers go read as
   * zeros, and every byte is inside the file, whose end the last payload made), and writes each
   * object's header, body and padding at its place.
   */
  private settle(waiting: InPlaceObject[], file: PayloadFile): void {
    if (!waiting.length) return;
    const from = waiting[0].at;
    const to = waiting[waiting.length - 1].at + waiting[waiting.length - 1].bytes;
    file.mapped(from, to - from, (bytes) => {
      for (const o of waiting) {
        const padding = Buffer.alloc(o.pad);
        const sum = payloadSum(o.header.readUInt16LE(HeaderOffset.kind), crc32(padding, crc32(o.body, headerCrc(o.header, 0))));
        sum.update(bytes.subarray(o.at - from, o.at - from + o.bytes));
        o.header.writeUInt32LE(sum.digest(), HeaderOffset.checksum);
        file.writeAt(Buffer.concat([o.header, o.body, padding]), o.start);
      }
    });
    waiting.length = 0;
  }

  /**
   * An object with a payload of `bytes` that goes to the pages section at the end of the image
   * (writeTail()), which `fill` provides then: after every other record, so that a reader can let
   * the processes run before it reads them (a lazy restart). `key` is listed in the section's
   * PagesFollow record (for PAGES: the address); lower `rank`s come first, then the order of calls.
   */
  writeWithPagesAtEnd(obj: object, bytes: number, fill: PayloadSource, opts: { ptag: number; key: bigint; rank: number; toFile?: PayloadFileSource }): void {
    const { type, ptag, flags } = this.check(obj, opts.ptag);
    if (!Number.isInteger(bytes) || bytes <= 0 || bytes % this.pageSize !== 0) {
      throw invalid(`${typeName(type)}: payload of ${bytes} bytes is not a multiple of the page size ${this.pageSize}`);
    }
    const body = encodeRecord(obj);
    this.checkSize(type, alignUp(OBJ_HEADER_SIZE + body.length, this.pageSize) + bytes);
    this.tail.push({ type, ptag, flags, body, bytes, fill, toFile: opts.toFile, key: opts.key, rank: opts.rank });
  }

  /**
   * Writes the pages section, if any object was given to writeWithPagesAtEnd(): its PagesFollow
   * record, then each object, its payload read now (while deferring: queued, read by
   * flushDeferred()); `after(bytes)` runs after each payload. Before writeTerminator().
   */
  async writeTail(after?: (bytes: number) => void | Promise<void>): Promise<void> {
    if (!this.tail.length) return;
    const tail = this.tail.sort((a, b) => a.rank - b.rank);
    this.tail = [];
    const marker = new PagesFollow();
    marker.entries = tail.flatMap((e) => [BigInt(e.ptag), e.key, BigInt(e.bytes / this.pageSize)]);
    this.write(marker);
    if (this.queue) {
      for (const e of tail) this.deferObject(e.type, e.body, e.bytes, e.fill, e.ptag, e.flags, e.toFile);
      return;
    }
    await this.overlapped(async () => {
      for (const e of tail) {
        const tag = this.takeTag(e.type);
        const payload = await this.payloadBuffer(e.bytes);
        e.fill(payload);
        this.emitPages(e.type, tag, e.body, [payload], e.bytes, e.ptag, e.flags);
        await after?.(e.bytes);
      }
    });
  }

  /**
   * Runs `fn`, which writes objects with page payloads, with the sink writing meanwhile where it
   * can (ImageSink.writeAsync), and flushes; returns once every byte is written. On failure what
   * waits to be written is dropped and the write in flight waited for: nothing reaches the sink
   * after this settles (a caller may cut the image off then).
   */
  private async overlapped(fn: () => Promise<void>): Promise<void> {
    const sink = this.sink;
    if (!sink.writeAsync || this.writes) {
      await fn();
      this.flush();
      return;
    }
    this.flush();
    const writes = new WriteQueue((bufs) => sink.writeAsync!(bufs));
    this.writes = writes;
    try {
      await fn();
      this.flush();
      await writes.drain();
    } catch (e) {
      await writes.abandon();
      this.state = 'broken';
      throw e;
    } finally {
      this.writes = undefined;
    }
  }

  /** A buffer for a payload of `bytes`, which the caller fills and writes before asking for the next. */
  private async payloadBuffer(bytes: number): Promise<Buffer> {
    if (this.writes) return this.writes.buffer(bytes);
    if (!this.payloadBuf || this.payloadBuf.length < bytes) this.payloadBuf = Buffer.allocUnsafe(bytes);
    return this.payloadBuf.subarray(0, bytes);
  }

  writeHead(head: ImageHead): void {
    if (this.state !== 'new') throw invalid('the head must be written first, and once');
    if (!(head instanceof ImageHead)) throw invalid('writeHead needs an ImageHead');
    if (!isValidPageSize(head.pageSize)) throw invalid(`pageSize ${head.pageSize} is not a power of two in [4096, 65536]`);
    const preamble = Buffer.alloc(PREAMBLE_SIZE);
    MAGIC.copy(preamble, 0);
    preamble.writeUInt16LE(FORMAT_MAJOR, 8);
    preamble.writeUInt16LE(FORMAT_MINOR, 10);
    this.state = 'open';
    this.pageSize = head.pageSize;
    this.append(preamble);
    this.emit(ObjectType.HEAD, ContentKind.RECORD, encodeRecord(head), [], 0, crc32(preamble));
  }

  /** Writes a record object; its type comes from the object's class. Returns its tag. */
  write(obj: object, opts: { ptag?: number } = {}): number {
    const { type, ptag, flags } = this.check(obj, opts.ptag);
    if (this.queue) {
      // Deferred: its values captured now, encoded when written out (emitRecord).
      const record = captureRecord(obj);
      const tag = this.takeTag(type);
      this.queue.push({ type, tag, ptag, flags, record });
      return tag;
    }
    return this.emit(type, ContentKind.RECORD, encodeRecord(obj), [], ptag, 0, flags);
  }

  /** A deferred record, framed and written out with the tag it was given. */
  private emitRecord(e: DeferredRecord): void {
    const body = this.bodyOf(e);
    this.emitFramed(this.header(e.type, ContentKind.RECORD, e.tag, body, 0, 0, e.ptag, e.flags), body, [], [], 0);
  }

  /** Writes a record followed by a page-aligned payload (a whole number of pages). Returns its tag. */
  writeWithPages(obj: object, pages: Buffer | Buffer[], opts: { ptag?: number } = {}): number {
    const { type, ptag, flags } = this.check(obj, opts.ptag);
    return this.emit(type, ContentKind.RECORD_WITH_PAGES, encodeRecord(obj), Array.isArray(pages) ? pages : [pages], ptag, 0, flags);
  }

  /**
   * Writes an object from raw parts with no layout or parent checks. For tools that copy
   * objects they do not understand (keeping their `flags`), and for tests that need malformed
   * images. `flags` are the header's ObjectFlag bits (default 0).
   */
  writeRaw(type: number, body: Buffer, opts: { ptag?: number; kind?: ContentKind; pages?: Buffer[]; flags?: number } = {}): number {
    this.requireOpen();
    const flags = opts.flags ?? 0;
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff) throw invalid(`header flags ${flags} are not a u16`);
    return this.emit(type, opts.kind ?? (opts.pages ? ContentKind.RECORD_WITH_PAGES : ContentKind.RECORD), body, opts.pages ?? [], opts.ptag ?? HEAD_TAG, 0, flags);
  }

  /** Ends the image and flushes. Nothing can be written after it. */
  writeTerminator(): void {
    this.requireOpen();
    if (this.tail.length) throw invalid('objects for the pages section wait: writeTail() comes before the terminator');
    const t = new Terminator();
    t.objectCount = this.count;
    this.emit(ObjectType.TERMINATOR, ContentKind.RECORD, encodeRecord(t), [], HEAD_TAG);
    if (!this.queue) this.flush(); // deferred objects go out with flushDeferred()
    this.state = 'closed';
  }

  /** Pushes buffered bytes to the sink. */
  flush(): void {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    // Written later: a copy, as the buffer is reused.
    this.sinkWrite(this.writes ? Buffer.from(this.buf.subarray(0, n)) : this.buf.subarray(0, n));
  }

  private requireOpen(): void {
    if (this.state === 'new') throw invalid('writeHead() must come first');
    if (this.state === 'closed') throw invalid('the image is already terminated');
    if (this.state === 'broken') throw invalid('an earlier write to the sink failed');
  }

  private check(obj: object, ptag: number | undefined): { type: number; ptag: number; flags: number } {
    this.requireOpen();
    const layout = layoutOf(obj?.constructor);
    if (!layout || layout.type === undefined) throw invalid(`${obj?.constructor?.name} is not an @objectType class`);
    if (layout.type === ObjectType.HEAD || layout.type === ObjectType.TERMINATOR) {
      throw invalid(`use writeHead()/writeTerminator() for ${layout.name}`);
    }
    const p = ptag ?? HEAD_TAG;
    const ptype = this.tagTypes.get(p);
    if (ptype === undefined) throw invalid(`${layout.name}: parent tag ${p} has not been written`);
    if (!layout.parents.includes(ptype)) {
      throw invalid(`${layout.name} cannot be a child of ${typeName(ptype)} (tag ${p}); allowed parents: ${layout.parents.map(typeName).join(', ')}`);
    }
    return { type: layout.type, ptag: p, flags: layout.optional ? ObjectFlag.OPTIONAL : 0 };
  }

  private emit(type: number, kind: ContentKind, body: Buffer, pages: Buffer[], ptag: number, initialCrc = 0, flags = 0): number {
    let payload = 0;
    const paged = kind === ContentKind.RECORD_WITH_PAGES || kind === ContentKind.RECORD_WITH_HASHED_PAGES;
    if (paged) {
      for (const p of pages) {
        if (!Buffer.isBuffer(p)) throw invalid(`${typeName(type)}: pages must be Buffers`);
        payload += p.length;
      }
      if (payload % this.pageSize !== 0) {
        throw invalid(`${typeName(type)}: payload of ${payload} bytes is not a multiple of the page size ${this.pageSize}`);
      }
    } else if (pages.length) {
      throw invalid(`${typeName(type)}: a RECORD object has no pages`);
    }
    if (paged) {
      if (this.queue) {
        // Copied: callers reuse their buffers.
        const copy = Buffer.concat(pages, payload);
        return this.deferObject(type, body, payload, (buf) => copy.copy(buf), ptag, flags);
      }
      const bodyEnd = this.offset + OBJ_HEADER_SIZE + body.length;
      this.checkSize(type, alignUp(bodyEnd, this.pageSize) - this.offset + payload);
      const tag = this.takeTag(type);
      // writeRaw may ask for the hashed kind; the writer's own choice otherwise.
      this.emitPages(type, tag, body, pages, payload, ptag, flags, kind === ContentKind.RECORD_WITH_HASHED_PAGES ? kind : undefined);
      return tag;
    }
    this.checkSize(type, OBJ_HEADER_SIZE + body.length);
    const tag = this.takeTag(type);
    this.emitFramed(this.header(type, kind, tag, body, 0, 0, ptag, flags), body, [], [], initialCrc);
    return tag;
  }

  /**
   * Writes an object with a page payload that has its tag: compressed when the writer compresses
   * and the pages shrink, else plain (page aligned).
   */
  private emitPages(type: number, tag: number, body: Buffer, pages: Buffer[], payload: number, ptag: number, flags: number, kind?: ContentKind): void {
    if (this.compression && payload > 0) {
      const z = compressPages(pages.length === 1 ? pages[0] : Buffer.concat(pages, payload));
      if (z) {
        this.emitFramed(this.header(type, ContentKind.RECORD_WITH_COMPRESSED_PAGES, tag, body, 0, z.length, ptag, flags), body, [], [z], 0);
        return;
      }
    }
    const bodyEnd = this.offset + OBJ_HEADER_SIZE + body.length;
    const pad = alignUp(bodyEnd, this.pageSize) - bodyEnd;
    const padding = pad ? Buffer.alloc(pad) : Buffer.alloc(0);
    this.emitFramed(this.header(type, kind ?? this.pagesKind(payload), tag, body, pad, payload, ptag, flags), body, [padding], pages, 0);
  }

  /**
   * The content kind of a plain page payload of `bytes`: CRC-32 (RECORD_WITH_PAGES) for the first
   * hashPagesAfter bytes of an image's payloads, XXH3 (RECORD_WITH_HASHED_PAGES) from there on
   * where it is available: a small image never loads it, a large one checksums its pages at about
   * twice CRC-32's speed.
   */
  private pagesKind(bytes: number): ContentKind {
    const hashed = this.payloadBytes >= this.hashPagesAfter && hashedPagesAvailable();
    this.payloadBytes += bytes;
    return hashed ? ContentKind.RECORD_WITH_HASHED_PAGES : ContentKind.RECORD_WITH_PAGES;
  }

  /** Checksums and appends one object whose header has checksum 0 (its kind says how: payloadSum). */
  private emitFramed(header: Buffer, body: Buffer, padding: Buffer[], pages: Buffer[], initialCrc: number): void {
    let crc = crc32(body, headerCrc(header, initialCrc));
    for (const p of padding) crc = crc32(p, crc);
    const sum = payloadSum(header.readUInt16LE(HeaderOffset.kind), crc);
    for (const p of pages) sum.update(p);
    header.writeUInt32LE(sum.digest(), HeaderOffset.checksum);
    this.append(header);
    this.append(body);
    for (const p of padding) this.append(p);
    for (const p of pages) this.append(p);
  }

  private checkSize(type: number, total: number): void {
    if (total > this.maxObjectBytes) {
      throw new CptError('E2BIG', `${typeName(type)} object of ${total} bytes exceeds the ${this.maxObjectBytes}-byte limit; split it`, { object: 'image writer' });
    }
  }

  /** The next tag, given to an object of `type`. */
  private takeTag(type: number): number {
    if (this.nextTag > 0xffffffff) throw invalid('more than 2^32-1 objects');
    const tag = this.nextTag++;
    this.count++;
    this.tagTypes.set(tag, type);
    return tag;
  }

  /** An object header with checksum 0. */
  private header(type: number, kind: ContentKind, tag: number, body: Buffer, pad: number, payload: number, ptag: number, flags: number): Buffer {
    const total = OBJ_HEADER_SIZE + body.length + pad + payload;
    this.checkSize(type, total);
    return encodeHeader({
      totalLength: BigInt(total), headerLength: OBJ_HEADER_SIZE, type, kind, flags, tag, ptag, bodyLength: body.length, checksum: 0,
    });
  }

  private append(b: Buffer): void {
    if (b.length === 0) return;
    if (this.queue) {
      // Deferred: kept (copied: callers reuse their buffers) until flushDeferred().
      this.queue.push(Buffer.from(b));
      return;
    }
    if (b.length >= DIRECT_WRITE || b.length > this.buf.length) {
      this.flush();
      this.sinkWrite(b);
      return;
    }
    if (this.used + b.length > this.buf.length) this.flush();
    b.copy(this.buf, this.used);
    this.used += b.length;
  }

  /** To the sink: now, or queued (overlapped()) for a buffer the caller leaves untouched until written. */
  private sinkWrite(b: Buffer): void {
    try {
      if (this.writes) this.writes.push(b);
      else this.sink.write(b);
    } catch (e) {
      this.state = 'broken';
      throw asCptError(e, { object: 'image sink' });
    }
    this.flushed += b.length;
  }
}
