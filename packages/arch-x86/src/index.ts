/**
 * @cptrst/arch-x86: registers, FPU/xstate, debug registers, the syscall instruction and the
 * syscall-restart rule, the syscall table; the Arch (core's contract) and the Tracee through
 * which every subsystem runs syscalls in a task.
 */
import { DependencyContainer } from 'tsyringe';
import { ArchToken, Tokens } from '@cptrst/core';
import { X86_64 } from './arch';
import { RegsDump, RegsRestore } from './regs';
import { XstateDump, XstateRestore, XsaveProbe } from './fpu';
import { DebugRegsDump, DebugRegsRestore } from './debugregs';

export * from './arch';
export * from './syscalls';
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
  c.register(Tokens.TraceeFactory, { useValue: X86_64.tracees });
  for (const h of [new RegsDump(), new XstateDump(), new DebugRegsDump()]) c.register(Tokens.DumpHandler, { useValue: h });
  for (const h of [new RegsRestore(), new XstateRestore(), new DebugRegsRestore()]) c.register(Tokens.RestoreHandler, { useValue: h });
  c.register(Tokens.MachineProbe, { useValue: new XsaveProbe() });
}
