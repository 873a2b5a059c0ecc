/**
 * Hand-rolled argv parsing: long options (`--name value`, `--name=value`), short options
 * (`-o value`, `-ovalue`), `--` to end the options, and `-` as an ordinary argument (stdin or
 * stdout). Anything unexpected is a UsageError, which the CLI reports with exit code 2.
 */

export class UsageError extends Error {
  /** The command whose usage text to print (undefined: the general one). */
  readonly command?: string;
  constructor(message: string, command?: string) {
    super(message);
    this.name = 'UsageError';
    this.command = command;
  }
}

export interface OptionSpec {
  /** Long name without the dashes: "output". */
  readonly long: string;
  /** One-letter short name: "o". */
  readonly short?: string;
  /** Takes a value. */
  readonly value?: boolean;
  /** May be given more than once (values accumulate). */
  readonly repeat?: boolean;
  /** Placeholder for the value in help texts. */
  readonly arg?: string;
  readonly help: string;
}

export interface ParsedArgs {
  readonly positionals: string[];
  /** Option values by long name; flags have the value "". */
  readonly values: Map<string, string[]>;
}

export function flag(p: ParsedArgs, long: string): boolean {
  return p.values.has(long);
}

export function value(p: ParsedArgs, long: string): string | undefined {
  const v = p.values.get(long);
  return v ? v[v.length - 1] : undefined;
}

export function values(p: ParsedArgs, long: string): string[] {
  return p.values.get(long) ?? [];
}

export function parseArgs(argv: readonly string[], specs: readonly OptionSpec[], command?: string): ParsedArgs {
  const positionals: string[] = [];
  const found = new Map<string, string[]>();
  const byLong = new Map(specs.map((s) => [s.long, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short as string, s]));

  const set = (spec: OptionSpec, v: string, spelled: string): void => {
    const list = found.get(spec.long);
    if (list && !spec.repeat && spec.value) throw new UsageError(`${spelled} given twice`, command);
    if (list) list.push(v);
    else found.set(spec.long, [v]);
  };

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const spec = byLong.get(name);
      if (!spec) throw new UsageError(`unknown option --${name}`, command);
      if (!spec.value) {
        if (eq >= 0) throw new UsageError(`--${name} takes no value`, command);
        set(spec, '', `--${name}`);
        continue;
      }
      let v: string | undefined;
      if (eq >= 0) v = a.slice(eq + 1);
      else if (i + 1 < argv.length) v = argv[++i];
      if (v === undefined || v === '') throw new UsageError(`--${name} needs a value (${spec.arg ?? 'VALUE'})`, command);
      set(spec, v, `--${name}`);
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      // -abc is a run of flags; the first letter that takes a value takes the rest (or the next arg).
      for (let j = 1; j < a.length; j++) {
        const spec = byShort.get(a[j]);
        if (!spec) throw new UsageError(`unknown option -${a[j]}`, command);
        if (!spec.value) {
          set(spec, '', `-${a[j]}`);
          continue;
        }
        let v: string | undefined = a.slice(j + 1);
        if (v === '') v = i + 1 < argv.length ? argv[++i] : undefined;
        if (v === undefined || v === '') throw new UsageError(`-${a[j]} needs a value (${spec.arg ?? 'VALUE'})`, command);
        set(spec, v, `-${a[j]}`);
        break;
      }
      continue;
    }
    positionals.push(a);
  }
  return { positionals, values: found };
}

/** A strictly positive decimal integer, or a UsageError naming `what`. */
export function parsePositiveInt(s: string | undefined, what: string, command?: string): number {
  if (s === undefined) throw new UsageError(`missing ${what}`, command);
  if (!/^[1-9][0-9]{0,9}$/.test(s) || Number(s) > 0x7fffffff) throw new UsageError(`${what} must be a positive integer, not ${JSON.stringify(s)}`, command);
  return Number(s);
}

/** Help lines for a list of options, aligned. */
export function optionHelp(specs: readonly OptionSpec[]): string {
  const left = specs.map((s) => {
    const names = `${s.short ? `-${s.short}, ` : '    '}--${s.long}`;
    return s.value ? `${names} ${s.arg ?? 'VALUE'}` : names;
  });
  const width = Math.max(0, ...left.map((l) => l.length));
  return specs.map((s, i) => `  ${left[i].padEnd(width)}  ${s.help}`).join('\n');
}
