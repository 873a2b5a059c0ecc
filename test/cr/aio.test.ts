/**
 * aio contexts (io_setup) through checkpoint, kill and restart: the aio workload finds its rings
 * (size, head and tail, a ring moved by mremap, completed events not read) and new requests
 * complete. A checkpoint that fails once everything is read leaves the process as it was; a
 * crafted ring record is refused at restart; a ring whose protection was changed is refused at
 * checkpoint, naming it.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointFlags, CptError, loadModule, sys_checkpoint } from '@cptrst/core';
import {
  Workload, buildWorkloads, cptrst, killStartedWorkloads, makeTempDir, parseResult, passLines, procState, recodeImage, removeTempDir, sleep,
  startWorkload, trigger, waitGone, waitResult,
} from '../support';

async function checkpointRestart(w: Workload): Promise<void> {
  const img = path.join(w.dir, 'aio.cpt');
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
  expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
  await w.exited;
  const rs = await cptrst(['restart', img]);
  expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
  expect(rs.stdout.trim()).to.equal(String(w.pid));
}

describe('aio contexts', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  it('the workload finds its rings, unread events and contexts again', async () => {
    const dir = makeTempDir('aio');
    const w = await startWorkload('aio', [dir], { dir });
    await checkpointRestart(w);
    await trigger(w);
    const text = await waitResult(w, 30000);
    expect(passLines('aio', [dir]), text).to.include(parseResult(text).verdict);
  });

  it('CPT_TAMPER=1 (the ring\'s head moved) still fails after the restart', async () => {
    const dir = makeTempDir('aio');
    const w = await startWorkload('aio', [dir], { dir, env: { CPT_TAMPER: '1' } });
    await checkpointRestart(w);
    await trigger(w);
    const text = await waitResult(w, 30000);
    expect(parseResult(text).verdict, text).to.match(/^FAIL aio: .*ring B: nr \d+ head/);
  });

  it('a checkpoint that fails once everything is read leaves the process as it was', async () => {
    const dir = makeTempDir('aio');
    const w = await startWorkload('aio', [dir], { dir });
    const img = path.join(dir, 'failed.cpt');
    const fd = fs.openSync(img, 'w');
    const abort = new AbortController();
    let err: unknown;
    try {
      await sys_checkpoint(w.pid, fd, CheckpointFlags.KILL, {
        signal: abort.signal,
        onProgress: (e) => {
          if (e.phase === 'dumped') abort.abort();
        },
      });
    } catch (e) {
      err = e;
    } finally {
      fs.closeSync(fd);
    }
    expect(err).to.be.instanceOf(CptError);
    expect((err as CptError).code).to.equal('EINTR');
    const st = await procState(w.pid);
    expect(st?.tracerPid).to.equal(0);
    await trigger(w);
    const text = await waitResult(w, 30000);
    expect(passLines('aio', [dir]), text).to.include(parseResult(text).verdict);
  });

  const CRAFTED: { what: string; edit: (o: Record<string, unknown>) => void; why: RegExp }[] = [
    { what: 'a head beyond the ring', edit: (o) => { o.head = o.nr; }, why: /EBADIMG: .*aio ring head \d+, tail \d+ and \d+ bytes of events do not agree/ },
    { what: 'a ring size that does not fit its area', edit: (o) => { o.nr = Number(o.nr) * 2 + 1; }, why: /EBADIMG: .*an aio ring of \d+ events in \d+ bytes/ },
  ];
  for (const c of CRAFTED) {
    it(`a crafted ring record (${c.what}) is refused at restart, and nothing is left half-made`, async () => {
      const dir = makeTempDir('aio');
      const w = await startWorkload('aio', [dir], { dir });
      const img = path.join(dir, 'good.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      const bad = path.join(dir, 'crafted.cpt');
      let edited = 0;
      recodeImage(img, bad, {
        records: (recs) => {
          for (const { name, obj } of recs) if (name === 'vma-aio-ring' && Number(obj.tail) !== Number(obj.head) && edited++ === 0) c.edit(obj);
          return recs;
        },
      });
      expect(edited).to.equal(1);
      const r = await cptrst(['restart', bad]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(c.why);
      expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await trigger(w);
      const text = await waitResult(w, 30000);
      expect(passLines('aio', [dir]), text).to.include(parseResult(text).verdict);
    });
  }

  it('a ring made read-only (mprotect) is refused at checkpoint, naming it; the process runs on untraced', async () => {
    const dir = makeTempDir('aio');
    const p = spawn('python3', ['-c', [
      'import ctypes, os, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'ctx = ctypes.c_ulong(0)',
      'r = libc.syscall(206, 8, ctypes.byref(ctx))',
      'm = libc.mprotect(ctypes.c_void_p(ctx.value), 4096, 1)',
      'print("READY %d %d %x" % (r, m, ctx.value), flush=True)',
      'os.closerange(0, 4096)',
      'time.sleep(60)',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const line = await new Promise<string>((resolve) => p.stdout.once('data', (d: Buffer) => resolve(d.toString())));
      const m = /^READY 0 0 ([0-9a-f]+)/.exec(line);
      expect(m, line).to.not.equal(null);
      await sleep(100);
      const img = path.join(dir, 'image.cpt');
      const r = await cptrst(['checkpoint', String(p.pid), '-o', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${p.pid}, vma ${m![1]}-[0-9a-f]+ /\\[aio\\]: an aio ring whose protection was changed \\(mprotect\\) is not supported`));
      expect(fs.existsSync(img)).to.equal(false);
      const st = await procState(p.pid!);
      expect(st?.tracerPid).to.equal(0);
      expect(st?.state).to.match(/^[RS]$/);
    } finally {
      p.kill('SIGKILL');
      await waitGone(p.pid!, 5000, { zombieOk: true });
      removeTempDir(dir);
    }
  });
});
