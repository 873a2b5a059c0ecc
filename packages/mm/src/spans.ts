/**
 * Page spans: [first, end) by page number, in address order and without overlap. The incremental
 * dump plans an area with them (incremental.ts) instead of page by page: the plan is made while
 * the process is frozen.
 */

/** Pages [first, end) by page number (address / page size, exact as a double). */
export type Span = [number, number];

/** Appends [s, e) to spans in order, merged with the last one where they touch. */
export function pushSpan(spans: Span[], s: number, e: number): void {
  const last = spans[spans.length - 1];
  if (last && s <= last[1]) last[1] = Math.max(last[1], e);
  else if (s < e) spans.push([s, e]);
}

/** The pages of `a` in none of `b` (both in order, without overlap). */
export function subtract(a: Span[], b: Span[]): Span[] {
  const out: Span[] = [];
  let j = 0;
  for (const [first, e] of a) {
    let s = first;
    while (j < b.length && b[j][1] <= s) j++;
    for (let k = j; s < e && k < b.length && b[k][0] < e; k++) {
      if (b[k][0] > s) out.push([s, b[k][0]]);
      s = Math.max(s, b[k][1]);
    }
    if (s < e) out.push([s, e]);
  }
  return out;
}

export const pagesIn = (spans: Span[]): number => spans.reduce((n, [s, e]) => n + e - s, 0);

/** `spans` cut into groups of at most `max` pages, in order (a span may be split between two). */
export function* groups(spans: Span[], max: number): Generator<Span[]> {
  let group: Span[] = [];
  let n = 0;
  for (const [first, e] of spans) {
    for (let s = first; s < e;) {
      const take = Math.min(e - s, max - n);
      group.push([s, s + take]);
      n += take;
      s += take;
      if (n === max) {
        yield group;
        group = [];
        n = 0;
      }
    }
  }
  if (group.length) yield group;
}

/** An area's present pages, and where each one's hash is among them (its index in address order). */
export class Present {
  private readonly before: number[] = [];
  readonly count: number;
  constructor(private readonly spans: Span[]) {
    let n = 0;
    for (const [s, e] of spans) {
      this.before.push(n);
      n += e - s;
    }
    this.count = n;
  }

  /** The index of present page `p`. */
  at(p: number): number {
    let lo = 0;
    let hi = this.spans.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.spans[mid][0] <= p) lo = mid;
      else hi = mid - 1;
    }
    return this.before[lo] + p - this.spans[lo][0];
  }
}
