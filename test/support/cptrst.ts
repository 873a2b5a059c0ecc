/** Running the cptrst command line tool, asynchronously. */
import { execFile } from 'child_process';
import * as path from 'path';
import { CLI_MAIN } from './paths';
import { describeStuck } from './processes';

export interface CptrstResult {
  /** Exit code, or null if it was killed by a signal (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CptrstOptions {
  /** Kill the tool after this long (SIGKILL), default 120 s. */
  timeoutMs?: number;
  env?: Record<string, string>;
  cwd?: string;
}

/**
 * Runs `packages/cli/bin/cptrst.js ...args` as a user runs the installed command (its launcher line
 * starts `node` from PATH, here the Node that runs the tests) and resolves with its exit code and output,
 * whatever the exit code. Uses execFile, never a synchronous call: the test process is the
 * workloads' parent, and its event loop must keep running so that libuv reaps a workload killed
 * by a checkpoint (freeing its PID for the restart). A tool that does not end in time is killed;
 * what it was waiting in is added to its stderr, for the failure message.
 */
export function cptrst(args: string[], opts: CptrstOptions = {}): Promise<CptrstResult> {
  return new Promise((resolve) => {
    let stuck = '';
    const child = execFile(
      CLI_MAIN,
      args,
      {
        encoding: 'utf8',
        maxBuffer: 256 << 20,
        env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`, ...(opts.env ?? {}) },
        cwd: opts.cwd,
      },
      (error, stdout, stderr) => {
        clearTimeout(timer);
        if (stuck) stderr = `${stderr}[test harness] cptrst ${args[0]} did not end within ${opts.timeoutMs ?? 120000} ms and was killed; it was:\n${stuck}\n`;
        if (error === null) {
          resolve({ code: 0, signal: null, stdout, stderr });
          return;
        }
        const e = error as NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null };
        if (typeof e.code === 'number') {
          resolve({ code: e.code, signal: e.signal ?? null, stdout, stderr });
        } else if (e.signal) {
          resolve({ code: null, signal: e.signal, stdout, stderr });
        } else {
          // could not run at all (e.g. ENOENT): report it the way a failing tool would
          resolve({ code: 127, signal: null, stdout, stderr: `${stderr}${e.message}\n` });
        }
      },
    );
    const timer = setTimeout(() => {
      void describeStuck(child.pid ?? 0)
        .catch((err: unknown) => String(err))
        .then((what) => {
          stuck = what;
          child.kill('SIGKILL');
        });
    }, opts.timeoutMs ?? 120000);
  });
}
