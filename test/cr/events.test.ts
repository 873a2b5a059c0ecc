/**
 * Event files through checkpoint, kill and restart: eventfd, epoll, signalfd, timerfd and inotify
 * workloads check their own state after the restart (and fail when they corrupt it themselves,
 * CPT_TAMPER=1, also after a restart). What cannot be restored faithfully is refused at checkpoint,
 * naming the fd, and the process runs on as it was: inotify events queued and not read, fanotify
 * marks with permission events.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import { CheckpointFlags, CptError, loadModule, sys_checkpoint } from '@cptrst/core';
import * as fs from 'fs';
import * as path from 'path';
import {
  Workload, binaryPath, buildWorkloads, cptrst, killStartedWorkloads, makeTempDir, makeWorldDir, parseResult, passLines, procState,
  recodeImage, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
const NOBODY = { uid: 65534, gid: 65534 };

interface Case {
  name: string;
  args?: (dir: string) => string[];
  /** Needs root (fanotify_init: CAP_SYS_ADMIN): not run as nobody. */
  rootOnly?: boolean;
}
const CASES: Case[] = [
  { name: 'eventfd' },
  { name: 'epoll' },
  { name: 'signalfd' },
  { name: 'timerfd' },
  { name: 'inotify', args: (dir) => [dir] },
  { name: 'inotifydel', args: (dir) => [dir] },
  { name: 'fanotify', args: (dir) => [dir], rootOnly: true },
  { name: 'fanotifymarks', args: (dir) => [dir], rootOnly: true },
];

async function checkpointRestart(w: Workload): Promise<void> {
  const img = path.join(w.dir, `${w.name}.cpt`);
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
  expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
  await w.exited;
  expect(await waitGone(w.pid, 5000, { zombieOk: false })).to.equal(true);
  const rs = await cptrst(['restart', img]);
  expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
  expect(rs.stdout.trim()).to.equal(String(w.pid));
  const st = await procState(w.pid);
  expect(st?.tracerPid).to.equal(0);
}

/** Processes started here as nobody, outside the harness: ended by PID after each test. */
const mine = new Set<number>();

/** A workload run as nobody from a world-reachable directory of its own (binary copied there, files nobody's). */
async function startAsNobody(name: string, args: string[], dir: string): Promise<Workload> {
  fs.chownSync(dir, NOBODY.uid, NOBODY.gid);
  const bin = path.join(dir, name);
  fs.copyFileSync(binaryPath(name), bin);
  fs.chmodSync(bin, 0o755);
  const resultPath = path.join(dir, `${name}.result`);
  const triggerPath = path.join(dir, `${name}.trigger`);
  const fd = fs.openSync(resultPath, 'a', 0o644);
  fs.fchownSync(fd, NOBODY.uid, NOBODY.gid);
  let child: ChildProcess;
  try {
    child = spawn(bin, [triggerPath, ...args], { uid: NOBODY.uid, gid: NOBODY.gid, cwd: dir, stdio: ['ignore', fd, fd], detached: true });
  } finally {
    fs.closeSync(fd);
  }
  const exited = new Promise<Awaited<Workload['exited']>>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  for (let i = 0; i < 1000 && !/^READY \d+\n/.test(fs.readFileSync(resultPath, 'utf8')); i++) await sleep(10);
  expect(fs.readFileSync(resultPath, 'utf8')).to.equal(`READY ${child.pid}\n`);
  return { name, args, pid: child.pid!, dir, triggerPath, resultPath, child, exited };
}

async function expectRunningUntouched(w: Workload): Promise<void> {
  const st = await procState(w.pid);
  expect(st?.state).to.match(/^[RS]$/);
  expect(st?.tracerPid).to.equal(0);
}

