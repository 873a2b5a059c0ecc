/** XsaveProbe (the capability vector's CPU part) and XstateRestore's checks of an image's FPU state. */
import * as fs from 'fs';
import { expect } from 'chai';
import { container } from 'tsyringe';
import {
  CptError, ImageHead, ImageReader, MachineProbe, ObjectType, RestartContext, RestartTask, Tokens, bufferSource, linux, TaskState,
} from '@cptrst/core';
import { XsaveProbe, XstateImage, XstateRestore, featureNames, register, XSTATE_KEY, xsaveInfo } from '../src';
import { thrown } from './support';

/** Names of XSAVE components by bit, as the kernel's xfeature_names has them. */
const KNOWN: Record<number, string> = { 0: 'x87', 1: 'sse', 2: 'avx', 3: 'mpx-bndregs', 4: 'mpx-bndcsr', 5: 'avx512-opmask', 6: 'avx512-zmm_hi256', 7: 'avx512-hi16_zmm', 8: 'pt', 9: 'pkru' };

/** The lowest component bit this CPU does not have. */
function absentBit(features: bigint): number {
  for (let b = 2; b < 64; b++) if (!((features >> BigInt(b)) & 1n)) return b;
  throw new Error('every component present?');
}

describe('XsaveProbe', () => {
  const host = xsaveInfo();

  it('is registered as a MachineProbe and reports this CPU', () => {
    const c = container.createChildContainer();
    register(c);
    const probes = c.resolveAll<MachineProbe>(Tokens.MachineProbe);
    expect(probes.map((p) => p.name)).to.deep.equal(['xsave']);
    const r = new XsaveProbe().probe();
    expect(r).to.have.length(1);
    expect(r[0]).to.include({ name: 'xsave', ok: true, essential: true });
    expect(r[0].detail).to.include(`XCR0 0x${host.features.toString(16)}`);
    expect(r[0].detail).to.include(`area ${host.size} bytes`);
    expect(r[0].detail).to.include('x87 sse');
    expect(host.size).to.be.greaterThan(512);
  });

  it('featureNames names components by bit, unknown ones by number', () => {
    expect(featureNames(0x7n)).to.deep.equal(['x87', 'sse', 'avx']);
    expect(featureNames(0xe0n)).to.deep.equal(['avx512-opmask', 'avx512-zmm_hi256', 'avx512-hi16_zmm']);
    expect(featureNames(1n << 9n)).to.deep.equal(['pkru']);
    expect(featureNames((1n << 17n) | (1n << 63n))).to.deep.equal(['component-17', 'component-63']);
    expect(featureNames(0n)).to.deep.equal([]);
  });

  it('fillHead writes this CPU; checkHead accepts it', () => {
    const p = new XsaveProbe();
    const head = new ImageHead();
    p.fillHead(head);
    expect(head.xsaveFeatures).to.equal(host.features);
    expect(head.xsaveSize).to.equal(host.size);
    expect(head.cpuFlags.length).to.be.greaterThan(0);
    expect(head.cpuFlags).to.deep.equal([...head.cpuFlags].sort());
    const flags = new Set(linux.cpuFlags());
    for (const f of head.cpuFlags) {
      expect(flags.has(f), f).to.equal(true);
      expect(f).to.match(/^(avx|sse|fma|xsave|pku|fsgsbase|amx|sha|aes|bmi)/);
    }
    expect(head.cpuFlags).to.include('sse2');
    expect(p.checkHead(head)).to.deep.equal([]);
  });

  it('checkHead refuses a head with a component this CPU lacks, naming it', () => {
    const p = new XsaveProbe();
    const head = new ImageHead();
    p.fillHead(head);
    const bit = absentBit(host.features);
    const name = KNOWN[bit] ?? `component-${bit}`;
    head.xsaveFeatures = host.features | (1n << BigInt(bit));
    const reasons = p.checkHead(head);
    expect(reasons).to.have.length(1);
    expect(reasons[0]).to.include(name);
    expect(reasons[0]).to.include('which this CPU lacks');
  });

  it('checkHead refuses a different XSAVE area size, and CPU flags this CPU lacks', () => {
    const p = new XsaveProbe();
    const head = new ImageHead();
    p.fillHead(head);
    head.xsaveSize = host.size + 64;
    head.cpuFlags = [...head.cpuFlags, 'avx9000'];
    const reasons = p.checkHead(head);
    expect(reasons).to.have.length(2);
    expect(reasons[0]).to.include(`${host.size + 64} bytes`).and.include(`${host.size}`);
    expect(reasons[1]).to.include('avx9000');
    expect(reasons[1]).to.not.include('sse2');
  });
});

describe('XstateRestore checks an image XSTATE object against this CPU', () => {
  const host = xsaveInfo();
  const c = container.createChildContainer();
  const ctx = new RestartContext(c, new ImageReader(bufferSource(Buffer.alloc(0))), fs.openSync('/dev/null', 'r'), 0);
  const task = (): RestartTask => ({ pid: 4242, tid: 4242, tag: 5, state: new TaskState() });
  const obj = (img: XstateImage) => ({ type: ObjectType.XSTATE, tag: 6, ptag: 5, offset: 1234, obj: img });
  const image = (size: number, features: bigint): XstateImage => Object.assign(new XstateImage(), { size, features, area: Buffer.alloc(size) });

  it('takes an area of this CPU\'s size and features', () => {
    const t = task();
    const img = image(host.size, host.features & 7n);
    new XstateRestore().restore(ctx, t, obj(img));
    expect(t.state.get(XSTATE_KEY)).to.equal(img.area);
  });

  it('refuses an area of another size', () => {
    const t = task();
    const e = thrown(() => new XstateRestore().restore(ctx, t, obj(image(host.size - 64, 3n))));
    expect(e).to.be.instanceOf(CptError);
    expect(e.code).to.equal('EINVAL');
    expect(e.pid).to.equal(4242);
    expect(e.message).to.include(`${host.size - 64} bytes`);
    expect(t.state.has(XSTATE_KEY)).to.equal(false);
  });

  it('refuses state of a component this CPU lacks, naming it', () => {
    const bit = absentBit(host.features);
    const e = thrown(() => new XstateRestore().restore(ctx, task(), obj(image(host.size, host.features | (1n << BigInt(bit))))));
    expect(e.code).to.equal('ENOTSUP');
    expect(e.message).to.include(KNOWN[bit] ?? `component-${bit}`);
  });

  it('finish without an XSTATE object is a bad image', () => {
    const e = thrown(() => new XstateRestore().finish(ctx, task()));
    expect(e.code).to.equal('EBADIMG');
  });
});
