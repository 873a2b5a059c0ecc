/**
 * Run-time module loading: the operations come from a module, so that one can stand in for
 * another without a change to core. Core works with no module loaded and
 * then answers ENOSYS. A module is a package (or a path) whose main export has
 * `register(container)`: the operations provider binds Tokens.CptOperations, and any module may
 * add handlers (multi-registration) for new kinds of objects.
 */
import 'reflect-metadata';
import { container as rootContainer, DependencyContainer } from 'tsyringe';
import { CptError } from './errors';

export interface CptModule {
  /** Registers the module's operations and handlers. */
  register(container: DependencyContainer): void;
}

interface Loaded {
  readonly name: string;
  readonly module: CptModule;
}

const loaded: Loaded[] = [];
let current: DependencyContainer | undefined;

/** Modules built into the running program (the CLI's single-file bundle), by package name. */
const builtIn = new Map<string, () => unknown>();

/**
 * Says that the module `name` is part of the running program: loadModule(name) takes it from
 * `load` instead of resolving the package on disk, which would load a second copy of it (and of
 * core, with its own registries) next to the bundled one.
 */
export function provideBuiltInModule(name: string, load: () => unknown): void {
  builtIn.set(name, load);
}

/** Loads a module by package name or path. Loading the same one twice is a no-op. */
export function loadModule(nameOrPath: string, from: string = process.cwd()): void {
  if (loaded.some((l) => l.name === nameOrPath)) return;
  let mod: unknown;
  const own = builtIn.get(nameOrPath);
  if (own) {
    mod = own();
  } else {
    try {
      const resolved = require.resolve(nameOrPath, { paths: [from, __dirname] });
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- the module is named at run time
      mod = require(resolved);
    } catch (e) {
      throw new CptError('ENOENT', `cannot load module ${nameOrPath}: ${(e as Error).message.split('\n')[0]}`, { object: nameOrPath });
    }
  }
  const m = (mod as { default?: unknown }).default ?? mod;
  if (typeof (m as CptModule).register !== 'function') {
    throw new CptError('ENOEXEC', `${nameOrPath} is not a cptrst module: it exports no register(container)`, { object: nameOrPath });
  }
  registerModule(nameOrPath, m as CptModule);
}

/** Registers an already imported module object under a name (what loadModule does after require). */
export function registerModule(name: string, module: CptModule): void {
  if (loaded.some((l) => l.name === name)) return;
  const c = current ?? rootContainer.createChildContainer();
  module.register(c);
  current = c;
  loaded.push({ name, module });
}

/** Unloads a module: the container is rebuilt from the modules that stay. */
export function unloadModule(name: string): void {
  const i = loaded.findIndex((l) => l.name === name);
  if (i < 0) throw new CptError('ENOENT', `module ${name} is not loaded`, { object: name });
  loaded.splice(i, 1);
  const c = rootContainer.createChildContainer();
  for (const l of loaded) l.module.register(c);
  current = loaded.length ? c : undefined;
}

export function loadedModules(): string[] {
  return loaded.map((l) => l.name);
}

/** The container of the loaded modules, or undefined when none is loaded. */
export function moduleContainer(): DependencyContainer | undefined {
  return current;
}
