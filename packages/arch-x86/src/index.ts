/**
 * @cptrst/arch-x86: registers, FPU/xstate, debug registers, the syscall instruction and the
 * syscall-restart rule; and the Tracee through which every subsystem runs syscalls in a task.
 */
import { DependencyContainer } from 'tsyringe';
import { Tokens, provide } from '@cptrst/core';
import { RegsDump, RegsRestore } from './regs';
import { XstateDump, XstateRestore, XsaveProbe } from './fpu';
import { DebugRegsDump, DebugRegsRestore } from './debugregs';
import { X86TraceeFactory } from './tracee';

export * from './tracee';
export * from './regs';
export * from './fpu';
export * from './debugregs';
export * from './sigframe';
export * from './syscall-restart';

export function register(c: DependencyContainer): void {
  provide(c, Tokens.TraceeFactory, new X86TraceeFactory());
  for (const h of [new RegsDump(), new XstateDump(), new DebugRegsDump()]) provide(c, Tokens.DumpHandler, h);
  for (const h of [new RegsRestore(), new XstateRestore(), new DebugRegsRestore()]) provide(c, Tokens.RestoreHandler, h);
  provide(c, Tokens.MachineProbe, new XsaveProbe());
}
