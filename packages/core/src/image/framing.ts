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
 *                        padding, payload); for the head it continues the CRC of the preamble.
 *                        RECORD_WITH_HASHED_PAGES (1.7): CRC32 over the header, body and
 *                        padding, then the low 32 bits of XXH3-64 of the payload seeded with
 *                        that CRC (payloadSum)
 *
 * Where the page payload is: nothing is stored for it. Both sides know the stream offset of
 * every object (the stream is sequential from the magic at offset 0), so the payload starts at
 * the first multiple of the head's pageSize at or after the end of the body, the gap is zero
 * padding, and the payload runs to the end of the object (totalLength), a whole number of pages.
 * A RECORD object ends exactly at the end of its body.
 */
import * as zlib from 'zlib';
import { CptError } from '../errors';
import { ContentKind, MAX_PAGE_SIZE, MIN_PAGE_SIZE } from './types';

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

/**
 * The bytes the optional checksum addons are checked on at load, against values computed
 * otherwise: long enough for their vectorised paths, not a multiple of any block size.
 */
function probeBytes(): Buffer {
  const probe = Buffer.allocUnsafe(FAST_CRC_MIN + 4099);
  for (let i = 0; i < probe.length; i++) probe[i] = (i * 2654435761) >>> 24;
  return probe;
}

function loadFastCrc(): CrcFn | null {
  fastCrc = null;
  if (process.env.CPTRST_CRC === 'zlib') return null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, optional
    const f = (require('@node-rs/crc32') as { crc32: CrcFn }).crc32;
    const probe = probeBytes();
    for (const seed of [0, 0xdeadbeef, 0xffffffff]) {
      if (f(probe, seed) >>> 0 !== zlib.crc32(probe, seed)) return null;
    }
    fastCrc = f;
  } catch {
    /* not installed for this platform: zlib it is */
  }
  return fastCrc;
}

/** A checksum computed piece by piece, in order. */
export interface PayloadSum {
  update(bytes: Buffer): void;
  /** The object's checksum: the u32 its header holds. */
  digest(): number;
}

/**
 * The checksum of an object's page payload, continued from `before` (the CRC-32 of the object up
 * to its payload: the header with its checksum field zeroed, the body, the padding): CRC-32 on
 * (RECORD_WITH_PAGES, RECORD_WITH_COMPRESSED_PAGES), or for RECORD_WITH_HASHED_PAGES the low 32
 * bits of XXH3-64 of the payload with `before` as its seed: a chain, as the CRC is, in which the
 * payload's part costs half of what CRC-32 does (bench/README.md). Throws (EOPNOTSUPP) for a hashed
 * payload where XXH3 is not available.
 */
export function payloadSum(kind: number, before: number): PayloadSum {
  if (kind === ContentKind.RECORD_WITH_HASHED_PAGES) {
    const h = xxh3Addon();
    if (!h) throw new CptError('EOPNOTSUPP', 'the image checksums its page payloads with XXH3, and @node-rs/xxhash is not installed for this platform', { object: 'image checksum' });
    const state = h.Xxh3.withSeed(BigInt(before >>> 0));
    return { update: (bytes) => state.update(bytes), digest: () => Number(state.digest() & 0xffffffffn) };
  }
  let crc = before;
  return { update: (bytes) => (crc = crc32(bytes, crc)), digest: () => crc };
}

/**
 * Whether payloads may be checksummed with XXH3 (RECORD_WITH_HASHED_PAGES): @node-rs/xxhash loads
 * and gives the reference values. Loading it costs a few ms: a writer asks only once it has
 * checksummed HASH_PAGES_AFTER bytes of payloads with CRC-32 (a small image never loads it).
 */
export function hashedPagesAvailable(): boolean {
  return xxh3Addon() !== null;
}

/** Bytes of page payloads a writer checksums with CRC-32 before it takes XXH3 (hashedPagesAvailable). */
export const HASH_PAGES_AFTER = 16 * 1024 * 1024;

interface Xxh3State {
  update(input: Uint8Array): unknown;
  digest(): bigint;
}
interface Xxh3Addon {
  Xxh3: { withSeed(seed?: bigint): Xxh3State };
}
let xxh3: Xxh3Addon | null | undefined;

/**
 * @node-rs/xxhash's XXH3 (napi-rs, prebuilt binaries as per-platform optional dependencies, as
 * @node-rs/crc32), streaming only: its one-shot xxh3.xxh64 ran at a tenth of the speed on 2 MiB
 * here. Checked on load against XXH3_64bits_withSeed of the reference library (libxxhash 0.8),
 * fed in two pieces; null where it is missing or differs (CPTRST_XXH3=0 too: then no image with
 * hashed payloads is written, nor read).
 */
function xxh3Addon(): Xxh3Addon | null {
  if (xxh3 !== undefined) return xxh3;
  xxh3 = null;
  if (process.env.CPTRST_XXH3 === '0') return null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, optional
    const h = (require('@node-rs/xxhash') as { xxh3: Xxh3Addon }).xxh3;
    const probe = probeBytes();
    const want: Array<[bigint, bigint]> = [[0n, 0x55049a26dd0ebf70n], [0xdeadbeefn, 0x90394e4372a9c296n], [0xffffffffn, 0xf3ba10f68842a31dn]];
    for (const [seed, value] of want) {
      const s = h.Xxh3.withSeed(seed);
      s.update(probe.subarray(0, 5000));
      s.update(probe.subarray(5000));
      if (s.digest() !== value) return null;
    }
    xxh3 = h;
  } catch {
    /* not installed for this platform */
  }
  return xxh3;
}

/**
 * The checksum an object's header must hold: `object` is the whole object (header, body, padding,
 * payload; the header's checksum field taken as zero), `offset` its stream offset (where its
 * payload starts depends on it), `initial` the CRC it continues (the preamble's, for the head).
 * @public tests and tools that patch an image recompute checksums with it.
 */
export function objectChecksum(object: Buffer, offset: number, pageSize: number, initial = 0): number {
  const kind = object.readUInt16LE(HeaderOffset.kind);
  let prefix = object.length;
  if (kind === ContentKind.RECORD_WITH_HASHED_PAGES) {
    const end = offset + object.readUInt16LE(HeaderOffset.headerLength) + object.readUInt32LE(HeaderOffset.bodyLength);
    prefix = Math.min(object.length, alignUp(end, pageSize) - offset);
  }
  const sum = payloadSum(kind, crc32(object.subarray(OBJ_HEADER_SIZE, prefix), headerCrc(object, initial)));
  sum.update(object.subarray(prefix));
  return sum.digest();
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
