/**
 * Guardians: short sections that change state a checkpointed process shares and put it back at
 * once (a socket's peek offset, set to read the n-th queued message; a pty's buffered bytes,
 * read because a tty cannot be peeked, and its termios) run in a child process of cptrst. The
 * tree is frozen meanwhile, and cptrst waits for the child. A SIGKILL of cptrst is for cptrst
 * alone, and the child ignores the signals a terminal sends to a process group, so once the
 * section has begun it runs to its end: nothing is left changed. It begins only while cptrst,
 * its parent, lives: if cptrst is gone, the tree runs again, and the child touches nothing. What
 * is left: cptrst dying while the child is inside its section lets the tree run during the rest
 * of that section (a few system calls).
 *
 * The child is Node running the module that holds the section: the compiled file itself, or the
 * single-file CLI that holds it (whose loader then gives the package from itself). It gets no arch
 * package: cptrst's system call table comes with its arguments.
 */
import * as fs from 'fs';
import { CptError } from './errors';
import { childProcess } from './linux/helper-process';
import { SyscallTable, syscallTable, useSyscallTable } from './linux/syscalls';

/** The longest a section may take (its calls never block: only a machine stalled that long reaches it); then SIGKILL, which it does not ignore. */
const GUARDIAN_TIMEOUT_MS = 120000;

/** Where the child finds the section: an export of `file`, or else of package `pkg` at `path`. */
export interface GuardianEntry {
  file: string;
  pkg: string;
  path: readonly string[];
}

/**
 * Runs the section `entry` in a guardian with `args`; `fds` become its fds 3, 4, ... Returns the
 * JSON value it printed, or throws a CptError (EIO, or the one it reported).
 */
export function runGuardian<T>(entry: GuardianEntry, args: readonly string[], fds: readonly number[], what: string): T {
  const code = [
    'const m = require(process.argv[1]);',
    'const [pkg, path] = JSON.parse(process.argv[2]);',
    'let f = m[path[path.length - 1]];',
    'if (typeof f !== "function") { f = require(pkg); for (const k of path) f = f[k]; }',
    'f();',
  ].join('\n');
  const argv = ['-e', code, entry.file, JSON.stringify([entry.pkg, entry.path]), String(process.pid), JSON.stringify(syscallTable()), ...args];
  const r = childProcess().spawnSync(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe', ...fds], timeout: GUARDIAN_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 64 << 20 });
  const out = r.stdout?.toString() ?? '';
  let got: { ok: T } | { code: string; message: string } | undefined;
  try {
    got = out ? (JSON.parse(out) as typeof got) : undefined;
  } catch {
    got = undefined;
  }
  if (!got) {
    const why = r.error ? String(r.error.message) : `status ${r.status ?? r.signal}: ${(r.stderr?.toString() ?? '').trim().split('\n').slice(-3).join(' ')}`;
    throw new CptError('EIO', `the process that ${what} failed (${why})`, { object: what });
  }
  if ('code' in got) throw new CptError(got.code, got.message, { object: what });
  return got.ok;
}

/**
 * In the guardian, first: ignores the signals of a terminal, takes cptrst's system call table,
 * and returns the section's arguments, or undefined when cptrst is gone already (then the
 * section must not run: the tree runs again).
 */
export function guardianStart(): string[] | undefined {
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGPIPE'] as const) process.on(s, () => undefined);
  const [parent, table, ...args] = process.argv.slice(3);
  useSyscallTable(JSON.parse(table) as SyscallTable);
  return process.ppid === Number(parent) ? args : undefined;
}

/** In the guardian, last: its result (or error) for cptrst, which may be gone. */
export function guardianReply(result: () => unknown): void {
  let res: unknown;
  try {
    res = { ok: result() };
  } catch (e) {
    res = { code: e instanceof CptError ? e.code : 'EIO', message: String((e as Error).message ?? e) };
  }
  try {
    fs.writeSync(1, JSON.stringify(res));
  } catch {
    /* cptrst is gone: the section has put everything back anyway */
  }
}
