/**
 * Multi-threaded processes: every thread is seized and stopped, threads made and ended while
 * cptrst seizes included, before the process is refused (restoring threads is not supported
 * yet). The refusal names the threads, writes nothing, and every thread carries on as before.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { buildWorkloads, cptrst, killStartedWorkloads, parseResult, passLines, sleep, startWorkload, trigger, waitResult } from '../support';

/** Threads of pid with a tracer, waiting a little for the kernel to finish detaching. */
async function tracedThreads(pid: number): Promise<string[]> {
  let traced: string[] = [];
  for (let i = 0; i < 100; i++) {
    traced = [];
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        const tracer = /^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1];
        if (tracer !== undefined && tracer !== '0') traced.push(`${tid} (by ${tracer})`);
      } catch {
        /* a short-lived thread ended */
      }
    }
    if (traced.length === 0) break;
    await sleep(10);
  }
  return traced;
}

describe('threads', function () {
  this.timeout(120000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('refuses a process whose threads come and go, after freezing them all; every thread carries on', async () => {
    const w = await startWorkload('threadchurn');
    for (let k = 0; k < 6; k++) {
      const img = path.join(w.dir, `img-${k}`);
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img]);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(/^cptrst: EOPNOTSUPP: pid \d+, threads [\d,]+: the process has \d+ threads; multi-threaded processes are not supported yet\n$/);
      // The threads named are those of the stopped process: at least the four workers, the
      // waiter and the churner, besides the main thread.
      const n = Number(/has (\d+) threads/.exec(r.stderr)![1]);
      expect(n).to.be.at.least(7);
      expect(/threads ([\d,]+):/.exec(r.stderr)![1].split(',')).to.have.length(n - 1);
      expect(fs.readdirSync(w.dir).filter((f) => f.startsWith('img-'))).to.deep.equal([]);
      expect(await tracedThreads(w.pid)).to.deep.equal([]);
    }
    await trigger(w);
    expect(passLines('threadchurn')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('checkpoints a process whose other threads have all ended', async () => {
    const w = await startWorkload('loop.py');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'img')]);
    expect(r.code, r.stderr).to.equal(0);
    expect(await tracedThreads(w.pid)).to.deep.equal([]);
    await trigger(w);
    expect(passLines('loop.py')).to.include(parseResult(await waitResult(w)).verdict);
  });
});
