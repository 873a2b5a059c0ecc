import type { Command as Commander } from 'commander';
import type { GlobalOptions } from './common';

/** What a command's run() gets: its operands as parsed, and its options with the global ones. */
export interface Invocation<O = object> {
  readonly operands: readonly unknown[];
  readonly options: O & GlobalOptions;
}

/** One `cptrst <name>` command. run() returns the exit code; it throws CptError or UsageError on failure. */
export interface Command {
  readonly name: string;
  /** One line for the general help. */
  readonly summary: string;
  /** The synopsis after "cptrst <name> ", e.g. "<pid> -o <file> [--kill | --leave-stopped] [--json] [-v]". */
  readonly usage: string;
  /** A paragraph for `cptrst <name> --help` (wrapped to the terminal by the help). */
  readonly description: string;
  /** Declares the operands and options on the commander command (the global ones come from the program). */
  declare(cmd: Commander): void;
  run(args: Invocation): number | Promise<number>;
  /**
   * Where a JSON error goes for this invocation: stdout, unless stdout carries something else
   * (an image written with -o -).
   */
  errorFd?(args: Invocation): 1 | 2;
}
