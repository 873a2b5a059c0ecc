/**
 * SysV semaphore sets and message queues used by the process: taken back as the process left
 * them, or made again with their ids, keys, modes, values and messages; another's object (or the
 * process's own, changed by someone else since) is never taken over or overwritten.
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
import { checkpointKill } from '../support/cr';

const NOBODY = { uid: 65534, gid: 65534 };

interface Objects {
  sems: linux.SysvSem[];
  queues: linux.SysvMsg[];
}

/** The sets and queues the workload made: the keyed ones by their keys, the private ones by their last user. */
function objectsOf(pid: number): Objects {
  const semKey = (0x5d000000 | (pid & 0xffffff)) | 0;
  const msgKey = (0x5e000000 | (pid & 0xffffff)) | 0;
  const semctl = linux.syscallNumber('semctl');
  const sems = linux.readSysvSem().filter((s) => s.key === semKey || (s.key === 0 && Number(linux.rawSyscall(semctl, s.id, 0, linux.SEM.GETPID, 0)) === pid));
  const queues = linux.readSysvMsg().filter((q) => q.key === msgKey || (q.key === 0 && q.lspid === pid));
  return { sems, queues };
}

function removeObjects(o: Objects | undefined): void {
  if (!o) return;
  for (const s of o.sems) if (linux.readSysvSem().some((x) => x.id === s.id)) execFileSync('ipcrm', ['-s', String(s.id)]);
  for (const q of o.queues) if (linux.readSysvMsg().some((x) => x.id === q.id)) execFileSync('ipcrm', ['-q', String(q.id)]);
}

/** Runs a few lines of python3 with libc (ctypes), as another process would use the objects. */
const python = (lines: string[]): string => execFileSync('python3', ['-c', ['import ctypes, sys', 'libc = ctypes.CDLL(None, use_errno=True)', ...lines].join('\n')]).toString().trim();

const valuesOf = (id: number): number[] => {
  const s = linux.readSysvSem().find((x) => x.id === id)!;
  const semctl = linux.syscallNumber('semctl');
  return Array.from({ length: s.nsems }, (_, i) => Number(linux.rawSyscall(semctl, id, i, linux.SEM.GETVAL, 0)));
};

describe('SysV semaphores and message queues', function () {
  this.timeout(120000);
  let objs: Objects | undefined;
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(async () => {
    await killStartedWorkloads();
    removeObjects(objs);
    objs = undefined;
  });

  it('the sets and queues the process left (checkpoint --kill) are taken back as they are', async () => {
    const w = await startWorkload('sysvipc');
    objs = objectsOf(w.pid);
    expect(objs.sems).to.have.length(2);
    expect(objs.queues).to.have.length(2);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('removed after the checkpoint, they are made again with their ids, keys, modes, values and messages', async () => {
    const w = await startWorkload('sysvipc');
    objs = objectsOf(w.pid);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    removeObjects(objs);
    expect(objectsOf(w.pid).sems).to.have.length(0);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    const now = objectsOf(w.pid);
    expect(now.sems.map((s) => [s.id, s.key, s.mode & 0o777, s.nsems])).to.deep.equal(objs.sems.map((s) => [s.id, s.key, s.mode & 0o777, s.nsems]));
    expect(now.queues.map((q) => [q.id, q.key, q.mode & 0o777, q.qnum, q.cbytes])).to.deep.equal(objs.queues.map((q) => [q.id, q.key, q.mode & 0o777, q.qnum, q.cbytes]));
    await trigger(w);
    await expectPass(w);
  });

  it('a set someone else changed since the checkpoint is not overwritten: the restart fails (EBUSY), leaving no process', async () => {
    const w = await startWorkload('sysvipc');
    objs = objectsOf(w.pid);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const keyed = objs.sems.find((s) => s.key !== 0)!;
    // semop(id, {0, +1, 0}, 1) from another process.
    python([`op = (ctypes.c_short * 3)(0, 1, 0)`, `sys.exit(libc.semop(${keyed.id}, op, 1))`]);
    const before = valuesOf(keyed.id);
    const rs = await cptrst(['restart', img]);
    expect(rs.code).to.equal(1);
    expect(rs.stderr).to.match(new RegExp(`^cptrst: EBUSY: pid ${w.pid}, SysV semaphore set ${keyed.id} \\(key ${keyed.key}\\): the set the process left .* was changed since the checkpoint`));
    expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    expect(valuesOf(keyed.id)).to.deep.equal(before);
  });

  it("another's queue on the key is not taken over: the restart fails (EEXIST) and removes the sets it had made", async () => {
    const w = await startWorkload('sysvipc');
    objs = objectsOf(w.pid);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    removeObjects(objs);
    const keyed = objs.queues.find((q) => q.key !== 0)!;
    const other = Number(python([`print(libc.msgget(${keyed.key}, 0o1600))`]));
    expect(other).to.be.at.least(0);
    try {
      const rs = await cptrst(['restart', img]);
      expect(rs.code).to.equal(1);
      expect(rs.stderr).to.match(new RegExp(`^cptrst: EEXIST: pid ${w.pid}, SysV message queue ${keyed.id} \\(key ${keyed.key}\\): SysV key ${keyed.key} is taken by message queue ${other}; it is not taken over`));
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
      // The sets made before the queue failed are gone again; the other queue is untouched.
      const ids = linux.readSysvSem().map((s) => s.id);
      for (const s of objs.sems) expect(ids).to.not.include(s.id);
      expect(linux.readSysvMsg().find((q) => q.id === other)?.qnum).to.equal(0);
    } finally {
      execFileSync('ipcrm', ['-q', String(other)]);
    }
  });

  it('a checkpoint that fails once everything was read (ENOSPC on /dev/full) leaves the process and its objects as they were', async () => {
    const w = await startWorkload('sysvipc');
    objs = objectsOf(w.pid);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/full']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/ENOSPC/);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it("an image root did not write (a process of nobody's, its image given to nobody) is refused (EPERM), leaving no process", async () => {
    const dir = makeUserDir('sysvipc');
    try {
      const w = await startWorkload('sysvipc', ['--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
      objs = objectsOf(w.pid);
      const img = path.join(dir, 'image.cpt');
      await checkpointKill(w, img);
      fs.chownSync(img, NOBODY.uid, NOBODY.gid);
      const rs = await cptrst(['restart', img]);
      expect(rs.code).to.equal(1);
      expect(rs.stderr, rs.stderr).to.match(new RegExp(`^cptrst: EPERM: pid ${w.pid}, SysV .*: SysV semaphores and message queues are restored only from an image root wrote`));
      expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
    } finally {
      removeUserDir(dir);
    }
  });
});
