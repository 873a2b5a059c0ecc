/** Address ranges: [start, end), page aligned, as bigints. */
import { CptError } from '@cptrst/core';
export interface Range {
  start: bigint;
  end: bigint;
}

const LOW = 0x10000n;

export const overlaps = (a: Range, b: Range): boolean => a.start < b.end && b.start < a.end;

/** A free range of `size` bytes below `top` (the Arch's userSpaceTop) that overlaps none of `avoid`, searching upward from `from`. */
export function findFreeRange(size: bigint, avoid: Range[], top: bigint, from = 0x200000000n): Range {
  const sorted = [...avoid].sort((a, b) => (a.start < b.start ? -1 : 1));
  let at = from;
  for (const r of sorted) {
    if (r.end <= at) continue;
    if (r.start >= at + size) break;
    at = r.end;
  }
  if (at + size > top) throw new CptError('ENOMEM', `no free ${size}-byte range in the address space`, { object: 'address space' });
  return { start: at, end: at + size };
}

/** The parts of [LOW, top) not covered by `keep` (`top`: the Arch's userSpaceTop). */
export function complement(keep: Range[], top: bigint): Range[] {
  const sorted = [...keep].sort((a, b) => (a.start < b.start ? -1 : 1));
  const out: Range[] = [];
  let at = LOW;
  for (const r of sorted) {
    if (r.start >= top) break; // [vsyscall] and such: above user space, nothing to clear
    if (r.start > at) out.push({ start: at, end: r.start });
    if (r.end > at) at = r.end;
  }
  if (at < top) out.push({ start: at, end: top });
  return out;
}
