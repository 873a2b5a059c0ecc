/**
 * The workloads themselves, without checkpoint/restart: each must PASS when simply triggered,
 * and must FAIL when its own state is tampered with (CPT_TAMPER=1), which shows the checks can
 * fail. The C/R integration tests rely on both.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import {
  buildWorkloads,
  isOurWorkload,
  killStartedWorkloads,
  makeTempDir,
  makeWorldDir,
  removeTempDir,
  parseResult,
  passLines,
  procState,
  readMaps,
  sleep,
  startWorkload,
  startedWorkloadPids,
  SYSCALL_VARIANTS,
  trigger,
  verdictName,
  waitResult,
  Workload,
} from './support';

interface Case {
  name: string;
  /** Test title, default the name. */
  label?: string;
  args?: (dir: string) => string[];
  /** It drops root (--nobody): its directory must be reachable by other users. */
  nobody?: boolean;
  /** What to do between READY and the result (after the trigger). */
  afterTrigger?: (w: Workload) => Promise<void>;
  /** It is multi-threaded on purpose. */
  threads?: boolean;
  /** It is a process tree on purpose. */
  tree?: boolean;
}

/** Temporary directories of the current test: removed if it passes, kept for a look if not. */
const testDirs: string[] = [];
function tempDir(prefix: string, world = false): string {
  const d = world ? makeWorldDir(prefix) : makeTempDir(prefix);
  testDirs.push(d);
  return d;
}

/** Makes the directory task.c chdirs into. */
function taskDir(dir: string): string {
  const d = path.join(dir, 'cwd');
  fs.mkdirSync(d, { recursive: true, mode: 0o755 });
  return d;
}

const sendUsr1 = (w: Workload): Promise<void> => {
  process.kill(w.pid, 'SIGUSR1');
  return Promise.resolve();
};

const FDSTATE_MODES = ['flock', 'posix', 'ofd', 'lease', 'setown', 'setsig', 'setown-parent'];

