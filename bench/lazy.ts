/**
 * Lazy restart against a plain one, through the command line, on the bench's touch workload: per
 * size, one checkpoint (--kill) to the image directory, then restarts from that image, plain and
 * --lazy (from the file, and through a pipe) in turn. Figures (medians): the time until the
 * restored process runs (a plain restart: when cptrst exits; a lazy one: when it prints the PID)
 * and until its last page is in (a lazy restart: when cptrst exits after saying so), and of the
 * lazy fill, how many pages the process touched first. A size is skipped, with a message, where
 * memory or the image directory is short. Every restored process then checks every word of its memory; anything
 * but PASS fails the benchmark.
 *
 * Usage: node bench/dist/lazy.js [--dir DIR] [--runs N] [sizes in MiB...]   (default 64 256 1024 4096)
 */
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const here = path.resolve(__dirname, '..');
/** The installed command, executed as a user runs it (its launcher line applies). */
const CLI = path.resolve(here, '..', 'packages', 'cli', 'bin', 'cptrst.js');
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
const readOr = (p: string) => {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
};
const alive = (pid: number) => fs.existsSync(`/proc/${pid}`) && !/^State:\s*[ZX]/m.test(readOr(`/proc/${pid}/status`));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

interface Timed {
  /** Until the process runs. */
  runs: number;
  /** Until its last page is in. */
  complete: number;
  /** Pages it touched before the background fill brought them (lazy only). */
  faults: number;
  pages: number;
}

