/**
 * pidfds cptrst restores itself: of the process, of a child, of a thread, of processes that have
 * ended; a pidfd of a process outside the tree is refused, naming it.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import { buildWorkloads, cptrst, expectPass, killStartedWorkloads, makeTempDir, procState, removeTempDir, startWorkload, trigger, waitGone } from '../support';
import { checkpointKill } from '../support/cr';

describe('pidfds', function () {
  this.timeout(120000);
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  it('pidfds of the process, a child, a thread and dead processes come back (targets, flags, inodes, exit statuses)', async () => {
    const w = await startWorkload('pidfds');
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('a pidfd of a process outside the tree is refused at checkpoint, naming it; the process runs on', async () => {
    const dir = makeTempDir('pidfd-outside');
    // A python3 process holding a pidfd of its parent (this test's process), outside its tree.
    const p = spawn('python3', ['-c', [
      'import ctypes, os, sys, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'fd = libc.syscall(434, os.getppid(), 0)',
      'os.dup2(fd, 40)',
      'os.close(fd)',
      'print("READY", flush=True)',
      'os.closerange(0, 40)',
      'os.closerange(41, 4096)',
      'time.sleep(60)',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => p.stdout.once('data', () => resolve()));
      const img = path.join(dir, 'image.cpt');
      const r = await cptrst(['checkpoint', String(p.pid), '-o', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${p.pid}, fd 40 \\(anon_inode:\\[pidfd\\]\\): it refers to process ${process.pid}, which is not in the checkpointed tree`));
      expect(fs.existsSync(img)).to.equal(false);
      expect((await procState(p.pid!))?.tracerPid).to.equal(0);
    } finally {
      p.kill('SIGKILL');
      await waitGone(p.pid!, 5000, { zombieOk: true });
      removeTempDir(dir);
    }
  });

  it('a pidfd of a child that another child inherited is refused at checkpoint (the stand-in would be inherited); the tree runs on', async () => {
    const dir = makeTempDir('pidfd-shared');
    // A python3 tree: child A, a pidfd of A at fd 40, then child B, which inherits fd 40.
    const p = spawn('python3', ['-c', [
      'import ctypes, os, sys, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'a = os.fork()',
      'if a == 0:',
      '    os.closerange(0, 4096); time.sleep(60); os._exit(0)',
      'fd = libc.syscall(434, a, 0)',
      'os.dup2(fd, 40); os.close(fd)',
      'b = os.fork()',
      'if b == 0:',
      '    os.closerange(0, 40); os.closerange(41, 4096); time.sleep(60); os._exit(0)',
      'print("READY %d %d" % (a, b), flush=True)',
      'os.closerange(0, 40)',
      'os.closerange(41, 4096)',
      'time.sleep(60)',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'ignore'] });
    const kids: number[] = [];
    try {
      const line = await new Promise<string>((resolve) => p.stdout.once('data', (d: Buffer) => resolve(d.toString())));
      const [, a, b] = /^READY (\d+) (\d+)/.exec(line)!.map(Number);
      kids.push(a, b);
      const img = path.join(dir, 'image.cpt');
      const r = await cptrst(['checkpoint', String(p.pid), '-o', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${p.pid}, fd 40 \\(anon_inode:\\[pidfd\\]\\): the pidfd of process ${a} \\(made after this process at restart\\) is shared with process ${b} \\(fd 40\\)`));
      expect(fs.existsSync(img)).to.equal(false);
      for (const pid of [p.pid!, a, b]) expect((await procState(pid))?.tracerPid, `pid ${pid}`).to.equal(0);
    } finally {
      for (const pid of [...kids, p.pid!]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      for (const pid of [...kids, p.pid!]) await waitGone(pid, 5000, { zombieOk: true });
      removeTempDir(dir);
    }
  });
});
