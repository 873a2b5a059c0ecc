/**
 * Property tests: valid images round-trip, and any mutation of a valid image either still
 * decodes or is refused with ImageError: never another exception, a hang or a huge allocation.
 */
import { expect } from 'chai';
import * as fc from 'fast-check';
import {
  decodeRecord, encodeRecord, HeaderOffset, ImageError, ImageWriter, MemorySink, ObjectType, OBJ_HEADER_SIZE, PREAMBLE_SIZE,
} from '../src/image';
import { readAll, reseal } from './fixtures/image-helpers';
import {
  make, sampleHead, samplePages, TestMap, TestNote, TestPoint, TestProc, TestVersioned, UNKNOWN_TYPE,
} from './fixtures/image-test-layouts';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const i32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const text = fc.string({ unit: 'binary', maxLength: 12 });
const pointArb = fc.record({ x: i32, y: i32 }).map((p) => make(TestPoint, p));

const procArb = fc.record({
  pid: u32, comm: text, alive: fc.boolean(), nice: fc.integer({ min: 0, max: 255 }), flags: fc.integer({ min: 0, max: 0xffff }),
  exitCode: i32, start: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), delta: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
  blob: fc.uint8Array({ maxLength: 24 }).map((a) => Buffer.from(a)),
  addrs: fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { maxLength: 4 }),
  fds: fc.array(u32, { maxLength: 4 }), argv: fc.array(text, { maxLength: 4 }),
  origin: pointArb, path: fc.array(pointArb, { maxLength: 3 }),
}).map((v) => make(TestProc, v));

type Step =
  | { kind: 'proc'; proc: TestProc }
  | { kind: 'map'; name: string; pages: number; parent: number }
  | { kind: 'note'; text: string; parent: number }
  | { kind: 'versioned'; a: number; c: bigint }
  | { kind: 'unknown'; body: Uint8Array; pages: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('proc' as const), proc: procArb }),
  fc.record({ kind: fc.constant('map' as const), name: text, pages: fc.integer({ min: 0, max: 2 }), parent: fc.nat() }),
  fc.record({ kind: fc.constant('note' as const), text, parent: fc.nat() }),
  fc.record({ kind: fc.constant('versioned' as const), a: u32, c: fc.bigInt({ min: 0n, max: 1000n }) }),
  fc.record({ kind: fc.constant('unknown' as const), body: fc.uint8Array({ maxLength: 16 }), pages: fc.integer({ min: 0, max: 1 }) }),
);

interface Built {
  buf: Buffer;
  offsets: number[];
  expected: { type: number; obj?: object; pages?: Buffer }[];
}

function build(pageSize: number, steps: Step[]): Built {
  const sink = new MemorySink();
  const w = new ImageWriter(sink);
  const offsets: number[] = [PREAMBLE_SIZE];
  const expected: Built['expected'] = [];
  w.writeHead(sampleHead(pageSize));
  const procs: number[] = [];
  const notes: number[] = [];
  const put = (type: number, obj: object | undefined, pages: Buffer | undefined, write: () => number): number => {
    offsets.push(w.offset);
    expected.push({ type, obj, pages });
    return write();
  };
  steps.forEach((s, i) => {
    switch (s.kind) {
      case 'proc':
        procs.push(put(1000, s.proc, undefined, () => w.write(s.proc)));
        break;
      case 'map': {
        if (procs.length === 0) procs.push(put(1000, new TestProc(), undefined, () => w.write(new TestProc())));
        const m = make(TestMap, { start: BigInt(i), end: BigInt(i + s.pages), name: s.name });
        const pages = samplePages(s.pages, pageSize, i);
        put(1001, m, pages, () => w.writeWithPages(m, pages, { ptag: procs[s.parent % procs.length] }));
        break;
      }
      case 'note': {
        const parents = [1, ...procs, ...notes];
        const n = make(TestNote, { text: s.text });
        notes.push(put(1002, n, undefined, () => w.write(n, { ptag: parents[s.parent % parents.length] })));
        break;
      }
      case 'versioned': {
        const v = make(TestVersioned, { a: s.a, b: 'v', c: s.c, d: [], p: make(TestPoint, {}) });
        put(1010, v, undefined, () => w.write(v));
        break;
      }
      case 'unknown': {
        const pages = s.pages ? [samplePages(s.pages, pageSize, i)] : undefined;
        put(UNKNOWN_TYPE, undefined, pages?.[0], () => w.writeRaw(UNKNOWN_TYPE, Buffer.from(s.body), { pages }));
        break;
      }
    }
  });
  offsets.push(w.offset);
  w.writeTerminator();
  return { buf: sink.toBuffer(), offsets, expected };
}

