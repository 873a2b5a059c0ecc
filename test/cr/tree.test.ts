/**
 * Process trees: a process and all its descendants checkpointed together and made again with
 * every PID, parent, process group and session; zombies with their status, a stopped child, a
 * file description shared by parent and children. What cannot be made again is refused, and
 * leaves every process of the tree running as before.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, cptrst, killByPid, killStartedWorkloads, makeTempDir, makeUserDir, parseResult, passLines,
  procState, recodeImage, removeUserDir, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

interface Member {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  /** R S D T Z ...; a running or sleeping process may show either. */
  state: string;
  tracer: number;
}

/** The process and its descendants, parent before children, from /proc. */
function treeOf(root: number): Member[] {
  const out: Member[] = [];
  const visit = (pid: number): void => {
    let stat: string;
    let status: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      return;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.push({ pid, state: f[0], ppid: Number(f[1]), pgid: Number(f[2]), sid: Number(f[3]), tracer: Number(/^TracerPid:\s*(\d+)/m.exec(status)?.[1] ?? -1) });
    const children = new Set<number>();
    let tids: string[] = [];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      /* it ended meanwhile (a churning child) */
    }
    for (const tid of tids) {
      try {
        for (const c of fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (c) children.add(Number(c));
      } catch {
        /* gone */
      }
    }
    for (const c of [...children].sort((a, b) => a - b)) visit(c);
  };
  visit(root);
  return out;
}

/**
 * What must be the same after a restart: ids, and zombie/stopped/alive. The root's parent is not
 * in the tree (a restored root is init's child), only that it is outside.
 */
const shape = (ms: Member[]) => ms.map((m, i) => ({ pid: m.pid, ppid: i === 0 ? 'outside' : m.ppid, pgid: m.pgid, sid: m.sid, state: m.state === 'Z' || m.state === 'T' ? m.state : 'alive' })).sort((a, b) => a.pid - b.pid);

/** Every process of every tree a test made, killed by PID at the end (only if it is still one of our workloads). */
const members = new Set<number>();

const NOBODY = { uid: 65534, gid: 65534 };

async function startTree(name: string, args: string[] = [], asUser?: { uid: number; gid: number }): Promise<{ w: Workload; before: Member[] }> {
  let dir: string | undefined;
  if (asUser) {
    // the tree writes its own files (ready marks, a data file) there as that user
    dir = makeUserDir(name);
    fs.chownSync(dir, asUser.uid, asUser.gid);
  }
  const w = await startWorkload(name, args, dir ? { dir, asUser } : {});
  const before = treeOf(w.pid);
  for (const m of before) members.add(m.pid);
  return { w, before };
}

async function expectPass(w: Workload): Promise<void> {
  await trigger(w);
  const r = parseResult(await waitResult(w, 30000));
  expect(passLines(w.name, w.args)).to.include(r.verdict, `output: ${JSON.stringify(fs.readFileSync(w.resultPath, 'utf8'))}`);
  expect(r.extra).to.deep.equal([]);
}

async function checkpointKill(w: Workload, before: Member[], img: string): Promise<void> {
  const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
  expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
  expect(ck.stderr).to.include(`(${before.length} tasks)`);
  await w.exited;
  // The killed tree's zombies are init's to reap: every PID must be free again.
  for (const m of before) expect(await waitGone(m.pid, 10000), `pid ${m.pid} still taken`).to.equal(true);
}

async function restartSame(w: Workload, before: Member[], img: string): Promise<void> {
  const rs = await cptrst(['restart', img]);
  expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
  expect(rs.stdout.trim()).to.equal(String(w.pid));
  const after = treeOf(w.pid);
  expect(shape(after)).to.deep.equal(shape(before));
  for (const m of after) expect(m.tracer, `pid ${m.pid} traced`).to.equal(0);
}

/** Runs the CLI and SIGKILLs it `ms` after it was started; resolves with how it ended. */
function runAndKill(args: string[], ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const cli = spawn(process.execPath, [CLI_MAIN, ...args], { stdio: 'ignore' });
  const timer = setTimeout(() => cli.kill('SIGKILL'), ms);
  return new Promise((resolve) => cli.once('close', (code, signal) => {
    clearTimeout(timer);
    resolve({ code, signal });
  }));
}

/** Runs the CLI to its end (killed only after 2 minutes) and says how long it took. */
async function timedRun(args: string[]): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  const r = await runAndKill(args, 120000);
  return { code: r.code, ms: Date.now() - t0 };
}

