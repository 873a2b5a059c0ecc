/** `cptrst show <file>`: what an image holds, for a person or (--json) for a program. Page payloads are never printed. */
import * as fs from 'fs';
import type { CptError, ImageHead } from '@cptrst/core';
import { Command as Commander } from 'commander';
import { Command, Invocation } from './command';
import { core } from './core';
import { common, tryLoadModules } from './common';
import { openImageToRead, formatBytes, hex, jsonValue, oneLine, out, renderObject, renderValue, table } from './output';
import { Operand } from './usage';

export const showCommand: Command = {
  name: 'show',
  summary: 'print what an image holds',
  usage: '<file> [--json] [-v]',
  description: [
    'Reads and checks the image <file> (- for stdin) and prints a summary of its head (format,',
    'machine, capability vector, counts) and then one line per object: offset, tag, parent tag,',
    'type and fields (VMAs as /proc/PID/maps lines). Page data is never printed. With -v, long',
    'arrays and byte strings are printed in full. With --json, one JSON document: head, objects',
    '(bigints as "0x..." strings), summary. A damaged image is refused with EBADIMG.',
  ].join(' '),
  declare(cmd: Commander): void {
    cmd.addArgument(new Operand('<file>', 'the image (- for stdin)', 'the image file (- for stdin)'));
  },
  run: runShow,
};

interface ShownObject {
  offset: number;
  type: number;
  name: string;
  tag: number;
  ptag: number;
  depth: number;
  pageCount: number;
  pageBytes: number;
  obj?: object;
  /** The writer marked it OPTIONAL: a restart that does not know its type skips it rather than refuse. */
  optional: boolean;
}

interface Listing {
  head?: ImageHead;
  formatMinor: number;
  objects: ShownObject[];
  /** Bytes of the image read (all of it when complete). */
  bytes: number;
  complete: boolean;
}

function runShow(p: Invocation): number {
  const c = common(p.options);
  const file = p.operands[0] as string;

  // The layouts of the objects come with the modules; without them objects are listed undecoded.
  const modules = tryLoadModules(c);

  const fromStdin = file === '-';
  const fd = openImageToRead(file);
  const listing: Listing = { formatMinor: 0, objects: [], bytes: 0, complete: false };
  let failure: CptError | undefined;
  try {
    read(fd, fromStdin ? 'stdin' : `image file ${file}`, listing);
  } catch (e) {
    failure = core().asCptError(e, { object: `image ${file}` });
  } finally {
    if (!fromStdin) fs.closeSync(fd);
  }
  if (failure) {
    // A person gets what could be read before the damage; a program only the error.
    if (!c.json && listing.head) out(renderText(file, listing, modules, c.verbose));
    throw failure;
  }
  out(c.json ? renderJson(file, listing, modules) : renderText(file, listing, modules, c.verbose));
  return 0;
}

function read(fd: number, name: string, listing: Listing): void {
  const { HEAD_TAG, ImageReader, fileSource } = core();
  const reader = new ImageReader(fileSource(fd, name));
  listing.head = reader.readHead();
  listing.formatMinor = reader.formatMinor;
  const depth = new Map<number, number>([[HEAD_TAG, -1]]);
  for (let rec = reader.next(); rec; rec = reader.next()) {
    const d = (depth.get(rec.ptag) ?? 0) + 1;
    depth.set(rec.tag, d);
    listing.objects.push({
      offset: rec.offset, type: rec.type, name: rec.name, tag: rec.tag, ptag: rec.ptag, depth: d,
      pageCount: rec.pageCount, pageBytes: rec.pages?.length ?? 0, obj: rec.obj, optional: rec.optional,
    });
    listing.bytes = reader.offset;
  }
  listing.bytes = reader.offset;
  listing.complete = true;
}

function countsByType(objects: ShownObject[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const o of objects) m.set(o.name, (m.get(o.name) ?? 0) + 1);
  return m;
}

function createdIso(ns: bigint): string {
  const ms = Number(ns / 1000000n);
  return Number.isFinite(ms) && ms > 0 && ms < 8.64e15 ? new Date(ms).toISOString() : 'unknown';
}

