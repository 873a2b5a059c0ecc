import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { CptError } from '../src/errors';
import { ProcMem, processVmReadv, processVmWritev, ptrace, readMaps, waitTracee } from '../src/linux';
import { Target, cleanupTmp, compileFixture, killPid, spawnTarget, tmpDir } from './fixtures/linux-fixtures';

/*
 * What this kernel (6.18) does, checked here:
 *  - /proc/PID/mem reads PROT_NONE pages and writes read-only private pages (FOLL_FORCE), for a
 *    stopped tracee and also for a process that is not traced at all (proc_mem.force_override
 *    behaves as "always");
 *  - process_vm_readv/writev honour protections: EFAULT on both;
 *  - an unmapped address gives EIO; a read running into a hole is short.
 */
describe('linux memory access', () => {
  let t: Target | undefined;
  before(async () => {
    const bin = compileFixture('linux-maps-target');
    const dir = fs.mkdtempSync(path.join(tmpDir(), 'mem-'));
    t = await spawnTarget(bin, [dir]);
  });
  after(() => {
    killPid(t?.pid);
    cleanupTmp();
  });

  it('ProcMem reads PROT_NONE and writes read-only pages of a stopped tracee', async () => {
    const pid = t!.pid;
    const { none, ro } = t!.vars;
    // synchronous: seize, stop, access, detach
    ptrace.seize(pid, 0);
    ptrace.interrupt(pid);
    expect(waitTracee(pid).stopped).to.not.equal(undefined);
    const mem = new ProcMem(pid);
    try {
      const page = mem.read(none, 4096);
      expect(page.every((b) => b === 0xa5)).to.equal(true);
      expect(mem.read(ro, 15).toString()).to.equal('ROPAGE-ORIGINAL');
      mem.write(ro, Buffer.from('ROPAGE-PATCHED!'));
      expect(mem.read(ro, 15).toString()).to.equal('ROPAGE-PATCHED!');
      // ptrace PEEKDATA also uses FOLL_FORCE
      expect(ptrace.peekData(pid, none)).to.equal(0xa5a5a5a5a5a5a5a5n);

      // process_vm_* do not force
      expect(() => processVmReadv(pid, none, Buffer.alloc(16))).to.throw(CptError).with.property('code', 'EFAULT');
      expect(() => processVmWritev(pid, ro, Buffer.from('x'))).to.throw(CptError).with.property('code', 'EFAULT');
      const got = Buffer.alloc(15);
      expect(processVmReadv(pid, ro, got)).to.equal(15);
      expect(got.toString()).to.equal('ROPAGE-PATCHED!');

      // errors and short reads
      expect(() => mem.read(0n, 8)).to.throw(CptError).with.property('code', 'EIO');
      const maps = readMaps(pid);
      const i = maps.findIndex((m, k) => m.prot.read && k + 1 < maps.length && maps[k + 1].start !== m.end);
      expect(i).to.be.at.least(0);
      const buf = Buffer.alloc(64);
      expect(mem.readInto(maps[i].end - 16n, buf, 8, 32)).to.equal(16);
      expect(() => mem.read(maps[i].end - 16n, 32)).to.throw(CptError, /short read/);
    } finally {
      mem.close();
      ptrace.detach(pid, 0);
    }
    expect(await t!.ask('dump')).to.equal('ro=ROPAGE-PATCHED!');
  });

  it('ProcMem writes a read-only page of a process that is not traced (force_override=always)', async () => {
    const mem = new ProcMem(t!.pid);
    try {
      mem.write(t!.vars.ro, Buffer.from('ROPAGE-UNTRACED'));
      expect(mem.read(t!.vars.none + 100n, 4).readUInt32LE(0)).to.equal(0xa5a5a5a5);
    } finally {
      mem.close();
    }
    expect(await t!.ask('dump')).to.equal('ro=ROPAGE-UNTRACED');
    const roMem = new ProcMem(t!.pid, { readOnly: true });
    expect(() => roMem.write(t!.vars.ro, Buffer.from('x'))).to.throw(CptError).with.property('code', 'EBADF');
    roMem.close();
    expect(() => roMem.read(t!.vars.ro, 1)).to.throw(CptError).with.property('code', 'EBADF');
  });

  it('ProcMem on a missing process throws ENOENT', () => {
    expect(() => new ProcMem(0x3ffffff0)).to.throw(CptError).with.property('code', 'ENOENT');
  });
});
