import { OptionSpec, ParsedArgs } from './args';

/** One `cptrst <name>` command. run() returns the exit code; it throws CptError or UsageError on failure. */
export interface Command {
  readonly name: string;
  /** One line for the general help. */
  readonly summary: string;
  /** The synopsis, e.g. "cptrst checkpoint <pid> -o <file> [--kill | --leave-stopped]". */
  readonly usage: string;
  /** A paragraph or two for `cptrst <name> --help`. */
  readonly description: string;
  /** Options of this command (the global ones are added). */
  readonly options: readonly OptionSpec[];
  run(args: ParsedArgs): number | Promise<number>;
  /**
   * Where a JSON error goes for this invocation: stdout, unless stdout carries something else
   * (an image written with -o -).
   */
  errorFd?(args: ParsedArgs): 1 | 2;
}
