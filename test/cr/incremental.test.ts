/**
 * Incremental checkpoints (`checkpoint --track`, `--parent`). `incrwrite` rewrites a known ~1% of
 * its pages at each step (and drops some, maps an area again, has a second thread write another
 * area); a chain of a full image and three incremental ones is restarted from the last, and the
 * restarted process checks every page. Each incremental image is a small part of the full one,
 * and says how its pages were found: write tracking, or (tracker gone, another process) page
 * hashes. A parent that was changed or replaced is refused at restart (EBADIMG), nothing left
 * running. The tracker ends with its process; the process holds no extra fd.
 *
 * The tracking is re-armed at the freeze and the process runs on from a snapshot: `incrlive`
 * writes without pause and each image of its chain, restarted, must hold every page of one instant
 * (the counter's); a `--parent P` checkpoint SIGKILLed while it writes its pages (the process let
 * go), or one whose image was removed, leaves the next `--parent P` every page written since P,
 * those of the steps before the lost image too (only what the tracker carried knows them).
 */
import { expect } from 'chai';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointFlags, CptError, ImageReader, ObjectType, fileSource, loadModule, sys_checkpoint } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, cptrst, expectPass, killStartedWorkloads, parseResult, sleep, startWorkload, tracerOf, trackersOf, trigger, waitGone, waitResult,
} from '../support';

interface Report {
  pid: number;
  method: string;
  why?: string;
  storedPages: number;
  parentPages: number;
}

/** Runs step `k` of the workload and waits until it is done. */
async function step(w: Workload, k: number): Promise<void> {
  fs.writeFileSync(`${w.triggerPath}.${k}`, '');
  const done = `${w.triggerPath}.${k}.done`;
  for (let i = 0; i < 2000 && !fs.existsSync(done); i++) await sleep(10);
  expect(fs.existsSync(done), `step ${k} done`).to.equal(true);
}

async function checkpoint(w: Workload, img: string, extra: string[]): Promise<Report> {
  const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json', ...extra]);
  expect(r.code, r.stderr).to.equal(0);
  const doc = JSON.parse(r.stdout) as { incremental: Report[] };
  expect(doc.incremental).to.have.length(1);
  return doc.incremental[0];
}

function fdsOf(pid: number): string[] {
  return fs.readdirSync(`/proc/${pid}/fd`).sort();
}

async function restartPasses(w: Workload, img: string, steps: number): Promise<void> {
  process.kill(w.pid, 'SIGKILL');
  await w.exited;
  expect(await waitGone(w.pid, 5000)).to.equal(true);
  const rr = await cptrst(['restart', img]);
  expect(rr.code, rr.stderr).to.equal(0);
  await trigger(w);
  expect(parseResult(await waitResult(w, 60000)).verdict).to.equal(`PASS incrwrite (step ${steps})`);
}

