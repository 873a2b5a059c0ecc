/**
 * The x86-64 signal frame that rt_sigreturn reads (struct rt_sigframe: pretcode, struct ucontext,
 * siginfo; the XSAVE area that sigcontext.fpstate points to follows it). cptrst builds one in the
 * task before it borrows the thread: every injected system call returns into code that runs
 * rt_sigreturn on it, so a task whose tracer vanishes mid-way puts back its own frozen registers,
 * signal mask and FPU state by itself and carries on.
 */
import { CptError, cfield, cstruct, decodeStruct, encodeStruct, linux, offsetOfField, sizeOfStruct } from '@cptrst/core';
import { UserRegs } from './regs-codec';
import { FP_XSTATE_MAGIC1, XSAVE_HEADER_OFFSET, XSAVE_SW_RESERVED_OFFSET, decodeXsaveHeader } from './xsave';

export { FP_XSTATE_MAGIC1 };


/** struct sigcontext (x86-64), 256 bytes: the general registers first, all u64. */
@cstruct('sigcontext')
class Sigcontext {
  @cfield.u64() r8 = 0n;
  @cfield.u64() r9 = 0n;
  @cfield.u64() r10 = 0n;
  @cfield.u64() r11 = 0n;
  @cfield.u64() r12 = 0n;
  @cfield.u64() r13 = 0n;
  @cfield.u64() r14 = 0n;
  @cfield.u64() r15 = 0n;
  @cfield.u64() rdi = 0n;
  @cfield.u64() rsi = 0n;
  @cfield.u64() rbp = 0n;
  @cfield.u64() rbx = 0n;
  @cfield.u64() rdx = 0n;
  @cfield.u64() rax = 0n;
  @cfield.u64() rcx = 0n;
  @cfield.u64() rsp = 0n;
  @cfield.u64() rip = 0n;
  @cfield.u64() eflags = 0n;
  @cfield.u16() cs = 0;
  @cfield.u16() gs = 0;
  @cfield.u16() fs = 0;
  @cfield.u16() ss = 0;
  @cfield.u64() err = 0n;
  @cfield.u64() trapno = 0n;
  @cfield.u64() oldmask = 0n;
  @cfield.u64() cr2 = 0n;
  /** Address of the XSAVE area. */
  @cfield.u64() fpstate = 0n;
  @cfield.bytes(64) reserved1: Buffer = Buffer.alloc(64);
}

/** The general registers sigcontext holds, under the names user_regs_struct gives them. */
type SigcontextReg = Exclude<keyof Sigcontext, 'cs' | 'gs' | 'fs' | 'ss' | 'err' | 'trapno' | 'oldmask' | 'cr2' | 'fpstate' | 'reserved1'>;
const SIGCONTEXT_REGS: readonly SigcontextReg[] = [
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rdi', 'rsi', 'rbp', 'rbx', 'rdx', 'rax', 'rcx', 'rsp', 'rip', 'eflags',
];

/** struct ucontext (x86-64): the kernel's sigset_t is 8 bytes. */
@cstruct('ucontext')
class Ucontext {
  @cfield.u64() flags = 0n;
  @cfield.u64() link = 0n;
  @cfield.struct(linux.StackT) stack = new linux.StackT();
  @cfield.struct(Sigcontext) mcontext = new Sigcontext();
  @cfield.u64() sigmask = 0n;
}

/** struct rt_sigframe on x86-64: pretcode, struct ucontext, siginfo. */
@cstruct('rt_sigframe')
class RtSigframe {
  @cfield.u64() pretcode = 0n;
  @cfield.struct(Ucontext) uc = new Ucontext();
  @cfield.struct(linux.Siginfo) info = new linux.Siginfo();
}

/** struct _fpx_sw_bytes, in the FXSAVE area's software-reserved bytes 464..511. */
@cstruct('_fpx_sw_bytes')
class FpxSwBytes {
  @cfield.u32() magic1 = 0;
  @cfield.u32() extendedSize = 0;
  @cfield.u64() xfeatures = 0n;
  @cfield.u32() xstateSize = 0;
  @cfield.bytes(28) padding: Buffer = Buffer.alloc(28);
}

