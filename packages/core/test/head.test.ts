/** buildImageHead: the one builder of an image head (checkpoint writes it, `cptrst check` shows it). */
import 'reflect-metadata';
import * as os from 'os';
import { expect } from 'chai';
import { container as rootContainer } from 'tsyringe';
import { ImageHead, MachineProbe, Tokens, buildImageHead, linux, machineProbes } from '../src';

/** A probe that writes one fact of the capability vector, or fails to. */
function probe(name: string, fill: (head: ImageHead) => void): MachineProbe {
  return { name, probe: () => [], fillHead: fill };
}

describe('buildImageHead', () => {
  it('records the machine facts and the tool version, then every probe\'s part in registration order', () => {
    const c = rootContainer.createChildContainer();
    c.register(Tokens.MachineProbe, { useValue: probe('flags', (h) => (h.cpuFlags = ['fpu'])) });
    c.register(Tokens.MachineProbe, { useValue: probe('more', (h) => h.cpuFlags.push('sse')) });
    const before = BigInt(Date.now()) * 1000000n;
    const head = buildImageHead(c, '9.8.7');
    expect(head.kernelRelease).to.equal(linux.kernelRelease()).and.not.equal('');
    expect(head.pageSize).to.equal(linux.pageSize());
    expect(head.bootId).to.equal(linux.bootId()).and.not.equal('');
    expect(head.hostname).to.equal(os.hostname());
    expect(head.toolVersion).to.equal('9.8.7');
    expect(head.createdNs >= before && head.createdNs <= BigInt(Date.now()) * 1000000n).to.equal(true);
    expect(head.cpuFlags).to.deep.equal(['fpu', 'sse']);
    expect(machineProbes(c).map((p) => p.name)).to.deep.equal(['flags', 'more']);
  });

  it('with no probe registered, the head has the machine facts only', () => {
    const c = rootContainer.createChildContainer();
    expect(machineProbes(c)).to.deep.equal([]);
    const head = buildImageHead(c, '1.0.0');
    expect(head.cpuFlags).to.deep.equal([]);
    expect(head.xsaveFeatures).to.equal(0n);
  });

  it('a failing probe fails the head for an image, and is reported (the others still filled) for a report', () => {
    const c = rootContainer.createChildContainer();
    c.register(Tokens.MachineProbe, { useValue: probe('broken', () => { throw new Error('no xsave here'); }) });
    c.register(Tokens.MachineProbe, { useValue: probe('vdso', (h) => (h.vdsoSize = 8192)) });
    expect(() => buildImageHead(c, '1.0.0')).to.throw(/no xsave here/);
    const reported: string[] = [];
    const head = buildImageHead(c, '1.0.0', { onProbeError: (p, e) => reported.push(`${p.name}: ${(e as Error).message}`) });
    expect(reported).to.deep.equal(['broken: no xsave here']);
    expect(head.vdsoSize).to.equal(8192);
  });
});
