/**
 * @cptrst/mm: the address space: areas (one kind handler each), pages, the vDSO, the mm fields.
 */
import { DependencyContainer } from 'tsyringe';
import { Tokens, provide } from '@cptrst/core';
import { MmDump, MmRestore } from './mm';
import { AnonVma, SharedAnonVma } from './anon';
import { FileVma } from './file';
import { SysvShmVma } from './sysv-shm';
import { AioRingVma } from './aio';
import { MemfdVma } from './memfd';
import { ShmemFileVma } from './shmem-file';
import { DeletedFileVma } from './deleted-file';
import { VdsoProbe, VdsoVma } from './vdso';
import { VmaKinds } from './vma';
import { LazyRestore } from './lazy';
import { GuardsRestore } from './guard';

export * from './vma';
export * from './pages';
export * from './vdso';
export * from './mm';
export * from './anon';
export * from './file';
export * from './sysv-shm';
export * from './memfd';
export * from './shmem-file';
export * from './deleted-file';
export * from './guard';

export function register(c: DependencyContainer): void {
  for (const k of [new VdsoVma(), new AnonVma(), new SharedAnonVma(), new FileVma(), new SysvShmVma(), new MemfdVma(), new ShmemFileVma(), new DeletedFileVma(), new AioRingVma()]) provide(c, VmaKinds, k);
  provide(c, Tokens.DumpHandler, new MmDump());
  provide(c, Tokens.RestoreHandler, new MmRestore());
  provide(c, Tokens.RestoreHandler, new LazyRestore());
  provide(c, Tokens.RestoreHandler, new GuardsRestore());
  provide(c, Tokens.MachineProbe, new VdsoProbe());
}
export * from './incremental';