const CASES: Case[] = [
  { name: 'static' },
  { name: 'pagesfds', label: 'pagesfds 8', args: () => ['8'] },
  { name: 'dynamic' },
  { name: 'loop.sh' },
  { name: 'loop.py' },
  { name: 'cpuregs' },
  { name: 'debugregs' },
  { name: 'memory' },
  { name: 'task', label: 'task <dir>', args: (dir) => [taskDir(dir)] },
  { name: 'task', label: 'task <dir> --nobody', args: (dir) => [taskDir(dir), '--nobody'], nobody: true },
  { name: 'task', label: 'task <dir> --as 65534:65534', args: (dir) => [taskDir(dir), '--as', '65534:65534'], nobody: true },
  { name: 'settings' },
  { name: 'settings', label: 'settings --as 65534:65534', args: () => ['--as', '65534:65534'], nobody: true },
  { name: 'itimers' },
  { name: 'ptimers' },
  { name: 'signals' },
  { name: 'files' },
  { name: 'ghost', label: 'ghost <dir>', args: (dir) => [dir] },
  { name: 'ghost', label: 'ghost <dir> sparse', args: (dir) => [dir, 'sparse'] },
  { name: 'ghostmap', label: 'ghostmap <dir>', args: (dir) => [dir] },
  { name: 'nsfd' },
  ...FDSTATE_MODES.map((m): Case => ({ name: 'fdstate', label: `fdstate <dir> ${m}`, args: (dir) => [dir, m] })),
  { name: 'locks', label: 'locks <dir>', args: (dir) => [dir] },
  { name: 'leasebreak', label: 'leasebreak <dir>', args: (dir) => [dir] },
  { name: 'sysvshm' },
  { name: 'semundo', label: 'semundo undo', args: () => ['undo'] },
  { name: 'sysvipc' },
  { name: 'pidfds', threads: true, tree: true },
  ...SYSCALL_VARIANTS.map(
    (v): Case => ({
      name: 'syscalls',
      label: `syscalls ${v}`,
      args: () => [v],
      afterTrigger: v === 'pause' ? sendUsr1 : undefined,
    }),
  ),
  { name: 'pidhold' },
  { name: 'cowwrite' },
  { name: 'incrwrite', threads: true },
  { name: 'lazyfill' },
  { name: 'protmem' },
  { name: 'mmstate' },
  { name: 'guards' },
  { name: 'deldir' },
  { name: 'mapchurn' },
  { name: 'mapchurn', label: 'mapchurn signals', args: () => ['signals'] },
  { name: 'eventfd' },
  { name: 'fanotify', label: 'fanotify <dir>', args: (dir) => [dir] },
  { name: 'secretmem' },
  { name: 'epoll' },
  { name: 'signalfd' },
  { name: 'timerfd' },
  { name: 'inotify', label: 'inotify <dir>', args: (dir) => [dir] },
  { name: 'aio', label: 'aio <dir>', args: (dir) => [dir] },
  { name: 'inotifydel', label: 'inotifydel <dir>', args: (dir) => [dir] },
  { name: 'fanotifymarks', label: 'fanotifymarks <dir>', args: (dir) => [dir] },
  { name: 'pipes' },
  { name: 'fifos', label: 'fifos <dir>', args: (dir) => [dir] },
  { name: 'memfds' },
  { name: 'shmemfds' },
  { name: 'sockets', label: 'sockets <dir>', args: (dir) => [dir] },
  { name: 'socknames', label: 'socknames <dir>', args: (dir) => [dir] },
  { name: 'sklisten', label: 'sklisten <dir>', args: (dir) => [dir], tree: true },
  { name: 'threadchurn', threads: true },
  { name: 'threads.py', threads: true },
  { name: 'pthreads', threads: true },
  { name: 'eventloop.js', threads: true, tree: true },
  { name: 'threadtimer', threads: true },
  { name: 'seccomp', threads: true },
  { name: 'seccomp', label: 'seccomp --strict', args: () => ['--strict'], threads: true },
  { name: 'asyncio_loop.py' },
  { name: 'tree', tree: true },
  { name: 'tree', label: 'tree zgsfc', args: () => ['zgsfc'], tree: true },
  { name: 'tree.sh', tree: true },
  { name: 'pipeline.sh', tree: true },
  { name: 'sockpair', tree: true },
  { name: 'scm', label: 'scm <dir>', args: (dir) => [dir], tree: true },
  { name: 'memfdshare', tree: true },
  { name: 'tree.py', tree: true },
  ...['vfork', 'clone-vm', 'clone-files', 'clone-fs', 'shm', 'traced', 'pidns'].map((m): Case => ({ name: 'treeshare', label: `treeshare ${m}`, args: () => [m], tree: true })),
  { name: 'cowtree', tree: true },
  { name: 'cowwritetree', tree: true },
  { name: 'incrtree', tree: true },
  { name: 'orphans', tree: true },
  { name: 'jobstop', tree: true },
  { name: 'procfiles', tree: true },
  { name: 'shmtree', tree: true },
  ...['wp', 'wp-async', 'missing', 'minor', 'fork', 'getfd', 'late-fork', 'made-late', 'own', 'inflight'].map((m): Case => ({ name: 'uffd', label: `uffd ${m}`, args: () => [m], tree: true })),
  { name: 'ghosttree', label: 'ghosttree <dir>', args: (dir) => [dir], tree: true },
  { name: 'ptys', tree: true },
  { name: 'ptyhup' },
  { name: 'ptycarry', tree: true },
];

