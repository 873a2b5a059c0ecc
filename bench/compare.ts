/**
 * cptrst side by side with CRIU, through their command lines, on the same workload (touch.c),
 * runs of the two alternating so that machine noise hits both alike. Per size (0 = an idle
 * process with a few pages): the process is checkpointed and left running (cptrst's default, a
 * copy-on-write snapshot; `criu dump --leave-running`), killed, restarted from the image, and then
 * checks every word of its memory (anything but PASS fails the benchmark). Figures: the time the
 * process was frozen (cptrst's --json frozenMs; CRIU's stats-dump frozen_time), checkpoint and
 * restart wall time of the command (start-up included), image size. Also the start-up of each
 * command (`--version`) and of `node -e 0`, wall and CPU time.
 *
 * cptrst also runs with --compress (LZ4 page data) in the same alternation ("cptrst -z"): its
 * checkpoint and restart wall times and image size; and restarted with --lazy: the time until the
 * process runs (its PID printed) and until its last page is in (the command's end). touch.c's pages do not compress (every word
 * differs); `--words N` makes only N of the 512 words of each page differ and the rest the page
 * number, pages that compress to about N/512.
 *
 * `cptrst-precopy` is plain cptrst with --pre-copy (mm/src/precopy.ts): its frozen time, the stop
 * before the freeze (preCopy.stoppedMs, to make the userfaultfd), checkpoint and restart wall
 * times, and which path its pages took (a fallback to the snapshot is counted and shown).
 *
 * `--tools` picks the variants (default cptrst,criu,cptrst-z,cptrst-lazy); `cptrst-memfile` is
 * plain cptrst with CPTRST_SNAPSHOT_MEMFILE=1 (the snapshot's pages read through /proc/PID/mem, as
 * before the vmsplice path), for a before/after in one alternation; `cptrst-copy` is plain cptrst
 * restarted with CPTRST_PAGES_THROUGH_CPTRST=1 (every page read into cptrst and written into the
 * process, as before the process read its pages section from the image file itself).
 * `cptrst-base` and `cptrst-base-lazy` are plain and lazy cptrst from another build of the CLI,
 * named by CPTRST_BENCH_BASE (its bin/cptrst.js, executed like this build's: it must be executable;
 * e.g. a copy of an earlier build), for the same.
 *
 * Usage: node bench/dist/compare.js [--dir DIR] [--runs N] [--no-snapshot] [--words N] [--tools T,T...] [sizes in MiB...]
 *   CRIU is looked for in $CRIU, then PATH, then /var/tmp/criu-4.2/criu/criu and
 *   /var/tmp/criu-speed/criu/criu (where ../shared/criu/build.sh --criu puts it); without it only
 *   cptrst runs. CRIU's stats are decoded with its crit (python3 with protobuf).
 */
import { execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const here = path.resolve(__dirname, '..');
/** The installed command, run as a user runs it (executed, not `node cptrst.js`: its launcher line applies). */
const CLI = path.resolve(here, '..', 'packages', 'cli', 'bin', 'cptrst.js');
/** Another build's CLI, for the cptrst-base tools (executed too). */
const BASE_CLI = process.env.CPTRST_BENCH_BASE;

interface Options {
  dir: string;
  runs: number;
  sizes: number[];
  noSnapshot: boolean;
  /** Words per page that differ (touch.c's HASHED; 512 = all of them). */
  words: number;
  tools?: Tool[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { dir: process.env.CPTRST_BENCH_DIR || '/dev/shm', runs: Number(process.env.CPTRST_BENCH_RUNS || 3), sizes: [], noSnapshot: false, words: 512 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dir') o.dir = argv[++i];
    else if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a === '--no-snapshot') o.noSnapshot = true;
    else if (a === '--words') o.words = Number(argv[++i]);
    else if (a === '--tools') o.tools = argv[++i].split(',').map(toolName);
    else if (/^\d+$/.test(a)) o.sizes.push(Number(a));
    else throw new Error(`compare: unknown argument ${a}\nusage: compare.js [--dir DIR] [--runs N] [--no-snapshot] [--words N] [--tools T,T...] [sizes in MiB...]`);
  }
  if (!fs.existsSync(o.dir)) throw new Error(`compare: image directory ${o.dir} does not exist`);
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('compare: --runs needs a positive integer');
  if (!Number.isInteger(o.words) || o.words < 0 || o.words > 512) throw new Error('compare: --words needs an integer in 0..512');
  if (!o.sizes.length) o.sizes = [0, 64, 256, 1024];
  return o;
}

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

function findCriu(): string | undefined {
  const cands = [process.env.CRIU, ...((process.env.PATH ?? '').split(':').map((d) => path.join(d, 'criu'))), '/var/tmp/criu-4.2/criu/criu', '/var/tmp/criu-speed/criu/criu'];
  return cands.find((c) => !!c && fs.existsSync(c));
}

/**
 * Runs a command to its end; its wall time in ms, when it printed its first line (`firstLine`: a
 * lazy restart's PID, once the process runs), stdout, and a failure as an Error.
 */
async function timedRun(cmd: string, args: string[], what: string, env?: NodeJS.ProcessEnv): Promise<{ ms: number; stdout: string; firstLine: number }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let stdout = '';
  let stderr = '';
  let firstLine = NaN;
  child.stdout.on('data', (d) => {
    stdout += String(d);
    if (Number.isNaN(firstLine) && stdout.includes('\n')) firstLine = ms(t0);
  });
  child.stderr.on('data', (d) => (stderr += String(d)));
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  const t = ms(t0);
  if (code !== 0) throw new Error(`${what} failed (${code}): ${stderr.trim()}`);
  return { ms: t, stdout, firstLine };
}

interface Run {
  frozen: number;
  checkpoint: number;
  restart: number;
  image: number;
  /** restart --lazy: until the process runs (its PID printed). */
  runs?: number;
  /** --pre-copy: ms the process was stopped before the freeze; 1 when its pages came from the snapshot (a fallback). */
  stopped?: number;
  fellBack?: number;
}

const TOOLS = ['cptrst', 'cptrst-z', 'cptrst-lazy', 'cptrst-precopy', 'cptrst-memfile', 'cptrst-copy', 'cptrst-base', 'cptrst-base-lazy', 'criu'] as const;
type Tool = (typeof TOOLS)[number];

function toolName(t: string): Tool {
  const tool = TOOLS.find((x) => x === t);
  if (!tool) throw new Error(`compare: unknown tool ${t} (${TOOLS.join(', ')})`);
  return tool;
}

class Compare {
  private readonly started = new Set<number>();
  readonly work = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-compare-'));
  readonly images: string;
  private readonly bin = path.join(this.work, 'touch');

  constructor(readonly opts: Options, readonly criu: string | undefined) {
    this.images = fs.mkdtempSync(path.join(opts.dir, 'cptrst-compare-img-'));
    execFileSync('gcc', ['-O2', '-pthread', '-o', this.bin, path.join(here, 'touch.c')]);
  }

  async startTouch(mib: number, out: string, trigger: string): Promise<number> {
    const ofd = fs.openSync(out, 'w');
    const child = spawn(this.bin, [String(mib), trigger, '600', '0', String(this.opts.words)], { stdio: ['ignore', ofd, ofd], detached: true });
    fs.closeSync(ofd);
    child.unref();
    if (child.pid) this.started.add(child.pid);
    for (let i = 0; i < 6000; i++) {
      if (readOr(out).includes('READY')) return child.pid!;
      if (child.exitCode !== null) throw new Error(`workload exited before READY: ${readOr(out).trim()}`);
      await sleep(10);
    }
    throw new Error('workload did not start');
  }

