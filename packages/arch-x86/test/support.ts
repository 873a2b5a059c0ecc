/**
 * Helpers for the arch-x86 tests: start real processes (with no stray inherited fd), wait until
 * they sleep, put them in a ptrace stop the way the freezer does, and kill them by pid.
 *
 * A spawned target is a child of the mocha process, and libuv also waitpid()s its children when
 * SIGCHLD arrives: every seize/interrupt/wait/.../detach sequence must run synchronously.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import { CptError, linux } from '@cptrst/core';

const { ptrace, PTRACE_O, PTRACE_EVENT } = linux;

/** Closes every fd above 2 that the shell inherited (this sandbox leaks a pipe at fd 251), then execs the target. */
const CLOSE_FDS_AND_EXEC = 'for f in /proc/$$/fd/*; do n=${f##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi; done; exec "$@"';

const started = new Set<number>();

export interface Started {
  pid: number;
  child: ChildProcess;
}

/** Spawns `file args` with stdio on /dev/null and waits until it has exec'd and sleeps (state S). */
export async function startSleeping(file: string, args: string[]): Promise<Started> {
  const child = spawn('/bin/bash', ['-c', CLOSE_FDS_AND_EXEC, 'sh', file, ...args], { stdio: 'ignore' });
  child.unref();
  const pid = child.pid;
  if (!pid) throw new Error(`could not spawn ${file}`);
  started.add(pid);
  const exe = fs.realpathSync(file);
  const ok = await poll(() => {
    try {
      return fs.readlinkSync(`/proc/${pid}/exe`) === exe && linux.readStat(pid).state === 'S';
    } catch {
      return false;
    }
  }, 10000);
  if (!ok) throw new Error(`${file} (pid ${pid}) did not reach state S`);
  return { pid, child };
}

/** SIGKILLs every process this file started, by pid, and waits until libuv has reaped them. */
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
  await poll(() => pids.every((p) => !fs.existsSync(`/proc/${p}`)), 5000);
}

/** Seizes `pid` (PTRACE_O_TRACESYSGOOD, as the freezer does) and waits for its interrupt stop. Synchronous. */
export function seizeAndStop(pid: number): void {
  ptrace.seize(pid, PTRACE_O.TRACESYSGOOD);
  ptrace.interrupt(pid);
  for (;;) {
    const w = linux.waitTracee(pid);
    if (w.exited !== undefined || w.signaled !== undefined) throw new CptError('ESRCH', `pid ${pid} died while being stopped`, { pid });
    if (w.stopped!.event === PTRACE_EVENT.STOP) return;
    ptrace.cont(pid, 0);
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
