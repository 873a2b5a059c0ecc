/** spans.ts: page-span arithmetic of the incremental plan, checked against a page-by-page model. */
import { expect } from 'chai';
import { Present, Span, groups, pagesIn, pushSpan, subtract } from '../src/spans';

/** A small deterministic generator (the same cases every run). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/** Random spans in [0, n): in order, without overlap, some touching (pushSpan merges those). */
function randomSpans(r: () => number, n: number): Span[] {
  const out: Span[] = [];
  for (let p = Math.floor(r() * 4); p < n;) {
    const len = 1 + Math.floor(r() * 6);
    pushSpan(out, p, Math.min(n, p + len));
    p += len + Math.floor(r() * 4);
  }
  return out;
}

const pages = (spans: Span[]): number[] => spans.flatMap(([s, e]) => Array.from({ length: e - s }, (_, i) => s + i));

describe('spans', () => {
  it('pushSpan merges touching and overlapping spans, and drops empty ones', () => {
    const s: Span[] = [];
    pushSpan(s, 2, 4);
    pushSpan(s, 4, 6);
    pushSpan(s, 5, 7);
    pushSpan(s, 9, 9);
    pushSpan(s, 10, 11);
    expect(s).to.deep.equal([[2, 7], [10, 11]]);
  });

  it('subtract gives the pages of one list in none of the other, as maximal spans', () => {
    const r = rng(12);
    for (let c = 0; c < 300; c++) {
      const a = randomSpans(r, 80);
      const b = randomSpans(r, 80);
      const inB = new Set(pages(b));
      const got = subtract(a, b);
      expect(pages(got)).to.deep.equal(pages(a).filter((p) => !inB.has(p)));
      for (let i = 1; i < got.length; i++) expect(got[i][0]).to.be.greaterThan(got[i - 1][1]);
      for (const [s, e] of got) expect(e).to.be.greaterThan(s);
    }
    expect(subtract([[0, 10]], [])).to.deep.equal([[0, 10]]);
    expect(subtract([], [[0, 10]])).to.deep.equal([]);
    expect(subtract([[0, 10]], [[0, 10]])).to.deep.equal([]);
    expect(subtract([[0, 10], [20, 30]], [[5, 25]])).to.deep.equal([[0, 5], [25, 30]]);
  });

  it('groups cuts spans into groups of at most `max` pages, all pages once and in order', () => {
    const r = rng(7);
    for (let c = 0; c < 200; c++) {
      const a = randomSpans(r, 200);
      const max = 1 + Math.floor(r() * 20);
      const gs = [...groups(a, max)];
      expect(gs.flatMap(pages)).to.deep.equal(pages(a));
      gs.forEach((g, i) => {
        // Every group is full but the last.
        if (i < gs.length - 1) expect(pagesIn(g)).to.equal(max);
        else expect(pagesIn(g)).to.be.within(1, max);
      });
    }
    expect([...groups([], 4)]).to.deep.equal([]);
  });

  it('Present numbers each present page by its place in address order', () => {
    const r = rng(3);
    for (let c = 0; c < 100; c++) {
      const a = randomSpans(r, 300);
      const present = new Present(a);
      const all = pages(a);
      expect(present.count).to.equal(all.length);
      all.forEach((p, i) => expect(present.at(p)).to.equal(i));
    }
  });
});
