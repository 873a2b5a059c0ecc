/**
 * SysV shared memory attached by the process: segments come back with their ids, keys, modes and
 * contents; a segment someone else uses is never taken over, at checkpoint or at restart. A
 * process that used SEM_UNDO is refused.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule, linux } from '@cptrst/core';
import {
  buildWorkloads, cptrst, expectPass, killStartedWorkloads, makeUserDir, procState, removeUserDir, startWorkload, trigger,
  waitGone,
} from '../support';

const NOBODY = { uid: 65534, gid: 65534 };

/** The segments a process has attached, by id, from its maps. */
const attachedIds = (pid: number): number[] =>
  [...new Set(fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/SYSV')).map((l) => Number(l.split(/\s+/)[4])))].sort((a, b) => a - b);

/** Attaches segment `id` in a python3 process for a moment, as someone else would. */
function touchSegment(id: number): void {
  execFileSync('python3', ['-c', [
    'import ctypes, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'libc.shmat.restype = ctypes.c_void_p',
    `p = libc.shmat(${id}, None, 0)`,
    'sys.exit(1 if p in (None, ctypes.c_void_p(-1).value) else 0) if libc.shmdt(ctypes.c_void_p(p)) else None',
  ].join('\n')]);
}

const removeSegments = (ids: number[]) => ids.forEach((id) => linux.readSysvShm().some((s) => s.id === id) && execFileSync('ipcrm', ['-m', String(id)]));

describe('SysV shared memory', function () {
  this.timeout(120000);
  let ids: number[] = [];
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(async () => {
    await killStartedWorkloads();
    removeSegments(ids);
    ids = [];
  });

  it('attached segments come back with their ids, keys, modes and contents, a removed one removed', async () => {
    const w = await startWorkload('sysvshm');
    ids = attachedIds(w.pid);
    expect(ids).to.have.length(2);
    const img = path.join(w.dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    // The private segment stays in the namespace (the process left it); the removed one is gone.
    expect(linux.readSysvShm().map((s) => s.id).filter((id) => ids.includes(id))).to.have.length(1);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    expect(attachedIds(w.pid)).to.deep.equal(ids);
    await trigger(w);
    await expectPass(w);
  });

  it('refuses at checkpoint a segment another process has attached too; the process runs on', async () => {
    const w = await startWorkload('sysvshm');
    ids = attachedIds(w.pid);
    const own = linux.readSysvShm().find((s) => s.id === ids[0])!.nattch;
    const other = execFileSync('python3', ['-c', [
      'import ctypes, os, sys, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'libc.shmat.restype = ctypes.c_void_p',
      `libc.shmat(${ids[0]}, None, 0)`,
      'pid = os.fork()',
      'if pid: print(pid); sys.exit(0)',
      'os.closerange(0, 3)',
      'time.sleep(30)',
    ].join('\n')]).toString().trim();
    try {
      const img = path.join(w.dir, 'image.cpt');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, vma [0-9a-f]+-[0-9a-f]+ /SYSV[0-9a-f]{8}: SysV segment ${ids[0]} is attached by another process too`));
      expect(fs.existsSync(img)).to.equal(false);
      expect((await procState(w.pid))?.tracerPid).to.equal(0);
    } finally {
      process.kill(Number(other), 'SIGKILL');
      await waitGone(Number(other), 5000, { zombieOk: true });
    }
    for (let i = 0; i < 100 && linux.readSysvShm().find((s) => s.id === ids[0])!.nattch > own; i++) await new Promise((r) => setTimeout(r, 20));
    await trigger(w);
    await expectPass(w);
  });

  it('a segment someone else used since the checkpoint is not taken over: the restart fails cleanly (EEXIST)', async () => {
    const w = await startWorkload('sysvshm');
    ids = attachedIds(w.pid);
    const img = path.join(w.dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    const left = linux.readSysvShm().find((s) => ids.includes(s.id))!;
    touchSegment(left.id);
    const rs = await cptrst(['restart', img]);
    expect(rs.code).to.equal(1);
    expect(rs.stderr).to.match(new RegExp(`^cptrst: EEXIST: pid ${w.pid}, vma .*: SysV segment id ${left.id} is taken by another segment .*not taken over`));
    expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    // The segment is as the other user left it: nothing was attached or removed.
    const now = linux.readSysvShm().find((s) => s.id === left.id)!;
    expect(now.nattch).to.equal(0);
  });

  it('a checkpoint that fails once everything was read (ENOSPC on /dev/full) leaves the process running: its segments are as they were', async () => {
    const w = await startWorkload('sysvshm');
    ids = attachedIds(w.pid);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/full']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/ENOSPC/);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('refuses a process that used SEM_UNDO, naming it; the process runs on', async () => {
    const w = await startWorkload('semundo', ['undo']);
    const img = path.join(w.dir, 'image.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, SysV semaphore undo list: the process has used SEM_UNDO`));
    expect(fs.existsSync(img)).to.equal(false);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it("an image root did not write (a process of nobody's, its image given to nobody) is refused (EPERM), leaving no process", async () => {
    const dir = makeUserDir('sysvshm');
    try {
      const w = await startWorkload('sysvshm', ['--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
      ids = attachedIds(w.pid);
      const img = path.join(dir, 'image.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      fs.chownSync(img, NOBODY.uid, NOBODY.gid);
      const rs = await cptrst(['restart', img]);
      expect(rs.code).to.equal(1);
      expect(rs.stderr, rs.stderr).to.match(new RegExp(`^cptrst: EPERM: pid ${w.pid}, vma .*: SysV shared memory is restored only from an image root wrote`));
      expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
    } finally {
      removeUserDir(dir);
    }
  });

  it('a semaphore set changed without SEM_UNDO stays in the namespace: the process restarts and finds its values', async () => {
    const w = await startWorkload('semundo');
    const img = path.join(w.dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });
});
