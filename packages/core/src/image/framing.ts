/**
 * The common object header. Every object, the head included, starts with these 32 bytes
 * (little-endian):
 *
 *   0  totalLength  u64  header + body + padding + payload
 *   8  headerLength u16  32 in format 1.0; a reader skips header bytes it does not know
 *  10  type         u16  ObjectType
 *  12  kind         u16  ContentKind
 *  14  flags        u16  ObjectFlag bits: bit 0 OPTIONAL (a reader that does not know the type
 *                        may skip the object; without it, an unknown type is refused at restart);
 *                        the other bits are reserved, written 0 and ignored
 *  16  tag          u32  assigned by the writer: 1 for the head, then strictly increasing
 *  20  ptag         u32  tag of the parent object; 0 only for the head (top-level objects use 1)
 *  24  bodyLength   u32  length of the record after the header
 *  28  checksum     u32  CRC32 over the whole object (header with this field zeroed, body,
 *                        padding, payload); for the head it continues the CRC of the preamble
 *
 * Where the page payload is: nothing is stored for it. Both sides know the stream offset of
 * every object (the stream is sequential from the magic at offset 0), so the payload starts at
 * the first multiple of the head's pageSize at or after the end of the body, the gap is zero
 * padding, and the payload runs to the end of the object (totalLength), a whole number of pages.
 * A RECORD object ends exactly at the end of its body.
 */
import * as zlib from 'zlib';
import { MAX_PAGE_SIZE, MIN_PAGE_SIZE } from './types';

export const OBJ_HEADER_SIZE = 32;
/** Bound on headerLength, so a corrupt one cannot ask for an unbounded header. */
export const MAX_OBJ_HEADER_SIZE = 4096;

export const HeaderOffset = {
  totalLength: 0,
  headerLength: 8,
  type: 10,
  kind: 12,
  flags: 14,
  tag: 16,
  ptag: 20,
  bodyLength: 24,
  checksum: 28,
} as const;

export interface ObjectHeader {
  totalLength: bigint;
  headerLength: number;
  type: number;
  kind: number;
  flags: number;
  tag: number;
  ptag: number;
  bodyLength: number;
  checksum: number;
}

export function encodeHeader(h: ObjectHeader): Buffer {
  const b = Buffer.alloc(OBJ_HEADER_SIZE);
  b.writeBigUInt64LE(h.totalLength, HeaderOffset.totalLength);
  b.writeUInt16LE(h.headerLength, HeaderOffset.headerLength);
  b.writeUInt16LE(h.type, HeaderOffset.type);
  b.writeUInt16LE(h.kind, HeaderOffset.kind);
  b.writeUInt16LE(h.flags, HeaderOffset.flags);
  b.writeUInt32LE(h.tag, HeaderOffset.tag);
  b.writeUInt32LE(h.ptag, HeaderOffset.ptag);
  b.writeUInt32LE(h.bodyLength, HeaderOffset.bodyLength);
  b.writeUInt32LE(h.checksum, HeaderOffset.checksum);
  return b;
}

export function decodeHeader(b: Buffer): ObjectHeader {
  return {
    totalLength: b.readBigUInt64LE(HeaderOffset.totalLength),
    headerLength: b.readUInt16LE(HeaderOffset.headerLength),
    type: b.readUInt16LE(HeaderOffset.type),
    kind: b.readUInt16LE(HeaderOffset.kind),
    flags: b.readUInt16LE(HeaderOffset.flags),
    tag: b.readUInt32LE(HeaderOffset.tag),
    ptag: b.readUInt32LE(HeaderOffset.ptag),
    bodyLength: b.readUInt32LE(HeaderOffset.bodyLength),
    checksum: b.readUInt32LE(HeaderOffset.checksum),
  };
}

/** CRC32 of the header with the checksum field taken as zero, continuing from `initial`. */
export function headerCrc(header: Buffer, initial: number): number {
  const zeroed = Buffer.from(header.subarray(0, OBJ_HEADER_SIZE));
  zeroed.writeUInt32LE(0, HeaderOffset.checksum);
  return crc32(zeroed, initial);
}

