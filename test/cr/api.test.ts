/** The same C/R from TypeScript: core's entry points with @cptrst/cpt-module loaded at run time. */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointFlags, CptError, RestartFlags, loadModule, loadedModules, sys_checkpoint, sys_restart, unloadModule } from '@cptrst/core';
import { buildWorkloads, killStartedWorkloads, parseResult, passLines, procState, startWorkload, trigger, waitResult } from '../support';

describe('the TypeScript API', function () {
  this.timeout(60000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('sys_checkpoint and sys_restart through the loaded module', async () => {
    loadModule('@cptrst/cpt-module');
    expect(loadedModules()).to.include('@cptrst/cpt-module');
    const w = await startWorkload('dynamic');
    const img = path.join(w.dir, 'api.cpt');
    const fd = fs.openSync(img, 'w');
    const phases: string[] = [];
    const ck = await sys_checkpoint(w.pid, fd, CheckpointFlags.KILL, { onProgress: (e) => phases.push(e.phase) });
    fs.closeSync(fd);
    expect(ck.pid).to.equal(w.pid);
    expect(ck.tasks).to.equal(1);
    expect(ck.bytes).to.equal(fs.statSync(img).size);
    expect(phases).to.include.members(['frozen', 'pages', 'done']);
    await w.exited;

    const rfd = fs.openSync(img, 'r');
    const rs = await sys_restart(0, rfd, RestartFlags.LEAVE_STOPPED);
    fs.closeSync(rfd);
    expect(rs.pid).to.equal(w.pid);
    const st = await procState(w.pid);
    expect(st?.state).to.equal('T');
    expect(st?.tracerPid).to.equal(0);
    process.kill(w.pid, 'SIGCONT');
    await trigger(w);
    expect(passLines('dynamic')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('sys_restart refuses an image whose root is not the ctid asked for', async () => {
    loadModule('@cptrst/cpt-module');
    const w = await startWorkload('static');
    const img = path.join(w.dir, 'api.cpt');
    const fd = fs.openSync(img, 'w');
    await sys_checkpoint(w.pid, fd, CheckpointFlags.KILL);
    fs.closeSync(fd);
    await w.exited;
    const rfd = fs.openSync(img, 'r');
    try {
      let err: unknown;
      await sys_restart(w.pid + 1, rfd, 0).catch((e) => {
        err = e;
      });
      expect(err).to.be.instanceOf(CptError);
      expect((err as CptError).message).to.match(/not/);
    } finally {
      fs.closeSync(rfd);
    }
    expect(fs.existsSync(`/proc/${w.pid}`)).to.equal(false);
  });

  it('with the module unloaded, the entry points answer ENOSYS again', async () => {
    loadModule('@cptrst/cpt-module');
    unloadModule('@cptrst/cpt-module');
    try {
      await sys_restart(0, 0, 0);
      expect.fail('sys_restart worked with no module');
    } catch (e) {
      expect((e as CptError).code).to.equal('ENOSYS');
    }
  });
});
