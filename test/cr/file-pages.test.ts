/**
 * The pages section from the image file (mm/src/file-pages.ts): copied into the restored process
 * by cptrst through a userfaultfd the process made (the default for a process with 256 MiB or more
 * there; CPTRST_PAGES_COPY_IN=1 whatever the size), or read by the process itself (a smaller one,
 * CPTRST_PAGES_COPY_IN=0, or one that cannot make a userfaultfd). A process with megabytes of private
 * memory restarts with every byte right, the image's fds only (neither the userfaultfd nor the
 * image's descriptor it held for the reads is left) and its areas as they were (none registered
 * with a userfaultfd any more), for root's image and for a user's; through a pipe the pages go
 * through cptrst as before. A payload that fails its checksum, points outside its area or is cut
 * short is refused with one line, and nothing is left running, both ways, whether cptrst checks
 * the payloads over a mapping of the file or reads them.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ImageReader, fileSource, loadModule } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, checkpointKill, cptrst, killStartedWorkloads, makeUserDir, parseResult, passLines, readImage, recodeImage,
  removeUserDir, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;
const NOBODY = { uid: 65534, gid: 65534 };
/** Above what a process must have in the section to read its pages itself (4 MiB). */
const MIB = '24';

/** Each open fd of a process: its number, what it is, and its flags. */
function fdTable(pid: number): string[] {
  return fs.readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b).map((fd) => {
    const flags = /^flags:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1];
    return `${fd} ${fs.readlinkSync(`/proc/${pid}/fd/${fd}`)} ${flags}`;
  });
}

