/**
 * @cptrst/task: the process itself: freezing, identity (pid, session, group, comm, personality),
 * credentials, resource limits, signals and timers; and making processes with their PIDs at restart.
 */
import { DependencyContainer } from 'tsyringe';
import { Tokens } from '@cptrst/core';
import { PtraceFreezer } from './freezer';
import { CloneProcessCreator } from './create';
import { TaskDump, TaskRestore } from './identity';
import { CredsDump, CredsRestore } from './creds';
import { RlimitsDump, RlimitsRestore } from './rlimits';
import { SignalsDump, SignalsRestore } from './signals';
import { TaskProbe } from './probe';

export * from './freezer';
export * from './create';
export * from './identity';
export * from './creds';
export * from './rlimits';
export * from './signals';

export function register(c: DependencyContainer): void {
  c.register(Tokens.Freezer, { useValue: new PtraceFreezer() });
  c.register(Tokens.ProcessCreator, { useValue: new CloneProcessCreator() });
  for (const h of [new TaskDump(), new RlimitsDump(), new SignalsDump(), new CredsDump()]) c.register(Tokens.DumpHandler, { useValue: h });
  for (const h of [new TaskRestore(), new RlimitsRestore(), new SignalsRestore(), new CredsRestore()]) c.register(Tokens.RestoreHandler, { useValue: h });
  c.register(Tokens.MachineProbe, { useValue: new TaskProbe() });
}