/**
 * CRC-32 (the zlib/gzip one) of `data`, continuing from `value`: the same numbers as
 * zlib.crc32, faster on page payloads. Node's bundled zlib does about 2.5-5 GB/s on the machine
 * of bench/README.md (200-400 ms per GiB, as much as copying the pages in and out together).
 * @node-rs/crc32 (crc32fast, with carry-less multiplication: PCLMULQDQ) does 8-14 GB/s there,
 * as fast as libdeflate's; it is an npm package with prebuilt binaries (per-platform optional
 * dependencies: no compiler, no install script). It is loaded once zlib has done FAST_CRC_AFTER
 * bytes (loading it takes several ms), checked against zlib then, and only used for buffers of at
 * least FAST_CRC_MIN bytes (a native call costs about 1 us).
 * Without it, or with CPTRST_CRC=zlib in the environment, zlib does all of it: same result.
 */
export function crc32(data: Buffer, value = 0): number {
  if (data.length >= FAST_CRC_MIN) {
    // Loading the addon costs several ms, about what zlib takes for FAST_CRC_AFTER bytes: a small
    // image (an idle process) never needs it.
    if (fastCrc === undefined && zlibBytes < FAST_CRC_AFTER) {
      zlibBytes += data.length;
      return zlib.crc32(data, value);
    }
    const f = fastCrc === undefined ? loadFastCrc() : fastCrc;
    if (f) return f(data, value >>> 0) >>> 0;
  }
  return zlib.crc32(data, value);
}

/**
 * Which implementation crc32() uses for large buffers: '@node-rs/crc32' or 'zlib'.
 * @public bench/bench.ts loads this file by path to print it.
 */
export function crc32Implementation(): string {
  return (fastCrc === undefined ? loadFastCrc() : fastCrc) ? '@node-rs/crc32' : 'zlib';
}

const FAST_CRC_MIN = 16 * 1024;
/** Bytes of large buffers zlib checksums before the fast CRC is loaded. */
const FAST_CRC_AFTER = 16 * 1024 * 1024;
let zlibBytes = 0;
type CrcFn = (buf: Uint8Array, crc: number) => number;
let fastCrc: CrcFn | null | undefined;

function loadFastCrc(): CrcFn | null {
  fastCrc = null;
  if (process.env.CPTRST_CRC === 'zlib') return null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, optional
    const f = (require('@node-rs/crc32') as { crc32: CrcFn }).crc32;
    const probe = Buffer.allocUnsafe(FAST_CRC_MIN + 4099);
    for (let i = 0; i < probe.length; i++) probe[i] = (i * 2654435761) >>> 24;
    for (const seed of [0, 0xdeadbeef, 0xffffffff]) {
      if (f(probe, seed) >>> 0 !== zlib.crc32(probe, seed)) return null;
    }
    fastCrc = f;
  } catch {
    /* not installed for this platform: zlib it is */
  }
  return fastCrc;
}

export function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

export function isValidPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_PAGE_SIZE && n <= MAX_PAGE_SIZE && (n & (n - 1)) === 0;
}

type Crc32cFn = (buf: Uint8Array, crc: number) => number;
let fastCrc32c: Crc32cFn | null | undefined;
let crc32cTable: Uint32Array | undefined;

/** CRC-32C (Castagnoli) in JavaScript: the same numbers as @node-rs/crc32's crc32c, where that is missing. */
function crc32cJs(data: Uint8Array): number {
  if (!crc32cTable) {
    crc32cTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crc32cTable[i] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crc32cTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function crc32c(data: Uint8Array): number {
  if (fastCrc32c === undefined) {
    fastCrc32c = null;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, optional
      const f = (require('@node-rs/crc32') as { crc32c: Crc32cFn }).crc32c;
      const probe = Buffer.from('123456789');
      if (f(probe, 0) >>> 0 === 0xe3069283) fastCrc32c = f;
    } catch {
      /* not installed for this platform: the JavaScript one */
    }
  }
  return fastCrc32c ? fastCrc32c(data, 0) >>> 0 : crc32cJs(data);
}

/**
 * The 64-bit hash of each page of `data` (8 bytes per page into `out` at `at`): CRC-32C then
 * CRC-32 (two different polynomials, so a changed page keeps both only by a 2^-64 chance). An
 * incremental checkpoint without write tracking compares pages with their parent's by these.
 */
export function hashPages(data: Buffer, pageSize: number, out: Buffer, at = 0): void {
  for (let o = 0, i = at; o + pageSize <= data.length; o += pageSize, i += 8) {
    const page = data.subarray(o, o + pageSize);
    out.writeUInt32LE(crc32c(page), i);
    // The fast CRC-32 for a single page too: zlib's is several times slower per byte.
    const f = fastCrc === undefined ? loadFastCrc() : fastCrc;
    out.writeUInt32LE(f ? f(page, 0) >>> 0 : zlib.crc32(page), i + 4);
  }
}
