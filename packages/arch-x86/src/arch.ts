/**
 * The x86-64 Arch: every fact of the instruction set and ABI that core and the subsystems need,
 * behind core's Arch contract (core/src/arch.ts).
 */
import { Arch, ArchRegs, RestartTarget } from '@cptrst/core';
import { USER_REGS_SIZE, asUserRegs, decodeUserRegs, encodeUserRegs } from './regs-codec';
import { XSAVE_SW_RESERVED_OFFSET, decodeXsaveHeader } from './xsave';
import { X86_64_SYSCALL_TABLE } from './syscalls';
import { resumeRegs, syscallState } from './syscall-restart';
import { X86TraceeFactory } from './tracee';

/** Highest user address for mappings on x86-64 with 4-level paging (TASK_SIZE_MAX). */
export const X86_64_USER_TOP = 0x7ffffffff000n;

export const X86_64: Arch = Object.freeze({
  name: 'x86_64',
  pageSize: 4096,
  userSpaceTop: X86_64_USER_TOP,
  syscalls: X86_64_SYSCALL_TABLE,
  regs: Object.freeze({
    size: USER_REGS_SIZE,
    decode: (buf: Buffer): ArchRegs => decodeUserRegs(buf),
    encode: (regs: ArchRegs): Buffer => encodeUserRegs(asUserRegs(regs)),
  }),
  xsave: Object.freeze({
    features: (area: Buffer): bigint => (area.length >= XSAVE_SW_RESERVED_OFFSET + 8 ? area.readBigUInt64LE(XSAVE_SW_RESERVED_OFFSET) : 0n),
    header: (area: Buffer) => decodeXsaveHeader(area),
  }),
  tracees: new X86TraceeFactory(),
  resumeRegs: (regs: ArchRegs, target: RestartTarget): ArchRegs => resumeRegs(asUserRegs(regs), target),
  syscallState: (regs: ArchRegs) => syscallState(asUserRegs(regs)),
});
