/**
 * A third party's module, loaded next to ours: examples/plugin-secretmem adds a kind of open file
 * that cptrst itself refuses, a memfd_secret fd not sized yet. The secretmem workload holds two
 * (close-on-exec or not, one at two fds sharing a description) and checks them itself after the
 * restart: flags, size, filesystem, sharing, then sized, mapped and used.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { linux } from '@cptrst/core';
import {
  REPO_ROOT, Workload, buildWorkloads, cptrst, killStartedWorkloads, parseResult, procState, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
/** The modules, as a user names them: ours by package name, the plugin by its path. */
const WITH_PLUGIN = ['--module', '@cptrst/cpt-module', '--module', './examples/plugin-secretmem'];
const fromRoot = { cwd: REPO_ROOT };

async function expectRunningUntouched(w: Workload): Promise<void> {
  const st = await procState(w.pid);
  expect(st?.state).to.match(/^[RS]$/);
  expect(st?.tracerPid).to.equal(0);
}

/** The workload, or a skip where the kernel makes no secret memory (its READY comes anyway). */
async function startSecretmem(ctx: Mocha.Context): Promise<Workload> {
  const w = await startWorkload('secretmem');
  if (!fs.readlinkSync(`/proc/${w.pid}/fd/40`, { encoding: 'utf8' }).startsWith('/secretmem')) ctx.skip();
  return w;
}

describe('a third-party plugin: secret memory (examples/plugin-secretmem)', function () {
  this.timeout(120000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('without the plugin, the checkpoint is refused naming the fd, and the process runs on untouched', async function () {
    const w = await startSecretmem(this);
    const img = path.join(w.dir, 'refused.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill'], fromRoot);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE);
    expect(r.stderr.trim()).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, fd 40 \\(/secretmem \\(deleted\\)\\): the file is on a mount the process does not see`));
    expect(fs.existsSync(img), 'partial image left').to.equal(false);
    await expectRunningUntouched(w);
    await trigger(w);
    expect(parseResult(await waitResult(w)).verdict).to.equal('PASS secretmem');
  });

  it('with the plugin: checkpoint, kill, restart; the workload finds its secret-memory fds again', async function () {
    const w = await startSecretmem(this);
    const img = path.join(w.dir, 'secretmem.cpt');
    const ck = await cptrst([...WITH_PLUGIN, 'checkpoint', String(w.pid), '-o', img, '--kill'], fromRoot);
    expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 5000, { zombieOk: false })).to.equal(true);

    // The image cannot be restored by a cptrst without the plugin: the record's type is unknown to it.
    const without = await cptrst(['restart', img], fromRoot);
    expect(without.code).to.equal(1);
    expect(without.stderr).to.match(ONE_LINE).and.match(/^cptrst: EOPNOTSUPP: .*unknown type 4714 .*not marked optional/);
    expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);

    const rs = await cptrst([...WITH_PLUGIN, 'restart', img], fromRoot);
    expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
    expect(rs.stdout.trim()).to.equal(String(w.pid));
    await expectRunningUntouched(w);
    await trigger(w);
    const text = await waitResult(w, 30000);
    const res = parseResult(text);
    expect(res.verdict, text).to.equal('PASS secretmem');
    expect(res.extra).to.deep.equal([]);
  });

  it('with the plugin: a sized secret-memory fd is left to cptrst, which refuses it', async function () {
    const w = await startSecretmem(this);
    // The test sizes fd 40 through a copy of it (pidfd_getfd: secret memory cannot be opened again by path).
    const pidfd = linux.pidfdOpen(w.pid);
    try {
      const copy = linux.pidfdGetfd(pidfd, 40);
      try {
        fs.ftruncateSync(copy, 4096);
      } finally {
        fs.closeSync(copy);
      }
    } finally {
      fs.closeSync(pidfd);
    }
    const r = await cptrst([...WITH_PLUGIN, 'checkpoint', String(w.pid), '-o', path.join(w.dir, 'sized.cpt')], fromRoot);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, fd 40 \\(/secretmem \\(deleted\\)\\): the file is on a mount the process does not see`));
    await expectRunningUntouched(w);
  });
});
