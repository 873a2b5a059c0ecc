/**
 * Terminals: ptys held by the tree (the ptys workload checks every setting and byte itself after a
 * restart, and fails when tampered with), data buffered in a pty read and put back so that no byte
 * is lost whether the checkpoint succeeds or fails, and a job of a shell on a terminal outside the
 * tree (--shell-job), on ptys of the test's own (support/ptyrun.py: the tests need no terminal).
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { linux, loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, CLI_MAIN, REPO_ROOT, binaryPath, buildWorkloads, cptrst, failAfterDump, killByPid, killStartedWorkloads, makeTempDir,
  checkpointKill, expectRunningUntraced, parseResult, passLines, recodeImage, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
const PTYRUN = path.join(REPO_ROOT, 'test', 'support', 'ptyrun.py');

function ioctlInt(fd: number, req: number, value?: number): number {
  const v = Buffer.alloc(4);
  if (value !== undefined) v.writeInt32LE(value, 0);
  const r = linux.rawSyscall(linux.SYS.ioctl, fd, req, v);
  if (r < 0n) throw new Error(`ioctl 0x${req.toString(16)}: ${linux.errnoName(Number(-r))}`);
  return v.readInt32LE(0);
}

/** A pty of the test's own: its master (unlocked) and index. */
function openPty(): { master: number; index: number } {
  const master = fs.openSync('/dev/ptmx', linux.O.RDWR | linux.O.NOCTTY);
  ioctlInt(master, linux.TIOC.SPTLCK, 0);
  return { master, index: ioctlInt(master, linux.TIOC.GPTN) };
}

