/**
 * x86-64 register layouts: struct user_regs_struct (PTRACE_GETREGS, NT_PRSTATUS), the offsets
 * in struct user that PEEKUSER/POKEUSER take (registers, u_debugreg), the FXSAVE image, and the
 * ptrace requests that move them. Sizes and offsets are those of arch/x86/include/asm/user_64.h.
 */
import { ArchRegs, CptError, linux } from '@cptrst/core';
import { NT_X86, PTRACE_X86 } from './linux-x86';

/** An x86-only request, named in its failure's message as core names its own. */
function x86Request(name: keyof typeof PTRACE_X86, tid: number, data: Buffer): void {
  linux.ptrace.request(PTRACE_X86[name], tid, 0, data, `PTRACE_${name}`);
}

function need(buf: Buffer, size: number, what: string): void {
  if (buf.length < size) throw new CptError('EINVAL', `${what}: need ${size} bytes, got ${buf.length}`);
}

/** Field names of struct user_regs_struct in kernel order (27 x u64 = 216 bytes). */
export const USER_REGS_FIELDS = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
export type UserRegsField = (typeof USER_REGS_FIELDS)[number];
/** x86-64 general registers as PTRACE_GETREGS / NT_PRSTATUS report them; all unsigned 64-bit. */
export type UserRegs = Record<UserRegsField, bigint>;
export const USER_REGS_SIZE = 216;

/** Byte offset of a register inside struct user / user_regs_struct (for PEEKUSER/POKEUSER). */
export function userRegOffset(field: UserRegsField): number {
  return USER_REGS_FIELDS.indexOf(field) * 8;
}

// Through a DataView: its BigInt accessors are engine built-ins, fast from the first call, where
// Buffer's run as JavaScript that is still cold in the frozen window of a checkpoint.
export function decodeUserRegs(buf: Buffer): UserRegs {
  need(buf, USER_REGS_SIZE, 'user_regs_struct');
  const view = new DataView(buf.buffer, buf.byteOffset, USER_REGS_SIZE);
  const r = {} as UserRegs;
  for (let i = 0; i < USER_REGS_FIELDS.length; i++) r[USER_REGS_FIELDS[i]] = view.getBigUint64(i * 8, true);
  return r;
}

export function encodeUserRegs(regs: UserRegs, out: Buffer = Buffer.alloc(USER_REGS_SIZE)): Buffer {
  need(out, USER_REGS_SIZE, 'user_regs_struct');
  const view = new DataView(out.buffer, out.byteOffset, USER_REGS_SIZE);
  USER_REGS_FIELDS.forEach((f, i) => {
    const v = regs[f];
    if (typeof v !== 'bigint') throw new CptError('EINVAL', `user_regs_struct: field ${f} is not a bigint`);
    view.setBigUint64(i * 8, v, true); // wraps to 64 bits, as BigInt.asUintN(64, v)
  });
  return out;
}

/** Registers handed in through the contract are this arch's own: every field must be there. */
export function asUserRegs(regs: ArchRegs): UserRegs {
  for (const f of USER_REGS_FIELDS) {
    if (typeof regs[f] !== 'bigint') throw new CptError('EINVAL', `x86-64 registers without ${f}`, { object: 'regs' });
  }
  return regs as UserRegs;
}

// struct user (x86-64): regs(216) u_fpvalid(4)+pad(4) i387(512) u_tsize u_dsize u_ssize
// start_code start_stack signal(8) reserved(4)+pad(4) u_ar0 u_fpstate magic u_comm[32] u_debugreg[8]

/** Offset of u_debugreg[0] in struct user on x86-64. */
export const USER_DEBUGREG_OFFSET = 848;
/** Offset of debug register DRi (0..7; 4 and 5 are aliases the kernel rejects) for PEEKUSER/POKEUSER. */
export function debugRegOffset(i: number): number {
  if (!Number.isInteger(i) || i < 0 || i > 7) throw new CptError('EINVAL', `debug register index ${i} out of range 0..7`);
  return USER_DEBUGREG_OFFSET + i * 8;
}
/** Size of struct user_fpregs_struct (the FXSAVE image, PTRACE_GETFPREGS / NT_PRFPREG). */
export const USER_FPREGS_SIZE = 512;

/** core's ptrace requests plus the x86 ones that move register structs and the XSAVE area. */
export const x86ptrace = Object.freeze({
  ...linux.ptrace,
  /** PTRACE_GETREGS. */
  getRegs(tid: number): UserRegs {
    const b = Buffer.alloc(USER_REGS_SIZE);
    x86Request('GETREGS', tid, b);
    return decodeUserRegs(b);
  },
  /** PTRACE_SETREGS. */
  setRegs(tid: number, regs: UserRegs): void {
    x86Request('SETREGS', tid, encodeUserRegs(regs));
  },
  /** PTRACE_GETREGS into `buf` (struct user_regs_struct as the kernel lays it out), nothing decoded. */
  getRegsRaw(tid: number, buf: Buffer): void {
    need(buf, USER_REGS_SIZE, 'user_regs_struct');
    x86Request('GETREGS', tid, buf);
  },
  /** PTRACE_SETREGS from `buf` as it is. */
  setRegsRaw(tid: number, buf: Buffer): void {
    need(buf, USER_REGS_SIZE, 'user_regs_struct');
    x86Request('SETREGS', tid, buf);
  },
  /** PTRACE_GETFPREGS: the 512-byte FXSAVE image (struct user_fpregs_struct). */
  getFpRegs(tid: number): Buffer {
    const b = Buffer.alloc(USER_FPREGS_SIZE);
    x86Request('GETFPREGS', tid, b);
    return b;
  },
  /** PTRACE_SETFPREGS. */
  setFpRegs(tid: number, buf: Buffer): void {
    if (buf.length < USER_FPREGS_SIZE) throw new CptError('EINVAL', `ptrace(PTRACE_SETFPREGS, ${tid}): buffer of ${buf.length} bytes < 512`, { pid: tid });
    x86Request('SETFPREGS', tid, buf);
  },
  /** PTRACE_GETREGSET(NT_X86_XSTATE): the XSAVE area (standard format), in a buffer of `maxSize` bytes. */
  getXstate(tid: number, maxSize: number): Buffer {
    return linux.ptrace.getRegset(tid, NT_X86.XSTATE, maxSize, 'NT_X86_XSTATE');
  },
  /** PTRACE_SETREGSET(NT_X86_XSTATE); returns how many bytes the kernel consumed. */
  setXstate(tid: number, area: Buffer): number {
    return linux.ptrace.setRegset(tid, NT_X86.XSTATE, area, 'NT_X86_XSTATE');
  },
});
