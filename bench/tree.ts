/**
 * Process tree benchmark: 16 processes in three levels (bench/forktree.c), each with 64 MiB of
 * private memory of which half is still shared copy-on-write with the root. The tree is
 * checkpointed with KILL, restarted, and then every process checks every word of its memory
 * (anything but PASS fails the benchmark). Figures: checkpoint and restart wall time, time frozen,
 * image size, and the sum of the processes' Pss (/proc/PID/smaps_rollup) before the checkpoint
 * and after the restart: memory shared copy-on-write must be shared again (goal: within 10%).
 *
 * With --running the tree is checkpointed left running (copy-on-write snapshots, one per process),
 * and with --running --no-snapshot left running but frozen until its pages are written; the
 * original tree is killed afterwards, and the image restarted and checked as with KILL. Left
 * running, the snapshot processes alive are counted at each payload written after the release
 * (each snapshot ends once its process's pages are read). --track takes the first image with
 * write tracking and then --steps N (default 2) incremental images, each against the one before,
 * all left running (frozen and wall time of each; the last image of the chain is restarted).
 *
 * Usage: node bench/dist/tree.js [--dir DIR] [--runs N] [--running [--no-snapshot] [--track [--steps N]]] [MiB]
 *        (default /dev/shm, 3 runs, KILL, 64 MiB)
 * Build first: npx tsc -b packages/cpt-module bench. Results: bench/README.md.
 */
import 'reflect-metadata';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CheckpointFlags, linux, loadModule, sys_checkpoint, sys_restart } from '@cptrst/core';

const here = path.resolve(__dirname, '..');
const PROCESSES = 16;
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));
const mib = (bytes: number) => (bytes / 1048576).toFixed(0);

function readOr(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

/** The process and its descendants. */
function treeOf(root: number): number[] {
  const out: number[] = [];
  const visit = (pid: number): void => {
    out.push(pid);
    for (const c of readOr(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/)) if (c) visit(Number(c));
  };
  visit(root);
  return out;
}

/** Sum of the processes' Pss, in bytes. */
function pssOf(pids: number[]): number {
  let kb = 0;
  for (const p of pids) {
    const m = /^Pss:\s+(\d+) kB/m.exec(readOr(`/proc/${p}/smaps_rollup`));
    if (!m) throw new Error(`no Pss for process ${p}`);
    kb += Number(m[1]);
  }
  return kb * 1024;
}

/** The shell may leak fds without close-on-exec; the tree must not inherit them (cptrst refuses a pipe shared with outside). */
function closeOnExecInherited(): void {
  for (const name of fs.readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (fd <= 2) continue;
    try {
      const flags = /flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (flags && (parseInt(flags[1], 8) & 0o2000000) === 0) linux.rawSyscall(linux.SYS.fcntl, fd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
    } catch {
      /* gone meanwhile */
    }
  }
}

interface Run {
  frozen: number;
  checkpoint: number;
  /** With --track: frozen and wall time of each --parent step. */
  steps: Array<{ frozen: number; checkpoint: number }>;
  /** Snapshot processes alive at each payload written after the release. */
  alive: number[];
  restart: number;
  image: number;
  pssBefore: number;
  pssAfter: number;
}

async function waitFree(pids: number[]): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (pids.every((p) => !fs.existsSync(`/proc/${p}`))) return;
    await sleep(10);
  }
  throw new Error(`processes ${pids.filter((p) => fs.existsSync(`/proc/${p}`)).join(',')} are still there after the checkpoint`);
}

/** Processes running `bin` that are not `members`: the snapshots. */
function snapshotsOf(bin: string, members: number[]): number {
  let n = 0;
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || members.includes(Number(d))) continue;
    try {
      if (fs.readlinkSync(`/proc/${d}/exe`) === bin) n++;
    } catch {
      /* gone, or not ours */
    }
  }
  return n;
}

interface Mode {
  flags: number;
  /** Incremental steps after a first --track image (undefined: a plain checkpoint). */
  steps?: number;
}

