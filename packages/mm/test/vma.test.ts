/**
 * VMA kinds and page selection on a real, dynamically linked process (mm_target.c): every area
 * of /proc/PID/smaps is claimed by exactly one registered VmaKind handler, of the expected kind;
 * storedRuns keeps the pages that hold the process's own data and no others.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { container, DependencyContainer } from 'tsyringe';
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ImageHead, ImageWriter, MachineProbe, MemorySink, TaskState, Tokens, Tracee, linux,
} from '@cptrst/core';
import {
  MmDump, VmaEntry, VmaImage, VmaKindHandler, checkAreas, isAnonCopy, isPresentOrSwapped, kindOf, pagemapRuns, register, scannedRuns, storedRuns, wholeAreaRuns,
} from '../src';
import { compile, killStarted, removeTmpDir, startTarget, thrown, tmpDir, unusedTracee } from './support';

const PG = 4096n;
const VDSO = ['[vdso]', '[vvar]', '[vvar_vclock]'];

function containerWithMm(): DependencyContainer {
  const c = container.createChildContainer();
  register(c);
  return c;
}

function checkpointContext(c: DependencyContainer): CheckpointContext {
  const w = new ImageWriter(new MemorySink());
  w.writeHead(new ImageHead());
  return new CheckpointContext(c, w, 0);
}

function taskOf(pid: number): CheckpointTask {
  return { pid, tid: pid, tracee: unusedTracee<Tracee>(), tag: 0, state: new TaskState() };
}

/** The kind a VMA must get, from what /proc shows of it. */
function expectedKind(v: VmaEntry): string {
  if (VDSO.includes(v.path)) return 'vdso';
  if (v.shared && v.path === '/dev/zero' && v.deleted) return 'shared-anon';
  if (v.path === '' || v.path === '[heap]' || v.path === '[stack]' || v.path.startsWith('[anon:')) return 'anon';
  if (v.path.startsWith('/')) return 'file';
  return `unexpected: ${v.path}`;
}

