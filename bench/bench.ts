/**
 * Checkpoint/restart benchmark: processes that touched 64 MiB, 256 MiB and 1 GiB of private
 * memory are checkpointed (and killed), restarted from the image, and then check every word of
 * their memory (bench/touch.c prints PASS or FAIL; anything but PASS fails the benchmark).
 * For each size: the time the target was frozen, checkpoint and restart wall time, image size,
 * and the speed of a plain in-memory copy of the same size in this run (the bound).
 *
 * Usage: node bench/dist/bench.js [--dir DIR] [--runs N] [--threads N,N...] [sizes in MiB...]
 *   --dir DIR   where images are written (env CPTRST_BENCH_DIR); default /dev/shm (tmpfs), so the
 *               figures are the tool's and not the disk's. Use a disk directory to include the disk.
 *   --runs N    runs per size (env CPTRST_BENCH_RUNS, default 3); the table shows the median of
 *               each figure, and the best checkpoint and restart.
 *   --threads N,N...  also a table by thread count (env CPTRST_BENCH_THREADS): processes with 16 MiB
 *               touched and that many more threads, each checking its thread-local value after
 *               the restart; with no sizes given, only that table.
 *   CPTRST_BENCH_DETAIL=1 prints each run's per-phase timings (ms) on stderr.
 *   First, the image code's own speed on page data in memory, plain and LZ4 (--compress), for
 *   touch.c's pages and for pages that compress (CPTRST_BENCH_NO_CODEC=1 skips it).
 *   CPTRST_CRC=zlib makes the image code use zlib's CRC-32 instead of @node-rs/crc32's (same result).
 * Fds inherited without close-on-exec (a shell's stray pipe) are made close-on-exec first, so the
 * workload does not inherit them: cptrst would refuse to checkpoint a pipe.
 * Build first: npx tsc -b packages/cpt-module bench. Results and notes: bench/README.md.
 */
import 'reflect-metadata';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  CheckpointFlags, ImageHead, ImageReader, ImageWriter, MemorySink, bufferSource, linux, loadModule, sys_checkpoint, sys_restart,
} from '@cptrst/core';

const TMPFS_MAGIC = 0x01021994;
const here = path.resolve(__dirname, '..');

interface Options {
  dir: string;
  runs: number;
  sizes: number[];
  threads: number[];
}

/** Memory touched by the processes of the thread-count table. */
const THREADS_MIB = 16;

