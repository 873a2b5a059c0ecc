/**
 * Guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13): pages of an area that fault with
 * SIGSEGV on any access, held as markers in the page table, not as areas of their own. An area
 * that has or had them shows VmFlags `gu` (the flag stays after MADV_GUARD_REMOVE); the pagemap
 * shows each guard page as a swapped entry with the guard bit (PAGEMAP_SCAN: PAGE_IS_GUARD).
 *
 * Checkpoint: the guard pages of each area flagged `gu` are listed (VMA_GUARDS, right after the
 * area and its kind's records, before its pages) and never taken for pages to store (the pagemap
 * shows them as swapped, which every kind would store; reading one faults). Areas with guards
 * are not kept copy-on-write from the parent (cow.ts), nor tracked for incremental images.
 *
 * Restart: the area is mapped (its kind's records are read by then), then its guards are
 * installed again, one madvise per run, before any of its pages is written: guards and stored
 * pages never overlap. A `gu` area whose guards were all removed gets the flag back by a guard
 * installed and removed on its first page, still empty then. A guard in an area that
 * MADV_WIPEONFORK clears is kept as it is: the restored area has the same advice, so a child
 * forked later loses the guards as the original's would have.
 */
import {
  CheckpointContext, CheckpointTask, CptError, ObjectType, RestartContext, RestartTask, RestoreHandler, RestoreObject, linux, objectType, refuse, runCalls, u64s,
} from '@cptrst/core';
import { GUARD_FLAG, LOCK_FLAGS, VMAS_OF_RESTART, VmaEntry, describeVma } from './vma';
import { Span, subtract } from './spans';

/** Runs per VMA_GUARDS object, at most (a reader's bound on a hostile list). */
const MAX_RUNS = 1 << 20;

@objectType(ObjectType.VMA_GUARDS, 'vma-guards', { parents: [ObjectType.VMA] })
export class VmaGuardsImage {
  /** [first page index, count] pairs of the area's guard pages, in order, without overlap. */
  @u64s() runs: bigint[] = [];
}

export const hasGuardFlag = (v: { vmFlags: string[] }): boolean => v.vmFlags.includes(GUARD_FLAG);

/**
 * At check: guards in a locked area are refused (the kernel installs none in a locked area, so
 * they could not be installed again after the area is locked at restart).
 */
export function checkGuards(task: CheckpointTask, v: VmaEntry): void {
  if (hasGuardFlag(v) && v.vmFlags.some((f) => LOCK_FLAGS.has(f))) {
    refuse(task.pid, describeVma(v), 'guard regions (VmFlags gu) in a locked area: they cannot be installed again once the area is locked');
  }
}

/** The guard pages of an area flagged `gu`, as spans of page indices within the area. */
export function guardSpans(task: CheckpointTask, v: VmaEntry, pagemapFd: number | undefined): Span[] {
  const PAGE = BigInt(linux.pageSize());
  const spans: Span[] = [];
  const regions = pagemapFd === undefined ? null : linux.pagemapScan(pagemapFd, v.start, v.end, linux.PAGE_IS.GUARD, linux.PAGE_IS.GUARD);
  if (regions) {
    for (const r of regions) spans.push([Number((r.start - v.start) / PAGE), Number((r.end - v.start) / PAGE)]);
    return spans;
  }
  // Without PAGEMAP_SCAN, entry by entry: bit 58 is the guard bit.
  const n = Number((v.end - v.start) / PAGE);
  const pm = linux.readPagemap(task.pid, v.start, n, Number(PAGE));
  for (let i = 0; i < pm.length; i++) {
    if ((pm[i] & linux.PAGEMAP.GUARD_REGION) === 0n) continue;
    const last = spans[spans.length - 1];
    if (last && last[1] === i) last[1]++;
    else spans.push([i, i + 1]);
  }
  return spans;
}

/** Runs [first, count) of pages to store, less the guard pages (which the pagemap shows as swapped). */
export function withoutGuards(runs: Array<[number, number]>, guards: Span[]): Array<[number, number]> {
  if (!guards.length) return runs;
  return subtract(runs.map(([f, c]): Span => [f, f + c]), guards).map(([s, e]): [number, number] => [s, e - s]);
}

/** Writes the area's VMA_GUARDS object (under its VMA, before its pages). */
export function dumpGuards(ctx: CheckpointContext, vmaTag: number, guards: Span[]): void {
  const img = new VmaGuardsImage();
  img.runs = guards.flatMap(([s, e]) => [BigInt(s), BigInt(e - s)]);
  ctx.write(img, vmaTag);
}

export const GUARDS_ORDER = 201;

/** Installs each area's guards again, as its VMA_GUARDS object is read. */
export class GuardsRestore implements RestoreHandler {
  readonly name = 'mm.guards';
  readonly order = GUARDS_ORDER;
  readonly types = [ObjectType.VMA_GUARDS];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as VmaGuardsImage;
    const where = `guard regions at image offset ${o.offset}`;
    const bad = (why: string) => new CptError('EBADIMG', `${where}: ${why}`, { pid: task.pid, object: 'vma-guards' });
    const entry = VMAS_OF_RESTART.get(ctx)?.get(o.ptag);
    if (!entry || entry.task !== task) throw bad('they belong to no memory area of the process');
    // Maps the area if it waited for its kind's records: they all come before this object.
    const area = entry.area();
    if (!area) throw bad('their memory area is not mapped');
    const v = area.img;
    if (!hasGuardFlag(v)) throw bad(`${describeVma(v)} has no VmFlags gu`);
    if (v.vmFlags.some((f) => LOCK_FLAGS.has(f))) throw bad(`${describeVma(v)} is locked`);
    const PAGE = BigInt(linux.pageSize());
    const pages = (v.end - v.start) / PAGE;
    if (img.runs.length % 2 || img.runs.length > 2 * MAX_RUNS) throw bad('a malformed list of runs');
    const calls = [];
    let next = 0n;
    for (let i = 0; i < img.runs.length; i += 2) {
      const [first, count] = [img.runs[i], img.runs[i + 1]];
      if (count <= 0n || first < next || first + count > pages) throw bad(`run [${first}, +${count}) is out of order or outside ${describeVma(v)}`);
      next = first + count;
      calls.push({ nr: linux.SYS.madvise, args: [v.start + first * PAGE, count * PAGE, linux.MADV.GUARD_INSTALL], what: `madvise(MADV_GUARD_INSTALL) in ${describeVma(v)}` });
    }
    if (!calls.length) {
      // The flag alone (every guard removed): set it again on the first page, which holds nothing yet.
      calls.push(
        { nr: linux.SYS.madvise, args: [v.start, PAGE, linux.MADV.GUARD_INSTALL], what: `madvise(MADV_GUARD_INSTALL) of the first page of ${describeVma(v)}` },
        { nr: linux.SYS.madvise, args: [v.start, PAGE, linux.MADV.GUARD_REMOVE], what: `madvise(MADV_GUARD_REMOVE) of the first page of ${describeVma(v)}` },
      );
    }
    runCalls(task.tracee!, calls);
  }
}