describe('terminals', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  itRestoresWorkload('ptys', 'indexes, termios, window size, packet mode, lock, exclusive mode, buffered data, controlling terminals, foreground group', { prefix: 'ptys', tamperFailure: /^FAIL ptys: window 24x80/ });

  it('ptys: a checkpoint that leaves the tree running puts every buffered byte back', async () => {
    const w = await startWorkload('ptys');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'i.cpt')]);
    expect(ck.code, ck.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('ptys')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('ptys: a checkpoint that fails after the data was read loses no byte', async () => {
    const w = await startWorkload('ptys');
    await failAfterDump(w);
    await trigger(w);
    expect(passLines('ptys')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a pty whose slave a process outside the tree holds is refused, naming the fd and that process', async () => {
    const dir = makeTempDir('pty-outside');
    const trig = path.join(dir, 'go');
    const out = path.join(dir, 'out');
    const { master, index } = openPty();
    const slave = fs.openSync(`/dev/pts/${index}`, linux.O.RDWR | linux.O.NOCTTY);
    const ofd = fs.openSync(out, 'a');
    const child = spawn(binaryPath('pidhold'), [trig], { stdio: [master, ofd, ofd], detached: true });
    fs.closeSync(ofd);
    fs.closeSync(master);
    child.unref();
    const pid = child.pid!;
    try {
      for (let i = 0; i < 500 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
      const img = path.join(dir, 'i.cpt');
      const r = await cptrst(['checkpoint', String(pid), '-o', img, '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, fd 0 \\(/dev/ptmx\\): pty ${index} is also open in process ${process.pid} \\(fd ${slave}\\), outside the checkpointed tree`));
      expect(fs.existsSync(img)).to.equal(false);
      await expectRunningUntraced(pid);
      fs.writeFileSync(trig, '');
      expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
    } finally {
      fs.closeSync(slave);
      await killByPid(pid);
    }
  });

  it('a restart whose pty index another pty has taken fails with EBUSY and leaves no process', async () => {
    const w = await startWorkload('ptys');
    const masters = fs.readdirSync(`/proc/${w.pid}/fd`).filter((fd) => fs.readlinkSync(`/proc/${w.pid}/fd/${fd}`) === '/dev/ptmx');
    const index = Math.min(...masters.map((fd) => Number(/tty-index:\s*(\d+)/.exec(fs.readFileSync(`/proc/${w.pid}/fdinfo/${fd}`, 'utf8'))![1])));
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const held: number[] = [];
    try {
      // The killed tree's ptys are freed once their last holder is gone: take that index.
      for (let tries = 0; tries < 200 && !held.some((fd) => ioctlInt(fd, linux.TIOC.GPTN) === index); tries++) {
        const p = openPty();
        held.push(p.master);
        if (p.index > index) {
          held.splice(0).forEach((fd) => fs.closeSync(fd));
          await sleep(20);
        }
      }
      expect(held.some((fd) => ioctlInt(fd, linux.TIOC.GPTN) === index), `pty ${index} never came free`).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code).to.equal(1);
      expect(rs.stderr).to.match(ONE_LINE);
      expect(rs.stderr).to.match(new RegExp(`^cptrst: EBUSY: pid ${w.pid}, fd \\d+ \\(/dev/ptmx\\): pty ${index} is in use by another process`));
      expect(await waitGone(w.pid, 10000)).to.equal(true);
    } finally {
      held.forEach((fd) => fs.closeSync(fd));
    }
  });

  itRestoresWorkload('ptycarry', 'the pty made by the parent, the master carried to the child (its parent, on the slave, closed it)', { prefix: 'a pty whose master only a child holds', tamperFailure: /^FAIL ptycarry: window 24x80/ });

  it('a pty whose master only a child holds: a checkpoint that leaves the tree running puts every buffered byte back', async () => {
    const w = await startWorkload('ptycarry');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'i.cpt')]);
    expect(ck.code, ck.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('ptycarry')).to.include(parseResult(await waitResult(w)).verdict);
  });

  describe('crafted images of carried and hung-up ptys are refused (EBADIMG), leaving no process', () => {
    const cases: Array<{ name: string; workload: string; edit: (r: Record<string, unknown>) => boolean; why: RegExp }> = [
      {
        name: 'a carried master that no ancestor made',
        workload: 'ptycarry',
        edit: (r) => r.role === 'carried-master' && ((r.index = (r.index as number) + 1), true),
        why: /^cptrst: EBADIMG: pid \d+, fd \d+ \(\/dev\/ptmx\): the master of pty \d+ is said to be carried from an ancestor, which did not make it/,
      },
      {
        name: 'a hung-up slave with a set-uid mode',
        workload: 'ptyhup',
        edit: (r) => r.role === 'hungup' && ((r.slaveMode = 0o4777), true),
        why: /^cptrst: EBADIMG: pid \d+, fd \d+ \(\/dev\/pts\/\d+\): tty: slave mode 04777/,
      },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const w = await startWorkload(c.workload);
        const img = path.join(w.dir, 'good.cpt');
        await checkpointKill(w, img);
        const bad = path.join(w.dir, 'crafted.cpt');
        let edited = 0;
        recodeImage(img, bad, {
          records: (recs) => {
            for (const { name, obj } of recs) if (name === 'tty' && edited === 0 && c.edit(obj)) edited++;
            return recs;
          },
        });
        expect(edited, 'no such tty record in the image').to.equal(1);
        const r = await cptrst(['restart', bad]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(ONE_LINE).and.match(c.why);
        expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
        const ok = await cptrst(['restart', img]);
        expect(ok.code, ok.stderr).to.equal(0);
        await trigger(w);
        expect(passLines(c.workload)).to.include(parseResult(await waitResult(w, 20000)).verdict);
      });
    }
  });

  itRestoresWorkload('ptyhup', 'name, device, descriptions, read 0, write and TCGETS EIO, POLLHUP, no controlling terminal (its master closed)', { prefix: 'a hung-up slave', tamperFailure: /^FAIL ptyhup: the dup of the first links to '\/dev\/null'/ });

  it('a hung-up slave that a process outside the tree holds too is refused, naming it; the process runs on', async () => {
    const w = await startWorkload('ptyhup');
    const fd = fs.readdirSync(`/proc/${w.pid}/fd`).find((n) => / \(deleted\)$/.test(fs.readlinkSync(`/proc/${w.pid}/fd/${n}`)));
    expect(fd, 'no hung-up slave').to.not.equal(undefined);
    // A hung-up tty cannot be opened again: the test takes a copy of the process's description.
    const pidfd = linux.pidfdOpen(w.pid);
    const held = linux.pidfdGetfd(pidfd, Number(fd));
    fs.closeSync(pidfd);
    try {
      const img = path.join(w.dir, 'i.cpt');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, fd \\d+ \\(/dev/pts/\\d+ \\(deleted\\)\\): the hung-up slave of pty \\d+ is also open in process ${process.pid} \\(fd ${held}\\), outside the checkpointed tree`));
      expect(fs.existsSync(img)).to.equal(false);
      await expectRunningUntraced(w.pid);
    } finally {
      fs.closeSync(held);
    }
    await trigger(w);
    expect(passLines('ptyhup')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a slave hung up by vhangup while its master lives is refused, naming the fd; the process runs on', async () => {
    const w = await startWorkload('ptyhup', ['vhangup']);
    const img = path.join(w.dir, 'i.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, fd \\d+ \\(/dev/pts/\\d+\\): this description of /dev/pts/\\d+ was hung up \\(vhangup\\) while its pty lives on; not supported`));
    expect(fs.existsSync(img)).to.equal(false);
    await expectRunningUntraced(w.pid);
    await trigger(w);
    expect(passLines('ptyhup', ['vhangup'])).to.include(parseResult(await waitResult(w)).verdict);
  });

  describe('a job of a shell on a terminal outside the tree', () => {
    const started: number[] = [];
    afterEach(async () => {
      for (const pid of started.splice(0)) await killByPid(pid);
    });

    /** The shelljob workload as the foreground job of a shell on a new pty; its pid (from READY) and the shell's. */
    async function startJob(dir: string, release: string, env: Record<string, string> = {}): Promise<{ pid: number; shell: number; result: string; trig: string }> {
      const result = path.join(dir, 'result');
      const trig = path.join(dir, 'go');
      const out = fs.openSync(result, 'a');
      const shell = spawn('python3', [PTYRUN, release, binaryPath('shelljob'), trig], { stdio: ['ignore', out, out], env: { ...process.env, CPT_TAMPER: '', ...env } });
      fs.closeSync(out);
      shell.unref();
      started.push(shell.pid!);
      for (let i = 0; i < 500 && !/^READY \d+/.test(fs.readFileSync(result, 'utf8')); i++) await sleep(10);
      const m = /^READY (\d+)/.exec(fs.readFileSync(result, 'utf8'));
      expect(m, 'the job did not start').to.not.equal(null);
      return { pid: Number(m![1]), shell: shell.pid!, result, trig };
    }

    it('is refused without --shell-job, naming the process, the terminal and the option; it runs on untouched', async () => {
      const dir = makeTempDir('shelljob-refused');
      const release = path.join(dir, 'release');
      const job = await startJob(dir, release);
      started.push(job.pid);
      const r = await cptrst(['checkpoint', String(job.pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${job.pid}, fd 0 \\(/dev/pts/\\d+\\): .*terminal the tree runs on.*/dev/pts/\\d+.*--shell-job`));
      fs.writeFileSync(job.trig, '');
      expect(await waitGone(job.pid, 10000, { zombieOk: true })).to.equal(true);
      expect(parseResult(fs.readFileSync(job.result, 'utf8')).verdict).to.equal('PASS shelljob');
      fs.writeFileSync(release, '');
    });

    it('the shelljob workload fails when its state is tampered with', async () => {
      const dir = makeTempDir('shelljob-tamper');
      const release = path.join(dir, 'release');
      const job = await startJob(dir, release, { CPT_TAMPER: '1' });
      started.push(job.pid);
      fs.writeFileSync(job.trig, '');
      expect(await waitGone(job.pid, 10000, { zombieOk: true })).to.equal(true);
      expect(parseResult(fs.readFileSync(job.result, 'utf8')).verdict).to.match(/^FAIL shelljob: foreground: 1, was 0/);
      fs.writeFileSync(release, '');
    });

    it('--shell-job: restarted as a job of another shell\'s terminal, in the foreground; without --shell-job the restart is refused', async () => {
      const dir = makeTempDir('shelljob');
      const release = path.join(dir, 'release');
      const job = await startJob(dir, release);
      const img = path.join(dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(job.pid), '-o', img, '--kill', '--shell-job']);
      expect(ck.code, ck.stderr).to.equal(0);
      expect(await waitGone(job.pid, 10000)).to.equal(true);
      fs.writeFileSync(release, '');
      const plain = await cptrst(['restart', img]);
      expect(plain.code).to.equal(1);
      expect(plain.stderr).to.match(/--shell-job/);
      // cptrst restart, itself a job of a new shell on a new terminal.
      const release2 = path.join(dir, 'release2');
      const out = path.join(dir, 'restart.out');
      const ofd = fs.openSync(out, 'a');
      const shell = spawn('python3', [PTYRUN, release2, process.execPath, CLI_MAIN, 'restart', img, '--shell-job'], { stdio: ['ignore', ofd, ofd] });
      fs.closeSync(ofd);
      started.push(shell.pid!);
      try {
        for (let i = 0; i < 1000 && !fs.existsSync(`/proc/${job.pid}`); i++) await sleep(10);
        for (let i = 0; i < 1000 && !/^\d+$/m.test(fs.readFileSync(out, 'utf8')); i++) await sleep(10);
        expect(fs.readFileSync(out, 'utf8'), 'restart output').to.match(new RegExp(`^${job.pid}$`, 'm'));
        started.push(job.pid);
        fs.writeFileSync(job.trig, '');
        expect(await waitGone(job.pid, 10000, { zombieOk: true })).to.equal(true);
        expect(parseResult(fs.readFileSync(job.result, 'utf8')).verdict).to.equal('PASS shelljob');
      } finally {
        fs.writeFileSync(release2, '');
      }
    });
  });
});
