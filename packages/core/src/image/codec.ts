/**
 * Record encoding, derived from layout metadata. Little-endian; variable-size values carry a u32
 * length (str, bytes, nested record) or count (arrays) prefix. A record's own length is known from
 * its container (object header or nested prefix), which is what lets a reader ignore trailing
 * fields it does not know and fill defaults for `since` fields an older writer did not have.
 */
import { TextDecoder } from 'util';
import { CptError } from '../errors';
import { ImageError } from './image-error';
import { FieldSpec, Layout, LayoutClass, layoutForType, layoutOf } from './layout';

/** Nested records deeper than this are refused (a self-referencing layout must not overflow the stack). */
const MAX_DEPTH = 32;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Out {
  buf = Buffer.allocUnsafe(256);
  len = 0;
  reserve(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    const at = this.len;
    this.len += n;
    return at;
  }
  // Each writer reserves first and reads this.buf after: reserve() may replace the buffer.
  u8(v: number): void { const at = this.reserve(1); this.buf.writeUInt8(v, at); }
  u16(v: number): void { const at = this.reserve(2); this.buf.writeUInt16LE(v, at); }
  u32(v: number): void { const at = this.reserve(4); this.buf.writeUInt32LE(v, at); }
  i32(v: number): void { const at = this.reserve(4); this.buf.writeInt32LE(v, at); }
  u64(v: bigint): void { const at = this.reserve(8); this.buf.writeBigUInt64LE(v, at); }
  i64(v: bigint): void { const at = this.reserve(8); this.buf.writeBigInt64LE(v, at); }
  raw(v: Uint8Array): void { const at = this.reserve(v.length); this.buf.set(v, at); }
  str(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u32(n);
    const at = this.reserve(n);
    this.buf.write(s, at, n, 'utf8');
  }
}

function encodeError(path: string, expected: string, v: unknown): CptError {
  const got = typeof v === 'bigint' ? `${v}n` : typeof v === 'string' ? JSON.stringify(v.slice(0, 40)) : String(v);
  return new CptError('EINVAL', `cannot encode ${path}: expected ${expected}, got ${typeof v} ${got}`, { object: 'image record' });
}

function intIn(v: unknown, lo: number, hi: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}


function encodeValue(out: Out, f: FieldSpec, v: unknown, path: string, depth: number): void {
  switch (f.kind) {
    case 'u8':
      if (!intIn(v, 0, 0xff)) throw encodeError(path, 'u8', v);
      out.u8(v);
      return;
    case 'u16':
      if (!intIn(v, 0, 0xffff)) throw encodeError(path, 'u16', v);
      out.u16(v);
      return;
    case 'u32':
      if (!intIn(v, 0, 0xffffffff)) throw encodeError(path, 'u32', v);
      out.u32(v);
      return;
    case 'i32':
      if (!intIn(v, -0x80000000, 0x7fffffff)) throw encodeError(path, 'i32', v);
      out.i32(v);
      return;
    case 'u64':
      if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) throw encodeError(path, 'u64 bigint', v);
      out.u64(v);
      return;
    case 'i64':
      if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n) throw encodeError(path, 'i64 bigint', v);
      out.i64(v);
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw encodeError(path, 'boolean', v);
      out.u8(v ? 1 : 0);
      return;
    case 'str':
      if (typeof v !== 'string') throw encodeError(path, 'string', v);
      out.str(v);
      return;
    case 'bytes': {
      if (!(v instanceof Uint8Array)) throw encodeError(path, 'Buffer', v);
      out.u32(v.length);
      out.raw(v);
      return;
    }
    case 'u64s':
    case 'u32s':
    case 'strs':
    case 'records': {
      if (!Array.isArray(v)) throw encodeError(path, `${f.kind} array`, v);
      if (v.length > 0xffffffff) throw encodeError(path, 'at most 2^32-1 elements', v.length);
      out.u32(v.length);
      const el: FieldSpec = { name: f.name, kind: ({ u64s: 'u64', u32s: 'u32', strs: 'str', records: 'record' } as const)[f.kind], layout: f.layout };
      v.forEach((x, i) => encodeValue(out, el, x, `${path}[${i}]`, depth));
      return;
    }
    case 'record': {
      if (v === null || typeof v !== 'object') throw encodeError(path, 'object', v);
      const nested = nestedLayout(f, path);
      const at = out.reserve(4);
      encodeFields(out, nested, v, path, depth + 1);
      out.buf.writeUInt32LE(out.len - at - 4, at);
      return;
    }
  }
}

function nestedLayout(f: FieldSpec, path: string): Layout {
  const l = layoutOf(f.layout);
  if (!l) throw new CptError('EINVAL', `${path}: ${f.layout?.name} is not decorated with @recordLayout`, { object: 'image layout' });
  return l;
}

function encodeFields(out: Out, layout: Layout, obj: object, path: string, depth: number): void {
  if (depth > MAX_DEPTH) throw new CptError('EINVAL', `${path}: records nested deeper than ${MAX_DEPTH}`, { object: 'image record' });
  const values = obj as Record<string, unknown>;
  for (const f of layout.fields) encodeValue(out, f, values[f.name], `${path}.${f.name}`, depth);
}

/** Encodes an instance of a decorated class (its class decides the layout). */
export function encodeRecord(obj: object): Buffer {
  const layout = layoutOf(obj?.constructor);
  if (!layout) {
    throw new CptError('EINVAL', `cannot encode ${obj?.constructor?.name}: not an @objectType/@recordLayout class`, { object: 'image record' });
  }
  const out = new Out();
  encodeFields(out, layout, obj, layout.name, 0);
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
      return decodeFields(new In(b, at, at + n, inp.ctx), nestedLayout(f, path), path, depth + 1);
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
      const nested = nestedLayout(f, path);
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
