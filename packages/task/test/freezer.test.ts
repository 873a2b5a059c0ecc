/**
 * PtraceFreezer on real processes: freeze and release (run, stop, kill), and the refusals of
 * what this version cannot checkpoint, each naming the process and the object.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import { container, DependencyContainer } from 'tsyringe';
import {
  CheckpointContext, Freezer, FrozenTree, ImageHead, ImageWriter, Logger, MemorySink, ProgressEvent, Tokens, linux,
} from '@cptrst/core';
import { PtraceFreezer, WAS_STOPPED, register } from '../src';
import { registerArch } from './arch';
import { compile, gone, killStarted, poll, pollSync, removeTmpDir, startSleeping, startTarget, thrown } from './support';

const { SYS, SIG } = linux;

interface Logged {
  warn: string[];
  info: string[];
}

function setup(): { c: DependencyContainer; freezer: Freezer; ctx: CheckpointContext; events: ProgressEvent[]; logged: Logged } {
  const c = container.createChildContainer();
  registerArch(c);
  register(c);
  const w = new ImageWriter(new MemorySink());
  w.writeHead(new ImageHead());
  const logged: Logged = { warn: [], info: [] };
  const log: Logger = { debug: () => undefined, info: (m) => logged.info.push(m), warn: (m) => logged.warn.push(m) };
  const ctx = new CheckpointContext(c, w, 0, log);
  const events: ProgressEvent[] = [];
  ctx.events.on('progress', (e: ProgressEvent) => events.push(e));
  return { c, freezer: c.resolve<Freezer>(Tokens.Freezer), ctx, events, logged };
}

/** A pid no process (nor thread) has now. */
function unusedPid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let p = Number(fs.readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8')) + 300; p < max; p++) if (!fs.existsSync(`/proc/${p}`)) return p;
  throw new Error('no free pid');
}

/** Expects pid to be neither traced nor stopped by a refused freeze. */
/** Untraced and sleeping again: a thread just let go may run for a moment before it sleeps on. */
function untouched(pid: number): void {
  expect(linux.readStatus(pid).tracerPid, `pid ${pid} traced`).to.equal(0);
  pollSync(() => linux.readStatus(pid).state === 'S', 2000);
  expect(linux.readStatus(pid).state, `pid ${pid} state`).to.equal('S');
}

