/** The vDSO: its pieces in a real process, the host's hash, and VdsoProbe's head check. */
import { expect } from 'chai';
import * as crypto from 'crypto';
import * as fs from 'fs';
import { ImageHead, linux } from '@cptrst/core';
import { VDSO_CACHE_FILE, VDSO_NAMES, VdsoProbe, hostVdso, keptVdso, vdsoPieces } from '../src';
import { killStarted, startSleeping } from './support';

describe('vdso', () => {
  afterEach(() => killStarted());

  it('vdsoPieces lists [vvar], [vvar_vclock] and [vdso] of a process, as its maps show them', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const maps = linux.readMaps(pid).filter((m) => VDSO_NAMES.includes(m.path));
    const pieces = vdsoPieces(pid);
    expect(pieces.map((p) => [p.name, p.start, p.end])).to.deep.equal(maps.map((m) => [m.path, m.start, m.end]));
    expect(pieces.map((p) => p.name)).to.include.members(['[vdso]', '[vvar]']);
    for (const p of pieces) expect(p.end > p.start && p.start % 4096n === 0n).to.equal(true);
  });

  it('hostVdso hashes the vDSO code, the same in another process of this kernel', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const host = hostVdso();
    const v = linux.readMaps(pid).find((m) => m.path === '[vdso]')!;
    expect(host.size).to.equal(Number(v.end - v.start));
    const mem = new linux.ProcMem(pid, { readOnly: true });
    try {
      const code = mem.read(v.start, host.size);
      expect(code.subarray(0, 4)).to.deep.equal(Buffer.from([0x7f, 0x45, 0x4c, 0x46])); // an ELF image
      expect(crypto.createHash('sha256').update(code).digest('hex')).to.equal(host.hash);
    } finally {
      mem.close();
    }
    expect(host.hash).to.match(/^[0-9a-f]{64}$/);
  });

  it('VdsoProbe: fillHead records this kernel\'s vDSO and checkHead accepts it', () => {
    const p = new VdsoProbe();
    const head = new ImageHead();
    p.fillHead(head);
    const host = hostVdso();
    expect(head.vdsoSize).to.equal(host.size);
    expect(head.vdsoHash).to.equal(host.hash);
    expect(p.checkHead(head)).to.deep.equal([]);
    const r = p.probe();
    expect(r).to.have.length(1);
    expect(r[0]).to.include({ name: 'vdso', ok: true, essential: false });
    expect(r[0].detail).to.include(host.hash.slice(0, 16));
    expect(r[0].detail).to.include('[vdso]');
  });

  it('VdsoProbe.checkHead refuses a different vDSO hash or size, naming both', () => {
    const p = new VdsoProbe();
    const host = hostVdso();
    const head = new ImageHead();
    p.fillHead(head);
    head.vdsoHash = 'ab'.repeat(32);
    const reasons = p.checkHead(head);
    expect(reasons).to.have.length(1);
    expect(reasons[0]).to.include('vDSO');
    expect(reasons[0]).to.include('abababababab');
    expect(reasons[0]).to.include(host.hash.slice(0, 12));
    expect(reasons[0]).to.include('differs');

    const sized = new ImageHead();
    p.fillHead(sized);
    sized.vdsoSize = host.size + 4096;
    expect(p.checkHead(sized)).to.have.length(1);
    expect(p.checkHead(sized)[0]).to.include(`${host.size + 4096} bytes`);
  });

  it('VdsoProbe.checkHead has nothing to say about an image that recorded no vDSO', () => {
    const head = new ImageHead();
    expect(head.vdsoSize).to.equal(0);
    head.vdsoHash = 'not checked';
    expect(new VdsoProbe().checkHead(head)).to.deep.equal([]);
  });
});

describe('the vDSO hash kept for the boot', () => {
  const root = process.geteuid?.() === 0;
  let saved: Buffer | undefined;
  before(function () {
    if (!root) this.skip(); // only root keeps it
    try {
      saved = fs.readFileSync(VDSO_CACHE_FILE);
    } catch {
      saved = undefined;
    }
  });
  after(() => {
    if (!root) return;
    if (saved) fs.writeFileSync(VDSO_CACHE_FILE, saved, { mode: 0o644 });
    else fs.rmSync(VDSO_CACHE_FILE, { force: true });
  });

  it('is what hashing the vDSO shows, and is used only as written for this boot by root', () => {
    const host = hostVdso(); // keeps it when it was not kept yet
    const v = linux.readMaps(process.pid).find((m) => m.path === '[vdso]')!;
    const mem = new linux.ProcMem(process.pid, { readOnly: true });
    let hash: string;
    try {
      hash = crypto.createHash('sha256').update(mem.read(v.start, Number(v.end - v.start))).digest('hex');
    } finally {
      mem.close();
    }
    expect(host).to.deep.equal({ size: Number(v.end - v.start), hash });
    expect(keptVdso()).to.deep.equal(host);
    const st = fs.statSync(VDSO_CACHE_FILE);
    expect(st.uid).to.equal(0);
    expect(st.mode & 0o022).to.equal(0);
    const good = `${linux.bootId()} ${host.size} ${host.hash}\n`;
    const other = linux.bootId().replace(/^./, (c) => (c === '0' ? '1' : '0'));
    // Another boot's, a malformed one, a file others may write, a symlink to a good one: ignored.
    for (const [what, text, mode] of [
      ['another boot', `${other} ${host.size} ${host.hash}\n`, 0o644],
      ['malformed', good.replace(/ [0-9a-f]{64}/, ' xyz'), 0o644],
      ['writable by others', good, 0o666],
    ] as const) {
      fs.rmSync(VDSO_CACHE_FILE, { force: true });
      fs.writeFileSync(VDSO_CACHE_FILE, text, { mode });
      fs.chmodSync(VDSO_CACHE_FILE, mode);
      expect(keptVdso(), what).to.equal(undefined);
    }
    const real = `${VDSO_CACHE_FILE}.test-target`;
    fs.writeFileSync(real, good, { mode: 0o644 });
    fs.rmSync(VDSO_CACHE_FILE, { force: true });
    fs.symlinkSync(real, VDSO_CACHE_FILE);
    try {
      expect(keptVdso(), 'a symlink').to.equal(undefined);
    } finally {
      fs.rmSync(VDSO_CACHE_FILE, { force: true });
      fs.rmSync(real, { force: true });
    }
    fs.writeFileSync(VDSO_CACHE_FILE, good, { mode: 0o644 });
    fs.chmodSync(VDSO_CACHE_FILE, 0o644);
    expect(keptVdso()).to.deep.equal(host);
  });
});
