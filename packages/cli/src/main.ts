#!/usr/bin/env node
/**
 * The `cptrst` command. Exit codes: 0 success, 1 a checkpoint/restart error (one line on stderr,
 * or {"error": ...} on stdout with --json), 2 a usage error, 130 / 143 interrupted by SIGINT /
 * SIGTERM (the operation undone).
 */
import 'reflect-metadata';
import { OptionSpec, UsageError, optionHelp, parseArgs, ParsedArgs } from './args';
import { Command } from './command';
import { checkpointCommand } from './checkpoint';
import { restartCommand } from './restart';
import { showCommand } from './show';
import { checkCommand } from './check';
import { GLOBAL_OPTIONS, cliVersion, commandHelp, interruptedExitCode } from './common';
import { OutputClosed, err, errorJson, errorLine, out, toCptError } from './output';

export const COMMANDS: readonly Command[] = [checkpointCommand, restartCommand, showCommand, checkCommand];

export function generalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'usage: cptrst <command> [options]',
    '',
    'Checkpoint/restart of Linux x86-64 processes.',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'synopsis:',
    ...COMMANDS.map((c) => `  ${c.usage}`),
    '',
    'options for every command:',
    optionHelp(GLOBAL_OPTIONS),
    '',
    '  cptrst --version       print the version',
    '  cptrst <command> --help  print the help of a command',
    '',
    'exit status: 0 success, 1 checkpoint/restart error, 2 usage error, 130/143 interrupted by SIGINT/SIGTERM',
  ].join('\n') + '\n';
}

function helpOf(cmd: Command): string {
  return commandHelp(cmd.usage, cmd.description, optionHelp([...cmd.options, ...GLOBAL_OPTIONS]));
}

function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** Options that take a value, so that `cptrst --module x check` finds the command after x. */
const VALUE_OPTIONS = new Set(GLOBAL_OPTIONS.filter((o) => o.value).flatMap((o) => [`--${o.long}`, ...(o.short ? [`-${o.short}`] : [])]));

/** Runs the CLI on argv (without node and the script) and returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const wantsJson = argv.includes('--json');
  let cmd: Command | undefined;
  let parsed: ParsedArgs | undefined;
  try {
    // Global options may come before the command.
    let i = 0;
    const before: string[] = [];
    for (; i < argv.length; i++) {
      const a = argv[i];
      if (a === '--version' || a === '-V') {
        out(`cptrst ${cliVersion()}`);
        return 0;
      }
      if (a === '--help' || a === '-h') {
        out(generalHelp());
        return 0;
      }
      if (!a.startsWith('-') || a === '-') break;
      before.push(a);
      if (VALUE_OPTIONS.has(a) && i + 1 < argv.length) before.push(argv[++i]);
    }
    const name = argv[i];
    if (name === undefined) throw new UsageError('no command given');
    if (name === 'help') {
      const topic = argv[i + 1];
      if (topic === undefined) {
        out(generalHelp());
        return 0;
      }
      const c = findCommand(topic);
      if (!c) throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
      out(helpOf(c));
      return 0;
    }
    cmd = findCommand(name);
    if (!cmd) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
    const specs: OptionSpec[] = [...cmd.options, ...GLOBAL_OPTIONS];
    parsed = parseArgs([...before, ...argv.slice(i + 1)], specs, cmd.name);
    if (parsed.values.has('help')) {
      out(helpOf(cmd));
      return 0;
    }
    return await cmd.run(parsed);
  } catch (e) {
    if (e instanceof OutputClosed) return 0;
    if (e instanceof UsageError) {
      if (wantsJson) {
        try {
          out(errorJson(e));
        } catch {
          /* stdout is gone */
        }
      } else {
        const c = e.command ? findCommand(e.command) : cmd;
        err(`cptrst: ${e.message}`);
        err(c ? `usage: ${c.usage}\nTry 'cptrst ${c.name} --help' for more.` : `usage: cptrst <command> [options]; commands: ${COMMANDS.map((x) => x.name).join(', ')}\nTry 'cptrst --help' for more.`);
      }
      return 2;
    }
    const ce = toCptError(e);
    if (process.env.CPTRST_DEBUG && e instanceof Error && e.stack) err(e.stack);
    if (wantsJson) {
      const fd = cmd && parsed && cmd.errorFd ? cmd.errorFd(parsed) : 1;
      try {
        if (fd === 1) out(errorJson(ce));
        else err(errorJson(ce));
      } catch {
        /* stdout is gone */
      }
    } else {
      err(errorLine(ce));
    }
    // Interrupted by SIGINT or SIGTERM: the status a shell expects of a process ended by it.
    return interruptedExitCode(ce) ?? 1;
  }
}

/** Runs the command line of this process and exits with its code (bin/cptrst.js calls this). */
export async function run(): Promise<never> {
  let code: number;
  try {
    code = await main(process.argv.slice(2));
  } catch (e) {
    // main() handles every error; this is the last resort, still one line and no stack.
    err(`cptrst: EIO: ${(e as Error)?.message ?? String(e)}`);
    code = 1;
  }
  process.exit(code);
}

if (require.main === module) void run();
