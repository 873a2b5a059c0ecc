/**
 * The copy-on-write snapshot of a checkpoint that lets the process run: the process runs on while
 * its pages are written, and the image still holds the one instant of the freeze. `cowwrite`
 * writes its memory without pause and checks, at every step, what the step one round earlier
 * wrote: the original passes its checks after the checkpoint (nothing of the snapshot reached
 * it), and the process restarted from the image passes them too (every page is of the instant
 * of its registers). The snapshot process is gone when the checkpoint returns, the target has
 * no child, and nothing (not even a zombie) is left in its process group or session. The same with --no-snapshot, and for a process whose copy would be adopted by it (a
 * child subreaper), which is then copied while frozen.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import {
  Workload, buildWorkloads, cptrst, killStartedWorkloads, parseResult, passLines, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const c = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
    if (c) out.push(...c.split(/\s+/).map(Number));
  }
  return out;
}

/** Processes other than `except` running the executable `exe` (zombies have no exe link: they are reaped by init soon after). */
function othersRunning(exe: string, except: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === except) continue;
    try {
      if (fs.readlinkSync(`/proc/${d}/exe`) === exe) out.push(Number(d));
    } catch {
      /* gone, a zombie, or a kernel thread */
    }
  }
  return out;
}

/** Processes, zombies included, other than `pid` in its process group or session (fields 5 and 6 of /proc/PID/stat). */
function sharingGroupOf(pid: number): number[] {
  const ids = (p: string): [number, number] | null => {
    try {
      const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      return [Number(f[2]), Number(f[3])];
    } catch {
      return null;
    }
  };
  const [pgrp, sid] = ids(String(pid))!;
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d) && Number(d) !== pid).filter((d) => {
    const x = ids(d);
    return x !== null && (x[0] === pgrp || x[1] === sid);
  }).map(Number);
}

async function passes(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w, 60000)).verdict);
}

describe('checkpoint with a copy-on-write snapshot', function () {
  this.timeout(180000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  for (const variant of ['snapshot', '--no-snapshot'] as const) {
    it(`${variant}: a process writing without pause runs on unharmed, and restarts at the instant of the freeze`, async () => {
      const w = await startWorkload('cowwrite', ['128']);
      const exe = fs.readlinkSync(`/proc/${w.pid}/exe`);
      const img = path.join(w.dir, 'img');
      await sleep(200);
      const extra = variant === 'snapshot' ? [] : [variant];
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json', ...extra]);
      expect(r.code, r.stderr).to.equal(0);
      const doc = JSON.parse(r.stdout) as { frozenMs: number; timings: Record<string, number> };
      // The snapshot was taken (or, with --no-snapshot, not) and its process is gone.
      if (variant === 'snapshot') expect(doc.timings, 'a snapshot was taken').to.have.property('snapshot');
      else expect(doc.timings).to.not.have.property('snapshot');
      expect(childrenOf(w.pid), 'children of the target').to.deep.equal([]);
      expect(othersRunning(exe, w.pid), 'snapshot processes left').to.deep.equal([]);
      // Nor a zombie in its process group or session, which would keep its PID in use for a while.
      expect(sharingGroupOf(w.pid), 'processes in its group or session').to.deep.equal([]);
      // The original carries on: let it write a while longer, then kill it and restart the image.
      await sleep(300);
      process.kill(w.pid, 'SIGKILL');
      await w.exited;
      expect(await waitGone(w.pid, 5000)).to.equal(true);
      const rr = await cptrst(['restart', img]);
      expect(rr.code, rr.stderr).to.equal(0);
      await sleep(300); // it runs on from the instant of the freeze, checking every step
      await passes(w);
    });
  }

  it('the original passes its own checks after a snapshot checkpoint', async () => {
    const w = await startWorkload('cowwrite', ['64']);
    const img = path.join(w.dir, 'img');
    for (let i = 0; i < 3; i++) {
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img]);
      expect(r.code, r.stderr).to.equal(0);
      await sleep(100);
    }
    await passes(w);
  });

  it('a child subreaper is copied while frozen (its snapshot process would be its child)', async () => {
    const w = await startWorkload('settings'); // a child subreaper among its settings
    const img = path.join(w.dir, 'img');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json'], { env: { CPTRST_DEBUG: '1' } });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.match(/no copy-on-write snapshot: the process is a child subreaper/);
    expect(childrenOf(w.pid)).to.deep.equal([]);
    await passes(w);
  });
});
