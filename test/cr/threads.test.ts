/**
 * Multi-threaded processes: every thread is seized and stopped (threads made and ended while
 * cptrst seizes included), written with its own state, and made again at restart with its tid
 * inside the restored process. The workloads check every thread's state themselves after the
 * restart (C with pthreads, python3 with 100 and 1000 threads, a process that makes and ends
 * threads all the time). What cannot be restored per thread is refused naming the thread, and a
 * restart that cannot make a thread leaves nothing behind.
 */
import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  Workload, buildWorkloads, cptrst, editedObject, killByPid, killStartedWorkloads, makeTempDir, makeUserDir, parseResult, passLines,
  readImage, recodeImage, removeTempDir, removeUserDir, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';
import type { CopiedRecord } from '../support';

const NOBODY = { uid: 65534, gid: 65534 };

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

/** The process a thread id belongs to now, or undefined when it is free. */
function tgidOf(tid: number): number | undefined {
  try {
    return Number(/^Tgid:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${tid}/status`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

function threadIds(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map(Number).sort((a, b) => a - b);
}

/** Checkpoint with --kill, wait for the PID to be free, restart; the restarted process has the same thread ids. */
async function checkpointAndRestart(w: Workload, opts: { timeoutMs?: number } = {}): Promise<{ image: string; before: number[] }> {
  const image = path.join(w.dir, 'image');
  const before = threadIds(w.pid);
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', image, '--kill'], { timeoutMs: opts.timeoutMs });
  expect(ck.code, ck.stderr).to.equal(0);
  await w.exited;
  expect(await waitGone(w.pid, 10000)).to.equal(true);
  const rs = await cptrst(['restart', image], { timeoutMs: opts.timeoutMs });
  expect(rs.code, rs.stderr).to.equal(0);
  return { image, before };
}

describe('threads', function () {
  this.timeout(240000);
  const userDirs: string[] = [];
  before(() => {
    loadModule('@cptrst/cpt-module'); // the layouts, to rewrite images
    return buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());
  after(() => userDirs.forEach(removeUserDir));

  for (const args of [[], ['--creds'], ['--keepcaps'], ['--seccomp']]) {
    it(`pthreads ${args.join(' ')}: every thread with its own registers, mask, name, TLS, rseq, scheduling, signals, robust list, join${args.length ? `, with ${args[0]}` : ''}`, async () => {
      const w = await startWorkload('pthreads', args);
      const { before } = await checkpointAndRestart(w);
      // Every thread with its tid, none traced.
      expect(threadIds(w.pid)).to.deep.equal(before);
      expect(await tracedThreads(w.pid)).to.deep.equal([]);
      if (args.includes('--seccomp')) {
        const seccomp = (t: number) => /^Seccomp:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${w.pid}/task/${t}/status`, 'utf8'))![1];
        expect(threadIds(w.pid).filter((t) => seccomp(t) === '2')).to.have.length(1);
      } else if (args.length) {
        // One thread with uids of its own; with --keepcaps the main thread also left root (after the others were made).
        const uid = (t: number) => /^Uid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${w.pid}/task/${t}/status`, 'utf8'))![1];
        const own = args.includes('--creds') ? '65534' : '99';
        expect(threadIds(w.pid).filter((t) => uid(t) === own)).to.have.length(1);
        expect(uid(w.pid)).to.equal(args.includes('--keepcaps') ? '12' : '0');
      }
      await trigger(w);
      expect(passLines('pthreads', args)).to.include(parseResult(await waitResult(w)).verdict);
    });
  }

  it('a job-control stopped process: every thread stays stopped after the checkpoint, with no signal pending that was not, and after the restart; SIGCONT lets all go on', async () => {
    const w = await startWorkload('pthreads');
    process.kill(w.pid, 'SIGSTOP');
    // The process's and each thread's pending signals: a checkpoint must not leave a stop signal of its own queued.
    const pending = () => {
      const field = (file: string, name: string) => new RegExp(`^${name}:\\s*(\\S+)$`, 'm').exec(fs.readFileSync(file, 'utf8'))?.[1];
      return [field(`/proc/${w.pid}/status`, 'ShdPnd'), ...threadIds(w.pid).map((t) => field(`/proc/${w.pid}/task/${t}/status`, 'SigPnd'))];
    };
    const states = async (want: string) => {
      let got: string[] = [];
      for (let i = 0; i < 200; i++) {
        got = threadIds(w.pid).map((t) => fs.readFileSync(`/proc/${w.pid}/task/${t}/stat`, 'utf8').split(') ')[1].charAt(0));
        if (got.every((s) => s === want)) break;
        await sleep(10);
      }
      return got;
    };
    expect(await states('T')).to.satisfy((a: string[]) => a.every((s) => s === 'T'));
    const before = pending();
    expect(before.every((p) => p !== undefined), before.join(' ')).to.equal(true);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'run')]);
    expect(r.code, r.stderr).to.equal(0);
    expect(await tracedThreads(w.pid)).to.deep.equal([]);
    expect(await states('T')).to.satisfy((a: string[]) => a.every((s) => s === 'T'));
    expect(pending()).to.deep.equal(before);
    const { before: tids } = await checkpointAndRestart(w);
    expect(threadIds(w.pid)).to.deep.equal(tids);
    expect(await states('T')).to.satisfy((a: string[]) => a.every((s) => s === 'T'));
    expect(await tracedThreads(w.pid)).to.deep.equal([]);
    process.kill(w.pid, 'SIGCONT');
    await trigger(w);
    expect(passLines('pthreads')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('cptrst show lists the threads with the system call each was frozen in', async () => {
    const w = await startWorkload('pthreads');
    const image = path.join(w.dir, 'image');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', image]);
    expect(ck.code, ck.stderr).to.equal(0);
    const show = await cptrst(['show', image]);
    expect(show.code, show.stderr).to.equal(0);
    const tids = threadIds(w.pid).filter((t) => t !== w.pid);
    for (const t of tids) expect(show.stdout).to.match(new RegExp(`thread ${t} `));
    // The condition variable waiter sits in futex, the sleeper in clock_nanosleep.
    expect(show.stdout).to.match(/thread \d+ cond\b.*\bfutex\b/);
    expect(show.stdout).to.match(/thread \d+ sleep\b.*\bclock_nanosleep\b/);
    await trigger(w);
    expect(passLines('pthreads')).to.include(parseResult(await waitResult(w)).verdict);
  });

  for (const args of [[], ['--tsync'], ['--strict']]) {
    it(`seccomp${args.map((a) => ` ${a}`).join('')}: every thread keeps its own filters (a forbidden call still fails with the filter's errno, allowed ones work)${args.includes('--tsync') ? ', and the filter all threads share is one (a TSYNC after restart works)' : ''}${args.includes('--strict') ? ', a thread in strict mode stays in it' : ''}`, async () => {
      const w = await startWorkload('seccomp', args);
      const mode = (t: number) => /^Seccomp:\s*(\d+)\nSeccomp_filters:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${w.pid}/task/${t}/status`, 'utf8'))!.slice(1).join('/');
      const modes = () => threadIds(w.pid).map(mode);
      const recorded = modes();
      const { image, before } = await checkpointAndRestart(w);
      expect(threadIds(w.pid)).to.deep.equal(before);
      expect(modes()).to.deep.equal(recorded);
      expect(await tracedThreads(w.pid)).to.deep.equal([]);
      // A second checkpoint of the restored process finds the same filters (programs, the LOG
      // flag, which thread shares which) as the first.
      const again = path.join(w.dir, 'again');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', again]);
      expect(ck.code, ck.stderr).to.equal(0);
      const seccompOf = (img: string) => readImage(img).recs.filter((r) => r.name.startsWith('seccomp')).map((r) => JSON.stringify(r.obj, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
      const first = seccompOf(image);
      expect(first.some((o) => o.includes('"flags":2')), 'the LOG flag of filter A').to.equal(true);
      expect(seccompOf(again)).to.deep.equal(first);
      await trigger(w);
      expect(passLines('seccomp', args)).to.include(parseResult(await waitResult(w)).verdict);
    });
  }

  it('seccomp in an image not owned by root: the filters are installed by the threads as the owner; filters without no_new_privs are refused (EPERM), nothing left', async () => {
    const dir = makeUserDir('threads-seccomp');
    userDirs.push(dir);
    const w = await startWorkload('seccomp', ['--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
    const img = path.join(dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 10000)).to.equal(true);
    fs.chownSync(img, NOBODY.uid, NOBODY.gid);
    // The same process without no_new_privs: only privilege could have installed its filters.
    const crafted = path.join(dir, 'nnp.cpt');
    recodeImage(img, crafted, {
      owner: NOBODY,
      records: (recs) => recs.map((r) => (r.name === 'creds' ? { ...r, obj: editedObject(r.obj, { noNewPrivs: false }) } : r)),
    });
    const r = await cptrst(['restart', crafted]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`^cptrst: EPERM: pid ${w.pid}, the main thread seccomp: the image belongs to uid 65534, and the main thread of task ${w.pid} has seccomp filters without no_new_privs`));
    expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    for (const t of threadIds(w.pid)) expect(fs.readFileSync(`/proc/${w.pid}/task/${t}/status`, 'utf8')).to.match(/^Seccomp:\s*2$/m);
    await trigger(w);
    expect(passLines('seccomp', ['--as'])).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a process that became nobody after exec, its executable and cwd in a directory only root may enter: root\'s image is restored (its files opened with root\'s file identity), the same image owned by nobody is refused (EACCES), nothing left', async () => {
    const dir = makeUserDir('threads-closed');
    userDirs.push(dir);
    const w = await startWorkload('pthreads', ['--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
    // From here on the process cannot reach its own executable or cwd by name.
    fs.chmodSync(dir, 0o700);
    const store = makeTempDir('threads-closed-img');
    try {
      const img = path.join(store, 'image.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      expect(await waitGone(w.pid, 10000)).to.equal(true);
      const theirs = path.join(store, 'nobody.cpt');
      recodeImage(img, theirs, { owner: NOBODY });
      const r = await cptrst(['restart', theirs]);
      expect(r.code, r.stderr).to.equal(1);
      // The first recorded file it reaches by name: its executable's mapping, its exe or its cwd.
      expect(r.stderr).to.match(new RegExp(`^cptrst: EACCES: pid ${w.pid}, [^\\n]*${dir}[^\\n]*(may not open it|failed inside the process: EACCES)\\n$`));
      expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      expect(fs.readlinkSync(`/proc/${w.pid}/exe`)).to.equal(path.join(dir, 'pthreads'));
      expect(fs.readlinkSync(`/proc/${w.pid}/cwd`)).to.equal(dir);
      for (const t of threadIds(w.pid)) expect(fs.readFileSync(`/proc/${w.pid}/task/${t}/status`, 'utf8')).to.match(/^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
      fs.chmodSync(dir, 0o755);
      await trigger(w);
      expect(passLines('pthreads', ['--as'])).to.include(parseResult(await waitResult(w)).verdict);
    } finally {
      fs.chmodSync(dir, 0o755);
      removeTempDir(store);
    }
  });

  it('refuses a thread whose children would be in another PID namespace (unshare(CLONE_NEWPID) in one thread), naming it; every thread carries on', async () => {
    const w = await startWorkload('pthreads', ['--pidns']);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'img')]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, thread (\\d+): thread \\1 has its own pid_for_children namespace \\(unshare in one thread\\); `));
    const named = Number(/thread (\d+):/.exec(r.stderr)![1]);
    // A new PID namespace with no process in it yet has no name to show (ENOENT).
    const ns = (p: string) => {
      try {
        return fs.readlinkSync(p);
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
    };
    expect(ns(`/proc/${w.pid}/task/${named}/ns/pid_for_children`)).to.not.equal(ns(`/proc/${w.pid}/ns/pid_for_children`));
    expect(fs.existsSync(path.join(w.dir, 'img'))).to.equal(false);
    expect(await tracedThreads(w.pid)).to.deep.equal([]);
    await trigger(w);
    expect(passLines('pthreads', ['--pidns'])).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('refuses a thread with its own cwd and umask (unshare(CLONE_FS)), naming it; every thread carries on', async () => {
    const w = await startWorkload('pthreads', ['--unshare']);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'img')]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, thread (\\d+): thread \\1 has its own file-system context \\(cwd, root, umask\\) \\(unshare in one thread\\); `));
    expect(fs.existsSync(path.join(w.dir, 'img'))).to.equal(false);
    expect(await tracedThreads(w.pid)).to.deep.equal([]);
    await trigger(w);
    expect(passLines('pthreads', ['--unshare'])).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('threadchurn: threads made and ended all the time; checkpointed while running (three times) and restarted', async () => {
    const w = await startWorkload('threadchurn');
    for (let k = 0; k < 3; k++) {
      const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, `run-${k}`)]);
      expect(r.code, r.stderr).to.equal(0);
      expect(await tracedThreads(w.pid)).to.deep.equal([]);
    }
    await checkpointAndRestart(w);
    expect(await tracedThreads(w.pid)).to.deep.equal([]);
    await trigger(w);
    expect(passLines('threadchurn')).to.include(parseResult(await waitResult(w)).verdict);
  });

  for (const n of [100, 1000]) {
    it(`python3 with ${n} threads: checkpoint and restart`, async () => {
      const w = await startWorkload('threads.py', [String(n)], { readyTimeoutMs: 60000 });
      const { before } = await checkpointAndRestart(w, { timeoutMs: 180000 });
      expect(before.length).to.equal(n + 1);
      expect(threadIds(w.pid)).to.deep.equal(before);
      await trigger(w);
      expect(passLines('threads.py', [String(n)])).to.include(parseResult(await waitResult(w, 60000)).verdict);
    });
  }

  it('a restart that cannot make a thread (its tid is taken) leaves nothing behind; once free, it restores', async function () {
    const w = await startWorkload('pthreads');
    const image = path.join(w.dir, 'image');
    const tids = threadIds(w.pid).filter((t) => t !== w.pid);
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', image, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 10000)).to.equal(true);
    // A process that holds the tid of the last thread (ns_last_pid: the next PID the kernel gives).
    const target = tids[tids.length - 1];
    let holder: ChildProcess | undefined;
    for (let attempt = 0; attempt < 50 && holder === undefined; attempt++) {
      fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(target - 1));
      const c = spawn('sleep', ['60'], { stdio: 'ignore', detached: true });
      if (c.pid === target) holder = c;
      else c.kill('SIGKILL');
    }
    if (holder === undefined) this.skip(); // others took the PID each time
    try {
      const rs = await cptrst(['restart', image], { env: { CPTRST_PID_WAIT_MS: '300' } });
      expect(rs.code, rs.stderr).to.equal(1);
      expect(rs.stderr).to.match(new RegExp(`^cptrst: EEXIST: pid ${w.pid}, thread ${target}: clone3 of thread ${target} failed: EEXIST`));
      expect(await waitGone(w.pid, 5000)).to.equal(true);
      // None of its threads (their numbers may already be other processes' on a busy machine).
      for (const t of tids.slice(0, -1)) expect(tgidOf(t), `thread ${t}`).to.not.equal(w.pid);
    } finally {
      holder.kill('SIGKILL');
    }
    expect(await waitGone(target, 5000)).to.equal(true);
    const rs = await cptrst(['restart', image]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('pthreads')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('an image not owned by root: its threads get its owner\'s rights, never more (a thread with uid 0 or a lower nice is refused, nothing left)', async () => {
    const dir = makeUserDir('threads-nobody');
    userDirs.push(dir);
    const w = await startWorkload('pthreads', ['--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
    const img = path.join(dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 10000)).to.equal(true);
    fs.chownSync(img, NOBODY.uid, NOBODY.gid);
    type Tagged = CopiedRecord;
    const craft = (n: string, edit: (recs: Tagged[]) => Tagged[]) => {
      const p = path.join(dir, `${n}.cpt`);
      recodeImage(img, p, { records: edit, owner: NOBODY });
      return p;
    };
    const refused = async (p: string, pattern: RegExp) => {
      const r = await cptrst(['restart', p]);
      expect(r.code, `signal ${r.signal}; ${r.stderr}`).to.equal(1);
      expect(r.stderr, r.stderr).to.match(pattern);
      expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
    };
    const firstThread = (recs: Tagged[]) => recs.find((r) => r.name === 'thread')!;
    // A thread with credentials of its own: uid 0.
    await refused(craft('root-thread', (recs) => {
      const th = firstThread(recs);
      const main = recs.find((r) => r.name === 'creds')!.obj;
      const creds = editedObject(main, { uids: [0, 0, 0, 0] });
      const mainCreds = recs.find((r) => r.name === 'creds')!;
      recs.splice(recs.indexOf(th) + 1, 0, { ...mainCreds, obj: creds, tag: 1 << 30, ptag: th.tag });
      return recs;
    }), new RegExp(`^cptrst: EPERM: pid ${w.pid}, thread ${'\\d+'}: the image belongs to uid 65534, and thread \\d+ of task ${w.pid} asks for more than its owner has: real uid 0`));
    // A thread asking for nice -10, which only privilege gives: asked with the owner's rights.
    await refused(craft('nice-thread', (recs) => {
      firstThread(recs).obj.nice = -10;
      return recs;
    }), new RegExp(`^cptrst: EPERM: pid ${w.pid}, scheduling of thread \\d+: .*refused by the kernel with the rights of the image's owner`));
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    for (const t of threadIds(w.pid)) expect(fs.readFileSync(`/proc/${w.pid}/task/${t}/status`, 'utf8')).to.match(/^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    await trigger(w);
    expect(passLines('pthreads', ['--as'])).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a process whose threads only come and go is checkpointed between them, never broken', async () => {
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
      for (let k = 0; k < 8; k++) {
        const img = path.join(dir, `img-${k}`);
        const r = await cptrst(['checkpoint', String(child.pid), '-o', img]);
        expect(r.code, r.stderr).to.equal(0);
        expect(fs.statSync(img).size).to.be.greaterThan(0);
        expect(await tracedThreads(child.pid!)).to.deep.equal([]);
      }
      fs.writeFileSync(path.join(dir, 'trigger'), '');
      for (let i = 0; i < 200 && !/PASS|FAIL/.test(fs.readFileSync(out, 'utf8')); i++) await sleep(20);
      expect(fs.readFileSync(out, 'utf8')).to.match(/^READY \d+\nPASS\n$/);
    } finally {
      await killByPid(child.pid!);
    }
  });
});
