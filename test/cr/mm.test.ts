/**
 * Memory: areas with VmFlags of their own and mm-wide settings across C/R (mmstate checks
 * itself); refusals happen before a byte of the image is written (checkpoint into a pipe);
 * crafted images (re-encoded real ones) that would write into a file through a shared mapping,
 * name a mapped file by a path with "..", or meet a symlink swapped in for a mapped file are
 * refused and leave no process behind.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { execFile } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';
import { CptError, linux, loadModule, sys_checkpoint } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, cptrst, editedObject, expectRunningUntraced, killStartedWorkloads, parseResult, passLines,
  readImage, recodeImage, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
const execFileP = promisify(execFile);

async function expectPasses(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w)).verdict);
}

/**
 * Re-encodes an image with the project's codec. `visit` sees each record (its ptag already in
 * the new image's tags) and may emit objects of its own before it; it returns false to drop the
 * record, or a replacement object. Tags are renumbered, parents follow.
 */
/** A copy of an image object (same class, so the same layout), with some fields changed. */
const sha256 = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

describe('memory (mm)', function () {
  this.timeout(90000);
  before(async () => {
    await buildWorkloads();
    loadModule('@cptrst/cpt-module');
  });
  afterEach(() => killStartedWorkloads());

  it('droppable, locked, sealed and madvise\'d areas, THP disabled, membarrier registrations and MCL_FUTURE survive C/R', async () => {
    const w = await startWorkload('mmstate');
    const img = path.join(w.dir, 'i.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8')).to.match(/^THP_enabled:\s+0$/m);
    await expectPasses(w);
  });

  describe('refusals come before the head: nothing is written', () => {
    it('an area registered with userfaultfd, checkpointed into a pipe (-o - | wc -c): 0 bytes, one line naming it, the process untouched', async () => {
      const w = await startWorkload('mmstate', ['refused']);
      const r = await execFileP('bash', ['-c', `"${process.execPath}" "${CLI_MAIN}" checkpoint ${w.pid} -o - 2>"${w.dir}/err" | wc -c`]);
      expect(r.stdout.trim()).to.equal('0');
      const err = fs.readFileSync(path.join(w.dir, 'err'), 'utf8');
      expect(err).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, vma [0-9a-f]+-[0-9a-f]+: the area is registered with a userfaultfd for missing pages \\(VmFlags um\\); the process holds a userfaultfd of its own`));
      await expectRunningUntraced(w.pid);
      await expectPasses(w);
    });

    it('an area registered with userfaultfd, through the API into a pipe fd: CptError, and the read end sees end of file at once', async () => {
      const w = await startWorkload('mmstate', ['refused']);
      const fds = Buffer.alloc(8);
      // Non-blocking, so that a checkpoint that wrongly goes on fails on a full pipe instead of hanging the test.
      expect(linux.rawSyscall(linux.SYS.pipe2, fds, linux.O.CLOEXEC | linux.O.NONBLOCK)).to.equal(0n);
      const [rd, wr] = [fds.readInt32LE(0), fds.readInt32LE(4)];
      let err: unknown;
      try {
        await sys_checkpoint(w.pid, wr, 0);
      } catch (e) {
        err = e;
      } finally {
        fs.closeSync(wr);
      }
      try {
        expect(err).to.be.instanceOf(CptError);
        expect((err as CptError).code).to.equal('EOPNOTSUPP');
        expect((err as CptError).object).to.match(/^vma [0-9a-f]+-[0-9a-f]+$/);
        expect((err as CptError).message).to.match(/registered with a userfaultfd for missing pages \(VmFlags um\)/);
        expect(fs.readSync(rd, Buffer.alloc(65536))).to.equal(0);
      } finally {
        fs.closeSync(rd);
      }
      await expectRunningUntraced(w.pid);
      await expectPasses(w);
    });
  });

  describe('crafted images', () => {
    async function checkpointed(): Promise<{ w: Workload; img: string; mapped: string }> {
      const w = await startWorkload('memory');
      const img = path.join(w.dir, 'good.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      return { w, img, mapped: fs.realpathSync(`${w.triggerPath}.mapped`) };
    }

    async function refused(w: Workload, img: string, code: string, what: RegExp): Promise<void> {
      const r = await cptrst(['restart', img]);
      expect(r.code, `signal ${r.signal}; ${r.stderr}`).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: ${code}: `)).and.match(what);
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    }

    it('a shared writable mapping of a root-owned file with pages of data is refused; the file is unchanged', async () => {
      const { w, img } = await checkpointed();
      const victim = path.join(w.dir, 'root-owned');
      fs.writeFileSync(victim, Buffer.alloc(8192, 'r'), { mode: 0o644 });
      fs.chownSync(victim, 0, 0);
      const before = sha256(victim);
      const st = fs.statSync(victim, { bigint: true });
      const at = 0x5a5a00000000n;
      const data = Buffer.alloc(4096, 'X');
      for (const withCount of [true, false]) {
        const bad = path.join(w.dir, `shared-${withCount}.cpt`);
        // Objects of the real image lend their classes (their layouts) to the new ones.
        let template: object | undefined;
        let pagesTemplate: object | undefined;
        for (const rec of readImage(img).recs) {
          if (rec.name === 'vma') template ??= rec.obj;
          if (rec.name === 'pages') pagesTemplate ??= rec.obj;
        }
        recodeImage(img, bad, {
          records: (recs) => {
            const mm = recs.find((r) => r.name === 'mm')!;
            mm.obj.layout = [...(mm.obj.layout as bigint[]), at, at + 8192n];
            return recs;
          },
          after: (wr, rec, _tag, ptag) => {
            if (rec.name !== 'mm') return;
            // The task is the MM's parent: the VMA goes right after the MM, as a sibling.
            const vma = editedObject(template!, {
              start: at, end: at + 8192n, prot: 3, shared: true, kind: 'file', path: fs.realpathSync(victim), pgoff: 0n,
              vmFlags: ['rd', 'wr', 'sh', 'mr', 'mw', 'me', 'ms'], inode: st.ino, fileDev: st.dev, fileSize: st.size,
              fileMtimeNs: st.mtimeNs, pageCount: withCount ? 1n : 0n,
            });
            const vmaTag = wr.write(vma, { ptag });
            wr.writeWithPages(editedObject(pagesTemplate!, { vaddr: at, count: 1 }), data, { ptag: vmaTag });
          },
        });
        await refused(w, bad, 'EBADIMG', /whose contents are not kept in an image/);
        expect(sha256(victim), 'the file was written').to.equal(before);
        expect(fs.statSync(victim, { bigint: true }).mtimeNs).to.equal(st.mtimeNs);
      }
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectPasses(w);
    });

    it('a mapped file named by a path with ".." is EBADIMG', async () => {
      const { w, img, mapped } = await checkpointed();
      const crooked = `${path.dirname(mapped)}/../${path.basename(path.dirname(mapped))}/${path.basename(mapped)}`;
      const bad = path.join(w.dir, 'dotdot.cpt');
      let n = 0;
      recodeImage(img, bad, {
        records: (recs) => {
          for (const rec of recs) {
            if (rec.name !== 'vma' || rec.obj.path !== mapped) continue;
            n++;
            rec.obj.path = crooked;
          }
          return recs;
        },
      });
      expect(n).to.be.greaterThan(0);
      await refused(w, bad, 'EBADIMG', /"\.\." component/);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectPasses(w);
    });

    it('a mapped file swapped for a symlink (to the very same file), removed, or replaced before restart is refused, naming the area', async () => {
      const { w, img, mapped } = await checkpointed();
      const real = `${mapped}.real`;
      fs.renameSync(mapped, real);
      fs.symlinkSync(real, mapped);
      await refused(w, img, 'ELOOP', /symlink/);
      fs.unlinkSync(mapped);
      // Gone: the open's errno, naming the area.
      await refused(w, img, 'ENOENT', new RegExp(`vma [0-9a-f]+-[0-9a-f]+ ${mapped}: cannot open ${mapped} inside the restored process`));
      // Another file at that path (same size, other mtime): not the file of the checkpoint.
      fs.copyFileSync(real, mapped);
      await refused(w, img, 'ESTALE', new RegExp(`vma [0-9a-f]+-[0-9a-f]+ ${mapped}: ${mapped} is not the file of the checkpoint`));
      fs.renameSync(real, mapped);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectPasses(w);
    });
  });
});
