/**
 * The memory areas of a checkpoint that lets the process run, read before the freeze (hints,
 * mm/src/hints.ts): the image must be the one smaps read while frozen would give, however the
 * process changes its areas meanwhile. `mapchurn` maps, protects, madvises and unmaps without
 * pause, and checks after the restart that every area is as its step count says (range,
 * protection, VmFlags wf and dd, Rss, data). With `mapchurn signals`, a test handler running after
 * the pre-read (a DumpHandler's prepare, ordered after mm's) makes the process change between the
 * pre-read and the freeze, so that each way back is seen in the debug log: maps that differ (smaps
 * read while frozen), VmFlags that differ while the maps do not (found against the snapshot after
 * the release: the checkpoint is taken again without hints).
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { Logger, sys_checkpoint } from '@cptrst/core';
import { Workload, afterPreRead, buildWorkloads, cptrst, expectPass, expectRunningUntraced, killStartedWorkloads, restartPasses, sleep, startWorkload, trigger } from '../support';

const HINTS_USED = /areas from the hints read before the freeze/;
const READ_FROZEN = /areas read while frozen: (.*)/;
const TAKEN_AGAIN = /hints about the memory areas proved stale \((.*)\); the checkpoint is taken again without hints/;


/** Waits (synchronously: a prepare step cannot await) until `done` says yes, at most 5 s. */
function waitSync(done: () => boolean): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 2500 && !done(); i++) Atomics.wait(cell, 0, 0, 2);
  expect(done(), 'the workload did not change in time').to.equal(true);
}

const smapsOf = (pid: number): string => fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');

describe('memory areas read before the freeze', function () {
  this.timeout(240000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('a process changing its areas without pause: each checkpoint restarts it with its areas as they were at the freeze', async () => {
    const seen = { hints: 0, frozen: 0, again: 0 };
    for (let i = 0; i < 8; i++) {
      const w = await startWorkload('mapchurn');
      const img = path.join(w.dir, 'img');
      await sleep(100 + 60 * i);
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img], { env: { CPTRST_DEBUG: '1' } });
      expect(r.code, r.stderr).to.equal(0);
      // Every checkpoint here may use hints (a snapshot, an image file): each says which way it went.
      const used = HINTS_USED.test(r.stderr);
      expect(used || READ_FROZEN.test(r.stderr), r.stderr).to.equal(true);
      if (TAKEN_AGAIN.test(r.stderr)) seen.again++;
      else if (used) seen.hints++;
      else seen.frozen++;
      await restartPasses(w, img);
    }
    expect(seen.hints + seen.frozen + seen.again).to.equal(8);
  });

  it('a process with an area registered with its own userfaultfd: smaps read while frozen, and the area refused', async () => {
    const w = await startWorkload('mmstate', ['refused']);
    const img = path.join(w.dir, 'img');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img], { env: { CPTRST_DEBUG: '1' } });
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/areas read while frozen: .*userfaultfd/);
    expect(r.stderr).to.match(new RegExp(`cptrst: EOPNOTSUPP: pid ${w.pid}, vma [0-9a-f]+-[0-9a-f]+: the area is registered with a userfaultfd for missing pages \\(VmFlags um\\); the process holds a userfaultfd of its own`));
    expect(fs.existsSync(img)).to.equal(false);
    await expectRunningUntraced(w.pid);
    await trigger(w);
    await expectPass(w);
  });

  describe('a change between the pre-read and the freeze', () => {
    const hook = afterPreRead('test.between');

    async function checkpointWith(w: Workload, img: string, what?: (pid: number) => void): Promise<string[]> {
      const lines: string[] = [];
      const log: Logger = { debug: (m) => lines.push(m), info: (m) => lines.push(m), warn: (m) => lines.push(m) };
      hook.next(what);
      const fd = fs.openSync(img, 'w');
      try {
        await sys_checkpoint(w.pid, fd, 0, { log });
      } finally {
        fs.closeSync(fd);
        hook.next(undefined);
      }
      return lines;
    }

    it('none: the hints are used, and verified', async () => {
      const w = await startWorkload('mapchurn', ['signals']);
      const img = path.join(w.dir, 'img');
      const log = (await checkpointWith(w, img)).join('\n');
      expect(log).to.match(HINTS_USED);
      expect(log).to.not.match(READ_FROZEN);
      expect(log).to.not.match(TAKEN_AGAIN);
      await restartPasses(w, img);
    });

    it('an area mapped: the maps differ while frozen, smaps is read then', async () => {
      const w = await startWorkload('mapchurn', ['signals']);
      const img = path.join(w.dir, 'img');
      const before = fs.readFileSync(`/proc/${w.pid}/maps`, 'utf8');
      const log = (await checkpointWith(w, img, (pid) => {
        process.kill(pid, 'SIGUSR1');
        waitSync(() => fs.readFileSync(`/proc/${pid}/maps`, 'utf8') !== before);
      })).join('\n');
      expect(log).to.match(READ_FROZEN);
      expect(log).to.not.match(HINTS_USED);
      await restartPasses(w, img); // B is mapped, with its data
    });

    it('a VmFlag set on a whole area (maps unchanged): found against the snapshot, the checkpoint is taken again', async () => {
      const w = await startWorkload('mapchurn', ['signals']);
      const img = path.join(w.dir, 'img');
      const dd = (pid: number) => (smapsOf(pid).match(/^VmFlags:.* dd\b/gm) ?? []).length;
      const log = (await checkpointWith(w, img, (pid) => {
        const n = dd(pid);
        const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
        process.kill(pid, 'SIGUSR2');
        waitSync(() => dd(pid) > n);
        expect(fs.readFileSync(`/proc/${pid}/maps`, 'utf8'), 'the maps changed').to.equal(maps);
      })).join('\n');
      expect(log).to.match(HINTS_USED);
      const m = TAKEN_AGAIN.exec(log);
      expect(m, log).to.not.equal(null);
      expect(m![1]).to.match(/VmFlags/);
      await restartPasses(w, img); // A has "dd"
    });
  });
});
