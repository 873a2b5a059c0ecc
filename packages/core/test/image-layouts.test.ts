/** Layout metadata: registration checks, describeLayouts, the snapshot rule, reachability. */
import { expect } from 'chai';
import { CptError } from '../src/errors';
import {
  checkLayoutSnapshot, checkReachability, describeLayouts, FORMAT_MAJOR, FORMAT_MINOR, layoutOf, LayoutSnapshot,
  layoutSnapshot, ObjectType, objectType, record, recordLayout, str, u32, u64,
} from '../src/image';
import { TestPoint, TestProc } from './fixtures/image-test-layouts';

// Test-only layouts for the reachability check.
@objectType(1900, 'TEST_ORPHAN', { parents: [1901], testOnly: true })
class TestOrphan {}
@objectType(1902, 'TEST_CYCLE_A', { parents: [1903], testOnly: true })
class TestCycleA {}
@objectType(1903, 'TEST_CYCLE_B', { parents: [1902], testOnly: true })
class TestCycleB {}
@objectType(1904, 'TEST_UNDER_CYCLE', { parents: [1902], testOnly: true })
class TestUnderCycle {}
@objectType(1905, 'TEST_DEEP', { parents: [1903, 1000], testOnly: true })
class TestDeep {}
void [TestOrphan, TestCycleA, TestCycleB, TestUnderCycle, TestDeep];

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

