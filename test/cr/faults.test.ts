/**
 * Nothing lost: faults injected into checkpoint and restart. A failed checkpoint leaves its
 * target running, untraced, and removes the partial image; a failed restart leaves no
 * half-made process; a bad or foreign image is refused with one clear line.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointFlags, CptError, ImageReader, ObjectFlag, ObjectType, fileSource, linux, loadModule, sys_checkpoint,
} from '@cptrst/core';
import { featureNames, xsaveInfo } from '@cptrst/arch-x86';
import {
  Workload, binaryPath, buildWorkloads, cptrst, expectRunningUntraced, killByPid, killStartedWorkloads, makeTempDir, parseResult,
  passLines, recodeImage, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;

async function expectStillPasses(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w)).verdict);
}

/**
 * State this CPU lacks, derived from the CPU itself: the lowest XSAVE component above AVX that
 * XCR0 does not enable (PKRU on one machine, AVX-512 or AMX on another), and a CPU flag that
 * /proc/cpuinfo does not list.
 */
function lackedHere(): { bit: number; component: string; flag: string } {
  const features = xsaveInfo().features;
  let bit = 3;
  while (bit < 63 && (features >> BigInt(bit)) & 1n) bit++;
  const here = new Set(linux.cpuFlags());
  const flag = ['amx_tile', 'avx512_fp16', 'avx512f', 'pku', 'sha_ni', 'avx2'].find((f) => !here.has(f)) ?? 'cptrst_no_such_flag';
  return { bit, component: featureNames(1n << BigInt(bit))[0], flag };
}

/** Offset of the last PAGES object's payload (well inside the stream, after the task exists). */
function lastPagesOffset(img: string): number {
  const fd = fs.openSync(img, 'r');
  try {
    const r = new ImageReader(fileSource(fd));
    r.readHead();
    let at = -1;
    for (let rec = r.next(); rec; rec = r.next()) if (rec.name === 'pages') at = rec.offset;
    return at;
  } finally {
    fs.closeSync(fd);
  }
}

