/**
 * Record encoding, derived from layout metadata. Little-endian; variable-size values carry a u32
 * length (str, bytes, nested record) or count (arrays) prefix. A record's own length is known from
 * its container (object header or nested prefix), which is what lets a reader ignore trailing
 * fields it does not know and fill defaults for `since` fields an older writer did not have.
 */
import { TextDecoder } from 'util';
import { CptError } from '../errors';
import { ImageError } from './image-error';
import { FieldKind, FieldSpec, Layout, LayoutClass, layoutForType, layoutOf } from './layout';

/** Nested records deeper than this are refused (a self-referencing layout must not overflow the stack). */
const MAX_DEPTH = 32;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Out {
  /** `size`: the bytes expected (encodedLength), allocated at once instead of grown by doubling. */
  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(Math.max(size, 16));
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  }
  buf: Buffer;
  /** The same bytes as buf: DataView's setters are engine built-ins, fast from the first call (Buffer's BigInt writers run as JavaScript). */
  view: DataView;
  len = 0;
  reserve(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
      this.view = new DataView(next.buffer, next.byteOffset, next.length);
    }
    const at = this.len;
    this.len += n;
    return at;
  }
  // Each writer reserves first and reads this.buf/this.view after: reserve() may replace the buffer.
  u8(v: number): void { const at = this.reserve(1); this.view.setUint8(at, v); }
  u16(v: number): void { const at = this.reserve(2); this.view.setUint16(at, v, true); }
  u32(v: number): void { const at = this.reserve(4); this.view.setUint32(at, v, true); }
  i32(v: number): void { const at = this.reserve(4); this.view.setInt32(at, v, true); }
  u64(v: bigint): void { const at = this.reserve(8); this.view.setBigUint64(at, v, true); }
  i64(v: bigint): void { const at = this.reserve(8); this.view.setBigInt64(at, v, true); }
  raw(v: Uint8Array): void { const at = this.reserve(v.length); this.buf.set(v, at); }
  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u32(n);
    const at = this.reserve(n);
    this.buf.write(s, at, n, 'utf8');
  }
}

/**
 * Where a value sits in the record, for an error message: built only when one is thrown (a string
 * per field, built for every field, was most of the cost of encoding a record).
 */
type Where = () => string;

function encodeError(where: Where, expected: string, v: unknown): CptError {
  const got = typeof v === 'bigint' ? `${v}n` : typeof v === 'string' ? JSON.stringify(v.slice(0, 40)) : String(v);
  return new CptError('EINVAL', `cannot encode ${where()}: expected ${expected}, got ${typeof v} ${got}`, { object: 'image record' });
}

