/**
 * Issue 3: a real process is checkpointed (--kill), restarted from the image with its own PID,
 * and then checks its own state: every workload reports PASS or FAIL itself.
 */
import { expect } from 'chai';
import { execFile } from 'child_process';
import { promisify } from 'util';
import * as fs from 'fs';
import * as path from 'path';
import {
  CLI_MAIN, SYSCALL_VARIANTS, Workload, buildWorkloads, cptrst, killStartedWorkloads, makeTempDir, parseResult, passLines, procState,
  readMaps, sleep, startWorkload, trigger, waitResult,
} from '../support';

/** Checkpoint with --kill, wait for the PID to be free, restart; returns the image path. */
export async function checkpointAndRestart(w: Workload, extra: { restartArgs?: string[] } = {}): Promise<string> {
  const img = path.join(w.dir, 'image.cpt');
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
  expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
  await w.exited; // libuv reaps it: the PID is free again
  const rs = await cptrst(['restart', img, ...(extra.restartArgs ?? [])]);
  expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
  expect(rs.stdout.trim()).to.equal(String(w.pid));
  return img;
}

function mmFacts(pid: number): Record<string, string> {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    exe: fs.readlinkSync(`/proc/${pid}/exe`),
    cmdline: fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1'),
    environ: fs.readFileSync(`/proc/${pid}/environ`, 'latin1'),
    auxv: fs.readFileSync(`/proc/${pid}/auxv`).toString('hex'),
    // startcode endcode startstack (fields 26-28), start_data end_data start_brk arg_start arg_end env_start env_end (45-51)
    layout: [23, 24, 25, 42, 43, 44, 45, 46, 47, 48].map((i) => f[i]).join(' '),
  };
}

async function expectPass(w: Workload, timeoutMs = 30000): Promise<void> {
  const r = parseResult(await waitResult(w, timeoutMs));
  expect(r.readyPid).to.equal(w.pid);
  expect(passLines(w.name, w.args)).to.include(r.verdict, `output: ${JSON.stringify(fs.readFileSync(w.resultPath, 'utf8'))}`);
  expect(r.extra).to.deep.equal([]);
}

const execFileP = promisify(execFile);

describe('checkpoint --kill, restart: the process carries on', function () {
  this.timeout(120000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  for (const name of ['static', 'dynamic', 'loop.sh', 'loop.py', 'cpuregs', 'debugregs', 'signals', 'files', 'nsfd', 'protmem', 'eventloop.js', 'asyncio_loop.py']) {
    it(`${name}`, async () => {
      const w = await startWorkload(name);
      await sleep(300); // let it get into its loop
      await checkpointAndRestart(w);
      const st = await procState(w.pid);
      expect(st?.state, 'restored process state').to.match(/^[RS]$/);
      expect(st?.tracerPid).to.equal(0);
      await trigger(w);
      await expectPass(w);
    });
  }

  it('memory: pages, protections, shared memory, and /proc/PID/maps unchanged', async () => {
    const w = await startWorkload('memory');
    const before = await readMaps(w.pid);
    const mmBefore = mmFacts(w.pid);
    await checkpointAndRestart(w);
    const after = await readMaps(w.pid);
    // The mm fields: exe, the arg and env areas (read through them), auxv, code/data/brk/stack.
    expect(mmFacts(w.pid)).to.deep.equal(mmBefore);
    // The shared anonymous mapping is a new shmem object: same path, another inode number.
    const norm = (m: { line: string; path: string }) => (m.path === '/dev/zero (deleted)' ? m.line.replace(/ \d+ +\/dev\/zero/, ' N /dev/zero') : m.line);
    expect(after.map(norm)).to.deep.equal(before.map(norm));
    await trigger(w);
    await expectPass(w);
  });

  // task --nobody and task as another user: test/cr/task.test.ts (they need a directory that user can reach).
  it('task: session leadership, ids, comm, umask, cwd, rlimits, personality', async () => {
    const dir = makeTempDir('task-cwd');
    const w = await startWorkload('task', [dir]);
    await checkpointAndRestart(w);
    const st = await procState(w.pid);
    expect(st?.state).to.match(/^[RS]$/);
    await trigger(w);
    await expectPass(w);
  });

  for (const variant of SYSCALL_VARIANTS) {
    it(`frozen inside ${variant}: the call restarts or fails with EINTR, as after a signal`, async () => {
      const w = await startWorkload('syscalls', [variant]);
      // Be inside the call (/proc/PID/syscall names it while it blocks there).
      const nr = { nanosleep: 35, select: 23, poll: 7, futex: 202, pause: 34 }[variant];
      let inCall = '';
      for (let i = 0; i < 100 && inCall !== String(nr); i++) {
        await sleep(20);
        inCall = fs.readFileSync(`/proc/${w.pid}/syscall`, 'utf8').split(' ')[0];
      }
      expect(inCall, 'the workload is blocked in the call').to.equal(String(nr));
      await checkpointAndRestart(w);
      await trigger(w);
      if (variant === 'pause') {
        await sleep(100);
        process.kill(w.pid, 'SIGUSR1');
      }
      await expectPass(w);
    });
  }

  it('--leave-stopped leaves the restored process stopped and untraced; SIGCONT lets it carry on', async () => {
    const w = await startWorkload('dynamic');
    await checkpointAndRestart(w, { restartArgs: ['--leave-stopped'] });
    let st = await procState(w.pid);
    expect(st?.state).to.equal('T');
    expect(st?.tracerPid).to.equal(0);
    process.kill(w.pid, 'SIGCONT');
    await sleep(100);
    st = await procState(w.pid);
    expect(st?.state).to.match(/^[RS]$/);
    await trigger(w);
    await expectPass(w);
  });

  it('a process stopped by job control (SIGSTOP) is restored stopped, and carries on after SIGCONT', async () => {
    const w = await startWorkload('static');
    process.kill(w.pid, 'SIGSTOP');
    await sleep(50);
    expect((await procState(w.pid))?.state).to.equal('T');
    await checkpointAndRestart(w);
    const st = await procState(w.pid);
    expect(st?.state).to.equal('T');
    expect(st?.tracerPid).to.equal(0);
    process.kill(w.pid, 'SIGCONT');
    await trigger(w);
    await expectPass(w);
  });

  it('restart through a pipe (image on stdin)', async () => {
    const w = await startWorkload('static');
    const img = path.join(w.dir, 'piped.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    // cat | cptrst restart -: the image arrives through a real pipe, never seekable.
    const out = await execFileP('bash', ['-c', `cat "$1" | "$2" "$3" restart -`, 'sh', img, process.execPath, CLI_MAIN]);
    expect(out.stdout.trim()).to.equal(String(w.pid));
    await trigger(w);
    await expectPass(w);
  });
});
