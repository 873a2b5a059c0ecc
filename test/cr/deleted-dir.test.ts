/**
 * Directories removed while a process holds them (files deleted-dir.ts): the deldir workload's
 * working directory and an fd of it, removed before the checkpoint, are one removed directory
 * again after the restart, with their mode and times, and the restart leaves no entry behind.
 * A path taken again since, and an image naming two removed directories at one path, are
 * refused, with nothing left (no process, no directory).
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  Workload, buildWorkloads, cptrst, expectRunningUntraced, killStartedWorkloads, parseResult, passLines, recodeImage, startWorkload, trigger, waitGone, waitResult,
} from '../support';

async function expectPasses(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w)).verdict ?? '');
}

describe('removed directories (files deleted-dir.ts)', function () {
  this.timeout(90000);
  before(async () => {
    await buildWorkloads();
    loadModule('@cptrst/cpt-module');
  });
  afterEach(() => killStartedWorkloads());

  async function checkpointed(): Promise<{ w: Workload; img: string; removed: string }> {
    const w = await startWorkload('deldir');
    const img = path.join(w.dir, 'img');
    const removed = `${fs.realpathSync(path.dirname(w.triggerPath))}/${path.basename(w.triggerPath)}.d/a`;
    expect(fs.readlinkSync(`/proc/${w.pid}/cwd`)).to.equal(`${removed} (deleted)`);
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 5000)).to.equal(true);
    return { w, img, removed };
  }

  it('the working directory and an fd of it, removed: one removed directory again, mode and mtime kept, nothing left behind', async () => {
    const { w, img, removed } = await checkpointed();
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(fs.existsSync(removed), `${removed} left behind`).to.equal(false);
    expect(fs.readlinkSync(`/proc/${w.pid}/cwd`)).to.equal(`${removed} (deleted)`);
    await expectPasses(w);
  });

  it('its path taken again since the checkpoint: EEXIST, no process, the directory there untouched', async () => {
    const { w, img, removed } = await checkpointed();
    fs.mkdirSync(removed);
    fs.writeFileSync(path.join(removed, 'mine'), 'x');
    const r = await cptrst(['restart', img]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(/^cptrst: EEXIST: .*the deleted directory .* cannot be made again: its path exists/);
    expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    expect(fs.readFileSync(path.join(removed, 'mine'), 'utf8')).to.equal('x');
    fs.rmSync(removed, { recursive: true });
    const ok = await cptrst(['restart', img]);
    expect(ok.code, ok.stderr).to.equal(0);
    await expectPasses(w);
  });

  it('a working directory of /proc\'s, gone with its process: refused at checkpoint, the process untouched', async () => {
    // The process's cwd is /proc/CHILD of a child it has reaped: "/proc/CHILD (deleted)", which mkdir cannot make.
    const script = 'import os, sys, time\npid = os.fork()\nif pid == 0:\n    time.sleep(0.3)\n    os._exit(0)\nos.chdir(f"/proc/{pid}")\nos.waitpid(pid, 0)\nprint("READY", flush=True)\ntime.sleep(120)\n';
    const p = spawn('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    try {
      await new Promise<void>((resolve, reject) => {
        p.stdout.on('data', (b: Buffer) => { if (b.toString().includes('READY')) resolve(); });
        p.on('exit', () => reject(new Error('the python process ended early')));
      });
      const cwd = fs.readlinkSync(`/proc/${p.pid}/cwd`);
      expect(cwd).to.match(/^\/proc\/\d+ \(deleted\)$/);
      const r = await cptrst(['checkpoint', String(p.pid), '-o', '-']);
      expect(r.code).to.equal(1);
      expect(r.stdout).to.equal('');
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${p.pid}, cwd /proc/\\d+ \\(deleted\\): the deleted directory is on a filesystem where it cannot be made again`));
      await expectRunningUntraced(p.pid!);
      expect(fs.readlinkSync(`/proc/${p.pid}/cwd`)).to.equal(cwd);
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('an image naming two removed directories at one path: EBADIMG, and the one made is removed again', async () => {
    const { w, img, removed } = await checkpointed();
    const bad = path.join(w.dir, 'bad');
    let edited = 0;
    recodeImage(img, bad, {
      records: (recs) => {
        for (const r of recs) {
          if (r.name !== 'file' || r.obj.kind !== 'deleted-directory') continue;
          r.obj.inode = (r.obj.inode as bigint) + 1n;
          edited++;
        }
        return recs;
      },
    });
    expect(edited).to.equal(1);
    const r = await cptrst(['restart', bad]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.match(/^cptrst: EBADIMG: .*two deleted directories at /);
    expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    expect(fs.existsSync(removed), `${removed} left behind`).to.equal(false);
  });
});
