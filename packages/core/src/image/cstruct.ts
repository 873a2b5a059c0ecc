/**
 * Fixed-offset C structs (kernel ABI structures), declared like image layouts: a class whose
 * fields carry a C type decorator. Offsets follow the C rules for x86-64 (each field at the next
 * multiple of its alignment, the size rounded up to the largest alignment) unless a field names
 * its offset (union members, which overlap). Encoding, decoding and sizes all derive from the
 * declaration, so no struct is read or written by hand-computed offsets.
 */
import 'reflect-metadata';
import { CptError } from '../errors';
import { LayoutClass } from './layout';

export type CScalar = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'u64' | 'i64';
export type CFieldType = CScalar | 'bytes' | 'struct' | 'array';

export interface CFieldSpec {
  readonly name: string;
  readonly type: CFieldType;
  readonly offset: number;
  readonly size: number;
  readonly align: number;
  /** Nested struct class for 'struct'. */
  readonly struct?: LayoutClass;
  /** Element type and count for 'array'. */
  readonly element?: CScalar;
  readonly count?: number;
}

export interface CStructLayout {
  readonly ctor: LayoutClass;
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: readonly CFieldSpec[];
}

export interface CFieldOptions {
  /** Byte offset, for members the C rules do not place (a union's overlapping members). */
  offset?: number;
}

interface PendingField {
  name: string;
  type: CFieldType;
  size: number;
  align: number;
  offset?: number;
  struct?: LayoutClass;
  element?: CScalar;
  count?: number;
}

// Kept in maps of this module rather than as reflect-metadata entries: some 250 structs' fields
// are declared at load time, and a WeakMap lookup is a fraction of reflect-metadata's map of maps.
/** The fields declared so far on a class's prototype, in declaration order. */
const pendingFields = new WeakMap<object, PendingField[]>();
/** The layout of each @cstruct class. */
const cstructs = new WeakMap<object, CStructLayout>();

const SCALAR_SIZE: Record<CScalar, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

function bug(message: string): CptError {
  return new CptError('EINVAL', message, { object: 'C struct layout' });
}

function cfieldDecorator(make: (where: string) => Omit<PendingField, 'name' | 'offset'>, opts: CFieldOptions = {}): PropertyDecorator {
  return (target: object, key: string | symbol) => {
    const where = `${target.constructor.name}.${String(key)}`;
    if (typeof key !== 'string') throw bug(`${where}: struct fields must have string names`);
    if (opts.offset !== undefined && !(Number.isInteger(opts.offset) && opts.offset >= 0)) throw bug(`${where}: bad offset ${opts.offset}`);
    let list = pendingFields.get(target);
    if (!list) pendingFields.set(target, (list = []));
    if (list.some((f) => f.name === key)) throw bug(`${where}: declared twice`);
    list.push({ name: key, ...make(where), ...(opts.offset !== undefined ? { offset: opts.offset } : {}) });
  };
}

const scalar = (type: CScalar) => (opts?: CFieldOptions) =>
  cfieldDecorator(() => ({ type, size: SCALAR_SIZE[type], align: SCALAR_SIZE[type] }), opts);

/**
 * C field decorators: `@cfield.u64()`, `@cfield.i32({ offset: 16 })`, `@cfield.bytes(16)` (a
 * char array, decoded as a Buffer), `@cfield.struct(Timeval)` (a nested struct by value),
 * `@cfield.array('u64', 6)` (an array of integers). 8/16/32-bit fields decode to numbers,
 * 64-bit ones to bigints.
 */