describe('image: layouts', () => {
  describe('describeLayouts', () => {
    it('describes HEAD and TERMINATOR exactly and leaves test-only layouts out', () => {
      const d = describeLayouts();
      expect(d.objects.every((o) => o.type < 1000)).to.equal(true);
      expect(d.objects.find((o) => o.type === ObjectType.HEAD)).to.deep.equal({
        type: 1, name: 'HEAD', parents: [],
        fields: [
          { name: 'arch', kind: 'str' }, { name: 'kernelRelease', kind: 'str' }, { name: 'pageSize', kind: 'u32' },
          { name: 'xsaveFeatures', kind: 'u64' }, { name: 'xsaveSize', kind: 'u32' }, { name: 'cpuFlags', kind: 'strs' },
          { name: 'vdsoSize', kind: 'u32' }, { name: 'vdsoHash', kind: 'str' }, { name: 'createdNs', kind: 'u64' },
          { name: 'toolVersion', kind: 'str' }, { name: 'hostname', kind: 'str' }, { name: 'bootId', kind: 'str', since: 1 },
        ],
      });
      expect(d.objects.find((o) => o.type === ObjectType.TERMINATOR)).to.deep.equal({
        type: 2, name: 'TERMINATOR', parents: [1], fields: [{ name: 'objectCount', kind: 'u32' }],
      });
      expect(d.records.map((r) => r.name)).not.to.include('TestPoint');
    });

    it('with test-only layouts: sorted by type, nested records listed once, since recorded', () => {
      const d = describeLayouts({ includeTestOnly: true });
      const types = d.objects.map((o) => o.type);
      expect(types).to.deep.equal([...types].sort((a, b) => a - b));
      const proc = d.objects.find((o) => o.type === 1000);
      expect(proc?.fields.slice(-2)).to.deep.equal([
        { name: 'origin', kind: 'record', layout: 'TestPoint' }, { name: 'path', kind: 'records', layout: 'TestPoint' },
      ]);
      expect(d.objects.find((o) => o.type === 1010)?.fields.slice(2)).to.deep.equal([
        { name: 'c', kind: 'u64', since: 1 }, { name: 'd', kind: 'strs', since: 1 }, { name: 'p', kind: 'record', since: 1, layout: 'TestPoint' },
      ]);
      expect(d.objects.find((o) => o.type === 1002)?.parents).to.deep.equal([1, 1000, 1002]);
      // only records an object layout uses; TestVersionedNewer/Older are used by none
      expect(d.records).to.deep.equal([{ name: 'TestPoint', fields: [{ name: 'x', kind: 'i32' }, { name: 'y', kind: 'i32' }] }]);
      expect(JSON.parse(JSON.stringify(d))).to.deep.equal(d);
    });

    it('layoutOf gives the registered layout of a class', () => {
      expect(layoutOf(TestProc)?.type).to.equal(1000);
      expect(layoutOf(TestPoint)?.type).to.equal(undefined);
      expect(layoutOf(class Plain {})).to.equal(undefined);
    });
  });

  describe('registration checks (bugs caught at load time)', () => {
    const bug = (fn: () => unknown, re: RegExp): void => {
      expect(fn).to.throw(CptError, re).with.property('code', 'EINVAL');
    };

    it('a decorator that contradicts the declared TypeScript type', () => {
      bug(() => {
        class Wrong {
          @u32() big: bigint = 0n;
        }
        return Wrong;
      }, /Wrong\.big: @u32\(\) on a property declared as BigInt/);
      bug(() => {
        class Wrong2 {
          @u64() n: number = 0;
        }
        return Wrong2;
      }, /@u64\(\) on a property declared as Number/);
      bug(() => {
        class Wrong3 {
          @record(TestPoint) p: string = '';
        }
        return Wrong3;
      }, /@record\(\) on a property declared as String/);
    });

    it('fields after a {since} field without one', () => {
      bug(() => {
        @recordLayout('TestBadSince')
        class BadSince {
          @u32({ since: 1 }) a: number = 0;
          @u32() b: number = 0;
        }
        return BadSince;
      }, /BadSince\.b: fields after a \{since\} field/);
    });

    it('duplicate type numbers, bad type numbers, parents, record names, missing nested classes', () => {
      bug(() => {
        @objectType(1000, 'TEST_DUP', { parents: [ObjectType.HEAD], testOnly: true })
        class Dup {}
        return Dup;
      }, /object type 1000 is already registered as TEST_PROC/);
      bug(() => {
        @objectType(70000, 'TEST_BIG', { parents: [ObjectType.HEAD], testOnly: true })
        class Big {}
        return Big;
      }, /not in 1\.\.65535/);
      bug(() => {
        @objectType(1950, 'TEST_NOPARENT', { parents: [], testOnly: true })
        class NoParent {}
        return NoParent;
      }, /only HEAD has no parents/);
      bug(() => {
        @recordLayout('TestPoint')
        class Point2 {}
        return Point2;
      }, /record layout name TestPoint is already used/);
      bug(() => {
        class Fwd {
          @record(undefined as never) p: object = {};
        }
        return Fwd;
      }, /needs a layout class/);
    });

    it('inherits fields from a decorated base class, base fields first', () => {
      @recordLayout('TestBase')
      class Base {
        @u32() a: number = 0;
      }
      @recordLayout('TestDerived')
      class Derived extends Base {
        @str() b: string = '';
      }
      expect(layoutOf(Derived)?.fields.map((f) => f.name)).to.deep.equal(['a', 'b']);
    });
  });

  describe('checkLayoutSnapshot', () => {
    // A committed snapshot, with test layouts so there are nested records to change.
    const committed = (): LayoutSnapshot => clone(layoutSnapshot({ includeTestOnly: true }));
    const bumped = (s: LayoutSnapshot, major: number, minor: number): LayoutSnapshot => ({ ...s, format: { major, minor } });
    const head = (s: LayoutSnapshot) => s.layouts.objects.find((o) => o.type === ObjectType.HEAD)!;

    it('an up-to-date snapshot (also after a JSON round trip) has no differences', () => {
      expect(layoutSnapshot().format).to.deep.equal({ major: FORMAT_MAJOR, minor: FORMAT_MINOR });
      expect(checkLayoutSnapshot(clone(layoutSnapshot()))).to.deep.equal([]);
      expect(checkLayoutSnapshot(committed(), layoutSnapshot({ includeTestOnly: true }))).to.deep.equal([]);
    });

    it('reports a layout changed with the same version, and which bump it needs', () => {
      const old = committed();
      const now = committed();
      head(now).fields[2].kind = 'u64'; // pageSize u32 -> u64
      expect(checkLayoutSnapshot(old, now)).to.deep.equal([
        'object type 1 (HEAD) field 2 changed from "pageSize: u32" to "pageSize: u64" without a format version change ' +
        `(format ${FORMAT_MAJOR}.${FORMAT_MINOR}): bump FORMAT_MAJOR (or make it compatible: append fields with {since})`,
      ]);
      // By default the committed snapshot is checked against the live layouts.
      const live = clone(layoutSnapshot());
      head(live).fields[2].kind = 'u64';
      expect(checkLayoutSnapshot(live)).to.have.length(1).and.to.match(/HEAD\) field 2 changed/);
    });

    it('a compatible change (appended {since} field, new type, new record) with the same version needs FORMAT_MINOR', () => {
      const old = committed();
      const now = committed();
      head(now).fields.push({ name: 'newField', kind: 'str', since: FORMAT_MINOR + 1 });
      now.layouts.objects.push({ type: 99, name: 'NEW', parents: [1], fields: [] });
      now.layouts.records.push({ name: 'NewRecord', fields: [] });
      const diffs = checkLayoutSnapshot(old, now);
      expect(diffs).to.have.length(3);
      expect(diffs.every((d) => /without a format version change .*: bump FORMAT_MINOR$/.test(d))).to.equal(true, diffs.join('\n'));
      expect(diffs[0]).to.include(`HEAD) field "newField: str since ${FORMAT_MINOR + 1}" appended`);
    });

    it('after a FORMAT_MINOR bump: compatible changes ask to regenerate the snapshot', () => {
      const old = committed();
      const now = bumped(committed(), FORMAT_MAJOR, FORMAT_MINOR + 1);
      head(now).fields.push({ name: 'newField', kind: 'str', since: FORMAT_MINOR + 1 });
      const diffs = checkLayoutSnapshot(old, now);
      expect(diffs).to.have.length(1);
      expect(diffs[0]).to.include(`layouts changed with format ${FORMAT_MAJOR}.${FORMAT_MINOR} -> ${FORMAT_MAJOR}.${FORMAT_MINOR + 1}: regenerate the snapshot (`)
        .and.to.include('newField');
    });

    it('after a FORMAT_MINOR bump: incompatible changes need FORMAT_MAJOR', () => {
      const cases: ((s: LayoutSnapshot) => void)[] = [
        (s) => head(s).fields.push({ name: 'noSince', kind: 'u32' }), // appended without since
        (s) => head(s).fields.push({ name: 'oldSince', kind: 'u32', since: FORMAT_MINOR }), // since not above the old minor
        (s) => head(s).fields.splice(1, 1), // removed / shifted fields
        (s) => (head(s).fields[0].name = 'architecture'),
        (s) => s.layouts.objects.splice(1, 1), // a type removed
        (s) => s.layouts.objects.find((o) => o.type === 1001)!.parents.push(1002),
        (s) => s.layouts.records[0].fields.reverse(),
      ];
      for (const change of cases) {
        const now = bumped(committed(), FORMAT_MAJOR, FORMAT_MINOR + 1);
        change(now);
        const diffs = checkLayoutSnapshot(committed(), now);
        expect(diffs.length).to.be.at.least(1);
        expect(diffs.every((d) => /incompatible, needs a FORMAT_MAJOR bump/.test(d))).to.equal(true, `${change.toString()}: ${diffs.join('\n')}`);
      }
    });

    it('after a FORMAT_MAJOR bump anything goes, but the snapshot must be regenerated', () => {
      const now = bumped(committed(), FORMAT_MAJOR + 1, 0);
      head(now).fields.reverse();
      expect(checkLayoutSnapshot(committed(), now)).to.have.length(1).and.to.match(/regenerate the snapshot/);
    });

    it('a version change without layout change, a version going backwards, a malformed snapshot', () => {
      expect(checkLayoutSnapshot(committed(), bumped(committed(), FORMAT_MAJOR, FORMAT_MINOR + 1)))
        .to.deep.equal([`format version changed from ${FORMAT_MAJOR}.${FORMAT_MINOR} to ${FORMAT_MAJOR}.${FORMAT_MINOR + 1} with no layout change: regenerate the snapshot`]);
      expect(checkLayoutSnapshot(bumped(committed(), FORMAT_MAJOR, FORMAT_MINOR + 1), committed()))
        .to.deep.equal([`format version went backwards from ${FORMAT_MAJOR}.${FORMAT_MINOR + 1} to ${FORMAT_MAJOR}.${FORMAT_MINOR}`]);
      expect(checkLayoutSnapshot({})).to.have.length(1).and.to.match(/malformed/);
      expect(checkLayoutSnapshot({ format: { major: 1, minor: 0 }, layouts: { objects: [{ type: 'x' }], records: [] } }))
        .to.match(/malformed/);
    });
  });

  describe('checkReachability', () => {
    it('every registered non-test type reaches HEAD', () => {
      expect(checkReachability()).to.deep.equal([]);
    });

    it('reports types whose parent chain does not reach HEAD', () => {
      const problems = checkReachability({ includeTestOnly: true });
      expect(problems).to.deep.equal([
        'object type 1900 (TEST_ORPHAN) does not reach HEAD through its parents [type 1901]; unregistered: type 1901',
        'object type 1902 (TEST_CYCLE_A) does not reach HEAD through its parents [TEST_CYCLE_B]; only through a cycle or unreachable types',
        'object type 1903 (TEST_CYCLE_B) does not reach HEAD through its parents [TEST_CYCLE_A]; only through a cycle or unreachable types',
        'object type 1904 (TEST_UNDER_CYCLE) does not reach HEAD through its parents [TEST_CYCLE_A]; only through a cycle or unreachable types',
      ]);
    });
  });
});