describe('faults', function () {
  this.timeout(90000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  describe('a failed checkpoint leaves the target running and removes the partial image', () => {
    it('refuses a pipe shared with another process, naming the process, the fd and the other process', async () => {
      const dir = makeTempDir('pipe');
      const trig = path.join(dir, 'go');
      const out = path.join(dir, 'out');
      const ofd = fs.openSync(out, 'a');
      const child = spawn(binaryPath('pidhold'), [trig], { stdio: ['pipe', ofd, ofd], detached: true });
      fs.closeSync(ofd);
      child.unref();
      const pid = child.pid!;
      try {
        for (let i = 0; i < 500 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
        const img = path.join(dir, 'i.cpt');
        const r = await cptrst(['checkpoint', String(pid), '-o', img]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(ONE_LINE);
        // fd 0 is a pipe or socket whose other end this test holds: one process cannot be restored with it.
        expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, fd 0 \\((pipe|socket):\\[\\d+\\]\\): .*(also open in process|connected to socket:\\[\\d+\\], a socket of process) ${process.pid} `));
        expect(fs.existsSync(img), 'partial image left behind').to.equal(false);
        await expectRunningUntraced(pid);
        fs.writeFileSync(trig, '');
        expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
        expect(fs.readFileSync(out, 'utf8')).to.match(/PASS pidhold/);
      } finally {
        await killByPid(pid);
      }
    });

    it('refuses a tree in which a child holds what cptrst refuses (an inet socket)', async () => {
      const dir = makeTempDir('refuse');
      const logFd = fs.openSync(path.join(dir, 'log'), 'a');
      // the child, not the root, holds the refused object: the refusal must name the child
      // It says when its socket exists: a fixed wait loses the race on a loaded machine.
      const ready = path.join(dir, 'ready');
      const child = `import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); open("${ready}", "w").close(); time.sleep(60)`;
      const parent = spawn('bash', ['-c', `python3 -c '${child}' & wait`], {
        stdio: ['ignore', logFd, logFd],
        detached: true,
      });
      fs.closeSync(logFd);
      try {
        for (let i = 0; i < 3000 && !fs.existsSync(ready); i++) await sleep(10);
        expect(fs.existsSync(ready), 'the python child did not make its socket').to.equal(true);
        const c = await cptrst(['checkpoint', String(parent.pid), '-o', path.join(dir, 'c.cpt')]);
        expect(c.code).to.equal(1);
        expect(c.stderr).to.match(ONE_LINE).and.match(/EOPNOTSUPP: pid \d+, /);
        const childPid = Number(/pid (\d+),/.exec(c.stderr)![1]);
        expect(childPid).to.not.equal(parent.pid);
        expect(c.stderr).to.match(/socket/);
        await expectRunningUntraced(parent.pid!);
        expect(fs.readdirSync(dir).filter((f) => f.endsWith('.cpt'))).to.deep.equal([]);
      } finally {
        try {
          process.kill(-parent.pid!, 'SIGKILL'); // its process group: bash and its python child, by PID
        } catch {
          /* gone */
        }
      }
    });

    it('an image that cannot be written (/dev/full): ENOSPC, target untouched', async () => {
      const w = await startWorkload('dynamic');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/full']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/ENOSPC/);
      await expectRunningUntraced(w.pid);
      await expectStillPasses(w);
    });

    it('a filesystem that fills up half way: the partial image is removed', async function () {
      const mnt = makeTempDir('tinyfs');
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
      } catch {
        this.skip(); // not allowed to mount here
      }
      try {
        const w = await startWorkload('memory');
        const img = path.join(mnt, 'i.cpt');
        const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(ONE_LINE).and.match(/ENOSPC/);
        expect(fs.existsSync(img)).to.equal(false);
        await expectRunningUntraced(w.pid); // --kill happens only once the image is safe
        await expectStillPasses(w);
      } finally {
        execFileSync('umount', [mnt]);
      }
    });

    it('a process that exits in the middle of its checkpoint: a clean error and an empty image', async () => {
      const w = await startWorkload('memory');
      const img = path.join(w.dir, 'i.cpt');
      const fd = fs.openSync(img, 'w');
      let err: unknown;
      try {
        await sys_checkpoint(w.pid, fd, CheckpointFlags.RESUME, {
          onProgress: (e) => {
            if (e.phase === 'pages') process.kill(w.pid, 'SIGKILL');
          },
        });
      } catch (e) {
        err = e;
      } finally {
        fs.closeSync(fd);
      }
      expect(err).to.be.instanceOf(CptError);
      expect((err as CptError).pid).to.equal(w.pid);
      expect(fs.statSync(img).size, 'partial image not cut off').to.equal(0);
      const exit = await w.exited;
      expect(exit.signal).to.equal('SIGKILL');
    });
  });

  describe('a failed restart leaves no half-made process', () => {
    async function checkpointed(name: string): Promise<{ w: Workload; img: string }> {
      const w = await startWorkload(name);
      const img = path.join(w.dir, 'good.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      return { w, img };
    }

    it('a corrupted image is refused with one line; a corruption late in the stream kills what was made', async () => {
      const { w, img } = await checkpointed('static');
      const good = fs.readFileSync(img);
      for (const at of [40, lastPagesOffset(img) + 4096 + 100]) {
        const bad = Buffer.from(good);
        bad[at] ^= 0x5a;
        const badPath = path.join(w.dir, `bad-${at}.cpt`);
        fs.writeFileSync(badPath, bad);
        const r = await cptrst(['restart', badPath]);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(ONE_LINE).and.match(/^cptrst: EBADIMG: /);
        expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind after a bad image`).to.equal(true);
      }
      const truncated = path.join(w.dir, 'short.cpt');
      fs.writeFileSync(truncated, good.subarray(0, good.length - 3000));
      const r = await cptrst(['restart', truncated]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/EBADIMG/);
      expect(await waitGone(w.pid, 5000)).to.equal(true);
      // The good image still restores: nothing holds the PID.
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectStillPasses(w);
    });

    it('a PID that stays taken: a bounded wait, then an error naming the PID and its holder', async () => {
      const w = await startWorkload('pidhold');
      const img = path.join(w.dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img]); // the original keeps running
      expect(ck.code, ck.stderr).to.equal(0);
      const t0 = Date.now();
      const r = await cptrst(['restart', img], { env: { CPTRST_PID_WAIT_MS: '400' } });
      expect(Date.now() - t0).to.be.at.least(400);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`EEXIST: pid ${w.pid}.*taken by process ${w.pid} \\(pidhold`));
      await expectRunningUntraced(w.pid);
      await expectStillPasses(w);
    });

    it('a file that changed since the checkpoint is refused, naming it', async () => {
      const { w, img } = await checkpointed('files');
      // files.c opens "<trigger>.ro" read-only; change it behind the image's back.
      const victim = `${w.triggerPath}.ro`;
      expect(fs.existsSync(victim), victim).to.equal(true);
      const saved = fs.readFileSync(victim);
      const mtimeNs = fs.statSync(victim, { bigint: true }).mtimeNs;
      fs.appendFileSync(victim, 'changed');
      const r = await cptrst(['restart', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/ESTALE/).and.include(victim);
      expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
      // Put it back as it was (contents and times): the restart goes through.
      fs.writeFileSync(victim, saved);
      // Nanosecond mtime back (fs.utimes keeps only microseconds).
      execFileSync('touch', ['-m', '-d', `@${mtimeNs / 1000000000n}.${String(mtimeNs % 1000000000n).padStart(9, '0')}`, victim]);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectStillPasses(w);
    });

    it('an image from a CPU with state this one lacks is refused before anything is made', async () => {
      const { w, img } = await checkpointed('dynamic');
      const foreign = path.join(w.dir, 'foreign.cpt');
      const lacked = lackedHere();
      recodeImage(img, foreign, {
        head: (h) => {
          h.xsaveFeatures |= 1n << BigInt(lacked.bit);
          h.cpuFlags = [...h.cpuFlags, lacked.flag];
        },
      });
      const r = await cptrst(['restart', foreign]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/ENOTSUP/).and.include(lacked.component).and.include(lacked.flag);
      expect(fs.existsSync(`/proc/${w.pid}`)).to.equal(false);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectStillPasses(w);
    });

    it('an object of a type this cptrst does not know: refused unless its writer marked it optional', async () => {
      const { w, img } = await checkpointed('dynamic');
      const UNKNOWN = 0x7e01;
      const withObject = (name: string, flags: number): { file: string; offset: number } => {
        const file = path.join(w.dir, name);
        let offset = -1;
        recodeImage(img, file, {
          after: (wr, rec, tag) => {
            if (rec.type !== ObjectType.TASK) return;
            offset = wr.offset;
            wr.writeRaw(UNKNOWN, Buffer.from('something a newer cptrst wrote'), { ptag: tag, flags });
          },
        });
        expect(offset, 'no TASK object').to.be.greaterThan(0);
        return { file, offset };
      };
      const required = withObject('required.cpt', 0);
      const r = await cptrst(['restart', required.file]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/EOPNOTSUPP/).and.include(`unknown type ${UNKNOWN} at image offset ${required.offset}`);
      expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);

      const optional = withObject('optional.cpt', ObjectFlag.OPTIONAL);
      const s = await cptrst(['show', '--json', optional.file]);
      expect(s.code, s.stderr).to.equal(0);
      const shown = (JSON.parse(s.stdout) as { objects: { type: number; optional: boolean; offset: number }[] }).objects.find((o) => o.type === UNKNOWN);
      expect(shown).to.include({ optional: true, offset: optional.offset });
      const ok = await cptrst(['restart', optional.file]);
      expect(ok.code, ok.stderr).to.equal(0);
      await expectStillPasses(w);
    });
  });
});