function headFields(head: ImageHead): Record<string, unknown> {
  const { ImageHead, layoutOf } = core();
  const fields = layoutOf(ImageHead)?.fields ?? [];
  const o: Record<string, unknown> = {};
  const h = head as unknown as Record<string, unknown>;
  for (const f of fields) o[f.name] = h[f.name];
  return o;
}

function renderJson(file: string, l: Listing, modules: { loaded: string[]; failure?: CptError }): string {
  const { FORMAT_MAJOR } = core();
  const head = l.head as ImageHead;
  const pageBytes = l.objects.reduce((n, o) => n + o.pageBytes, 0);
  const pageCount = l.objects.reduce((n, o) => n + o.pageCount, 0);
  const doc = {
    image: file,
    format: { major: FORMAT_MAJOR, minor: l.formatMinor },
    head: { ...headFields(head), created: createdIso(head.createdNs) },
    tree: processTree(l.objects),
    fds: fdTable(l.objects),
    objects: l.objects.map((o) => ({
      offset: o.offset, type: o.type, name: o.name, tag: o.tag, ptag: o.ptag, optional: o.optional,
      ...(o.pageCount ? { pageCount: o.pageCount, pageBytes: o.pageBytes } : {}),
      fields: o.obj === undefined ? null : fieldsOf(o.obj),
    })),
    summary: {
      bytes: l.bytes,
      objects: l.objects.length,
      byType: Object.fromEntries(countsByType(l.objects)),
      pageCount,
      pageBytes,
      undecoded: l.objects.filter((o) => o.obj === undefined).length,
      modules: modules.loaded,
      ...(modules.failure ? { moduleError: modules.failure.toJSON() } : {}),
    },
  };
  return JSON.stringify(jsonValue(doc), null, 2);
}

interface TreeRow {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  state: string;
  comm: string;
  /** Distance from the image's first task (the root), following ppid through the image's tasks. */
  depth: number;
}

/** The image's tasks in image order (parents before children), with what a person asks first. */
function processTree(objects: ShownObject[]): TreeRow[] {
  const rows: TreeRow[] = [];
  const depth = new Map<number, number>();
  for (const o of objects) {
    if (o.name !== 'task' || o.obj === undefined) continue;
    const t = o.obj as Record<string, unknown>;
    const pid = Number(t.pid);
    const ppid = Number(t.ppid);
    const d = depth.has(ppid) ? depth.get(ppid)! + 1 : 0;
    depth.set(pid, d);
    rows.push({ pid, ppid, pgid: Number(t.pgid), sid: Number(t.sid), state: taskState(t), comm: String(t.comm), depth: d });
  }
  return rows;
}

interface FdRow {
  pid: number;
  fd: number;
  /** The FILE's kind (regular, pipe, unix-socket...), with what it is (a path, pipe:[N]...). */
  kind: string;
  path: string;
  /** The other fds (of any task) of the same object: a pipe, FIFO, socket or memfd by inode; for other kinds the same description. */
  sharedWith: Array<{ pid: number; fd: number }>;
  /** A unix socket's peer (its inode, and the fds that hold it). */
  peer?: { ino: string; holders: Array<{ pid: number; fd: number }> };
}

/** Kinds whose object (by inode) may be held through several descriptions, in several processes. */
const SHARED_KINDS = new Set(['pipe', 'fifo', 'unix-socket', 'memfd']);

/**
 * Every fd of every task with its kind and who else holds the same object: pipes, FIFOs, unix
 * sockets and memfds by inode (a file the task inherited is its parent's), other files by open
 * file description; a unix socket's peer. A FILE an ancestor makes for its descendants (file-carry) has no fd.
 */
