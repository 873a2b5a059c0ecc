/**
 * CloneProcessCreator: a process with a chosen PID (clone3 with set_tid run inside a helper),
 * and the refusal of a PID someone holds.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import { container, DependencyContainer } from 'tsyringe';
import {
  CptError, ImageReader, Logger, ProcessCreator, ProgressEvent, RestartContext, RestartTask, Tokens, bufferSource, linux, TaskState,
} from '@cptrst/core';
import { releaseTracee } from '@cptrst/core';
import { CloneProcessCreator, register } from '../src';
import { registerArch } from './arch';
import { gone, killStarted, poll, startSleeping, thrown } from './support';

const { SYS, ptrace } = linux;

function setup(): { c: DependencyContainer; ctx: RestartContext; events: ProgressEvent[]; info: string[] } {
  const c = container.createChildContainer();
  registerArch(c);
  register(c);
  const info: string[] = [];
  const log: Logger = { debug: () => undefined, info: (m) => info.push(m), warn: () => undefined };
  // The image stream's owner decides trust: an fd of a root-owned file (/dev/null) stands in for it.
  const ctx = new RestartContext(c, new ImageReader(bufferSource(Buffer.alloc(0))), imageFd(), 0, log);
  const events: ProgressEvent[] = [];
  ctx.events.on('progress', (e: ProgressEvent) => events.push(e));
  return { c, ctx, events, info };
}

/** A pid well above the last one handed out, that no process or thread has. */
function freePid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let p = Number(fs.readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8')) + 200; p < max; p++) if (!fs.existsSync(`/proc/${p}`)) return p;
  throw new Error('no free pid');
}

let nullFd: number | undefined;
const imageFd = (): number => (nullFd ??= fs.openSync('/dev/null', 'r'));

const task = (pid: number): RestartTask => ({ pid, tid: pid, tag: 0, state: new TaskState() });

/**
 * create.ts reads CPTRST_PID_WAIT_MS once, when the module is loaded: a fresh copy of the module
 * is loaded with the variable set (and the cached one put back).
 */
function creatorWithWait(ms: number): ProcessCreator {
  const file = require.resolve('../src/create');
  const cached = require.cache[file];
  const env = process.env.CPTRST_PID_WAIT_MS;
  delete require.cache[file];
  process.env.CPTRST_PID_WAIT_MS = String(ms);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a fresh load, after the cache entry is dropped
    const mod = require(file) as typeof import('../src/create');
    expect(mod.PID_WAIT_MS).to.equal(ms);
    return new mod.CloneProcessCreator();
  } finally {
    if (env === undefined) delete process.env.CPTRST_PID_WAIT_MS;
    else process.env.CPTRST_PID_WAIT_MS = env;
    if (cached) require.cache[file] = cached;
  }
}

