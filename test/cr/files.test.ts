/**
 * Files at restart, as an attacker or an accident would have them: a user's process holding a
 * deleted setuid file (checkpointed and restarted by root), a user swapping a checkpointed file
 * for a symlink, crafted images (a root-only file in a user's image, ".." in a deleted file's
 * path), a sparse deleted file, restarts killed at many moments, and the fd state that is refused
 * at checkpoint (locks, lease, I/O owners).
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  CLI_MAIN, Workload, binaryPath, buildWorkloads, cptrst, killByPid, killStartedWorkloads, makeTempDir, parseResult, passLines,
  expectRunningUntraced, procState, recodeImage, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
const NOBODY = 65534;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;

/** Directories outside the checkout (which may be mode 700), removed after each test. */
const outside: string[] = [];
/** Processes started here, not through the workload harness: ended by PID after each test. */
const mine = new Set<number>();

function outsideDir(prefix: string, owner?: number): string {
  const d = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), `cptrst-${prefix}-`)));
  outside.push(d);
  if (owner !== undefined) {
    fs.chownSync(d, owner, owner);
    fs.chmodSync(d, 0o755);
  }
  return d;
}

interface UserWorkload {
  pid: number;
  dir: string;
  triggerPath: string;
  resultPath: string;
  exited: Promise<void>;
  child: ChildProcess;
}

/**
 * Runs the ghost workload as `uid` from a world-traversable directory of that user's own (the
 * binary copied there, result and trigger files there, owned by the user).
 */
async function startAsUser(uid: number, args: string[] = []): Promise<UserWorkload> {
  const dir = outsideDir('user', uid);
  const bin = path.join(dir, 'ghost');
  fs.copyFileSync(binaryPath('ghost'), bin);
  fs.chmodSync(bin, 0o755);
  const resultPath = path.join(dir, 'result');
  const triggerPath = path.join(dir, 'trigger');
  const fd = fs.openSync(resultPath, 'a', 0o644);
  fs.fchownSync(fd, uid, uid);
  let child: ChildProcess;
  try {
    child = spawn(bin, [triggerPath, dir, ...args], { uid, gid: uid, cwd: dir, stdio: ['ignore', fd, fd], detached: true });
  } finally {
    fs.closeSync(fd);
  }
  child.unref();
  const pid = child.pid!;
  mine.add(pid);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (let i = 0; i < 1000 && !/^READY \d+\n/.test(fs.readFileSync(resultPath, 'utf8')); i++) await sleep(10);
  expect(fs.readFileSync(resultPath, 'utf8')).to.equal(`READY ${pid}\n`);
  return { pid, dir, triggerPath, resultPath, exited, child };
}

async function checkpointKill(pid: number, img: string, exited: Promise<unknown>): Promise<void> {
  const ck = await cptrst(['checkpoint', String(pid), '-o', img, '--kill']);
  expect(ck.code, ck.stderr).to.equal(0);
  await exited;
}

async function expectUserPass(w: UserWorkload): Promise<void> {
  fs.writeFileSync(w.triggerPath, '');
  expect(await waitGone(w.pid, 20000, { zombieOk: true })).to.equal(true);
  expect(fs.readFileSync(w.resultPath, 'utf8')).to.equal(`READY ${w.pid}\nPASS ghost\n`);
}

/** A file only root may read: 0600, in a 0700 directory of root's. */
function rootOnlyFile(): string {
  const d = outsideDir('secret');
  fs.chmodSync(d, 0o700);
  const p = path.join(d, 'secret');
  fs.writeFileSync(p, 'root only\n', { mode: 0o600 });
  return p;
}

const sorted = (d: string): string[] => fs.readdirSync(d).sort();