const imageArb = fc.record({
  pageSize: fc.constantFrom(4096, 8192),
  steps: fc.array(stepArb, { maxLength: 8 }),
}).map(({ pageSize, steps }) => build(pageSize, steps));

type Mutation =
  | { op: 'flip'; pos: number; xor: number }
  | { op: 'truncate'; pos: number }
  | { op: 'splice'; pos: number; del: number; ins: Uint8Array }
  | { op: 'dup'; from: number; len: number; to: number }
  | { op: 'huge'; pos: number; value: bigint; width: 2 | 4 | 8 }
  | { op: 'header'; obj: number; field: keyof typeof HeaderOffset; value: bigint };

const HUGE = [0n, 1n, 31n, 32n, 0x7fffn, 0xffffn, 0x7fffffffn, 0xfffffffen, 0xffffffffn, 1n << 32n, 1n << 62n, (1n << 64n) - 1n];

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), pos: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ op: fc.constant('truncate' as const), pos: fc.nat() }),
  fc.record({ op: fc.constant('splice' as const), pos: fc.nat(), del: fc.nat({ max: 64 }), ins: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ op: fc.constant('dup' as const), from: fc.nat(), len: fc.nat({ max: 5000 }), to: fc.nat() }),
  fc.record({ op: fc.constant('huge' as const), pos: fc.nat(), value: fc.constantFrom(...HUGE), width: fc.constantFrom(2 as const, 4 as const, 8 as const) }),
  fc.record({
    op: fc.constant('header' as const), obj: fc.nat(),
    field: fc.constantFrom(...(Object.keys(HeaderOffset) as (keyof typeof HeaderOffset)[])), value: fc.constantFrom(...HUGE),
  }),
);

function putInt(buf: Buffer, pos: number, width: number, value: bigint): void {
  if (pos + width > buf.length) return;
  const v = value & ((1n << BigInt(width * 8)) - 1n);
  if (width === 8) buf.writeBigUInt64LE(v, pos);
  else if (width === 4) buf.writeUInt32LE(Number(v), pos);
  else buf.writeUInt16LE(Number(v), pos);
}

function mutate(img: Built, muts: Mutation[]): Buffer {
  let b = Buffer.from(img.buf);
  for (const m of muts) {
    const at = (p: number): number => p % (b.length + 1);
    switch (m.op) {
      case 'flip':
        if (b.length) b[m.pos % b.length] ^= m.xor;
        break;
      case 'truncate':
        b = b.subarray(0, at(m.pos));
        break;
      case 'splice': {
        const p = at(m.pos);
        b = Buffer.concat([b.subarray(0, p), Buffer.from(m.ins), b.subarray(p + m.del)]);
        break;
      }
      case 'dup': {
        const from = at(m.from);
        const part = b.subarray(from, from + m.len);
        const to = at(m.to);
        b = Buffer.concat([b.subarray(0, to), part, b.subarray(to)]);
        break;
      }
      case 'huge':
        if (b.length) putInt(b, m.pos % b.length, m.width, m.value);
        break;
      case 'header': {
        const off = img.offsets[m.obj % img.offsets.length];
        const width = m.field === 'totalLength' ? 8 : ['tag', 'ptag', 'bodyLength', 'checksum'].includes(m.field) ? 4 : 2;
        putInt(b, off + HeaderOffset[m.field], width, m.value);
        break;
      }
    }
  }
  return b;
}

