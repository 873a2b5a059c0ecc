/**
 * The Linux facts that only x86-64 has (arch/x86/include/uapi/asm/ptrace-abi.h, prctl.h, the
 * x86 regsets of linux/elf.h): core's linux bindings hold those of every architecture.
 */

/** ptrace(2) requests of x86 only (core's PTRACE has those of every architecture). */
export const PTRACE_X86 = Object.freeze({
  GETREGS: 12, SETREGS: 13, GETFPREGS: 14, SETFPREGS: 15, GETFPXREGS: 18, SETFPXREGS: 19,
  GET_THREAD_AREA: 25, SET_THREAD_AREA: 26, ARCH_PRCTL: 30, SYSEMU: 31, SYSEMU_SINGLESTEP: 32, SINGLEBLOCK: 33,
} as const);

/** ELF note types of the x86 regsets, as PTRACE_GETREGSET / SETREGSET `addr` (NT_X86_*). */
export const NT_X86 = Object.freeze({
  TLS: 0x200, IOPERM: 0x201, XSTATE: 0x202, SHSTK: 0x204, XSAVE_LAYOUT: 0x205,
} as const);

/** arch_prctl(2) codes. */
export const ARCH = Object.freeze({
  SET_GS: 0x1001, SET_FS: 0x1002, GET_FS: 0x1003, GET_GS: 0x1004, GET_CPUID: 0x1011, SET_CPUID: 0x1012,
  GET_XCOMP_SUPP: 0x1021, GET_XCOMP_PERM: 0x1022, REQ_XCOMP_PERM: 0x1023,
  GET_XCOMP_GUEST_PERM: 0x1024, REQ_XCOMP_GUEST_PERM: 0x1025,
  MAP_VDSO_X32: 0x2001, MAP_VDSO_32: 0x2002, MAP_VDSO_64: 0x2003,
  SHSTK_ENABLE: 0x5001, SHSTK_DISABLE: 0x5002, SHSTK_LOCK: 0x5003, SHSTK_UNLOCK: 0x5004, SHSTK_STATUS: 0x5005,
} as const);

/** PR_GET_TSC / PR_SET_TSC modes. */
export const PR_TSC = Object.freeze({ ENABLE: 1, SIGSEGV: 2 } as const);

/** The rseq abort signature glibc uses on x86 (RSEQ_SIG). */
export const RSEQ_SIG = 0x53053053;
