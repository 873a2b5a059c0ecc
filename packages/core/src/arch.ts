/**
 * The architecture contract: what core and the subsystems need to know about the machine's
 * instruction set and ABI, provided by an arch package (@cptrst/arch-x86 today). No subsystem
 * holds a fact of this kind itself; it asks the Arch, or reads the image head the Arch filled.
 */
import type { DependencyContainer, InjectionToken } from 'tsyringe';
import type { TraceeFactory } from './contract';
import { CptError } from './errors';
import type { SyscallTable } from './linux/syscalls';

export type { SyscallName, SyscallTable } from './linux/syscalls';

/**
 * A thread's general registers in the arch's own form (x86-64: struct user_regs_struct). Core
 * and the subsystems only carry them from the Tracee to the Arch; what they mean is the arch's.
 */
export type ArchRegs = Readonly<Record<string, bigint>>;

/**
 * Where a task carries on: the process that was checkpointed ('original', its kernel restart
 * state is intact) or the one made at restart ('restored', which has none).
 */
export type RestartTarget = 'original' | 'restored';

/** The general registers as the kernel's regset (NT_PRSTATUS) holds them. */
export interface RegsCodec {
  /** Bytes of the regset. */
  readonly size: number;
  decode(buf: Buffer): ArchRegs;
  encode(regs: ArchRegs): Buffer;
}

/** The extended FPU state as the kernel's XSAVE regset holds it. */
export interface XsaveCodec {
  /** The feature mask the kernel records in the area (0 when it left it empty). */
  features(area: Buffer): bigint;
  /** The area's header: which components hold non-init state, and the compaction mask. */
  header(area: Buffer): { xstateBv: bigint; xcompBv: bigint };
}

export interface Arch {
  /** The name the image head records (`uname -m`), e.g. x86_64. */
  readonly name: string;
  /** The base page size of the architecture (the head records the machine's own). */
  readonly pageSize: number;
  /** The first address above user space (TASK_SIZE_MAX): no mapping is placed at or above it. */
  readonly userSpaceTop: bigint;
  /** System call numbers of this ABI, by name. */
  readonly syscalls: SyscallTable;
  readonly regs: RegsCodec;
  readonly xsave: XsaveCodec;
  /** Makes the Tracee of a ptrace-stopped thread. */
  readonly tracees: TraceeFactory;
  /**
   * The syscall-restart rule: the registers with which a task stopped inside a system call carries
   * on, as if a signal without a handler had interrupted it (the call runs again, or restart_syscall
   * where `target` still has the kernel's restart state, or it fails with EINTR).
   */
  resumeRegs(regs: ArchRegs, target: RestartTarget): ArchRegs;
  /** The system call a task was stopped in (-1 for none) and the kernel-internal restart code it would return (0 for none). */
  syscallState(regs: ArchRegs): { nr: number; restartCode: number };
}

/** The Arch, one, registered by the arch package. */
export const ArchToken: InjectionToken<Arch> = 'cpt.arch';

/** The loaded Arch (a CptError ENOSYS when no arch package is loaded). */
export function archOf(container: DependencyContainer): Arch {
  if (!container.isRegistered(ArchToken, true)) {
    throw new CptError('ENOSYS', 'no arch package is loaded (the module registers none)', { object: 'arch' });
  }
  return container.resolve(ArchToken);
}
