/**
 * Copy-on-write snapshots of a process tree: a checkpoint that lets the tree run takes a snapshot
 * of every process while the whole tree is frozen, lets the tree go once everything but the pages
 * is recorded, and writes each process's pages from its own snapshot. `cowwritetree` (a parent
 * and two children writing their own memory and memory shared copy-on-write with the parent
 * without pause, each step checking what the step one round earlier wrote) runs on unharmed and,
 * restarted from the image, passes its checks: every process's pages are of the instant of its
 * registers. The tree was let go before its pages were written (seen from the progress events:
 * no member is traced while most pages are written), no snapshot outlives the checkpoint, and a
 * snapshot never lands in the tree: a process under a child subreaper of the tree is copied while
 * frozen, and the subreaper sees no child and no SIGCHLD but its own. The image is the one a frozen
 * dump gives: memory, areas and the copy-on-write bookkeeping (kept areas, pages to discard) alike.
 * Each snapshot ends as soon as its process's pages are read, not with the checkpoint.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointFlags, loadModule, sys_checkpoint } from '@cptrst/core';
import {
  Workload, buildWorkloads, copiesOf, cptrst, expectPass, killByPid, killStartedWorkloads, membersOf, procState, readImage, sleep, startWorkload, tracerOf, trigger,
  waitGone,
} from '../support';

/** Each member's children. */
async function childrenMap(pids: number[]): Promise<Record<number, number[]>> {
  const out: Record<number, number[]> = {};
  for (const p of pids) out[p] = [...((await procState(p))?.children ?? [])].sort((a, b) => a - b);
  return out;
}

/** Every pid a test made, killed by PID at the end (only while it is one of our workloads). */
const made = new Set<number>();

/** cowwritetree with its tree complete (`size` processes). */
async function startTree(args: string[], size: number): Promise<{ w: Workload; pids: number[] }> {
  const w = await startWorkload('cowwritetree', args);
  let pids = await membersOf(w.pid);
  for (let i = 0; i < 500 && pids.length < size; i++) {
    await sleep(10);
    pids = await membersOf(w.pid);
  }
  expect(pids.length, 'members of the tree').to.equal(size);
  for (const p of pids) made.add(p);
  await sleep(200); // every member in its loop
  return { w, pids };
}

/** After a checkpoint that let the tree run: every member untraced, the same children, no copy left. */
async function expectTreeAsBefore(w: Workload, pids: number[], children: Record<number, number[]>): Promise<void> {
  for (const p of pids) expect(tracerOf(p), `pid ${p} traced`).to.equal(0);
  expect(await childrenMap(pids), 'children of every member').to.deep.equal(children);
  let left = copiesOf(w.pid, pids);
  for (let i = 0; i < 100 && left.length; i++) {
    await sleep(10);
    left = copiesOf(w.pid, pids);
  }
  expect(left, 'snapshot processes left').to.deep.equal([]);
}

/** Kills the whole tree (the originals), by PID, and waits until every PID is free. */
async function killTree(w: Workload, pids: number[]): Promise<void> {
  for (const p of pids) await killByPid(p);
  await w.exited;
  for (const p of pids) expect(await waitGone(p, 10000), `pid ${p} still taken`).to.equal(true);
}

/** Restarts the image (the tree's PIDs free, not triggered yet), lets it run on a while, then triggers it: it must pass. */
async function restartPasses(w: Workload, img: string): Promise<void> {
  const rs = await cptrst(['restart', img]);
  expect(rs.code, rs.stderr).to.equal(0);
  for (const p of await membersOf(w.pid)) made.add(p);
  await sleep(300); // it runs on from the instant of the freeze, checking every step
  await trigger(w);
  await expectPass(w);
}

/**
 * The memory of every process in an image, and its copy-on-write bookkeeping: records and pages.
 * Each thread's rseq area is blanked: the kernel writes the CPU it runs on there.
 */