describe('mm: VMA kinds and stored pages on a real process', function () {
  this.timeout(30000);
  let bin: string;
  before(() => {
    bin = compile('mm_target');
  });
  after(() => removeTmpDir());
  afterEach(() => killStarted());

  it('register() adds the vdso, anon, shared-anon, file, sysv-shm, memfd, shmem-file, deleted-file and aio-ring kinds, the mm handlers and the vdso probe', () => {
    const c = containerWithMm();
    expect(c.resolveAll<VmaKindHandler>(Tokens.VmaKind).map((k) => k.kind)).to.deep.equal(['vdso', 'anon', 'shared-anon', 'file', 'sysv-shm', 'memfd', 'shmem-file', 'deleted-file', 'aio-ring']);
    const dumps = c.resolveAll<DumpHandler>(Tokens.DumpHandler);
    expect(dumps.map((d) => [d.name, d.order])).to.deep.equal([['mm', 200]]);
    expect(dumps[0]).to.be.instanceOf(MmDump);
    expect(c.resolveAll<MachineProbe>(Tokens.MachineProbe).map((p) => p.name)).to.deep.equal(['vdso']);
  });

  it('every area is claimed by exactly one kind handler, the expected one', async () => {
    const data = path.join(tmpDir(), 'mapped-claims');
    const t = await startTarget(bin, [data]);
    const handlers = containerWithMm().resolveAll<VmaKindHandler>(Tokens.VmaKind);
    const vmas = linux.readSmaps(t.pid);
    const kinds = new Map<bigint, string>();
    for (const v of vmas) {
      const claimers = handlers.filter((h) => h.claims(v)).map((h) => h.kind);
      const where = `${v.start.toString(16)}-${v.end.toString(16)} ${v.shared ? 's' : 'p'} ${v.path}${v.deleted ? ' (deleted)' : ''}`;
      if (v.path === '[vsyscall]') {
        // No handler takes it: taskVmas() leaves it out, the kernel puts it in every process.
        expect(claimers, where).to.deep.equal([]);
        continue;
      }
      expect(claimers, where).to.deep.equal([expectedKind(v)]);
      kinds.set(v.start, claimers[0]);
    }
    const at = (addr: bigint) => vmas.find((v) => v.start <= addr && addr < v.end)!;
    // The areas the target made, and those every dynamically linked process has:
    expect(kinds.get(at(t.vars.shared).start)).to.equal('shared-anon');
    expect(at(t.vars.shared)).to.deep.include({ shared: true, path: '/dev/zero', deleted: true });
    expect(kinds.get(at(t.vars.anon).start)).to.equal('anon');
    expect(kinds.get(at(t.vars.file).start)).to.equal('file');
    expect(at(t.vars.file).path).to.equal(fs.realpathSync(data));
    expect(at(t.vars.heap).path).to.equal('[heap]');
    expect(kinds.get(at(t.vars.heap).start)).to.equal('anon');
    if (t.vars.named) {
      expect(at(t.vars.named).path).to.equal('[anon:cptrst-test]');
      expect(kinds.get(at(t.vars.named).start)).to.equal('anon');
    }
    const byPath = (re: RegExp) => vmas.filter((v) => re.test(v.path)).map((v) => kinds.get(v.start));
    expect(byPath(/\/libc\.so\.6$/)).to.have.length.above(1);
    expect(new Set(byPath(/\/libc\.so\.6$/))).to.deep.equal(new Set(['file']));
    expect(new Set(byPath(/\/ld-linux-x86-64\.so\.2$/))).to.deep.equal(new Set(['file']));
    expect(new Set(byPath(/\/mm_target$/))).to.deep.equal(new Set(['file']));
    expect(byPath(/^\[vdso\]$/)).to.deep.equal(['vdso']);
    expect(byPath(/^\[vvar\]$/)).to.deep.equal(['vdso']);
    expect(byPath(/^\[stack\]$/)).to.deep.equal(['anon']);
  });

  it('kindOf (deny by default) takes every area of a plain process, and refuses an area no handler claims, naming it', async () => {
    const t = await startTarget(bin, [path.join(tmpDir(), 'mapped-kindof')]);
    const ctx = checkpointContext(containerWithMm());
    const task = taskOf(t.pid);
    for (const v of linux.readSmaps(t.pid).filter((v) => v.path !== '[vsyscall]')) expect(kindOf(ctx, task, v).kind).to.equal(expectedKind(v));

    const vsyscall = linux.readSmaps(t.pid).find((v) => v.path === '[vsyscall]');
    if (vsyscall) {
      const e = thrown(() => kindOf(ctx, task, vsyscall));
      expect(e).to.be.instanceOf(CptError);
      expect(e.code).to.equal('EOPNOTSUPP');
      expect(e.pid).to.equal(t.pid);
      expect(e.object).to.equal(`vma ${vsyscall.start.toString(16)}-${vsyscall.end.toString(16)} [vsyscall]`);
      expect(e.message).to.include('no handler');
    }
    // checkAreas (MmDump.check's part that needs no injected call) runs kindOf and describe on every area: this process passes.
    const { areas, mm } = checkAreas(ctx, task);
    expect(areas.map((a) => a.img.kind)).to.deep.equal(areas.map((a) => expectedKind(a.v)));
    expect(mm.exe).to.equal(bin);
    expect(mm.exeIno).to.equal(fs.statSync(bin, { bigint: true }).ino);
    const file = areas.find((a) => a.v.start === t.vars.file)!.img;
    const st = fs.statSync(path.join(tmpDir(), 'mapped-kindof'), { bigint: true });
    expect([file.inode, file.fileDev, file.fileSize, file.fileMtimeNs]).to.deep.equal([st.ino, st.dev, st.size, st.mtimeNs]);
  });

  it('kindOf refuses an area with VmFlags it cannot restore (userfaultfd: "um"), naming the flag and the area; mlock ("lo") is taken', async () => {
    const t = await startTarget(bin, [path.join(tmpDir(), 'mapped-lock'), 'lock']);
    expect(t.vars.locked).to.not.equal(0n);
    const ctx = checkpointContext(containerWithMm());
    const task = taskOf(t.pid);
    const locked = linux.readSmaps(t.pid).find((x) => x.start === t.vars.locked)!;
    expect(locked.vmFlags).to.include('lo');
    expect(kindOf(ctx, task, locked).kind).to.equal('anon');
    const v = linux.readSmaps(t.pid).find((x) => x.start === t.vars.uffd)!;
    expect(v.vmFlags).to.include('um');
    const e = thrown(() => kindOf(ctx, task, v));
    expect(e.code).to.equal('EOPNOTSUPP');
    expect(e.pid).to.equal(t.pid);
    expect(e.object).to.equal(`vma ${v.start.toString(16)}-${v.end.toString(16)}`);
    expect(e.message).to.include('VmFlags um are not supported on anon memory yet');
    const c = thrown(() => checkAreas(ctx, task));
    expect(c.code).to.equal('EOPNOTSUPP');
    expect(c.message).to.include('um');
    // The "nh" of MADV_NOHUGEPAGE on the other areas is accepted (it is set again with madvise).
    const anon = linux.readSmaps(t.pid).find((x) => x.start === t.vars.anon)!;
    expect(anon.vmFlags).to.include('nh');
    expect(kindOf(ctx, task, anon).kind).to.equal('anon');
  });

  it('each kind takes only the VmFlags it restores: droppable ("dp") and wipeonfork ("wf") on private anonymous memory only', () => {
    const kinds = containerWithMm().resolveAll<VmaKindHandler>(Tokens.VmaKind);
    const k = (n: string) => kinds.find((h) => h.kind === n)!;
    expect(['dp', 'wf', 'gd', 'lo', 'lf', 'sl', 'mg', 'sr', 'rr'].every((f) => k('anon').acceptsVmFlag(f))).to.equal(true);
    expect(['dp', 'wf', 'gd', 'mg'].some((f) => k('shared-anon').acceptsVmFlag(f))).to.equal(false);
    expect(['dp', 'wf', 'gd'].some((f) => k('file').acceptsVmFlag(f))).to.equal(false);
    expect(['lo', 'sl', 'dd', 'nr'].every((f) => k('file').acceptsVmFlag(f))).to.equal(true);
    for (const n of ['anon', 'shared-anon', 'file']) {
      for (const f of ['um', 'uw', 'io', 'pf', 'ht', 'ss', 'de', 'mm']) expect(k(n).acceptsVmFlag(f), `${n} ${f}`).to.equal(false);
    }
  });

  it('memfd mappings, shared and private, are the memfd kind\'s; the file kind refuses shm memory by its device, whatever the area is called', async () => {
    const t = await startTarget(bin, [path.join(tmpDir(), 'mapped-memfd'), 'memfd']);
    const ctx = checkpointContext(containerWithMm());
    const task = taskOf(t.pid);
    const kinds = containerWithMm().resolveAll<VmaKindHandler>(Tokens.VmaKind);
    const file = kinds.find((k) => k.kind === 'file')!;
    const memfd = kinds.find((k) => k.kind === 'memfd')!;
    for (const addr of [t.vars.memfd, t.vars.memfdp]) {
      const v = linux.readSmaps(t.pid).find((x) => x.start === addr)!;
      expect(v.path).to.equal('/memfd:innocent');
      expect(kindOf(ctx, task, v).kind).to.equal('memfd');
      const img = new VmaImage();
      memfd.describe(task, v, img);
      expect(img.inode).to.equal(fs.statSync(`/proc/${t.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`, { bigint: true }).ino);
      expect(memfd.storesPages(Object.assign(img, { shared: v.shared }))).to.equal(!v.shared);
      // The same area under a name of the process's choosing (a plain file's, not deleted): the file kind refuses it by its device.
      const renamed = { ...v, path: '/tmp/innocent', deleted: false };
      const r = thrown(() => file.describe(task, renamed, new VmaImage()));
      expect(r.code).to.equal('EOPNOTSUPP');
      expect(r.message).to.include("internal shm mount");
    }
    checkAreas(ctx, task); // every area taken
  });

  it('a shared file mapping stores no pages: its contents are the file\'s', async () => {
    const data = path.join(tmpDir(), 'mapped-shared');
    const t = await startTarget(bin, [data, 'memfd']);
    const file = containerWithMm().resolveAll<VmaKindHandler>(Tokens.VmaKind).find((k) => k.kind === 'file')!;
    const v = linux.readSmaps(t.pid).find((x) => x.start === t.vars.sfile)!;
    expect(v.shared).to.equal(true);
    expect(v.path).to.equal(fs.realpathSync(data));
    const img = Object.assign(new VmaImage(), { shared: true, kind: 'file' });
    file.describe(taskOf(t.pid), v, img);
    expect(file.storesPages(img)).to.equal(false);
    expect(file.storesPages(Object.assign(new VmaImage(), { shared: false, kind: 'file' }))).to.equal(true);
    expect(fs.readFileSync(data)[0]).to.equal('S'.charCodeAt(0)); // written through the mapping: it is in the file
  });

  it('MmDump.check refuses a process whose executable was deleted', async () => {
    const copy = path.join(tmpDir(), 'mm_target_deleted');
    fs.copyFileSync(bin, copy);
    fs.chmodSync(copy, 0o755);
    const t = await startTarget(copy, [path.join(tmpDir(), 'mapped-del')]);
    fs.unlinkSync(copy);
    const ctx = checkpointContext(containerWithMm());
    const e = thrown(() => checkAreas(ctx, taskOf(t.pid)));
    expect(e.code).to.equal('EOPNOTSUPP');
    expect(e.pid).to.equal(t.pid);
    expect(e.object).to.equal(`exe ${copy} (deleted)`);
    expect(e.message).to.include('deleted');
  });

  it('storedRuns: touched pages of a private anonymous area are stored, untouched ones are not', async () => {
    const t = await startTarget(bin, [path.join(tmpDir(), 'mapped-anon')]);
    const c = containerWithMm();
    const kinds = c.resolveAll<VmaKindHandler>(Tokens.VmaKind);
    const kind = (k: string) => kinds.find((h) => h.kind === k)!;
    const task = taskOf(t.pid);
    const ctx = checkpointContext(c);
    const vmas = linux.readSmaps(t.pid);
    const anon = vmas.find((v) => v.start === t.vars.anon)!;
    expect(anon.end - anon.start).to.equal(16n * PG); // its own VMA (guard pages around it)
    expect(storedRuns(ctx, task, anon, kind('anon'))).to.deep.equal([[0, 2], [5, 1], [15, 1]]);

    // A fully written area of 4100 pages: runs are cut at 4096 pages (runs of at most 16 MiB; dumpPages cuts them into 2 MiB PAGES objects).
    const big = vmas.find((v) => v.start === t.vars.big)!;
    expect(storedRuns(ctx, task, big, kind('anon'))).to.deep.equal([[0, 4096], [4096, 4]]);
    // smaps says every page of it is anonymous: the runs come without a pagemap read, the same as the pagemap's.
    expect(big.anonymous).to.equal(big.size);
    expect(wholeAreaRuns(big, kind('anon'))).to.deep.equal(pagemapRuns(task, big, kind('anon')));
    // Not for an area with untouched pages, a shared one, or a file mapping: the pagemap decides there.
    expect(wholeAreaRuns(anon, kind('anon'))).to.equal(null);
    for (const v of vmas.filter((x) => x.shared || x.inode !== 0n)) expect(wholeAreaRuns(v, kind('anon')), `${v.start.toString(16)} ${v.path}`).to.equal(null);
    // Wherever it answers, it answers what the pagemap does.
    for (const v of vmas) {
      const whole = wholeAreaRuns(v, kind('anon'));
      if (whole) expect(whole, `${v.start.toString(16)} ${v.path}`).to.deep.equal(pagemapRuns(task, v, kind('anon')));
    }

    // The shared anonymous area: only its written page.
    const shared = vmas.find((v) => v.start === t.vars.shared)!;
    expect(storedRuns(ctx, task, shared, kind('shared-anon'))).to.deep.equal([[0, 1]]);

    // Never-touched guard pages (PROT_NONE, no RSS): nothing, without reading the pagemap.
    const guard = vmas.find((v) => v.end === t.vars.anon)!;
    expect(guard.prot).to.deep.equal({ read: false, write: false, exec: false });
    expect(guard.rss).to.equal(0);
    expect(storedRuns(ctx, task, guard, kind('anon'))).to.deep.equal([]);

    // The vDSO's pages are the kernel's: never stored.
    const vdso = vmas.find((v) => v.path === '[vdso]')!;
    expect(storedRuns(ctx, task, vdso, kind('vdso'))).to.deep.equal([]);

    // PAGEMAP_SCAN (where the kernel has it) and the entry-by-entry pagemap agree on every area and kind.
    for (const v of vmas.filter((x) => x.rss > 0 && x.path !== '[vsyscall]')) {
      for (const k of ['anon', 'file', 'shared-anon']) {
        const scanned = scannedRuns(ctx, task, v, kind(k));
        if (scanned) expect(scanned, `${v.start.toString(16)} ${v.path} as ${k}`).to.deep.equal(pagemapRuns(task, v, kind(k)));
      }
    }
    // One pagemap descriptor for the task, whatever the number of areas read, closed at the checkpoint's end.
    const pagemaps = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === `/proc/${t.pid}/pagemap`;
      } catch {
        return false;
      }
    }).length;
    expect(pagemaps()).to.equal(1);
    ctx.runAtEnd();
    expect(pagemaps()).to.equal(0);
  });

  it('storedRuns: a private file mapping stores only the pages the process modified (anonymous copies)', async () => {
    const data = path.join(tmpDir(), 'mapped-file');
    const t = await startTarget(bin, [data]);
    const c = containerWithMm();
    const kinds = c.resolveAll<VmaKindHandler>(Tokens.VmaKind);
    const task = taskOf(t.pid);
    const ctx = checkpointContext(c);
    const file = linux.readSmaps(t.pid).find((v) => v.start === t.vars.file)!;
    expect(file.end - file.start).to.equal(8n * PG);
    expect(file.shared).to.equal(false);
    // Every page was read, so every page is present; only 2 and 6 were written.
    const pm = linux.readPagemap(t.pid, file.start, 8);
    expect([...pm].map(isPresentOrSwapped)).to.deep.equal(Array(8).fill(true));
    expect([...pm].map(isAnonCopy)).to.deep.equal([false, false, true, false, false, false, true, false]);
    expect(storedRuns(ctx, task, file, kinds.find((k) => k.kind === 'file')!)).to.deep.equal([[2, 1], [6, 1]]);
    // The anon rule would have taken every present page: the file kind's rule is what saves them.
    expect(storedRuns(ctx, task, file, kinds.find((k) => k.kind === 'anon')!)).to.deep.equal([[0, 8]]);
    ctx.runAtEnd();
    // The file itself is unchanged (MAP_PRIVATE): the modifications are the process's own.
    const content = fs.readFileSync(data);
    expect(content.length).to.equal(8 * 4096);
    expect(content[2 * 4096]).to.equal('c'.charCodeAt(0));
  });

  it('isPresentOrSwapped / isAnonCopy decode pagemap bits 63 (present), 62 (swapped), 61 (file or shared)', () => {
    const P = 1n << 63n;
    const S = 1n << 62n;
    const F = 1n << 61n;
    expect(isPresentOrSwapped(0n)).to.equal(false);
    expect(isPresentOrSwapped(P)).to.equal(true);
    expect(isPresentOrSwapped(S)).to.equal(true);
    expect(isPresentOrSwapped(P | F | 0x1234n)).to.equal(true);
    expect(isPresentOrSwapped(F | (1n << 55n))).to.equal(false); // soft-dirty alone: not present
    expect(isAnonCopy(0n)).to.equal(false);
    expect(isAnonCopy(P)).to.equal(true); // present, not a file page: the process's copy
    expect(isAnonCopy(P | F)).to.equal(false); // the file's page
    expect(isAnonCopy(S)).to.equal(true); // swapped out: only anonymous pages go to swap
    expect(isAnonCopy(F)).to.equal(false);
  });
});
