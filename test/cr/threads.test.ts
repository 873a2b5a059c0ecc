/**
 * Multi-threaded processes: every thread is seized and stopped, threads made and ended while
 * cptrst seizes included, before the process is refused (restoring threads is not supported
 * yet). The refusal names the threads, writes nothing, and every thread carries on as before; a
 * process whose threads all end while it is frozen is checkpointed as the one thread it has left.
 */
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import {
  buildWorkloads, cptrst, killByPid, killStartedWorkloads, makeTempDir, parseResult, passLines, sleep, startWorkload, trigger, waitResult,
} from '../support';

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
      expect(r.stderr).to.match(/^cptrst: EOPNOTSUPP: pid \d+, threads [\d,]+( and \d+ more)?: the process has \d+ threads; multi-threaded processes are not supported yet\n$/);
      // The threads named are those of the stopped process: at least the four workers, the
      // waiter and the churner, besides the main thread.
      const n = Number(/has (\d+) threads/.exec(r.stderr)![1]);
      expect(n).to.be.at.least(7);
      const named = /threads ([\d,]+)( and (\d+) more)?:/.exec(r.stderr)!;
      expect(named[1].split(',').length + Number(named[3] ?? 0)).to.equal(n - 1);
      expect(fs.readdirSync(w.dir).filter((f) => f.startsWith('img-'))).to.deep.equal([]);
      expect(await tracedThreads(w.pid)).to.deep.equal([]);
    }
    await trigger(w);
    expect(passLines('threadchurn')).to.include(parseResult(await waitResult(w)).verdict);
  });

  for (const n of [100, 1000]) {
    it(`refuses a python3 process with ${n} threads once all are frozen; every thread carries on`, async () => {
      const w = await startWorkload('threads.py', [String(n)], { readyTimeoutMs: 60000 });
      const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'img')], { timeoutMs: 60000 });
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, threads [\\d,]+ and ${n - 16} more: the process has ${n + 1} threads; `));
      expect(fs.existsSync(path.join(w.dir, 'img'))).to.equal(false);
      expect(await tracedThreads(w.pid)).to.deep.equal([]);
      await trigger(w);
      expect(passLines('threads.py', [String(n)])).to.include(parseResult(await waitResult(w, 60000)).verdict);
    });
  }

  it('a process whose threads only come and go is either checkpointed between them or refused; never broken', async () => {
    const dir = makeTempDir('churn');
    const out = path.join(dir, 'out');
    const script = [
      'import os, sys, threading, time',
      'os.closerange(3, 65536)',
      'n = [0]',
      'def short(): n[0] += 1',
      'print("READY", os.getpid(), flush=True)',
      'while not os.path.exists(sys.argv[1]):',
      '    t = threading.Thread(target=short); t.start(); t.join()',
      'before = n[0]',
      'for _ in range(10):',
      '    t = threading.Thread(target=short); t.start(); t.join()',
      'print("PASS" if n[0] == before + 10 else "FAIL", flush=True)',
    ].join('\n');
    const fd = fs.openSync(out, 'a');
    const child = spawn('python3', ['-c', script, path.join(dir, 'trigger')], { stdio: ['ignore', fd, fd], detached: true });
    fs.closeSync(fd);
    try {
      for (let i = 0; i < 100 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(20);
      const outcomes = new Set<string>();
      for (let k = 0; k < 8; k++) {
        const img = path.join(dir, `img-${k}`);
        const r = await cptrst(['checkpoint', String(child.pid), '-o', img]);
        if (r.code === 0) {
          outcomes.add('checkpointed');
          expect(fs.statSync(img).size).to.be.greaterThan(0);
        } else {
          outcomes.add('refused');
          expect(r.stderr).to.match(/^cptrst: EOPNOTSUPP: pid \d+, threads [\d,]+: the process has 2 threads; /);
          expect(fs.existsSync(img)).to.equal(false);
        }
        expect(await tracedThreads(child.pid!)).to.deep.equal([]);
      }
      fs.writeFileSync(path.join(dir, 'trigger'), '');
      for (let i = 0; i < 200 && !/PASS|FAIL/.test(fs.readFileSync(out, 'utf8')); i++) await sleep(20);
      expect(fs.readFileSync(out, 'utf8'), [...outcomes].join(', ')).to.match(/^READY \d+\nPASS\n$/);
    } finally {
      await killByPid(child.pid!);
    }
  });
});