export const cfield = {
  u8: scalar('u8'),
  i8: scalar('i8'),
  u16: scalar('u16'),
  i16: scalar('i16'),
  u32: scalar('u32'),
  i32: scalar('i32'),
  u64: scalar('u64'),
  i64: scalar('i64'),
  bytes: (length: number, opts?: CFieldOptions) =>
    cfieldDecorator((where) => {
      if (!(Number.isInteger(length) && length > 0)) throw bug(`${where}: bad array length ${length}`);
      return { type: 'bytes', size: length, align: 1 };
    }, opts),
  array: (element: CScalar, count: number, opts?: CFieldOptions) =>
    cfieldDecorator((where) => {
      if (!(Number.isInteger(count) && count > 0)) throw bug(`${where}: bad array length ${count}`);
      const size = SCALAR_SIZE[element];
      return { type: 'array', size: size * count, align: size, element, count };
    }, opts),
  struct: (cls: LayoutClass, opts?: CFieldOptions) =>
    cfieldDecorator((where) => {
      const nested = cstructOf(cls);
      if (!nested) throw bug(`${where}: ${cls?.name} is not a @cstruct class (import cycle or declared later?)`);
      return { type: 'struct', size: nested.size, align: nested.align, struct: cls };
    }, opts),
};

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * Registers a C struct. `size` is given for structs the kernel declares larger than their
 * decoded members (siginfo_t's 128 bytes); it must cover every field.
 */
export function cstruct(name: string, opts: { size?: number } = {}): ClassDecorator {
  return (target) => {
    const ctor = target as unknown as LayoutClass;
    const pending = pendingFields.get(ctor.prototype as object) ?? [];
    if (pending.length === 0) throw bug(`${name}: a struct needs fields`);
    let cursor = 0;
    let end = 0;
    let align = 1;
    const fields: CFieldSpec[] = pending.map((f) => {
      const offset = f.offset ?? alignUp(cursor, f.align);
      if (offset % f.align !== 0) throw bug(`${name}.${f.name}: offset ${offset} is not ${f.align}-aligned`);
      cursor = offset + f.size;
      end = Math.max(end, cursor);
      align = Math.max(align, f.align);
      return {
        name: f.name, type: f.type, offset, size: f.size, align: f.align,
        ...(f.struct ? { struct: f.struct } : {}), ...(f.element ? { element: f.element, count: f.count } : {}),
      };
    });
    const size = opts.size ?? alignUp(end, align);
    if (size < end) throw bug(`${name}: size ${size} is smaller than its fields (${end} bytes)`);
    const layout: CStructLayout = { ctor, name, size, align, fields };
    cstructs.set(ctor, layout);
  };
}

/** The C struct layout declared on this class, if any. */
export function cstructOf(ctor: unknown): CStructLayout | undefined {
  if (typeof ctor !== 'function') return undefined;
  return cstructs.get(ctor);
}

function layoutOrThrow(ctor: unknown): CStructLayout {
  const l = cstructOf(ctor);
  if (!l) throw bug(`${(ctor as { name?: string })?.name ?? String(ctor)} is not a @cstruct class`);
  return l;
}

export function sizeOfStruct(cls: LayoutClass): number {
  return layoutOrThrow(cls).size;
}

export function offsetOfField<T extends object>(cls: LayoutClass<T>, field: keyof T & string): number {
  const l = layoutOrThrow(cls);
  const f = l.fields.find((x) => x.name === field);
  if (!f) throw bug(`${l.name} has no field ${field}`);
  return f.offset;
}

function readField(buf: Buffer, at: number, f: CFieldSpec): unknown {
  switch (f.type) {
    case 'array': {
      const el = elementSpec(f);
      return Array.from({ length: f.count as number }, (_, i) => readField(buf, at + i * el.size, el));
    }
    case 'u8': return buf.readUInt8(at);
    case 'i8': return buf.readInt8(at);
    case 'u16': return buf.readUInt16LE(at);
    case 'i16': return buf.readInt16LE(at);
    case 'u32': return buf.readUInt32LE(at);
    case 'i32': return buf.readInt32LE(at);
    case 'u64': return buf.readBigUInt64LE(at);
    case 'i64': return buf.readBigInt64LE(at);
    case 'bytes': return Buffer.from(buf.subarray(at, at + f.size));
    case 'struct': return decodeStruct(f.struct as LayoutClass<object>, buf, at);
  }
}

/** Decodes a struct at `offset` of `buf`; refused (EINVAL) if the buffer is too short. */
export function decodeStruct<T extends object>(cls: LayoutClass<T>, buf: Buffer, offset = 0): T {
  const l = layoutOrThrow(cls);
  if (buf.length < offset + l.size) throw new CptError('EINVAL', `${l.name}: need ${l.size} bytes, got ${buf.length - offset}`);
  const obj = Object.create((cls as unknown as { prototype: object }).prototype) as Record<string, unknown>;
  for (const f of l.fields) obj[f.name] = readField(buf, offset + f.offset, f);
  return obj as T;
}

// Integers wrap to the field's width as C would store them (a negative pid written as u32 is
// 0xffffffff): the callers pass values the kernel defines that way. Non-integers are refused.
function toBig(v: unknown, where: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  throw new CptError('EINVAL', `${where}: expected an integer, got ${typeof v} ${String(v)}`);
}

function elementSpec(f: CFieldSpec): CFieldSpec {
  const type = f.element as CScalar;
  return { name: f.name, type, offset: 0, size: SCALAR_SIZE[type], align: SCALAR_SIZE[type] };
}

function writeField(out: Buffer, at: number, f: CFieldSpec, v: unknown, where: string): void {
  if (v === undefined) return; // left zero
  switch (f.type) {
    case 'array': {
      if (!Array.isArray(v)) throw new CptError('EINVAL', `${where}: expected an array`);
      if (v.length > (f.count as number)) throw new CptError('EINVAL', `${where}: ${v.length} elements do not fit in ${f.count}`);
      const el = elementSpec(f);
      v.forEach((x, i) => writeField(out, at + i * el.size, el, x, `${where}[${i}]`));
      return;
    }
    case 'u8': case 'i8': case 'u16': case 'i16': case 'u32': case 'i32': {
      const bits = f.size * 8;
      out.writeUIntLE(Number(BigInt.asUintN(bits, toBig(v, where))), at, f.size);
      return;
    }
    case 'u64': case 'i64':
      // A DataView's setter (an engine built-in, fast from the first call; Buffer's runs as
      // JavaScript, cold in a checkpoint's frozen window); it wraps to 64 bits as C stores it.
      new DataView(out.buffer, out.byteOffset + at, 8).setBigUint64(0, toBig(v, where), true);
      return;
    case 'bytes': {
      if (!(v instanceof Uint8Array)) throw new CptError('EINVAL', `${where}: expected a Buffer`);
      if (v.length > f.size) throw new CptError('EINVAL', `${where}: ${v.length} bytes do not fit in ${f.size}`);
      out.set(v, at);
      return;
    }
    case 'struct':
      encodeInto(layoutOrThrow(f.struct), v as Record<string, unknown>, out, at, where);
  }
}

function encodeInto(l: CStructLayout, values: Record<string, unknown>, out: Buffer, at: number, where: string): void {
  if (values === null || typeof values !== 'object') throw new CptError('EINVAL', `${where}: expected an object`);
  for (const f of l.fields) writeField(out, at + f.offset, f, values[f.name], `${where}.${f.name}`);
}

/** Field values for encodeStruct: any subset, nested structs likewise. */
export type StructValues<T> = {
  [K in keyof T]?: T[K] extends Uint8Array ? Uint8Array : T[K] extends object ? StructValues<T[K]> : T[K] | number | bigint;
};

/**
 * Encodes a struct into a new zero-filled buffer of its size (or into `out` at `offset`).
 * Either an instance of a @cstruct class, or the class and its field values (missing fields
 * are left as they are in `out`, zero in a new buffer). Where union members overlap, later
 * fields are written last.
 */
export function encodeStruct(obj: object): Buffer;
export function encodeStruct<T extends object>(cls: LayoutClass<T>, values: StructValues<T>, out?: Buffer, offset?: number): Buffer;
export function encodeStruct(a: object, values?: object, out?: Buffer, offset = 0): Buffer {
  const cls = typeof a === 'function' ? a : a.constructor;
  const l = layoutOrThrow(cls);
  const v = (typeof a === 'function' ? values : a) as Record<string, unknown>;
  const buf = out ?? Buffer.alloc(l.size);
  if (buf.length < offset + l.size) throw new CptError('EINVAL', `${l.name}: need ${l.size} bytes, got ${buf.length - offset}`);
  encodeInto(l, v, buf, offset, l.name);
  return buf;
}
