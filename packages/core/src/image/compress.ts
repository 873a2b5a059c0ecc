/**
 * Compressed page payloads (ContentKind.RECORD_WITH_COMPRESSED_PAGES). After the body, with no
 * padding: codec u32 (PageCodec), the uncompressed length u32 (a whole number of pages), then the
 * compressed bytes to the end of the object. The object checksum covers them as stored.
 *
 * LZ4 (the block format) through lz4-napi, for speed: Node 20's zlib (deflate) took 1.4 s for
 * 64 MiB of incompressible pages here against 0.25 s for LZ4 (bench/README.md has the figures).
 * lz4-napi ships prebuilt binaries as per-platform optional dependencies: `npm ci` needs no
 * compiler and no install script (the well-kept zstd packages fetch theirs from one).
 * It is loaded on first use only, so a run that does not compress never loads it.
 */
import { CptError } from '../errors';

/** Codec numbers (u32 after the body of a compressed-pages object). */
enum PageCodec {
  /** An LZ4 block; the uncompressed length before it is also LZ4 block framing's size prefix. */
  LZ4 = 1,
}

/** Bytes before the compressed data: codec u32, uncompressed length u32. */
export const COMPRESSED_PAGES_HEADER = 8;

/** The first bytes of a payload are compressed alone first: data that does not shrink there is stored plain. */
const PROBE_BYTES = 64 * 1024;
/** Stored compressed only if it saves at least this fraction. */
const MIN_SAVING = 1 / 16;

interface Lz4 {
  compressSync(data: Buffer): Buffer;
  uncompressSync(data: Uint8Array): Buffer;
}
let lz4: Lz4 | undefined;

function loadLz4(): Lz4 {
  if (lz4) return lz4;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only where compression is used
    lz4 = require('lz4-napi') as Lz4;
  } catch (e) {
    throw new CptError('ENOSYS', `LZ4 compression is not available (the lz4-napi package did not load: ${(e as Error).message.split('\n')[0]})`, { object: 'image compression' });
  }
  return lz4;
}

/** The codec names the writer accepts. */
export type CompressionName = 'lz4';
export const COMPRESSIONS: readonly CompressionName[] = ['lz4'];

/** Loads the codec now, so that a missing library is an error before anything is written. */
export function checkCompression(name: CompressionName): void {
  if (name === 'lz4') loadLz4();
}

/**
 * The compressed payload (codec, length, data) of `data`, or null when compressing would not save
 * enough (already compressed or random data): such pages are stored plain, at the cost of one
 * compression of the first PROBE_BYTES.
 */
export function compressPages(data: Buffer): Buffer | null {
  const z = loadLz4();
  if (data.length > PROBE_BYTES) {
    const probe = z.compressSync(data.subarray(0, PROBE_BYTES));
    if (probe.length - 4 > PROBE_BYTES * (1 - MIN_SAVING)) return null;
  }
  const c = z.compressSync(data); // u32 LE uncompressed length, then the block
  if (c.length + 4 > data.length * (1 - MIN_SAVING)) return null;
  if (c.readUInt32LE(0) !== data.length) throw new CptError('EIO', `LZ4 framed ${c.readUInt32LE(0)} bytes as ${data.length}`, { object: 'image compression' });
  const out = Buffer.allocUnsafe(4 + c.length);
  out.writeUInt32LE(PageCodec.LZ4, 0);
  c.copy(out, 4);
  return out;
}

/**
 * The pages of a compressed payload. `fail(why, at)` makes the error (an ImageError naming the
 * object); `maxBytes` bounds the uncompressed length, checked before anything is allocated.
 */
export function decompressPages(payload: Buffer, pageSize: number, maxBytes: number, fail: (why: string, at: number) => Error): Buffer {
  if (payload.length < COMPRESSED_PAGES_HEADER) throw fail(`compressed payload of ${payload.length} bytes has no codec header`, 0);
  const codec = payload.readUInt32LE(0);
  if (codec !== PageCodec.LZ4) throw fail(`unknown page codec ${codec}`, 0);
  const raw = payload.readUInt32LE(4);
  if (raw === 0 || raw % pageSize !== 0 || raw > maxBytes) {
    throw fail(`uncompressed length ${raw} is not a whole number of ${pageSize}-byte pages up to ${maxBytes} bytes`, 4);
  }
  let pages: Buffer;
  try {
    pages = loadLz4().uncompressSync(payload.subarray(4));
  } catch (e) {
    if (e instanceof CptError) throw e;
    throw fail(`corrupt LZ4 data: ${(e as Error)?.message ?? String(e)}`, COMPRESSED_PAGES_HEADER);
  }
  if (pages.length !== raw) throw fail(`LZ4 data holds ${pages.length} bytes, the header says ${raw}`, COMPRESSED_PAGES_HEADER);
  return pages;
}