/** Re-checksums every object the mutated stream still frames, so the deeper checks get exercised. */
function resealAll(b: Buffer): void {
  let off = PREAMBLE_SIZE;
  while (off + OBJ_HEADER_SIZE <= b.length) {
    const total = b.readBigUInt64LE(off);
    if (total < BigInt(OBJ_HEADER_SIZE) || BigInt(off) + total > BigInt(b.length)) return;
    reseal(b, off);
    off += Number(total);
  }
}

/** Decodes the whole image; returns 'ok' or 'refused', and fails the property on anything else. */
function decodeOrRefuse(b: Buffer): 'ok' | 'refused' {
  try {
    readAll(b);
    return 'ok';
  } catch (e) {
    if (!(e instanceof ImageError)) throw new Error(`not an ImageError: ${(e as Error)?.stack ?? String(e)}`);
    expect(e.code).to.equal('EBADIMG');
    expect(e.offset).to.be.within(0, b.length);
    expect(e.message).to.contain(`offset ${e.offset}`);
    return 'refused';
  }
}

describe('image: property tests', function () {
  this.timeout(60000);

  it('valid images round-trip exactly', () => {
    fc.assert(fc.property(imageArb, (img) => {
      const { records } = readAll(img.buf);
      expect(records).to.have.length(img.expected.length);
      records.forEach((r, i) => {
        const e = img.expected[i];
        expect(r.type).to.equal(e.type);
        expect(r.tag).to.equal(i + 2);
        expect(r.offset).to.equal(img.offsets[i + 1]);
        if (e.obj) expect(r.obj).to.deep.equal(e.obj);
        else expect(r.obj).to.equal(undefined);
        if (e.pages) expect(r.pages?.equals(e.pages)).to.equal(true);
      });
    }), { numRuns: 200 });
  });

  it('mutated images decode or throw ImageError (3000 runs)', () => {
    const seen = { ok: 0, refused: 0 };
    fc.assert(fc.property(imageArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.boolean(), (img, muts, reseal_) => {
      const b = mutate(img, muts);
      if (reseal_) resealAll(b);
      const outcome = decodeOrRefuse(b);
      if (b.equals(img.buf)) expect(outcome).to.equal('ok');
      seen[outcome]++;
    }), { numRuns: 3000 });
    // Both outcomes happen: the property is not vacuous.
    expect(seen.refused).to.be.above(1000);
    expect(seen.ok).to.be.above(0);
  });

  it('mutated record bodies decode or throw ImageError', () => {
    const types = [ObjectType.HEAD, ObjectType.TERMINATOR, 1000, 1001, 1002, 1010];
    fc.assert(fc.property(procArb, fc.constantFrom(...types), fc.array(mutationArb, { maxLength: 3 }), (proc, type, muts) => {
      const body = mutate({ buf: encodeRecord(proc), offsets: [0], expected: [] }, muts);
      try {
        decodeRecord(type, body, { offset: 100, object: 'fuzz' });
      } catch (e) {
        if (!(e instanceof ImageError)) throw new Error(`not an ImageError: ${(e as Error)?.stack ?? String(e)}`);
        expect(e.offset).to.be.within(100, 100 + body.length);
      }
    }), { numRuns: 2000 });
  });

  it('random bytes as a record body decode or throw ImageError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(1, 2, 1000, 1001, 1002, 1010), (bytes, type) => {
      try {
        decodeRecord(type, Buffer.from(bytes));
      } catch (e) {
        if (!(e instanceof ImageError)) throw new Error(`not an ImageError: ${(e as Error)?.stack ?? String(e)}`);
      }
    }), { numRuns: 2000 });
  });
});