describe('files at restart: deleted files, swapped files, crafted images', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module'); // the layouts of every object, to decode and encode images here
    await buildWorkloads();
  });
  afterEach(async () => {
    for (const pid of mine) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitGone(pid, 5000, { zombieOk: true });
    }
    mine.clear();
    await killStartedWorkloads();
    for (const d of outside.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it("a user's deleted setuid file, checkpointed and restarted by root: no setuid bit, the user's, its contents, and never a name on disk", async () => {
    const w = await startAsUser(NOBODY);
    const st0 = fs.statSync(`/proc/${w.pid}/fd/11`);
    expect(st0.mode & 0o7777, 'the workload made it setuid').to.equal(0o4755);
    expect(st0.uid).to.equal(NOBODY);
    const listing = sorted(w.dir);
    expect(listing).to.deep.equal(['data', 'ghost', 'result']);
    const img = path.join(makeTempDir('ghost-img'), 'i.cpt');
    await checkpointKill(w.pid, img, w.exited);

    // Watch the directory all through the restart: no new name may ever appear.
    const seen = new Set<string>();
    const watch = setInterval(() => {
      for (const n of fs.readdirSync(w.dir)) seen.add(n);
    }, 2);
    let rs;
    try {
      rs = await cptrst(['restart', img]);
    } finally {
      clearInterval(watch);
    }
    expect(rs.code, rs.stderr).to.equal(0);
    expect([...seen].sort()).to.deep.equal(listing);
    expect(sorted(w.dir)).to.deep.equal(listing);

    for (const fd of [11, 12]) {
      const st = fs.statSync(`/proc/${w.pid}/fd/${fd}`);
      expect(st.mode & (S_ISUID | S_ISGID), `fd ${fd}: setuid/setgid`).to.equal(0);
      expect(st.mode & 0o777).to.equal(0o755);
      expect([st.uid, st.gid, st.nlink, st.size]).to.deep.equal([NOBODY, NOBODY, 0, 5000]);
    }
    expect(fs.statSync(`/proc/${w.pid}/fd/11`).ino).to.equal(fs.statSync(`/proc/${w.pid}/fd/12`).ino);
    expect((await procState(w.pid))?.state).to.match(/^[RS]$/);
    expect(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8')).to.match(new RegExp(`\nUid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\n`));
    await expectUserPass(w); // contents, flags, offsets, one inode behind fds 11 and 12
    expect(sorted(w.dir)).to.deep.equal([...listing, 'trigger'].sort());
  });

  it('a user swaps a checkpointed file for a symlink to a root-only file: ELOOP, no process left', async () => {
    const w = await startAsUser(NOBODY);
    const img = path.join(makeTempDir('swap-img'), 'i.cpt');
    await checkpointKill(w.pid, img, w.exited);
    const secret = rootOnlyFile();
    // As the user, in the user's own directory.
    execFileSync('sh', ['-c', 'rm -f "$1/data" && ln -s "$2" "$1/data"', 'sh', w.dir, secret], { uid: NOBODY, gid: NOBODY });
    expect(fs.lstatSync(path.join(w.dir, 'data')).isSymbolicLink()).to.equal(true);
    const r = await cptrst(['restart', img]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE).and.match(/^cptrst: ELOOP: /).and.include(`${w.dir}/data`);
    expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
  });

  it("crafted images: a root-only file in a user's image is refused (EACCES, or EPERM while the task is not yet the user); '..' in a deleted file's path is EBADIMG", async () => {
    const w = await startAsUser(NOBODY);
    const imgDir = makeTempDir('crafted');
    const img = path.join(imgDir, 'i.cpt');
    await checkpointKill(w.pid, img, w.exited);

    // (a) fd 10 now names a root-only file, with that file's size, times, device and inode; the image is the user's.
    const secret = rootOnlyFile();
    const sst = fs.statSync(secret, { bigint: true });
    const rootOnly = path.join(w.dir, 'crafted-root-only.cpt');
    let edited = 0;
    recodeImage(img, rootOnly, {
      records: (recs) => {
        for (const { name, obj: o } of recs) {
          if (name === 'file' && o.path === `${w.dir}/data`) {
            Object.assign(o, { path: secret, size: sst.size, mtimeNs: sst.mtimeNs, atimeNs: sst.atimeNs, inode: sst.ino, dev: sst.dev, mode: Number(sst.mode), uid: 0, gid: 0 });
            edited++;
          }
        }
        return recs;
      },
    });
    expect(edited).to.equal(1);
    fs.chownSync(rootOnly, NOBODY, NOBODY);
    const listing = sorted(w.dir);
    const a = await cptrst(['restart', rootOnly]);
    expect(a.code).to.equal(1);
    expect(a.stderr).to.match(ONE_LINE).and.match(/^cptrst: (EACCES|EPERM): /);
    expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);

    // (b) the deleted file's path goes through "..": refused before anything is made.
    const dots = path.join(imgDir, 'crafted-dots.cpt');
    edited = 0;
    recodeImage(img, dots, {
      records: (recs) => {
        for (const { name, obj: o } of recs) {
          if (name === 'file' && o.deleted === true && o.sameAs === 0) {
            o.path = `${w.dir}/../${path.basename(w.dir)}/prog`;
            edited++;
          }
        }
        return recs;
      },
    });
    expect(edited).to.equal(1);
    const b = await cptrst(['restart', dots]);
    expect(b.code).to.equal(1);
    expect(b.stderr).to.match(ONE_LINE).and.match(/^cptrst: EBADIMG: /).and.include('".." component');
    expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
    expect(sorted(w.dir)).to.deep.equal(listing);

    // The image itself was good.
    const ok = await cptrst(['restart', img]);
    expect(ok.code, ok.stderr).to.equal(0);
    await expectUserPass(w);
  });

  it('a sparse deleted file keeps its holes, contents and size', async () => {
    const w = await startWorkload('ghost', [makeTempDir('ghost-sparse'), 'sparse']);
    const img = path.join(makeTempDir('sparse-img'), 'i.cpt');
    await checkpointKill(w.pid, img, w.exited);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(fs.statSync(`/proc/${w.pid}/fd/13`).blocks * 512, 'allocated bytes of the 2 MiB file').to.be.below(1024 * 1024);
    await trigger(w);
    expect(passLines('ghost')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('files deleted while mapped: one inode again for the fd and both shared mappings, the private copy kept, no name on disk', async () => {
    const dir = makeTempDir('ghostmap');
    const w = await startWorkload('ghostmap', [dir], { dir });
    const listing = sorted(dir);
    const img = path.join(makeTempDir('ghostmap-img'), 'i.cpt');
    await checkpointKill(w.pid, img, w.exited);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(sorted(dir), 'a name left on disk').to.deep.equal(listing);
    await trigger(w);
    expect(passLines('ghostmap')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a deleted file that a child maps too is refused, naming the child: it would come back as two files', async () => {
    const dir = makeTempDir('ghostmap-tree');
    const script = [
      'import mmap, os, time',
      `p = os.path.join(${JSON.stringify(dir)}, 'f')`,
      "fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600); os.write(fd, b'x' * 4096)",
      'm = mmap.mmap(fd, 4096, mmap.MAP_SHARED); os.close(fd); os.unlink(p)',
      'if os.fork() == 0: time.sleep(60); os._exit(0)',
      'time.sleep(60)',
    ].join('\n');
    const child = spawn('python3', ['-c', script], { stdio: 'ignore' });
    mine.add(child.pid!);
    // python's mmap object keeps a dup of the fd: the child holds an fd and a mapping of the file
    await sleep(1000);
    const r = await cptrst(['checkpoint', String(child.pid), '-o', path.join(dir, 'i.cpt')]);
    expect(r.code).to.equal(1);
    expect(r.stderr, r.stderr).to.match(ONE_LINE).and.include('would come back as a copy');
    const kid = Number(/also open or mapped in process (\d+)/.exec(r.stderr)?.[1]);
    mine.add(kid);
    expect(fs.readFileSync(`/proc/${kid}/stat`, 'utf8').split(') ')[1].split(' ')[1], 'the holder named is the child').to.equal(String(child.pid));
    await expectRunningUntraced(child.pid!);
    await expectRunningUntraced(kid);
  });

  it("an fd of another process's namespace is refused, naming the fd (only the process's own namespaces come back)", async function () {
    const other = spawn('unshare', ['--net', 'sleep', '60'], { stdio: 'ignore' });
    other.on('error', () => undefined); // no unshare(1): the namespace check below skips the test
    mine.add(other.pid!);
    await sleep(300);
    let ns = '';
    try {
      ns = fs.readlinkSync(`/proc/${other.pid}/ns/net`);
    } catch {
      /* not started */
    }
    if (!ns || ns === fs.readlinkSync('/proc/self/ns/net')) this.skip(); // no network namespace of its own here
    const script = `import os, time\nfd = os.open('/proc/${other.pid}/ns/net', os.O_RDONLY)\ntime.sleep(60)`;
    const holder = spawn('python3', ['-c', script], { stdio: 'ignore' });
    mine.add(holder.pid!);
    await sleep(500);
    const r = await cptrst(['checkpoint', String(holder.pid), '-o', path.join(makeTempDir('nsfd'), 'i.cpt')]);
    expect(r.code).to.equal(1);
    expect(r.stderr, r.stderr).to.match(ONE_LINE).and.match(/EOPNOTSUPP: pid \d+, fd \d+ \(net:\[\d+\]\): a file of a net namespace that is not the process's own/);
    await expectRunningUntraced(holder.pid!);
  });

  it("a chrooted process is chrooted again, last, to the same directory; a user's image of it is refused (EPERM), nothing left", async () => {
    const top = outsideDir('chroot', NOBODY);
    const root = path.join(top, 'root');
    fs.mkdirSync(root, { mode: 0o755 });
    const bin = path.join(root, 'static');
    fs.copyFileSync(binaryPath('static'), bin);
    fs.chmodSync(bin, 0o755);
    const result = path.join(top, 'result');
    const out = fs.openSync(result, 'a', 0o644);
    fs.fchownSync(out, NOBODY, NOBODY);
    // A daemon's way: chrooted by root, then running as nobody (a session leader, as a user's image needs).
    const child = spawn('setsid', ['chroot', `--userspec=${NOBODY}:${NOBODY}`, root, '/static', '/trigger'], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    mine.add(child.pid!);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    for (let i = 0; i < 200 && !fs.readFileSync(result, 'utf8').includes('READY'); i++) await sleep(25);
    expect(fs.readlinkSync(`/proc/${child.pid}/root`)).to.equal(root);
    const img = path.join(top, 'i.cpt');
    const ck = await cptrst(['checkpoint', String(child.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await exited;
    fs.chownSync(img, NOBODY, NOBODY);
    const denied = await cptrst(['restart', img]);
    expect(denied.code).to.equal(1);
    expect(denied.stderr).to.match(ONE_LINE).and.match(/^cptrst: EPERM: pid \d+, root \/.*: a chrooted process is restored only from an image root wrote/);
    expect(await waitGone(child.pid!, 5000), 'a half-made process left').to.equal(true);
    fs.chownSync(img, 0, 0);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(fs.readlinkSync(`/proc/${child.pid}/root`)).to.equal(root);
    fs.writeFileSync(path.join(root, 'trigger'), '');
    for (let i = 0; i < 200 && !/PASS|FAIL/.test(fs.readFileSync(result, 'utf8')); i++) await sleep(25);
    expect(fs.readFileSync(result, 'utf8')).to.match(/^READY \d+\nPASS static\n$/);
  });

  it('a restart killed with SIGKILL at many moments leaves no name and none of the contents on disk, and no process', async () => {
    const dir = makeTempDir('ghost-kill');
    const w = await startWorkload('ghost', [dir, 'sparse'], { dir });
    const img = path.join(makeTempDir('kill-img'), 'i.cpt');
    await checkpointKill(w.pid, img, w.exited);
    const listing = sorted(dir);
    const t0 = Date.now();
    const full = await cptrst(['restart', img]);
    const took = Date.now() - t0;
    expect(full.code, full.stderr).to.equal(0);
    await killByPid(w.pid);
    expect(await waitGone(w.pid, 5000)).to.equal(true);

    let killedMidway = 0;
    const moments = 14;
    for (let k = 0; k < moments; k++) {
      const delay = Math.round((k * took) / (moments - 2)); // the last ones land after the end
      const child = spawn(process.execPath, [CLI_MAIN, 'restart', img], { stdio: 'ignore' });
      const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      await sleep(delay);
      child.kill('SIGKILL');
      const how = await done;
      if (how.signal === 'SIGKILL') killedMidway++;
      // Killed half way: its tracees die with it (PTRACE_O_EXITKILL). Finished: the process runs; end it.
      if (!(await waitGone(w.pid, 3000))) {
        await killByPid(w.pid);
        expect(await waitGone(w.pid, 5000), `pid ${w.pid} left after a restart killed at ${delay} ms`).to.equal(true);
      }
      expect(sorted(dir), `after a kill at ${delay} ms`).to.deep.equal(listing);
    }
    expect(killedMidway, 'restarts actually killed half way').to.be.at.least(moments / 2);
    const ok = await cptrst(['restart', img]);
    expect(ok.code, ok.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('ghost')).to.include(parseResult(await waitResult(w)).verdict);
  });
});

describe('fd state refused at checkpoint: the process runs on untouched', function () {
  this.timeout(60000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  const cases: Array<[string, RegExp]> = [
    ['setown-parent', /\/locked\): its I\/O signals go to process \d+ \(F_SETOWN\), neither the process itself nor another process of the checkpointed tree$/],
  ];
  for (const [mode, why] of cases) {
    it(`${mode}`, async () => {
      const w: Workload = await startWorkload('fdstate', [makeTempDir('fdstate'), mode]);
      const img = path.join(w.dir, 'refused.cpt');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, fd 20 \\(`));
      expect(r.stderr.trim()).to.match(why);
      expect(fs.existsSync(img), 'partial image left').to.equal(false);
      const st = await procState(w.pid);
      expect(st?.state).to.match(/^[RS]$/);
      expect(st?.tracerPid).to.equal(0);
      await trigger(w);
      expect(parseResult(await waitResult(w)).verdict).to.equal('PASS fdstate');
    });
  }
});
