/**
 * Lazy restart (`cptrst restart --lazy`): the process runs before its private anonymous memory is
 * in; cptrst fills it on first touch and in the background, says when the last page is in, and
 * exits. Real workloads check every page after the trigger: single processes, threads, a tree,
 * python, and `lazyfill`, which meets its memory while it comes in (the kernel reading and
 * writing it, MADV_DONTNEED, mremap, fork), trees whose children keep their parent's memory
 * copy-on-write. From a file and from a pipe, compressed or not; through a pipe from a slow writer
 * the process runs long before the image is all written. A truncated image (a file, a pipe closed
 * half way) leaves no process; an interrupted or killed cptrst takes the process with it (it never
 * runs on with pages missing); a user's image is refused.
 */
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import {
  CLI_MAIN, Workload, buildWorkloads, checkpointKill, cptrst, expectPass, killStartedWorkloads, procState, sleep, startWorkload, trigger, waitGone,
} from '../support';

const NOBODY = { uid: 65534, gid: 65534 };
const LAST_PAGE = /cptrst: process (\d+): the last page is in \((\d+) pages, (\d+) on first touch, \d+ ms after it started\)/;

interface Running {
  /** Resolves with the exit code (or signal), stdout and stderr. */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  /** Resolves with the first line of stdout (the PID), once printed. */
  pidLine: Promise<string>;
  pid: number;
}

