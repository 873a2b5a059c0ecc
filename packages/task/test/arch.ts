/**
 * The TraceeFactory the freezer and the process creator resolve comes from @cptrst/arch-x86 (the
 * only implementation of "run this syscall in that task"). It is not a dependency of this
 * package, so it is loaded at run time: build it first (npx tsc -b packages/arch-x86).
 */
import { DependencyContainer } from 'tsyringe';

export function registerArch(c: DependencyContainer): void {
  let mod: { register(c: DependencyContainer): void };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require('@cptrst/arch-x86');
  } catch (e) {
    throw new Error(`the task tests need @cptrst/arch-x86, built (npx tsc -b packages/arch-x86): ${(e as Error).message.split('\n')[0]}`);
  }
  mod.register(c);
}
