/**
 * Pipes and FIFOs held by one process, with the data in flight: the pipes and fifos workloads
 * check every byte, flag and capacity themselves after a restart (and fail when tampered with);
 * a checkpoint reads the data without taking it, also when it fails afterwards; a pipe another
 * process holds is refused, naming the fd and that process.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { linux, loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, binaryPath, buildWorkloads, cptrst, failAfterDump, killByPid, killStartedWorkloads, makeTempDir, makeUserDir, parseResult,
  passLines, procState, removeUserDir, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;

describe('pipes and FIFOs held by one process', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  const cases: Array<[string, () => string[]]> = [
    ['pipes', () => []],
    ['fifos', () => [makeTempDir('fifos')]],
  ];
  for (const [name, args] of cases) {
    itRestoresWorkload(name, 'every byte in flight, flags and capacities', { prefix: name, args });

    it(`${name}: a checkpoint that leaves the process running takes no byte away`, async () => {
      const w = await startWorkload(name, args());
      const img = path.join(w.dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img]);
      expect(ck.code, ck.stderr).to.equal(0);
      await trigger(w);
      expect(passLines(name)).to.include(parseResult(await waitResult(w)).verdict);
    });

    it(`${name}: a checkpoint that fails after the data was read loses no byte`, async () => {
      const w = await startWorkload(name, args());
      await failAfterDump(w);
      await trigger(w);
      expect(passLines(name)).to.include(parseResult(await waitResult(w)).verdict);
    });
  }

  it('a pipe whose other end another process holds is refused, naming the fd and that process; nothing is taken from it', async () => {
    const dir = makeTempDir('shared-pipe');
    const trig = path.join(dir, 'go');
    const out = path.join(dir, 'out');
    const fds = Buffer.alloc(8);
    expect(linux.rawSyscall(linux.SYS.pipe2, fds, linux.O.CLOEXEC)).to.equal(0n);
    const [rd, wr] = [fds.readInt32LE(0), fds.readInt32LE(4)];
    fs.writeSync(wr, 'kept\n');
    const ofd = fs.openSync(out, 'a');
    const child = spawn(binaryPath('pidhold'), [trig], { stdio: [rd, ofd, ofd], detached: true });
    fs.closeSync(ofd);
    fs.closeSync(rd);
    child.unref();
    const pid = child.pid!;
    try {
      for (let i = 0; i < 500 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
      const img = path.join(dir, 'i.cpt');
      const r = await cptrst(['checkpoint', String(pid), '-o', img, '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, fd 0 \\(pipe:\\[\\d+\\]\\): the pipe is also open in process ${process.pid} \\(fd ${wr}\\), outside the checkpointed process tree; `));
      expect(fs.existsSync(img)).to.equal(false);
      const st = await procState(pid);
      expect(st?.state).to.match(/^[RS]$/);
      // The bytes are still in the pipe.
      const peek = fs.openSync(`/proc/${pid}/fd/0`, linux.O.RDONLY | linux.O.NONBLOCK);
      try {
        expect(linux.ioctlInt(peek, linux.FIONREAD)).to.equal(5);
      } finally {
        fs.closeSync(peek);
      }
      fs.writeFileSync(trig, '');
      expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
    } finally {
      fs.closeSync(wr);
      await killByPid(pid);
    }
  });
});

describe('pipes, FIFOs, memfds and sockets in an image not owned by root', function () {
  this.timeout(120000);
  const NOBODY = { uid: 65534, gid: 65534 };
  const dirs: string[] = [];
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());
  after(() => dirs.forEach(removeUserDir));

  const cases: Array<[string, (dir: string) => string[]]> = [
    ['pipes', () => []],
    ['fifos', (d) => [d]],
    ['memfds', () => []],
    ['sockets', (d) => [d]],
  ];
  for (const [name, args] of cases) {
    it(`${name}: a process of nobody's, its image given to nobody: made again with nobody's rights, and it passes`, async () => {
      const dir = makeUserDir(name);
      dirs.push(dir);
      fs.chownSync(dir, NOBODY.uid, NOBODY.gid); // the workload makes its FIFOs and socket files here
      const w = await startWorkload(name, [...args(dir), '--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
      const img = path.join(dir, 'image.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      fs.chownSync(img, NOBODY.uid, NOBODY.gid);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      expect(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8')).to.match(/\nUid:\s+65534\s+65534\s+65534\s+65534\n/);
      await trigger(w);
      expect(passLines(name)).to.include(parseResult(await waitResult(w)).verdict);
    });
  }
});
