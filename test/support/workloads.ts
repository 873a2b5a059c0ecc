/**
 * Starting workloads and reading their verdicts. The protocol (see test/workloads/common.h):
 *   <workload> <trigger-path> [args], stdin /dev/null, stdout+stderr appended to a result file;
 *   it prints "READY <pid>", works until <trigger-path> exists, then prints "PASS <name>" or
 *   "FAIL <name>: <what differed>" and exits.
 */
import { ChildProcess, execFile, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';
import { binaryPath } from './build';
import { workloadSpec } from './catalogue';
import { isOurWorkload, killByPid, procState, sleep, trackChild, waitGone } from './processes';
import { WORKLOADS_SRC } from './paths';
import { isWorldReachable, makeTempDir, makeWorldDir } from './tmp';

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Workload {
  name: string;
  args: string[];
  pid: number;
  /** The directory holding the trigger and result files (and whatever the workload creates there). */
  dir: string;
  triggerPath: string;
  resultPath: string;
  /** The process as first started. After a checkpoint with --kill it has exited; a restored
   *  process has the same PID but is not our child (it is init's). */
  child: ChildProcess;
  /** Resolves when the original child exits (and libuv has reaped it, freeing the PID). */
  exited: Promise<ExitInfo>;
}

export interface StartOptions {
  /** Start in its own session (setsid), the default; false keeps the test's session and group. */
  detached?: boolean;
  /** Extra environment variables (e.g. { CPT_TAMPER: '1' }); CPT_TAMPER is never inherited. */
  env?: Record<string, string>;
  /**
   * Put trigger and result files here instead of a new temporary directory. For a workload that
   * drops root (--nobody) it must be reachable by other users (makeWorldDir).
   */
  dir?: string;
  /** How long to wait for the READY line, default 10 s. */
  readyTimeoutMs?: number;
  /**
   * For a C workload that becomes another user: run a copy of its binary placed in `dir` (a
   * makeUserDir directory), and give the result file to this owner, since the restored process
   * opens its files again with its own identity.
   */
  asUser?: { uid: number; gid: number };
  /** With asUser: start it as that user already (a workload that does not drop root by itself). */
  startAsUser?: boolean;
}

const execFileP = promisify(execFile);
let pythonPath: Promise<string> | undefined;

/** The real python3 executable (not a wrapper script such as a pyenv shim, which would exec it). */
function python3(): Promise<string> {
  if (pythonPath === undefined) {
    pythonPath = execFileP('python3', ['-c', 'import sys; print(sys.executable)']).then((r) => r.stdout.trim());
  }
  return pythonPath;
}

/**
 * What to run. A C workload that drops root runs from a copy in its own world-reachable `dir`:
 * once it is nobody, it (and the restart, which opens the recorded files as the process) must
 * still reach its executable, whatever the permissions of the checkout's test/work/bin.
 */
async function commandFor(name: string, dropsRoot: boolean, dir: string): Promise<{ file: string; argv0: string[] }> {
  const spec = workloadSpec(name);
  const src = path.join(WORKLOADS_SRC, spec.source);
  switch (spec.kind) {
    case 'c': {
      if (!dropsRoot) return { file: binaryPath(name), argv0: [] };
      const copy = path.join(dir, name);
      fs.copyFileSync(binaryPath(name), copy);
      fs.chmodSync(copy, 0o755);
      return { file: copy, argv0: [] };
    }
    case 'bash':
      return { file: 'bash', argv0: [src] };
    case 'python':
      return { file: await python3(), argv0: [src] };
    case 'node':
      return { file: process.execPath, argv0: [src] };
  }
}

let serial = 0;

/**
 * Starts workload `name` (buildWorkloads() must have run for C workloads) and waits for its
 * "READY <pid>" line. Rejects, after killing it, if it exits or stays silent too long.
 */
export async function startWorkload(name: string, args: string[] = [], opts: StartOptions = {}): Promise<Workload> {
  // A workload that drops root runs from its own world-reachable directory: once it is another
  // user, it (and the restart, which opens the recorded files as the process) must still reach it.
  const dropsRoot = opts.asUser !== undefined || args.includes('--nobody') || args.includes('--as');
  const dir = opts.dir ?? (dropsRoot ? makeWorldDir(name) : makeTempDir(name));
  // Fail now rather than let the workload wait forever for a trigger file it cannot see.
  if (dropsRoot && !isWorldReachable(dir)) throw new Error(`${name} ${args.join(' ')}: ${dir} is not reachable by other users (use makeWorldDir)`);
  const { file, argv0 } = await commandFor(name, dropsRoot, dir);
  const base = `${name.replace(/[^A-Za-z0-9_-]/g, '_')}-${++serial}`;
  const triggerPath = path.join(dir, `${base}.trigger`);
  const resultPath = path.join(dir, `${base}.result`);
  fs.rmSync(triggerPath, { force: true });
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.CPT_TAMPER;
  Object.assign(env, opts.env ?? {});

  const fd = fs.openSync(resultPath, 'a', 0o644);
  if (opts.asUser) fs.fchownSync(fd, opts.asUser.uid, opts.asUser.gid);
  let child: ChildProcess;
  try {
    child = spawn(file, [...argv0, triggerPath, ...args], {
      detached: opts.detached ?? true,
      ...(opts.startAsUser && opts.asUser ? { uid: opts.asUser.uid, gid: opts.asUser.gid } : {}),
      stdio: ['ignore', fd, fd],
      env,
      cwd: dir,
    });
  } finally {
    fs.closeSync(fd);
  }
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  if (child.pid === undefined) throw await spawnError;
  child.unref(); // a forgotten workload must not keep mocha alive; hooks kill it by PID
  trackChild(child);
  const pid = child.pid;
  const w: Workload = { name, args, pid, dir, triggerPath, resultPath, child, exited };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10000);
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });
  for (;;) {
    const text = fs.readFileSync(resultPath, 'utf8');
    const m = /^READY (\d+)\n/.exec(text);
    if (m !== null) {
      if (Number(m[1]) !== pid) {
        await killByPid(pid);
        throw new Error(`${name}: READY says pid ${m[1]}, but we started ${pid}`);
      }
      return w;
    }
    if (hasExited) {
      const how = await exited;
      throw new Error(`${name} exited (${how.code ?? how.signal}) before READY; output: ${JSON.stringify(text)}`);
    }
    if (Date.now() > deadline) {
      await killByPid(pid);
      throw new Error(`${name} (pid ${pid}) not READY after ${opts.readyTimeoutMs ?? 10000} ms; output: ${JSON.stringify(text)}`);
    }
    await sleep(10);
  }
}