/** How many PAGES objects an image has in its pages section (after PAGES_FOLLOW), and how many of its tasks own them. */
function pagesSection(file: string): { pages: number; tasks: number } {
  const fd = fs.openSync(file, 'r');
  try {
    const r = new ImageReader(fileSource(fd));
    r.readHead();
    const taskOf = new Map<number, number>();
    const owners = new Set<number>();
    let after = false;
    let pages = 0;
    for (let rec = r.next(); rec; rec = r.next()) {
      if (rec.type === ObjectType.TASK) taskOf.set(rec.tag, rec.tag);
      else if (rec.type === ObjectType.VMA) taskOf.set(rec.tag, rec.ptag);
      else if (rec.type === ObjectType.PAGES_FOLLOW) after = true;
      else if (rec.type === ObjectType.PAGES && after) {
        pages++;
        owners.add(taskOf.get(rec.ptag) ?? -1);
      }
      if (rec.pages) r.recycle(rec.pages);
    }
    return { pages, tasks: owners.size };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Restarts `img` of incrlive (whose first process is gone) with its trigger there: the restarted
 * process checks its pages before it writes any, i.e. as they were at the image's freeze.
 */
async function restartLive(w: Workload, img: string): Promise<void> {
  // Its output file as the first process left it (its READY line), modified at the same instant:
  // each image is restarted on the same file, which the restart checks.
  const first = firstOutput.get(w)!;
  fs.writeFileSync(w.resultPath, first.text);
  execFileSync('touch', ['-m', '-d', `@${first.mtimeNs / 1000000000n}.${String(first.mtimeNs % 1000000000n).padStart(9, '0')}`, w.resultPath]);
  await trigger(w);
  const rr = await cptrst(['restart', img]);
  expect(rr.code, rr.stderr).to.equal(0);
  expect(parseResult(await waitResult(w, 60000)).verdict, `restarted from ${path.basename(img)}`).to.equal('PASS incrlive (ran)');
}

const firstOutput = new WeakMap<Workload, { text: string; mtimeNs: bigint }>();

async function killFirst(w: Workload): Promise<void> {
  process.kill(w.pid, 'SIGKILL');
  await w.exited;
  expect(await waitGone(w.pid, 5000)).to.equal(true);
  firstOutput.set(w, { text: fs.readFileSync(w.resultPath, 'utf8'), mtimeNs: fs.statSync(w.resultPath, { bigint: true }).mtimeNs });
}

describe('incremental checkpoints (--track, --parent)', function () {
  this.timeout(240000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('a chain of three restarts from its last image with every page right; write tracking finds the changed pages', async () => {
    const w = await startWorkload('incrwrite', ['16']);
    const img = (k: number) => path.join(w.dir, `i${k}.img`);
    const fds = fdsOf(w.pid);
    const full = await checkpoint(w, img(0), ['--track']);
    expect(full.method).to.equal('full');
    expect(trackersOf(w.pid), 'one tracker').to.have.length(1);
    expect(fdsOf(w.pid), 'the process holds no extra fd').to.deep.equal(fds);
    for (let k = 1; k <= 3; k++) {
      await step(w, k);
      const r = await checkpoint(w, img(k), ['--parent', img(k - 1)]);
      expect(r.method, r.why).to.equal('uffd-wp');
      // About 1% of 4096 pages, plus the second thread's 64 and (step 1) the 16 mapped again.
      expect(r.storedPages).to.be.within(40, 250);
      expect(r.parentPages).to.be.greaterThan(4000);
      expect(fs.statSync(img(k)).size).to.be.lessThan(fs.statSync(img(0)).size / 8);
    }
    expect(trackersOf(w.pid), 'still one tracker').to.have.length(1);
    expect(fdsOf(w.pid)).to.deep.equal(fds);
    const tracker = trackersOf(w.pid)[0];
    const show = await cptrst(['show', img(3)]);
    expect(show.code, show.stderr).to.equal(0);
    expect(show.stdout).to.match(/uffd-wp/);
    await restartPasses(w, img(3), 3);
    // The tracker ends once its process is gone (it checks every 2 s).
    expect(await waitGone(tracker, 10000), 'the tracker outlives its process').to.equal(true);
  });

  it('falls back to page hashes when the tracker is gone, and when the process is another one (restarted)', async () => {
    const w = await startWorkload('incrwrite', ['8']);
    const img = (k: number) => path.join(w.dir, `h${k}.img`);
    await checkpoint(w, img(0), ['--track']);
    for (const t of trackersOf(w.pid)) process.kill(t, 'SIGKILL');
    await step(w, 1);
    const r1 = await checkpoint(w, img(1), ['--parent', img(0)]);
    expect(r1.method).to.equal('hashes');
    expect(r1.why).to.match(/tracker .* is gone/);
    expect(r1.storedPages).to.be.within(20, 200);
    // The process restarted from the chain is another process (its start time differs).
    process.kill(w.pid, 'SIGKILL');
    await w.exited;
    expect(await waitGone(w.pid, 5000)).to.equal(true);
    const rr = await cptrst(['restart', img(1)]);
    expect(rr.code, rr.stderr).to.equal(0);
    await step(w, 2);
    const r2 = await checkpoint(w, img(2), ['--parent', img(1)]);
    expect(r2.method).to.equal('hashes');
    expect(r2.why).to.match(/another process/);
    expect(r2.storedPages).to.be.within(20, 400);
    const show = await cptrst(['show', img(2)]);
    expect(show.stdout).to.match(/hashes/);
    await restartPasses(w, img(2), 2);
  });

  it('a failed incremental checkpoint leaves the tracking intact; a failed first one leaves no tracker', async () => {
    loadModule('@cptrst/cpt-module');
    const w = await startWorkload('incrwrite', ['8']);
    const img = (k: number) => path.join(w.dir, `f${k}.img`);
    /** A checkpoint through the API, aborted once every handler has dumped (before the commit). */
    const aborted = async (incremental: { parent?: string; track: boolean }) => {
      const fd = fs.openSync(path.join(w.dir, 'aborted.img'), 'w');
      const ac = new AbortController();
      let err: unknown;
      try {
        await sys_checkpoint(w.pid, fd, CheckpointFlags.RESUME, { incremental, signal: ac.signal, onProgress: (e) => (e.phase === 'dumped' ? ac.abort() : undefined) });
      } catch (e) {
        err = e;
      } finally {
        fs.closeSync(fd);
      }
      expect(err).to.be.instanceOf(CptError);
      expect((err as CptError).code).to.equal('EINTR');
    };
    await aborted({ track: true });
    expect(trackersOf(w.pid), 'a failed first checkpoint leaves no tracker').to.deep.equal([]);
    // A compressed image has no place in its file to take a page from: refused before the freeze, through the API too.
    const fd = fs.openSync(path.join(w.dir, 'compressed.img'), 'w');
    let err: unknown;
    try {
      await sys_checkpoint(w.pid, fd, CheckpointFlags.RESUME, { incremental: { track: true }, compress: 'lz4' });
    } catch (e) {
      err = e;
    } finally {
      fs.closeSync(fd);
    }
    expect(err).to.be.instanceOf(CptError);
    expect((err as CptError).code).to.equal('EINVAL');
    expect(trackersOf(w.pid), 'a refused compressed checkpoint makes no tracker').to.deep.equal([]);
    await checkpoint(w, img(0), ['--track']);
    const tracker = trackersOf(w.pid);
    await step(w, 1);
    await aborted({ parent: img(0), track: true });
    expect(trackersOf(w.pid), 'the tracker is kept').to.deep.equal(tracker);
    const r = await checkpoint(w, img(1), ['--parent', img(0)]);
    expect(r.method, 'tracking still holds for the parent').to.equal('uffd-wp');
    await restartPasses(w, img(1), 1);
  });

  it('a process tree: each process has its own tracking, and the tree restarts from the last image of its chain', async () => {
    const w = await startWorkload('tree');
    const img = (k: number) => path.join(w.dir, `tree${k}.img`);
    const run = async (k: number, extra: string[]) => {
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img(k), '--json', ...extra]);
      expect(r.code, r.stderr).to.equal(0);
      return (JSON.parse(r.stdout) as { incremental: Report[] }).incremental;
    };
    const first = await run(0, ['--track']);
    const live = first.map((r) => r.pid);
    expect(live.length, 'processes with memory (zombies have none)').to.be.greaterThan(3);
    for (const pid of live) expect(trackersOf(pid), `tracker of ${pid}`).to.have.length(1);
    const second = await run(1, ['--parent', img(0)]);
    for (const r of second) expect(r.method, `${r.pid}: ${r.why}`).to.equal('uffd-wp');
    const third = await run(2, ['--parent', img(1), '--kill']);
    for (const r of third) expect(r.method, `${r.pid}: ${r.why}`).to.equal('uffd-wp');
    // Pages of several processes after every other record (the pages section): each parent image
    // must give each page once, to the process of the area it names.
    for (const k of [0, 1]) expect(pagesSection(img(k)).tasks, `processes with pages in the pages section of image ${k}`).to.be.greaterThan(1);
    // The root's own memory is mostly its parent image's (a child's areas kept copy-on-write from
    // the root are written as in a full image).
    expect(third[0].parentPages).to.be.greaterThan(third[0].storedPages);
    for (const pid of live) expect(await waitGone(pid, 5000), `${pid} gone`).to.equal(true);
    await w.exited;
    const rr = await cptrst(['restart', img(2)]);
    expect(rr.code, rr.stderr).to.equal(0);
    await trigger(w);
    expect(parseResult(await waitResult(w, 60000)).verdict).to.equal('PASS tree');
  });

  it('cowtree: the second image of a chain whose first checkpoint left the tree running (--track, then --parent --kill) restarts, its members checking every page and that the kept pages are shared again', async () => {
    const w = await startWorkload('cowtree', ['16']);
    const first = path.join(w.dir, 'cowlive0.img');
    const second = path.join(w.dir, 'cowlive1.img');
    const r0 = await cptrst(['checkpoint', String(w.pid), '-o', first, '--track']);
    expect(r0.code, r0.stderr).to.equal(0);
    const r1 = await cptrst(['checkpoint', String(w.pid), '-o', second, '--parent', first, '--kill']);
    expect(r1.code, r1.stderr).to.equal(0);
    await w.exited;
    const rs = await cptrst(['restart', second]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('cowtree: children keeping memory copy-on-write have their pages in the pages section of a --track image, which restarts lazily', async () => {
    const w = await startWorkload('cowtree', ['16']);
    const first = path.join(w.dir, 'cowfirst.img');
    const r0 = await cptrst(['checkpoint', String(w.pid), '-o', first, '--track', '--kill']);
    expect(r0.code, r0.stderr).to.equal(0);
    expect(pagesSection(first).tasks, 'processes with pages in the pages section').to.be.greaterThan(1);
    await w.exited;
    const lazy = await cptrst(['restart', '--lazy', first]);
    expect(lazy.code, lazy.stderr).to.equal(0);
    expect(lazy.stderr).to.match(/the last page is in \(\d+ pages/);
    await trigger(w);
    await expectPass(w);
  });

  it('a parent that was changed or replaced is refused at restart, nothing left running', async () => {
    const w = await startWorkload('incrwrite', ['8']);
    const img = (k: number) => path.join(w.dir, `t${k}.img`);
    await checkpoint(w, img(0), ['--track']);
    await step(w, 1);
    await checkpoint(w, img(1), ['--parent', img(0)]);
    process.kill(w.pid, 'SIGKILL');
    await w.exited;
    expect(await waitGone(w.pid, 5000)).to.equal(true);
    const good = fs.readFileSync(img(0));
    // A byte of a page changed: the parent's own checksums refuse it.
    const changed = Buffer.from(good);
    changed[changed.length - 5000] ^= 1;
    fs.writeFileSync(img(0), changed);
    let r = await cptrst(['restart', img(1)]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/EBADIMG/);
    expect(await waitGone(w.pid, 5000), 'nothing left running').to.equal(true);
    // Another image of the same size in its place: not the parent it was taken against.
    const other = path.join(w.dir, 'other.img');
    const w2 = await startWorkload('incrwrite', ['8']);
    await checkpoint(w2, other, ['--track']);
    fs.copyFileSync(other, img(0));
    r = await cptrst(['restart', img(1)]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/EBADIMG.*(not the image this one was taken against|bytes, not the)/);
    expect(await waitGone(w.pid, 5000)).to.equal(true);
    // Missing: a clear error.
    fs.rmSync(img(0));
    r = await cptrst(['restart', img(1)]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/parent image .* cannot be opened/);
    // Lazy restart of a chain is refused clearly.
    fs.writeFileSync(img(0), good);
    r = await cptrst(['restart', '--lazy', img(1)]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/lazy restart of an incremental image/);
    expect(await waitGone(w.pid, 5000)).to.equal(true);
  });

  it('a process that writes without pause: each image of its chain (taken while it runs on) restarts at its freeze instant', async () => {
    const w = await startWorkload('incrlive', ['16']);
    const img = (k: number) => path.join(w.dir, `live${k}.img`);
    expect((await checkpoint(w, img(0), ['--track'])).method).to.equal('full');
    for (let k = 1; k <= 3; k++) {
      await sleep(200);
      const r = await checkpoint(w, img(k), ['--parent', img(k - 1)]);
      expect(r.method, r.why).to.equal('uffd-wp');
      // Its hot pages (one in eight) are written again and again; the cold ones are the parent's.
      expect(r.parentPages).to.be.greaterThan(r.storedPages);
    }
    await killFirst(w);
    for (const k of [3, 1, 2, 0]) await restartLive(w, img(k));
  });

  it('a --parent checkpoint killed (SIGKILL) while it writes its pages: the next one against the same parent still has every page written since', async () => {
    const w = await startWorkload('incrwrite', ['16']);
    const img = (k: number) => path.join(w.dir, `killed${k}.img`);
    await checkpoint(w, img(0), ['--track']);
    // Pages written before the killed checkpoint and never again: only what the tracker carried knows them.
    await step(w, 1);
    // To a pipe nobody reads: it stops once the pipe is full, after the process was let go.
    const cli = spawn(process.execPath, [CLI_MAIN, 'checkpoint', String(w.pid), '-o', '-', '--parent', img(0)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const closed = new Promise<void>((resolve) => cli.once('close', () => resolve()));
    let traced = false;
    for (let i = 0; i < 500 && !(traced && tracerOf(w.pid) === 0); i++) {
      if (tracerOf(w.pid) === cli.pid) traced = true;
      await sleep(10);
    }
    await sleep(300);
    expect(cli.exitCode, 'the checkpoint waits on its output').to.equal(null);
    expect(tracerOf(w.pid), 'the process runs, let go before the pages are written').to.equal(0);
    cli.kill('SIGKILL');
    await closed;
    await step(w, 2);
    const r = await checkpoint(w, img(1), ['--parent', img(0)]);
    expect(r.method, r.why).to.equal('uffd-wp');
    expect(r.parentPages).to.be.greaterThan(r.storedPages);
    await restartPasses(w, img(1), 2);
  });

  it('--parent P after an image X taken against P was removed: every page written since P, by write tracking', async () => {
    const w = await startWorkload('incrwrite', ['16']);
    const img = (k: number) => path.join(w.dir, `gone${k}.img`);
    await checkpoint(w, img(0), ['--track']);
    await step(w, 1);
    await checkpoint(w, img(1), ['--parent', img(0)]);
    fs.rmSync(img(1));
    await step(w, 2);
    const r = await checkpoint(w, img(2), ['--parent', img(0)]);
    expect(r.method, r.why).to.equal('uffd-wp');
    await step(w, 3);
    // P again (its base still): the pages of steps 1, 2 (carried) and 3 (the bits).
    const again = await checkpoint(w, img(3), ['--parent', img(0)]);
    expect(again.method, again.why).to.equal('uffd-wp');
    // X2 is now neither the image armed nor its base: compared by hashes.
    const o = await checkpoint(w, img(4), ['--parent', img(2)]);
    expect(o.method).to.equal('hashes');
    expect(o.why).to.match(/holds since other images/);
    await restartPasses(w, img(3), 3);
  });
});