describe('process trees', function () {
  this.timeout(180000);
  before(() => {
    loadModule('@cptrst/cpt-module'); // the layouts, to read and rewrite images
    return buildWorkloads();
  });
  afterEach(async () => {
    for (const pid of members) await killByPid(pid);
    members.clear();
    await killStartedWorkloads();
  });

  for (const [name, args] of [['tree', []], ['tree.sh', []], ['tree.py', []]] as Array<[string, string[]]>) {
    it(`${name}: checkpoint --kill and restart make the same tree again (pids, parents, groups, sessions, zombies, a stopped child), and each member checks itself`, async () => {
      const { w, before } = await startTree(name, args);
      expect(before.length).to.be.greaterThan(3);
      const img = path.join(w.dir, 'tree.img');
      await checkpointKill(w, before, img);
      await restartSame(w, before, img);
      await expectPass(w);
    });
  }

  it('tree: the root shows the tree as it was, and a restored zombie is reaped with its recorded status (root checks it)', async () => {
    const { w, before } = await startTree('tree');
    expect(before.filter((m) => m.state === 'Z').length, 'zombies').to.equal(2);
    expect(before.filter((m) => m.state === 'T').length, 'stopped').to.equal(1);
    expect(new Set(before.map((m) => m.sid)).size, 'sessions').to.equal(2);
    const img = path.join(w.dir, 'tree.img');
    await checkpointKill(w, before, img);
    const show = await cptrst(['show', img]);
    expect(show.code, show.stderr).to.equal(0);
    for (const m of before) expect(show.stdout).to.match(new RegExp(`^\\s*${m.pid}\\s+${m.ppid}\\s+${m.pgid}\\s+${m.sid}\\s`, 'm'));
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('a tree checkpointed without --kill runs on untraced, every process as before; three checkpoints of a tree that forks all the time', async () => {
    const { w, before } = await startTree('tree', ['zgsfc']);
    for (let i = 0; i < 3; i++) {
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, `run${i}.img`)]);
      expect(ck.code, ck.stderr).to.equal(0);
    }
    const after = treeOf(w.pid);
    // the churning grandchild's own short-lived children (the only fourth level) come and go;
    // the rest is as it was
    const depth = (ms: Member[], m: Member): number => {
      const parent = ms.find((p) => p.pid === m.ppid);
      return parent ? 1 + depth(ms, parent) : 0;
    };
    const steady = (ms: Member[]) => shape(ms.filter((m) => depth(ms, m) < 3));
    expect(steady(after)).to.deep.equal(steady(before));
    for (const m of after) expect(m.tracer).to.equal(0);
    await expectPass(w);
  });

  it('a tree that forks all the time is checkpointed with --kill and restarted', async () => {
    const { w } = await startTree('tree', ['zgsfc']);
    const img = path.join(w.dir, 'churn.img');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    await sleep(200);
    const rs = await cptrst(['restart', img], { env: { CPTRST_PID_WAIT_MS: '10000' } });
    expect(rs.code, rs.stderr).to.equal(0);
    for (const m of treeOf(w.pid)) members.add(m.pid);
    await expectPass(w);
  });

  it('--leave-stopped stops every process of the tree; SIGCONT lets them go on', async () => {
    const { w, before } = await startTree('tree');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'stop.img'), '--leave-stopped']);
    expect(ck.code, ck.stderr).to.equal(0);
    const after = treeOf(w.pid);
    for (const m of after) expect(m.state, `pid ${m.pid}`).to.be.oneOf(['T', 'Z']);
    for (const m of after) if (m.state === 'T' && before.find((b) => b.pid === m.pid)?.state !== 'T') process.kill(m.pid, 'SIGCONT');
    await expectPass(w);
  });

  it('restart --leave-stopped leaves the whole tree stopped', async () => {
    const { w, before } = await startTree('tree.py');
    const img = path.join(w.dir, 'tree.img');
    await checkpointKill(w, before, img);
    const rs = await cptrst(['restart', img, '--leave-stopped']);
    expect(rs.code, rs.stderr).to.equal(0);
    const after = treeOf(w.pid);
    expect(after.length).to.equal(before.length);
    for (const m of after) expect(m.state, `pid ${m.pid}`).to.be.oneOf(['T', 'Z']);
    for (const m of after) if (m.state === 'T') process.kill(m.pid, 'SIGCONT');
    await expectPass(w);
  });

  describe('refused, every process running on as before', () => {
    const cases: Array<[string, RegExp]> = [
      ['vfork', /^cptrst: EOPNOTSUPP: pid (\d+), child (\d+): the child shares the memory of its parent \(a vfork in progress/],
      ['clone-vm', /^cptrst: EOPNOTSUPP: pid (\d+), child (\d+): the child shares the memory of its parent/],
      ['traced', /^cptrst: EBUSY: pid (\d+), ptrace: it is already traced by pid (\d+)/],
      ['pidns', /^cptrst: EOPNOTSUPP: pid (\d+), pid namespace pid:\[\d+\]: /],
    ];
    for (const [mode, re] of cases) {
      it(`treeshare ${mode}`, async () => {
        const { w, before } = await startTree('treeshare', [mode]);
        const img = path.join(w.dir, 'x.img');
        const ck = await cptrst(['checkpoint', String(w.pid), '-o', img]);
        expect(ck.code).to.equal(1);
        const m = re.exec(ck.stderr);
        expect(m, ck.stderr).to.not.equal(null);
        const named = m!.slice(1).filter((x) => x !== undefined).map(Number);
        for (const pid of named) expect(before.map((b) => b.pid), `named pid ${pid}`).to.include(pid);
        expect(fs.existsSync(img)).to.equal(false);
        const after = treeOf(w.pid);
        expect(shape(after)).to.deep.equal(shape(before));
        for (const a of after) if (mode !== 'traced' || a.pid === w.pid) expect(a.tracer, `pid ${a.pid}`).to.equal(0);
        await expectPass(w);
      });
    }
  });

  for (const [mode, what] of [['clone-files', 'an fd table shared with CLONE_FILES is one table again (an fd the child opens after the restart is the parent\'s)'], ['clone-fs', 'an fs struct shared with CLONE_FS is one again (the umask the child sets after the restart is the parent\'s)']]) {
    it(`treeshare ${mode}: ${what}`, async () => {
      const { w, before } = await startTree('treeshare', [mode]);
      const img = path.join(w.dir, 'share.img');
      await checkpointKill(w, before, img);
      await restartSame(w, before, img);
      await expectPass(w);
    });
  }

  it('orphans of sessions whose leaders are gone, adopted by a child subreaper, are in those sessions and groups again (a helper with the leader\'s pid makes each)', async () => {
    const { w, before } = await startTree('orphans');
    const img = path.join(w.dir, 'orphans.img');
    await checkpointKill(w, before, img);
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('MAP_SHARED anonymous memory inherited across fork is one memory again after restart (a write by the child is seen by the parent)', async () => {
    const { w, before } = await startTree('treeshare', ['shm']);
    const img = path.join(w.dir, 'shm.img');
    await checkpointKill(w, before, img);
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('private memory shared copy-on-write by a tree of three levels is stored once and shared again after restart (same page frames, Pss as before); each member checks every page', async () => {
    const { w, before } = await startTree('cowtree', ['16']);
    const pss = (ms: Member[]) => ms.reduce((sum, m) => sum + Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${m.pid}/smaps_rollup`, 'utf8'))![1]), 0);
    const pssBefore = pss(before);
    const img = path.join(w.dir, 'cow.img');
    await checkpointKill(w, before, img);
    // The root's 4080 pages, and only the pages each member wrote itself or that its parent wrote
    // since (A 2041, G 510, B 1020): about 7700 pages, where four copies would be over 14000.
    const show = await cptrst(['show', img]);
    const stored = Number(/page data\s+(\d+) pages/.exec(show.stdout)?.[1]);
    expect(stored, show.stdout.slice(0, 300)).to.be.within(7651, 8200);
    await restartSame(w, before, img);
    const pssAfter = pss(treeOf(w.pid));
    expect(pssAfter, `Pss ${pssBefore} kB before, ${pssAfter} kB after`).to.be.below(pssBefore * 1.25);
    await expectPass(w);
  });

  it('a checkpoint that leaves the tree running leaves its private memory shared copy-on-write: the tree runs on and passes its own check that the kept pages are still its parents\' page frames', async () => {
    const { w, before } = await startTree('cowtree', ['16']);
    const img = path.join(w.dir, 'cow-live.img');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img]);
    expect(ck.code, `checkpoint failed: ${ck.stderr}`).to.equal(0);
    expect(ck.stderr).to.include(`(${before.length} tasks)`);
    expect(shape(treeOf(w.pid))).to.deep.equal(shape(before));
    await expectPass(w);
  });

  it('checkpointing only a child forked from a parent outside the checkpoint leaves the memory it shares copy-on-write with that parent shared (the same page frames)', async () => {
    const dir = makeTempDir('cowchild');
    const ready = path.join(dir, 'ready');
    // 8 MiB of private anonymous memory written by the parent, then kept by a child that only sleeps
    const py = `import mmap, os, time\nm = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\nfor i in range(0, 8 << 20, 4096):\n    m[i] = (i >> 12) % 251 + 1\npid = os.fork()\nif pid == 0:\n    time.sleep(300)\n    os._exit(0)\nopen(${JSON.stringify(ready)}, 'w').close()\nos.waitpid(pid, 0)\n`;
    const root = spawn('python3', ['-c', py], { stdio: 'ignore' });
    const frames = (pid: number, start: bigint, n: number): bigint[] => {
      const fd = fs.openSync(`/proc/${pid}/pagemap`, 'r');
      try {
        const b = Buffer.alloc(n * 8);
        fs.readSync(fd, b, 0, b.length, Number(start / 4096n) * 8);
        return Array.from({ length: n }, (_, i) => b.readBigUInt64LE(i * 8) & ((1n << 55n) - 1n));
      } finally {
        fs.closeSync(fd);
      }
    };
    try {
      for (let i = 0; i < 1000 && !fs.existsSync(ready); i++) await sleep(10);
      const child = (await procState(root.pid!))!.children[0];
      // The area: the private anonymous mapping of 8 MiB both have
      const area = fs.readFileSync(`/proc/${child}/maps`, 'utf8').split('\n').map((l) => /^([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0 /.exec(l)).find((m) => m && BigInt(`0x${m[2]}`) - BigInt(`0x${m[1]}`) === 8n << 20n);
      expect(area, 'the 8 MiB area in the child').to.not.equal(undefined);
      const start = BigInt(`0x${area![1]}`);
      const n = 2048;
      const parentFrames = frames(root.pid!, start, n);
      expect(parentFrames.every((f) => f !== 0n), 'page frames are shown (root)').to.equal(true);
      expect(frames(child, start, n)).to.deep.equal(parentFrames);
      // Read from a copy-on-write snapshot, and (--no-snapshot) from the frozen child itself
      for (const opts of [[], ['--no-snapshot']]) {
        const ck = await cptrst(['checkpoint', String(child), '-o', path.join(dir, `img${opts.length}`), ...opts]);
        expect(ck.code, `checkpoint ${opts.join(' ')} failed: ${ck.stderr}`).to.equal(0);
        expect((await procState(child))?.tracerPid).to.equal(0);
        // The kernel may migrate a shared page meanwhile (compaction): both then show its new frame,
        // so the two are compared with each other, read together; a page the checkpoint unshared
        // stays unshared, which no second read hides.
        let unshared = -1;
        for (let tries = 0; tries < 5 && unshared !== 0; tries++) {
          if (tries) await sleep(100);
          const ofRoot = frames(root.pid!, start, n);
          unshared = frames(child, start, n).filter((f, i) => f !== ofRoot[i]).length;
        }
        expect(unshared, `pages of the child no longer shared with its parent after checkpoint ${opts.join(' ')}`).to.equal(0);
      }
    } finally {
      for (const pid of (await procState(root.pid!))?.children ?? []) process.kill(pid, 'SIGKILL');
      process.kill(root.pid!, 'SIGKILL');
    }
  });

  it('an image whose root keeps memory from a parent it does not have, or whose kept area discards pages outside it, is refused (EBADIMG), leaving nothing behind', async () => {
    const { w, before } = await startTree('cowtree', ['4']);
    const img = path.join(w.dir, 'cow.img');
    await checkpointKill(w, before, img);
    const cases: Array<[string, (recs: Array<{ name: string; obj: Record<string, unknown> }>) => void, RegExp]> = [
      ['root', (recs) => {
        const mms = recs.filter((r) => r.name === 'mm');
        mms[0].obj.keptPrivate = mms[1].obj.keptPrivate;
      }, /^cptrst: EBADIMG: pid \d+, mm: memory kept from the parent, but the task's parent \(\d+\) is not a restored process of the image/],
      ['discard', (recs) => {
        const kept = recs.find((r) => r.name === 'vma-kept')!;
        kept.obj.discard = [1n << 40n, 1n];
      }, /^cptrst: EBADIMG: pid \d+, vma [0-9a-f]+-[0-9a-f]+( [^:]+)?: pages \d+\+1 to discard are outside the area/],
    ];
    for (const [name, change, re] of cases) {
      const bad = path.join(w.dir, `${name}.img`);
      recodeImage(img, bad, {
        records: (recs) => {
          change(recs);
          return recs;
        },
      });
      const rs = await cptrst(['restart', bad]);
      expect(rs.code, name).to.equal(1);
      expect(rs.stderr, `${name}: ${rs.stderr}`).to.match(re);
      for (const m of before) expect(await waitGone(m.pid, 10000), `${name}: pid ${m.pid} left behind`).to.equal(true);
    }
  });

  it('files of /proc directories of the tree (its own, its child\'s, its parent\'s) are opened again once every process exists, with their flags and offsets', async () => {
    const { w, before } = await startTree('procfiles');
    const img = path.join(w.dir, 'procfiles.img');
    await checkpointKill(w, before, img);
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('a file of the /proc directory of a process outside the tree is opened again while that pid names the same process; once it has ended, the restart fails (ESRCH) and leaves nothing', async () => {
    const dir = makeTempDir('procout');
    const ready = path.join(dir, 'ready');
    const go = path.join(dir, 'go');
    const out = path.join(dir, 'out');
    const outsider = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
    // After the restart the shell reads its fd 3 from where it was (offset 0) and checks it is still the outsider's stat.
    const script = `exec 3</proc/${outsider.pid}/stat; echo > ${ready}; while [ ! -e ${go} ]; do sleep 0.05 3<&-; done; ` +
      `read -r line <&3; case "$line" in "${outsider.pid} (sleep) "*) echo PASS > ${out};; *) echo "FAIL $line" > ${out};; esac`;
    const sh = spawn('bash', ['-c', script], { detached: true, stdio: 'ignore' });
    try {
      for (let i = 0; i < 500 && !fs.existsSync(ready); i++) await sleep(10);
      const img = path.join(dir, 'img');
      const ck = await cptrst(['checkpoint', String(sh.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      expect(await waitGone(sh.pid!, 10000)).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      expect(fs.readlinkSync(`/proc/${sh.pid}/fd/3`)).to.equal(`/proc/${outsider.pid}/stat`);
      fs.writeFileSync(go, '');
      for (let i = 0; i < 500 && !fs.existsSync(out); i++) await sleep(10);
      expect(fs.readFileSync(out, 'utf8').trim()).to.equal('PASS');
      expect(await waitGone(sh.pid!, 10000)).to.equal(true);
      // The outsider ends: its pid names no process (or another one) now.
      process.kill(outsider.pid!, 'SIGKILL');
      expect(await waitGone(outsider.pid!, 10000)).to.equal(true);
      const rs2 = await cptrst(['restart', img]);
      expect(rs2.code).to.equal(1);
      expect(rs2.stderr).to.match(new RegExp(`^cptrst: ESRCH: pid ${sh.pid}, fd 3 \\(/proc/${outsider.pid}/stat\\): .*no longer names the process of the checkpoint`));
      expect(await waitGone(sh.pid!, 10000), 'the half-made process is gone').to.equal(true);
    } finally {
      for (const p of [sh.pid!, outsider.pid!]) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
  });

  it('a file of a /proc directory of the tree whose description two processes share is refused; the tree runs on', async () => {
    const dir = makeTempDir('procfd');
    const ready = path.join(dir, 'ready');
    // the child (sleep) inherits fd 3, one description with the shell's
    const sh = spawn('bash', ['-c', `exec 3</proc/$$/stat; sleep 300 & echo > ${ready}; wait`], { detached: true, stdio: 'ignore' });
    try {
      for (let i = 0; i < 500 && !fs.existsSync(ready); i++) await sleep(10);
      const child = (await procState(sh.pid!))!.children[0];
      const ck = await cptrst(['checkpoint', String(sh.pid), '-o', path.join(dir, 'img')]);
      expect(ck.code, ck.stderr).to.equal(1);
      expect(ck.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${sh.pid}, fd 3 \\(/proc/${sh.pid}/stat\\): a file of the /proc directory of process ${sh.pid} whose open file description process ${child} holds too \\(fd 3\\)`));
      for (const pid of [sh.pid!, child]) expect((await procState(pid))?.tracerPid).to.equal(0);
    } finally {
      for (const pid of (await procState(sh.pid!))?.children ?? []) process.kill(pid, 'SIGKILL');
      process.kill(sh.pid!, 'SIGKILL');
    }
  });

  it('a deleted file open in three processes of the tree through descriptions of their own is one file again (made by their common ancestor): a write through one is read through the others', async () => {
    const dir = makeTempDir('ghosttree');
    const { w, before } = await startTree('ghosttree', [dir]);
    const img = path.join(w.dir, 'ghosttree.img');
    await checkpointKill(w, before, img);
    await restartSame(w, before, img);
    await expectPass(w);
    // made without a name: nothing left in the directory (but the tamper file, never made here)
    expect(fs.readdirSync(dir)).to.deep.equal([]);
  });

  it('a deleted file open in two processes of the tree through descriptions of their own, and not in their common ancestor, is refused; the tree runs on', async () => {
    const dir = makeTempDir('ghostsib');
    const ready = path.join(dir, 'ready');
    // two children each open the file on their own; the parent (the shell) does not hold it
    const f = path.join(dir, 'data');
    const sh = spawn('bash', ['-c', `echo hi > ${f}; (exec 3<>${f}; exec sleep 300) & (exec 4<${f}; exec sleep 300) & sleep 0.2; rm ${f}; echo > ${ready}; wait`], { detached: true, stdio: 'ignore' });
    try {
      for (let i = 0; i < 500 && !fs.existsSync(ready); i++) await sleep(10);
      const ck = await cptrst(['checkpoint', String(sh.pid), '-o', path.join(dir, 'img')]);
      expect(ck.code, ck.stderr).to.equal(1);
      expect(ck.stderr).to.match(/^cptrst: EOPNOTSUPP: pid \d+, fd [34] \(.*\/data \(deleted\)\): the deleted file is open in several processes of the tree \(.*\) and not in their common ancestor \d+/);
      for (const pid of [sh.pid!, ...((await procState(sh.pid!))?.children ?? [])]) expect((await procState(pid))?.tracerPid).to.equal(0);
    } finally {
      for (const pid of (await procState(sh.pid!))?.children ?? []) process.kill(pid, 'SIGKILL');
      process.kill(sh.pid!, 'SIGKILL');
    }
  });

  it('shared anonymous memory shared beyond a child keeping its parent\'s mapping (parts the parent unmapped, siblings, a part mapped twice) is one memory again', async () => {
    const { w, before } = await startTree('shmtree');
    const img = path.join(w.dir, 'shmtree.img');
    await checkpointKill(w, before, img);
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('shared anonymous memory shared by two children and no longer mapped by their parent is refused; the tree runs on', async () => {
    const dir = makeTempDir('shmsib');
    const ready = path.join(dir, 'ready');
    const py = `import mmap, os, time\nm = mmap.mmap(-1, 8192)\nkids = []\nfor i in range(2):\n    pid = os.fork()\n    if pid == 0:\n        m[0] = 1\n        time.sleep(300)\n        os._exit(0)\n    kids.append(pid)\nm.close()\nopen(${JSON.stringify(ready)}, 'w').close()\nfor k in kids:\n    os.waitpid(k, 0)\n`;
    const root = spawn('python3', ['-c', py], { detached: true, stdio: 'ignore' });
    try {
      for (let i = 0; i < 500 && !fs.existsSync(ready); i++) await sleep(10);
      const ck = await cptrst(['checkpoint', String(root.pid), '-o', path.join(dir, 'img')]);
      expect(ck.code, ck.stderr).to.equal(1);
      expect(ck.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid \\d+, vma [0-9a-f]+-[0-9a-f]+ /dev/zero: the shared anonymous memory is mapped by processes \\d+, \\d+ of the tree, and not by their common ancestor ${root.pid}`));
      for (const pid of [root.pid!, ...((await procState(root.pid!))?.children ?? [])]) expect((await procState(pid))?.tracerPid).to.equal(0);
    } finally {
      for (const pid of (await procState(root.pid!))?.children ?? []) process.kill(pid, 'SIGKILL');
      process.kill(root.pid!, 'SIGKILL');
    }
  });

  it('children stopped by SIGTSTP, SIGTTIN and SIGTTOU are stopped by the same signals after restart: their parent\'s waitpid(WUNTRACED) reports each, WCONTINUED after SIGCONT', async () => {
    const { w, before } = await startTree('jobstop');
    expect(before.filter((m) => m.state === 'T')).to.have.length(3);
    const img = path.join(w.dir, 'jobstop.img');
    await checkpointKill(w, before, img);
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('a child stopped by SIGTSTP in a group that a restart would leave orphaned is refused (the kernel discards SIGTSTP there); the tree runs on', async () => {
    const dir = makeTempDir('tstp');
    const ready = path.join(dir, 'ready');
    // A group of its own in the test's session: not orphaned only thanks to the root's parent,
    // which is not in the tree
    const py = `import os, time\nos.setpgid(0, 0)\npid = os.fork()\nif pid == 0:\n    time.sleep(300)\n    os._exit(0)\nopen(${JSON.stringify(ready)}, 'w').close()\nos.waitpid(pid, 0)\n`;
    const root = spawn('python3', ['-c', py], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 500 && !fs.existsSync(ready); i++) await sleep(10);
      const child = (await procState(root.pid!))!.children[0];
      process.kill(child, 'SIGTSTP');
      for (let i = 0; i < 100 && (await procState(child))?.state !== 'T'; i++) await sleep(10);
      expect((await procState(child))?.state).to.equal('T');
      const ck = await cptrst(['checkpoint', String(root.pid), '-o', path.join(dir, 'img')]);
      expect(ck.code, ck.stderr).to.equal(1);
      expect(ck.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${child}, stop: the process was stopped by SIGTSTP, and its process group ${root.pid} has no member whose parent in the tree is in another group`));
      for (const pid of [root.pid!, child]) expect((await procState(pid))?.tracerPid).to.equal(0);
      expect((await procState(child))?.state).to.equal('T');
    } finally {
      for (const pid of (await procState(root.pid!))?.children ?? []) process.kill(pid, 'SIGKILL');
      process.kill(root.pid!, 'SIGKILL');
    }
  });

  it('images whose stop signal, /proc file, deleted file shared in the tree or shared anonymous memory record is wrong are refused (EBADIMG), leaving nothing behind', async () => {
    type Recs = Array<{ name: string; tag: number; ptag: number; obj: Record<string, unknown> }>;
    const cases: Array<[string, string[], (recs: Recs) => void, RegExp]> = [
      ['jobstop', [], (recs) => {
        recs.find((r) => r.name === 'task' && r.obj.stopped === true)!.obj.stopSignal = 9;
      }, /^cptrst: EBADIMG: pid \d+, task: stop signal 9/],
      ['procfiles', [], (recs) => {
        const rec = recs.find((r) => r.name === 'proc-file' && /^\/proc\/\d+\/stat$/.test(String(recs.find((f) => f.tag === r.ptag)!.obj.path)))!;
        recs.find((f) => f.tag === rec.ptag)!.obj.path = '/proc/1/stat';
        rec.obj.pid = 1;
      }, /^cptrst: EBADIMG: pid \d+, fd 41 \(\/proc\/1\/stat\): a file of the \/proc directory of process 1, which is not a process of the image/],
      ['shmtree', [], (recs) => {
        // the last one: an area of a child, not of the maker
        recs.filter((r) => r.name === 'vma-shared-anon').slice(-1)[0].obj.maker = 4194000;
      }, /^cptrst: EBADIMG: pid \d+, vma [0-9a-f]+-[0-9a-f]+ \/dev\/zero: shared anonymous memory of the tree: the object is said to be made by process 4194000, which made none before this area/],
      ['ghosttree', [makeTempDir('ghosttree-bad')], (recs) => {
        recs.filter((r) => r.name === 'ghost-shared')[1].obj.maker = 4194000;
      }, /^cptrst: EBADIMG: pid \d+, fd 2[12] \(.*ghosttree\.data\): the deleted file is said to be made by process 4194000, which made none of this inode/],
    ];
    for (const [name, args, change, re] of cases) {
      const { w, before } = await startTree(name, args);
      const img = path.join(w.dir, `${name}.img`);
      await checkpointKill(w, before, img);
      const bad = path.join(w.dir, `${name}-bad.img`);
      recodeImage(img, bad, {
        records: (recs) => {
          change(recs);
          return recs;
        },
      });
      const rs = await cptrst(['restart', bad]);
      expect(rs.code, name).to.equal(1);
      expect(rs.stderr, `${name}: ${rs.stderr}`).to.match(re);
      for (const m of before) expect(await waitGone(m.pid, 10000), `${name}: pid ${m.pid} left behind`).to.equal(true);
    }
  });

  it('an image of a tree not owned by root: restored with the owner\'s rights (every member nobody\'s, zombies too); a child asking for root is refused before it is made, leaving nothing', async () => {
    const { w, before } = await startTree('tree', ['zgsf', '--as', `${NOBODY.uid}:${NOBODY.gid}`], NOBODY);
    try {
      const img = path.join(w.dir, 'tree.img');
      await checkpointKill(w, before, img);
      fs.chownSync(img, NOBODY.uid, NOBODY.gid);
      const bad = path.join(w.dir, 'root-child.img');
      recodeImage(img, bad, {
        records: (recs) => {
          const creds = recs.filter((r) => r.name === 'creds');
          creds[creds.length - 1].obj.uids = [0, 0, 0, 0];
          return recs;
        },
      });
      fs.chownSync(bad, NOBODY.uid, NOBODY.gid);
      const r = await cptrst(['restart', bad]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/^cptrst: EPERM: pid \d+, creds: the image belongs to uid 65534, and task \d+ asks for more than its owner has: real uid 0/);
      for (const m of before) expect(await waitGone(m.pid, 10000), `pid ${m.pid} left behind`).to.equal(true);
      await restartSame(w, before, img);
      for (const m of treeOf(w.pid)) {
        const uids = /^Uid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${m.pid}/status`, 'utf8'))![1].split(/\s+/).map(Number);
        expect(uids, `pid ${m.pid}`).to.deep.equal([65534, 65534, 65534, 65534]);
      }
      await expectPass(w);
    } finally {
      removeUserDir(w.dir);
    }
  });

  it('cptrst SIGKILLed at any moment of a tree checkpoint leaves every process of the tree as it was; of a tree restart, none of it', async () => {
    const { w, before } = await startTree('tree');
    // Kills spread over the time a whole checkpoint takes here (cptrst's speed and the machine's vary).
    const full = await timedRun(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'full.img')]);
    expect(full.code, 'a whole checkpoint').to.equal(0);
    const delays = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1].map((f) => Math.max(20, Math.round(f * full.ms)));
    let killed = 0;
    for (const d of delays) {
      const run = await runAndKill(['checkpoint', String(w.pid), '-o', path.join(w.dir, `k${d}.img`)], d);
      if (run.signal === 'SIGKILL') killed++;
      let now: Member[] = [];
      for (let i = 0; i < 200; i++) {
        now = treeOf(w.pid);
        if (now.every((m) => m.tracer === 0) && shape(now).every((m, k) => m.state === shape(before)[k]?.state)) break;
        await sleep(10);
      }
      expect(shape(now), `killed after ${d} ms`).to.deep.equal(shape(before));
      for (const m of now) expect(m.tracer, `killed after ${d} ms: pid ${m.pid}`).to.equal(0);
    }
    expect(killed, 'every kill came too late').to.be.greaterThan(0);
    const img = path.join(w.dir, 'tree.img');
    await checkpointKill(w, before, img);
    // The same over the time a whole restart takes (the tree it makes is ended for the next round).
    const whole = await timedRun(['restart', img]);
    expect(whole.code, 'a whole restart').to.equal(0);
    for (const m of treeOf(w.pid).reverse()) process.kill(m.pid, 'SIGKILL');
    for (const m of before) expect(await waitGone(m.pid, 15000), `pid ${m.pid} of the whole restart left`).to.equal(true);
    let made = 0;
    for (const d of [0.2, 0.4, 0.6, 0.8, 1].map((f) => Math.max(20, Math.round(f * whole.ms)))) {
      const run = await runAndKill(['restart', img], d);
      await sleep(100);
      // Done (or killed between the last detach and its output): the whole tree, untraced, and
      // ended here for the next round. Anything else is still being made, and dies with cptrst.
      const now = treeOf(w.pid);
      if (run.code === 0 || (now.length === before.length && now.every((m) => m.tracer === 0))) {
        made++;
        expect(shape(now), `restart killed after ${d} ms`).to.deep.equal(shape(before));
        for (const m of now.reverse()) process.kill(m.pid, 'SIGKILL');
      }
      // what was made dies with cptrst (PTRACE_O_EXITKILL); init reaps it
      for (const m of before) expect(await waitGone(m.pid, 15000), `restart killed after ${d} ms: pid ${m.pid} left`).to.equal(true);
    }
    expect(made, 'every restart completed before the kill').to.be.lessThan(5);
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('a restart that fails in the middle of the tree leaves no process of it behind', async () => {
    const { w, before } = await startTree('tree');
    const img = path.join(w.dir, 'tree.img');
    await checkpointKill(w, before, img);
    const bad = path.join(w.dir, 'bad.img');
    // the last zombie's status becomes a core dump's, which cannot be made again: EBADIMG once
    // the tasks before it are made
    recodeImage(img, bad, {
      records: (recs) => {
        const zombies = recs.filter((r) => r.name === 'task' && r.obj.zombie === true);
        expect(zombies.length).to.equal(2);
        zombies[1].obj.exitStatus = 0x80 | 11;
        return recs;
      },
    });
    const rs = await cptrst(['restart', bad]);
    expect(rs.code).to.equal(1);
    expect(rs.stderr).to.match(/^cptrst: EBADIMG: pid \d+, exit status: wait status 0x8b /);
    for (const m of before) expect(await waitGone(m.pid, 10000), `pid ${m.pid} left behind`).to.equal(true);
    // the image itself is fine
    await restartSame(w, before, img);
    await expectPass(w);
  });

  it('an image whose task names a parent that is not before it is refused (EBADIMG), and leaves nothing behind', async () => {
    const { w, before } = await startTree('tree.py');
    const img = path.join(w.dir, 'tree.img');
    await checkpointKill(w, before, img);
    const bad = path.join(w.dir, 'orphan.img');
    recodeImage(img, bad, {
      records: (recs) => {
        const second = recs.filter((r) => r.name === 'task')[1];
        second.obj.ppid = 1;
        return recs;
      },
    });
    const rs = await cptrst(['restart', bad]);
    expect(rs.code).to.equal(1);
    expect(rs.stderr).to.match(/^cptrst: EBADIMG: pid \d+, process tree: its parent 1 is not an earlier task of the image/);
    for (const m of before) expect(await waitGone(m.pid, 10000), `pid ${m.pid} left behind`).to.equal(true);
    expect(await procState(w.pid)).to.equal(null);
  });
});
