/**
 * The entry point of the single-file CLI, dist/src/cptrst.js, that scripts/bundle.js makes with
 * esbuild from the compiled JavaScript (bin/cptrst.js runs it with V8's code cache). One file
 * instead of some 150 modules: Node resolves, reads and compiles one script at start-up.
 *
 * Plugins (`--module`) are separate packages that require @cptrst/core, @cptrst/files, ... by
 * name: they get the bundle's copies, not a second copy from node_modules with registries
 * (object types, layouts, modules) of its own. The default module is taken from the bundle too.
 */
import Module from 'module';
import { core, whenCoreLoaded } from './core';

/* eslint-disable @typescript-eslint/no-require-imports -- loaded on first use, each from the bundle */
const SHARED: Record<string, () => unknown> = {
  '@cptrst/core': (): unknown => core(),
  '@cptrst/cpt-module': (): unknown => (core(), require('@cptrst/cpt-module') as unknown),
  '@cptrst/task': (): unknown => (core(), require('@cptrst/task') as unknown),
  '@cptrst/mm': (): unknown => (core(), require('@cptrst/mm') as unknown),
  '@cptrst/arch-x86': (): unknown => (core(), require('@cptrst/arch-x86') as unknown),
  '@cptrst/files': (): unknown => (core(), require('@cptrst/files') as unknown),
  tsyringe: (): unknown => require('tsyringe') as unknown,
  'reflect-metadata': (): unknown => require('reflect-metadata') as unknown,
};
/* eslint-enable @typescript-eslint/no-require-imports */

type Load = (this: unknown, request: string, parent: unknown, isMain: boolean) => unknown;
const loader = Module as unknown as { _load: Load };
const load = loader._load;
loader._load = function (request, parent, isMain) {
  const own = Object.prototype.hasOwnProperty.call(SHARED, request) ? SHARED[request] : undefined;
  return own ? own() : load.call(this, request, parent, isMain);
};
// Core is loaded by the first command that needs it (cli/src/core.ts), not by --version or --help.
whenCoreLoaded((c) => c.provideBuiltInModule('@cptrst/cpt-module', SHARED['@cptrst/cpt-module']));

export { run } from './main';

/** Runs the top level of every part of the program once: scripts/bundle.js then saves V8's code cache. */
export function warm(): void {
  for (const name of Object.keys(SHARED)) SHARED[name]();
}
