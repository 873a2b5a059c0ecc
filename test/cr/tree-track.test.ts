/**
 * Incremental checkpoints of a process tree left running: `--track`, then `--parent` steps, each
 * taking a copy-on-write snapshot of every process while the tree is frozen, re-arming every
 * process's write tracking at the freeze, and writing the pages from the snapshots once the tree
 * runs again. `cowwritetree` (three processes writing their memory without pause) restarts from
 * every image of its chain at that image's instant; `incrtree` (three processes rewriting a known
 * set of their pages at each step) loses no page written before a `--parent` checkpoint that was
 * SIGKILLed while it wrote its pages: the next one against the same parent has them, for every
 * process. No snapshot outlives its checkpoint; each process keeps one tracker. A first `--track`
 * SIGKILLed at moments from its start (the trackers are started before the freeze) through its
 * frozen window leaves the tree running untraced, and a tracker only for a process whose areas
 * it holds registered: none that tracks nothing, no registration without its tracker.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type { IncrementalReport as Report } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, copiesOf, cptrst, expectPass, hasFileIn, killByPid, killStartedWorkloads, membersOf, sleep, startWorkload, tracerOf, trackersOf, trigger,
  waitGone,
} from '../support';

/** Every pid a test made, killed by PID at the end. */
const made = new Set<number>();

async function startTree(name: string, args: string[]): Promise<{ w: Workload; pids: number[] }> {
  const w = await startWorkload(name, args);
  let pids = await membersOf(w.pid);
  for (let i = 0; i < 500 && pids.length < 3; i++) {
    await sleep(10);
    pids = await membersOf(w.pid);
  }
  expect(pids.length, 'members of the tree').to.equal(3);
  for (const p of pids) made.add(p);
  await sleep(200);
  return { w, pids };
}

/** A checkpoint of the running tree: every member snapshotted, tracked, untraced after it, no snapshot left. */
async function checkpoint(w: Workload, pids: number[], img: string, extra: string[]): Promise<Report[]> {
  const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json', ...extra], { env: { CPTRST_DEBUG: '1' } });
  expect(r.code, r.stderr).to.equal(0);
  const doc = JSON.parse(r.stdout) as { tasks: number; incremental: Report[]; timings: Record<string, number> };
  expect(doc.tasks).to.equal(3);
  expect(doc.timings, 'snapshots taken').to.have.property('snapshot');
  expect(r.stderr).to.not.match(/no copy-on-write snapshot/);
  expect(doc.incremental.map((x) => x.pid).sort()).to.deep.equal([...pids].sort());
  for (const p of pids) {
    expect(tracerOf(p), `pid ${p} traced`).to.equal(0);
    expect(trackersOf(p), `trackers of ${p}`).to.have.length(1);
  }
  let left = copiesOf(w.pid, pids);
  for (let i = 0; i < 100 && left.length; i++) {
    await sleep(10);
    left = copiesOf(w.pid, pids);
  }
  expect(left, 'snapshot processes left').to.deep.equal([]);
  return doc.incremental;
}

async function killTree(w: Workload, pids: number[]): Promise<void> {
  for (const p of pids) await killByPid(p);
  await w.exited;
  for (const p of pids) expect(await waitGone(p, 10000), `pid ${p} still taken`).to.equal(true);
}

/**
 * Restarts `img` (the tree's PIDs free) on its output file as the first tree left it (the restart
 * checks the file it has open), lets it run on a while, triggers it: it must pass. Then waits
 * until every member is gone, for the next.
 */
async function restartPasses(w: Workload, pids: number[], img: string, output: { text: string; mtimeNs: bigint }): Promise<void> {
  fs.writeFileSync(w.resultPath, output.text);
  execFileSync('touch', ['-m', '-d', `@${output.mtimeNs / 1000000000n}.${String(output.mtimeNs % 1000000000n).padStart(9, '0')}`, w.resultPath]);
  fs.rmSync(w.triggerPath, { force: true });
  const rs = await cptrst(['restart', img]);
  expect(rs.code, `${path.basename(img)}: ${rs.stderr}`).to.equal(0);
  for (const p of await membersOf(w.pid)) made.add(p);
  await sleep(300);
  await trigger(w);
  await expectPass(w);
  for (const p of pids) expect(await waitGone(p, 10000), `pid ${p} of ${path.basename(img)} still there`).to.equal(true);
}

