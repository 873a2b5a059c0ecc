#!/usr/bin/env node
/**
 * The `cptrst` command. Exit codes: 0 success, 1 a checkpoint/restart error (one line on stderr,
 * or {"error": ...} on stdout with --json), 2 a usage error, 130 / 143 interrupted by SIGINT /
 * SIGTERM (the operation undone).
 *
 * The command line is parsed by commander, which also writes the help. Its errors are reported
 * the way every other usage error is: one line naming the problem, then the usage of the command.
 */
import { Command as Commander, CommanderError, Option } from 'commander';
import { Command, Invocation } from './command';
import { checkpointCommand } from './checkpoint';
import { restartCommand } from './restart';
import { showCommand } from './show';
import { checkCommand } from './check';
import { GlobalOptions, cliVersion, globalOptions, interruptedExitCode } from './common';
import { OutputClosed, err, errorJson, errorLine, out, toCptError } from './output';
import { Operand, UsageError } from './usage';

export const COMMANDS: readonly Command[] = [checkpointCommand, restartCommand, showCommand, checkCommand];

const EXIT_STATUS = 'exit status: 0 success, 1 checkpoint/restart error, 2 usage error, 130/143 interrupted by SIGINT/SIGTERM';

/** What one parse found: the command being parsed, and once it runs, what it was given. */
interface ParseState {
  command?: Commander;
  spec?: Command;
  invocation?: Invocation;
  code?: number;
}

/** The command line of cptrst: the program with its global options, and one subcommand per COMMANDS entry. */
function buildProgram(state: ParseState): Commander {
  const program = new Commander('cptrst')
    .usage('<command> [options]')
    .description('Checkpoint/restart of Linux x86-64 processes.')
    .version(`cptrst ${cliVersion()}`, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'print this help')
    .helpCommand(false)
    .configureHelp({ showGlobalOptions: true, styleTitle: (title) => title.toLowerCase() })
    // Output goes through our synchronous writers; errors are printed by main() in our format.
    .configureOutput({ writeOut: (s) => out(s), writeErr: (s) => err(s), outputError: () => undefined })
    .exitOverride()
    .addHelpText('after', `\n${EXIT_STATUS}`);
  for (const o of globalOptions()) program.addOption(o);
  program.hook('preSubcommand', (_program, sub) => {
    state.command = sub;
  });

  for (const spec of COMMANDS) {
    const cmd = program.command(spec.name).summary(spec.summary).description(spec.description).usage(spec.usage);
    spec.declare(cmd);
    cmd.action(async () => {
      state.spec = spec;
      state.invocation = { operands: cmd.processedArgs, options: cmd.optsWithGlobals<GlobalOptions>() };
      state.code = await spec.run(state.invocation);
    });
  }

  program
    .command('help')
    .summary('print the help of a command')
    .description('Prints the help of <command>, or the general help.')
    .argument('[command]', 'one of the commands')
    .action((name?: string) => {
      const sub = name === undefined ? program : program.commands.find((c) => c.name() === name);
      if (!sub) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
      sub.outputHelp();
      state.code = 0;
    });

  // Reached when no command is named: what follows the options is not one of ours.
  program.allowExcessArguments().action(() => {
    const name = program.args[0];
    throw new UsageError(name === undefined ? 'no command given' : `unknown command ${JSON.stringify(name)}`);
  });
  return program;
}

/** The general help text (`cptrst --help`). */
export function generalHelp(): string {
  return buildProgram({}).helpInformation();
}

/** An option of the command or of the program, by a name as spelled ("--json") or by its flags ("-o, --output <file>"). */
function findOption(cmd: Commander, spelled: string): Option | undefined {
  for (let c: Commander | null = cmd; c; c = c.parent) {
    const o = c.options.find((x) => x.flags === spelled || x.long === spelled || x.short === spelled);
    if (o) return o;
  }
  return undefined;
}

