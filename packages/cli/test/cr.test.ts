/**
 * Checkpoint and restart through the command line, on a real process: the file and stdout/stdin
 * paths, the one-line refusal of what cannot be checkpointed, and the cleanup of a partial image.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { cptrst, tmpDir } from './helpers';

const NO_STACK = /^\s+at /m;

function hasPython(): boolean {
  return spawnSync('python3', ['-c', 'pass']).status === 0;
}

/**
 * Starts `sleep 1000` as a session leader with fds 0-2 on /dev/null and nothing else open (the
 * test runner may have leaked descriptors cptrst would refuse), orphaned so init reaps it.
 */
function startSleeper(): number {
  const py = [
    'import os',
    'pid = os.fork()',
    'if pid == 0:',
    '    os.closerange(3, 65536)',
    '    os.setsid()',
    "    fd = os.open('/dev/null', os.O_RDWR)",
    '    for i in (0, 1, 2): os.dup2(fd, i)',
    "    os.execvp('sleep', ['sleep', '1000'])",
    'print(pid)',
  ].join('\n');
  const r = spawnSync('python3', ['-c', py], { encoding: 'utf8' });
  const pid = Number(r.stdout.trim());
  if (!(pid > 0)) throw new Error(`could not start sleep: ${r.stderr}`);
  // Wait until it runs sleep (not python any more).
  for (let i = 0; i < 200; i++) {
    try {
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep') return pid;
    } catch {
      /* not yet */
    }
    spawnSync('sleep', ['0.01']);
  }
  throw new Error('sleep did not start');
}

function state(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

function killQuietly(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

describe('cptrst checkpoint / restart', function () {
  this.timeout(120000);
  let dir: string;
  const started: number[] = [];
  before(function () {
    if (!hasPython()) this.skip();
    dir = tmpDir();
  });
  after(() => {
    for (const pid of started) killQuietly(pid);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a process with a pipe on stdout in one line, leaves no file, and leaves the process running', () => {
    const child = spawn('sleep', ['1000'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const pid = child.pid as number;
    started.push(pid);
    try {
      const img = path.join(dir, 'refused.img');
      const r = cptrst(['checkpoint', String(pid), '-o', img]);
      expect(r.status, r.stderr).to.equal(1);
      expect(r.errLines, r.stderr).to.have.length(1);
      expect(r.errLines[0]).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, `));
      expect(r.stderr).not.to.match(NO_STACK);
      expect(fs.existsSync(img)).to.equal(false);
      expect(state(pid)).to.match(/^[RS]$/); // running (R while it gets back into its sleep)
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a process that does not exist: ESRCH, no file left behind; --json puts the error on stdout', () => {
    const img = path.join(dir, 'nothing.img');
    const r = cptrst(['checkpoint', '4194000', '-o', img, '--json']);
    expect(r.status).to.equal(1);
    expect(JSON.parse(r.stdout).error).to.include({ code: 'ESRCH', pid: 4194000 });
    expect(fs.existsSync(img)).to.equal(false);
  });

  it('checkpoint -o FILE --kill, show, restart FILE --pidfile: the same PID runs again', () => {
    const pid = startSleeper();
    started.push(pid);
    const img = path.join(dir, 'sleep.img');
    const c = cptrst(['checkpoint', String(pid), '-o', img, '--kill', '--json']);
    expect(c.status, c.stderr + c.stdout).to.equal(0);
    const res = JSON.parse(c.stdout);
    expect(res).to.include({ pid, process: 'killed' });
    expect(res.bytes).to.equal(fs.statSync(img).size);
    expect(fs.statSync(img).mode & 0o777).to.equal(0o600);

    const s = cptrst(['show', '--json', img]);
    expect(s.status, s.stderr).to.equal(0);
    expect(JSON.parse(s.stdout).summary.byType.task).to.equal(1);

    const pidfile = path.join(dir, 'sleep.pid');
    const r = cptrst(['restart', img, '--pidfile', pidfile]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal(String(pid));
    expect(fs.readFileSync(pidfile, 'utf8').trim()).to.equal(String(pid));
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]).to.equal('sleep');
    expect(state(pid)).to.match(/^[RS]$/); // running (R while it gets back into its sleep)
    killQuietly(pid);
  });

  it('-o - writes the image to stdout and restart - reads it from stdin; --leave-stopped', () => {
    const pid = startSleeper();
    started.push(pid);
    const img = path.join(dir, 'stdout.img');
    const main = path.resolve(__dirname, '..', 'src', 'main.js');
    const c = spawnSync('bash', ['-c', `"${process.execPath}" "${main}" checkpoint ${pid} -o - --kill --json > "${img}"`], { encoding: 'utf8' });
    expect(c.status, c.stderr).to.equal(0);
    // The summary goes to stderr as JSON, since stdout carries the image.
    expect(JSON.parse(c.stderr.trim().split('\n').pop() as string)).to.include({ pid, process: 'killed' });
    expect(fs.readFileSync(img).subarray(0, 6).toString('latin1')).to.equal('CPTRST');

    const r = cptrst(['restart', '-', '--leave-stopped', '--json'], { input: fs.readFileSync(img) });
    expect(r.status, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.include({ pid, process: 'stopped' });
    expect(state(pid)).to.equal('T');
    killQuietly(pid);
  });
});