function fdTable(objects: ShownObject[]): FdRow[] {
  interface F { pid: number; kind: string; path: string; key: string; peer?: string; flags: number }
  const files = new Map<number, F>();
  const taskOf = new Map<number, { pid: number; ppid: number }>();
  /** pid -> fd -> FILE tag */
  const fdsOf = new Map<number, Map<number, number>>();
  const rows: Array<{ pid: number; fd: number; file: number }> = [];
  let task = { pid: 0, ppid: 0 };
  for (const o of objects) {
    const r = (o.obj ?? {}) as Record<string, unknown>;
    if (o.name === 'task') {
      task = { pid: Number(r.pid), ppid: Number(r.ppid) };
      taskOf.set(o.tag, task);
    } else if (o.name === 'file') {
      let key = `desc:${o.tag}`;
      const inherited = Number(r.inherited ?? -1);
      if (inherited >= 0) {
        const parentFile = fdsOf.get(task.ppid)?.get(inherited);
        const pf = parentFile !== undefined ? files.get(parentFile) : undefined;
        if (pf) key = pf.key;
      } else if (SHARED_KINDS.has(String(r.kind)) && BigInt(r.inode as bigint) !== 0n) {
        key = `${String(r.kind)}:${String(r.dev)}:${String(r.inode)}`;
      }
      files.set(o.tag, { pid: task.pid, kind: String(r.kind), path: String(r.path), key, flags: Number(r.flags) });
    } else if (o.name === 'unix-socket') {
      const f = files.get(o.ptag);
      if (f && BigInt(r.peer as bigint) !== 0n) f.peer = String(r.peer);
    } else if (o.name === 'fd') {
      const f = files.get(o.ptag);
      if (!f) continue;
      const m = fdsOf.get(f.pid) ?? new Map<number, number>();
      fdsOf.set(f.pid, m);
      m.set(Number(r.fd), o.ptag);
      rows.push({ pid: f.pid, fd: Number(r.fd), file: o.ptag });
    }
  }
  const byKey = new Map<string, Array<{ pid: number; fd: number }>>();
  for (const row of rows) {
    const k = files.get(row.file)!.key;
    byKey.set(k, [...(byKey.get(k) ?? []), { pid: row.pid, fd: row.fd }]);
  }
  const socketHolders = (ino: string): Array<{ pid: number; fd: number }> =>
    rows.filter((x) => files.get(x.file)!.kind === 'unix-socket' && files.get(x.file)!.path === `socket:[${ino}]`).map((x) => ({ pid: x.pid, fd: x.fd }));
  return rows.map((row) => {
    const f = files.get(row.file)!;
    const sharedWith = (byKey.get(f.key) ?? []).filter((h) => h.pid !== row.pid || h.fd !== row.fd);
    const end = f.kind === 'pipe' ? ((f.flags & 3) === 1 ? ' (write end)' : ' (read end)') : '';
    return { pid: row.pid, fd: row.fd, kind: f.kind, path: f.path + end, sharedWith, ...(f.peer ? { peer: { ino: f.peer, holders: socketHolders(f.peer) } } : {}) };
  });
}

function fdLine(r: FdRow): string {
  const at = (hs: Array<{ pid: number; fd: number }>) => hs.map((h) => `pid ${h.pid} fd ${h.fd}`).join(', ');
  let s = `${r.kind} ${r.path}`;
  if (r.sharedWith.length) s += `, shared with ${at(r.sharedWith)}`;
  if (r.peer) s += `, peer socket:[${r.peer.ino}]${r.peer.holders.length ? ` at ${at(r.peer.holders)}` : ''}`;
  return s;
}

function taskState(t: Record<string, unknown>): string {
  if (t.zombie === true) {
    const st = Number(t.exitStatus);
    return (st & 0x7f) === 0 ? `zombie (exit ${(st >> 8) & 0xff})` : `zombie (signal ${st & 0x7f})`;
  }
  return t.stopped === true ? 'stopped' : 'running';
}

function fieldsOf(obj: object): Record<string, unknown> {
  const fields = core().layoutOf(obj.constructor)?.fields;
  if (!fields) return { ...obj };
  const rec = obj as Record<string, unknown>;
  return Object.fromEntries(fields.map((f) => [f.name, rec[f.name]]));
}

const CPU_FLAGS_SHOWN = 12;