/** "<file>" of "-o, --output <file>". */
function placeholder(o: Option): string {
  return /[<[][^>\]]*[>\]]/.exec(o.flags)?.[0] ?? 'VALUE';
}

/**
 * Commander's error in our words. Commander names the options and arguments in quotes in its
 * messages ("option '-o, --output <file>' argument missing"); those names are looked up in the
 * command to say what is wrong the way the rest of the CLI does.
 */
function usageError(e: CommanderError, cmd: Commander, argv: readonly string[]): UsageError {
  const quoted = [...e.message.matchAll(/'([^']*)'/g)].map((m) => m[1]);
  const option = (i: number): Option | undefined => (quoted[i] === undefined ? undefined : findOption(cmd, quoted[i]));
  switch (e.code) {
    case 'commander.unknownOption': {
      const given = quoted[0] ?? '';
      const name = /^(--[^=]+)=/.exec(given)?.[1];
      if (name && findOption(cmd, name)) return new UsageError(`${name} takes no value`);
      return new UsageError(`unknown option ${given}`);
    }
    case 'commander.optionMissingArgument': {
      const o = option(0);
      if (!o) break;
      // Only the last argument can lack its value: it says how the option was spelled.
      const spelled = o.long && argv.lastIndexOf(o.long) > argv.lastIndexOf(o.short ?? '') ? o.long : o.short ?? o.long;
      return new UsageError(`${spelled} needs a value (${placeholder(o)})`);
    }
    case 'commander.missingMandatoryOptionValue': {
      const o = option(0);
      if (!o) break;
      return new UsageError(`missing ${o.short ?? o.long} ${placeholder(o)}`);
    }
    case 'commander.missingArgument': {
      const a = cmd.registeredArguments.find((x) => x.name() === quoted[0]);
      return new UsageError(`missing ${a instanceof Operand ? a.missing : quoted[0]}`);
    }
    case 'commander.excessArguments':
      return new UsageError(`unexpected argument ${JSON.stringify(cmd.args[cmd.registeredArguments.length])}`);
    case 'commander.conflictingOption': {
      const [a, b] = [option(0), option(1)];
      if (!a || !b) break;
      return new UsageError(`${a.long ?? a.short} and ${b.long ?? b.short} exclude each other`);
    }
  }
  return new UsageError(e.message.replace(/^error: /, ''));
}

/** The usage lines printed after a usage error: the command's synopsis, or the general one. */
function usageHint(program: Commander, cmd: Commander | undefined): string {
  if (cmd && cmd !== program) {
    return `usage: ${cmd.createHelp().commandUsage(cmd)}\nTry 'cptrst ${cmd.name()} --help' for more.`;
  }
  return `usage: cptrst <command> [options]; commands: ${COMMANDS.map((x) => x.name).join(', ')}\nTry 'cptrst --help' for more.`;
}

/** Runs the CLI on argv (without node and the script) and returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  // Known before parsing, so that a usage error is JSON too.
  const wantsJson = argv.includes('--json');
  const state: ParseState = {};
  const program = buildProgram(state);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return state.code ?? 0;
  } catch (caught) {
    let e = caught;
    if (e instanceof OutputClosed) return 0;
    if (e instanceof CommanderError) {
      // Help and version were printed.
      if (e.exitCode === 0) return 0;
      e = usageError(e, state.command ?? program, argv);
    }
    if (e instanceof UsageError) {
      if (wantsJson) {
        try {
          out(errorJson(e));
        } catch {
          /* stdout is gone */
        }
      } else {
        err(`cptrst: ${e.message}`);
        err(usageHint(program, state.command));
      }
      return 2;
    }
    const ce = toCptError(e);
    if (process.env.CPTRST_DEBUG && e instanceof Error && e.stack) err(e.stack);
    if (wantsJson) {
      const fd = state.spec?.errorFd && state.invocation ? state.spec.errorFd(state.invocation) : 1;
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
