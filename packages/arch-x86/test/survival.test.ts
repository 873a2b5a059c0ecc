/**
 * A task whose tracer dies at any moment goes on exactly as before: a separate node process
 * seizes the `survive` workload (test/workloads/survive.c) and runs injected calls in it in a
 * loop, and is SIGKILLed at random moments. The kernel then detaches the target and resumes it
 * where it stands; every injected call returns into rt_sigreturn on a frame of the frozen state,
 * so the target must carry on with its registers, vector registers, signal mask, alternate
 * stack and memory intact, which it checks itself, at every call and at the end. Most kills come
 * in the middle of a batch of calls (Tracee.syscalls), which the task then runs to its end.
 */
import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { alsoKill, compileIn, killStarted, poll, tmpDir } from './support';

const WORKLOADS = path.resolve(__dirname, '../../../../test/workloads');
const TRACER = path.resolve(__dirname, 'fixtures/tracer-loop.js');

function status(pid: number): { state: string; tracer: number; sigBlk: string } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const f = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)?.[1] ?? '';
  return { state: f('State').charAt(0), tracer: Number(f('TracerPid')), sigBlk: f('SigBlk') };
}

function exited(c: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) resolve();
    else c.once('exit', () => resolve());
  });
}

describe('a task whose tracer is SIGKILLed in the middle of injected calls', function () {
  this.timeout(120000);
  afterEach(() => killStarted());

  it('survives, untraced, with its registers, FPU state, mask, alternate stack and memory', async () => {
    const bin = compileIn(WORKLOADS, 'survive', ['-g', '-Wextra', '-std=gnu11']);
    const dir = fs.mkdtempSync(path.join(tmpDir(), 'survive-'));
    const out = path.join(dir, 'out');
    const fd = fs.openSync(out, 'w');
    const target = spawn(bin, [path.join(dir, 'trigger'), '64'], { stdio: ['ignore', fd, fd], detached: true });
    fs.closeSync(fd);
    target.unref();
    const pid = target.pid!;
    alsoKill(pid);
    expect(await poll(() => /^READY \d+\n/.test(fs.readFileSync(out, 'utf8')), 10000), 'READY').to.equal(true);
    const before = status(pid);
    const maps = (): string[] => fs.readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
    const maps0 = maps();

    let cycling = 0;
    let inBatch = 0;
    for (let i = 0; i < 16; i++) {
      const tracer = spawn(process.execPath, [TRACER, String(pid)], { stdio: ['ignore', 'pipe', 'pipe'] });
      alsoKill(tracer.pid!);
      let text = '';
      tracer.stdout.on('data', (d) => (text += String(d)));
      tracer.stderr.on('data', (d) => (text += String(d)));
      // Half of the kills once cycles run (mid-call), half at any moment from the start.
      if (i % 2 === 0) await poll(() => text.includes('CYCLING') || tracer.exitCode !== null, 20000);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 40)));
      if (text.includes('CYCLING')) cycling++;
      expect(tracer.exitCode, `the tracer failed: ${text}`).to.equal(null);
      tracer.kill('SIGKILL');
      await exited(tracer);
      // The kernel detaches it when the tracer is gone; then it runs on by itself.
      expect(await poll(() => status(pid).tracer === 0, 5000), `pid ${pid} still traced`).to.equal(true);
      // Every signal blocked but the one that ends a batch (survive ignores SIGURG): let go in the middle of one.
      if (status(pid).sigBlk === 'ffffffffffbbfeff') inBatch++;
      // Let go in the middle of a batch, it first runs the rest of it (up to 40 ms of nanosleeps).
      await poll(() => status(pid).sigBlk === before.sigBlk, 3000);
      const now = status(pid);
      expect(now.state, `kill ${i}: pid ${pid} is ${now.state}`).to.match(/^[RS]$/);
      expect(now.sigBlk, `kill ${i}: mask`).to.equal(before.sigBlk);
    }
    expect(cycling).to.be.greaterThan(4);
    expect(inBatch, 'no kill came in the middle of a batch').to.be.greaterThan(0);
    // The scratch area unmaps itself on the way back, unless the kill came during its own mmap:
    // what is left is nothing but such areas, and far fewer than the kills.
    const now = maps();
    expect(maps0.filter((l) => !now.includes(l)), 'mappings lost').to.deep.equal([]);
    const added = now.filter((l) => !maps0.includes(l));
    for (const l of added) expect(l).to.match(/^[0-9a-f]+-[0-9a-f]+ rwxp 00000000 00:00 0\s*$/);
    expect(added.length, `left behind: ${added.join('; ')}`).to.be.lessThan(4);
    process.kill(pid, 'SIGUSR2');
    // It prints its verdict and exits (the verdict is in the file before the process is gone).
    await poll(() => /\n(PASS|FAIL)[^\n]*\n/.test(fs.readFileSync(out, 'utf8')) || !fs.existsSync(`/proc/${pid}`), 20000);
    expect(fs.readFileSync(out, 'utf8')).to.match(/^READY \d+\nPASS survive\n$/);
  });
});