describe('CloneProcessCreator', function () {
  this.timeout(30000);
  let made: number | undefined;
  afterEach(async () => {
    if (made) {
      try {
        process.kill(made, 'SIGKILL');
      } catch {
        /* gone */
      }
      await poll(() => gone(made!), 5000);
      made = undefined;
    }
    await killStarted();
  });

  it('is what register() binds', () => {
    expect(setup().c.resolve(Tokens.ProcessCreator)).to.be.instanceOf(CloneProcessCreator);
  });

  it('creates a stopped, traced process with the chosen PID; release("kill") ends it', async () => {
    const { c, ctx, events } = setup();
    const pid = freePid();
    const childrenBefore = linux.listChildren(process.pid);
    // ---- synchronous ----
    const t = c.resolve<ProcessCreator>(Tokens.ProcessCreator).create(ctx, task(pid));
    made = pid;
    expect(t.pid).to.equal(pid);
    expect(t.tid).to.equal(pid);
    expect(linux.processExists(pid)).to.equal(true);
    const st = linux.readStatus(pid);
    expect(st.tracerPid).to.equal(process.pid);
    expect(st.state).to.equal('t');
    expect(linux.readStat(pid).pid).to.equal(pid);
    // A copy of the helper (/bin/cat), which is gone: the new process was reparented, and no
    // helper is left among our children, not even as a zombie.
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).to.equal(fs.realpathSync('/bin/cat'));
    const ppid = linux.readStat(pid).ppid;
    expect(ppid).to.not.equal(process.pid);
    expect(linux.readStat(ppid).comm).to.not.equal('cat');
    expect(linux.listChildren(process.pid).filter((p) => !childrenBefore.includes(p))).to.deep.equal([]);
    // It runs syscalls as itself, from the scratch area it inherited.
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.syscall(SYS.getppid)).to.equal(BigInt(ppid));
    const [scratch] = t.reservedRanges();
    const m = linux.readMaps(pid).find((x) => x.start === scratch.start);
    expect(m, 'scratch area').to.not.equal(undefined);
    expect(m!.end).to.equal(scratch.end);
    expect(m!.prot).to.deep.equal({ read: true, write: true, exec: true });
    // The helper's rseq registration was dropped.
    expect(ptrace.getRseqConfiguration(pid).rseqAbiPointer).to.equal(0n);
    expect(events).to.deep.include({ phase: 'created', pid });
    expect(ctx.timings.create).to.be.a('number');

    releaseTracee(t, 'kill');
    // ---- end ----
    expect(t.released).to.equal(true);
    expect(await poll(() => gone(pid)), `pid ${pid} still there`).to.equal(true);
  });

  it('refuses a PID that stays taken (EEXIST), naming the holder, after CPTRST_PID_WAIT_MS', async () => {
    const holder = await startSleeping('/bin/sleep', ['100']);
    const { ctx, info } = setup();
    const creator = creatorWithWait(300);
    const childrenBefore = linux.listChildren(process.pid);
    const t0 = Date.now();
    const e = thrown(() => creator.create(ctx, task(holder.pid)));
    const took = Date.now() - t0;
    expect(e).to.be.instanceOf(CptError);
    expect(e.code).to.equal('EEXIST');
    expect(e.pid).to.equal(holder.pid);
    expect(e.object).to.equal(`pid ${holder.pid}`);
    expect(e.message).to.include(`PID ${holder.pid} is taken by process ${holder.pid} (sleep, state S, parent ${process.pid})`);
    expect(e.message).to.include('waited 300 ms');
    expect(took).to.be.at.least(300);
    expect(took).to.be.below(5000);
    expect(info.some((m) => m.includes(`pid ${holder.pid} is taken by process ${holder.pid} (sleep`))).to.equal(true);
    // The holder is untouched, and every helper started meanwhile is gone.
    expect(linux.readStatus(holder.pid).tracerPid).to.equal(0);
    expect(linux.readStatus(holder.pid).state).to.equal('S');
    expect(linux.listChildren(process.pid).filter((p) => !childrenBefore.includes(p))).to.deep.equal([]);
  });

  it('a made process dies with its maker: PTRACE_O_EXITKILL, inherited by the clone child from the helper', async () => {
    const pid = freePid();
    const { spawn } = await import('child_process');
    const maker = spawn(process.execPath, [require.resolve('./fixtures/create-and-hold.js'), String(pid)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    maker.stdout.on('data', (d) => (text += String(d)));
    maker.stderr.on('data', (d) => (text += String(d)));
    made = pid;
    expect(await poll(() => text.includes(`MADE ${pid}`) || maker.exitCode !== null, 20000), text).to.equal(true);
    expect(text).to.include(`MADE ${pid}`);
    // The process stands at a pause() it would sit in for ever: only EXITKILL ends it.
    expect(linux.readStatus(pid).tracerPid).to.equal(maker.pid);
    maker.kill('SIGKILL');
    expect(await poll(() => gone(pid), 10000), `pid ${pid} outlived the process that made it`).to.equal(true);
  });
});

