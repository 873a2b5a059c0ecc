/**
 * The vDSO and its data pages ([vvar], [vvar_vclock] and [vdso] on this kernel). They are the
 * kernel's, not the image's: the new process keeps the ones it got from its helper and moves
 * them (mremap) to where the checkpointed process had them. The vDSO's size and a hash of its
 * code are in the image head; restart refuses a different vDSO, since the process may be
 * stopped inside it or hold pointers into it.
 */
import type * as Crypto from 'crypto';
import * as fs from 'fs';
import {
  BOOT_FACTS_DIR, CptError, ImageHead, MachineProbe, NamedCall, ProbeResult, RestartContext, RestartTask, linux, readBootFact, recordLayout, runCalls, str, u64, writeBootFact,
} from '@cptrst/core';
import { archOf } from '@cptrst/core';
import { VmaEntry, VmaKindHandler } from './vma';
import { Range, findFreeRange, overlaps } from './ranges';

const { SYS, MREMAP } = linux;
export const VDSO_NAMES = ['[vvar]', '[vvar_vclock]', '[vdso]'];

@recordLayout('vdso-piece')
export class VdsoPiece {
  @str() name = '';
  @u64() start = 0n;
  @u64() end = 0n;
}

export class VdsoVma implements VmaKindHandler {
  readonly kind = 'vdso';
  claims(v: VmaEntry): boolean {
    return VDSO_NAMES.includes(v.path);
  }
  describe(): void {}
  /** The kernel's own pages, with the kernel's flags: nothing of them is mapped or stored. */
  acceptsVmFlag(): boolean {
    return true;
  }
  storesPages(): boolean {
    return false;
  }
  storesPage(): boolean {
    return false;
  }
  /** Already in place: moveVdso ran when the MM object was restored. */
  map(): void {}
}

/** The vDSO's pieces in `maps` (default: the process's maps, read now), in address order. */
export function vdsoPieces(pid: number, maps: ReadonlyArray<linux.MapEntry> = linux.readMaps(pid)): VdsoPiece[] {
  return maps.filter((m) => VDSO_NAMES.includes(m.path)).map((m) => Object.assign(new VdsoPiece(), { name: m.path, start: m.start, end: m.end }));
}

/**
 * Moves the new process's vDSO pieces to the image's addresses: first all to a free spot (so a
 * piece never lands on another that has not moved yet), then each to its place.
 */
export function moveVdso(ctx: RestartContext, task: RestartTask, want: VdsoPiece[], avoid: Range[]): void {
  const t = task.tracee!;
  const have = vdsoPieces(task.pid);
  for (const w of want) {
    const h = have.find((p) => p.name === w.name);
    if (!h || h.end - h.start !== w.end - w.start) {
      throw new CptError('ENOTSUP', `${w.name} is ${h ? `${h.end - h.start} bytes here, ${w.end - w.start} in the image` : 'missing here'}`, { pid: task.pid, object: w.name });
    }
  }
  const calls: NamedCall[] = [];
  for (const h of have) {
    if (!want.some((w) => w.name === h.name)) calls.push({ nr: SYS.munmap, args: [h.start, h.end - h.start], what: `munmap of ${h.name}` });
  }
  const moving = have.filter((h) => want.some((w) => w.name === h.name && w.start !== h.start));
  const moves: Array<{ to: bigint; name: string }> = [];
  const remap = (from: bigint, size: bigint, to: bigint, name: string) => {
    calls.push({ nr: SYS.mremap, args: [from, size, size, MREMAP.MAYMOVE | MREMAP.FIXED, to], what: `mremap of ${name}` });
    moves.push({ to, name });
  };
  const target = (h: VdsoPiece) => want.find((p) => p.name === h.name)!;
  if (moving.every((h) => !have.some((p) => overlaps(p, target(h))))) {
    // No piece lands where a piece is now: each goes straight to its place.
    for (const h of moving) remap(h.start, h.end - h.start, target(h).start, h.name);
  } else if (moving.length) {
    const lo = moving.reduce((a, p) => (p.start < a ? p.start : a), moving[0].start);
    const hi = moving.reduce((a, p) => (p.end > a ? p.end : a), moving[0].end);
    const spot = findFreeRange(hi - lo, [...avoid, ...have, ...want], archOf(ctx.container).userSpaceTop);
    for (const h of moving) remap(h.start, h.end - h.start, spot.start + (h.start - lo), h.name);
    for (const h of moving) remap(spot.start + (h.start - lo), h.end - h.start, target(h).start, h.name);
  }
  // One batch: the addresses are known before any call runs.
  const results = runCalls(t, calls).slice(calls.length - moves.length);
  moves.forEach(({ to, name }, i) => {
    if (results[i] !== to) throw new CptError('EFAULT', `mremap of ${name} landed at 0x${results[i].toString(16)}`, { pid: task.pid, object: name });
  });
}

