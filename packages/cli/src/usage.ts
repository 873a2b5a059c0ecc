/**
 * Usage errors, and the argument pieces the commands declare on top of commander: an operand
 * that says what is missing in words, value parsers that refuse with our own messages. A
 * UsageError is reported with exit code 2 (main.ts).
 */
import { Argument, Option } from 'commander';

/** A command line cptrst cannot run: reported with the usage of the command being parsed. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A command argument that names what is missing when it is left out ("missing the image file"). */
export class Operand extends Argument {
  constructor(name: string, description: string, readonly missing: string, parse?: (value: string) => unknown) {
    super(name, description);
    if (parse) this.argParser(parse);
  }
}

/** A strictly positive decimal integer, or a UsageError naming `what`. */
export function positiveInt(what: string): (s: string) => number {
  return (s) => {
    if (!/^[1-9][0-9]{0,9}$/.test(s) || Number(s) > 0x7fffffff) throw new UsageError(`${what} must be a positive integer, not ${JSON.stringify(s)}`);
    return Number(s);
  };
}

/** An option that takes one value and may be given only once (commander would keep the last). */
export function onceOption(flags: string, description: string): Option {
  const o = new Option(flags, description);
  return o.argParser((v: string, previous: unknown) => {
    if (previous !== undefined) throw new UsageError(`${o.long ?? o.short} given twice`);
    return v;
  });
}

/** An option that may be repeated, its values collected in order. */
export function repeatableOption(flags: string, description: string): Option {
  return new Option(flags, description).argParser((v: string, previous: string[] | undefined) => [...(previous ?? []), v]);
}
