/**
 * Helper processes of cptrst's own, and the end of a process we kill: a helper is started,
 * seized and stopped, so that something can be done in it or read from it through ptrace (the
 * XSAVE layout, clone3 with a chosen PID), then killed and reaped.
 */
import type * as ChildProcess from 'child_process';
import { CptError } from '../errors';
import { O, PTRACE_EVENT, PTRACE_O, SIG, WAIT } from './constants';
import { errnoError, rawSyscall, spawnProcess } from './libc';
import { kill, sleepMs } from './process';
import { ptrace } from './ptrace';
import { SYS } from './syscalls';
import { waitpid } from './wait';

const HELPER = '/bin/cat';
/**
 * Node's child_process, loaded on first use: it loads net, dgram and the streams (some 2 ms), which
 * only the rare paths that start a process with it should pay for, not every run of cptrst.
 */
export function childProcess(): typeof ChildProcess {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose
  return require('child_process') as typeof ChildProcess;
}

/**
 * Starts `path` through posix_spawn (spawnProcess, with `opts`), its stdin the read end of a pipe
 * whose write end only we hold (returned): the helper reads end-of-file when we die.
 */
function spawnOnPipe(path: string, opts: Parameters<typeof spawnProcess>[2], what: string): { pid: number; writeEnd: number } {
  const ends = Buffer.alloc(8);
  const r = rawSyscall(SYS.pipe2, ends, O.CLOEXEC);
  if (r < 0n) throw errnoError(Number(-r), `pipe2 for ${what}`);
  const readEnd = ends.readInt32LE(0);
  const writeEnd = ends.readInt32LE(4);
  try {
    return { pid: spawnProcess(path, readEnd, opts), writeEnd };
  } catch (e) {
    rawSyscall(SYS.close, writeEnd);
    throw new CptError((e as CptError).code ?? 'ENOENT', `cannot start ${what} (${path}): ${(e as Error).message}`);
  } finally {
    rawSyscall(SYS.close, readEnd);
  }
}

/** A seized helper, stopped in PTRACE_EVENT_STOP. */
export interface SeizedHelper {
  readonly pid: number;
  /** Kills and reaps it, and closes its pipe. Never throws. */
  kill(): void;
}

/**
 * Starts a helper and seizes it with `options` (PTRACE_O_EXITKILL always added), then stops it.
 * The helper is /bin/cat reading a pipe whose other end only we hold: should we die before the
 * seize, it reads end-of-file and exits; from the seize on, EXITKILL kills it (and anything it
 * made) with us. On failure it is killed and reaped before the error is thrown. It is started
 * with posix_spawn (linux.spawnProcess), not child_process.spawn, whose fork of cptrst's whole
 * address space costs a few ms; we are its parent, and kill() reaps it.
 */
export function spawnSeizedHelper(options: number, what: string): SeizedHelper {
  const { pid, writeEnd } = spawnOnPipe(HELPER, {}, what);
  let open = true;
  const helper: SeizedHelper = {
    pid,
    kill() {
      killAndReap(pid);
      if (open) rawSyscall(SYS.close, writeEnd);
      open = false;
    },
  };
  try {
    ptrace.seize(pid, options | PTRACE_O.EXITKILL);
    ptrace.interrupt(pid);
    waitForEventStop(pid, what);
    return helper;
  } catch (e) {
    helper.kill();
    throw e;
  }
}

/** A helper that reads a pipe whose write end only we hold (spawnPipedHelper). */
export interface PipedHelper {
  readonly pid: number;
  /** Writes `line` into its pipe, closes our end, and reaps it once it has exited (it must exit then). Never throws. */
  dismiss(line: string): void;
}

/** How long dismiss() waits for the helper to exit before leaving it to be reaped by whoever adopts it. */
const DISMISS_WAIT_MS = 500;

/**
 * Starts `path` with `args` in a session of its own (posix_spawn, as spawnSeizedHelper does), its
 * stdin a pipe whose write end only we hold, so that it reads end-of-file when we die, and `fds`
 * its fds 3, 4, ...; its stdout and stderr are /dev/null, its environment empty.
 */
