/**
 * The x86 XSAVE area as PTRACE_GETREGSET(NT_X86_XSTATE) returns it (standard, non-compacted
 * format), and the layout this machine's kernel exposes.
 */
import { CptError, linux } from '@cptrst/core';

const { ptrace, NT } = linux;

/** Offset in the FXSAVE area of the 48 "software reserved" bytes (464..511). */
export const XSAVE_SW_RESERVED_OFFSET = 464;
/** Offset of the XSAVE header (xstate_bv u64, xcomp_bv u64, reserved[6]). */
export const XSAVE_HEADER_OFFSET = 512;
/** Magic the kernel puts in _fpx_sw_bytes.magic1 of a signal frame. */
export const FP_XSTATE_MAGIC1 = 0x46505853;

/** The XSAVE header of an NT_X86_XSTATE buffer: which components hold non-init state. */
export function decodeXsaveHeader(buf: Buffer): { xstateBv: bigint; xcompBv: bigint } {
  if (buf.length < XSAVE_HEADER_OFFSET + 16) throw new CptError('EINVAL', `xsave header: need ${XSAVE_HEADER_OFFSET + 16} bytes, got ${buf.length}`);
  return { xstateBv: buf.readBigUInt64LE(XSAVE_HEADER_OFFSET), xcompBv: buf.readBigUInt64LE(XSAVE_HEADER_OFFSET + 8) };
}

export interface XsaveInfo {
  /**
   * The user xfeatures mask the kernel exposes (XCR0 as far as user space state goes): the u64 at
   * byte 464 (sw_reserved) of an NT_X86_XSTATE buffer. Bit 0 x87, 1 SSE, 2 AVX, 5-7 AVX-512, 9 PKRU,
   * 17-18 AMX.
   */
  features: bigint;
  /** Size in bytes of the NT_X86_XSTATE regset (the standard-format XSAVE area). */
  size: number;
  /** The 48 software-reserved bytes as read (464..511), for the record. */
  swReserved: Buffer;
}

let xsaveCache: XsaveInfo | undefined;

/**
 * The XSAVE layout as ptrace shows it. Spawns a helper (/bin/cat reading a pipe only we hold, so
 * that it ends by itself if we die before we seize it), seizes it with PTRACE_O_EXITKILL (so that
 * it dies with us from then on) and interrupts it, reads NT_X86_XSTATE and kills it by pid; cached
 * afterwards. Runs synchronously so that libuv cannot reap the stop notification.
 *
 * On this kernel the layout of the sw_reserved bytes for ptrace is the "xstate_fx_sw_bytes" array
 * of u64 words whose word 0 (byte 464) is the user xfeatures mask (the kernel's
 * USER_XSTATE_XCR0_WORD); it is NOT the signal frame's struct _fpx_sw_bytes (magic1 at 464).
 */
export function xsaveInfo(): XsaveInfo {
  if (xsaveCache) return xsaveCache;
  const helper = linux.spawnSeizedHelper(0, 'xsaveInfo: the helper');
  const pid = helper.pid;
  try {
    const buf = ptrace.getRegset(pid, NT.X86_XSTATE, 64 * 1024);
    if (buf.length < XSAVE_SW_RESERVED_OFFSET + 48) throw new CptError('EIO', `xsaveInfo: NT_X86_XSTATE of ${buf.length} bytes`, { pid });
    xsaveCache = {
      features: buf.readBigUInt64LE(XSAVE_SW_RESERVED_OFFSET),
      size: buf.length,
      swReserved: Buffer.from(buf.subarray(XSAVE_SW_RESERVED_OFFSET, XSAVE_SW_RESERVED_OFFSET + 48)),
    };
  } finally {
    // Killed while still traced: never let go alive.
    helper.kill();
  }
  return xsaveCache;
}
