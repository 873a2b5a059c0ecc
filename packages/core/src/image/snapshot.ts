/**
 * The set of layouts is checked in as a snapshot, so a layout change cannot slip through.
 *
 * The rule: any change to the layouts needs a format version change in the same commit.
 *  - FORMAT_MINOR, for compatible changes: new object types, new nested record layouts, fields
 *    appended at the end of a layout with `{ since: <new minor> }` (old images lack them and get
 *    defaults; old readers ignore them).
 *  - FORMAT_MAJOR, for anything else: removing, reordering, retyping or renaming fields, removing
 *    types, changing a type's allowed parents.
 * Then regenerate the snapshot. checkLayoutSnapshot() reports which of these applies.
 */
import { describeLayouts, FieldDescription, LayoutDescription, layoutForType, objectLayouts, typeName } from './layout';
import { FORMAT_MAJOR, FORMAT_MINOR, ObjectType } from './types';
import { objectTypeEntry } from './object-types';

export interface LayoutSnapshot {
  format: { major: number; minor: number };
  layouts: LayoutDescription;
  /**
   * Which module owns each object type number of the layouts ("type": "package"). Not part of the
   * format (an owner change is no format change); it shows who to ask about a number, and a
   * number that two modules claim never gets this far (registerObjectType refuses it).
   */
  owners?: Record<string, string>;
}

/** The snapshot of the layouts registered now (test-only layouts left out unless asked for). */
export function layoutSnapshot(opts: { includeTestOnly?: boolean } = {}): LayoutSnapshot {
  const layouts = describeLayouts(opts);
  const owners: Record<string, string> = {};
  for (const o of layouts.objects) {
    const owner = objectTypeEntry(o.type)?.owner;
    if (owner) owners[String(o.type)] = owner;
  }
  return { format: { major: FORMAT_MAJOR, minor: FORMAT_MINOR }, layouts, owners };
}

interface Change {
  text: string;
  compatible: boolean;
}

function fieldText(f: FieldDescription): string {
  return `${f.name}: ${f.kind}${f.layout ? `(${f.layout})` : ''}${f.since !== undefined ? ` since ${f.since}` : ''}`;
}

function compareFields(what: string, old: FieldDescription[], now: FieldDescription[], oldMinor: number, out: Change[]): void {
  const common = Math.min(old.length, now.length);
  for (let i = 0; i < common; i++) {
    if (fieldText(old[i]) !== fieldText(now[i])) {
      out.push({ text: `${what} field ${i} changed from "${fieldText(old[i])}" to "${fieldText(now[i])}"`, compatible: false });
    }
  }
  for (const f of old.slice(common)) out.push({ text: `${what} field "${fieldText(f)}" removed`, compatible: false });
  for (const f of now.slice(common)) {
    const ok = f.since !== undefined && f.since > oldMinor;
    out.push({
      text: `${what} field "${fieldText(f)}" appended${ok ? '' : ` without {since} above minor ${oldMinor}`}`,
      compatible: ok,
    });
  }
}

function isFieldList(x: unknown): x is FieldDescription[] {
  return Array.isArray(x) && x.every((f: Partial<FieldDescription> | null) => f && typeof f.name === 'string' && typeof f.kind === 'string');
}

function isSnapshot(x: unknown): x is LayoutSnapshot {
  const s = x as LayoutSnapshot;
  return !!s && typeof s.format?.major === 'number' && typeof s.format?.minor === 'number'
    && Array.isArray(s.layouts?.objects) && Array.isArray(s.layouts?.records)
    && s.layouts.objects.every((o) => typeof o?.type === 'number' && typeof o.name === 'string'
      && Array.isArray(o.parents) && isFieldList(o.fields))
    && s.layouts.records.every((r) => typeof r?.name === 'string' && isFieldList(r.fields));
}