/** Whether any area of the process is registered for write protection with a userfaultfd (VmFlags "uw"). */
function registered(pid: number): boolean {
  return /^VmFlags:.* uw\b/m.test(fs.readFileSync(`/proc/${pid}/smaps`, 'utf8'));
}

function outputOf(w: Workload): { text: string; mtimeNs: bigint } {
  return { text: fs.readFileSync(w.resultPath, 'utf8'), mtimeNs: fs.statSync(w.resultPath, { bigint: true }).mtimeNs };
}

/** Runs step `k` of incrtree in every member and waits until each is done. */
async function step(w: Workload, k: number): Promise<void> {
  fs.writeFileSync(`${w.triggerPath}.${k}`, '');
  for (const m of [0, 1, 2]) {
    const done = `${w.triggerPath}.${k}.${m}`;
    for (let i = 0; i < 2000 && !fs.existsSync(done); i++) await sleep(10);
    expect(fs.existsSync(done), `step ${k} done by member ${m}`).to.equal(true);
  }
}

describe('incremental checkpoints of a process tree left running (copy-on-write snapshots and write tracking)', function () {
  this.timeout(240000);
  before(() => buildWorkloads());
  afterEach(async () => {
    for (const p of made) await killByPid(p);
    made.clear();
    await killStartedWorkloads();
  });

  it('cowwritetree: --track, then three --parent steps while the tree writes without pause; every image restarts at its freeze instant', async () => {
    const { w, pids } = await startTree('cowwritetree', ['8']);
    const img = (k: number) => path.join(w.dir, `live${k}.img`);
    const first = await checkpoint(w, pids, img(0), ['--track']);
    for (const r of first) expect(r.method).to.equal('full');
    for (let k = 1; k <= 3; k++) {
      await sleep(200);
      const reports = await checkpoint(w, pids, img(k), ['--parent', img(k - 1)]);
      for (const r of reports) expect(r.method, `${r.pid}: ${r.why}`).to.equal('uffd-wp');
      // The root's second half of the inherited area is written by nobody: its parent's pages.
      expect(reports.find((r) => r.pid === w.pid)!.parentPages, 'pages of the root taken from the parent image').to.be.greaterThan(0);
    }
    await killTree(w, pids);
    const output = outputOf(w);
    for (const k of [3, 1, 2, 0]) await restartPasses(w, pids, img(k), output);
  });

  it('incrtree: a --parent checkpoint SIGKILLed while it writes the pages of the running tree loses no page: the next one against the same parent has every page each process wrote since', async () => {
    const { w, pids } = await startTree('incrtree', ['8']);
    const img = (k: number) => path.join(w.dir, `killed${k}.img`);
    await checkpoint(w, pids, img(0), ['--track']);
    // Pages written before the killed checkpoint and never again: only what each tracker carried knows them.
    await step(w, 1);
    const trackers = pids.map((p) => trackersOf(p));
    // To a pipe nobody reads: it stops once the pipe is full, after the tree was let go.
    const cli = spawn(process.execPath, [CLI_MAIN, 'checkpoint', String(w.pid), '-o', '-', '--parent', img(0)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const closed = new Promise<void>((resolve) => cli.once('close', () => resolve()));
    let traced = false;
    for (let i = 0; i < 500 && !(traced && pids.every((p) => tracerOf(p) === 0)); i++) {
      if (tracerOf(w.pid) === cli.pid) traced = true;
      await sleep(10);
    }
    await sleep(300);
    expect(cli.exitCode, 'the checkpoint waits on its output').to.equal(null);
    for (const p of pids) expect(tracerOf(p), `pid ${p} runs, let go before the pages are written`).to.equal(0);
    cli.kill('SIGKILL');
    await closed;
    let left = copiesOf(w.pid, pids);
    for (let i = 0; i < 200 && left.length; i++) {
      await sleep(10);
      left = copiesOf(w.pid, pids);
    }
    expect(left, 'snapshot processes left by the killed checkpoint').to.deep.equal([]);
    expect(pids.map((p) => trackersOf(p)), 'the trackers are kept').to.deep.equal(trackers);
    await step(w, 2);
    const reports = await checkpoint(w, pids, img(1), ['--parent', img(0)]);
    for (const r of reports) {
      expect(r.method, `${r.pid}: ${r.why}`).to.equal('uffd-wp');
      expect(r.parentPages, `${r.pid}: pages from the parent`).to.be.greaterThan(r.storedPages);
    }
    await step(w, 3);
    const third = await checkpoint(w, pids, img(2), ['--parent', img(1)]);
    for (const r of third) expect(r.method, `${r.pid}: ${r.why}`).to.equal('uffd-wp');
    await killTree(w, pids);
    const output = outputOf(w);
    for (const k of [1, 2, 0]) await restartPasses(w, pids, img(k), output);
  });

  it('a first --track SIGKILLed at moments from its start through the freeze: the tree runs on untraced; a tracker is left only for a process whose areas it holds, none for one it does not track', async () => {
    const { w, pids } = await startTree('cowwritetree', ['8']);
    let killed = 0;
    let tracked = 0;
    // Later and later, until a checkpoint ends before its kill: the moments cover all of it.
    for (let d = 0, done = false; !done; d += 20) {
      expect(d, 'the checkpoint never ended before its kill').to.be.below(5000);
      const what = `SIGKILL ${d} ms`;
      const img = path.join(w.dir, `k${d}.img`);
      // The trackers of an earlier round go first: each round starts from an untracked tree.
      for (const p of pids) for (const t of trackersOf(p)) process.kill(t, 'SIGKILL');
      for (const p of pids) {
        for (let i = 0; i < 300 && registered(p); i++) await sleep(10);
        expect(registered(p), `${what}: pid ${p} registered before the round`).to.equal(false);
      }
      const cli = spawn(process.execPath, [CLI_MAIN, 'checkpoint', String(w.pid), '-o', img, '--track'], { stdio: ['ignore', 'ignore', 'pipe'] });
      const closed = new Promise<number | null>((resolve) => cli.once('close', (code) => resolve(code)));
      // From the moment it has the image's file open (the checkpoint has begun: its prepares run).
      for (let i = 0; i < 20000 && cli.exitCode === null && !hasFileIn(cli.pid!, w.dir); i++) await sleep(1);
      await sleep(d);
      if (cli.exitCode === null) {
        cli.kill('SIGKILL');
        killed++;
      }
      const code = await closed;
      done = code === 0;
      for (const p of pids) {
        for (let i = 0; i < 500 && tracerOf(p) !== 0; i++) await sleep(10);
        expect(tracerOf(p), `${what}: pid ${p} traced`).to.equal(0);
      }
      // A snapshot (a child of its process) is killed with cptrst and reaped a moment later.
      let members = (await membersOf(w.pid)).sort();
      for (let i = 0; i < 500 && members.join() !== [...pids].sort().join(); i++) {
        await sleep(10);
        members = (await membersOf(w.pid)).sort();
      }
      expect(members, `${what}: the tree`).to.deep.equal([...pids].sort());
      for (const p of pids) {
        // A tracker never armed ends on its own (end of file on its stdin) once cptrst is gone.
        let ts = trackersOf(p);
        for (let i = 0; i < 300 && (ts.length > 1 || (ts.length === 1 && !registered(p))); i++) {
          await sleep(10);
          ts = trackersOf(p);
        }
        expect(ts.length, `${what}: trackers of pid ${p}`).to.be.at.most(1);
        if (ts.length) tracked++;
        // A registration ends with its tracker (the kernel closes the userfaultfd a moment after the tracker exits).
        for (let i = 0; i < 300 && registered(p) !== (ts.length === 1); i++) await sleep(10);
        expect(registered(p), `${what}: pid ${p} registered, with ${ts.length} tracker(s)`).to.equal(ts.length === 1);
        if (code === 0) expect(ts.length, `${what}: the checkpoint succeeded: pid ${p} tracked`).to.equal(1);
      }
      for (const f of fs.readdirSync(w.dir).filter((n) => n.startsWith(`k${d}.img`))) fs.rmSync(path.join(w.dir, f), { force: true });
    }
    expect(killed, 'the kills all came too late').to.be.greaterThan(0);
    expect(tracked, 'no process tracked after the checkpoint that ended').to.be.greaterThan(0);
    // Tracked again from scratch: leftovers are ended, the tree checks its own memory.
    await checkpoint(w, pids, path.join(w.dir, 'last.img'), ['--track']);
    await trigger(w);
    await expectPass(w);
  });
});
