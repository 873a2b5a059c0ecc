/**
 * @cptrst/cpt-module: the cpt_operations provider. Loading it (core's loadModule) binds the
 * checkpoint and restart flows and registers the subsystems' handlers: task, mm, arch-x86, files.
 */
import 'reflect-metadata';
import { DependencyContainer } from 'tsyringe';
import { CptOperations, OperationOptions, Tokens, provide } from '@cptrst/core';
import * as task from '@cptrst/task';
import * as mm from '@cptrst/mm';
import * as arch from '@cptrst/arch-x86';
import * as files from '@cptrst/files';
import { checkpoint } from './checkpoint';
import { restart } from './restart';

export { checkpoint, restart };
export { TOOL_VERSION } from './version';

export function register(c: DependencyContainer): void {
  const ops: CptOperations = {
    checkpoint: (pid: number, fd: number, flags: number, o?: OperationOptions) => checkpoint(c, pid, fd, flags, o),
    restart: (ctid: number, fd: number, flags: number, o?: OperationOptions) => restart(c, ctid, fd, flags, o),
  };
  provide(c, Tokens.CptOperations, ops);
  for (const s of [task, mm, arch, files]) s.register(c);
}