describe('event files: checkpoint, kill, restart', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(async () => {
    for (const pid of mine) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    mine.clear();
    await killStartedWorkloads();
  });

  for (const c of CASES) {
    it(`${c.name}: the workload finds its state again`, async () => {
      const dir = makeTempDir(c.name);
      const w = await startWorkload(c.name, c.args?.(dir) ?? [], { dir });
      await sleep(200);
      await checkpointRestart(w);
      await trigger(w);
      const text = await waitResult(w, 30000);
      expect(passLines(w.name, w.args), text).to.include(parseResult(text).verdict);
    });

    it(`${c.name}: CPT_TAMPER=1 still fails after the restart`, async () => {
      const dir = makeTempDir(c.name);
      const w = await startWorkload(c.name, c.args?.(dir) ?? [], { dir, env: { CPT_TAMPER: '1' } });
      await checkpointRestart(w);
      await trigger(w);
      const text = await waitResult(w, 30000);
      expect(parseResult(text).verdict, text).to.match(new RegExp(`^FAIL ${c.name}: `));
    });
  }

  for (const c of CASES) {
    it(`${c.name}: a checkpoint that fails once everything is read leaves the process as it was`, async () => {
      const dir = makeTempDir(c.name);
      const w = await startWorkload(c.name, c.args?.(dir) ?? [], { dir });
      await sleep(200);
      const img = path.join(w.dir, 'failed.cpt');
      const fd = fs.openSync(img, 'w');
      const abort = new AbortController();
      let err: unknown;
      try {
        // Every handler has dumped (the event files were read, timers asked their time): fail now.
        await sys_checkpoint(w.pid, fd, CheckpointFlags.KILL, {
          signal: abort.signal,
          onProgress: (e) => {
            if (e.phase === 'dumped') abort.abort();
          },
        });
      } catch (e) {
        err = e;
      } finally {
        fs.closeSync(fd);
      }
      expect(err).to.be.instanceOf(CptError);
      expect((err as CptError).code).to.equal('EINTR');
      expect(fs.statSync(img).size, 'partial image not cut off').to.equal(0);
      await expectRunningUntouched(w);
      await trigger(w);
      const text = await waitResult(w, 30000);
      expect(passLines(w.name, w.args), text).to.include(parseResult(text).verdict);
    });
  }

  for (const c of CASES.filter((x) => !x.rootOnly)) {
    it(`${c.name}: as nobody, from an image nobody owns (restored with nobody's rights)`, async () => {
      const dir = makeWorldDir(`${c.name}-nobody`);
      const w = await startAsNobody(c.name, c.args?.(dir) ?? [], dir);
      mine.add(w.pid);
      await sleep(200);
      const img = path.join(dir, 'image.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      fs.chownSync(img, NOBODY.uid, NOBODY.gid);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
      expect(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8')).to.match(new RegExp(`\\nUid:\\t${NOBODY.uid}\\t`));
      await trigger(w);
      const text = await waitResult(w, 30000);
      expect(passLines(w.name, w.args), text).to.include(parseResult(text).verdict);
    });
  }

  // Crafted images: each record of an event file is checked before it is used (EBADIMG), and the
  // half-made process goes; the untouched image then restores.
  const CRAFTED: { name: string; args?: (dir: string) => string[]; record: string; edit: (o: Record<string, unknown>) => void; why: RegExp }[] = [
    { name: 'eventfd', record: 'eventfd', edit: (o) => { o.count = 0xffffffffffffffffn; }, why: /EBADIMG: .*eventfd: counter 0xffffffffffffffff is above/ },
    { name: 'epoll', record: 'epoll-target', edit: (o) => { o.fd = 999; }, why: /EBADIMG: .*epoll: a target's fd 999 is not among the task's fds/ },
    { name: 'signalfd', record: 'signalfd', edit: (o) => { o.mask = 1n << 8n; }, why: /EBADIMG: .*signalfd: its mask 0x100 holds SIGKILL or SIGSTOP/ },
    { name: 'timerfd', record: 'timerfd', edit: (o) => { o.clockid = 8; }, why: /EBADIMG: .*timerfd: clock 8 is not one a restored timerfd may use/ },
    { name: 'inotify', args: (dir) => [dir], record: 'inotify-watch', edit: (o) => { o.path = `${String(o.path)}/../../etc`; }, why: /EBADIMG: .*"\.\." component/ },
    { name: 'fanotifymarks', args: (dir) => [dir], record: 'fanotify-mark', edit: (o) => { o.mask = 0x10000; }, why: /EBADIMG: .*fanotify: a mark on \/.* has the masks 0x10000/ },
    { name: 'inotifydel', args: (dir) => [dir], record: 'inotify-watch', edit: (o) => { o.fd = 5; }, why: /EBADIMG: .*watch 1 on a deleted file is through fd 5, which is not one of the task's deleted files/ },
  ];
  for (const c of CRAFTED) {
    it(`${c.name}: a crafted ${c.record} record is refused at restart, and nothing is left half-made`, async () => {
      const dir = makeTempDir(c.name);
      const w = await startWorkload(c.name, c.args?.(dir) ?? [], { dir });
      await sleep(200);
      const img = path.join(w.dir, 'good.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      const bad = path.join(w.dir, 'crafted.cpt');
      let edited = 0;
      recodeImage(img, bad, {
        records: (recs) => {
          for (const { name, obj } of recs) if (name === c.record && edited++ === 0) c.edit(obj);
          return recs;
        },
      });
      expect(edited, `no ${c.record} record in the image`).to.be.greaterThan(0);
      const r = await cptrst(['restart', bad]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(c.why);
      expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await trigger(w);
      const text = await waitResult(w, 30000);
      expect(passLines(w.name, w.args), text).to.include(parseResult(text).verdict);
    });
  }

  it('inotify with events queued and not read: refused naming the fd, and the process runs on with its events', async () => {
    const dir = makeTempDir('inotify');
    const w = await startWorkload('inotify', [dir], { dir });
    fs.writeFileSync(path.join(w.dir, 'watched', 'queued'), 'x');
    const before = fs.readFileSync(`/proc/${w.pid}/fdinfo/40`, 'utf8');
    const img = path.join(w.dir, 'refused.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE);
    expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, fd 40 \\(anon_inode:inotify\\): \\d+ bytes of inotify events are queued and not read`));
    expect(fs.existsSync(img), 'partial image left').to.equal(false);
    await expectRunningUntouched(w);
    expect(fs.readFileSync(`/proc/${w.pid}/fdinfo/40`, 'utf8')).to.equal(before);
  });

  it('fanotify with a permission-event mark: refused naming the fd and the mark, and the process runs on', async function () {
    // A python3 process holding a fanotify group (root only) with a FAN_OPEN_PERM mark on a file, through ctypes.
    const dir = makeTempDir('fanotify');
    const out = path.join(dir, 'out');
    const fd = fs.openSync(out, 'a');
    const py = spawn('python3', ['-c', [
      'import ctypes, os, sys, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'fd = libc.fanotify_init(0x4, os.O_RDONLY)',
      'if fd < 0: print("NOFAN", ctypes.get_errno(), flush=True); sys.exit(0)',
      `open("${dir}/perm", "w").close()`,
      `if libc.fanotify_mark(fd, 1, ctypes.c_uint64(0x10000), -100, b"${dir}/perm") != 0: print("NOMARK", ctypes.get_errno(), flush=True); sys.exit(0)`,
      'os.dup2(fd, 40); os.close(fd)',
      'print("READY", flush=True)',
      'time.sleep(60)',
    ].join('\n')], { stdio: ['ignore', fd, fd], detached: true });
    fs.closeSync(fd);
    const pid = py.pid!;
    try {
      for (let i = 0; i < 500 && fs.readFileSync(out, 'utf8') === ''; i++) await sleep(10);
      const line = fs.readFileSync(out, 'utf8');
      if (line.startsWith('NOFAN')) this.skip();
      expect(line).to.equal('READY\n');
      const img = path.join(dir, 'refused.cpt');
      const r = await cptrst(['checkpoint', String(pid), '-o', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE);
      expect(r.stderr.trim()).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, fd 40 \\(anon_inode:\\[fanotify\\]\\): its mark on inode \\d+ asks for permission events \\(0x10000\\); a request read and not answered yet could not be restored$`));
      expect(fs.existsSync(img)).to.equal(false);
      const st = await procState(pid);
      expect(st?.state).to.match(/^[RS]$/);
      expect(st?.tracerPid).to.equal(0);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });
});
