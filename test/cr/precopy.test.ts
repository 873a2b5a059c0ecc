/**
 * `checkpoint --pre-copy` (mm/src/precopy.ts): the private memory copied while the process runs,
 * then, frozen, only what it changed since. `precopychurn` writes, drops (MADV_DONTNEED), reads
 * back, unmaps, maps again and moves its memory between the rounds, checking every page against a
 * table: restarted from the image it passes its checks only if every page is of the instant of
 * the freeze. `cowwrite` writes without pause (every page changes between two rounds: forced onto
 * the pre-copy path, the frozen window copies them all) and is checked for what it must not
 * notice: its maps, VmFlags (no "uw" left) and fds as before. The image is the snapshot path's,
 * byte for byte. What a pre-copy must leave alone (a tree, a tracker of --track) falls back to the
 * snapshot and says so; flags it does not go with are refused. cptrst SIGKILLed at any moment of
 * a --pre-copy leaves the process running as before.
 */
import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointFlags, CptError, PREAMBLE_SIZE, loadModule, sys_checkpoint } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, cptrst, killStartedWorkloads, parseResult, passLines, pinToOneCpu, restartPasses, sleep, startWorkload, trigger, waitResult,
} from '../support';

interface PreCopyDoc {
  frozenMs: number;
  timings: Record<string, number>;
  preCopy?: { path: string; why?: string; stoppedMs: number; rounds: number; copiedRunning: number; copiedFrozen: number };
}

async function passes(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w, 60000)).verdict);
}

async function checkpointJson(pid: number, img: string, extra: string[], env: Record<string, string> = {}): Promise<PreCopyDoc> {
  const r = await cptrst(['checkpoint', String(pid), '-o', img, '--json', '--pre-copy', ...extra], { env });
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout) as PreCopyDoc;
}


/** What the process must not notice of a pre-copy: its maps, each area's VmFlags, its fds (and where they lead). */
function footprint(pid: number): { maps: string; vmFlags: string[]; fds: string[] } {
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  const vmFlags = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n').filter((l) => l.startsWith('VmFlags:'));
  const fds = fs.readdirSync(`/proc/${pid}/fd`).map((fd) => `${fd} ${fs.readlinkSync(`/proc/${pid}/fd/${fd}`)}`);
  return { maps, vmFlags, fds };
}

function registeredAreas(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n').filter((l) => /^VmFlags:.*\b(uw|um|ui)\b/.test(l));
}

function statusOf(pid: number): { state: string; tracer: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return { state: /^State:\s+(\S)/m.exec(s)![1], tracer: Number(/^TracerPid:\s+(\d+)/m.exec(s)![1]) };
}

