/**
 * Guard regions (madvise MADV_GUARD_INSTALL) across C/R: the guards workload checks after the
 * restart that every guard page faults, every other page holds its pattern, each area's VmFlags
 * are as before and a forked child has the same guards (none where MADV_WIPEONFORK clears them).
 * Restarted from a frozen dump (--kill), from the copy-on-write snapshot of a process left
 * running, from a pre-copy, and lazily. Crafted images (a guard run outside its area, guards on an area without
 * the flag) are refused and leave no process.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  Workload, buildWorkloads, cptrst, killStartedWorkloads, parseResult, passLines, recodeImage, startWorkload, trigger, waitGone, waitResult,
} from '../support';

interface ShownObject { name: string; fields: Record<string, unknown> }

async function expectPasses(w: Workload): Promise<string> {
  await trigger(w);
  const verdict = parseResult(await waitResult(w)).verdict ?? '';
  expect(passLines(w.name, w.args)).to.include(verdict);
  return verdict;
}

describe('guard regions (mm guard.ts)', function () {
  this.timeout(120000);
  before(async () => {
    await buildWorkloads();
    loadModule('@cptrst/cpt-module');
  });
  afterEach(() => killStartedWorkloads());

  async function checkpointKill(w: Workload, img: string): Promise<void> {
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 5000)).to.equal(true);
  }

  it('a frozen dump (--kill): the image lists each area\'s guard runs, and the restored process finds its guards, pages and VmFlags', async () => {
    const w = await startWorkload('guards');
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const shown = await cptrst(['show', img, '--json']);
    expect(shown.code, shown.stderr).to.equal(0);
    const guards = (JSON.parse(shown.stdout) as { objects: ShownObject[] }).objects.filter((o) => o.name === 'vma-guards');
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    const verdict = await expectPasses(w);
    // Where the kernel has guard regions: anon, wipe, private, shared, removed (the flag alone) and big.
    if (!verdict.includes('no guard regions')) expect(guards.length, 'VMA_GUARDS objects').to.equal(6);
  });

  // Left running: pages from the copy-on-write snapshot, or from a pre-copy (guard pages are not
  // present, so a pre-copy copies none of them, running or frozen).
  for (const [variant, extra, path_] of [['the copy-on-write snapshot', [], 'snapshot'], ['--pre-copy', ['--pre-copy'], 'pre-copy']] as const) {
    it(`left running, from ${variant} (64 MiB area)`, async () => {
      const w = await startWorkload('guards', ['64']);
      const img = path.join(w.dir, 'img');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json', ...extra]);
      expect(ck.code, ck.stderr).to.equal(0);
      const doc = JSON.parse(ck.stdout) as { timings: Record<string, number>; preCopy?: { path: string } };
      if (path_ === 'snapshot') expect(doc.timings, 'a snapshot was taken').to.have.property('snapshot');
      else expect(doc.preCopy?.path, 'the pre-copy was used').to.equal('pre-copy');
      process.kill(w.pid, 'SIGKILL');
      await w.exited;
      expect(await waitGone(w.pid, 5000)).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      await expectPasses(w);
    });
  }

  it('a lazy restart: guards installed before the process runs, pages filled around them', async () => {
    const w = await startWorkload('guards', ['16']);
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', '--lazy', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await expectPasses(w);
  });

  describe('crafted images are refused, and no process is left', () => {
    async function refusedAfter(edit: (runs: bigint[], vmFlags: string[]) => { runs?: bigint[]; vmFlags?: string[] }, what: RegExp): Promise<void> {
      const w = await startWorkload('guards');
      const img = path.join(w.dir, 'img');
      await checkpointKill(w, img);
      const bad = path.join(w.dir, 'bad');
      let edited = 0;
      recodeImage(img, bad, {
        records: (recs) => {
          for (let i = 0; i < recs.length; i++) {
            if (recs[i].name !== 'vma-guards' || (recs[i].obj.runs as bigint[]).length === 0) continue;
            const vma = recs.find((r) => r.tag === recs[i].ptag)!;
            const change = edit(recs[i].obj.runs as bigint[], vma.obj.vmFlags as string[]);
            if (change.runs) recs[i].obj.runs = change.runs;
            if (change.vmFlags) vma.obj.vmFlags = change.vmFlags;
            edited++;
            break;
          }
          return recs;
        },
      });
      if (!edited) return; // a kernel without guard regions: nothing to edit
      const r = await cptrst(['restart', bad]);
      expect(r.code, `signal ${r.signal}; ${r.stderr}`).to.equal(1);
      expect(r.stderr).to.match(/^cptrst: EBADIMG: /).and.match(what);
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectPasses(w);
    }

    it('a guard run past the end of its area', async () => {
      await refusedAfter((runs) => ({ runs: [...runs.slice(0, -2), runs[runs.length - 2], 1n << 40n] }), /out of order or outside/);
    });

    it('runs out of order', async () => {
      await refusedAfter((runs) => ({ runs: [runs[0] + 1n, 1n, runs[0], 1n] }), /out of order or outside/);
    });

    it('guards on an area whose VmFlags say it has none', async () => {
      await refusedAfter((_runs, flags) => ({ vmFlags: flags.filter((f) => f !== 'gu') }), /has no VmFlags gu/);
    });
  });
});
