/**
 * x86-64 general registers in the form core's contract carries them (ArchRegs).
 */
import { ArchRegs, CptError, linux } from '@cptrst/core';

type UserRegs = linux.UserRegs;

/** Registers handed in through the contract are this arch's own: every field must be there. */
export function asUserRegs(regs: ArchRegs): UserRegs {
  for (const f of linux.USER_REGS_FIELDS) {
    if (typeof regs[f] !== 'bigint') throw new CptError('EINVAL', `x86-64 registers without ${f}`, { object: 'regs' });
  }
  return regs as UserRegs;
}