/** The pages section's PAGES objects: image offsets of their payloads, and their lengths. */
function sectionPayloads(img: string): Array<{ offset: number; length: number; objectOffset: number }> {
  const fd = fs.openSync(img, 'r');
  try {
    const r = new ImageReader(fileSource(fd));
    r.readHead();
    let inSection = false;
    const out: Array<{ offset: number; length: number; objectOffset: number }> = [];
    for (let rec = r.next(); rec; rec = r.next()) {
      if (rec.name === 'pages-follow') inSection = true;
      else if (inSection && rec.pages) out.push({ offset: rec.pagesOffset!, length: rec.pages.length, objectOffset: rec.offset });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether restart checks this image's payloads over a mapping of it (a file only root can change). */
function mayMap(img: string): boolean {
  const fd = fs.openSync(img, 'r');
  try {
    return 'mapAt' in fileSource(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The areas of a process (smaps' range and VmFlags but `ac`), and whether any is still registered with a userfaultfd (VmFlags um, uw, ui). */
function areas(pid: number): { list: string[]; registered: boolean } {
  const list = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n').filter((l) => /^[0-9a-f]+-[0-9a-f]+ /.test(l) || l.startsWith('VmFlags:'))
    // "ac" (the area has an anon_vma) says whether a page was ever copied into it, which is not state that restart keeps.
    .map((l) => (l.startsWith('VmFlags:') ? l.trim().replace(/ ac(?= |$)/, '') : l.split(' ')[0]));
  return { list, registered: list.some((l) => l.startsWith('VmFlags:') && / (um|uw|ui)( |$)/.test(l)) };
}

/** The way the pages went in, from the restart's timings (a timing only that way has). */
function way(timings: Record<string, number>): string {
  if ('pages read by the process' in timings) return 'read';
  if ('pages copied in' in timings) return 'copy';
  return 'cptrst';
}

async function expectPass(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w, 60000)).verdict);
}

describe('pages of the pages section from the image file', function () {
  this.timeout(120000);
  const userDirs: string[] = [];
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());
  after(() => userDirs.forEach(removeUserDir));

  async function restartOk(w: Workload, img: string, opts: { through?: 'file' | 'pipe'; env?: Record<string, string> } = {}): Promise<Record<string, number>> {
    let r: { code: number | null; stdout: string; stderr: string };
    if (opts.through === 'pipe') {
      // cat | cptrst restart -: the image on a pipe.
      r = await new Promise((resolve) => {
        const cat = spawn('cat', [img], { stdio: ['ignore', 'pipe', 'inherit'] });
        const c = spawn(process.execPath, [CLI_MAIN, 'restart', '--json', '-'], { stdio: [cat.stdout, 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        c.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    } else {
      r = await cptrst(['restart', '--json', img], { env: opts.env });
    }
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { pid: number; timings: Record<string, number> };
    expect(out.pid).to.equal(w.pid);
    return out.timings;
  }

  // CPTRST_PAGES_COPY_IN=1 copies in whatever the size; without it, a process this small reads its pages itself.
  for (const [name, env, expected] of [['copied in by cptrst', { CPTRST_PAGES_COPY_IN: '1' }, 'copy'], ['read by the process itself', { CPTRST_PAGES_COPY_IN: '' }, 'read']] as const) {
    it(`root's image, pages ${name}: every byte right, its fd table and its areas as before (no userfaultfd, no image fd left)`, async () => {
      // Free fds below its highest one: what was lent took the lowest (3), and must be gone again.
      const w = await startWorkload('pagesfds', [MIB]);
      const fds = fdTable(w.pid);
      const before = areas(w.pid);
      const img = path.join(w.dir, 'i.cpt');
      await checkpointKill(w, img);
      const timings = await restartOk(w, img, { env });
      expect(way(timings)).to.equal(expected);
      expect(fdTable(w.pid)).to.deep.equal(fds);
      const after = areas(w.pid);
      expect(after.registered, after.list.join('\n')).to.equal(false);
      expect(after.list).to.deep.equal(before.list);
      await expectPass(w);
    });
  }

  it('a user\'s image: the same, with the owner\'s rights', async () => {
    const dir = makeUserDir('filepages');
    userDirs.push(dir);
    const w = await startWorkload('pagesfds', [MIB], { dir, asUser: NOBODY, startAsUser: true });
    expect(fs.statSync(`/proc/${w.pid}`).uid).to.equal(NOBODY.uid);
    const fds = fdTable(w.pid);
    const img = path.join(dir, 'i.cpt');
    await checkpointKill(w, img);
    fs.chownSync(img, NOBODY.uid, NOBODY.gid);
    const timings = await restartOk(w, img, { env: { CPTRST_PAGES_COPY_IN: '1' } });
    expect(way(timings)).to.equal('copy');
    expect(fdTable(w.pid)).to.deep.equal(fds);
    expect(areas(w.pid).registered).to.equal(false);
    expect(/^Uid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8'))![1].split(/\s+/)).to.deep.equal(['65534', '65534', '65534', '65534']);
    await expectPass(w);
  });

  it('through a pipe, the pages go through cptrst as before', async () => {
    const w = await startWorkload('survive', [MIB]);
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const timings = await restartOk(w, img, { through: 'pipe' });
    expect(way(timings)).to.equal('cptrst');
    await expectPass(w);
  });

  it('a damaged payload, one outside its area, a file cut inside a payload: one line (EBADIMG), nothing left, both ways; the good image still restarts', async () => {
    const w = await startWorkload('survive', [MIB]);
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const good = fs.readFileSync(img);
    const section = sectionPayloads(img);
    expect(section.length, 'the image has a pages section').to.be.greaterThan(4);
    const refused = async (bad: string, pattern: RegExp, env?: Record<string, string>) => {
      const r = await cptrst(['restart', bad], { env });
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(pattern);
      expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
    };
    // A byte changed in the first payload, in the fourth (read by the process: one cptrst writes
    // itself over a mapping), and in the last (found after the others went in); each in a file only
    // root can change (checked over a mapping of it) and in one others may write to (read with
    // pread); pages copied in by cptrst, and read by the process.
    for (const env of [{ CPTRST_PAGES_COPY_IN: '1' }, { CPTRST_PAGES_COPY_IN: '0' }]) {
      for (const mode of [0o644, 0o666]) {
        for (const p of [section[0], section[3], section[section.length - 1]]) {
          const bad = Buffer.from(good);
          bad[p.offset + p.length - 100] ^= 0x5a;
          const f = path.join(w.dir, `bad-${p.offset}.cpt`);
          fs.writeFileSync(f, bad, { mode });
          fs.chmodSync(f, mode);
          expect(mayMap(f), f).to.equal(mode === 0o644);
          await refused(f, /^cptrst: EBADIMG: .*checksum mismatch/, env);
        }
        // The file ends inside the last payload.
        const last = section[section.length - 1];
        const cut = path.join(w.dir, 'cut.cpt');
        fs.writeFileSync(cut, good.subarray(0, last.offset + 4096 * 5 + 7));
        fs.chmodSync(cut, mode);
        expect(mayMap(cut), cut).to.equal(mode === 0o644);
        await refused(cut, /^cptrst: EBADIMG: .*truncated/, env);
      }
    }
    // A payload moved outside its area (an image edited and its checksums made anew).
    const { recs } = readImage(img);
    const follow = recs.findIndex((r) => r.name === 'pages-follow');
    const moved = recs.find((r, i) => i > follow && r.name === 'pages' && (r.pages?.length ?? 0) >= 4096 * 8)!;
    const vmaOf = recs.find((r) => r.tag === moved.ptag)!;
    const outside = path.join(w.dir, 'outside.cpt');
    recodeImage(img, outside, {
      records: (rs) => {
        const m = rs.find((r) => r.tag === moved.tag)!;
        m.obj.vaddr = (vmaOf.obj.end as bigint) - 4096n;
        return rs;
      },
    });
    await refused(outside, /^cptrst: EBADIMG: .*pages at 0x[0-9a-f]+ .*outside/);
    const timings = await restartOk(w, img, { env: { CPTRST_PAGES_COPY_IN: '1' } });
    expect(way(timings)).to.equal('copy');
    await expectPass(w);
  });
});
