/**
 * Memory registered with a userfaultfd: refused (EOPNOTSUPP, naming the process and the area)
 * before anything is written, unless a tracker of cptrst's holds the registration (incremental
 * checkpoints: incremental.test.ts). The workload `uffd MODE` (test/workloads/uffd.c) is the
 * holder of the userfaultfd and monitors it; the process checkpointed is its child, the target,
 * whose area is registered. After each refusal the target must run untraced with its memory and
 * registration as they were, and the holder must have read no event from the fd (a fork inside
 * the target, the snapshot's, would post one where the fd asks for fork events): the workload
 * checks both after the trigger. No case may hang: each has a low timeout.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { CptError, Logger, sys_checkpoint } from '@cptrst/core';
import { Workload, afterPreRead, buildWorkloads, cptrst, expectPass, expectRunningUntraced, killStartedWorkloads, startWorkload, trigger } from '../support';

interface Pair {
  /** The holder (the workload started). */
  w: Workload;
  target: number;
  /** Start of the registered area, hex. */
  addr: string;
}

async function startPair(mode: string): Promise<Pair> {
  const w = await startWorkload('uffd', [mode]);
  const [pid, addr] = fs.readFileSync(`${w.triggerPath}.target`, 'utf8').trim().split(' ');
  return { w, target: Number(pid), addr };
}

/** The target and its holder run untraced; triggered, the target finds its memory and registration as they were, the holder no event. */
async function bothAsBefore(p: Pair, img: string): Promise<void> {
  expect(fs.existsSync(img), 'an image was written').to.equal(false);
  await expectRunningUntraced(p.target);
  await expectRunningUntraced(p.w.pid);
  await trigger(p.w);
  await expectPass(p.w);
}

const REFUSED = (p: Pair, what: RegExp): RegExp => new RegExp(`cptrst: EOPNOTSUPP: pid ${p.target}, vma ${p.addr}-[0-9a-f]+( \\S+)?: .*${what.source}`);
const ELSEWHERE = /the userfaultfd is held outside the process/;

/** Waits (synchronously: a prepare step cannot await) until `done` says yes, at most 5 s. */
function waitSync(done: () => boolean, what: string): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 2500 && !done(); i++) Atomics.wait(cell, 0, 0, 2);
  expect(done(), what).to.equal(true);
}

function areaFlags(pid: number, addr: string): string {
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const at = smaps.indexOf(`${addr}-`);
  return at < 0 ? '' : (/^VmFlags:(.*)$/m.exec(smaps.slice(at))?.[1] ?? '');
}

function holdsUffd(pid: number): boolean {
  return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]';
    } catch {
      return false;
    }
  });
}