/** Creates the trigger file: the workload checks itself and ends. */
export async function trigger(w: Workload): Promise<void> {
  await fs.promises.writeFile(w.triggerPath, '', { mode: 0o644 });
}

/**
 * Waits until the workload's PID has finished (our child: its exit; a restored process: /proc,
 * zombies count as finished) and returns the whole result file. Throws on timeout.
 */
export async function waitResult(w: Workload, timeoutMs = 20000): Promise<string> {
  if (!(await waitGone(w.pid, timeoutMs, { zombieOk: true }))) {
    const st = await procState(w.pid);
    const text = await fs.promises.readFile(w.resultPath, 'utf8');
    const ours = await isOurWorkload(w.pid);
    throw new Error(
      `${w.name} (pid ${w.pid}) still running after ${timeoutMs} ms (state ${st?.state}, tracer ${st?.tracerPid}, ` +
        `our workload: ${ours}); output so far: ${JSON.stringify(text)}`,
    );
  }
  return fs.promises.readFile(w.resultPath, 'utf8');
}

export interface ParsedResult {
  readyPid: number | null;
  /** The line after READY (the PASS/FAIL line), or null. */
  verdict: string | null;
  passed: boolean;
  /** Lines other than READY and the verdict (there should be none). */
  extra: string[];
}

/** Splits a result file into its READY pid, verdict line and anything else. */
export function parseResult(text: string): ParsedResult {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const ready = lines.length > 0 ? /^READY (\d+)$/.exec(lines[0]) : null;
  const rest = ready === null ? lines : lines.slice(1);
  const verdict = rest.find((l) => /^(PASS|FAIL) /.test(l)) ?? null;
  return {
    readyPid: ready === null ? null : Number(ready[1]),
    verdict,
    passed: verdict !== null && verdict.startsWith('PASS '),
    extra: rest.filter((l) => l !== verdict),
  };
}

