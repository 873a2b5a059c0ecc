/**
 * A third party's module, loaded next to ours: examples/plugin-fanotify adds a kind of open file
 * that cptrst itself refuses, a fanotify group with no marks. The fanotify workload holds two
 * groups (flags, event flags, close-on-exec, a shared description) and checks them itself after
 * the restart: fdinfo, and events reported through each.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import {
  REPO_ROOT, Workload, buildWorkloads, cptrst, killStartedWorkloads, makeTempDir, parseResult, procState, removeTempDir, startWorkload, trigger, waitGone,
  waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
/** The modules, as a user names them: ours by package name, the plugin by its path. */
const WITH_PLUGIN = ['--module', '@cptrst/cpt-module', '--module', './examples/plugin-fanotify'];
const fromRoot = { cwd: REPO_ROOT };

async function expectRunningUntouched(w: Workload): Promise<void> {
  const st = await procState(w.pid);
  expect(st?.state).to.match(/^[RS]$/);
  expect(st?.tracerPid).to.equal(0);
}

describe('a third-party plugin: fanotify (examples/plugin-fanotify)', function () {
  this.timeout(120000);
  before(() => buildWorkloads());
  const dirs: string[] = [];
  /** A directory of its own for the workload's events. */
  const workDir = (): string => {
    const d = makeTempDir('fanotify');
    dirs.push(d);
    return d;
  };
  afterEach(async () => {
    await killStartedWorkloads();
    for (const d of dirs.splice(0)) removeTempDir(d);
  });

  it('without the plugin, the checkpoint is refused naming the fd, and the process runs on untouched', async () => {
    const w = await startWorkload('fanotify', [workDir()]);
    const img = path.join(w.dir, 'refused.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill'], fromRoot);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE);
    expect(r.stderr.trim()).to.equal(`cptrst: EOPNOTSUPP: pid ${w.pid}, fd 40 (anon_inode:[fanotify]): fanotify groups are not supported: their marks and pending permission events cannot be restored`);
    expect(fs.existsSync(img), 'partial image left').to.equal(false);
    await expectRunningUntouched(w);
    await trigger(w);
    expect(parseResult(await waitResult(w)).verdict).to.equal('PASS fanotify');
  });

  it('with the plugin: checkpoint, kill, restart; the workload finds its fanotify groups again', async () => {
    const w = await startWorkload('fanotify', [workDir()]);
    const img = path.join(w.dir, 'fanotify.cpt');
    const ck = await cptrst([...WITH_PLUGIN, 'checkpoint', String(w.pid), '-o', img, '--kill'], fromRoot);
    expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 5000, { zombieOk: false })).to.equal(true);

    // The image cannot be restored by a cptrst without the plugin: the group record's type is unknown to it.
    const without = await cptrst(['restart', img], fromRoot);
    expect(without.code).to.equal(1);
    expect(without.stderr).to.match(ONE_LINE).and.match(/^cptrst: EOPNOTSUPP: .*unknown type 4713 .*not marked optional/);
    expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);

    const rs = await cptrst([...WITH_PLUGIN, 'restart', img], fromRoot);
    expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
    expect(rs.stdout.trim()).to.equal(String(w.pid));
    await expectRunningUntouched(w);
    await trigger(w);
    const text = await waitResult(w, 30000);
    const res = parseResult(text);
    expect(res.verdict, text).to.equal('PASS fanotify');
    expect(res.extra).to.deep.equal([]);
  });
});
