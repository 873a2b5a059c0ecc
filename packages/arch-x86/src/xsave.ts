/**
 * The x86 XSAVE area as PTRACE_GETREGSET(NT_X86_XSTATE) returns it (standard, non-compacted
 * format), and the layout this machine's kernel exposes.
 */
import { BOOT_FACTS_DIR, CptError, linux, readBootFact, writeBootFact } from '@cptrst/core';
import { ARCH } from './linux-x86';
import { x86ptrace } from './regs-codec';


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
 * The name under which root keeps the layout for the rest of the boot (core's boot facts, in
 * /run/cptrst): "FEATURES(hex) SIZE SW_RESERVED(hex)". The layout is fixed when the kernel boots,
 * so a later run reads this instead of starting, seizing and killing a helper process (the probe
 * costs 5-40 ms of every checkpoint and restart here, most of it the fork of cptrst's Node process).
 */
const XSAVE_FACT = 'xsave';
/** The file of that fact. */
export const XSAVE_CACHE_FILE = `${BOOT_FACTS_DIR}/${XSAVE_FACT}`;
const FACT_LINE = /^([0-9a-f]{1,16}) (\d{1,5}) ([0-9a-f]{96})$/;

/** ARCH_GET_XCOMP_SUPP: the user xfeatures the kernel supports, the mask the regset shows too (Linux 5.16); undefined where unknown. */
function supportedFeatures(): bigint | undefined {
  const b = Buffer.alloc(8);
  return linux.rawSyscall(linux.syscallNumber('arch_prctl'), ARCH.GET_XCOMP_SUPP, b) === 0n ? b.readBigUInt64LE(0) : undefined;
}

/**
 * The layout kept by an earlier run in this boot (readBootFact: root only, root's file, this
 * boot), or undefined: well formed, and (where the kernel says) with the features the kernel
 * supports now. Anything else is ignored and the helper is asked again.
 */
export function cachedXsaveInfo(): XsaveInfo | undefined {
  const m = FACT_LINE.exec(readBootFact(XSAVE_FACT, 128) ?? '');
  if (!m) return undefined;
  const info: XsaveInfo = { features: BigInt(`0x${m[1]}`), size: Number(m[2]), swReserved: Buffer.from(m[3], 'hex') };
  if (info.size < XSAVE_SW_RESERVED_OFFSET + 48 || info.size > 64 * 1024 || info.swReserved.readBigUInt64LE(0) !== info.features) return undefined;
  const supported = supportedFeatures();
  return supported === undefined || supported === info.features ? info : undefined;
}

/** Keeps the layout for later runs (root only; best effort: a run that cannot write it probes again). */
function writeCached(info: XsaveInfo): void {
  writeBootFact(XSAVE_FACT, `${info.features.toString(16)} ${info.size} ${info.swReserved.toString('hex')}`);
}

/**
 * The XSAVE layout as ptrace shows it. Spawns a helper (/bin/cat reading a pipe only we hold, so
 * that it ends by itself if we die before we seize it), seizes it with PTRACE_O_EXITKILL (so that
 * it dies with us from then on) and interrupts it, reads NT_X86_XSTATE and kills it by pid; cached
 * afterwards, in this process and (for root) as a boot fact (XSAVE_FACT) for the rest of the boot. Runs
 * synchronously so that libuv cannot reap the stop notification.
 *
 * On this kernel the layout of the sw_reserved bytes for ptrace is the "xstate_fx_sw_bytes" array
 * of u64 words whose word 0 (byte 464) is the user xfeatures mask (the kernel's
 * USER_XSTATE_XCR0_WORD); it is NOT the signal frame's struct _fpx_sw_bytes (magic1 at 464).
 */
export function xsaveInfo(): XsaveInfo {
  if (xsaveCache) return xsaveCache;
  xsaveCache = cachedXsaveInfo();
  if (xsaveCache) return xsaveCache;
  xsaveCache = probeXsave();
  writeCached(xsaveCache);
  return xsaveCache;
}

/** The layout read from a helper process, as xsaveInfo() describes (no cache). */
export function probeXsave(): XsaveInfo {
  const helper = linux.spawnSeizedHelper(0, 'xsaveInfo: the helper');
  const pid = helper.pid;
  try {
    const buf = x86ptrace.getXstate(pid, 64 * 1024);
    if (buf.length < XSAVE_SW_RESERVED_OFFSET + 48) throw new CptError('EIO', `xsaveInfo: NT_X86_XSTATE of ${buf.length} bytes`, { pid });
    return {
      features: buf.readBigUInt64LE(XSAVE_SW_RESERVED_OFFSET),
      size: buf.length,
      swReserved: Buffer.from(buf.subarray(XSAVE_SW_RESERVED_OFFSET, XSAVE_SW_RESERVED_OFFSET + 48)),
    };
  } finally {
    // Killed while still traced: never let go alive.
    helper.kill();
  }
}
