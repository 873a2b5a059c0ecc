/** Address ranges: [start, end), page aligned, as bigints. */
import { CptError } from '@cptrst/core';
export interface Range {
  start: bigint;
  end: bigint;
}

/** Highest user address for mappings on x86-64 with 4-level paging (TASK_SIZE_MAX). */
export const USER_TOP = 0x7ffffffff000n;
const LOW = 0x10000n;

export const overlaps = (a: Range, b: Range): boolean => a.start < b.end && b.start < a.end;

/** A free range of `size` bytes that overlaps none of `avoid`, searching upward from `from`. */
export function findFreeRange(size: bigint, avoid: Range[], from = 0x200000000n): Range {
  const sorted = [...avoid].sort((a, b) => (a.start < b.start ? -1 : 1));
  let at = from;
  for (const r of sorted) {
    if (r.end <= at) continue;
    if (r.start >= at + size) break;
    at = r.end;
  }
  if (at + size > USER_TOP) throw new CptError('ENOMEM', `no free ${size}-byte range in the address space`, { object: 'address space' });
  return { start: at, end: at + size };
}

/** The parts of [LOW, USER_TOP) not covered by `keep`. */
export function complement(keep: Range[]): Range[] {
  const sorted = [...keep].sort((a, b) => (a.start < b.start ? -1 : 1));
  const out: Range[] = [];
  let at = LOW;
  for (const r of sorted) {
    if (r.start >= USER_TOP) break; // [vsyscall] and such: above user space, nothing to clear
    if (r.start > at) out.push({ start: at, end: r.start });
    if (r.end > at) at = r.end;
  }
  if (at < USER_TOP) out.push({ start: at, end: USER_TOP });
  return out;
}
