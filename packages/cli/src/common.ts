/** What every command shares: the global options, module loading, the version, progress printing. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { CptError, ProgressEvent } from '@cptrst/core';
import { Option } from 'commander';
import { core } from './core';
import { repeatableOption } from './usage';
import { formatMs, note } from './output';

/** The module that provides cpt_operations and the standard handlers. */
const DEFAULT_MODULE = '@cptrst/cpt-module';

/** The options every command takes (declared on the program, so they may come before the command too). */
export function globalOptions(): Option[] {
  return [
    repeatableOption('-m, --module <name|path>', `load this module instead of ${DEFAULT_MODULE} (repeatable; list ${DEFAULT_MODULE} too to add handlers to it)`),
    new Option('--json', 'print JSON for programs instead of text for people'),
    new Option('-v, --verbose', 'print progress and phase timings to stderr'),
  ];
}

/** The global options as commander gives them. */
export interface GlobalOptions {
  module?: string[];
  json?: boolean;
  verbose?: boolean;
}

export interface Common {
  json: boolean;
  verbose: boolean;
  modules: string[];
}

export function common(o: GlobalOptions): Common {
  const modules = o.module ?? [];
  return { json: o.json === true, verbose: o.verbose === true, modules: modules.length ? modules : [DEFAULT_MODULE] };
}

/**
 * Loads the modules (core's loadModule: require + register(container)). The default one is
 * resolved from the CLI's own location so it is found whatever the working directory; a name or
 * path given with --module is resolved from the working directory first.
 */
export function loadModules(c: Common): string[] {
  const { loadModule, loadedModules } = core();
  for (const m of c.modules) {
    loadModule(m, m === DEFAULT_MODULE ? __dirname : process.cwd());
  }
  if (c.verbose) note(`modules loaded: ${loadedModules().join(', ')}`);
  return loadedModules();
}

/** Loads the modules for a command that can work without them (show): a failure is returned, not thrown. */
export function tryLoadModules(c: Common): { loaded: string[]; failure?: CptError } {
  try {
    return { loaded: loadModules(c) };
  } catch (e) {
    return { loaded: core().loadedModules(), failure: e as CptError };
  }
}

let versionCache: string | undefined;
export function cliVersion(): string {
  if (versionCache === undefined) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: string };
      versionCache = pkg.version ?? 'unknown';
    } catch {
      versionCache = 'unknown';
    }
  }
  return versionCache;
}

/** A progress printer for -v: elapsed time, phase, pid, detail, bytes. */
export function progressPrinter(): (e: ProgressEvent) => void {
  const t0 = process.hrtime.bigint();
  return (e) => {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const parts = [`[${formatMs(ms).padStart(7)} ms]`, e.phase];
    if (e.pid !== undefined) parts.push(`pid ${e.pid}`);
    if (e.detail) parts.push(e.detail);
    if (e.bytes !== undefined) parts.push(`${e.bytes} bytes`);
    note(parts.join(' '));
  };
}

/** The phase timings of a result, one line each, slowest first. */
export function printTimings(timings: Record<string, number>): void {
  const entries = Object.entries(timings).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return;
  const width = Math.max(...entries.map(([k]) => k.length));
  note('phase timings:');
  for (const [k, ms] of entries) note(`  ${k.padEnd(width)}  ${formatMs(ms).padStart(8)} ms`);
}

/** The first SIGINT or SIGTERM caught while an operation ran (see catchInterrupts). */
let caughtSignal: NodeJS.Signals | undefined;

/**
 * SIGINT and SIGTERM during an operation: the first one aborts the returned signal, which the
 * operation sees at its next safe point (it then undoes what it did and rejects with EINTR);
 * any later one is ignored, so that the cleanup runs to its end. The handlers stay until exit.
 */
export function catchInterrupts(): AbortSignal {
  const ac = new AbortController();
  const on = (sig: NodeJS.Signals): void => {
    if (caughtSignal !== undefined) return;
    caughtSignal = sig;
    ac.abort(sig);
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return ac.signal;
}

/** For an operation that failed because it was interrupted: the exit status, 128 + the signal's number. */
export function interruptedExitCode(e: CptError): number | undefined {
  if (e.code !== 'EINTR' || caughtSignal === undefined) return undefined;
  return 128 + (os.constants.signals[caughtSignal] ?? 0);
}

/** The CptError of an interrupted operation, saying what became of the process(es). */
export function interruptedError(e: CptError, outcome: string): CptError {
  if (interruptedExitCode(e) === undefined) return e;
  return new (core().CptError)(e.code, `${e.message}; ${outcome}`, { pid: e.pid, object: e.object, cause: e });
}