/** `cptrst restart --lazy ...` as a child of the test, its stdin from `stdin` (a file streamed through a pipe) or /dev/null. */
function lazyRestart(args: string[], stdinFile?: string): Running {
  const child = spawn(process.execPath, [CLI_MAIN, 'restart', '--lazy', ...args], { stdio: [stdinFile ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  if (stdinFile) fs.createReadStream(stdinFile).pipe(child.stdin!).on('error', () => undefined);
  return watch(child);
}

/**
 * `cptrst restart --lazy -` fed the first `upTo` bytes of `file` by the test itself, `chunk` bytes
 * every `delayMs` ms, then end of stream; written() says how many bytes it has written so far.
 */
function slowLazyRestart(file: string, upTo: number, chunk: number, delayMs: number): Running & { written: () => number } {
  const child = spawn(process.execPath, [CLI_MAIN, 'restart', '--lazy', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const data = fs.readFileSync(file).subarray(0, upTo);
  let written = 0;
  child.stdin.on('error', () => undefined);
  const pump = async () => {
    while (written < data.length && child.exitCode === null) {
      const piece = data.subarray(written, Math.min(data.length, written + chunk));
      await new Promise<void>((resolve) => child.stdin.write(piece, () => resolve()));
      written += piece.length;
      await sleep(delayMs);
    }
    child.stdin.end();
  };
  void pump();
  return { ...watch(child), written: () => written };
}

/** The PID line and the end of a `cptrst restart --lazy` child. */
function watch(child: ReturnType<typeof spawn>): Running {
  let stdout = '';
  let stderr = '';
  let gotLine: (s: string) => void = () => undefined;
  const pidLine = new Promise<string>((resolve) => (gotLine = resolve));
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (stdout.includes('\n')) gotLine(stdout.split('\n')[0]);
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code, signal) => {
      gotLine('');
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { done, pidLine, pid: child.pid! };
}

async function restartsLazily(w: Workload, opts: { pipe?: boolean; go?: boolean; compress?: boolean } = {}): Promise<{ pages: number; faults: number }> {
  const img = path.join(w.dir, 'img');
  await checkpointKill(w, img, opts.compress ? ['--compress'] : []);
  if (opts.go) fs.writeFileSync(`${w.triggerPath}.go`, '');
  const r = lazyRestart(opts.pipe ? ['-'] : [img], opts.pipe ? img : undefined);
  const res = await r.done;
  expect(res.code, res.stderr).to.equal(0);
  expect(res.stdout.trim()).to.equal(String(w.pid));
  const m = LAST_PAGE.exec(res.stderr);
  expect(m, `no report of the last page: ${res.stderr}`).to.not.equal(null);
  expect(Number(m![1])).to.equal(w.pid);
  await trigger(w);
  await expectPass(w);
  return { pages: Number(m![2]), faults: Number(m![3]) };
}

describe('lazy restart', function () {
  this.timeout(180000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  for (const [name, args] of [['memory', []], ['dynamic', []], ['loop.py', []], ['pthreads', []]] as Array<[string, string[]]>) {
    it(`${name}: runs at once, every page right once the fill is over`, async () => {
      const w = await startWorkload(name, args);
      const { pages } = await restartsLazily(w);
      expect(pages, 'pages filled lazily').to.be.greaterThan(0);
    });
  }

  for (const [name, args] of [['cowtree', ['16']], ['tree', []]] as Array<[string, string[]]>) {
    it(`${name}: a tree whose children keep private memory copy-on-write from their parents (stored once) restarts lazily; each member checks its memory (and cowtree that the kept pages are still shared)`, async () => {
      const w = await startWorkload(name, args);
      const { pages } = await restartsLazily(w);
      if (name === 'cowtree') expect(pages, 'pages filled lazily').to.be.greaterThan(0);
    });
  }

  it('lazyfill: the kernel reads and writes pages not in yet; pages dropped, moved and forked during the fill stay right', async () => {
    const w = await startWorkload('lazyfill', ['32']);
    const { pages, faults } = await restartsLazily(w, { go: true });
    // 32 MiB, four pages out of five written: 6554 pages at least (forked children add theirs).
    expect(pages).to.be.at.least(6554);
    expect(faults, 'pages the process touched before the background fill reached them').to.be.greaterThan(0);
  });

  it('a compressed image from a file: its pages are decompressed as they stream in', async () => {
    const w = await startWorkload('lazyfill', ['16']);
    const { pages } = await restartsLazily(w, { go: true, compress: true });
    expect(pages).to.be.at.least(3277);
  });

  it('from a pipe: every page is served', async () => {
    const w = await startWorkload('lazyfill', ['16']);
    await restartsLazily(w, { pipe: true, go: true });
  });

  it('a compressed image through a pipe: its pages are decompressed as they stream in', async () => {
    const w = await startWorkload('lazyfill', ['16']);
    const { pages } = await restartsLazily(w, { pipe: true, go: true, compress: true });
    expect(pages).to.be.at.least(3277);
  });

  it('from a slow writer through a pipe: the process runs (and touches its memory) long before the writer is done', async () => {
    const w = await startWorkload('lazyfill', ['64']);
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    fs.writeFileSync(`${w.triggerPath}.go`, '');
    const size = fs.statSync(img).size;
    const r = slowLazyRestart(img, size, 64 * 1024, 10);
    expect(await r.pidLine).to.equal(String(w.pid));
    const writtenWhenRunning = r.written();
    expect(writtenWhenRunning, `bytes of ${size} written when the process ran`).to.be.below(size / 4);
    const st = await procState(w.pid);
    expect(st, 'the restored process exists while the image still streams in').to.not.equal(null);
    const res = await r.done;
    expect(res.code, res.stderr).to.equal(0);
    expect(res.stderr).to.match(LAST_PAGE);
    await trigger(w);
    await expectPass(w);
  });

  it('a page that fails its checksum, read after the process runs: the process is killed with a clear message, and nothing is left', async () => {
    const w = await startWorkload('lazyfill', ['32']);
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const data = fs.readFileSync(img);
    // A byte of the last page of the last object (the largest area comes last): after the process runs.
    data[data.length - 4096] ^= 0x5a;
    const bad = path.join(w.dir, 'bad');
    fs.writeFileSync(bad, data);
    const r = lazyRestart([bad]);
    expect(await r.pidLine, 'the process ran before the bad page was read').to.equal(String(w.pid));
    const res = await r.done;
    expect(res.code).to.not.equal(0);
    expect(res.stderr).to.match(new RegExp(`the image became unreadable half way \\(.*checksum mismatch.*\\).*killed \\(${w.pid}\\): it cannot run without its memory`));
    expect(await waitGone(w.pid, 10000), 'the restored process is gone').to.equal(true);
    await sleep(100);
    expect(fs.readFileSync(w.resultPath, 'utf8'), 'the process ran on to a verdict').to.not.match(/PASS|FAIL/);
  });

  it('a pipe closed by its writer half way, after the process runs: the process is killed with a clear message, and nothing is left', async () => {
    const w = await startWorkload('lazyfill', ['64']);
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const size = fs.statSync(img).size;
    const r = slowLazyRestart(img, Math.floor(size * 0.6), 256 * 1024, 5);
    expect(await r.pidLine, 'the process ran before the image ended').to.equal(String(w.pid));
    const res = await r.done;
    expect(res.code).to.not.equal(0);
    expect(res.stderr).to.match(new RegExp(`the image became unreadable half way \\(.*truncated.*\\).*killed \\(${w.pid}\\): it cannot run without its memory`));
    expect(res.stderr).to.not.match(LAST_PAGE);
    expect(await waitGone(w.pid, 10000), 'the restored process is gone').to.equal(true);
    await sleep(100);
    expect(fs.readFileSync(w.resultPath, 'utf8'), 'the process ran on to a verdict').to.not.match(/PASS|FAIL/);
  });

  it('--json: the PID first, then what the fill did', async () => {
    const w = await startWorkload('dynamic');
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const r = await cptrst(['restart', '--lazy', '--json', img]);
    expect(r.code, r.stderr).to.equal(0);
    const [first, second] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(first).to.include({ pid: w.pid, process: 'running' });
    expect(second.pid).to.equal(w.pid);
    expect((second.pagesIn as { pages: number }).pages).to.be.greaterThan(0);
    await trigger(w);
    await expectPass(w);
  });

  it('a truncated image: an error, and no process is left', async () => {
    const w = await startWorkload('lazyfill', ['8']);
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const cut = path.join(w.dir, 'cut');
    fs.writeFileSync(cut, fs.readFileSync(img).subarray(0, Math.floor(fs.statSync(img).size * 0.7)));
    const res = await lazyRestart([cut]).done;
    expect(res.code).to.not.equal(0);
    expect(res.stderr).to.match(/EBADIMG|EIO|truncated|end of/i);
    expect(await waitGone(w.pid, 10000), 'no process is left with the PID').to.equal(true);
  });

  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    it(`cptrst ${sig === 'SIGTERM' ? 'interrupted' : 'killed'} during the fill: the process is killed with it, it never runs on without its memory`, async () => {
      const w = await startWorkload('lazyfill', ['384']);
      const img = path.join(w.dir, 'img');
      await checkpointKill(w, img);
      // The image comes through a pipe, 4 MiB every 20 ms (two seconds at least for the fill): the
      // signal lands during the fill however fast cptrst and the machine are.
      const r = slowLazyRestart(img, fs.statSync(img).size, 4 << 20, 20);
      expect(await r.pidLine).to.equal(String(w.pid));
      process.kill(r.pid, sig);
      const res = await r.done;
      expect(res.stderr, 'the fill was over before the signal').to.not.match(LAST_PAGE);
      if (sig === 'SIGTERM') {
        expect(res.code).to.equal(143);
        expect(res.stderr).to.match(new RegExp(`killed \\(${w.pid}\\): it cannot run without its memory`));
      } else {
        expect(res.signal).to.equal('SIGKILL');
      }
      expect(await waitGone(w.pid, 10000), 'the restored process is gone').to.equal(true);
      await sleep(100);
      const out = fs.readFileSync(w.resultPath, 'utf8');
      expect(out, 'the process ran on to a verdict').to.not.match(/PASS|FAIL/);
    });
  }

  it('the image file cut short during the fill: the process is killed, with a message saying why', async () => {
    const w = await startWorkload('lazyfill', ['384']);
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    const r = lazyRestart([img]);
    expect(await r.pidLine).to.equal(String(w.pid));
    fs.truncateSync(img, 4096 * 64);
    const res = await r.done;
    expect(res.code).to.not.equal(0);
    expect(res.stderr).to.match(new RegExp(`the image became unreadable half way.*killed \\(${w.pid}\\): it cannot run without its memory`));
    expect(await waitGone(w.pid, 10000), 'the restored process is gone').to.equal(true);
    await sleep(100);
    expect(fs.readFileSync(w.resultPath, 'utf8'), 'the process ran on to a verdict').to.not.match(/PASS|FAIL/);
  });

  it("a user's image is refused before anything is made (EPERM)", async () => {
    const w = await startWorkload('dynamic');
    const img = path.join(w.dir, 'img');
    await checkpointKill(w, img);
    fs.chownSync(img, NOBODY.uid, NOBODY.gid);
    const res = await lazyRestart([img]).done;
    expect(res.code).to.not.equal(0);
    expect(res.stderr).to.match(/EPERM.*lazy restart is only for images owned by root/);
    expect(await procState(w.pid), 'nothing was made').to.equal(null);
  });
});