/** A cptrst restart: the time of its first stdout line and of its end; `pipe`: the image through a pipe on its stdin. */
async function restart(args: string[], pipe?: string): Promise<Timed & { pid: number }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(CLI, ['restart', ...args], { stdio: [pipe ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  if (pipe) fs.createReadStream(pipe).pipe(child.stdin!).on('error', () => undefined);
  let stdout = '';
  let stderr = '';
  let runs = NaN;
  child.stdout!.on('data', (d) => {
    stdout += String(d);
    if (Number.isNaN(runs) && stdout.includes('\n')) runs = ms(t0);
  });
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  const complete = ms(t0);
  if (code !== 0) throw new Error(`cptrst restart ${args.join(' ')} failed (${code}): ${stderr.trim()}`);
  const m = /\((\d+) pages, (\d+) on first touch/.exec(stderr);
  return { pid: Number(stdout.split('\n')[0]), runs, complete, faults: m ? Number(m[2]) : 0, pages: m ? Number(m[1]) : 0 };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let dir = process.env.CPTRST_BENCH_DIR || '/dev/shm';
  let runs = Number(process.env.CPTRST_BENCH_RUNS || 3);
  const sizes: number[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--dir') dir = argv[++i];
    else if (argv[i] === '--runs') runs = Number(argv[++i]);
    else if (/^\d+$/.test(argv[i])) sizes.push(Number(argv[i]));
    else throw new Error(`lazy: unknown argument ${argv[i]}\nusage: lazy.js [--dir DIR] [--runs N] [sizes in MiB...]`);
  }
  if (!sizes.length) sizes.push(64, 256, 1024, 4096);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-lazy-'));
  const images = fs.mkdtempSync(path.join(dir, 'cptrst-lazy-img-'));
  const bin = path.join(work, 'touch');
  execFileSync('gcc', ['-O2', '-o', bin, path.join(here, 'touch.c')]);
  const started = new Set<number>();
  const rows = [
    '| touched | plain: runs (all in) | lazy: runs | lazy: all pages in | lazy from a pipe: runs | all pages in | touched first |',
    '|---|---|---|---|---|---|---|',
  ];
  // Node's start-up and cptrst's module loading, in every figure: measured once, to read them without it.
  const ups: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    execFileSync(CLI, ['--version']);
    ups.push(ms(t0));
  }
  const startup = median(ups);
  console.log(`images in ${dir}; ${runs} run(s) of each, alternating, medians; \`cptrst --version\` takes ${startup.toFixed(0)} ms (start-up, in every figure)`);
  type Mode = 'plain' | 'lazy' | 'pipe';
  const orders: Mode[][] = [['plain', 'lazy', 'pipe'], ['lazy', 'pipe', 'plain'], ['pipe', 'plain', 'lazy']];
  try {
    for (const mib of sizes) {
      // The image, the process and its restored copy are in memory at once (the checkpointed one is gone by then).
      const availMiB = Number(/^MemAvailable:\s+(\d+) kB/m.exec(readOr('/proc/meminfo'))?.[1] ?? 0) / 1024;
      const shmMiB = Number(fs.statfsSync(dir).bavail * fs.statfsSync(dir).bsize) / 2 ** 20;
      if (availMiB < 3 * mib + 2048 || shmMiB < 1.1 * mib + 256) {
        const skip = `| ${mib} MiB | skipped: ${availMiB.toFixed(0)} MiB of memory available, ${shmMiB.toFixed(0)} MiB free in ${dir} (needs ${3 * mib + 2048} and ${Math.ceil(1.1 * mib + 256)}) | | | | | |`;
        rows.push(skip);
        console.error(skip);
        continue;
      }
      const img = path.join(images, `img-${mib}`);
      const res: Record<Mode, Timed[]> = { plain: [], lazy: [], pipe: [] };
      for (let k = 0; k < runs; k++) {
        for (const mode of orders[k % 3]) {
          const out = path.join(work, `out-${mib}-${k}-${mode}`);
          const trigger = path.join(work, `go-${mib}-${k}-${mode}`);
          // A fresh process each time (touch gives up its PID at the end): checkpointed, killed by the checkpoint.
          const ofd = fs.openSync(out, 'w');
          const child = spawn(bin, [String(mib), trigger], { stdio: ['ignore', ofd, ofd], detached: true });
          fs.closeSync(ofd);
          child.unref();
          started.add(child.pid!);
          for (let i = 0; i < 6000 && !readOr(out).includes('READY'); i++) await sleep(10);
          execFileSync(CLI, ['checkpoint', String(child.pid), '-o', img, '--kill']);
          for (let i = 0; i < 1000 && fs.existsSync(`/proc/${child.pid}`); i++) await sleep(5);
          const r = mode === 'plain' ? await restart([img]) : mode === 'lazy' ? await restart(['--lazy', img]) : await restart(['--lazy', '-'], img);
          res[mode].push(r);
          fs.writeFileSync(trigger, '');
          for (let i = 0; i < 6000 && !/^(PASS|FAIL|TIMEOUT)/m.test(readOr(out)); i++) await sleep(10);
          const v = /^(PASS|FAIL|TIMEOUT).*$/m.exec(readOr(out));
          if (!v || v[1] !== 'PASS') throw new Error(`the ${mode} restored workload (pid ${r.pid}) reports: ${v?.[0] ?? JSON.stringify(readOr(out))}`);
          for (let j = 0; j < 1000 && alive(r.pid); j++) await sleep(5);
          started.delete(child.pid!);
          fs.rmSync(img, { force: true });
        }
      }
      const m = (mode: Mode, key: keyof Timed) => median(res[mode].map((r) => r[key]));
      const t = (mode: Mode, key: keyof Timed) => `${m(mode, key).toFixed(0)} ms`;
      rows.push(`| ${mib} MiB | ${t('plain', 'complete')} | ${t('lazy', 'runs')} | ${t('lazy', 'complete')} | ${t('pipe', 'runs')} | ${t('pipe', 'complete')} | ${m('lazy', 'faults')} of ${m('lazy', 'pages')} pages |`);
      console.error(rows[rows.length - 1]);
    }
  } finally {
    for (const pid of started) {
      try {
        if (alive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    fs.rmSync(images, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
  console.log(rows.join('\n'));
}

main().catch((e) => {
  console.error(`BENCHMARK FAILED: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exit(1);
});