/** Workloads whose CPT_TAMPER=1 mode corrupts their own state before the final check. */
const TAMPERABLE: Case[] = [
  { name: 'static' },
  { name: 'pagesfds', label: 'pagesfds 8', args: () => ['8'] },
  { name: 'dynamic' },
  { name: 'loop.sh' },
  { name: 'loop.py' },
  { name: 'cpuregs' },
  { name: 'debugregs' },
  { name: 'memory' },
  { name: 'task', label: 'task <dir> --nobody', args: (dir) => [taskDir(dir), '--nobody'], nobody: true },
  { name: 'settings' },
  { name: 'itimers' },
  { name: 'ptimers' },
  { name: 'signals' },
  { name: 'files' },
  { name: 'ghost', label: 'ghost <dir> sparse', args: (dir) => [dir, 'sparse'] },
  { name: 'ghostmap', label: 'ghostmap <dir>', args: (dir) => [dir] },
  { name: 'nsfd' },
  ...FDSTATE_MODES.map((m): Case => ({ name: 'fdstate', label: `fdstate <dir> ${m}`, args: (dir) => [dir, m] })),
  { name: 'locks', label: 'locks <dir>', args: (dir) => [dir] },
  { name: 'leasebreak', label: 'leasebreak <dir>', args: (dir) => [dir] },
  { name: 'sysvshm' },
  { name: 'semundo', label: 'semundo undo', args: () => ['undo'] },
  { name: 'sysvipc' },
  { name: 'pidfds', threads: true, tree: true },
  { name: 'cowwrite' },
  { name: 'incrwrite', threads: true },
  { name: 'lazyfill' },
  { name: 'protmem' },
  { name: 'mmstate' },
  { name: 'guards' },
  { name: 'deldir' },
  { name: 'mapchurn' },
  { name: 'mapchurn', label: 'mapchurn signals', args: () => ['signals'] },
  { name: 'eventfd' },
  { name: 'fanotify', label: 'fanotify <dir>', args: (dir) => [dir] },
  { name: 'secretmem' },
  { name: 'epoll' },
  { name: 'signalfd' },
  { name: 'timerfd' },
  { name: 'inotify', label: 'inotify <dir>', args: (dir) => [dir] },
  { name: 'aio', label: 'aio <dir>', args: (dir) => [dir] },
  { name: 'inotifydel', label: 'inotifydel <dir>', args: (dir) => [dir] },
  { name: 'fanotifymarks', label: 'fanotifymarks <dir>', args: (dir) => [dir] },
  { name: 'pipes' },
  { name: 'fifos', label: 'fifos <dir>', args: (dir) => [dir] },
  { name: 'memfds' },
  { name: 'shmemfds' },
  { name: 'sockets', label: 'sockets <dir>', args: (dir) => [dir] },
  { name: 'socknames', label: 'socknames <dir>', args: (dir) => [dir] },
  { name: 'sklisten', label: 'sklisten <dir>', args: (dir) => [dir], tree: true },
  { name: 'threadchurn', threads: true },
  { name: 'threads.py', threads: true },
  { name: 'pthreads', threads: true },
  { name: 'pthreads', label: 'pthreads --creds', args: () => ['--creds'], threads: true },
  { name: 'eventloop.js', threads: true, tree: true },
  { name: 'threadtimer', threads: true },
  { name: 'seccomp', threads: true },
  { name: 'seccomp', label: 'seccomp --strict', args: () => ['--strict'], threads: true },
  { name: 'asyncio_loop.py' },
  { name: 'tree', tree: true },
  { name: 'tree.sh', tree: true },
  { name: 'pipeline.sh', tree: true },
  { name: 'sockpair', tree: true },
  { name: 'scm', label: 'scm <dir>', args: (dir) => [dir], tree: true },
  { name: 'memfdshare', tree: true },
  { name: 'tree.py', tree: true },
  { name: 'treeshare', label: 'treeshare shm', args: () => ['shm'], tree: true },
  { name: 'cowtree', tree: true },
  { name: 'cowwritetree', tree: true },
  { name: 'incrtree', tree: true },
  { name: 'orphans', tree: true },
  { name: 'jobstop', tree: true },
  { name: 'procfiles', tree: true },
  { name: 'shmtree', tree: true },
  { name: 'ghosttree', label: 'ghosttree <dir>', args: (dir) => [dir], tree: true },
  { name: 'ptys', tree: true },
  { name: 'ptyhup' },
  { name: 'ptycarry', tree: true },
  { name: 'uffd', label: 'uffd wp', args: () => ['wp'], tree: true },
];

async function run(c: Case, env: Record<string, string> = {}): Promise<{ w: Workload; text: string }> {
  const dir = tempDir(c.name, c.nobody);
  const args = c.args?.(dir) ?? [];
  const w = await startWorkload(c.name, args, { dir, env });
  // the protocol: no child process and no thread while it loops (but for the workloads made of threads)
  const st = await procState(w.pid);
  expect(st, 'process state').to.not.equal(null);
  if (c.threads) expect(st!.threads, 'threads').to.be.greaterThan(1);
  else expect(st!.threads, 'threads').to.equal(1);
  if (c.tree) expect(st!.children.length, 'children').to.be.greaterThan(0);
  else expect(st!.children, 'children').to.deep.equal([]);
  await sleep(300);
  await trigger(w);
  if (c.afterTrigger !== undefined) {
    await sleep(100);
    await c.afterTrigger(w);
  }
  const text = await waitResult(w, 15000);
  return { w, text };
}

