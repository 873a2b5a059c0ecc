/**
 * Object layouts, declared once as decorated classes. Encoding, decoding, the layout snapshot
 * and the reachability check all derive from the metadata recorded here, so there is no
 * hand-written serializer to drift from the declaration.
 */
import 'reflect-metadata';
import { CptError } from '../errors';
import { ObjectType } from './types';
import { CPTRST_OWNER, THIRD_PARTY_TYPES_FROM, objectTypeEntry, registerObjectType } from './object-types';

export type FieldKind =
  | 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | 'i64' | 'bool'
  | 'str' | 'bytes' | 'u64s' | 'u32s' | 'strs' | 'record' | 'records';

export interface FieldOptions {
  /**
   * The format minor version that appended this field. A record from an older image may end
   * before it; the decoder then fills the default (0, 0n, false, '', empty). Only a suffix of
   * a layout's fields may carry `since`, since only a suffix can be missing.
   */
  since?: number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type LayoutClass<T extends object = object> = abstract new (...args: any[]) => T;

export interface FieldSpec {
  readonly name: string;
  readonly kind: FieldKind;
  readonly since?: number;
  /** Nested layout class for 'record' / 'records'. */
  readonly layout?: LayoutClass;
}

export interface Layout {
  readonly ctor: LayoutClass;
  readonly name: string;
  /** Object type number; undefined for nested record layouts. */
  readonly type?: number;
  /** Object types allowed as this object's parent (ptag). */
  readonly parents: readonly number[];
  /** Test-only layouts are left out of describeLayouts() and the reachability check by default. */
  readonly testOnly: boolean;
  /**
   * Written with the OPTIONAL header flag: a reader without this layout may skip the object
   * (restart refuses any other object it does not know). Only for objects a restore can do
   * without.
   */
  readonly optional: boolean;
  /** The module that owns the object type number (registerObjectType); undefined for nested record layouts. */
  readonly owner?: string;
  readonly fields: readonly FieldSpec[];
}

// Kept in maps of this module rather than as reflect-metadata entries (a WeakMap lookup is a
// fraction of reflect-metadata's map of maps, and some 700 fields are declared at load time).
/** The fields declared so far on a class's prototype, in declaration order. */
const declaredFields = new WeakMap<object, FieldSpec[]>();
/** The layout declared on each class (object types and nested records). */
const layouts = new WeakMap<object, Layout>();

const byType = new Map<number, Layout>();
const recordsByName = new Map<string, Layout>();

function bug(message: string): CptError {
  return new CptError('EINVAL', message, { object: 'image layout' });
}

// What TypeScript's design:type must be for each kind (Object = no usable type info, not checked).
const DESIGN_TYPES: Record<FieldKind, readonly unknown[]> = {
  u8: [Number], u16: [Number], u32: [Number], i32: [Number],
  u64: [BigInt], i64: [BigInt], bool: [Boolean], str: [String],
  bytes: [Buffer, Uint8Array], u64s: [Array], u32s: [Array], strs: [Array],
  record: [], records: [Array],
};

function field(kind: FieldKind, opts: FieldOptions = {}, layout?: LayoutClass): PropertyDecorator {
  return (target: object, key: string | symbol) => {
    const where = `${target.constructor.name}.${String(key)}`;
    if (typeof key !== 'string') throw bug(`${where}: image fields must have string names`);
    if ((kind === 'record' || kind === 'records') && typeof layout !== 'function') {
      throw bug(`${where}: @${kind}() needs a layout class (undefined: import cycle or declared later?)`);
    }
    if (opts.since !== undefined && !(Number.isInteger(opts.since) && opts.since >= 0 && opts.since <= 0xffff)) {
      throw bug(`${where}: since must be a format minor version`);
    }
    // A declared TypeScript type that contradicts the decorator is a bug worth catching at load time
    // (where TypeScript's design:type metadata is recorded: the compiled modules, not the CLI's bundle).
    const design: unknown = Reflect.getMetadata('design:type', target, key);
    if (design !== undefined && design !== Object) {
      const ok = kind === 'record' ? design === layout : DESIGN_TYPES[kind].includes(design);
      if (!ok) throw bug(`${where}: @${kind}() on a property declared as ${(design as { name?: string }).name}`);
    }
    let list = declaredFields.get(target);
    if (!list) declaredFields.set(target, (list = []));
    if (list.some((f) => f.name === key)) throw bug(`${where}: declared twice`);
    list.push({ name: key, kind, ...(opts.since !== undefined ? { since: opts.since } : {}), ...(layout ? { layout } : {}) });
  };
}

export const u8 = (opts?: FieldOptions) => field('u8', opts);
export const u16 = (opts?: FieldOptions) => field('u16', opts);
export const u32 = (opts?: FieldOptions) => field('u32', opts);
export const i32 = (opts?: FieldOptions) => field('i32', opts);
export const u64 = (opts?: FieldOptions) => field('u64', opts);
export const i64 = (opts?: FieldOptions) => field('i64', opts);
export const bool = (opts?: FieldOptions) => field('bool', opts);
export const str = (opts?: FieldOptions) => field('str', opts);
export const bytes = (opts?: FieldOptions) => field('bytes', opts);
export const u64s = (opts?: FieldOptions) => field('u64s', opts);
export const u32s = (opts?: FieldOptions) => field('u32s', opts);
export const strs = (opts?: FieldOptions) => field('strs', opts);
export const record = (cls: LayoutClass, opts?: FieldOptions) => field('record', opts, cls);
export const records = (cls: LayoutClass, opts?: FieldOptions) => field('records', opts, cls);

/** Fields of a class: those of a decorated base class first, then its own in declaration order. */
function collectFields(ctor: LayoutClass): FieldSpec[] {
  const base = Object.getPrototypeOf(ctor) as LayoutClass | null;
  const inherited = base ? layoutOf(base)?.fields ?? [] : [];
  const own = declaredFields.get(ctor.prototype as object) ?? [];
  const fields = [...inherited, ...own];
  let since: number | undefined;
  for (const f of fields) {
    if (since !== undefined && (f.since === undefined || f.since < since)) {
      throw bug(`${ctor.name}.${f.name}: fields after a {since} field need a {since} at least as high`);
    }
    since = f.since ?? since;
  }
  return fields;
}

function u16Number(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 0xffff;
}

/**
 * Registers an object layout: `type` is the u16 in the object header, `parents` the allowed ptag
 * types. The number must be declared (registerObjectType), or `owner` given to declare it here:
 * a third party's module names its package; cptrst's own numbers (ObjectType) are declared by core.
 */
export function objectType(
  type: number,
  name: string,
  opts: { parents: number[]; testOnly?: boolean; optional?: boolean; owner?: string },
): ClassDecorator {
  return (target) => {
    const ctor = target as unknown as LayoutClass;
    if (!u16Number(type)) throw bug(`${ctor.name}: object type ${type} is not in 1..65535`);
    if (!name) throw bug(`${ctor.name}: object type ${type} needs a name`);
    if (!Array.isArray(opts?.parents) || !opts.parents.every(u16Number)) {
      throw bug(`${name}: parents must be a list of object type numbers`);
    }
    if (opts.optional && (type === ObjectType.HEAD || type === ObjectType.TERMINATOR)) throw bug(`${name}: the head and the terminator cannot be optional`);
    if ((type === ObjectType.HEAD) !== (opts.parents.length === 0)) {
      throw bug(`${name}: only HEAD has no parents (top-level objects use [ObjectType.HEAD])`);
    }
    const existing = byType.get(type);
    if (existing) throw bug(`${name}: object type ${type} is already registered as ${existing.name} (of ${existing.owner})`);
    const owner = ownerFor(type, name, opts);
    const layout: Layout = {
      ctor, name, type, parents: [...opts.parents], testOnly: opts.testOnly === true, optional: opts.optional === true,
      owner, fields: collectFields(ctor),
    };
    layouts.set(ctor, layout);
    byType.set(type, layout);
  };
}

/** The owner of a layout's type number, declaring the number when the layout brings its owner. */
function ownerFor(type: number, name: string, opts: { testOnly?: boolean; owner?: string }): string {
  const declared = objectTypeEntry(type);
  if (declared) {
    if (opts.owner !== undefined && opts.owner !== declared.owner) {
      throw bug(`${name}: object type ${type} is declared by ${declared.owner}, not by ${opts.owner}`);
    }
    return declared.owner;
  }
  const owner = opts.owner ?? (opts.testOnly ? 'test' : type < THIRD_PARTY_TYPES_FROM ? CPTRST_OWNER : undefined);
  if (!owner) throw bug(`${name}: object type ${type} is declared by nobody: give {owner: '<your package>'} or call registerObjectType first`);
  registerObjectType(type, name, owner);
  return owner;
}

/** Registers a nested record layout (used through @record / @records); it has no type number. */
export function recordLayout(name: string): ClassDecorator {
  return (target) => {
    const ctor = target as unknown as LayoutClass;
    if (!name) throw bug(`${ctor.name}: record layout needs a name`);
    const existing = recordsByName.get(name);
    if (existing) throw bug(`${ctor.name}: record layout name ${name} is already used by ${existing.ctor.name}`);
    const layout: Layout = { ctor, name, parents: [], testOnly: false, optional: false, fields: collectFields(ctor) };
    layouts.set(ctor, layout);
    recordsByName.set(name, layout);
  };
}

/** The layout declared directly on this class (not inherited), if any. */
export function layoutOf(ctor: unknown): Layout | undefined {
  if (typeof ctor !== 'function') return undefined;
  return layouts.get(ctor);
}

export function layoutForType(type: number): Layout | undefined {
  return byType.get(type);
}

/** Every registered object layout, by type number. */
export function objectLayouts(opts: { includeTestOnly?: boolean } = {}): Layout[] {
  return [...byType.values()]
    .filter((l) => opts.includeTestOnly || !l.testOnly)
    .sort((a, b) => (a.type ?? 0) - (b.type ?? 0));
}

/** Name for an object type: the layout's, the ObjectType enum's, or "type N". */
export function typeName(type: number): string {
  return byType.get(type)?.name ?? objectTypeEntry(type)?.name ?? ObjectType[type] ?? `type ${type}`;
}

export interface FieldDescription {
  name: string;
  kind: FieldKind;
  since?: number;
  layout?: string;
}
export interface LayoutDescription {
  objects: { type: number; name: string; parents: number[]; optional?: true; fields: FieldDescription[] }[];
  records: { name: string; fields: FieldDescription[] }[];
}

/**
 * A stable, JSON-serializable description of the registered layouts: object layouts by type
 * number, then the nested record layouts they use (transitively) by name. Test-only layouts and
 * records only they use are left out unless asked for.
 */
export function describeLayouts(opts: { includeTestOnly?: boolean } = {}): LayoutDescription {
  const used = new Map<string, Layout>();
  const describeFields = (fields: readonly FieldSpec[]): FieldDescription[] =>
    fields.map((f) => {
      const d: FieldDescription = { name: f.name, kind: f.kind };
      if (f.since !== undefined) d.since = f.since;
      if (f.layout) {
        const nested = layoutOf(f.layout);
        d.layout = nested?.name ?? `<unregistered ${f.layout.name}>`;
        if (nested && !used.has(nested.name)) {
          used.set(nested.name, nested);
          describeFields(nested.fields);
        }
      }
      return d;
    });
  const objects = objectLayouts(opts).map((l) => ({
    type: l.type as number,
    name: l.name,
    parents: [...l.parents].sort((a, b) => a - b),
    // Only when set, so that the descriptions of all other layouts stay as they were.
    ...(l.optional ? { optional: true as const } : {}),
    fields: describeFields(l.fields),
  }));
  const records = [...used.values()]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((l) => ({ name: l.name, fields: describeFields(l.fields) }));
  return { objects, records };
}
