/**
 * Helpers for the packages' tests on real processes: compile C targets with gcc into a temp dir,
 * start real processes (with no stray inherited fd), wait until they are ready, kill them by pid.
 *
 * A spawned target is a child of the mocha process, and libuv also waitpid()s its children when
 * SIGCHLD arrives: ptrace sequences must run synchronously, without an await in the middle.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CptError, linux } from '../../src';


/** Closes every fd above 2 the shell inherited (this sandbox leaks a pipe at fd 251), then execs the target. */
const CLOSE_FDS_AND_EXEC = 'for f in /proc/$$/fd/*; do n=${f##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi; done; exec "$@"';

const started = new Set<number>();
let tmp: string | undefined;

/** A temp dir for this run, removed when the test process exits (whichever suite used it last). */
export function tmpDir(): string {
  if (!tmp) {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-unit-'));
    process.once('exit', removeTmpDir);
  }
  return tmp;
}

export function removeTmpDir(): void {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}

/** Compiles SRCDIR/NAME.c into the temp dir; returns the binary. */
export function compileIn(srcDir: string, name: string, extra: string[] = []): string {
  const bin = path.join(tmpDir(), name);
  if (!fs.existsSync(bin)) execFileSync('gcc', ['-O1', '-Wall', '-o', bin, path.join(srcDir, `${name}.c`), ...extra], { stdio: 'pipe' });
  return bin;
}

export interface Started {
  pid: number;
  child: ChildProcess;
  /** name=0xADDR (or name=N) lines the target printed before READY. */
  vars: Record<string, bigint>;
}

function launch(file: string, args: string[], stdout: number | 'ignore', cwd?: string): ChildProcess {
  const child = spawn('/bin/bash', ['-c', CLOSE_FDS_AND_EXEC, 'sh', file, ...args], { stdio: ['ignore', stdout, 'ignore'], cwd });
  child.unref();
  if (!child.pid) throw new Error(`could not spawn ${file}`);
  started.add(child.pid);
  return child;
}

/** Spawns `file args` with stdio on /dev/null; resolves once it has exec'd and sleeps (state S). */
export async function startSleeping(file: string, args: string[]): Promise<Started> {
  const child = launch(file, args, 'ignore');
  const pid = child.pid!;
  const exe = fs.realpathSync(file);
  const ok = await poll(() => {
    try {
      return fs.readlinkSync(`/proc/${pid}/exe`) === exe && linux.readStat(pid).state === 'S';
    } catch {
      return false;
    }
  }, 10000);
  if (!ok) throw new Error(`${file} (pid ${pid}) did not reach state S`);
  return { pid, child, vars: {} };
}

/**
 * Spawns a compiled target whose stdout is a file; resolves once it has printed READY. Pids it
 * prints as `*pid=N` are killed with it.
 */
export async function startTarget(bin: string, args: string[], opts: { cwd?: string } = {}): Promise<Started> {
  const out = path.join(tmpDir(), `out-${path.basename(bin)}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  const fd = fs.openSync(out, 'w');
  let child: ChildProcess;
  try {
    child = launch(bin, args, fd, opts.cwd);
  } finally {
    fs.closeSync(fd);
  }
  const pid = child.pid!;
  let text = '';
  const ok = await poll(() => {
    text = fs.readFileSync(out, 'utf8');
    return text.includes('READY\n') || !fs.existsSync(`/proc/${pid}`);
  }, 10000);
  if (!ok || !text.includes('READY\n')) throw new Error(`${bin} (pid ${pid}) did not print READY: ${JSON.stringify(text)}`);
  const vars: Record<string, bigint> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+)=(0x[0-9a-f]+|\(nil\)|-?\d+)$/.exec(line);
    if (!m) continue;
    vars[m[1]] = m[2] === '(nil)' ? 0n : BigInt(m[2]);
    if (m[1].endsWith('pid')) started.add(Number(m[2]));
  }
  return { pid, child, vars };
}

/** Remembers a pid to kill at cleanup (a process the test started indirectly). */
export function alsoKill(pid: number): void {
  started.add(pid);
}

/** SIGKILLs every process this run started, by pid, and waits until they are reaped or zombies of another parent. */
export async function killStarted(): Promise<void> {
  const pids = [...started];
  started.clear();
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await poll(() => pids.every((p) => gone(p)), 5000);
}

/** No such process, or a zombie (its parent reaps it). */
export function gone(pid: number): boolean {
  try {
    return linux.readStat(pid).state === 'Z';
  } catch {
    return true;
  }
}

/** Asynchronous poll. */
export async function poll(pred: () => boolean, timeoutMs = 3000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pred()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Synchronous poll (inside a ptrace sequence, where the event loop must not run). */
export function pollSync(pred: () => boolean, timeoutMs = 3000): boolean {
  const deadline = Date.now() + timeoutMs;
  const sab = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    if (pred()) return true;
    if (Date.now() > deadline) return false;
    Atomics.wait(sab, 0, 0, 5);
  }
}

/** Runs `fn`, expecting it to throw; returns the error. */
export function thrown(fn: () => unknown): CptError {
  try {
    fn();
  } catch (e) {
    return e as CptError;
  }
  throw new Error('expected an exception, none was thrown');
}

/**
 * The tracee of a CheckpointTask whose code under test must not use it: any use throws. Only
 * reservedRanges() answers (no scratch area), for code that lists the task's own areas.
 */
export function unusedTracee<T extends object>(): T {
  return new Proxy({} as T, {
    get(_t, prop) {
      if (prop === 'reservedRanges') return () => [];
      if (prop === 'then') return undefined;
      throw new Error(`the tracee was used (${String(prop)}) where it should not be`);
    },
  });
}
