/**
 * The task's own state: per-process settings (affinity, oom_score_adj, parent-death signal,
 * timer slack, subreaper), interval timers, the refusals (a POSIX timer on another process's
 * clock, foreign namespaces),
 * and images not owned by root: restored with the owner's rights, never more.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { linux, loadModule } from '@cptrst/core';
import {
  CLI_MAIN, CopiedRecord, Workload, binaryPath, buildWorkloads, checkpointKill, cptrst, killByPid, killStartedWorkloads,
  makeTempDir, makeUserDir, parseResult, passLines, procState, recodeImage, removeUserDir, sleep, startWorkload, trigger, waitGone,
  waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
const NOBODY = { uid: 65534, gid: 65534 };

async function expectPass(w: Workload): Promise<void> {
  const r = parseResult(await waitResult(w, 30000));
  expect(passLines(w.name, w.args)).to.include(r.verdict, `output: ${JSON.stringify(fs.readFileSync(w.resultPath, 'utf8'))}`);
  expect(r.extra).to.deep.equal([]);
}

async function restartOk(w: Workload, img: string): Promise<void> {
  const rs = await cptrst(['restart', img]);
  expect(rs.code, `restart failed: ${rs.stderr}`).to.equal(0);
  expect(rs.stdout.trim()).to.equal(String(w.pid));
  expect((await procState(w.pid))?.tracerPid).to.equal(0);
}

type Rec = CopiedRecord;

/** A new group in a cgroup hierarchy where this machine lets one be made (v1 pids, or v2), or undefined. */
function makeCgroup(name: string): { dir: string; path: string } | undefined {
  for (const controllers of ['pids', '']) {
    const m = linux.findCgroupMount(controllers);
    if (!m) continue;
    const dir = path.join(m.mountPoint, name);
    try {
      fs.mkdirSync(dir);
      return { dir, path: path.posix.join(m.root, name) };
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** Removes a group once the processes that were in it are gone (a dying one may hold it a moment). */
function removeCgroup(dir: string): void {
  for (let i = 0; i < 100; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
  }
}

const only = (recs: Rec[], name: string): Record<string, unknown> => {
  const found = recs.filter((r) => r.name === name);
  expect(found, `${name} objects`).to.have.length(1);
  return found[0].obj;
};

describe('task state', function () {
  this.timeout(120000);
  const userDirs: string[] = [];
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());
  after(() => userDirs.forEach(removeUserDir));
  const userDir = (p: string) => {
    const d = makeUserDir(p);
    userDirs.push(d);
    return d;
  };

  // oom_score_adj below the floor a process inherits (0 here) needs CAP_SYS_RESOURCE, which
  // root lacks on some machines (this project's): a value above it is used.
  it('settings: CPU affinity, oom_score_adj, parent-death signal, timer slack, subreaper, dumpable, I/O priority, core dump filter, MCE policy, login uid and speculation controls come back', async () => {
    const w = await startWorkload('settings', ['--oom', '500']);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    await restartOk(w, img);
    expect(fs.readFileSync(`/proc/${w.pid}/oom_score_adj`, 'utf8').trim()).to.equal('500');
    await trigger(w);
    await expectPass(w);
  });

  it('control groups: restored into its own group (which must exist: one that is gone is refused, naming it)', async function () {
    const made = makeCgroup(`cptrst-test-${process.pid}`);
    if (made === undefined) return this.skip(); // no cgroup hierarchy here where a group can be made
    const { dir, path: group } = made;
    try {
      const w = await startWorkload('settings', ['--oom', '500', '--cgroup', dir]);
      const img = path.join(w.dir, 'image.cpt');
      await checkpointKill(w, img);
      fs.rmdirSync(dir);
      const r = await cptrst(['restart', img]);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/^cptrst: ENOENT: pid \d+, cgroup [^:]*:\S+: group \S+ of .* does not exist here/).and.include(group);
      expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
      fs.mkdirSync(dir);
      await restartOk(w, img);
      expect(fs.readFileSync(`/proc/${w.pid}/cgroup`, 'utf8')).to.include(`:${group}\n`);
      await trigger(w);
      await expectPass(w);
      process.kill(w.pid, 'SIGKILL');
      await waitGone(w.pid, 15000, { zombieOk: true });
    } finally {
      removeCgroup(dir);
    }
  });

  it('itimers: ITIMER_REAL checkpointed between expiry and dequeue keeps its period; VIRTUAL and PROF keep firing', async () => {
    const w = await startWorkload('itimers');
    await sleep(200);
    const img = path.join(w.dir, 'image.cpt');
    await checkpointKill(w, img);
    // The state the workload set up is the one recorded: value 0, interval 50 ms, SIGALRM pending.
    const shown = await cptrst(['show', '--json', img]);
    const doc = JSON.parse(shown.stdout) as { objects: Array<{ name: string; fields: Record<string, unknown> }> };
    expect(doc.objects.some((o) => o.name === 'sigpending' && o.fields.signo === 14)).to.equal(true);
    await restartOk(w, img);
    await trigger(w);
    await expectPass(w);
  });

  it("refuses a POSIX timer on another process's CPU clock at checkpoint, naming it; the process runs on", async () => {
    const w = await startWorkload('itimers', ['--posix-timer']);
    const img = path.join(w.dir, 'image.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, posix timer \\d+ \\(clock -\\d+, .*: it counts the CPU time of process \\d+, another process; such a timer is not supported\n`));
    expect(fs.existsSync(img)).to.equal(false);
    expect((await procState(w.pid))?.tracerPid).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  const refusals: Array<{ what: string; argv: (hold: string, trig: string) => string[]; object: string; why: RegExp }> = [
    { what: 'a process in another namespace than cptrst', argv: (h, t) => ['unshare', '--uts', h, t], object: 'uts namespace uts:\\[\\d+\\]', why: /another uts namespace/ },
    { what: 'securebits (noroot)', argv: (h, t) => ['setpriv', '--securebits', '+noroot', h, t], object: 'securebits 0x1', why: /securebits/ },
  ];
  for (const c of refusals) {
    it(`refuses ${c.what}, naming it; the process runs on`, async () => {
      const dir = makeTempDir('refuse');
      const trig = path.join(dir, 'go');
      const out = path.join(dir, 'out');
      const ofd = fs.openSync(out, 'a');
      const [cmd, ...args] = c.argv(binaryPath('pidhold'), trig);
      const child = spawn(cmd, args, { stdio: ['ignore', ofd, ofd], detached: true });
      fs.closeSync(ofd);
      child.unref();
      const pid = child.pid!;
      try {
        for (let i = 0; i < 500 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
        expect(fs.readFileSync(out, 'utf8')).to.equal(`READY ${pid}\n`);
        const r = await cptrst(['checkpoint', String(pid), '-o', path.join(dir, 'i.cpt')]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, ${c.object}: `)).and.match(c.why);
        expect(fs.existsSync(path.join(dir, 'i.cpt'))).to.equal(false);
        expect((await procState(pid))?.tracerPid).to.equal(0);
        fs.writeFileSync(trig, '');
        expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
        expect(fs.readFileSync(out, 'utf8')).to.match(/PASS pidhold/);
      } finally {
        await killByPid(pid);
      }
    });
  }

  it('task --nobody (a root-owned image): files are opened again with the task\'s own identity', async () => {
    const dir = userDir('task-nobody');
    const cwd = path.join(dir, 'cwd');
    fs.mkdirSync(cwd, { mode: 0o755 });
    // fsuid and fsgid are the effective ids, 65533: the result file must be theirs.
    const w = await startWorkload('task', [cwd, '--nobody'], { dir, asUser: { uid: 65533, gid: 65533 } });
    const img = path.join(dir, 'image.cpt');
    await checkpointKill(w, img);
    await restartOk(w, img);
    await trigger(w);
    await expectPass(w);
  });

  describe('an image not owned by root is restored with its owner\'s rights, never more', () => {
    /** A process running as nobody, checkpointed by root; its image is then given to nobody. */
    async function userImage(name: string, args: (dir: string) => string[]): Promise<{ w: Workload; img: string; dir: string }> {
      const dir = userDir(name);
      const w = await startWorkload(name, args(dir), { dir, asUser: NOBODY });
      const img = path.join(dir, 'image.cpt');
      await checkpointKill(w, img);
      fs.chownSync(img, NOBODY.uid, NOBODY.gid);
      return { w, img, dir };
    }

    async function expectRefused(pid: number, img: string, pattern: RegExp): Promise<void> {
      const r = await cptrst(['restart', img]);
      expect(r.code, `signal ${r.signal}; ${r.stderr}`).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(pattern);
      expect(await waitGone(pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
    }

    it('an honest image (task as nobody) restarts; raised uids, a capability, a foreign group, another session or the old order are refused before the process is made', async () => {
      const { w, img, dir } = await userImage('task', (d) => {
        fs.mkdirSync(path.join(d, 'cwd'), { mode: 0o755 });
        return [path.join(d, 'cwd'), '--as', `${NOBODY.uid}:${NOBODY.gid}`];
      });
      const craft = (n: string, edit: (recs: Rec[]) => Rec[]) => {
        const p = path.join(dir, `${n}.cpt`);
        recodeImage(img, p, { records: edit, owner: NOBODY });
        return p;
      };
      // (a) uid 0
      await expectRefused(w.pid, craft('root', (recs) => {
        only(recs, 'creds').uids = [0, 0, 0, 0];
        return recs;
      }), new RegExp(`^cptrst: EPERM: pid ${w.pid}, creds: .*uid 65534.*real uid 0 is not the owner nobody`));
      // (b) a capability (CAP_DAC_OVERRIDE) in every set
      await expectRefused(w.pid, craft('cap', (recs) => {
        const c = only(recs, 'creds');
        c.capEff = c.capPrm = c.capInh = 2n;
        return recs;
      }), new RegExp(`^cptrst: EPERM: pid ${w.pid}, creds: .*permitted capabilities 0x2`));
      // not a session leader: it would join cptrst's session and its terminal
      await expectRefused(w.pid, craft('session', (recs) => {
        only(recs, 'task').sid = process.pid;
        return recs;
      }), new RegExp(`^cptrst: EPERM: pid ${w.pid}, session ${process.pid}: .*would join cptrst's session`));
      // a group nobody is not in (root's)
      await expectRefused(w.pid, craft('group', (recs) => {
        only(recs, 'creds').groups = [0];
        return recs;
      }), /EPERM: .*supplementary group 0 is not a group of nobody/);
      // the credentials after the memory (the order of images written before 1.2): the task would
      // be made and its files opened before the credentials are known
      await expectRefused(w.pid, craft('late', (recs) => {
        const creds = recs.find((r) => r.name === 'creds')!;
        return [...recs.filter((r) => r !== creds), creds];
      }), /^cptrst: EBADIMG: .*before the task's credentials/);
      // The same image as written restarts, with the owner's rights.
      await restartOk(w, img);
      const st = fs.readFileSync(`/proc/${w.pid}/status`, 'utf8');
      expect(/^Uid:\s+(.*)$/m.exec(st)![1].split(/\s+/)).to.deep.equal(['65534', '65534', '65534', '65534']);
      expect(/^CapPrm:\s+(.*)$/m.exec(st)![1]).to.equal('0000000000000000');
      await trigger(w);
      await expectPass(w);
    });

    it('its files are opened with the owner\'s identity: a root-only file or one of cptrst\'s groups is refused (EACCES), even when cptrst has that group', async () => {
      const { w, img, dir } = await userImage('settings', () => ['--as', `${NOBODY.uid}:${NOBODY.gid}`]);
      // Files the owner cannot open: root's own, and one readable by a group of cptrst's (adm, 4).
      const rootOnly = path.join(dir, 'root-only');
      fs.writeFileSync(rootOnly, 'secret\n', { mode: 0o600 });
      const groupOnly = path.join(dir, 'group-only');
      fs.writeFileSync(groupOnly, 'secret\n', { mode: 0o640 });
      fs.chownSync(groupOnly, 0, 4);
      for (const target of [rootOnly, groupOnly]) {
        const crafted = path.join(dir, `${path.basename(target)}.cpt`);
        recodeImage(img, crafted, {
          records: (recs) => {
            const f = recs.find((r) => r.name === 'file' && r.obj.path === w.resultPath);
            expect(f, 'the result file in the image').to.not.equal(undefined);
            const st = fs.statSync(target, { bigint: true });
            Object.assign(f!.obj, { path: target, flags: 0 /* O_RDONLY */, pos: 0n, size: st.size, mtimeNs: st.mtimeNs, inode: st.ino });
            return recs;
          },
          owner: NOBODY,
        });
        // cptrst itself in group 4 as well: the helper's groups must not reach the restored task.
        const r = await cptrst(['restart', crafted]);
        const withGroup = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const c = spawn('setpriv', ['--groups', '4', process.execPath, CLI_MAIN, 'restart', crafted], { stdio: ['ignore', 'pipe', 'pipe'] });
          let stderr = '';
          c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          c.on('exit', (code) => resolve({ code, stderr }));
        });
        for (const res of [r, withGroup]) {
          expect(res.code, res.stderr).to.equal(1);
          expect(res.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EACCES: pid ${w.pid}, .*${path.basename(target)}`));
        }
        expect(await waitGone(w.pid, 5000, { zombieOk: true }), 'a process was left behind').to.equal(true);
      }
      await restartOk(w, img);
      await trigger(w);
      await expectPass(w);
    });

    it('settings as nobody: oom_score_adj and the rest are set by the task itself after the drop', async () => {
      const { w, img } = await userImage('settings', () => ['--oom', '300', '--as', `${NOBODY.uid}:${NOBODY.gid}`]);
      await restartOk(w, img);
      await trigger(w);
      await expectPass(w);
    });

    it('a raised hard limit, nice -5 or oom_score_adj below 0 are refused by the kernel after the drop: EPERM, nothing left', async () => {
      const { w, img, dir } = await userImage('settings', () => ['--oom', '300', '--as', `${NOBODY.uid}:${NOBODY.gid}`]);
      const craft = (n: string, edit: (recs: Rec[]) => void) => {
        const p = path.join(dir, `${n}.cpt`);
        recodeImage(img, p, {
          records: (recs) => {
            edit(recs);
            return recs;
          },
          owner: NOBODY,
        });
        return p;
      };
      await expectRefused(w.pid, craft('rlimit', (recs) => {
        const r = only(recs, 'rlimits') as { cur: bigint[]; max: bigint[] };
        // The first limit with a finite hard limit (the process inherits cptrst's hard limits): one more.
        const i = r.max.findIndex((m) => m < 0xffffffffffffffffn);
        expect(i).to.be.at.least(0);
        r.max[i] += 1n;
        r.cur[i] = r.max[i];
      }), new RegExp(`^cptrst: EPERM: pid ${w.pid}, resource limits: .*refused by the kernel with the rights of the image's owner \\(uid 65534\\)`));
      await expectRefused(w.pid, craft('nice', (recs) => {
        only(recs, 'task').nice = -5;
      }), /^cptrst: EPERM: pid \d+, scheduling: .*refused by the kernel with the rights of the image's owner.*setpriority\(nice -5\)/);
      await expectRefused(w.pid, craft('oom', (recs) => {
        only(recs, 'task-misc').oomScoreAdj = -100;
      }), /^cptrst: EPERM: pid \d+, oom_score_adj: .*refused by the kernel with the rights of the image's owner/);
      // The image as written still restarts.
      await restartOk(w, img);
      await trigger(w);
      await expectPass(w);
    });
  });
});