/**
 * The name under which root keeps the vDSO's size and hash for the rest of the boot (core's boot
 * facts): the kernel's vDSO does not change while it runs, and hashing it needs Node's crypto,
 * whose load (2-3 ms) is otherwise the largest single part of loading cptrst.
 */
const VDSO_FACT = 'vdso';
/** The file of that fact. */
export const VDSO_CACHE_FILE = `${BOOT_FACTS_DIR}/${VDSO_FACT}`;
const FACT_LINE = /^(\d{1,9}) ([0-9a-f]{64})$/;
let vdsoCache: { size: number; hash: string } | undefined;

/** Size and sha256 of this machine's vDSO code: this process's own (every 64-bit process maps the same one). */
export function hostVdso(): { size: number; hash: string } {
  if (vdsoCache) return vdsoCache;
  vdsoCache = keptVdso();
  if (vdsoCache) return vdsoCache;
  vdsoCache = hashVdso();
  if (vdsoCache.size > 0) writeBootFact(VDSO_FACT, `${vdsoCache.size} ${vdsoCache.hash}`);
  return vdsoCache;
}

/** The size and hash kept by an earlier run in this boot (readBootFact: root only, root's file, this boot), or undefined. */
export function keptVdso(): { size: number; hash: string } | undefined {
  const kept = FACT_LINE.exec(readBootFact(VDSO_FACT, 80) ?? '');
  return kept ? { size: Number(kept[1]), hash: kept[2] } : undefined;
}

/** Size and sha256 of this process's vDSO, read from its memory (no cache). */
function hashVdso(): { size: number; hash: string } {
  const v = linux.readMaps(process.pid).find((m) => m.path === '[vdso]');
  if (!v) return { size: 0, hash: '' };
  const size = Number(v.end - v.start);
  const buf = Buffer.alloc(size);
  const fd = fs.openSync('/proc/self/mem', 'r');
  try {
    fs.readSync(fd, buf, 0, size, v.start);
  } finally {
    fs.closeSync(fd);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when the hash is not kept (see VDSO_FACT)
  const crypto = require('crypto') as typeof Crypto;
  return { size, hash: crypto.createHash('sha256').update(buf).digest('hex') };
}

export class VdsoProbe implements MachineProbe {
  readonly name = 'vdso';
  probe(): ProbeResult[] {
    const v = hostVdso();
    const pieces = vdsoPieces(process.pid).map((p) => `${p.name} ${Number(p.end - p.start) / 1024} KiB`).join(', ');
    return [{ name: 'vdso', ok: v.size > 0, essential: false, detail: `${pieces}; sha256 ${v.hash.slice(0, 16)}…` }];
  }
  fillHead(head: ImageHead): void {
    const v = hostVdso();
    head.vdsoSize = v.size;
    head.vdsoHash = v.hash;
  }
  checkHead(head: ImageHead): string[] {
    if (!head.vdsoSize) return [];
    const v = hostVdso();
    if (v.size !== head.vdsoSize || v.hash !== head.vdsoHash) {
      return [`the image's vDSO (${head.vdsoSize} bytes, sha256 ${head.vdsoHash.slice(0, 12)}) differs from this kernel's (${v.size} bytes, sha256 ${v.hash.slice(0, 12)})`];
    }
    return [];
  }
}

