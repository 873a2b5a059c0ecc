import { expect } from 'chai';
import { boundedRanges } from '../src/tracking';

describe('tracking: the ranges a tracker carries', () => {
  it('merges and sorts; past the bound, coarsens to aligned ranges that cover every page given (never fewer)', () => {
    const P = 4096n;
    expect(boundedRanges([{ start: 5n * P, end: 6n * P }, { start: P, end: 3n * P }, { start: 2n * P, end: 4n * P }])).to.deep.equal([
      { start: P, end: 4n * P },
      { start: 5n * P, end: 6n * P },
    ]);
    // Every other page of 1000: 500 ranges, bounded to 10.
    const given = Array.from({ length: 500 }, (_, i) => ({ start: BigInt(2 * i) * P, end: BigInt(2 * i + 1) * P }));
    const out = boundedRanges(given, 10);
    expect(out.length).to.be.at.most(10);
    for (const g of given) expect(out.some((r) => r.start <= g.start && g.end <= r.end), `page at ${g.start}`).to.equal(true);
    for (let i = 1; i < out.length; i++) expect(out[i - 1].end < out[i].start).to.equal(true);
  });
});
