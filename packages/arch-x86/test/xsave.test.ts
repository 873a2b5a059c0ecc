/** XsaveProbe (the capability vector's CPU part) and XstateRestore's checks of an image's FPU state. */
import * as fs from 'fs';
import { expect } from 'chai';
import { container } from 'tsyringe';
import {
  CptError, ImageHead, ImageReader, MachineProbe, ObjectType, RestartContext, RestartTask, Tokens, bufferSource, linux, TaskState,
} from '@cptrst/core';
import {
  ARCH, XsaveProbe, XstateImage, XstateRestore, featureNames, register, XSTATE_KEY, xsaveInfo, probeXsave, cachedXsaveInfo, XSAVE_CACHE_FILE,
} from '../src';
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

describe('the XSAVE layout kept for the boot', () => {
  const root = process.geteuid?.() === 0;
  let saved: Buffer | undefined;
  before(function () {
    if (!root) this.skip(); // only root keeps it
    try {
      saved = fs.readFileSync(XSAVE_CACHE_FILE);
    } catch {
      saved = undefined;
    }
  });
  after(() => {
    if (!root) return;
    if (saved) fs.writeFileSync(XSAVE_CACHE_FILE, saved, { mode: 0o644 });
    else fs.rmSync(XSAVE_CACHE_FILE, { force: true });
  });
  const line = (bootId: string, features: bigint, size: number, sw: Buffer) => `${bootId} ${features.toString(16)} ${size} ${sw.toString('hex')}\n`;

  it('is what a helper process shows, and is used only as written for this boot by root', () => {
    const probed = probeXsave();
    xsaveInfo(); // keeps it when it was not kept yet
    const kept = cachedXsaveInfo();
    expect(kept).to.deep.equal(probed);
    const st = fs.statSync(XSAVE_CACHE_FILE);
    expect(st.uid).to.equal(0);
    expect(st.mode & 0o022).to.equal(0);
    const good = line(linux.bootId(), probed.features, probed.size, probed.swReserved);
    const other = linux.bootId().replace(/^./, (c) => (c === '0' ? '1' : '0'));
    // Another boot's, a malformed one, a mask word that disagrees, a file others may write: ignored.
    for (const [what, text, mode] of [
      ['another boot', line(other, probed.features, probed.size, probed.swReserved), 0o644],
      ['malformed', good.replace(/ \d+ /, ' x '), 0o644],
      ['mask word differs', line(linux.bootId(), probed.features, probed.size, Buffer.alloc(48)), 0o644],
      ['writable by others', good, 0o666],
    ] as const) {
      fs.rmSync(XSAVE_CACHE_FILE, { force: true });
      fs.writeFileSync(XSAVE_CACHE_FILE, text, { mode });
      fs.chmodSync(XSAVE_CACHE_FILE, mode);
      expect(cachedXsaveInfo(), what).to.equal(undefined);
    }
    // Features the kernel does not report (ARCH_GET_XCOMP_SUPP, where it answers): ignored.
    const b = Buffer.alloc(8);
    if (linux.rawSyscall(linux.syscallNumber('arch_prctl'), ARCH.GET_XCOMP_SUPP, b) === 0n) {
      expect(b.readBigUInt64LE(0)).to.equal(probed.features);
      const sw = Buffer.from(probed.swReserved);
      sw.writeBigUInt64LE(probed.features | (1n << 62n), 0);
      fs.writeFileSync(XSAVE_CACHE_FILE, line(linux.bootId(), probed.features | (1n << 62n), probed.size, sw), { mode: 0o644 });
      fs.chmodSync(XSAVE_CACHE_FILE, 0o644);
      expect(cachedXsaveInfo(), 'features the kernel lacks').to.equal(undefined);
    }
    fs.writeFileSync(XSAVE_CACHE_FILE, good, { mode: 0o644 });
    fs.chmodSync(XSAVE_CACHE_FILE, 0o644);
    expect(cachedXsaveInfo()).to.deep.equal(probed);
  });
});
