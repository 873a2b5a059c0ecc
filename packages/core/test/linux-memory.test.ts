import { expect } from 'chai';
import { spawn } from 'child_process';
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

  it('ProcMem reads a fork\'s memory without unsharing what it shares copy-on-write with its parent, and reads the pages it wrote itself as well', async () => {
    const dir = fs.mkdtempSync(path.join(tmpDir(), 'cow-'));
    const ready = path.join(dir, 'ready');
    const PAGES = 1024;
    // The parent fills page j with byte j % 251 + 1 and forks; the child overwrites every third page with 0xee.
    const py = [
      'import ctypes, mmap, os, time',
      `m = mmap.mmap(-1, ${PAGES} * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)`,
      `for j in range(${PAGES}):`,
      '    m[j * 4096:(j + 1) * 4096] = bytes([j % 251 + 1]) * 4096',
      'addr = ctypes.addressof(ctypes.c_char.from_buffer(m))',
      'pid = os.fork()',
      'if pid == 0:',
      `    for j in range(0, ${PAGES}, 3):`,
      '        m[j * 4096:(j + 1) * 4096] = bytes([0xee]) * 4096',
      `    open(${JSON.stringify(ready)}, 'w').write('%d %d' % (os.getpid(), addr))`,
      '    time.sleep(300)',
      '    os._exit(0)',
      'os.waitpid(pid, 0)',
    ].join('\n');
    const parent = spawn('python3', ['-c', py], { stdio: 'ignore' });
    let child = 0;
    const frames = (pid: number, at: bigint): bigint[] => {
      const b = Buffer.alloc(PAGES * 8);
      const fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
      try {
        fs.readSync(fd, b, 0, b.length, Number(at / 4096n) * 8);
      } finally {
        fs.closeSync(fd);
      }
      return Array.from({ length: PAGES }, (_, j) => b.readBigUInt64LE(j * 8) & ((1n << 55n) - 1n));
    };
    try {
      for (let i = 0; i < 1000 && !(fs.existsSync(ready) && fs.readFileSync(ready, 'utf8')); i++) await new Promise((r) => setTimeout(r, 10));
      const [pidText, addrText] = fs.readFileSync(ready, 'utf8').split(' ');
      child = Number(pidText);
      const at = BigInt(addrText);
      const before = frames(parent.pid!, at);
      const kept = (f: bigint[]) => f.filter((x, j) => j % 3 !== 0 && x !== 0n && x === before[j]).length;
      const keptBefore = kept(frames(child, at));
      expect(keptBefore, 'pages the child shares with its parent (page frames shown to root)').to.equal(PAGES - Math.ceil(PAGES / 3));
      const mem = new ProcMem(child, { readOnly: true });
      let got: Buffer;
      try {
        got = mem.read(at, PAGES * 4096);
      } finally {
        mem.close();
      }
      for (let j = 0; j < PAGES; j++) {
        const want = j % 3 === 0 ? 0xee : j % 251 + 1;
        expect(got.subarray(j * 4096, (j + 1) * 4096).every((x) => x === want), `page ${j}`).to.equal(true);
      }
      expect(kept(frames(child, at)), 'pages still shared after the read').to.equal(keptBefore);
    } finally {
      killPid(child || undefined);
      killPid(parent.pid);
    }
  });

  it('ProcMem on a missing process throws ENOENT', () => {
    expect(() => new ProcMem(0x3ffffff0)).to.throw(CptError).with.property('code', 'ENOENT');
  });
});
