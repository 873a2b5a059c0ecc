/**
 * Printing: synchronous writes to fd 1/2 (the CLI exits right after, and an image may be going
 * through fd 1), error lines, JSON with bigints and Buffers made printable, and the compact
 * rendering of image objects used by `cptrst show`.
 */
import * as fs from 'fs';
import type { CptError, FieldSpec } from '@cptrst/core';
import { core } from './core';
import { UsageError } from './usage';

/** Thrown when the reader of our stdout went away (`cptrst show img | head`): stop quietly. */
export class OutputClosed extends Error {}

/**
 * One write(2) does it nearly always; the rest, or an error, goes to core's sink (loaded then),
 * which loops over partial writes, waits out EAGAIN and names what failed.
 */
function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text, 'utf8');
  try {
    let n = 0;
    try {
      n = fs.writeSync(fd, buf);
    } catch {
      n = 0;
    }
    if (n < buf.length) core().fileSink(fd).write(buf.subarray(n));
  } catch (e) {
    if ((e as { code?: unknown }).code === 'EPIPE') throw new OutputClosed('output closed');
    throw e;
  }
}

/** Writes text to stdout (a newline is added when missing). */
export function out(text: string): void {
  writeAll(1, text.endsWith('\n') ? text : text + '\n');
}

/** Writes text to stderr (a newline is added when missing). EPIPE on stderr is ignored. */
export function err(text: string): void {
  try {
    writeAll(2, text.endsWith('\n') ? text : text + '\n');
  } catch {
    /* nowhere left to complain */
  }
}

/** One line for stderr, prefixed "cptrst: ". */
export function note(text: string): void {
  err(`cptrst: ${oneLine(text)}`);
}

export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * Whatever was thrown, as a CptError. A CptError from another copy of @cptrst/core (a third
 * party's module with its own) fails `instanceof`, so its fields are taken over by shape.
 */
export function toCptError(e: unknown): CptError {
  const { CptError, asCptError } = core();
  if (e instanceof CptError) return e;
  const x = e as { name?: unknown; code?: unknown; message?: unknown; pid?: unknown; object?: unknown };
  if (x && typeof x === 'object' && typeof x.code === 'string' && typeof x.message === 'string' && (x.name === 'CptError' || x.name === 'ImageError')) {
    return new CptError(x.code, x.message, {
      pid: typeof x.pid === 'number' ? x.pid : undefined,
      object: typeof x.object === 'string' ? x.object : undefined,
      cause: e,
    });
  }
  return asCptError(e);
}

/** An error of a file operation of the CLI itself (opening the image...), without Node's "ENOENT: " prefix. */
/** The image to read: a file, or stdin for '-'. */
export function openImageToRead(file: string): number {
  if (file === '-') return 0;
  try {
    return fs.openSync(file, 'r');
  } catch (e) {
    throw fileError(e, `image file ${file}`);
  }
}

export function fileError(e: unknown, object: string): CptError {
  const { CptError, asCptError } = core();
  const x = e as { code?: unknown; message?: unknown };
  if (typeof x?.code === 'string' && typeof x.message === 'string') {
    const message = x.message.startsWith(`${x.code}: `) ? x.message.slice(x.code.length + 2) : x.message;
    return new CptError(x.code, message, { object, cause: e });
  }
  return asCptError(e, { object });
}

/** `cptrst: <code>: pid N, <object>: <message>` on one line. */
export function errorLine(e: CptError): string {
  return `cptrst: ${oneLine(e.toString())}`;
}

export function errorJson(e: CptError | UsageError): string {
  if (e instanceof UsageError) return JSON.stringify({ error: { code: 'EUSAGE', message: e.message } });
  return JSON.stringify({ error: e.toJSON() });
}

// ---------------------------------------------------------------------------------------------
// JSON

/** Largest Buffer given in full in JSON output; longer ones get their first bytes only. */
const JSON_BUFFER_MAX = 4096;
const JSON_BUFFER_HEAD = 64;

/** A value made JSON-safe: bigints as "0x..." strings, Buffers as {length, hex}. */
export function jsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return hex(v);
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) {
    const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    if (b.length <= JSON_BUFFER_MAX) return { length: b.length, hex: b.toString('hex') };
    return { length: b.length, hex: b.subarray(0, JSON_BUFFER_HEAD).toString('hex'), truncated: true };
  }
  if (Array.isArray(v)) return v.map(jsonValue);
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = jsonValue(x);
    return o;
  }
  return v;
}

export function json(v: unknown, pretty = true): string {
  return JSON.stringify(jsonValue(v), null, pretty ? 2 : undefined);
}

// ---------------------------------------------------------------------------------------------
// Numbers

export function hex(v: bigint | number): string {
  const b = BigInt(v);
  return b < 0n ? `-0x${(-b).toString(16)}` : `0x${b.toString(16)}`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function formatMs(ms: number): string {
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms).toString();
}

// ---------------------------------------------------------------------------------------------
// Tables

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table(rows: string[][], indent = ''): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd())
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// Image objects, for people

/** How many array items or buffer bytes a compact rendering shows. */
const ARRAY_SHOWN = 8;
const BUFFER_SHOWN = 8;

/** Field names whose numbers are counts or sizes, shown in decimal; other u64s are shown in hex. */
const DECIMAL_NAME = /(count|size|len|length|num|nr|ns|sec|usec|pos|offset|uid|gid|pid|inode|ino)$/i;

export interface RenderOptions {
  /** Show every array item and every field, however long. */
  full?: boolean;
}

