/** What every command shares: the global options, module loading, the version, progress printing. */
import * as fs from 'fs';
import * as path from 'path';
import { CptError, ProgressEvent, loadModule, loadedModules } from '@cptrst/core';
import { OptionSpec, ParsedArgs, flag, values } from './args';
import { formatMs, note } from './output';

/** The module that provides cpt_operations and the standard handlers. */
export const DEFAULT_MODULE = '@cptrst/cpt-module';

export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { long: 'module', short: 'm', value: true, repeat: true, arg: 'NAME|PATH', help: `load this module instead of ${DEFAULT_MODULE} (repeatable; list ${DEFAULT_MODULE} too to add handlers to it)` },
  { long: 'json', help: 'print JSON for programs instead of text for people' },
  { long: 'verbose', short: 'v', help: 'print progress and phase timings to stderr' },
  { long: 'help', short: 'h', help: 'print this help' },
];

export interface Common {
  json: boolean;
  verbose: boolean;
  modules: string[];
}

export function common(p: ParsedArgs): Common {
  const modules = values(p, 'module');
  return { json: flag(p, 'json'), verbose: flag(p, 'verbose'), modules: modules.length ? modules : [DEFAULT_MODULE] };
}

/**
 * Loads the modules (core's loadModule: require + register(container)). The default one is
 * resolved from the CLI's own location so it is found whatever the working directory; a name or
 * path given with --module is resolved from the working directory first.
 */
export function loadModules(c: Common): string[] {
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
    return { loaded: loadedModules(), failure: e as CptError };
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

/** The help text of a command. */
export function commandHelp(usage: string, description: string, options: string): string {
  return `usage: ${usage}\n\n${description}\n\noptions:\n${options}\n`;
}
