/**
 * @cptrst/core, loaded at its first use. `--version`, `--help` and usage errors need none of it,
 * and its top level (every image layout and kernel structure declared, the Linux bindings) is
 * most of what loading cptrst costs. The CLI's modules take core's types with `import type` and
 * its values from core().
 */
import type * as Core from '@cptrst/core';

let loaded: typeof Core | undefined;
const waiting: Array<(c: typeof Core) => void> = [];

export function core(): typeof Core {
  if (loaded === undefined) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose
    const c = require('@cptrst/core') as typeof Core;
    loaded = c;
    for (const f of waiting.splice(0)) f(c);
  }
  return loaded;
}

/** Runs `f` with core as soon as it is loaded (at once if it already is). */
export function whenCoreLoaded(f: (c: typeof Core) => void): void {
  if (loaded) f(loaded);
  else waiting.push(f);
}
