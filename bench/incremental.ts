/**
 * Incremental checkpoints: a chain of images of a process that rewrites about 1% of its memory
 * between checkpoints (test/workloads/incrwrite.c, N MiB of private anonymous memory with a pattern
 * per page), through the cptrst command line.
 *
 *   node bench/dist/incremental.js [--mib N] [--steps N] [--dir DIR] [--runs N]
 *
 * 1. The process's own write rate without tracking: it writes one word of every page (each page
 *    already present), timing itself.
 * 2. `checkpoint --track` (the full image), then `--steps` times: a step (about 1% of the pages
 *    rewritten), `checkpoint --parent` the previous image.
 * 3. The same write rate with tracking: the first write to each page after a checkpoint takes a
 *    write-protect fault that the kernel resolves by itself (the worst case of tracking).
 * 4. Every image of the chain is restarted (the process killed first) and the process checks
 *    every page of its memory: anything but PASS fails the benchmark.
 * --runs repeats the write-rate measurements (median). Images go to DIR (default /dev/shm).
 */
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const here = __dirname;
const repo = path.resolve(here, '..', '..');
const cli = path.join(repo, 'packages', 'cli', 'bin', 'cptrst.js');

interface Options {
  mib: number;
  steps: number;
  dir: string;
  runs: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { mib: 1024, steps: 10, dir: process.env.CPTRST_BENCH_DIR ?? '/dev/shm', runs: 1 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    if (argv[i] === '--mib') o.mib = Number(v);
    else if (argv[i] === '--steps') o.steps = Number(v);
    else if (argv[i] === '--dir') o.dir = v;
    else if (argv[i] === '--runs') o.runs = Number(v);
    else throw new Error(`unknown argument ${argv[i]}`);
    i++;
  }
  if (!(o.mib > 0 && o.steps > 0 && o.runs > 0)) throw new Error('--mib, --steps and --runs take positive numbers');
  return o;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(st);
  } catch {
    return false;
  }
}