function quoteIfNeeded(s: string): string {
  return s === '' || /[\s"'\\\x00-\x1f\x7f]/.test(s) ? JSON.stringify(s) : s;
}

function bufferSummary(b: Uint8Array, opts: RenderOptions): string {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length === 0) return '<0 bytes>';
  if (opts.full && buf.length <= 64) return `<${buf.length} bytes: ${buf.toString('hex')}>`;
  const shown = buf.subarray(0, BUFFER_SHOWN).toString('hex');
  return `<${buf.length} bytes: ${shown}${buf.length > BUFFER_SHOWN ? '…' : ''}>`;
}

function arraySummary(items: unknown[], render: (x: unknown) => string, opts: RenderOptions): string {
  if (opts.full || items.length <= ARRAY_SHOWN) return `[${items.map(render).join(' ')}]`;
  const shown = items.slice(0, ARRAY_SHOWN / 2).map(render).join(' ');
  return `[${items.length} items: ${shown} … ${render(items[items.length - 1])}]`;
}

/** One value, compact. `name` and `spec` pick hex or decimal for numbers. */
export function renderValue(v: unknown, name: string, opts: RenderOptions = {}, spec?: FieldSpec): string {
  if (typeof v === 'bigint') {
    if (spec?.kind === 'i64' || DECIMAL_NAME.test(name) || (v >= 0n && v < 10n)) return v.toString();
    return hex(v);
  }
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v > 0 && /(mode|umask)$/i.test(name)) return `0${v.toString(8)}`;
    if (Number.isInteger(v) && v >= 10 && /flags$/i.test(name)) return `0x${v.toString(16)}`;
    return v.toString();
  }
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'string') return quoteIfNeeded(v);
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return bufferSummary(v, opts);
  if (Array.isArray(v)) {
    if (spec?.kind === 'records' || v.some((x) => x && typeof x === 'object' && !Buffer.isBuffer(x))) {
      return arraySummary(v, (x) => `{${renderRecord(x as object, opts)}}`, opts);
    }
    return arraySummary(v, (x) => renderValue(x, name, opts), opts);
  }
  if (v && typeof v === 'object') return `{${renderRecord(v, opts)}}`;
  return String(v);
}

function isEmpty(v: unknown): boolean {
  return v === '' || (Array.isArray(v) && v.length === 0) || ((Buffer.isBuffer(v) || v instanceof Uint8Array) && v.length === 0);
}

/** `name=value name=value` for a record's own fields (empty strings, arrays and buffers left out unless full). */
function renderRecord(obj: object, opts: RenderOptions = {}, fields?: readonly FieldSpec[], skip: ReadonlySet<string> = new Set()): string {
  const rec = obj as Record<string, unknown>;
  const entries: Array<[string, unknown, FieldSpec | undefined]> = fields
    ? fields.map((f) => [f.name, rec[f.name], f])
    : Object.entries(rec).map(([k, v]) => [k, v, undefined]);
  return entries
    .filter(([k, v]) => !skip.has(k) && (opts.full || !isEmpty(v)))
    .map(([k, v, f]) => `${k}=${renderValue(v, k, opts, f)}`)
    .join(' ');
}

function permissions(prot: number, shared: boolean): string {
  return `${prot & 1 ? 'r' : '-'}${prot & 2 ? 'w' : '-'}${prot & 4 ? 'x' : '-'}${shared ? 's' : 'p'}`;
}

const VMA_FIELDS = new Set(['start', 'end', 'prot', 'shared', 'pgoff', 'path']);

/** A VMA object as a /proc/PID/maps line: `start-end perms offset path`. Undefined when the object lacks those fields. */
function vmaLine(obj: object): string | undefined {
  const v = obj as { start?: unknown; end?: unknown; prot?: unknown; shared?: unknown; pgoff?: unknown; path?: unknown };
  if (typeof v.start !== 'bigint' || typeof v.end !== 'bigint' || typeof v.prot !== 'number') return undefined;
  const addr = (x: bigint) => x.toString(16).padStart(8, '0');
  const off = typeof v.pgoff === 'bigint' ? v.pgoff : 0n;
  const path = typeof v.path === 'string' ? v.path : '';
  return `${addr(v.start)}-${addr(v.end)} ${permissions(v.prot, v.shared === true)} ${addr(off)}${path ? ' ' + path : ''}`;
}

/** The content part of an object line in `cptrst show`. */
export function renderObject(type: number, name: string, obj: object | undefined, opts: RenderOptions = {}): string {
  if (obj === undefined) return `(no layout for type ${type}: load the module that defines it with --module)`;
  const fields = core().layoutForType(type)?.fields;
  if (name.toLowerCase() === 'vma') {
    const line = vmaLine(obj);
    if (line) {
      const rest = renderRecord(obj, opts, fields, VMA_FIELDS);
      return rest ? `${line}  ${rest}` : line;
    }
  }
  if (name.toLowerCase() === 'thread') {
    const line = threadLine(obj);
    if (line) {
      const rest = renderRecord(obj, opts, fields, THREAD_FIELDS);
      return rest ? `${line}  ${rest}` : line;
    }
  }
  return renderRecord(obj, opts, fields);
}

const THREAD_FIELDS = new Set(['tid', 'comm', 'syscall']);

/** A thread as a person reads it: `thread 1234 worker, in futex` (or `, running`: not in a system call). */
function threadLine(obj: object): string | undefined {
  const t = obj as { tid?: unknown; comm?: unknown; syscall?: unknown };
  if (typeof t.tid !== 'number' || typeof t.comm !== 'string' || typeof t.syscall !== 'number') return undefined;
  return `thread ${t.tid} ${t.comm}, ${t.syscall >= 0 ? `in ${core().linux.syscallName(t.syscall)}` : 'running'}`;
}
