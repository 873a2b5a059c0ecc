/** Compiles the C workloads into test/work/bin (once; skipped when up to date). */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';
import { WORKLOADS, WorkloadSpec } from './catalogue';
import { BIN_DIR, WORKLOADS_SRC } from './paths';

const execFileP = promisify(execFile);

const CC = process.env.CC ?? 'gcc';
const BASE_CFLAGS: readonly string[] = ['-O1', '-g', '-Wall', '-Wextra', '-std=gnu11'];

/** Files every C workload depends on besides its own source. */
const SHARED_HEADERS = ['common.h'];

export function binaryPath(name: string): string {
  return path.join(BIN_DIR, name);
}

function mtimeMs(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

function compileArgs(spec: WorkloadSpec, out: string): string[] {
  return [...BASE_CFLAGS, ...(spec.cflags ?? []), '-o', out, path.join(WORKLOADS_SRC, spec.source)];
}

async function buildOne(spec: WorkloadSpec): Promise<void> {
  const bin = binaryPath(spec.name);
  const stamp = `${bin}.cmd`;
  const cmd = [CC, ...compileArgs(spec, bin)].join(' ');
  const inputs = [spec.source, ...SHARED_HEADERS].map((f) => mtimeMs(path.join(WORKLOADS_SRC, f)));
  const fresh =
    mtimeMs(bin) > Math.max(...inputs) &&
    fs.existsSync(stamp) &&
    fs.readFileSync(stamp, 'utf8') === cmd;
  if (fresh) return;
  // Build beside the target and rename: concurrent test processes never see half a binary.
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    await execFileP(CC, compileArgs(spec, tmp), { maxBuffer: 16 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    fs.rmSync(tmp, { force: true });
    throw new Error(`building workload ${spec.name} failed: ${err.stderr ?? err.message}`);
  }
  fs.renameSync(tmp, bin);
  fs.writeFileSync(stamp, cmd);
}

let building: Promise<void> | undefined;

/** Compiles every C workload (in parallel) into test/work/bin; later calls reuse the first. */
export function buildWorkloads(): Promise<void> {
  if (building === undefined) {
    fs.mkdirSync(BIN_DIR, { recursive: true });
    building = Promise.all(WORKLOADS.filter((w) => w.kind === 'c').map(buildOne)).then(() => undefined);
    building.catch(() => {
      building = undefined; // let a later call try again
    });
  }
  return building;
}
