/**
 * Checkpoint/restart benchmark: processes that touched 64 MiB, 256 MiB and 1 GiB of private
 * memory. For each: the time the target was frozen, checkpoint and restart wall time, image
 * size, and the speed of a plain in-memory copy of the same size in this run (the bound).
 * Usage: node bench/dist/bench.js [sizes in MiB...]   (run `npm run build` first)
 */
import 'reflect-metadata';
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CheckpointFlags, loadModule, sys_checkpoint, sys_restart } from '@cptrst/core';

const here = path.resolve(__dirname, '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-bench-'));
const bin = path.join(work, 'touch');
execFileSync('gcc', ['-O2', '-o', bin, path.join(here, 'touch.c')]);
loadModule('@cptrst/cpt-module', here);

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const gbps = (bytes: number, msec: number) => (bytes / 1e9 / (msec / 1000)).toFixed(2);

function copySpeed(bytes: number): number {
  const a = Buffer.alloc(bytes, 1);
  const b = Buffer.allocUnsafe(bytes);
  a.copy(b); // warm both
  const t0 = process.hrtime.bigint();
  a.copy(b);
  return ms(t0);
}

async function startTouch(mib: number, trigger: string): Promise<number> {
  // Output goes to a file: pipes are not checkpointable yet.
  const out = path.join(work, `out-${mib}`);
  const ofd = fs.openSync(out, 'w');
  const child = spawn(bin, [String(mib), trigger], { stdio: ['ignore', ofd, ofd], detached: true });
  fs.closeSync(ofd);
  child.unref();
  for (let i = 0; i < 3000; i++) {
    if (fs.readFileSync(out, 'utf8').includes('READY')) return child.pid!;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('workload did not start');
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 500 && fs.existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 20));
}

async function main(): Promise<void> {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  const rows: string[] = [];
  rows.push('| touched | frozen | checkpoint | restart | image | image/touched | memcpy (bound) |');
  rows.push('|---|---|---|---|---|---|---|');
  for (const mib of sizes.length ? sizes : [64, 256, 1024]) {
    const bytes = mib << 20;
    const trigger = path.join(work, `go-${mib}`);
    const img = path.join(work, `img-${mib}`);
    const pid = await startTouch(mib, trigger);
    const fd = fs.openSync(img, 'w');
    let t0 = process.hrtime.bigint();
    const ck = sys_checkpoint(pid, fd, CheckpointFlags.KILL);
    const ckMs = ms(t0);
    fs.closeSync(fd);
    await waitGone(pid);
    const rfd = fs.openSync(img, 'r');
    t0 = process.hrtime.bigint();
    sys_restart(pid, rfd, 0);
    const rsMs = ms(t0);
    fs.closeSync(rfd);
    fs.writeFileSync(trigger, '');
    await waitGone(pid);
    const size = fs.statSync(img).size;
    const cp = copySpeed(bytes);
    rows.push(`| ${mib} MiB | ${ck.frozenMs.toFixed(0)} ms | ${ckMs.toFixed(0)} ms (${gbps(bytes, ckMs)} GB/s) | ${rsMs.toFixed(0)} ms (${gbps(bytes, rsMs)} GB/s) | ${(size / 1048576).toFixed(1)} MiB | ${((size / bytes) * 100).toFixed(1)}% | ${cp.toFixed(0)} ms (${gbps(bytes, cp)} GB/s) |`);
    fs.rmSync(img);
    if (process.env.CPTRST_BENCH_DETAIL) console.error(mib, JSON.stringify(ck.timings));
  }
  console.log(rows.join('\n'));
  fs.rmSync(work, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
