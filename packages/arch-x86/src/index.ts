/**
 * @cptrst/arch-x86: registers, FPU/xstate, debug registers, the syscall instruction and the
 * syscall-restart rule, the syscall table; the Arch (core's contract) and the Tracee through
 * which every subsystem runs syscalls in a task.
 */
import { DependencyContainer } from 'tsyringe';
import { ArchToken, Tokens, provide } from '@cptrst/core';
import { X86_64 } from './arch';
import { RegsDump, RegsRestore } from './regs';
import { XstateDump, XstateRestore, XsaveProbe } from './fpu';
import { DebugRegsDump, DebugRegsRestore } from './debugregs';

export * from './arch';
export * from './syscalls';
export * from './linux-x86';
export * from './regs-codec';
export * from './xsave';
export * from './tracee';
export * from './regs';
export * from './fpu';
export * from './debugregs';
export * from './sigframe';
export * from './syscall-restart';

export function register(c: DependencyContainer): void {
  c.register(ArchToken, { useValue: X86_64 });
  provide(c, Tokens.TraceeFactory, X86_64.tracees);
  for (const h of [new RegsDump(), new XstateDump(), new DebugRegsDump()]) provide(c, Tokens.DumpHandler, h);
  for (const h of [new RegsRestore(), new XstateRestore(), new DebugRegsRestore()]) provide(c, Tokens.RestoreHandler, h);
  provide(c, Tokens.MachineProbe, new XsaveProbe());
}