const UC_AT = offsetOfField(RtSigframe, 'uc');
/** Offsets in struct rt_sigframe (440 bytes). */
export const RT_SIGFRAME = {
  size: sizeOfStruct(RtSigframe),
  pretcode: offsetOfField(RtSigframe, 'pretcode'),
  ucFlags: UC_AT + offsetOfField(Ucontext, 'flags'),
  ucLink: UC_AT + offsetOfField(Ucontext, 'link'),
  ucStack: UC_AT + offsetOfField(Ucontext, 'stack'),
  ucMcontext: UC_AT + offsetOfField(Ucontext, 'mcontext'),
  ucSigmask: UC_AT + offsetOfField(Ucontext, 'sigmask'),
  siginfo: offsetOfField(RtSigframe, 'info'),
} as const;

/** Offsets in struct sigcontext of its fields beyond the general registers. */
export const SIGCONTEXT = {
  cs: offsetOfField(Sigcontext, 'cs'), gs: offsetOfField(Sigcontext, 'gs'), fs: offsetOfField(Sigcontext, 'fs'), ss: offsetOfField(Sigcontext, 'ss'),
  err: offsetOfField(Sigcontext, 'err'), trapno: offsetOfField(Sigcontext, 'trapno'), oldmask: offsetOfField(Sigcontext, 'oldmask'),
  cr2: offsetOfField(Sigcontext, 'cr2'), fpstate: offsetOfField(Sigcontext, 'fpstate'), size: sizeOfStruct(Sigcontext),
} as const;

/** ucontext.uc_flags bits (asm/ucontext.h). */
export const UC = {
  /** fpstate points to an XSAVE area with _fpx_sw_bytes and FP_XSTATE_MAGIC2, not a bare FXSAVE one. */
  FP_XSTATE: 0x1,
  /** sigcontext.ss is meaningful. */
  SIGCONTEXT_SS: 0x2,
  /** Put back sigcontext.ss as it is instead of repairing it. */
  STRICT_RESTORE_SS: 0x4,
} as const;

/** Where _fpx_sw_bytes sits in the XSAVE area. */
const FPX_SW_OFFSET = XSAVE_SW_RESERVED_OFFSET;
/** The u32 that follows the XSAVE area of a signal frame (at fpstate + xstate_size). */
export const FP_XSTATE_MAGIC2 = 0x46505845;
const FP_XSTATE_MAGIC2_SIZE = 4;
/** The XSAVE area must be 64-byte aligned. */
const FPSTATE_ALIGN = 64;

/**
 * uc_stack.ss_flags for "leave the alternate signal stack alone". rt_sigreturn hands uc_stack to
 * sigaltstack() and ignores every error but EFAULT; a mode that is neither 0, SS_ONSTACK nor
 * SS_DISABLE fails with EINVAL before anything is changed. So the task keeps whatever sigaltstack
 * it has, without cptrst having to read it first (which would itself take an unguarded call).
 */
export const SS_FLAGS_KEEP = 0x4;

/** Bytes the frame takes at its address: the frame, then the 64-byte aligned XSAVE area and MAGIC2. */
export function sigframeBytes(xsaveSize: number): number {
  return fpstateOffset() + xsaveSize + FP_XSTATE_MAGIC2_SIZE;
}

function fpstateOffset(): number {
  return Math.ceil(RT_SIGFRAME.size / FPSTATE_ALIGN) * FPSTATE_ALIGN;
}

export interface SigframeSpec {
  /** Where the frame goes in the task (64-byte aligned). rt_sigreturn must run with rsp = at + 8. */
  at: bigint;
  /** The registers to resume with: already in their resume form (syscall-restart rule applied). */
  regs: UserRegs;
  /** The blocked mask the task gets back. */
  sigmask: bigint;
  /** The task's XSAVE area as PTRACE_GETREGSET(NT_X86_XSTATE) gives it (standard format). */
  xsave: Buffer;
  /** What `ret` pops when the frame is reached by a return (a `mov $15,%eax; syscall` sequence), or 0. */
  pretcode?: bigint;
}

