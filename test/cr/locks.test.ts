/**
 * File locks, leases and I/O owners through checkpoint and restart: still held by the same owner
 * (the process for POSIX locks, the open file description for the others); a conflicting lock
 * that another process took in the meantime makes the restart fail cleanly, never taken over.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { linux, loadModule } from '@cptrst/core';
import {
  buildWorkloads, checkpointKill, cptrst, editedObject, expectPass, killByPid, killStartedWorkloads, makeTempDir, procState, recodeImage,
  sleep, startWorkload, trigger, waitGone,
} from '../support';

/** The locks /proc/locks gives to `pid`, without their ordinal: kind, mode, access, inode and range. */
const locksOf = (pid: number): string[] =>
  fs.readFileSync('/proc/locks', 'utf8').split('\n').map((l) => l.replace(/^\d+:\s+/, '').split(/\s+/))
    .filter((f) => f.length >= 7 && f[0] !== '->' && (f[3] === String(pid) || f[3] === '-1')).map((f) => [f[0], f[1], f[2], f[4], f[5], f[6]].join(' ')).sort();

describe('file locks', function () {
  this.timeout(120000);
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  it('flock, POSIX and OFD locks, a lease and an I/O owner are held again by the same owners', async () => {
    const w = await startWorkload('locks', [makeTempDir('locks')]);
    const before = locksOf(w.pid);
    expect(before.filter((l) => l.startsWith('POSIX'))).to.have.length(3);
    expect(before.filter((l) => l.startsWith('OFDLCK'))).to.have.length(2);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    expect(locksOf(w.pid)).to.deep.equal(before);
    await trigger(w);
    await expectPass(w);
  });

  for (const mode of ['flock', 'posix', 'ofd', 'lease', 'setown', 'setsig']) {
    it(`fdstate ${mode}: still there after a restart`, async () => {
      const w = await startWorkload('fdstate', [makeTempDir('fdstate'), mode]);
      const img = path.join(w.dir, 'image.cpt');
      await checkpointKill(w, img);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      await trigger(w);
      await expectPass(w);
    });
  }

  it('leases being broken (read and write, toward read and toward unlocked) are broken again, with no second signal (zdtm file_lease02)', async () => {
    const w = await startWorkload('leasebreak', [makeTempDir('leasebreak')]);
    const before = locksOf(w.pid);
    expect(before.filter((l) => l.startsWith('LEASE BREAKING'))).to.have.length(4);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(locksOf(w.pid)).to.deep.equal(before);
    await trigger(w);
    await expectPass(w);
  });

  it('a checkpoint that fails once everything was read leaves leases being broken as they were, and sends no signal', async () => {
    const w = await startWorkload('leasebreak', [makeTempDir('leasebreak')]);
    const before = locksOf(w.pid);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/full']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/ENOSPC/);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    expect(locksOf(w.pid)).to.deep.equal(before);
    await trigger(w);
    await expectPass(w); // it counts its break signals: none more than before
  });

  it('an image whose lease break is impossible (toward read from a read lease, an unknown target, on a flock) is refused (EBADIMG), leaving nothing behind', async () => {
    const w = await startWorkload('leasebreak', [makeTempDir('leasebreak')]);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    const edits: Array<[string, (o: Record<string, unknown>) => Record<string, unknown> | undefined]> = [
      ['toward read from a read lease', (o) => (o.breakTo === linux.F.UNLCK && o.type === linux.F.RDLCK ? { breakTo: linux.F.RDLCK } : undefined)],
      ['an unknown target', (o) => (o.breakTo === linux.F.UNLCK ? { breakTo: 7 } : undefined)],
      ['a flock being broken', (o) => (o.breakTo === linux.F.UNLCK ? { kind: 'FLOCK' } : undefined)],
    ];
    for (const [what, edit] of edits) {
      const bad = path.join(w.dir, 'bad.cpt');
      let edited = 0;
      recodeImage(img, bad, {
        records: (recs) => recs.map((r) => {
          const ch = r.name === 'file-lock' && edited === 0 ? edit(r.obj) : undefined;
          if (!ch) return r;
          edited++;
          return { ...r, obj: editedObject(r.obj, ch) };
        }),
      });
      expect(edited, what).to.equal(1);
      const rs = await cptrst(['restart', bad]);
      expect(rs.code, what).to.equal(1);
      expect(rs.stderr, what).to.match(/^cptrst: EBADIMG: .*file lock on fd \d+/);
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind (${what})`).to.equal(true);
    }
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('a lease being broken by a blocked open of a child of the tree: the open waits again after the restart and completes when the lease is let go', async () => {
    const dir = makeTempDir('leasewait');
    const result = path.join(dir, 'result');
    const trig = path.join(dir, 'trigger');
    const script = [
      'import fcntl, os, signal, sys, time',
      'f, res, trig = sys.argv[1], sys.argv[2], sys.argv[3]',
      'got = []',
      'signal.signal(signal.SIGIO, lambda s, fr: got.append(s))',
      'fd = os.open(f, os.O_RDONLY | os.O_CREAT, 0o644)',
      'fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)  # F_SETLEASE',
      'pid = os.fork()',
      'if pid == 0:',
      '    os.close(fd)',
      '    os.open(f, os.O_RDONLY)  # blocks until the lease is downgraded',
      '    os._exit(0 if os.path.exists(trig) else 5)',
      'out = os.open(res, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)',
      'while fcntl.fcntl(fd, 1025) != fcntl.F_RDLCK: time.sleep(0.01)  # F_GETLEASE: the child broke it',
      "os.write(out, b'READY\\n')",
      'while not os.path.exists(trig): time.sleep(0.02)',
      'ok = fcntl.fcntl(fd, 1025) == fcntl.F_RDLCK and got == [signal.SIGIO]',
      'fcntl.fcntl(fd, 1024, fcntl.F_RDLCK)  # lets go: the child\'s open completes',
      '_, st = os.waitpid(pid, 0)',
      "os.write(out, b'PASS\\n' if ok and st == 0 else f'FAIL {got} {st}\\n'.encode())",
    ].join('\n');
    const parent = spawn('python3', ['-c', script, path.join(dir, 'f'), result, trig], { stdio: 'ignore', detached: true });
    const exited = new Promise<void>((resolve) => parent.once('exit', () => resolve()));
    const text = (): string => (fs.existsSync(result) ? fs.readFileSync(result, 'utf8') : '');
    try {
      for (let i = 0; i < 200 && !text().includes('READY'); i++) await sleep(25);
      await sleep(200); // the child is in its open
      const before = locksOf(parent.pid!);
      expect(before.filter((l) => l.startsWith('LEASE BREAKING READ'))).to.have.length(1);
      const img = path.join(dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(parent.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await exited;
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      expect(locksOf(parent.pid!)).to.deep.equal(before);
      await sleep(200);
      expect(text()).to.equal('READY\n'); // the child still waits
      fs.writeFileSync(trig, '');
      for (let i = 0; i < 200 && !/PASS|FAIL/.test(text()); i++) await sleep(25);
      expect(text()).to.equal('READY\nPASS\n');
    } finally {
      try {
        process.kill(-parent.pid!, 'SIGKILL'); // its process group: the python parent and child, by PID
      } catch {
        /* gone */
      }
    }
  });

  it('a lease being broken next to another lease on the same file is refused, naming the fd; the process goes on as it was', async () => {
    const dir = makeTempDir('leasetwo');
    const file = path.join(dir, 'f');
    const ready = path.join(dir, 'ready');
    // two read leases on one file (two descriptions), both broken by one open for writing
    const script = [
      'import fcntl, os, signal, sys, time',
      'signal.signal(signal.SIGIO, signal.SIG_IGN)',
      `a = os.open(${JSON.stringify(file)}, os.O_RDONLY | os.O_CREAT, 0o644)`,
      `b = os.open(${JSON.stringify(file)}, os.O_RDONLY)`,
      'for fd in (a, b): fcntl.fcntl(fd, 1024, fcntl.F_RDLCK)  # F_SETLEASE',
      'try:',
      `    os.open(${JSON.stringify(file)}, os.O_WRONLY | os.O_NONBLOCK); sys.exit(3)`,
      'except BlockingIOError:',
      '    pass',
      `open(${JSON.stringify(ready)}, 'w').close()`,
      'time.sleep(120)',
    ].join('\n');
    const p = spawn('python3', ['-c', script], { stdio: 'ignore', detached: true });
    try {
      for (let i = 0; i < 200 && !fs.existsSync(ready); i++) await sleep(25);
      const before = locksOf(p.pid!);
      expect(before.filter((l) => l.startsWith('LEASE BREAKING UNLCK'))).to.have.length(2);
      const ck = await cptrst(['checkpoint', String(p.pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
      expect(ck.code).to.equal(1);
      expect(ck.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${p.pid}, fd \\d+ \\(`));
      expect(ck.stderr).to.include(`(${file}): its lease is being broken and 1 other lease(s) are held on the same file`);
      expect((await procState(p.pid!))?.tracerPid).to.equal(0);
      expect(locksOf(p.pid!)).to.deep.equal(before);
    } finally {
      try {
        process.kill(p.pid!, 'SIGKILL'); // the python process, by PID
      } catch {
        /* gone */
      }
    }
  });

  it('a flock taken by a parent that closed its fd after forking is held by the child\'s description again (zdtm file_locks03)', async () => {
    const dir = makeTempDir('flockchild');
    const file = path.join(dir, 'f');
    // the parent locks, forks, and closes its fd: only the child's inherited description holds the lock
    const script = [
      'import fcntl, os, time',
      `fd = os.open(${JSON.stringify(file)}, os.O_RDWR | os.O_CREAT, 0o600)`,
      'fcntl.flock(fd, fcntl.LOCK_EX)',
      'if os.fork() == 0:',
      '    time.sleep(120); os._exit(0)',
      'os.close(fd)',
      'time.sleep(120)',
    ].join('\n');
    const parent = spawn('python3', ['-c', script], { stdio: 'ignore', detached: true });
    const exited = new Promise<void>((resolve) => parent.once('exit', () => resolve()));
    const held = (): boolean => {
      try {
        execFileSync('python3', ['-c', `import fcntl, os; fcntl.flock(os.open(${JSON.stringify(file)}, os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)`], { stdio: 'ignore' });
        return false;
      } catch {
        return true;
      }
    };
    try {
      await sleep(700);
      expect(held(), 'the lock before the checkpoint').to.equal(true);
      const img = path.join(dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(parent.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await exited;
      expect(held(), 'the lock with the tree gone').to.equal(false);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      expect(held(), 'the lock after the restart').to.equal(true);
      const kids = fs.readFileSync(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
      expect(kids).to.have.length(1);
      const fds = fs.readdirSync(`/proc/${kids[0]}/fd`).map(Number);
      const lockedFd = fds.find((fd) => fs.readFileSync(`/proc/${kids[0]}/fdinfo/${fd}`, 'utf8').split('\n').some((l) => /^lock:.*FLOCK\s+ADVISORY\s+WRITE/.test(l)));
      expect(lockedFd, "the child's description holds the flock").to.not.equal(undefined);
    } finally {
      try {
        process.kill(-parent.pid!, 'SIGKILL'); // its process group: the python parent and child, by PID
      } catch {
        /* gone */
      }
    }
  });

  it('signal-driven I/O on a pipe shared with a child that owns one end (O_ASYNC, F_SETOWN to the child) comes back (zdtm file_fown)', async () => {
    const dir = makeTempDir('fown');
    const result = path.join(dir, 'result');
    const trig = path.join(dir, 'trigger');
    const script = [
      'import fcntl, os, signal, sys, time',
      'res, trig = sys.argv[1], sys.argv[2]',
      'r, w = os.pipe()',
      'got = []',
      'signal.signal(signal.SIGIO, lambda s, f: got.append(s))',
      'for fd in (r, w):',
      '    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())',
      '    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)',
      'pid = os.fork()',
      'if pid == 0:',
      '    fcntl.fcntl(w, fcntl.F_SETOWN, os.getpid())  # the shared write end is the child\'s now',
      '    while not os.path.exists(trig): time.sleep(0.02)',
      '    os._exit(0)',
      'out = os.open(res, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)',
      "os.write(out, b'READY\\n')",
      'while not os.path.exists(trig): time.sleep(0.02)',
      'ok = fcntl.fcntl(r, fcntl.F_GETOWN) == os.getpid() and fcntl.fcntl(w, fcntl.F_GETOWN) == pid',
      'ok = ok and all(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ASYNC for fd in (r, w))',
      "os.write(w, b'x'); time.sleep(0.3)  # data for the read end: SIGIO to its owner",
      'ok = ok and signal.SIGIO in got',
      'os.waitpid(pid, 0)',
      "os.write(out, b'PASS\\n' if ok else b'FAIL\\n')",
    ].join('\n');
    const parent = spawn('python3', ['-c', script, result, trig], { stdio: 'ignore', detached: true });
    const exited = new Promise<void>((resolve) => parent.once('exit', () => resolve()));
    const text = (): string => (fs.existsSync(result) ? fs.readFileSync(result, 'utf8') : '');
    try {
      for (let i = 0; i < 200 && !text().includes('READY'); i++) await sleep(25);
      const img = path.join(dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(parent.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await exited;
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      fs.writeFileSync(trig, '');
      for (let i = 0; i < 200 && !/PASS|FAIL/.test(text()); i++) await sleep(25);
      expect(text()).to.equal('READY\nPASS\n');
    } finally {
      try {
        process.kill(-parent.pid!, 'SIGKILL'); // its process group: the python parent and child, by PID
      } catch {
        /* gone */
      }
    }
  });

  it('a lock another process took since the checkpoint is not taken over: the restart fails cleanly, and works once it is gone', async () => {
    const dir = makeTempDir('locks');
    const w = await startWorkload('locks', [dir]);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    // Another process takes the flock of `a` (the original's went with it).
    const holder = spawn('flock', ['-x', '-o', path.join(dir, 'a'), 'sleep', '60'], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !fs.readFileSync('/proc/locks', 'utf8').split('\n').some((l) => l.includes(` ${holder.pid} `)); i++) await sleep(20);
    await sleep(100);
    try {
      const rs = await cptrst(['restart', img]);
      expect(rs.code).to.equal(1);
      expect(rs.stderr).to.match(new RegExp(`^cptrst: (EAGAIN|EWOULDBLOCK): pid ${w.pid}, fd 10: a flock\\(\\) lock \\(write\\): .*not taken over`));
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    } finally {
      await killByPid(holder.pid!);
    }
    await waitGone(holder.pid!, 5000);
    const ok = await cptrst(['restart', img]);
    expect(ok.code, ok.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('a checkpoint that fails once everything was read (ENOSPC on /dev/full) leaves the process running: its locks, lease and owner are as they were', async () => {
    const w = await startWorkload('locks', [makeTempDir('locks')]);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/full']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/ENOSPC/);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });
});
