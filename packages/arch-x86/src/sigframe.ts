/**
 * The x86-64 signal frame that rt_sigreturn reads (struct rt_sigframe: pretcode, struct ucontext,
 * siginfo; the XSAVE area that sigcontext.fpstate points to follows it). cptrst builds one in the
 * task before it borrows the thread: every injected system call returns into code that runs
 * rt_sigreturn on it, so a task whose tracer vanishes mid-way puts back its own frozen registers,
 * signal mask and FPU state by itself and carries on.
 */
import { CptError, linux } from '@cptrst/core';

type UserRegs = linux.UserRegs;

/** struct rt_sigframe on x86-64: pretcode (8), struct ucontext (296), siginfo (128). */
export const RT_SIGFRAME = {
  size: 440,
  pretcode: 0,
  ucFlags: 8,
  ucLink: 16,
  /** stack_t: ss_sp u64, ss_flags i32 + 4 pad, ss_size u64. */
  ucStack: 24,
  /** struct sigcontext, 256 bytes. */
  ucMcontext: 48,
  /** The kernel's sigset_t: 8 bytes on x86-64. */
  ucSigmask: 304,
  siginfo: 312,
} as const;

/** Offsets inside struct sigcontext (x86-64) of the general registers, which are all u64. */
const SIGCONTEXT_REGS: ReadonlyArray<readonly [linux.UserRegsField, number]> = [
  ['r8', 0], ['r9', 8], ['r10', 16], ['r11', 24], ['r12', 32], ['r13', 40], ['r14', 48], ['r15', 56],
  ['rdi', 64], ['rsi', 72], ['rbp', 80], ['rbx', 88], ['rdx', 96], ['rax', 104], ['rcx', 112],
  ['rsp', 120], ['rip', 128], ['eflags', 136],
];
/** Other fields of struct sigcontext: u16 cs gs fs ss, then u64 err trapno oldmask cr2 fpstate, reserved1[8]. */
export const SIGCONTEXT = { cs: 144, gs: 146, fs: 148, ss: 150, err: 152, trapno: 160, oldmask: 168, cr2: 176, fpstate: 184, size: 256 } as const;

/** ucontext.uc_flags bits (asm/ucontext.h). */
export const UC = {
  /** fpstate points to an XSAVE area with _fpx_sw_bytes and FP_XSTATE_MAGIC2, not a bare FXSAVE one. */
  FP_XSTATE: 0x1,
  /** sigcontext.ss is meaningful. */
  SIGCONTEXT_SS: 0x2,
  /** Put back sigcontext.ss as it is instead of repairing it. */
  STRICT_RESTORE_SS: 0x4,
} as const;

/** struct _fpx_sw_bytes, in the FXSAVE area's software-reserved bytes 464..511. */
const FPX_SW_BYTES = { offset: 464, magic1: 0, extendedSize: 4, xfeatures: 8, xstateSize: 16 } as const;
export const FP_XSTATE_MAGIC1 = linux.FP_XSTATE_MAGIC1;
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
  if (xs < linux.XSAVE_HEADER_OFFSET + 64) throw new CptError('EINVAL', `XSAVE area of ${xs} bytes is too small for a signal frame`);
  const b = Buffer.alloc(sigframeBytes(xs));
  const put = (off: number, v: bigint): void => {
    b.writeBigUInt64LE(BigInt.asUintN(64, v), off);
  };
  put(RT_SIGFRAME.pretcode, spec.pretcode ?? 0n);
  put(RT_SIGFRAME.ucFlags, BigInt(UC.FP_XSTATE | UC.SIGCONTEXT_SS | UC.STRICT_RESTORE_SS));
  put(RT_SIGFRAME.ucLink, 0n);
  b.writeInt32LE(SS_FLAGS_KEEP, RT_SIGFRAME.ucStack + 8);
  const mc = RT_SIGFRAME.ucMcontext;
  for (const [field, off] of SIGCONTEXT_REGS) put(mc + off, spec.regs[field]);
  b.writeUInt16LE(Number(spec.regs.cs & 0xffffn), mc + SIGCONTEXT.cs);
  b.writeUInt16LE(Number(spec.regs.ss & 0xffffn), mc + SIGCONTEXT.ss);
  put(mc + SIGCONTEXT.oldmask, spec.sigmask);
  const fp = fpstateOffset();
  put(mc + SIGCONTEXT.fpstate, spec.at + BigInt(fp));
  put(RT_SIGFRAME.ucSigmask, spec.sigmask);

  spec.xsave.copy(b, fp);
  const sw = fp + FPX_SW_BYTES.offset;
  b.writeUInt32LE(FP_XSTATE_MAGIC1, sw + FPX_SW_BYTES.magic1);
  b.writeUInt32LE(xs + FP_XSTATE_MAGIC2_SIZE, sw + FPX_SW_BYTES.extendedSize);
  // The features the area describes: what the kernel put there (the user XCR0), or, from an
  // older kernel that left the bytes empty, the components the area holds.
  let features = spec.xsave.readBigUInt64LE(FPX_SW_BYTES.offset + FPX_SW_BYTES.xfeatures);
  if (features === 0n) features = linux.decodeXsaveHeader(spec.xsave).xstateBv | 3n;
  put(sw + FPX_SW_BYTES.xfeatures, features);
  b.writeUInt32LE(xs, sw + FPX_SW_BYTES.xstateSize);
  b.writeUInt32LE(FP_XSTATE_MAGIC2, fp + xs);
  return b;
}

/** The registers a frame built by buildSigframe holds (for tests and debugging). */
export function sigframeRegs(frame: Buffer): Partial<UserRegs> {
  const out: Partial<UserRegs> = {};
  for (const [field, off] of SIGCONTEXT_REGS) out[field] = frame.readBigUInt64LE(RT_SIGFRAME.ucMcontext + off);
  return out;
}