/** The bytes of a signal frame at `spec.at` that rt_sigreturn turns back into `spec.regs`, mask and FPU state. */
export function buildSigframe(spec: SigframeSpec): Buffer {
  if (spec.at % BigInt(FPSTATE_ALIGN) !== 0n) throw new CptError('EINVAL', `signal frame address 0x${spec.at.toString(16)} is not 64-byte aligned`);
  const xs = spec.xsave.length;
  if (xs < XSAVE_HEADER_OFFSET + 64) throw new CptError('EINVAL', `XSAVE area of ${xs} bytes is too small for a signal frame`);
  const b = Buffer.alloc(sigframeBytes(xs));
  const fp = fpstateOffset();
  const mcontext: Partial<Record<SigcontextReg, bigint>> = {};
  for (const field of SIGCONTEXT_REGS) mcontext[field] = spec.regs[field];
  encodeStruct(RtSigframe, {
    pretcode: spec.pretcode ?? 0n,
    uc: {
      flags: BigInt(UC.FP_XSTATE | UC.SIGCONTEXT_SS | UC.STRICT_RESTORE_SS),
      link: 0n,
      stack: { flags: SS_FLAGS_KEEP },
      mcontext: {
        ...mcontext,
        cs: Number(spec.regs.cs & 0xffffn),
        ss: Number(spec.regs.ss & 0xffffn),
        oldmask: spec.sigmask,
        fpstate: spec.at + BigInt(fp),
      },
      sigmask: spec.sigmask,
    },
  }, b, 0);

  spec.xsave.copy(b, fp);
  // The features the area describes: ptrace puts the user XCR0 in the first 8 software-reserved
  // bytes; from a kernel that left them empty, the components the area holds.
  let features = spec.xsave.readBigUInt64LE(XSAVE_SW_RESERVED_OFFSET);
  if (features === 0n) features = decodeXsaveHeader(spec.xsave).xstateBv | 3n;
  const size = frameXstateSize(spec.xsave, features);
  if (size < xs) features &= ~XFEATURE_XTILE_DATA;
  // The padding keeps what the kernel put there.
  encodeStruct(FpxSwBytes, { magic1: FP_XSTATE_MAGIC1, extendedSize: size + FP_XSTATE_MAGIC2_SIZE, xfeatures: features, xstateSize: size }, b, fp + FPX_SW_OFFSET);
  b.writeUInt32LE(FP_XSTATE_MAGIC2, fp + size);
  return b;
}

/** AMX tile data: the one user component the kernel enables per process (XFD), 8 tiles of 1 KiB, last in the area. */
const XFEATURE_XTILE_DATA = 1n << 18n;
const XTILE_DATA_BYTES = 8192;

/**
 * The XSAVE area size the frame declares. rt_sigreturn restores the extended state only if that
 * size is at most the task's own (its fpstate's user size), else it falls back to x87/SSE alone and
 * the AVX and AVX-512 registers are lost. ptrace gives an area sized for every user feature, AMX
 * tile data included, but a task that has not used AMX has the smaller default fpstate: for it the
 * area is declared without the tile data, which is its last component.
 */
function frameXstateSize(xsave: Buffer, features: bigint): number {
  const xs = xsave.length;
  if (!(features & XFEATURE_XTILE_DATA) || decodeXsaveHeader(xsave).xstateBv & XFEATURE_XTILE_DATA) return xs;
  const without = xs - XTILE_DATA_BYTES;
  return without >= XSAVE_HEADER_OFFSET + 64 ? without : xs;
}

/** The registers a frame built by buildSigframe holds (for tests and debugging). */
export function sigframeRegs(frame: Buffer): Partial<UserRegs> {
  const mc = decodeStruct(RtSigframe, frame).uc.mcontext;
  const out: Partial<UserRegs> = {};
  for (const field of SIGCONTEXT_REGS) out[field] = mc[field];
  return out;
}