export function spawnPipedHelper(path: string, args: readonly string[], fds: readonly number[], what: string): PipedHelper {
  const { pid, writeEnd } = spawnOnPipe(path, { args, fds, newSession: true }, what);
  let open = true;
  return {
    pid,
    dismiss(line: string): void {
      if (!open) return;
      open = false;
      const bytes = Buffer.from(line);
      // A helper gone already makes the write fail (EPIPE): it is reaped all the same.
      rawSyscall(SYS.write, writeEnd, bytes, bytes.length);
      rawSyscall(SYS.close, writeEnd);
      try {
        for (let waited = 0; waited < DISMISS_WAIT_MS; waited++) {
          if (waitpid(pid, WAIT.WNOHANG).pid !== 0) return;
          sleepMs(1);
        }
      } catch {
        /* reaped already */
      }
    },
  };
}

/** Waits for a tracee's PTRACE_EVENT_STOP, letting other stops go on. */
export function waitForEventStop(tid: number, what = 'the helper process'): void {
  for (;;) {
    const w = waitpid(tid, WAIT.__WALL);
    if (w.exited !== undefined || w.signaled !== undefined) throw new CptError('ESRCH', `${what} died`, { pid: tid });
    if (w.stopped!.event === PTRACE_EVENT.STOP) return;
    ptrace.cont(tid, 0);
  }
}

/**
 * Collects the exit of a killed process we trace or are the parent of, continuing any stop it
 * reports on the way. Quiet when it is gone already or not ours to wait for.
 */
export function reapKilled(tid: number): void {
  try {
    for (;;) {
      const w = waitpid(tid, WAIT.__WALL);
      if (w.exited !== undefined || w.signaled !== undefined) return;
      ptrace.cont(tid, 0);
    }
  } catch {
    /* already reaped or not ours to wait for */
  }
}

/** SIGKILL, then reapKilled: no zombie is left to us. Never throws. */
export function killAndReap(pid: number): void {
  try {
    kill(pid, SIG.SIGKILL);
  } catch {
    /* already gone */
  }
  reapKilled(pid);
}

/** A helper that ends with a chosen wait status (`end`), for a pidfd of a process that has ended. */
export interface EndingHelper {
  readonly pid: number;
  /** Makes it end with its status and reaps it; false if it ended otherwise. Never throws. */
  end(): boolean;
}

/** Signals whose default action cannot end a process (ignored, or stop and continue). */
const NOT_FATAL: readonly number[] = [SIG.SIGCHLD, SIG.SIGCONT, SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU, SIG.SIGURG, SIG.SIGWINCH];

/** Whether a helper can end with this wait status: an exit code, or death by a fatal signal without a core dump. */
export function endingStatusPossible(status: number): boolean {
  if (!Number.isInteger(status) || status < 0 || status > 0xffff) return false;
  const sig = status & 0x7f;
  if (sig === 0) return (status & 0xff) === 0;
  return status === sig && sig < 65 && !NOT_FATAL.includes(sig);
}

/**
 * Starts /bin/sh waiting on a pipe only we hold (should we die, it reads end-of-file and exits),
 * with core dumps off; `end` sends it SIGTERM, which its trap turns into `exit CODE`, or the
 * fatal signal of the status, then reaps it.
 */
export function spawnEndingHelper(status: number, what: string): EndingHelper {
  if (!endingStatusPossible(status)) throw new CptError('EINVAL', `no process can be made to end with wait status 0x${status.toString(16)} (${what})`);
  const sig = status & 0x7f;
  const script = sig === 0 ? `trap 'exit ${(status >> 8) & 0xff}' TERM; ulimit -c 0; read x` : 'ulimit -c 0; read x';
  const child = childProcess().spawn('/bin/sh', ['-c', script], { stdio: ['pipe', 'ignore', 'ignore'], detached: false });
  child.unref();
  const pid = child.pid;
  if (!pid) throw new CptError('ENOENT', `cannot start /bin/sh (${what})`);
  let ended = false;
  return {
    pid,
    end(): boolean {
      if (ended) return false;
      ended = true;
      try {
        kill(pid, sig === 0 ? SIG.SIGTERM : sig);
        for (;;) {
          const w = waitpid(pid, 0);
          if (w.exited !== undefined) return sig === 0 && w.exited === (status >> 8);
          if (w.signaled !== undefined) return w.signaled === sig;
        }
      } catch {
        return false;
      } finally {
        child.stdin?.destroy();
      }
    },
  };
}
