/**
 * @cptrst/task: the process itself: freezing, identity (pid, session, group, comm, personality),
 * credentials, resource limits, affinity and other per-process settings, signals and timers; and making processes with their PIDs at restart.
 */
import { DependencyContainer } from 'tsyringe';
import { Tokens, provide } from '@cptrst/core';
import { PtraceFreezer } from './freezer';
import { CloneProcessCreator } from './create';
import { TaskDump, TaskRestore } from './identity';
import { CredsDump, CredsFinal, CredsRestore } from './creds';
import { MiscDump, MiscRestore } from './misc';
import { RlimitsDump, RlimitsRestore } from './rlimits';
import { SignalsDump, SignalsRestore } from './signals';
import { TaskProbe } from './probe';
import { TreeDump } from './tree';

export * from './freezer';
export * from './create';
export * from './identity';
export * from './creds';
export * from './misc';
export * from './deferred';
export * from './rlimits';
export * from './signals';
export * from './tree';

export function register(c: DependencyContainer): void {
  provide(c, Tokens.Freezer, new PtraceFreezer());
  provide(c, Tokens.ProcessCreator, new CloneProcessCreator());
  for (const h of [new TaskDump(), new CredsDump(), new MiscDump(), new RlimitsDump(), new SignalsDump(), new TreeDump()]) provide(c, Tokens.DumpHandler, h);
  for (const h of [new TaskRestore(), new CredsRestore(), new MiscRestore(), new RlimitsRestore(), new SignalsRestore(), new CredsFinal()]) provide(c, Tokens.RestoreHandler, h);
  provide(c, Tokens.MachineProbe, new TaskProbe());
}