function renderText(file: string, l: Listing, modules: { loaded: string[]; failure?: CptError }, full: boolean): string {
  const { FORMAT_MAJOR, HEAD_TAG, PREAMBLE_SIZE } = core();
  const head = l.head as ImageHead;
  const lines: string[] = [];
  const counts = countsByType(l.objects);
  const pageBytes = l.objects.reduce((n, o) => n + o.pageBytes, 0);
  const pageCount = l.objects.reduce((n, o) => n + o.pageCount, 0);
  const flags = head.cpuFlags;
  const flagText = full || flags.length <= CPU_FLAGS_SHOWN
    ? flags.join(' ')
    : `${flags.slice(0, CPU_FLAGS_SHOWN).join(' ')} … (+${flags.length - CPU_FLAGS_SHOWN} more, -v for all)`;
  const summary: string[][] = [
    ['image', `${file}, ${l.bytes} bytes (${formatBytes(l.bytes)})${l.complete ? '' : ', INCOMPLETE: refused part way'}`],
    ['format', `${FORMAT_MAJOR}.${l.formatMinor}`],
    ['arch', head.arch],
    ['kernel', head.kernelRelease || '(not recorded)'],
    ['page size', String(head.pageSize)],
    ['xsave', `features ${hex(head.xsaveFeatures)}, ${head.xsaveSize} bytes`],
    ['cpu flags', `${flags.length}${flags.length ? ': ' + flagText : ''}`],
    ['vdso', `${head.vdsoSize} bytes, sha256 ${head.vdsoHash ? (full ? head.vdsoHash : head.vdsoHash.slice(0, 16) + '…') : '(none)'}`],
    ['created', `${createdIso(head.createdNs)}`],
    ['tool', `cptrst ${head.toolVersion || '?'}`],
    ['hostname', head.hostname || '(not recorded)'],
    ['boot id', head.bootId || '(not recorded)'],
    ['objects', `${l.objects.length}${counts.size ? ': ' + [...counts].map(([n, k]) => `${n} ${k}`).join(', ') : ''} (plus head and terminator)`],
    ['page data', `${pageCount} pages, ${pageBytes} bytes (${formatBytes(pageBytes)})`],
  ];
  const undecoded = l.objects.filter((o) => o.obj === undefined).length;
  if (undecoded) {
    const why = modules.failure ? `module not loaded: ${oneLine(modules.failure.message)}` : 'no loaded module defines their layout';
    const required = l.objects.filter((o) => o.obj === undefined && !o.optional).length;
    const restart = required ? `${required} not marked optional: restart refuses the image without that module` : 'all marked optional: restart skips them';
    summary.push(['undecoded', `${undecoded} objects (${why}); ${restart}`]);
  }
  lines.push(table(summary));
  lines.push('');
  const tree = processTree(l.objects);
  if (tree.length) {
    const trows = [['PID', 'PPID', 'PGID', 'SID', 'STATE', 'COMMAND']];
    for (const t of tree) trows.push([String(t.pid), String(t.ppid), String(t.pgid), String(t.sid), t.state, `${'  '.repeat(t.depth)}${t.comm}`]);
    lines.push('process tree:');
    lines.push(table(trows.map((r) => [...r.slice(0, 4).map((x) => x.padStart(8)), r[4].padEnd(18), r[5]])));
    lines.push('');
  }
  const fds = fdTable(l.objects);
  if (fds.length) {
    lines.push('open files:');
    lines.push(table([['PID', 'FD', 'WHAT'], ...fds.map((r) => [String(r.pid), String(r.fd), fdLine(r)])].map((r) => [r[0].padStart(8), r[1].padStart(5), r[2]])));
    lines.push('');
  }
  const rows: string[][] = [['OFFSET', 'TAG', 'PTAG', 'OBJECT']];
  rows.push([String(PREAMBLE_SIZE), String(HEAD_TAG), '0', `head  arch=${head.arch} pageSize=${head.pageSize} xsaveFeatures=${renderValue(head.xsaveFeatures, 'xsaveFeatures')}`]);
  for (const o of l.objects) {
    const pages = o.pageCount ? `  [+${o.pageCount} pages]` : '';
    const what = o.obj === undefined
      ? `(no layout for type ${o.type}; ${o.optional ? 'optional: restart skips it' : 'not optional: restart refuses it'}; load the module that defines it with --module)`
      : `${renderObject(o.type, o.name, o.obj, { full })}${o.optional ? '  [optional]' : ''}`;
    rows.push([String(o.offset), String(o.tag), String(o.ptag), `${'  '.repeat(o.depth)}${o.name}  ${what}${pages}`]);
  }
  if (l.complete) rows.push([String(l.bytes), '', '', 'end (terminator checked)']);
  lines.push(table(rows.map((r) => [r[0].padStart(10), r[1].padStart(5), r[2].padStart(5), r[3]])));
  return lines.join('\n');
}