  async killAndWait(pid: number): Promise<void> {
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 1000 && fs.existsSync(`/proc/${pid}`); i++) await sleep(5);
  }

  async verdict(pid: number, out: string): Promise<void> {
    for (let i = 0; i < 6000; i++) {
      const m = /^(PASS|FAIL|TIMEOUT).*$/m.exec(readOr(out));
      if (m) {
        if (m[1] !== 'PASS') throw new Error(`the restored workload (pid ${pid}) reports: ${m[0]}`);
        for (let j = 0; j < 1000 && alive(pid); j++) await sleep(5);
        return;
      }
      if (!alive(pid)) throw new Error(`the restored workload (pid ${pid}) ended without PASS: ${JSON.stringify(readOr(out))}`);
      await sleep(10);
    }
    throw new Error(`the restored workload (pid ${pid}) gave no verdict`);
  }

  async run(tool: Tool, mib: number, n: number): Promise<Run> {
    const tag = `${tool}-${mib}-${n}`;
    const out = path.join(this.work, `out-${tag}`);
    const trigger = path.join(this.work, `go-${tag}`);
    const pid = await this.startTouch(mib, out, trigger);
    let r: Run;
    if (tool !== 'criu') {
      const img = path.join(this.images, `img-${tag}`);
      const extra = [...(this.opts.noSnapshot ? ['--no-snapshot'] : []), ...(tool === 'cptrst-z' ? ['--compress'] : []), ...(tool === 'cptrst-precopy' ? ['--pre-copy'] : [])];
      const env = tool === 'cptrst-memfile' ? { ...process.env, CPTRST_SNAPSHOT_MEMFILE: '1' } : undefined;
      const cli = tool.startsWith('cptrst-base') ? BASE_CLI! : CLI;
      const ck = await timedRun(cli, ['checkpoint', String(pid), '-o', img, '--json', ...extra], 'cptrst checkpoint', env);
      const doc = JSON.parse(ck.stdout) as { frozenMs: number; preCopy?: { path: string; stoppedMs: number } };
      const image = fs.statSync(img).size;
      await this.killAndWait(pid);
      const renv = tool === 'cptrst-copy' ? { ...process.env, CPTRST_PAGES_THROUGH_CPTRST: '1' } : undefined;
      const rs = await timedRun(cli, ['restart', ...(tool.endsWith('-lazy') ? ['--lazy'] : []), img], 'cptrst restart', renv);
      fs.rmSync(img);
      r = { frozen: doc.frozenMs, checkpoint: ck.ms, restart: rs.ms, image, runs: rs.firstLine };
      if (doc.preCopy) Object.assign(r, { stopped: doc.preCopy.stoppedMs, fellBack: doc.preCopy.path === 'pre-copy' ? 0 : 1 });
    } else {
      const dir = path.join(this.images, `criu-${tag}`);
      fs.mkdirSync(dir);
      const ck = await timedRun(this.criu!, ['dump', '-t', String(pid), '-D', dir, '--leave-running', '-o', 'dump.log', '-v1'], 'criu dump');
      const frozen = criuStat(dir, 'stats-dump', 'dump', 'frozen_time') / 1000;
      const image = fs.readdirSync(dir).filter((f) => f.endsWith('.img')).reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
      await this.killAndWait(pid);
      const rs = await timedRun(this.criu!, ['restore', '-D', dir, '-d', '-o', 'restore.log', '-v1'], 'criu restore');
      fs.rmSync(dir, { recursive: true, force: true });
      r = { frozen, checkpoint: ck.ms, restart: rs.ms, image };
    }
    fs.writeFileSync(trigger, '');
    await this.verdict(pid, out);
    this.started.delete(pid);
    return r;
  }

  cleanup(): void {
    for (const pid of this.started) {
      try {
        if (alive(pid)) process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    fs.rmSync(this.images, { recursive: true, force: true });
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

/** A field of CRIU's stats file (µs), decoded with its crit. */
function criuStat(dir: string, file: string, section: string, field: string): number {
  const criu = path.resolve(path.dirname(findCriu()!), '..');
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'; // the system's, which has protobuf
  const r = spawnSync(python, ['-m', 'crit', 'decode', '-i', path.join(dir, file)], {
    env: { ...process.env, PYTHONPATH: [path.join(criu, 'crit'), path.join(criu, 'lib')].join(':') },
    encoding: 'utf8',
  });
  if (r.status !== 0) return NaN;
  const doc = JSON.parse(r.stdout) as { entries: Array<Record<string, Record<string, number>>> };
  return Number(doc.entries[0]?.[section]?.[field] ?? NaN);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

/** CPU time (user + system, ms) of this process's waited-for children so far: /proc/self/stat cutime + cstime. */
function childrenCpuMs(): number {
  const f = fs.readFileSync('/proc/self/stat', 'utf8').replace(/^.*\) /, '').split(' ');
  const ticks = Number(f[13]) + Number(f[14]); // fields 16 and 17 of stat(5)
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/** Median wall time (ms) of a command run `n` times, and its mean CPU time. */
async function startup(cmd: string, args: string[], n: number, env?: NodeJS.ProcessEnv): Promise<{ wall: number; cpu: number }> {
  const t: number[] = [];
  const cpu0 = childrenCpuMs();
  for (let i = 0; i < n; i++) t.push((await timedRun(cmd, args, `${cmd} ${args.join(' ')}`, env)).ms);
  return { wall: median(t), cpu: (childrenCpuMs() - cpu0) / n };
}

/** ms of one in-memory copy of `mib` MiB (both buffers touched first): the bound on moving the pages once. */
function memcpyMs(mib: number): number {
  if (mib === 0) return 0;
  const a = Buffer.alloc(mib << 20, 1);
  const b = Buffer.alloc(mib << 20);
  a.copy(b);
  const t0 = process.hrtime.bigint();
  a.copy(b);
  return ms(t0);
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const criu = findCriu();
  const c = new Compare(opts, criu);
  const tools: Tool[] = (opts.tools ?? ['cptrst', 'criu', 'cptrst-z', 'cptrst-lazy']).filter((t) => t !== 'criu' || criu);
  if (!tools.includes('cptrst')) tools.unshift('cptrst');
  const has = (t: Tool) => tools.includes(t);
  if ((has('cptrst-base') || has('cptrst-base-lazy')) && !(BASE_CLI && fs.existsSync(BASE_CLI))) throw new Error('compare: the cptrst-base tools need CPTRST_BENCH_BASE, the bin/cptrst.js of another build');
  console.log(`images in ${opts.dir}; ${opts.runs} run(s) per size and tool, alternating, medians; cptrst ${opts.noSnapshot ? 'with --no-snapshot' : 'with its copy-on-write snapshot'}; ${opts.words} of 512 words per page differ; CRIU: ${criu ?? 'not found'}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const n = Math.max(10, opts.runs);
  const node = await startup(process.execPath, ['-e', '0'], n);
  // The launcher starts Node without NODE_EXTRA_CA_CERTS: Node's own start-up without it, for comparison.
  const certs = process.env.NODE_EXTRA_CA_CERTS !== undefined;
  const noCerts = { ...process.env };
  delete noCerts.NODE_EXTRA_CA_CERTS;
  const bare = certs ? await startup(process.execPath, ['-e', '0'], n, noCerts) : undefined;
  const cpt = await startup(CLI, ['--version'], n);
  // The same command from the compiled modules, without the bundle and its code cache (and without the launcher's line).
  const unbundled = await startup(process.execPath, [path.resolve(path.dirname(CLI), '..', 'dist', 'src', 'main.js'), '--version'], n, noCerts);
  const criuUp = criu ? await startup(criu, ['--version'], n) : undefined;
  const up = (x: { wall: number; cpu: number }) => `${x.wall.toFixed(0)} ms (CPU ${x.cpu.toFixed(0)} ms)`;
  const baseUp = BASE_CLI && (has('cptrst-base') || has('cptrst-base-lazy')) ? await startup(BASE_CLI, ['--version'], n) : undefined;
  console.log(
    `start-up, median wall (mean CPU) of ${n}: node -e 0 ${up(node)}${bare ? ` (without NODE_EXTRA_CA_CERTS: ${up(bare)})` : ''}; cptrst --version ${up(cpt)} (unbundled: ${up(unbundled)}${baseUp ? `; base: ${up(baseUp)}` : ''}); criu --version ${criuUp ? up(criuUp) : '-'}`,
  );
  const memfile = has('cptrst-memfile');
  const copy = has('cptrst-copy');
  const base = has('cptrst-base');
  const baseLazy = has('cptrst-base-lazy');
  const pre = has('cptrst-precopy');
  const rows = [
    `| touched | frozen cptrst / CRIU | checkpoint wall | restart wall |${memfile ? ' mem file (before): frozen, checkpoint |' : ''}${copy ? ' restart, pages through cptrst (before) |' : ''}${base ? ' base: frozen, checkpoint, restart |' : ''} restart --lazy: runs, all in |${baseLazy ? ' base --lazy: runs, all in |' : ''}${pre ? ' --pre-copy: frozen + stopped before, checkpoint, restart |' : ''} --compress: checkpoint, restart | image MiB: plain / --compress / CRIU | memcpy (bound) |`,
    `|---|---|---|---|${memfile ? '---|' : ''}${copy ? '---|' : ''}${base ? '---|' : ''}---|${baseLazy ? '---|' : ''}${pre ? '---|' : ''}---|---|---|`,
  ];
  const fmt = (a: number, b: number) => (has('criu') ? `${a.toFixed(0)} / ${b.toFixed(0)} ms (${(a / b).toFixed(2)}x)` : `${a.toFixed(0)} ms`);
  try {
    for (const mib of opts.sizes) {
      const runs: Record<Tool, Run[]> = { cptrst: [], 'cptrst-z': [], 'cptrst-lazy': [], 'cptrst-precopy': [], 'cptrst-memfile': [], 'cptrst-copy': [], 'cptrst-base': [], 'cptrst-base-lazy': [], criu: [] };
      for (let k = 0; k < opts.runs; k++) {
        for (const tool of k % 2 ? [...tools].reverse() : tools) runs[tool].push(await c.run(tool, mib, k));
      }
      const m = (t: Tool, key: keyof Run) => median(runs[t].map((r) => r[key] ?? NaN));
      const label = mib === 0 ? 'idle' : `${mib} MiB`;
      const mb = (t: Tool) => (m(t, 'image') / 1048576).toFixed(m(t, 'image') < 1048576 ? 2 : 1);
      const img = `${mb('cptrst')} / ${has('cptrst-z') ? `${mb('cptrst-z')} (${((100 * m('cptrst-z', 'image')) / m('cptrst', 'image')).toFixed(0)}%)` : '-'} / ${has('criu') ? mb('criu') : '-'}`;
      const z = has('cptrst-z') ? `${m('cptrst-z', 'checkpoint').toFixed(0)}, ${m('cptrst-z', 'restart').toFixed(0)} ms` : '-';
      const bound = mib ? `${memcpyMs(mib).toFixed(0)} ms` : '-';
      const lazy = has('cptrst-lazy') ? `${m('cptrst-lazy', 'runs').toFixed(0)}, ${m('cptrst-lazy', 'restart').toFixed(0)} ms` : '-';
      const before = memfile ? ` ${m('cptrst-memfile', 'frozen').toFixed(0)}, ${m('cptrst-memfile', 'checkpoint').toFixed(0)} ms |` : '';
      const copied = copy ? ` ${fmt(m('cptrst-copy', 'restart'), m('criu', 'restart'))} |` : '';
      const baseCol = base ? ` ${m('cptrst-base', 'frozen').toFixed(0)}, ${m('cptrst-base', 'checkpoint').toFixed(0)}, ${m('cptrst-base', 'restart').toFixed(0)} ms |` : '';
      const fellBack = runs['cptrst-precopy'].filter((r) => r.fellBack).length;
      const preCol = pre
        ? ` ${m('cptrst-precopy', 'frozen').toFixed(0)} + ${m('cptrst-precopy', 'stopped').toFixed(1)}, ${m('cptrst-precopy', 'checkpoint').toFixed(0)}, ${m('cptrst-precopy', 'restart').toFixed(0)} ms${fellBack ? ` (${fellBack} of ${runs['cptrst-precopy'].length} from the snapshot)` : ''} |`
        : '';
      const baseLazyCol = baseLazy ? ` ${m('cptrst-base-lazy', 'runs').toFixed(0)}, ${m('cptrst-base-lazy', 'restart').toFixed(0)} ms |` : '';
      rows.push(`| ${label} | ${fmt(m('cptrst', 'frozen'), m('criu', 'frozen'))} | ${fmt(m('cptrst', 'checkpoint'), m('criu', 'checkpoint'))} | ${fmt(m('cptrst', 'restart'), m('criu', 'restart'))} |${before}${copied}${baseCol} ${lazy} |${baseLazyCol}${preCol} ${z} | ${img} | ${bound} |`);
      console.error(rows[rows.length - 1]);
    }
  } catch (e) {
    c.cleanup();
    throw e;
  }
  c.cleanup();
  console.log(rows.join('\n'));
}

main().catch((e) => {
  console.error(`COMPARISON FAILED: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exit(1);
});