describe('PtraceFreezer', function () {
  this.timeout(30000);
  after(() => removeTmpDir());
  afterEach(() => killStarted());

  it('is what register() binds, with the process creator', () => {
    const { c, freezer } = setup();
    expect(freezer).to.be.instanceOf(PtraceFreezer);
    expect(c.isRegistered(Tokens.ProcessCreator, true)).to.equal(true);
  });

  it('freezes a sleeping process into one stopped, traced task, and release("run") lets it sleep on untraced', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const { freezer, ctx, events, logged } = setup();
    // ---- synchronous ----
    const tree = freezer.freeze(ctx, pid);
    expect(tree.root).to.equal(pid);
    expect(tree.tasks).to.have.length(1);
    const t = tree.tasks[0];
    expect([t.pid, t.tid, t.tag]).to.deep.equal([pid, pid, 0]);
    expect(t.state.get(WAS_STOPPED)).to.equal(false);
    expect(t.tracee.pid).to.equal(pid);
    expect(t.tracee.released).to.equal(false);
    const st = linux.readStatus(pid);
    expect(st.state).to.equal('t'); // a ptrace stop
    expect(st.tracerPid).to.equal(process.pid);
    // Frozen for real: it stays stopped, and syscalls can be run inside it.
    expect(pollSync(() => linux.readStatus(pid).state !== 't', 100)).to.equal(false);
    expect(t.tracee.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(events).to.deep.include({ phase: 'frozen', pid });
    expect(ctx.timings.freeze).to.be.a('number');

    freezer.release(ctx, tree, 'run');
    // ---- end ----
    expect(t.tracee.released).to.equal(true);
    expect(ctx.timings.release).to.be.a('number');
    expect(await poll(() => linux.readStatus(pid).state === 'S')).to.equal(true);
    expect(linux.readStatus(pid).tracerPid).to.equal(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(linux.readStat(pid).state).to.equal('S');
    expect(logged.warn).to.deep.equal([]);
  });

  it('a process that was job-control stopped stays stopped (T, untraced) after release("run")', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    linux.kill(pid, SIG.SIGSTOP);
    expect(await poll(() => linux.readStatus(pid).state === 'T')).to.equal(true);
    const { freezer, ctx } = setup();
    const tree = freezer.freeze(ctx, pid);
    expect(tree.tasks[0].state.get(WAS_STOPPED)).to.equal(true);
    expect(linux.readStatus(pid).tracerPid).to.equal(process.pid);
    freezer.release(ctx, tree, 'run');
    expect(await poll(() => linux.readStatus(pid).state === 'T' && linux.readStatus(pid).tracerPid === 0)).to.equal(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(linux.readStatus(pid).state).to.equal('T');
    linux.kill(pid, SIG.SIGCONT);
    expect(await poll(() => linux.readStatus(pid).state === 'S')).to.equal(true);
  });

  it('release("stop") leaves it stopped and untraced; release("kill") kills it', async () => {
    const a = await startSleeping('/bin/sleep', ['100']);
    const b = await startSleeping('/bin/sleep', ['100']);
    const { freezer, ctx } = setup();
    const ta = freezer.freeze(ctx, a.pid);
    freezer.release(ctx, ta, 'stop');
    const tb = freezer.freeze(ctx, b.pid);
    freezer.release(ctx, tb, 'kill');
    // Dead; collecting its exit is its parent's business (here, this test process's libuv).
    expect(pollSync(() => gone(b.pid))).to.equal(true);
    expect(await poll(() => linux.readStatus(a.pid).state === 'T' && linux.readStatus(a.pid).tracerPid === 0)).to.equal(true);
  });

  it('release never throws: a task that died while frozen is let go quietly', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const { freezer, ctx, logged } = setup();
    const tree: FrozenTree = freezer.freeze(ctx, pid);
    linux.kill(pid, SIG.SIGKILL);
    expect(pollSync(() => gone(pid))).to.equal(true);
    expect(() => freezer.release(ctx, tree, 'run')).to.not.throw();
    expect(tree.tasks[0].tracee.released).to.equal(true);
    expect(logged.warn).to.deep.equal([]);
  });

  describe('with helper targets: threads; and the refusals, naming the process and the object, which leave the process as it was', () => {
    let threads: string;
    let forker: string;
    let tracer: string;
    before(() => {
      threads = compile('threads', ['-pthread']);
      forker = compile('forker');
      tracer = compile('tracer');
    });

    it('a process with 2 threads: one task with one more thread, each stopped with its own tracee; release run, stop, kill', async () => {
      for (const mode of ['run', 'stop', 'kill'] as const) {
        const t = await startTarget(threads, []);
        const tid = Number(t.vars.tid);
        const { freezer, ctx, logged } = setup();
        const tree = freezer.freeze(ctx, t.pid);
        expect(tree.tasks).to.have.length(1);
        const th = tree.tasks[0].threads ?? [];
        expect(th.map((x) => x.tid)).to.deep.equal([tid]);
        expect(th[0].tracee!.tid).to.equal(tid);
        for (const x of [t.pid, tid]) {
          expect(linux.readStatus(t.pid, x).state, `${mode}: thread ${x}`).to.equal('t');
          expect(linux.readStatus(t.pid, x).tracerPid).to.equal(process.pid);
        }
        // A call runs inside the other thread (over a frame on its own stack), and it is let go with the process.
        expect(th[0].tracee!.syscall(SYS.gettid)).to.equal(BigInt(tid));
        freezer.release(ctx, tree, mode);
        expect(th[0].tracee!.released).to.equal(true);
        if (mode === 'run') {
          untouched(t.pid);
          expect(pollSync(() => linux.readStatus(t.pid, tid).state === 'S' && linux.readStatus(t.pid, tid).tracerPid === 0, 2000)).to.equal(true);
        } else if (mode === 'stop') {
          expect(await poll(() => [t.pid, tid].every((x) => linux.readStatus(t.pid, x).state === 'T' && linux.readStatus(t.pid, x).tracerPid === 0))).to.equal(true);
        } else {
          expect(pollSync(() => gone(t.pid))).to.equal(true);
        }
        expect(logged.warn).to.deep.equal([]);
      }
    });

    it('a process with children is frozen with them: the live child stopped and traced, the zombie kept with its status; release lets both go', async () => {
      const t = await startTarget(forker, []);
      const child = Number(t.vars.childpid);
      const zombie = Number(t.vars.zombiepid);
      const { freezer, ctx } = setup();
      const tree = freezer.freeze(ctx, t.pid);
      try {
        expect(tree.tasks.map((k) => k.pid)).to.deep.equal([t.pid, ...[child, zombie].sort((x, y) => x - y)]);
        expect(tree.tasks.find((k) => k.pid === zombie)!.zombie).to.equal(true);
        expect(tree.tasks.find((k) => k.pid === child)!.zombie).to.equal(undefined);
        expect(linux.readStatus(child).tracerPid).to.equal(process.pid);
        expect(linux.readStatus(zombie).state).to.equal('Z');
      } finally {
        freezer.release(ctx, tree, 'run');
      }
      untouched(t.pid);
      untouched(child);
      expect(linux.readStat(zombie).state).to.equal('Z');
    });

    it('a zombie', async () => {
      const t = await startTarget(forker, []);
      const z = Number(t.vars.zombiepid);
      expect(linux.readStat(z).state).to.equal('Z');
      const { freezer, ctx } = setup();
      const e = thrown(() => freezer.freeze(ctx, z));
      expect(e.code).to.equal('EOPNOTSUPP');
      expect(e.pid).to.equal(z);
      expect(e.object).to.equal('process');
      expect(e.message).to.include('zombie');
      expect(linux.readStatus(z).tracerPid).to.equal(0);
    });

    it('cptrst itself', () => {
      const { freezer, ctx } = setup();
      const e = thrown(() => freezer.freeze(ctx, process.pid));
      expect(e.code).to.equal('EOPNOTSUPP');
      expect(e.pid).to.equal(process.pid);
      expect(e.message).to.include('itself');
      expect(linux.readStatus(process.pid).tracerPid).to.equal(0);
    });

    it('a pid that does not exist (ESRCH)', () => {
      const { freezer, ctx } = setup();
      const p = unusedPid();
      const e = thrown(() => freezer.freeze(ctx, p));
      expect(e.code).to.equal('ESRCH');
      expect(e.pid).to.equal(p);
    });

    it('a process already traced by another tracer (EBUSY, naming the tracer)', async () => {
      const target = await startSleeping('/bin/sleep', ['100']);
      const tr = await startTarget(tracer, [String(target.pid)]);
      expect(linux.readStatus(target.pid).tracerPid).to.equal(tr.pid);
      const { freezer, ctx } = setup();
      const e = thrown(() => freezer.freeze(ctx, target.pid));
      expect(e.code).to.equal('EBUSY');
      expect(e.pid).to.equal(target.pid);
      expect(e.object).to.equal('ptrace');
      expect(e.message).to.include(`traced by pid ${tr.pid}`);
      // Still the other tracer's, still asleep.
      expect(linux.readStatus(target.pid).tracerPid).to.equal(tr.pid);
      expect(linux.readStatus(target.pid).state).to.equal('S');
    });
  });
});
