/** Checkpoint/restart steps and checks the integration tests share. */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointContext, CheckpointFlags, CptError, DumpHandler, Tokens, linux, loadModule, registerModule, sys_checkpoint, unloadModule } from '@cptrst/core';
import { passLines } from './catalogue';
import { cptrst } from './cptrst';
import { procState, sleep, waitGone } from './processes';
import { Workload, parseResult, startWorkload, trigger, waitResult } from './workloads';

/** Checkpoint with --kill, restart, trigger: the workload's verdict. */
async function checkpointRestart(w: Workload): Promise<string | null> {
  const img = path.join(w.dir, 'i.cpt');
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
  expect(ck.code, ck.stderr).to.equal(0);
  await w.exited;
  const rs = await cptrst(['restart', img]);
  expect(rs.code, rs.stderr).to.equal(0);
  const st = await procState(w.pid);
  expect(st?.state).to.match(/^[RS]$/);
  expect(st?.tracerPid).to.equal(0);
  await trigger(w);
  return parseResult(await waitResult(w, 20000)).verdict;
}

/**
 * The two tests every self-checking workload gets: after a checkpoint with --kill and a restart it
 * passes; told to tamper with its restored state (CPT_TAMPER=1) it fails as `tamperFailure` says
 * (by default any FAIL line of its own), which shows that its checks can fail.
 */
export function itRestoresWorkload(name: string, what: string, opts: { prefix?: string; args?: () => string[]; tamperFailure?: RegExp } = {}): void {
  const prefix = opts.prefix ? `${opts.prefix}: ` : '';
  it(`${prefix}checkpoint, kill, restart: ${what}`, async () => {
    const w = await startWorkload(name, opts.args?.() ?? []);
    expect(passLines(name)).to.include(await checkpointRestart(w));
  });
  it(`${prefix}tampered with after the restart, the workload fails`, async () => {
    const w = await startWorkload(name, opts.args?.() ?? [], { env: { CPT_TAMPER: '1' } });
    expect(await checkpointRestart(w)).to.match(opts.tamperFailure ?? new RegExp(`^FAIL ${name}: `));
  });
}

/**
 * A checkpoint through the API that fails after every handler has dumped (aborted at its last
 * safe point): the data in flight was read by then, and must all still be in the process.
 */
/** (cpt-module must be loaded in this process.) */
export async function failAfterDump(w: Workload): Promise<void> {
  const fd = fs.openSync(path.join(w.dir, 'aborted.cpt'), 'w');
  const ac = new AbortController();
  let err: unknown;
  try {
    await sys_checkpoint(w.pid, fd, CheckpointFlags.RESUME, {
      signal: ac.signal,
      onProgress: (e) => {
        if (e.phase === 'dumped') ac.abort();
      },
    });
  } catch (e) {
    err = e;
  } finally {
    fs.closeSync(fd);
  }
  expect(err, 'the checkpoint was not interrupted').to.be.instanceOf(CptError);
  expect((err as CptError).code).to.equal('EINTR');
  const st = await procState(w.pid);
  expect(st?.state).to.match(/^[RS]$/);
  expect(st?.tracerPid).to.equal(0);
}


/** `cptrst checkpoint PID -o img --kill [extra...]` succeeds, and the original process has gone (its PID is free). */
export async function checkpointKill(w: Workload, img: string, extra: string[] = []): Promise<void> {
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill', ...extra]);
  expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
  await w.exited;
}

/** Kills the original, restarts the image at its PID, and expects the restarted process to pass. */
export async function restartPasses(w: Workload, img: string): Promise<void> {
  process.kill(w.pid, 'SIGKILL');
  await w.exited;
  expect(await waitGone(w.pid, 10000)).to.equal(true);
  const r = await cptrst(['restart', img]);
  expect(r.code, r.stderr).to.equal(0);
  await sleep(100);
  await trigger(w);
  await expectPass(w);
}

/** Pins the process to one CPU (the first it may use): the calls a checkpoint runs in it make the kernel write the CPU it ran on into its rseq area. */
export function pinToOneCpu(pid: number): void {
  const cpus = /^Cpus_allowed_list:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  const mask = Buffer.alloc(128);
  mask[Number(cpus![1]) >> 3] |= 1 << (Number(cpus![1]) & 7);
  expect(linux.rawSyscall(linux.SYS.sched_setaffinity, pid, mask.length, mask), 'sched_setaffinity').to.equal(0n);
}

/** The process is there, running or sleeping, and traced by no one. */
export async function expectRunningUntraced(pid: number): Promise<void> {
  const st = await procState(pid);
  expect(st, `process ${pid} is gone`).to.not.equal(null);
  expect(st!.state).to.match(/^[RS]$/);
  expect(st!.tracerPid).to.equal(0);
}

/** The workload's verdict is a PASS (with `noExtra`, and nothing printed after it). */
export async function expectPass(w: Workload, opts: { noExtra?: boolean } = {}): Promise<void> {
  const r = parseResult(await waitResult(w, 30000));
  expect(passLines(w.name, w.args)).to.include(r.verdict, `output: ${JSON.stringify(fs.readFileSync(w.resultPath, 'utf8'))}`);
  if (opts.noExtra) expect(r.extra).to.deep.equal([]);
}

/**
 * A step run inside a checkpoint between mm's pre-read of the areas (its prepare, hints.ts) and
 * the freeze: a DumpHandler ordered after mm's, registered for the enclosing describe block (its
 * before and after hooks). `next(fn)` makes the next checkpoint run `fn(pid)` there, once.
 */
export function afterPreRead(name: string): { next(fn: ((pid: number) => void) | undefined): void } {
  let change: ((pid: number) => void) | undefined;
  const between: DumpHandler = {
    name,
    order: 201,
    prepare(_ctx: CheckpointContext, pid: number) {
      const c = change;
      change = undefined;
      c?.(pid);
    },
    dump() {},
  };
  before(() => {
    loadModule('@cptrst/cpt-module');
    registerModule(name, { register: (c) => c.register(Tokens.DumpHandler, { useValue: between }) });
  });
  after(() => unloadModule(name));
  return {
    next(fn) {
      change = fn;
    },
  };
}
