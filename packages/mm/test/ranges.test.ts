/** ranges.ts: address-range arithmetic, pure. */
import { expect } from 'chai';
import { Range, complement as complementBelow, findFreeRange as findFreeRangeBelow, overlaps } from '../src/ranges';

// The top of user space is the Arch's: x86-64's here (arch-x86 is loaded at run time, as in the other tests).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const USER_TOP: bigint = require('@cptrst/arch-x86').X86_64.userSpaceTop;
const complement = (keep: Range[]): Range[] => complementBelow(keep, USER_TOP);
const findFreeRange = (size: bigint, avoid: Range[], from?: bigint): Range => findFreeRangeBelow(size, avoid, USER_TOP, from);

const r = (start: number | bigint, end: number | bigint): Range => ({ start: BigInt(start), end: BigInt(end) });
const FROM = 0x200000000n;
const LOW = 0x10000n;

describe('ranges', () => {
  describe('overlaps', () => {
    it('is true for ranges that share at least one byte, false for adjacent or disjoint ones', () => {
      expect(overlaps(r(0x1000, 0x3000), r(0x2000, 0x4000))).to.equal(true);
      expect(overlaps(r(0x2000, 0x4000), r(0x1000, 0x3000))).to.equal(true);
      expect(overlaps(r(0x1000, 0x5000), r(0x2000, 0x3000))).to.equal(true); // contains
      expect(overlaps(r(0x2000, 0x3000), r(0x1000, 0x5000))).to.equal(true); // contained
      expect(overlaps(r(0x1000, 0x2000), r(0x1000, 0x2000))).to.equal(true); // identical
      expect(overlaps(r(0x1000, 0x2000), r(0x1fff, 0x2000))).to.equal(true); // last byte
      expect(overlaps(r(0x1000, 0x2000), r(0x2000, 0x3000))).to.equal(false); // adjacent: end is exclusive
      expect(overlaps(r(0x2000, 0x3000), r(0x1000, 0x2000))).to.equal(false);
      expect(overlaps(r(0x1000, 0x2000), r(0x5000, 0x6000))).to.equal(false);
    });
  });

  describe('findFreeRange', () => {
    it('takes `from` when nothing is in the way, whatever lies below it', () => {
      expect(findFreeRange(0x10000n, [])).to.deep.equal(r(FROM, FROM + 0x10000n));
      expect(findFreeRange(0x1000n, [r(0x1000, 0x100000000), r(0x100000000, FROM)])).to.deep.equal(r(FROM, FROM + 0x1000n));
      expect(findFreeRange(0x1000n, [], 0x50000n)).to.deep.equal(r(0x50000, 0x51000));
    });

    it('steps past a range that covers `from`, and past runs of adjacent or overlapping ranges', () => {
      expect(findFreeRange(0x1000n, [r(FROM - 0x1000n, FROM + 0x3000n)])).to.deep.equal(r(FROM + 0x3000n, FROM + 0x4000n));
      const run = [r(FROM, FROM + 0x2000n), r(FROM + 0x2000n, FROM + 0x5000n), r(FROM + 0x4000n, FROM + 0x9000n)];
      expect(findFreeRange(0x1000n, run)).to.deep.equal(r(FROM + 0x9000n, FROM + 0xa000n));
      // A range nested inside an earlier, longer one does not pull the search back.
      const nested = [r(FROM, FROM + 0x10000n), r(FROM + 0x1000n, FROM + 0x2000n)];
      expect(findFreeRange(0x1000n, nested)).to.deep.equal(r(FROM + 0x10000n, FROM + 0x11000n));
    });

    it('uses a gap that fits exactly, and skips one that is a byte too small', () => {
      const avoid = [r(FROM, FROM + 0x1000n), r(FROM + 0x3000n, FROM + 0x4000n), r(FROM + 0x5fffn + 0x1000n, FROM + 0x8000n)];
      expect(findFreeRange(0x2000n, avoid)).to.deep.equal(r(FROM + 0x1000n, FROM + 0x3000n)); // exact fit
      expect(findFreeRange(0x2001n, avoid)).to.deep.equal(r(FROM + 0x4000n, FROM + 0x6001n)); // [1000,3000) is a byte short
      expect(findFreeRange(0x2fffn, avoid)).to.deep.equal(r(FROM + 0x4000n, FROM + 0x6fffn)); // [4000,6fff) exactly
      expect(findFreeRange(0x3000n, avoid)).to.deep.equal(r(FROM + 0x8000n, FROM + 0xb000n)); // no gap is big enough
    });

    it('does not depend on the order of `avoid`', () => {
      const avoid = [r(FROM + 0x8000n, FROM + 0x9000n), r(FROM, FROM + 0x2000n), r(FROM + 0x2000n, FROM + 0x7000n)];
      expect(findFreeRange(0x1000n, avoid)).to.deep.equal(r(FROM + 0x7000n, FROM + 0x8000n));
      expect(findFreeRange(0x1001n, avoid)).to.deep.equal(r(FROM + 0x9000n, FROM + 0xa001n));
      expect(findFreeRange(0x1000n, [...avoid].reverse())).to.deep.equal(r(FROM + 0x7000n, FROM + 0x8000n));
      expect(avoid[0]).to.deep.equal(r(FROM + 0x8000n, FROM + 0x9000n)); // the caller's array is not reordered
    });

    it('throws when nothing fits below USER_TOP, and accepts a range ending exactly at it', () => {
      expect(() => findFreeRange(0x1000n, [r(FROM, USER_TOP)])).to.throw(/no free 4096-byte range/);
      expect(() => findFreeRange(USER_TOP, [])).to.throw(/no free/);
      expect(findFreeRange(0x1000n, [r(FROM, USER_TOP - 0x1000n)])).to.deep.equal(r(USER_TOP - 0x1000n, USER_TOP));
    });
  });

  describe('complement', () => {
    it('of nothing is the whole user range [0x10000, USER_TOP)', () => {
      expect(complement([])).to.deep.equal([r(LOW, USER_TOP)]);
      expect(USER_TOP).to.equal(0x7ffffffff000n);
    });

    it('leaves out the kept ranges, in address order, whatever their order', () => {
      const keep = [r(0x7f0000000000n, 0x7f0000002000n), r(0x400000, 0x401000)];
      expect(complement(keep)).to.deep.equal([r(LOW, 0x400000), r(0x401000, 0x7f0000000000n), r(0x7f0000002000n, USER_TOP)]);
    });

    it('merges adjacent, overlapping and nested kept ranges (no empty pieces)', () => {
      const keep = [r(0x100000, 0x200000), r(0x200000, 0x300000), r(0x250000, 0x280000), r(0x280000, 0x400000)];
      expect(complement(keep)).to.deep.equal([r(LOW, 0x100000), r(0x400000, USER_TOP)]);
    });

    it('has no piece below 0x10000 nor at the top when the kept ranges reach the ends', () => {
      expect(complement([r(0, 0x20000)])).to.deep.equal([r(0x20000, USER_TOP)]);
      expect(complement([r(LOW, 0x20000), r(0x30000, USER_TOP)])).to.deep.equal([r(0x20000, 0x30000)]);
      expect(complement([r(0x1000, USER_TOP)])).to.deep.equal([]);
    });

    it('every piece is inside [0x10000, USER_TOP) and overlaps no kept range', () => {
      const keep = [r(0x555555554000n, 0x555555556000n), r(0x7ffff7fc1000n, 0x7ffff7fc5000n), r(0x7ffffffde000n, 0x7ffffffff000n), r(0x20000, 0x21000)];
      const out = complement(keep);
      for (const p of out) {
        expect(p.start >= LOW && p.end <= USER_TOP && p.start < p.end, JSON.stringify(p, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))).to.equal(true);
        for (const k of keep) expect(overlaps(p, k)).to.equal(false);
      }
      const covered = out.reduce((a, p) => a + (p.end - p.start), 0n) + keep.reduce((a, k) => a + (k.end - k.start), 0n);
      expect(covered).to.equal(USER_TOP - LOW);
    });

    // A kept range above USER_TOP (e.g. [vsyscall], which readMaps reports) must not stretch
    // the last piece past USER_TOP: a munmap of it would fail with EINVAL.
    it('clamps pieces to USER_TOP when a kept range lies above it', () => {
      const vsyscall = r(0xffffffffff600000n, 0xffffffffff601000n);
      expect(complement([r(0x400000, 0x401000), vsyscall])).to.deep.equal([r(LOW, 0x400000), r(0x401000, USER_TOP)]);
    });
  });
});