describe('workloads without checkpoint/restart', function () {
  this.timeout(60000);

  before(async function () {
    this.timeout(180000);
    await buildWorkloads();
  });

  afterEach(async function () {
    await killStartedWorkloads();
    const passed = this.currentTest?.state === 'passed';
    for (const d of testDirs.splice(0)) if (passed) removeTempDir(d);
  });

  after(async () => {
    for (const pid of startedWorkloadPids()) {
      expect(await isOurWorkload(pid), `workload pid ${pid} left running`).to.equal(false);
    }
  });

  describe('pass when triggered', () => {
    for (const c of CASES) {
      it(c.label ?? c.name, async () => {
        const { w, text } = await run(c);
        const r = parseResult(text);
        expect(r.readyPid).to.equal(w.pid);
        expect(r.extra, 'nothing but READY and the verdict').to.deep.equal([]);
        expect(passLines(w.name, w.args), text).to.include(r.verdict);
        expect(await w.exited).to.deep.equal({ code: 0, signal: null });
      });
    }
  });

  describe('fail when their state is tampered with (CPT_TAMPER=1)', () => {
    for (const c of TAMPERABLE) {
      it(c.label ?? c.name, async () => {
        const { w, text } = await run(c, { CPT_TAMPER: '1' });
        const r = parseResult(text);
        expect(r.readyPid).to.equal(w.pid);
        expect(r.verdict ?? '', text).to.match(new RegExp(`^FAIL ${verdictName(w.name, w.args).replace('.', '\\.')}: .+`));
        expect(r.extra).to.deep.equal([]);
        expect(await w.exited).to.deep.equal({ code: 1, signal: null });
      });
    }
  });

  describe('details', () => {
    it('task fails when it is not a session leader (started without setsid)', async () => {
      const dir = tempDir('task');
      const w = await startWorkload('task', [taskDir(dir)], { dir, detached: false });
      await trigger(w);
      const r = parseResult(await waitResult(w, 15000));
      expect(r.verdict).to.match(/^FAIL task: not a session leader at start/);
    });

    it('cpuregs passes with many short rounds (1000 iterations each)', async () => {
      const dir = tempDir('cpuregs');
      const w = await startWorkload('cpuregs', ['1000'], { dir });
      await sleep(200);
      await trigger(w);
      const r = parseResult(await waitResult(w, 15000));
      expect(passLines('cpuregs')).to.include(r.verdict);
    });

    it('memory keeps its mappings unchanged while it loops', async () => {
      const dir = tempDir('memory');
      const w = await startWorkload('memory', [], { dir });
      const before = (await readMaps(w.pid)).map((m) => m.line);
      await sleep(500);
      const after = (await readMaps(w.pid)).map((m) => m.line);
      expect(after).to.deep.equal(before);
      expect(before.some((l) => l.endsWith('.mapped')), 'the private file mapping').to.equal(true);
      expect(before.some((l) => /---p/.test(l)), 'the guard page').to.equal(true);
      await trigger(w);
      const r = parseResult(await waitResult(w, 15000));
      expect(r.verdict).to.equal('PASS memory');
    });

    it('syscalls pause stays in pause() across SIGSTOP/SIGCONT and passes after SIGUSR1', async () => {
      // a stop/continue restarts pause() in the kernel (ERESTARTNOHAND); it must not come back
      const dir = tempDir('syscalls');
      const w = await startWorkload('syscalls', ['pause'], { dir });
      process.kill(w.pid, 'SIGSTOP');
      await sleep(100);
      process.kill(w.pid, 'SIGCONT');
      await sleep(100);
      expect((await procState(w.pid))?.state).to.equal('S');
      await trigger(w);
      process.kill(w.pid, 'SIGUSR1');
      const r = parseResult(await waitResult(w, 15000));
      expect(r.verdict).to.equal('PASS syscalls-pause');
    });
  });
});