async function waitFor(file: string, what: string, ms = 600000): Promise<string> {
  for (let i = 0; i < ms / 10; i++) {
    if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8');
    await sleep(10);
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface CliRun {
  ms: number;
  doc: Record<string, unknown>;
}

function cptrst(args: string[]): CliRun {
  const t0 = process.hrtime.bigint();
  let out: string;
  try {
    out = execFileSync(cli, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 24 });
  } catch (e) {
    const err = e as { stderr?: string };
    throw new Error(`cptrst ${args.join(' ')} failed: ${err.stderr ?? String(e)}`);
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, doc: out.trim().startsWith('{') ? (JSON.parse(out) as Record<string, unknown>) : {} };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-incr-'));
  const images = fs.mkdtempSync(path.join(o.dir, 'cptrst-incr-img-'));
  const bin = path.join(work, 'incrwrite');
  execFileSync('gcc', ['-O2', '-pthread', '-o', bin, path.join(repo, 'test', 'workloads', 'incrwrite.c')]);
  const trigger = path.join(work, 't');
  const out = path.join(work, 'out');
  const ofd = fs.openSync(out, 'w');
  const child = spawn(bin, [trigger, String(o.mib)], { stdio: ['ignore', ofd, ofd], detached: true });
  fs.closeSync(ofd);
  child.unref();
  const pid = child.pid!;
  const cleanup = () => {
    try {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  };
  process.on('exit', cleanup);
  try {
    for (let i = 0; !fs.readFileSync(out, 'utf8').includes('READY'); i++) {
      if (i > 60000) throw new Error('the workload did not start');
      await sleep(10);
    }
    // The output file as the checkpoints see it: each restart gets it back as it was (its size and
    // time are checked), and writes its verdict after the READY line.
    const saved = path.join(work, 'out.saved');
    execFileSync('cp', ['-p', out, saved]);
    const sweep = async (): Promise<number> => {
      fs.rmSync(`${trigger}.sweep.done`, { force: true });
      fs.writeFileSync(`${trigger}.sweep`, '');
      return Number((await waitFor(`${trigger}.sweep.done`, 'the sweep')).trim());
    };
    const pages = (o.mib * 1048576) / 4096;
    const rate = (ns: number) => `${((pages / ns) * 1e9 / 1e6).toFixed(2)} M pages/s (${(ns / 1e6).toFixed(0)} ms)`;
    const untracked: number[] = [];
    for (let r = 0; r < o.runs; r++) untracked.push(await sweep());

    const img = (k: number) => path.join(images, `i${k}.img`);
    const rows: string[] = [];
    const full = cptrst(['checkpoint', String(pid), '-o', img(0), '--track', '--json']);
    const fullSize = fs.statSync(img(0)).size;
    const line = (k: number, run: CliRun) => {
      const inc = (run.doc.incremental as Array<{ method: string; storedPages: number; parentPages: number }>)[0];
      const size = fs.statSync(img(k)).size;
      return { k, method: inc.method, stored: inc.storedPages, parent: inc.parentPages, size, frozen: run.doc.frozenMs as number, wall: run.ms };
    };
    const chain = [line(0, full)];
    for (let k = 1; k <= o.steps; k++) {
      fs.writeFileSync(`${trigger}.${k}`, '');
      await waitFor(`${trigger}.${k}.done`, `step ${k}`);
      chain.push(line(k, cptrst(['checkpoint', String(pid), '-o', img(k), '--parent', img(k - 1), '--json'])));
    }
    // With tracking: each sweep comes right after a checkpoint armed the tracking again.
    const tracked: number[] = [];
    for (let r = 0; r < o.runs; r++) {
      if (r > 0) cptrst(['checkpoint', String(pid), '-o', path.join(images, 'rearm.img'), '--parent', img(o.steps), '--json']);
      tracked.push(await sweep());
    }
    fs.rmSync(path.join(images, 'rearm.img'), { force: true });

    // Every image restarts into a process that checks all its memory.
    process.kill(pid, 'SIGKILL');
    while (fs.existsSync(`/proc/${pid}`)) await sleep(10);
    const restarts: Array<{ ms: number; verdict: string }> = [];
    for (const c of chain) {
      // No step file left: the restarted process would run those steps before it checks itself.
      for (const f of fs.readdirSync(work)) if (f.startsWith('t.')) fs.rmSync(path.join(work, f), { force: true });
      fs.rmSync(trigger, { force: true });
      execFileSync('cp', ['-p', saved, out]);
      const r = cptrst(['restart', img(c.k)]);
      fs.writeFileSync(trigger, '');
      for (let i = 0; alive(pid) && i < 60000; i++) await sleep(10);
      while (fs.existsSync(`/proc/${pid}`)) await sleep(10);
      const verdict = fs.readFileSync(out, 'utf8').split('\n').find((l) => /^(PASS|FAIL) /.test(l)) ?? '(no verdict)';
      restarts.push({ ms: r.ms, verdict });
      if (verdict !== `PASS incrwrite (step ${c.k})`) throw new Error(`BENCHMARK FAILED: image ${c.k} restarted into ${verdict}`);
    }

    console.log(`incremental chain: ${o.mib} MiB, ${o.steps} steps of ~1% rewritten, images in ${images}`);
    console.log('');
    console.log('| image | found by | pages written | from parents | image size | of the full | frozen | checkpoint wall | restart wall | after restart |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    chain.forEach((c, i) => {
      rows.push(`| ${c.k === 0 ? 'full (--track)' : `${c.k} (--parent ${c.k - 1})`} | ${c.method} | ${c.stored} | ${c.parent} | ${mib(c.size)} | ${((c.size / fullSize) * 100).toFixed(2)}% | ${c.frozen.toFixed(0)} ms | ${c.wall.toFixed(0)} ms | ${restarts[i].ms.toFixed(0)} ms | ${restarts[i].verdict} |`);
    });
    for (const r of rows) console.log(r);
    console.log('');
    console.log(`the process's own write rate (one word of every page, ${pages} pages), median of ${o.runs}:`);
    console.log(`- without tracking: ${rate(median(untracked))}`);
    console.log(`- with tracking, first write to each page after a checkpoint: ${rate(median(tracked))}`);
  } finally {
    cleanup();
    fs.rmSync(images, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
