/**
 * @cptrst/mm: the address space: areas (one kind handler each), pages, the vDSO, the mm fields.
 */
import { DependencyContainer } from 'tsyringe';
import { Tokens } from '@cptrst/core';
import { MmDump, MmRestore } from './mm';
import { AnonVma, SharedAnonVma } from './anon';
import { FileVma } from './file';
import { VdsoProbe, VdsoVma } from './vdso';

export * from './vma';
export * from './pages';
export * from './vdso';
export * from './mm';
export * from './anon';
export * from './file';

export function register(c: DependencyContainer): void {
  for (const k of [new VdsoVma(), new AnonVma(), new SharedAnonVma(), new FileVma()]) c.register(Tokens.VmaKind, { useValue: k });
  c.register(Tokens.DumpHandler, { useValue: new MmDump() });
  c.register(Tokens.RestoreHandler, { useValue: new MmRestore() });
  c.register(Tokens.MachineProbe, { useValue: new VdsoProbe() });
}