function parseArgs(argv: string[]): Options {
  const counts = (v: string) => v.split(',').filter(Boolean).map(Number);
  const o: Options = { dir: process.env.CPTRST_BENCH_DIR || '/dev/shm', runs: Number(process.env.CPTRST_BENCH_RUNS || 3), sizes: [], threads: counts(process.env.CPTRST_BENCH_THREADS || '') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dir') o.dir = argv[++i];
    else if (a.startsWith('--dir=')) o.dir = a.slice(6);
    else if (a === '--runs') o.runs = Number(argv[++i]);
    else if (a.startsWith('--runs=')) o.runs = Number(a.slice(7));
    else if (a === '--threads') o.threads = counts(argv[++i] ?? '');
    else if (a.startsWith('--threads=')) o.threads = counts(a.slice(10));
    else if (/^\d+$/.test(a) && Number(a) > 0) o.sizes.push(Number(a));
    else throw new Error(`bench: unknown argument ${a}\nusage: bench.js [--dir DIR] [--runs N] [--threads N,N...] [sizes in MiB...]`);
  }
  if (!o.dir || !fs.existsSync(o.dir)) throw new Error(`bench: image directory ${o.dir} does not exist`);
  if (!Number.isInteger(o.runs) || o.runs < 1) throw new Error('bench: --runs needs a positive integer');
  if (o.threads.some((n) => !Number.isInteger(n) || n < 0)) throw new Error('bench: --threads needs counts >= 0');
  if (!o.sizes.length && !o.threads.length) o.sizes = [64, 256, 1024];
  return o;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const gbps = (bytes: number, msec: number) => (bytes / 1e9 / (msec / 1000)).toFixed(2);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

/**
 * A shell may hand us fds without close-on-exec (this sandbox leaks a pipe as fd 251). The
 * workload would inherit them, and cptrst refuses to checkpoint a pipe it cannot restore.
 */
function closeOnExecInherited(): void {
  for (const name of fs.readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (fd <= 2) continue;
    try {
      const flags = /flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (flags && (parseInt(flags[1], 8) & 0o2000000) === 0) linux.rawSyscall(linux.SYS.fcntl, fd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
    } catch {
      /* gone meanwhile (the readdir fd itself) */
    }
  }
}

/**
 * The image code's own cost on page data, in memory (no system call): writing 256 MiB of pages in
 * 2 MiB objects (checksum; with --compress also LZ4) and reading them back (checksum;
 * decompression), for touch.c's pages and for pages with `words` of 512 words differing.
 */
/** An object type no layout has: the reader checks its frame and checksum, not its nesting. */
const CODEC_TYPE = 0xfff0;

function codecFigures(words: number): string {
  const bytes = 256 << 20;
  const data = Buffer.allocUnsafe(bytes);
  // As touch.c: `words` pseudo-random 8-byte words per page, then the page number.
  const w32 = new Uint32Array(data.buffer, data.byteOffset, bytes / 4);
  let x = 0x9e3779b9;
  for (let pg = 0; pg < bytes / 4096; pg++) {
    for (let w = 0; w < 1024; w++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w32[pg * 1024 + w] = w < 2 * words ? x >>> 0 : w % 2 ? 0 : pg;
    }
  }
  const out: string[] = [];
  const write = (sink: { write(b: Buffer): void }, compress: boolean) => {
    const writer = new ImageWriter(sink, compress ? { compress: 'lz4' } : {});
    writer.writeHead(new ImageHead({ pageSize: 4096 }));
    for (let at = 0; at < bytes; at += 2 << 20) writer.writeRaw(CODEC_TYPE, Buffer.alloc(12), { pages: [data.subarray(at, at + (2 << 20))] });
    writer.writeTerminator();
  };
  for (const compress of [false, true]) {
    // Timed into a sink that drops the bytes; then again into memory, to read back.
    let t0 = process.hrtime.bigint();
    write({ write: () => undefined }, compress);
    const wms = ms(t0);
    const sink = new MemorySink();
    write(sink, compress);
    const image = sink.toBuffer();
    t0 = process.hrtime.bigint();
    const reader = new ImageReader(bufferSource(image));
    reader.readHead();
    for (let r = reader.next(); r; r = reader.next()) reader.recycle(r.pages);
    const rms = ms(t0);
    out.push(`${compress ? 'lz4' : 'plain'}: write ${gbps(bytes, wms)} GB/s, read ${gbps(bytes, rms)} GB/s, image ${((100 * image.length) / bytes).toFixed(1)}%`);
  }
  return `image code in memory, 256 MiB of pages with ${words}/512 words differing: ${out.join('; ')}`;
}

function copySpeed(bytes: number): number {
  const a = Buffer.alloc(bytes, 1);
  const b = Buffer.allocUnsafe(bytes);
  a.copy(b); // warm both
  const t0 = process.hrtime.bigint();
  a.copy(b);
  return ms(t0);
}

/** Which CRC-32 implementation the image code uses (core's image/framing.ts). */
function crcImplementation(): string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- an internal file of core, found beside its built index at run time
    const framing = require(path.join(path.dirname(require.resolve('@cptrst/core')), 'image', 'framing')) as { crc32Implementation?: () => string };
    return framing.crc32Implementation?.() ?? 'zlib';
  } catch {
    return 'unknown';
  }
}

function fsType(dir: string): string {
  try {
    const t = fs.statfsSync(dir).type;
    return t === TMPFS_MAGIC ? 'tmpfs' : `filesystem type 0x${t.toString(16)}`;
  } catch {
    return 'unknown filesystem';
  }
}