function memoryOf(img: string): string[] {
  const kinds = new Set(['mm', 'vma', 'vma-kept', 'pages']);
  const json = (o: unknown) => JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : Buffer.isBuffer(v) ? v.toString('hex') : v));
  const { recs } = readImage(img);
  const rseq = recs.filter((r) => r.name === 'task' || r.name === 'thread').map((r) => [r.obj.rseqAddr as bigint, BigInt(r.obj.rseqLen as number)]);
  return recs.filter((r) => kinds.has(r.name)).map((r) => {
    if (r.pages) {
      const at = r.obj.vaddr as bigint;
      const end = at + BigInt(r.pages.length);
      for (const [addr, len] of rseq) if (len && addr >= at && addr + len <= end) r.pages.fill(0, Number(addr - at), Number(addr - at + len));
    }
    return `${r.name} ${json(r.obj)} ${r.pages ? r.pages.toString('base64') : ''}`;
  });
}

describe('checkpoint of a process tree with copy-on-write snapshots', function () {
  this.timeout(180000);
  before(() => {
    loadModule('@cptrst/cpt-module');
    return buildWorkloads();
  });
  afterEach(async () => {
    for (const p of made) await killByPid(p);
    made.clear();
    await killStartedWorkloads();
  });

  for (const variant of ['snapshot', '--no-snapshot'] as const) {
    it(`${variant}: a tree writing without pause runs on unharmed, and every process restarts at the instant of the freeze`, async () => {
      const { w, pids } = await startTree([], 3);
      const children = await childrenMap(pids);
      const img = path.join(w.dir, 'img');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json', ...(variant === 'snapshot' ? [] : [variant])], { env: { CPTRST_DEBUG: '1' } });
      expect(r.code, r.stderr).to.equal(0);
      const doc = JSON.parse(r.stdout) as { tasks: number; timings: Record<string, number> };
      expect(doc.tasks).to.equal(3);
      if (variant === 'snapshot') {
        expect(doc.timings, 'snapshots taken').to.have.property('snapshot');
        expect(r.stderr).to.not.match(/no copy-on-write snapshot/);
      } else {
        expect(doc.timings).to.not.have.property('snapshot');
      }
      await expectTreeAsBefore(w, pids, children);
      await sleep(300); // the originals carry on, checking every step
      for (const p of pids) expect(tracerOf(p), `pid ${p} gone`).to.equal(0);
      await killTree(w, pids);
      await restartPasses(w, img);
    });
  }

  it('the tree is let go before its pages are written: no member is traced while the pages are written (and with NO_SNAPSHOT, every member is)', async () => {
    for (const flags of [CheckpointFlags.RESUME, CheckpointFlags.NO_SNAPSHOT]) {
      const { w, pids } = await startTree([], 3);
      const children = await childrenMap(pids);
      const img = path.join(w.dir, `img-${flags}`);
      const fd = fs.openSync(img, 'w');
      let releasedBytes = 0;
      let frozenBytes = 0;
      try {
        await sys_checkpoint(w.pid, fd, flags, {
          onProgress: (e) => {
            if (e.phase !== 'pages' || !e.bytes) return;
            const traced = pids.filter((p) => tracerOf(p) !== 0);
            if (traced.length === 0) releasedBytes += e.bytes;
            else if (traced.length === pids.length) frozenBytes += e.bytes;
            else throw new Error(`members ${traced.join(', ')} of ${pids.join(', ')} traced while pages are written`);
          },
        });
      } finally {
        fs.closeSync(fd);
      }
      // Three private areas of 16 MiB of their own, written all the time.
      if (flags === CheckpointFlags.RESUME) expect(releasedBytes, `bytes written after the release (${frozenBytes} before)`).to.be.at.least(3 * 16 << 20);
      else expect(releasedBytes, `bytes written after the release (${frozenBytes} before)`).to.equal(0);
      await expectTreeAsBefore(w, pids, children);
      await trigger(w);
      await expectPass(w);
    }
  });

  it('each process\'s snapshot ends once its pages are read: fewer and fewer snapshots while the pages are written, none at the end', async () => {
    const { w, pids } = await startTree([], 3);
    const children = await childrenMap(pids);
    const img = path.join(w.dir, 'img');
    const fd = fs.openSync(img, 'w');
    const alive: number[] = [];
    try {
      await sys_checkpoint(w.pid, fd, CheckpointFlags.RESUME, {
        onProgress: (e) => {
          if (e.phase === 'pages' && e.bytes && pids.every((p) => tracerOf(p) === 0)) alive.push(copiesOf(w.pid, pids).length);
        },
      });
    } finally {
      fs.closeSync(fd);
    }
    expect(alive.length, 'pages written after the release').to.be.greaterThan(10);
    expect(alive[0], 'snapshots while the first pages are written').to.equal(3);
    // The root's pages come first, its children's in the pages section: at the last pages only the last child's is left.
    expect(Math.min(...alive), `snapshots alive as the pages were written: ${alive.join(' ')}`).to.be.at.most(1);
    await expectTreeAsBefore(w, pids, children);
    await killTree(w, pids);
    await restartPasses(w, img);
  });

  it('a child subreaper in the tree: it and its descendants are copied while frozen (their snapshots would be its children); it sees no child and no SIGCHLD but its own, and the image restarts', async () => {
    const { w, pids } = await startTree(['16', 'subreaper'], 4); // R, A (a subreaper), its child G, B
    const children = await childrenMap(pids);
    const [, a] = pids;
    const g = children[a][0];
    const img = path.join(w.dir, 'img');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json'], { env: { CPTRST_DEBUG: '1' } });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.match(new RegExp(`pid ${a}: no copy-on-write snapshot: the process is a child subreaper`));
    expect(r.stderr).to.match(new RegExp(`pid ${g}: no copy-on-write snapshot: its ancestor ${a}, a process of the tree, is a child subreaper`));
    expect(r.stderr.match(/no copy-on-write snapshot/g), 'processes without a snapshot').to.have.length(2);
    expect((JSON.parse(r.stdout) as { timings: Record<string, number> }).timings, 'snapshots of R and B').to.have.property('snapshot');
    await expectTreeAsBefore(w, pids, children);
    await sleep(300);
    // The originals as they are after it, whole (a snapshot adopted by A would be its zombie child
    // now, and have sent it a SIGCHLD): restarted, A checks that G is its only child and that no
    // SIGCHLD came but G's. (The first image, restarted, would show nothing of what came after it.)
    const after = path.join(w.dir, 'after.img');
    const k = await cptrst(['checkpoint', String(w.pid), '-o', after, '--kill']);
    expect(k.code, k.stderr).to.equal(0);
    expect(k.stderr).to.include('(4 tasks)');
    await killTree(w, pids);
    await restartPasses(w, after);
  });

  it('cowtree: the image of a running tree taken from snapshots holds the memory and copy-on-write bookkeeping a frozen dump gives; it restarts with the kept pages shared again', async () => {
    const w = await startWorkload('cowtree', ['16']);
    const pids = await membersOf(w.pid);
    expect(pids.length).to.equal(4);
    for (const p of pids) made.add(p);
    // cowtree's members only sleep once set up: their memory does not change between the two.
    const snap = path.join(w.dir, 'snap.img');
    const frozen = path.join(w.dir, 'frozen.img');
    const r1 = await cptrst(['checkpoint', String(w.pid), '-o', snap, '--json']);
    expect(r1.code, r1.stderr).to.equal(0);
    expect((JSON.parse(r1.stdout) as { timings: Record<string, number> }).timings).to.have.property('snapshot');
    const r2 = await cptrst(['checkpoint', String(w.pid), '-o', frozen, '--no-snapshot']);
    expect(r2.code, r2.stderr).to.equal(0);
    const a = memoryOf(snap);
    const b = memoryOf(frozen);
    expect(a.filter((x) => x.startsWith('vma-kept')).length, 'areas kept from a parent').to.be.greaterThan(0);
    expect(a.length).to.equal(b.length);
    const differ = a.map((x, i) => (x === b[i] ? -1 : i)).filter((i) => i >= 0);
    expect(differ.map((i) => `${a[i].slice(0, 200)}\n  vs ${b[i].slice(0, 200)}`), 'records that differ').to.deep.equal([]);
    await killTree(w, pids);
    await restartPasses(w, snap);
  });
});
