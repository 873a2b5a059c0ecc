/**
 * POSIX timers (timer_create) through checkpoint and restart: ids, clocks, notifications, times
 * and the signals they had queued; an image that asks for a timer the process could not have had
 * is refused.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  buildWorkloads, checkpointKill, cptrst, expectPass, killStartedWorkloads, procState, recodeImage, sleep, startWorkload, trigger,
  waitGone,
} from '../support';

type Shown = { objects: Array<{ name: string; fields: Record<string, unknown> }> };

const timerIds = (pid: number): number[] =>
  fs.readFileSync(`/proc/${pid}/timers`, 'utf8').split('\n').filter((l) => l.startsWith('ID:')).map((l) => Number(l.slice(3))).sort((a, b) => a - b);

describe('POSIX timers', function () {
  this.timeout(120000);
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  it('a timer aimed at another thread (SIGEV_THREAD_ID) and one on that thread\'s CPU clock come back aimed at it', async () => {
    const w = await startWorkload('threadtimer');
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('come back with their ids, clocks, notifications and times; a signal queued at checkpoint is delivered once', async () => {
    const w = await startWorkload('ptimers');
    await sleep(200);
    const ids = timerIds(w.pid);
    const img = path.join(w.dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    const doc = JSON.parse((await cptrst(['show', '--json', img])).stdout) as Shown;
    const timers = doc.objects.filter((o) => o.name === 'posix-timer');
    expect(timers.map((t) => t.fields.id as number).sort((a, b) => a - b)).to.deep.equal(ids);
    // The two expired timers' signals are recorded with the timers, not as plain pending signals.
    expect(timers.filter((t) => t.fields.signalQueued === true)).to.have.length(2);
    expect(doc.objects.filter((o) => o.name === 'sigpending')).to.deep.equal([]);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    expect(timerIds(w.pid)).to.deep.equal(ids);
    await trigger(w);
    await expectPass(w);
  });

  for (const c of [
    { what: "another process's CPU clock", edit: (t: Record<string, unknown>) => { if (t.clock === 1) t.clock = -((1 << 3) + 6); }, why: /counts the CPU time of process 1, another process/ },
    { what: 'a thread that is not the process', edit: (t: Record<string, unknown>) => { if (t.notify === 4) t.tid = 1; }, why: /signals thread 1/ },
    { what: 'a signal number out of range', edit: (t: Record<string, unknown>) => { if (t.signo === 10) t.signo = 65; }, why: /signal 65/ },
    { what: 'a time out of range', edit: (t: Record<string, unknown>) => { if (t.signo === 10) t.valueNsec = 1_000_000_000n; }, why: /a time out of range/ },
  ]) {
    it(`refuses an image whose timer names ${c.what} (EBADIMG), leaving no process`, async () => {
      const w = await startWorkload('ptimers');
      const img = path.join(w.dir, 'image.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      const bad = path.join(w.dir, 'bad.cpt');
      recodeImage(img, bad, {
        records: (recs) => {
          for (const r of recs) if (r.name === 'posix-timer') c.edit(r.obj);
          return recs;
        },
      });
      const rs = await cptrst(['restart', bad]);
      expect(rs.code).to.equal(1);
      expect(rs.stderr).to.match(new RegExp(`^cptrst: EBADIMG: pid ${w.pid}, posix timer \\d+: `)).and.match(c.why);
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind after a bad image`).to.equal(true);
    });
  }

  it('a checkpoint that fails once everything was read (ENOSPC on /dev/full) leaves the process running: its timers (times, queued signals) are as they were', async () => {
    const w = await startWorkload('ptimers');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/full']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/ENOSPC/);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });
});