function intIn(v: unknown, lo: number, hi: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

const MAX_U64 = 0xffffffffffffffffn;
const MIN_I64 = -(1n << 63n);
const MAX_I64 = (1n << 63n) - 1n;

/** The element kind of each array kind. */
const ELEMENT_KIND = { u64s: 'u64', u32s: 'u32', strs: 'str', records: 'record' } as const;

/** One scalar (or one nested record) of kind `kind`; `layout` for a record. */
function encodeValue(out: Out, kind: FieldKind, layout: LayoutClass | undefined, v: unknown, where: Where, depth: number): void {
  switch (kind) {
    case 'u8':
      if (!intIn(v, 0, 0xff)) throw encodeError(where, 'u8', v);
      out.u8(v);
      return;
    case 'u16':
      if (!intIn(v, 0, 0xffff)) throw encodeError(where, 'u16', v);
      out.u16(v);
      return;
    case 'u32':
      if (!intIn(v, 0, 0xffffffff)) throw encodeError(where, 'u32', v);
      out.u32(v);
      return;
    case 'i32':
      if (!intIn(v, -0x80000000, 0x7fffffff)) throw encodeError(where, 'i32', v);
      out.i32(v);
      return;
    case 'u64':
      if (typeof v !== 'bigint' || v < 0n || v > MAX_U64) throw encodeError(where, 'u64 bigint', v);
      out.u64(v);
      return;
    case 'i64':
      if (typeof v !== 'bigint' || v < MIN_I64 || v > MAX_I64) throw encodeError(where, 'i64 bigint', v);
      out.i64(v);
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw encodeError(where, 'boolean', v);
      out.u8(v ? 1 : 0);
      return;
    case 'str':
      if (typeof v !== 'string') throw encodeError(where, 'string', v);
      out.str(v);
      return;
    case 'bytes': {
      if (!(v instanceof Uint8Array)) throw encodeError(where, 'Buffer', v);
      out.u32(v.length);
      out.raw(v);
      return;
    }
    case 'u64s':
    case 'u32s':
    case 'strs':
    case 'records': {
      if (!Array.isArray(v)) throw encodeError(where, `${kind} array`, v);
      if (v.length > 0xffffffff) throw encodeError(where, 'at most 2^32-1 elements', v.length);
      out.u32(v.length);
      const el = ELEMENT_KIND[kind];
      for (let i = 0; i < v.length; i++) encodeValue(out, el, layout, v[i], () => `${where()}[${i}]`, depth);
      return;
    }
    case 'record': {
      if (v === null || typeof v !== 'object') throw encodeError(where, 'object', v);
      const nested = nestedLayout(layout, where);
      const at = out.reserve(4);
      encodeFields(out, nested, v, where, depth + 1);
      out.view.setUint32(at, out.len - at - 4, true);
      return;
    }
  }
}

function nestedLayout(layout: LayoutClass | undefined, where: Where): Layout {
  const l = layoutOf(layout);
  if (!l) throw new CptError('EINVAL', `${where()}: ${layout?.name} is not decorated with @recordLayout`, { object: 'image layout' });
  return l;
}

function encodeFields(out: Out, layout: Layout, obj: object, where: Where, depth: number): void {
  if (depth > MAX_DEPTH) throw new CptError('EINVAL', `${where()}: records nested deeper than ${MAX_DEPTH}`, { object: 'image record' });
  const values = obj as Record<string, unknown>;
  for (const f of layout.fields) encodeValue(out, f.kind, f.layout, values[f.name], () => `${where()}.${f.name}`, depth);
}

/**
 * A record's values as they were when captured, to be encoded later (encodeCaptured): what the
 * writer keeps of an object it defers. Numbers, bigints and strings are kept as they are, Buffers
 * and arrays copied, nested records captured in turn: whatever the caller does to the object after,
 * the encoding is that of the object at capture. A value the encoder would refuse is kept as is,
 * and refused when encoded.
 */
export interface CapturedRecord {
  readonly layout: Layout;
  readonly values: Record<string, unknown>;
}

/** Captures an instance of a decorated class (its class decides the layout). */
export function captureRecord(obj: object): CapturedRecord {
  const layout = layoutOf(obj?.constructor);
  if (!layout) {
    throw new CptError('EINVAL', `cannot encode ${obj?.constructor?.name}: not an @objectType/@recordLayout class`, { object: 'image record' });
  }
  return { layout, values: captureFields(layout, obj, 0) };
}

function captureFields(layout: Layout, obj: object, depth: number): Record<string, unknown> {
  const from = obj as Record<string, unknown>;
  const values: Record<string, unknown> = {};
  for (const f of layout.fields) values[f.name] = captureValue(f.kind, f.layout, from[f.name], depth);
  return values;
}

function captureValue(kind: FieldKind, layout: LayoutClass | undefined, v: unknown, depth: number): unknown {
  switch (kind) {
    case 'bytes':
      return v instanceof Uint8Array ? new Uint8Array(v) : v;
    case 'u64s':
    case 'u32s':
    case 'strs':
      return Array.isArray(v) ? v.slice() : v;
    case 'records':
      return Array.isArray(v) ? v.map((x: unknown) => captureValue('record', layout, x, depth)) : v;
    case 'record': {
      const nested = layoutOf(layout);
      return v !== null && typeof v === 'object' && nested && depth < MAX_DEPTH ? captureFields(nested, v, depth + 1) : v;
    }
    default:
      return v;
  }
}

/** Encodes a captured record: the bytes encodeRecord gave for the object when it was captured. */
export function encodeCaptured(c: CapturedRecord): Buffer {
  const out = new Out();
  encodeFields(out, c.layout, c.values, () => c.layout.name, 0);
  return out.buf.subarray(0, out.len);
}

/** The layout of an instance of a decorated class, or an error. */
function layoutToEncode(obj: object): Layout {
  const layout = layoutOf(obj?.constructor);
  if (!layout) {
    throw new CptError('EINVAL', `cannot encode ${obj?.constructor?.name}: not an @objectType/@recordLayout class`, { object: 'image record' });
  }
  return layout;
}

/** Fixed sizes of the scalar kinds. */
const SCALAR_BYTES: Partial<Record<FieldKind, number>> = { u8: 1, u16: 2, u32: 4, i32: 4, u64: 8, i64: 8, bool: 1 };

function valueLength(kind: FieldKind, layout: LayoutClass | undefined, v: unknown, where: Where, depth: number): number {
  const fixed = SCALAR_BYTES[kind];
  if (fixed !== undefined) return fixed;
  switch (kind) {
    case 'str':
      if (typeof v !== 'string') throw encodeError(where, 'string', v);
      return 4 + Buffer.byteLength(v, 'utf8');
    case 'bytes':
      if (!(v instanceof Uint8Array)) throw encodeError(where, 'Buffer', v);
      return 4 + v.length;
    case 'u64s':
    case 'u32s':
      if (!Array.isArray(v)) throw encodeError(where, `${kind} array`, v);
      return 4 + v.length * (kind === 'u64s' ? 8 : 4);
    case 'strs':
    case 'records': {
      if (!Array.isArray(v)) throw encodeError(where, `${kind} array`, v);
      const el = ELEMENT_KIND[kind];
      let n = 4;
      for (let i = 0; i < v.length; i++) n += valueLength(el, layout, v[i], () => `${where()}[${i}]`, depth);
      return n;
    }
    default: {
      if (v === null || typeof v !== 'object') throw encodeError(where, 'object', v);
      return 4 + fieldsLength(nestedLayout(layout, where), v, where, depth + 1);
    }
  }
}

function fieldsLength(layout: Layout, obj: object, where: Where, depth: number): number {
  if (depth > MAX_DEPTH) throw new CptError('EINVAL', `${where()}: records nested deeper than ${MAX_DEPTH}`, { object: 'image record' });
  const values = obj as Record<string, unknown>;
  let n = 0;
  for (const f of layout.fields) n += valueLength(f.kind, f.layout, values[f.name], () => `${where()}.${f.name}`, depth);
  return n;
}

/**
 * The length encodeRecord(obj) would have, from the layout and the sizes of the values, without
 * encoding it (a record with a large Buffer or array is not copied to learn its length). Values
 * are checked for their kind only: their ranges are checked when encoded.
 */
export function encodedLength(obj: object): number {
  const layout = layoutToEncode(obj);
  return fieldsLength(layout, obj, () => layout.name, 0);
}

/** Encodes an instance of a decorated class (its class decides the layout); `size`: its length if known (encodedLength). */
export function encodeRecord(obj: object, size?: number): Buffer {
  const layout = layoutToEncode(obj);
  const out = new Out(size);
  encodeFields(out, layout, obj, () => layout.name, 0);
  return out.buf.subarray(0, out.len);
}

export interface DecodeContext {
  /** Stream offset of the buffer's first byte, for error messages. */
  offset?: number;
  /** Object description for error messages, e.g. "object #5 (VMA, tag 12) at offset 4096". */
  object?: string;
  /** Minor version of the image: a `since` field at or below it must be present. */
  minor?: number;
}

class In {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
    readonly ctx: DecodeContext,
  ) {}

  fail(message: string, at = this.pos): ImageError {
    return new ImageError(message, (this.ctx.offset ?? 0) + at, this.ctx.object);
  }

  /** Takes n bytes; an error names `errAt` (the length prefix, for prefixed values). */
  need(n: number, what: string, errAt = this.pos): number {
    if (n > this.end - this.pos) {
      throw this.fail(`${what} needs ${n} bytes but the record has ${this.end - this.pos} left`, errAt);
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u32(what: string): number {
    return this.buf.readUInt32LE(this.need(4, what));
  }

  /** A count prefix, refused before anything is allocated if its elements cannot fit. */
  count(minElementSize: number, what: string): number {
    const n = this.u32(what);
    if (n * minElementSize > this.end - this.pos) {
      throw this.fail(`${what} claims ${n} elements but only ${this.end - this.pos} bytes are left`, this.pos - 4);
    }
    return n;
  }

  str(what: string): string {
    const lenAt = this.pos;
    const n = this.u32(what);
    const at = this.need(n, what, lenAt);
    try {
      return utf8.decode(this.buf.subarray(at, at + n));
    } catch {
      throw this.fail(`${what} is not valid UTF-8`, at);
    }
  }
}

function decodeValue(inp: In, f: FieldSpec, path: string, depth: number): unknown {
  const b = inp.buf;
  switch (f.kind) {
    case 'u8': return b.readUInt8(inp.need(1, path));
    case 'u16': return b.readUInt16LE(inp.need(2, path));
    case 'u32': return inp.u32(path);
    case 'i32': return b.readInt32LE(inp.need(4, path));
    case 'u64': return b.readBigUInt64LE(inp.need(8, path));
    case 'i64': return b.readBigInt64LE(inp.need(8, path));
    case 'bool': {
      const at = inp.need(1, path);
      const v = b[at];
      if (v > 1) throw inp.fail(`${path} is a bool but holds ${v}`, at);
      return v === 1;
    }
    case 'str': return inp.str(path);
    case 'bytes': {
      const lenAt = inp.pos;
      const n = inp.u32(path);
      const at = inp.need(n, path, lenAt);
      return Buffer.from(b.subarray(at, at + n)); // a copy: the caller may keep it, the stream buffer not
    }
    case 'u64s': {
      const n = inp.count(8, path);
      const out = new Array<bigint>(n);
      for (let i = 0; i < n; i++) out[i] = b.readBigUInt64LE(inp.need(8, path));
      return out;
    }
    case 'u32s': {
      const n = inp.count(4, path);
      const out = new Array<number>(n);
      for (let i = 0; i < n; i++) out[i] = inp.u32(path);
      return out;
    }
    case 'strs': {
      const n = inp.count(4, path);
      const out = new Array<string>(n);
      for (let i = 0; i < n; i++) out[i] = inp.str(`${path}[${i}]`);
      return out;
    }
    case 'records': {
      const n = inp.count(4, path);
      const out = new Array<object>(n);
      const el: FieldSpec = { name: f.name, kind: 'record', layout: f.layout };
      for (let i = 0; i < n; i++) out[i] = decodeValue(inp, el, `${path}[${i}]`, depth) as object;
      return out;
    }
    case 'record': {
      const lenAt = inp.pos;
      const n = inp.u32(path);
      const at = inp.need(n, path, lenAt);
      return decodeFields(new In(b, at, at + n, inp.ctx), nestedLayout(f.layout, () => path), path, depth + 1);
    }
  }
}

function defaultValue(f: FieldSpec, path: string, depth: number): unknown {
  switch (f.kind) {
    case 'u8': case 'u16': case 'u32': case 'i32': return 0;
    case 'u64': case 'i64': return 0n;
    case 'bool': return false;
    case 'str': return '';
    case 'bytes': return Buffer.alloc(0);
    case 'u64s': case 'u32s': case 'strs': case 'records': return [];
    case 'record': {
      if (depth > MAX_DEPTH) throw new CptError('EINVAL', `${path}: records nested deeper than ${MAX_DEPTH}`, { object: 'image layout' });
      const nested = nestedLayout(f.layout, () => path);
      const obj = Object.create(nested.ctor.prototype as object) as Record<string, unknown>;
      for (const g of nested.fields) obj[g.name] = defaultValue(g, `${path}.${g.name}`, depth + 1);
      return obj;
    }
  }
}

function decodeFields(inp: In, layout: Layout, path: string, depth: number): object {
  if (depth > MAX_DEPTH) throw inp.fail(`${path}: records nested deeper than ${MAX_DEPTH}`);
  // Object.create: decoding must not run constructors (they may want arguments or have effects).
  const obj = Object.create(layout.ctor.prototype as object) as Record<string, unknown>;
  const minor = inp.ctx.minor;
  for (const f of layout.fields) {
    const fpath = `${path}.${f.name}`;
    if (inp.pos === inp.end) {
      // An older image: the record stops before fields appended in a later minor version.
      if (f.since !== undefined && (minor === undefined || f.since > minor)) {
        obj[f.name] = defaultValue(f, fpath, depth);
        continue;
      }
      throw inp.fail(`record ${layout.name} ends before field ${f.name}`);
    }
    obj[f.name] = decodeValue(inp, f, fpath, depth);
  }
  // Bytes left over are fields from a newer minor version that this reader does not know.
  return obj;
}

/**
 * Decodes a record body. `cls` is a layout class or an object type number. Bytes after the
 * known fields are ignored; missing trailing `since` fields get defaults. Throws ImageError.
 */
export function decodeRecord<T extends object>(cls: LayoutClass<T>, buf: Buffer, ctx?: DecodeContext): T;
export function decodeRecord(cls: number, buf: Buffer, ctx?: DecodeContext): object;
export function decodeRecord(cls: LayoutClass | number, buf: Buffer, ctx: DecodeContext = {}): object {
  const layout = typeof cls === 'number' ? layoutForType(cls) : layoutOf(cls);
  if (!layout) {
    throw new ImageError(`no layout registered for ${typeof cls === 'number' ? `type ${cls}` : cls.name}`, ctx.offset ?? 0, ctx.object);
  }
  try {
    return decodeFields(new In(buf, 0, buf.length, ctx), layout, layout.name, 0);
  } catch (e) {
    if (e instanceof CptError) throw e;
    // Defence in depth: whatever slipped past the checks still becomes a refusal, not a crash.
    throw new ImageError(`cannot decode ${layout.name}: ${(e as Error)?.message ?? String(e)}`, ctx.offset ?? 0, ctx.object);
  }
}
