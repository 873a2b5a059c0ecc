/**
 * The extension model: claims by priority, object type numbers with owners, typed per-task state,
 * and the records a kind writes under its generic object.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { container } from 'tsyringe';
import {
  CheckpointContext, CptError, ImageHead, ImageReader, ImageWriter, KindHandler, MemorySink, ObjectType, RecordList, StateKey, TaskState,
  bufferSource, claim, kindNamed, kindRecordTypes, kindRecordWriter, objectType, objectTypeEntry, provide, registerObjectType,
  requireKindRecord, resolveAll, token, u32,
} from '../src';

interface Thing {
  name: string;
}
class Kind implements KindHandler<Thing> {
  constructor(readonly kind: string, private readonly match: RegExp, readonly priority?: number, readonly records?: KindHandler<Thing>['records']) {}
  claims(t: Thing): boolean {
    return this.match.test(t.name);
  }
}
class Other extends Kind {}

const OWNER = '@test/extension-model';
const TYPE = registerObjectType(1777, 'TEST_KIND_REC', OWNER);
@objectType(TYPE, 'TEST_KIND_REC', { parents: [ObjectType.HEAD], testOnly: true })
class KindRec {
  @u32() n = 0;
}
@objectType(1778, 'TEST_OTHER_REC', { parents: [ObjectType.HEAD], testOnly: true, owner: OWNER })
class OtherRec {
  @u32() n = 0;
}

const thrown = (fn: () => unknown): CptError => {
  try {
    fn();
  } catch (e) {
    return e as CptError;
  }
  throw new Error('did not throw');
};

describe('extension model', () => {
  describe('claim: the highest priority wins; a tie at the top is an error naming both', () => {
    const generic = new Kind('generic', /./);
    const special = new Kind('special', /^special/, 10);
    it('takes the only claimant, or the one of highest priority', () => {
      expect(claim([generic], { name: 'x' }, 1, 'thing x')).to.equal(generic);
      expect(claim([generic, special], { name: 'special-1' }, 1, 'thing')).to.equal(special);
      expect(claim([special, generic], { name: 'special-1' }, 1, 'thing')).to.equal(special);
      expect(claim([special, generic], { name: 'plain' }, 1, 'thing')).to.equal(generic);
    });
    it('none: EOPNOTSUPP naming the process and the object', () => {
      const e = thrown(() => claim([special], { name: 'plain' }, 42, 'thing plain', 'no handler for this kind of thing'));
      expect(e.code).to.equal('EOPNOTSUPP');
      expect([e.pid, e.object, e.message]).to.deep.equal([42, 'thing plain', 'no handler for this kind of thing']);
    });
    it('two at the same highest priority: EBUSY naming both handlers and the object', () => {
      const e = thrown(() => claim([generic, new Other('copy', /./), special], { name: 'x' }, 42, 'thing x'));
      expect(e.code).to.equal('EBUSY');
      expect(e.object).to.equal('thing x');
      expect(e.message).to.include('generic (Kind)').and.include('copy (Other)').and.include('priority 0');
      // a higher claim above the tie settles it
      expect(claim([generic, new Other('copy', /./), special], { name: 'special' }, 42, 'thing')).to.equal(special);
    });
    it('kindNamed: the kind of that name with the highest priority (a takeover restores too)', () => {
      const takeover = new Other('generic', /./, 5);
      expect(kindNamed([generic, takeover], 'generic')).to.equal(takeover);
      expect(kindNamed([generic], 'generic')).to.equal(generic);
      expect(kindNamed([generic], 'missing')).to.equal(undefined);
    });
  });

  describe('object type numbers', () => {
    it('are declared once; another owner of the same number is an error naming both', () => {
      expect(objectTypeEntry(TYPE)).to.deep.equal({ type: 1777, name: 'TEST_KIND_REC', owner: OWNER });
      expect(objectTypeEntry(1778)?.owner).to.equal(OWNER);
      expect(registerObjectType(1777, 'TEST_KIND_REC', OWNER)).to.equal(1777);
      const e = thrown(() => registerObjectType(1777, 'MINE', '@someone/else'));
      expect(e.message).to.include(OWNER).and.include('@someone/else').and.include('1777');
      expect(objectTypeEntry(ObjectType.FILE)?.owner).to.equal('@cptrst/files');
    });
    it('1-999 are reserved for cptrst\'s own packages; a layout of a third party needs an owner', () => {
      expect(thrown(() => registerObjectType(500, 'X', '@someone/else')).message).to.include('reserved');
      expect(thrown(() => registerObjectType(0, 'X', OWNER)).message).to.include('not in 1..65535');
      expect(thrown(() => objectType(1779, 'TEST_NOBODY', { parents: [ObjectType.HEAD] })(class NoOwner {})).message).to.include('declared by nobody');
      registerObjectType(1781, 'TEST_WRONG', OWNER);
      expect(thrown(() => objectType(1781, 'TEST_WRONG', { parents: [ObjectType.HEAD], testOnly: true, owner: '@x/y' })(class Wrong {})).message)
        .to.include(`declared by ${OWNER}, not by @x/y`);
      expect(thrown(() => objectType(ObjectType.FILE, 'TEST_FILE', { parents: [ObjectType.HEAD], owner: '@x/y' })(class F {})).message).to.include('declared by @cptrst/files, not by @x/y');
    });
  });

  it('typed tokens and state keys', () => {
    const T = token<{ n: number }>('test.thing');
    const c = container.createChildContainer();
    expect(resolveAll(c, T)).to.deep.equal([]);
    provide(c, T, { n: 1 });
    provide(c, T, { n: 2 });
    expect(resolveAll(c, T).map((x) => x.n)).to.deep.equal([1, 2]);
    const A = new StateKey<number[]>('a');
    const A2 = new StateKey<number[]>('a'); // same name, another key
    const s = new TaskState();
    expect(s.get(A)).to.equal(undefined);
    s.ensure(A, () => []).push(1);
    s.ensure(A, () => [99]).push(2);
    expect(s.get(A)).to.deep.equal([1, 2]);
    expect(s.has(A2)).to.equal(false);
    expect(s.delete(A)).to.equal(true);
    expect(s.has(A)).to.equal(false);
  });

  it('kind records: a kind writes only what it declares, under its object; restore refuses a record of another kind', () => {
    const withRecs = new Kind('with', /./, 0, [KindRec]);
    const bare = new Kind('bare', /./);
    expect(kindRecordTypes(withRecs)).to.deep.equal([1777]);
    expect(kindRecordTypes(bare)).to.deep.equal([]);
    const sink = new MemorySink();
    const w = new ImageWriter(sink);
    w.writeHead(new ImageHead({ arch: 'x86_64', kernelRelease: 'test', pageSize: 4096 }));
    const ctx = new CheckpointContext(container.createChildContainer(), w, 0);
    const out = kindRecordWriter(ctx, withRecs, ctx.headTag);
    const tag = out.write(Object.assign(new KindRec(), { n: 7 }));
    expect(ctx.objects.get(tag)).to.deep.equal({ type: 1777, ptag: 1 });
    expect(thrown(() => out.write(new OtherRec())).message).to.include('not among the records it declares');
    w.writeTerminator();
    const r = new ImageReader(bufferSource(sink.toBuffer()));
    r.readHead();
    const rec = r.next()!;
    const list = new RecordList();
    const o = { type: rec.type, tag: rec.tag, ptag: rec.ptag, offset: rec.offset, obj: rec.obj };
    requireKindRecord(withRecs, o, 1, 'thing', 'not its record');
    list.all.push(o);
    expect(list.of(KindRec).map((x) => x.n)).to.deep.equal([7]);
    expect(list.of(OtherRec)).to.deep.equal([]);
    expect(thrown(() => requireKindRecord(bare, o, 1, 'thing', 'not its record')).code).to.equal('EBADIMG');
  });
});