describe('checkpoint --pre-copy', function () {
  this.timeout(240000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('memory written, dropped, read back, unmapped, mapped again and moved between the rounds: restarted at the instant of the freeze', async () => {
    const w = await startWorkload('precopychurn', ['64']);
    const img = path.join(w.dir, 'img');
    await sleep(300);
    let doc: PreCopyDoc | undefined;
    for (let i = 0; i < 3; i++) {
      doc = await checkpointJson(w.pid, img, []);
      expect(doc.preCopy, 'the pre-copy report').to.not.equal(undefined);
      expect(doc.preCopy!.path, doc.preCopy!.why).to.equal('pre-copy');
      expect(doc.timings, 'no snapshot').to.not.have.property('snapshot');
      // Its 64 MiB but what it dropped (some 2 MiB blocks read as zeros, absent).
      expect(doc.preCopy!.copiedRunning, 'bytes copied while it ran').to.be.greaterThan(16 << 20);
      expect(doc.preCopy!.stoppedMs, 'the stop before the freeze is reported').to.be.greaterThan(0);
      expect(registeredAreas(w.pid), 'areas left registered').to.deep.equal([]);
      await sleep(100);
    }
    await restartPasses(w, img);
  });

  it('a process writing every page without pause: pages copied while frozen, nothing noticed, restarted at the instant of the freeze', async () => {
    const w = await startWorkload('cowwrite', ['64']);
    const img = path.join(w.dir, 'img');
    await sleep(200);
    const before = footprint(w.pid);
    // Every page changes between two rounds: over the default limit, so forced onto the pre-copy path.
    const doc = await checkpointJson(w.pid, img, [], { CPTRST_PRECOPY_FROZEN_MIB: '4096' });
    expect(doc.preCopy!.path, doc.preCopy!.why).to.equal('pre-copy');
    expect(doc.preCopy!.copiedFrozen, 'bytes copied while frozen').to.be.greaterThan(0);
    expect(doc.timings, 'no snapshot').to.not.have.property('snapshot');
    const after = footprint(w.pid);
    expect(after.maps, 'maps').to.equal(before.maps);
    expect(after.vmFlags, 'VmFlags').to.deep.equal(before.vmFlags);
    expect(after.fds, 'fds').to.deep.equal(before.fds);
    expect(statusOf(w.pid).tracer, 'traced').to.equal(0);
    await restartPasses(w, img);
  });

  it('the same with the default limit: the pages changed while it ran are too many, the snapshot is taken and the result says why', async () => {
    const w = await startWorkload('cowwrite', ['128']);
    const img = path.join(w.dir, 'img');
    await sleep(200);
    const doc = await checkpointJson(w.pid, img, [], { CPTRST_PRECOPY_FROZEN_MIB: '1' });
    expect(doc.preCopy!.path).to.equal('snapshot');
    expect(doc.preCopy!.why).to.match(/changed since the last round .* over the 1 MiB/);
    expect(doc.timings, 'a snapshot').to.have.property('snapshot');
    expect(registeredAreas(w.pid), 'areas left registered').to.deep.equal([]);
    await restartPasses(w, img);
  });

  it('the image is the snapshot path\'s, byte for byte after the head (a stopped process)', async () => {
    const w = await startWorkload('precopychurn', ['16']);
    await sleep(200);
    pinToOneCpu(w.pid);
    process.kill(w.pid, 'SIGSTOP');
    for (let i = 0; i < 100 && statusOf(w.pid).state !== 'T'; i++) await sleep(20);
    // The first checkpoint of a stopped process changes its registers (stopped in its loop, then in the kernel).
    const warm = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/null']);
    expect(warm.code, warm.stderr).to.equal(0);
    const plain = path.join(w.dir, 'plain');
    const pre = path.join(w.dir, 'pre');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', plain]);
    expect(r.code, r.stderr).to.equal(0);
    const doc = await checkpointJson(w.pid, pre, []);
    expect(doc.preCopy!.path, doc.preCopy!.why).to.equal('pre-copy');
    expect(statusOf(w.pid).state, 'left stopped').to.equal('T');
    const a = fs.readFileSync(plain);
    const b = fs.readFileSync(pre);
    const afterHead = (x: Buffer) => PREAMBLE_SIZE + Number(x.readBigUInt64LE(PREAMBLE_SIZE));
    expect(afterHead(a)).to.equal(afterHead(b));
    expect(a.length, 'image bytes').to.equal(b.length);
    expect(a.subarray(afterHead(a)).equals(b.subarray(afterHead(b))), 'the bytes after the head').to.equal(true);
    process.kill(w.pid, 'SIGCONT');
    await passes(w);
  });

  it('a tree falls back to the snapshots, and says so', async () => {
    const w = await startWorkload('cowwritetree', ['8']);
    await sleep(300);
    const doc = await checkpointJson(w.pid, path.join(w.dir, 'img'), []);
    expect(doc.preCopy!.path).to.equal('snapshot');
    expect(doc.preCopy!.why).to.match(new RegExp(`process ${w.pid} has \\d+ descendant`));
    expect(doc.preCopy!.stoppedMs, 'not stopped before the freeze').to.equal(0);
    await passes(w);
  });

  it('a process tracked by --track is left to its tracker (the snapshot is taken), whose tracking still holds', async () => {
    const w = await startWorkload('precopychurn', ['16']);
    const base = path.join(w.dir, 'base');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', base, '--track']);
    expect(r.code, r.stderr).to.equal(0);
    const doc = await checkpointJson(w.pid, path.join(w.dir, 'img'), []);
    expect(doc.preCopy!.path).to.equal('snapshot');
    expect(doc.preCopy!.why).to.match(/write tracker of cptrst/);
    const inc = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'inc'), '--parent', base, '--json']);
    expect(inc.code, inc.stderr).to.equal(0);
    const incDoc = JSON.parse(inc.stdout) as { incremental: Array<{ method: string; why?: string }> };
    expect(incDoc.incremental[0].method, incDoc.incremental[0].why).to.equal('uffd-wp');
    await passes(w);
  });

  for (const other of ['--kill', '--leave-stopped', '--no-snapshot', '--track']) {
    it(`--pre-copy with ${other} is refused before anything is done`, async () => {
      const w = await startWorkload('precopychurn', ['4']);
      const img = path.join(w.dir, 'img');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--pre-copy', other]);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(/--pre-copy/);
      expect(fs.existsSync(img), 'an image').to.equal(false);
      expect(statusOf(w.pid).tracer).to.equal(0);
      await passes(w);
    });
  }

  it('the API refuses preCopy with KILL, LEAVE_STOPPED, NO_SNAPSHOT and an incremental checkpoint (EINVAL, nothing written or stopped)', async () => {
    loadModule('@cptrst/cpt-module');
    const w = await startWorkload('precopychurn', ['4']);
    const img = path.join(w.dir, 'api.img');
    const fd = fs.openSync(img, 'w');
    try {
      const cases: Array<[number, object]> = [
        [CheckpointFlags.KILL, {}], [CheckpointFlags.LEAVE_STOPPED, {}], [CheckpointFlags.NO_SNAPSHOT, {}], [0, { incremental: { track: true } }],
      ];
      for (const [flags, more] of cases) {
        const e = await sys_checkpoint(w.pid, fd, flags, { preCopy: true, ...more }).then(() => undefined, (x: unknown) => x);
        expect(e, `flags ${flags} ${JSON.stringify(more)}`).to.be.instanceOf(CptError);
        expect((e as CptError).code).to.equal('EINVAL');
        expect((e as CptError).message).to.match(/--pre-copy/);
      }
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.statSync(img).size, 'bytes written').to.equal(0);
    expect(statusOf(w.pid).tracer).to.equal(0);
    await passes(w);
  });

  it('cptrst SIGKILLed at any moment of a --pre-copy leaves the process running as before', async () => {
    const w = await startWorkload('precopychurn', ['64']);
    await sleep(300);
    const before = footprint(w.pid);
    const img = path.join(w.dir, 'img');
    // Over the whole checkpoint (some hundreds of ms), at moments spread from its start.
    for (const delay of [0, 20, 60, 90, 120, 150, 180, 220, 260, 300, 350, 400, 500, 650, 800]) {
      const cli: ChildProcess = spawn(process.execPath, [CLI_MAIN, 'checkpoint', String(w.pid), '-o', img, '--pre-copy'], { stdio: ['ignore', 'ignore', 'ignore', 'ignore'] });
      const closed = new Promise<number | null>((resolve) => cli.once('close', (code) => resolve(code)));
      await sleep(delay);
      cli.kill('SIGKILL');
      // Done before the kill: its image is whole (and no concern here).
      if ((await closed) === 0) fs.rmSync(img);
      let st = statusOf(w.pid);
      for (let i = 0; i < 300 && st.tracer !== 0; i++) {
        await sleep(10);
        st = statusOf(w.pid);
      }
      const what = `killed ${delay} ms in`;
      expect(st.tracer, `${what}: traced`).to.equal(0);
      // Let go by a dead cptrst, it returns to its frozen state through rt_sigreturn: a moment.
      let now = footprint(w.pid);
      for (let i = 0; i < 200 && (registeredAreas(w.pid).length || now.fds.join() !== before.fds.join()); i++) {
        await sleep(10);
        now = footprint(w.pid);
      }
      expect(statusOf(w.pid).state, `${what}: state`).to.match(/^[RS]$/);
      expect(registeredAreas(w.pid), `${what}: areas left registered`).to.deep.equal([]);
      expect(now.fds, `${what}: fds`).to.deep.equal(before.fds);
      expect(fs.readdirSync(w.dir).filter((f) => f.startsWith('img')), `${what}: files left`).to.deep.equal([]);
    }
    // It ran on throughout, checking every page it touched: and passes its checks at the end.
    await passes(w);
  });
});