const alive = (pid: number) => fs.existsSync(`/proc/${pid}`) && !/^State:\s*[ZX]/m.test(readOr(`/proc/${pid}/status`));
function readOr(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

interface Run {
  frozen: number;
  checkpoint: number;
  restart: number;
  image: number;
  ckTimings: Record<string, number>;
  rsTimings: Record<string, number>;
}

class Bench {
  /** PIDs of workloads this benchmark started (a restored one has the same PID). */
  private readonly started = new Set<number>();
  readonly work = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-bench-'));
  readonly images: string;
  private readonly bin = path.join(this.work, 'touch');

  constructor(readonly opts: Options) {
    this.images = fs.mkdtempSync(path.join(opts.dir, 'cptrst-bench-img-'));
    execFileSync('gcc', ['-O2', '-pthread', '-o', this.bin, path.join(here, 'touch.c')]);
  }

  async startTouch(mib: number, out: string, trigger: string, threads: number): Promise<number> {
    const ofd = fs.openSync(out, 'w');
    // Output goes to a file: cptrst refuses pipes.
    const child = spawn(this.bin, [String(mib), trigger, '600', String(threads)], { stdio: ['ignore', ofd, ofd], detached: true });
    fs.closeSync(ofd);
    child.unref();
    if (child.pid) this.started.add(child.pid);
    for (let i = 0; i < 6000; i++) {
      const text = readOr(out);
      if (text.includes('READY')) return child.pid!;
      if (child.exitCode !== null || (child.pid && !alive(child.pid) && i > 10)) throw new Error(`workload exited before READY: ${text.trim()}`);
      await sleep(10);
    }
    throw new Error('workload did not start');
  }

  /** Waits until `pid` has exited (a zombie counts as gone), or, with `free`, until it is reaped and the PID can be taken again. */
  async waitGone(pid: number, what: string, free = false): Promise<void> {
    for (let i = 0; i < 1000; i++) {
      if (free ? !fs.existsSync(`/proc/${pid}`) : !alive(pid)) return;
      await sleep(10); // lets Node reap its child
    }
    throw new Error(`process ${pid} is still there ${what}`);
  }

  /** Waits for the restored workload's verdict; anything but PASS is a failure. */
  async verdict(pid: number, out: string): Promise<string> {
    for (let i = 0; i < 6000; i++) {
      const text = readOr(out);
      const m = /^(PASS|FAIL|TIMEOUT).*$/m.exec(text);
      if (m) {
        if (m[1] !== 'PASS') throw new Error(`the restored workload (pid ${pid}) reports: ${m[0]}`);
        return m[0];
      }
      if (!alive(pid)) {
        await sleep(50);
        const again = readOr(out);
        if (/^PASS/m.test(again)) return 'PASS';
        throw new Error(`the restored workload (pid ${pid}) ended without PASS; its output: ${JSON.stringify(again)}`);
      }
      await sleep(10);
    }
    throw new Error(`the restored workload (pid ${pid}) gave no verdict`);
  }

  async run(mib: number, n: number, threads = 0): Promise<Run> {
    const bytes = mib << 20;
    const out = path.join(this.work, `out-${mib}-${threads}-${n}`);
    const trigger = path.join(this.work, `go-${mib}-${threads}-${n}`);
    const img = path.join(this.images, `img-${mib}-${threads}-${n}`);
    const pid = await this.startTouch(mib, out, trigger, threads);
    const fd = fs.openSync(img, 'w');
    let t0 = process.hrtime.bigint();
    let ck;
    try {
      ck = await sys_checkpoint(pid, fd, CheckpointFlags.KILL);
    } finally {
      fs.closeSync(fd);
    }
    const ckMs = ms(t0);
    await this.waitGone(pid, 'after a checkpoint with KILL', true); // restart needs its PID
    const image = fs.statSync(img).size;
    const rfd = fs.openSync(img, 'r');
    t0 = process.hrtime.bigint();
    let rs;
    try {
      rs = await sys_restart(pid, rfd, 0);
    } finally {
      fs.closeSync(rfd);
    }
    const rsMs = ms(t0);
    fs.rmSync(img);
    fs.writeFileSync(trigger, '');
    await this.verdict(pid, out);
    await this.waitGone(pid, 'after its verdict');
    this.started.delete(pid);
    if (bytes > image) throw new Error(`image of ${image} bytes is smaller than the ${bytes} bytes touched`);
    return { frozen: ck.frozenMs, checkpoint: ckMs, restart: rsMs, image, ckTimings: ck.timings, rsTimings: rs.timings };
  }

  /** Kills what this benchmark started and is still running (after a failure). */
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

function median(runs: Run[], key: 'checkpoint'): Run {
  const sorted = [...runs].sort((a, b) => a[key] - b[key]);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

const round = (t: Record<string, number>) => Object.fromEntries(Object.entries(t).filter(([, v]) => v >= 0.5).map(([k, v]) => [k, Math.round(v)]));

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  closeOnExecInherited();
  loadModule('@cptrst/cpt-module', here);
  const bench = new Bench(opts);
  const detail = !!process.env.CPTRST_BENCH_DETAIL;
  console.log(`images in ${opts.dir} (${fsType(opts.dir)}); CRC-32 by ${crcImplementation()}; ${opts.runs} run(s) per size, median shown; a restored workload that does not verify its memory (PASS) fails the benchmark`);
  if (!process.env.CPTRST_BENCH_NO_CODEC) for (const words of [512, 64]) console.log(codecFigures(words));
  const rows: string[] = [];
  rows.push('| touched | frozen | checkpoint | restart | image | image/touched | memcpy (bound) |');
  rows.push('|---|---|---|---|---|---|---|');
  try {
    for (const mib of opts.sizes) {
      const bytes = mib << 20;
      const runs: Run[] = [];
      for (let n = 0; n < opts.runs; n++) {
        const r = await bench.run(mib, n);
        runs.push(r);
        if (detail) {
          console.error(`${mib} MiB run ${n + 1}: checkpoint ${r.checkpoint.toFixed(0)} ms ${JSON.stringify(round(r.ckTimings))}`);
          console.error(`${mib} MiB run ${n + 1}: restart ${r.restart.toFixed(0)} ms ${JSON.stringify(round(r.rsTimings))}`);
        }
      }
      // Median of each figure on its own; the best run too when there are several.
      const sorted = (k: 'frozen' | 'checkpoint' | 'restart') => [...runs].sort((a, b) => a[k] - b[k]).map((r) => r[k]);
      const pick = (k: 'frozen' | 'checkpoint' | 'restart') => sorted(k)[Math.floor((runs.length - 1) / 2)];
      const best = (k: 'checkpoint' | 'restart') => (runs.length > 1 ? `, best ${sorted(k)[0].toFixed(0)}` : '');
      const m = median(runs, 'checkpoint');
      const ck = pick('checkpoint');
      const rs = pick('restart');
      const cp = copySpeed(bytes);
      rows.push(`| ${mib} MiB | ${pick('frozen').toFixed(0)} ms | ${ck.toFixed(0)} ms (${gbps(bytes, ck)} GB/s${best('checkpoint')}) | ${rs.toFixed(0)} ms (${gbps(bytes, rs)} GB/s${best('restart')}) | ${(m.image / 1048576).toFixed(1)} MiB | ${((m.image / bytes) * 100).toFixed(1)}% | ${cp.toFixed(0)} ms (${gbps(bytes, cp)} GB/s) |`);
    }
  } catch (e) {
    bench.cleanup();
    throw e;
  }
  if (opts.threads.length) {
    rows.push('', `| threads (${THREADS_MIB} MiB touched) | frozen | checkpoint | restart | image | per thread (checkpoint, restart) |`, '|---|---|---|---|---|---|');
    try {
      let base: { checkpoint: number; restart: number } | undefined;
      for (const t of opts.threads) {
        const runs: Run[] = [];
        for (let n = 0; n < opts.runs; n++) {
          const r = await bench.run(THREADS_MIB, n, t);
          runs.push(r);
          if (detail) console.error(`${t} threads run ${n + 1}: checkpoint ${r.checkpoint.toFixed(0)} ms ${JSON.stringify(round(r.ckTimings))}; restart ${r.restart.toFixed(0)} ms ${JSON.stringify(round(r.rsTimings))}`);
        }
        const pick = (k: 'frozen' | 'checkpoint' | 'restart') => [...runs].sort((a, b) => a[k] - b[k])[Math.floor((runs.length - 1) / 2)][k];
        const ck = pick('checkpoint');
        const rs = pick('restart');
        if (t === 0) base = { checkpoint: ck, restart: rs };
        const per = base && t > 0 ? `${((ck - base.checkpoint) / t).toFixed(2)} ms, ${((rs - base.restart) / t).toFixed(2)} ms` : '';
        rows.push(`| ${1 + t} | ${pick('frozen').toFixed(0)} ms | ${ck.toFixed(0)} ms | ${rs.toFixed(0)} ms | ${(median(runs, 'checkpoint').image / 1048576).toFixed(1)} MiB | ${per} |`);
      }
    } catch (e) {
      bench.cleanup();
      throw e;
    }
  }
  bench.cleanup();
  console.log(rows.join('\n'));
}

main().catch((e) => {
  console.error(`BENCHMARK FAILED: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exit(1);
});