function diff(old: LayoutSnapshot, now: LayoutSnapshot): Change[] {
  const out: Change[] = [];
  const oldMinor = old.format.minor;
  const nowObjects = new Map(now.layouts.objects.map((o) => [o.type, o]));
  const oldTypes = new Set(old.layouts.objects.map((o) => o.type));
  for (const o of old.layouts.objects) {
    const n = nowObjects.get(o.type);
    const what = `object type ${o.type} (${o.name})`;
    if (!n) {
      out.push({ text: `${what} removed`, compatible: false });
      continue;
    }
    if (n.name !== o.name) out.push({ text: `${what} renamed to ${n.name}`, compatible: true });
    if (JSON.stringify([...o.parents].sort()) !== JSON.stringify([...n.parents].sort())) {
      out.push({ text: `${what} parents changed from [${o.parents}] to [${n.parents}]`, compatible: false });
    }
    // The OPTIONAL header flag only tells readers that lack the type whether they may skip it.
    if ((o.optional === true) !== (n.optional === true)) {
      out.push({ text: `${what} ${n.optional ? 'marked' : 'no longer marked'} optional`, compatible: true });
    }
    compareFields(what, o.fields, n.fields, oldMinor, out);
  }
  for (const n of now.layouts.objects) {
    if (!oldTypes.has(n.type)) out.push({ text: `object type ${n.type} (${n.name}) added`, compatible: true });
  }
  const nowRecords = new Map(now.layouts.records.map((r) => [r.name, r]));
  const oldRecords = new Set(old.layouts.records.map((r) => r.name));
  for (const r of old.layouts.records) {
    const n = nowRecords.get(r.name);
    if (!n) out.push({ text: `record layout ${r.name} removed`, compatible: false });
    else compareFields(`record layout ${r.name}`, r.fields, n.fields, oldMinor, out);
  }
  for (const n of now.layouts.records) {
    if (!oldRecords.has(n.name)) out.push({ text: `record layout ${n.name} added`, compatible: true });
  }
  return out;
}

/**
 * Compares a committed snapshot with the current layouts (or `current`) and returns what is
 * wrong, one sentence each; empty when the snapshot is up to date.
 */
export function checkLayoutSnapshot(snapshot: object, current: LayoutSnapshot = layoutSnapshot()): string[] {
  if (!isSnapshot(snapshot)) return ['layout snapshot is malformed: expected { format: {major, minor}, layouts: {objects, records} }'];
  const old = snapshot;
  const ov = `${old.format.major}.${old.format.minor}`;
  const nv = `${current.format.major}.${current.format.minor}`;
  const changes = diff(old, current);
  const sameVersion = old.format.major === current.format.major && old.format.minor === current.format.minor;
  const backwards = current.format.major < old.format.major
    || (current.format.major === old.format.major && current.format.minor < old.format.minor);
  if (backwards) return [`format version went backwards from ${ov} to ${nv}`];
  if (changes.length === 0) return sameVersion ? ownerChanges(old, current) : [`format version changed from ${ov} to ${nv} with no layout change: regenerate the snapshot`];
  if (sameVersion) {
    return changes.map((c) => `${c.text} without a format version change (format ${nv}): ` +
      (c.compatible ? 'bump FORMAT_MINOR' : 'bump FORMAT_MAJOR (or make it compatible: append fields with {since})'));
  }
  if (current.format.major === old.format.major) {
    const bad = changes.filter((c) => !c.compatible);
    if (bad.length) return bad.map((c) => `${c.text}: incompatible, needs a FORMAT_MAJOR bump (FORMAT_MINOR ${ov} -> ${nv} is not enough)`);
  }
  return [`layouts changed with format ${ov} -> ${nv}: regenerate the snapshot (${changes.map((c) => c.text).join('; ')})`];
}

/** Owners that differ from the snapshot's (when it records them): no format change, but the snapshot must say who owns what. */
function ownerChanges(old: LayoutSnapshot, now: LayoutSnapshot): string[] {
  if (!old.owners || !now.owners) return [];
  const out: string[] = [];
  for (const [type, owner] of Object.entries(now.owners)) {
    const was = old.owners[type];
    if (was !== undefined && was !== owner) out.push(`object type ${type} is owned by ${owner} now, the snapshot says ${was}: regenerate the snapshot`);
  }
  return out;
}

/** Every registered object type must reach HEAD through its parents; returns the ones that do not. */
export function checkReachability(opts: { includeTestOnly?: boolean } = {}): string[] {
  const reaches = new Map<number, boolean>([[ObjectType.HEAD, true]]);
  const visit = (type: number, seen: Set<number>): boolean => {
    const known = reaches.get(type);
    if (known !== undefined) return known;
    const layout = layoutForType(type);
    if (!layout || seen.has(type)) return false; // unregistered parent, or a cycle
    seen.add(type);
    const ok = layout.parents.some((p) => visit(p, seen));
    seen.delete(type);
    if (ok || seen.size === 0) reaches.set(type, ok);
    return ok;
  };
  const problems: string[] = [];
  for (const l of objectLayouts(opts)) {
    const type = l.type as number;
    if (visit(type, new Set())) continue;
    const missing = l.parents.filter((p) => !layoutForType(p));
    problems.push(`object type ${type} (${l.name}) does not reach HEAD through its parents [${l.parents.map(typeName).join(', ')}]` +
      (missing.length ? `; unregistered: ${missing.map(typeName).join(', ')}` : '; only through a cycle or unreachable types'));
  }
  return problems;
}
