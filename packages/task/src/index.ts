/**
 * @cptrst/task: the process itself: freezing, identity (pid, session, group, comm, personality),
 * credentials, control groups, resource limits, affinity and other per-process settings, signals, interval and POSIX timers, the SysV semaphore sets and message queues the tree uses; and making processes with their PIDs at restart.
 */
import { DependencyContainer } from 'tsyringe';
import { Tokens, provide } from '@cptrst/core';
import { PtraceFreezer } from './freezer';
import { CloneProcessCreator } from './create';
import { TaskDump, TaskRestore } from './identity';
import { CredsDump, CredsFinal, CredsRestore } from './creds';
import { MiscDump, MiscRestore } from './misc';
import { CgroupDump, CgroupRestore } from './cgroup';
import { RlimitsDump, RlimitsRestore } from './rlimits';
import { SignalsDump, SignalsRestore } from './signals';
import { PosixTimersDump, PosixTimersRestore } from './posix-timers';
import { TaskProbe } from './probe';
import { ThreadDump, ThreadRestore } from './thread';
import { SeccompDump, SeccompRestore } from './seccomp';
import { TreeDump } from './tree';
import { SysvSemDump, SysvSemRestore } from './sysv-sem';
import { SysvMsgDump, SysvMsgRestore } from './sysv-msg';
import { CttyDump, CttyForeground, CttyRestore } from './ctty';

export * from './freezer';
export * from './create';
export * from './identity';
export * from './creds';
export * from './misc';
export * from './cgroup';
export * from './deferred';
export * from './rlimits';
export * from './signals';
export * from './posix-timers';
export * from './thread';
export * from './seccomp';
export * from './tree';
export * from './sysv-sem';
export * from './sysv-msg';
export * from './ctty';

export function register(c: DependencyContainer): void {
  provide(c, Tokens.Freezer, new PtraceFreezer());
  provide(c, Tokens.ProcessCreator, new CloneProcessCreator());
  for (const h of [new TaskDump(), new CredsDump(), new MiscDump(), new CgroupDump(), new RlimitsDump(), new PosixTimersDump(), new SignalsDump(), new ThreadDump(), new SeccompDump(), new TreeDump(), new SysvSemDump(), new SysvMsgDump(), new CttyDump()]) provide(c, Tokens.DumpHandler, h);
  for (const h of [new TaskRestore(), new CredsRestore(), new MiscRestore(), new CgroupRestore(), new RlimitsRestore(), new SignalsRestore(), new PosixTimersRestore(), new CredsFinal(), new ThreadRestore(), new SeccompRestore(), new SysvSemRestore(), new SysvMsgRestore(), new CttyRestore(), new CttyForeground()]) provide(c, Tokens.RestoreHandler, h);
  provide(c, Tokens.MachineProbe, new TaskProbe());
}
