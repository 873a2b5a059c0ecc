/**
 * Facts about the running machine: kernel release, page size, the XSAVE layout the kernel exposes
 * through ptrace, CPU flags. Cached after the first call.
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { AUXV, NT } from './constants';
import { spawnSeizedHelper } from './helper-process';
import { _SC_PAGESIZE, sysconf } from './libc';
import { parseAuxv, readProcText } from './proc';
import { ptrace } from './ptrace';
import { XSAVE_SW_RESERVED_OFFSET } from './structs';

let release: string | undefined;
/** The kernel release, e.g. "6.18.44-fc-v782". */
export function kernelRelease(): string {
  if (release === undefined) release = readProcText('/proc/sys/kernel/osrelease').trim();
  return release;
}

let bootIdCache: string | undefined;
/** This boot's random id (/proc/sys/kernel/random/boot_id): device and inode numbers are comparable only within one boot. */
export function bootId(): string {
  if (bootIdCache === undefined) bootIdCache = readProcText('/proc/sys/kernel/random/boot_id').trim();
  return bootIdCache;
}

let pageSizeCache: number | undefined;
/** The page size: sysconf(_SC_PAGESIZE), checked against AT_PAGESZ of /proc/self/auxv. */
export function pageSize(): number {
  if (pageSizeCache === undefined) {
    let ps = sysconf(_SC_PAGESIZE);
    if (!(ps > 0)) {
      const e = parseAuxv(fs.readFileSync('/proc/self/auxv')).find((x) => x.type === BigInt(AUXV.PAGESZ));
      ps = e ? Number(e.value) : 4096;
    }
    pageSizeCache = ps;
  }
  return pageSizeCache;
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
  const helper = spawnSeizedHelper(0, 'xsaveInfo: the helper');
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

let flagsCache: string[] | undefined;
/** CPU feature flags of the first processor in /proc/cpuinfo ("fpu", "avx512f", ...). */
export function cpuFlags(): string[] {
  if (!flagsCache) {
    const line = readProcText('/proc/cpuinfo').split('\n').find((l) => /^flags\s*:/.test(l));
    flagsCache = line ? line.slice(line.indexOf(':') + 1).trim().split(/\s+/) : [];
  }
  return [...flagsCache];
}