describe('memory registered with a userfaultfd', function () {
  this.timeout(30000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  const cases: Array<[string, string, RegExp]> = [
    ['wp', 'write protection, the fd sent to another process over SCM_RIGHTS', /the area is registered with a userfaultfd for write protection \(VmFlags uw\); the userfaultfd is held outside the process/],
    ['wp-async', 'asynchronous write protection (as cptrst\'s tracker makes it), held by another process', /.*write protection \(VmFlags uw\).*/],
    ['getfd', 'write protection, the fd taken by another process with pidfd_getfd', /.*write protection \(VmFlags uw\).*/],
    ['missing', 'missing pages, held by another process', /the area is registered with a userfaultfd for missing pages \(VmFlags um\).*/],
    ['minor', 'minor faults on a shared memfd area, held by another process', /the area is registered with a userfaultfd for minor faults \(VmFlags ui\).*/],
    ['fork', 'missing pages with fork events (the snapshot\'s fork would post one), held by another process', /.*missing pages \(VmFlags um\).*/],
    ['own', 'write protection, the fd held by the process itself', /.*write protection \(VmFlags uw\); the process holds a userfaultfd of its own.*/],
  ];
  for (const [mode, what, why] of cases) {
    it(`${what}: refused, both processes as before`, async () => {
      const p = await startPair(mode);
      const img = path.join(p.w.dir, 'img');
      const r = await cptrst(['checkpoint', String(p.target), '-o', img], { timeoutMs: 20000 });
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(REFUSED(p, why));
      if (mode !== 'own') expect(r.stderr).to.match(ELSEWHERE);
      await bothAsBefore(p, img);
    });
  }

  it('refused with --kill too: the target is not killed', async () => {
    const p = await startPair('wp');
    const img = path.join(p.w.dir, 'img');
    const r = await cptrst(['checkpoint', String(p.target), '-o', img, '--kill'], { timeoutMs: 20000 });
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(REFUSED(p, ELSEWHERE));
    await bothAsBefore(p, img);
  });

  it('a userfaultfd only in flight in a socket queue of the process: refused', async () => {
    const p = await startPair('inflight');
    const img = path.join(p.w.dir, 'img');
    const r = await cptrst(['checkpoint', String(p.target), '-o', img], { timeoutMs: 20000 });
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`cptrst: EOPNOTSUPP: pid ${p.target}, (fd \\d+ \\(anon_inode:\\[userfaultfd\\]\\)|vma ${p.addr}-)`));
    await bothAsBefore(p, img);
  });

  describe('a registration made between the pre-read of the areas and the freeze', () => {
    const hook = afterPreRead('test.uffd-between');

    /** A checkpoint that lets the process run (hints, a snapshot) with `what` run after the pre-read: the error it ends with, and its log. */
    async function refusedWith(p: Pair, what: () => void, env: Record<string, string> = {}): Promise<{ e: CptError; log: string }> {
      const lines: string[] = [];
      const log: Logger = { debug: (m) => lines.push(m), info: (m) => lines.push(m), warn: (m) => lines.push(m) };
      const img = path.join(p.w.dir, 'img');
      hook.next(what);
      const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
      Object.assign(process.env, env);
      const fd = fs.openSync(img, 'w');
      let err: unknown;
      try {
        await sys_checkpoint(p.target, fd, 0, { log });
      } catch (e) {
        err = e;
      } finally {
        fs.closeSync(fd);
        fs.rmSync(img);
        hook.next(undefined);
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
      expect(err, lines.join('\n')).to.be.instanceOf(CptError);
      return { e: err as CptError, log: lines.join('\n') };
    }

    function expectRefusal(p: Pair, e: CptError, mode: RegExp): void {
      expect(e.code, e.message).to.equal('EOPNOTSUPP');
      expect(e.pid).to.equal(p.target);
      expect(e.object).to.match(new RegExp(`^vma ${p.addr}-`));
      expect(e.message).to.match(mode);
    }

    it('by a holder that had the fd before: the areas are read while frozen, the registration refused before any snapshot', async () => {
      const p = await startPair('late-fork');
      const { e, log } = await refusedWith(p, () => {
        process.kill(p.w.pid, 'SIGUSR1');
        waitSync(() => fs.existsSync(`${p.w.triggerPath}.registered`) && /\bum\b/.test(areaFlags(p.target, p.addr)), 'the holder did not register the area');
      });
      expectRefusal(p, e, /missing pages \(VmFlags um\); the userfaultfd is held outside the process/);
      expect(log).to.match(new RegExp(`areas read while frozen: process ${p.w.pid} holds a userfaultfd`));
      expect(log).to.not.match(/areas from the hints/);
      await bothAsBefore(p, path.join(p.w.dir, 'img'));
    });

    it('with a fd made after the pre-read (fork events): the snapshot\'s fork is given up in time, the registration refused, no event left', async () => {
      const p = await startPair('made-late');
      const { e, log } = await refusedWith(p, () => {
        process.kill(p.target, 'SIGUSR1');
        waitSync(() => fs.existsSync(`${p.w.triggerPath}.made`), 'the target did not make its userfaultfd');
        process.kill(p.w.pid, 'SIGUSR1');
        waitSync(() => fs.existsSync(`${p.w.triggerPath}.held`) && !holdsUffd(p.target), 'the holder did not take the userfaultfd');
      }, { CPTRST_SNAPSHOT_FORK_TIMEOUT_MS: '1000' });
      expectRefusal(p, e, /missing pages \(VmFlags um\); the userfaultfd is held outside the process/);
      // The way there: hints used, the snapshot's fork held by the event and given up, the hints
      // found stale against the process's own smaps, the checkpoint taken again without them.
      expect(log).to.match(/areas from the hints/, log);
      expect(log).to.match(/no copy-on-write snapshot: no snapshot: .*did not return in time/);
      expect(log).to.match(/proved stale/);
      await bothAsBefore(p, path.join(p.w.dir, 'img'));
    });
  });
});