async function once(bin: string, work: string, dir: string, size: number, n: number, started: Set<number>, mode: Mode): Promise<Run> {
  const { flags } = mode;
  const out = path.join(work, `out-${n}`);
  const trigger = path.join(work, `go-${n}`);
  const imgOf = (k: number) => path.join(dir, `tree-${n}-${k}.img`);
  const ofd = fs.openSync(out, 'w');
  // Output to a file: a pipe shared with a process outside the tree is refused.
  const child = spawn(bin, [String(size), trigger], { stdio: ['ignore', ofd, ofd], detached: true });
  fs.closeSync(ofd);
  child.unref();
  const pid = child.pid!;
  started.add(pid);
  for (let i = 0; !/^READY/m.test(readOr(out)); i++) {
    if (i > 6000 || child.exitCode !== null) throw new Error(`the tree did not start: ${readOr(out)}`);
    await sleep(10);
  }
  const pids = treeOf(pid);
  if (pids.length !== PROCESSES) throw new Error(`the tree has ${pids.length} processes, not ${PROCESSES}`);
  const pssBefore = pssOf(pids);
  const alive: number[] = [];
  const take = async (k: number): Promise<{ frozen: number; checkpoint: number }> => {
    const fd = fs.openSync(imgOf(k), 'w');
    const t = process.hrtime.bigint();
    let released = false;
    try {
      const incremental = mode.steps === undefined ? undefined : { track: true, imagePath: imgOf(k), ...(k > 0 ? { parent: imgOf(k - 1) } : {}) };
      const onProgress = (e: { phase: string; bytes?: number }): void => {
        if (flags & CheckpointFlags.KILL || e.phase !== 'pages' || !e.bytes) return;
        // After the release: no member traced any more.
        released ||= !/^TracerPid:\s*[1-9]/m.test(readOr(`/proc/${pid}/status`));
        if (released && k === 0) alive.push(snapshotsOf(bin, pids));
      };
      const ck = await sys_checkpoint(pid, fd, flags, { ...(incremental ? { incremental } : {}), onProgress });
      return { frozen: ck.frozenMs, checkpoint: ms(t) };
    } finally {
      fs.closeSync(fd);
    }
  };
  const first = await take(0);
  const steps: Array<{ frozen: number; checkpoint: number }> = [];
  for (let k = 1; k <= (mode.steps ?? 0); k++) steps.push(await take(k));
  const img = imgOf(steps.length);
  if (!(flags & CheckpointFlags.KILL)) process.kill(-pid, 'SIGKILL'); // left running: its own process group (detached), all of it ours
  await waitFree(pids);
  const image = fs.statSync(img).size;
  const rfd = fs.openSync(img, 'r');
  const t0 = process.hrtime.bigint();
  try {
    await sys_restart(pid, rfd, 0);
  } finally {
    fs.closeSync(rfd);
  }
  const restart = ms(t0);
  for (let k = 0; k <= steps.length; k++) fs.rmSync(imgOf(k));
  const after = treeOf(pid);
  if (after.sort().join() !== [...pids].sort().join()) throw new Error(`the restored tree is ${after.join(',')}, not ${pids.join(',')}`);
  const pssAfter = pssOf(after);
  fs.writeFileSync(trigger, '');
  for (let i = 0; ; i++) {
    const m = /^(PASS|FAIL).*$/m.exec(readOr(out));
    if (m) {
      if (m[1] !== 'PASS') throw new Error(`the restored tree reports: ${m[0]}`);
      break;
    }
    if (i > 6000 || !fs.existsSync(`/proc/${pid}`)) throw new Error(`the restored tree gave no verdict: ${readOr(out)}`);
    await sleep(10);
  }
  for (let i = 0; i < 500 && fs.existsSync(`/proc/${pid}`) && !/^State:\s*Z/m.test(readOr(`/proc/${pid}/status`)); i++) await sleep(10);
  started.delete(pid);
  return { ...first, steps, alive, restart, image, pssBefore, pssAfter };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let dir = process.env.CPTRST_BENCH_DIR || '/dev/shm';
  let runs = Number(process.env.CPTRST_BENCH_RUNS || 3);
  let size = 64;
  let flags: number = CheckpointFlags.KILL;
  let steps: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--dir') dir = argv[++i];
    else if (argv[i] === '--runs') runs = Number(argv[++i]);
    else if (argv[i] === '--running') flags &= ~CheckpointFlags.KILL;
    else if (argv[i] === '--no-snapshot') flags |= CheckpointFlags.NO_SNAPSHOT;
    else if (argv[i] === '--track') steps ??= 2;
    else if (argv[i] === '--steps') steps = Number(argv[++i]);
    else if (/^\d+$/.test(argv[i])) size = Number(argv[i]);
    else throw new Error(`tree bench: unknown argument ${argv[i]}\nusage: tree.js [--dir DIR] [--runs N] [--running [--no-snapshot] [--track [--steps N]]] [MiB]`);
  }
  if (!Number.isInteger(runs) || runs < 1) throw new Error('tree bench: --runs needs a positive integer');
  if (steps !== undefined && (!Number.isInteger(steps) || steps < 0 || flags & CheckpointFlags.KILL)) throw new Error('tree bench: --track goes with --running, --steps with a whole number');
  closeOnExecInherited();
  loadModule('@cptrst/cpt-module', here);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-treebench-'));
  const images = fs.mkdtempSync(path.join(dir, 'cptrst-treebench-img-'));
  const bin = path.join(work, 'forktree');
  execFileSync('gcc', ['-O2', '-o', bin, path.join(here, 'forktree.c')]);
  const started = new Set<number>();
  try {
    const rows: Run[] = [];
    for (let n = 0; n < runs; n++) rows.push(await once(bin, work, images, size, n, started, { flags, steps }));
    const how = flags & CheckpointFlags.KILL ? 'KILL' : flags & CheckpointFlags.NO_SNAPSHOT ? 'left running, no snapshot' : 'left running, a snapshot per process';
    const chain = steps === undefined ? '' : `, --track then ${steps} --parent step(s), the last image restarted`;
    console.log(`${PROCESSES} processes, ${size} MiB private each, half of it shared copy-on-write with the root; checkpoint ${how}${chain}; images in ${dir}; every restored process checked every word (PASS)`);
    console.log('| run | frozen | checkpoint | steps: frozen / checkpoint | snapshots alive (first, mean, last) | restart | image | Pss before | Pss after | after/before |');
    console.log('|---|---|---|---|---|---|---|---|---|---|');
    const aliveOf = (a: number[]) => (a.length ? `${a[0]}, ${(a.reduce((x, y) => x + y, 0) / a.length).toFixed(1)}, ${a[a.length - 1]}` : '-');
    const stepsOf = (r: Run) => r.steps.map((x) => `${x.frozen.toFixed(0)} / ${x.checkpoint.toFixed(0)} ms`).join(', ') || '-';
    rows.forEach((r, i) => console.log(`| ${i + 1} | ${r.frozen.toFixed(0)} ms | ${r.checkpoint.toFixed(0)} ms | ${stepsOf(r)} | ${aliveOf(r.alive)} | ${r.restart.toFixed(0)} ms | ${mib(r.image)} MiB | ${mib(r.pssBefore)} MiB | ${mib(r.pssAfter)} MiB | ${(r.pssAfter / r.pssBefore).toFixed(3)} |`));
    const worst = Math.max(...rows.map((r) => r.pssAfter / r.pssBefore));
    console.log(worst <= 1.1 ? `Pss after the restart within 10% of before (worst ${worst.toFixed(3)})` : `GOAL MISSED: Pss after the restart ${worst.toFixed(3)} times before`);
  } finally {
    for (const pid of started) {
      try {
        process.kill(-pid, 'SIGKILL'); // its own process group (detached), all of it ours
      } catch {
        /* gone */
      }
    }
    fs.rmSync(images, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`BENCHMARK FAILED: ${(e as Error).message}`);
  process.exitCode = 1;
});
