/**
 * Facts about the running machine: kernel release, page size, CPU flags. Cached after the first
 * call. (The XSAVE layout is the arch package's.)
 */
import * as fs from 'fs';
import { AUXV } from './constants';
import { CptError } from '../errors';
import { _SC_PAGESIZE, rawSyscall, sysconf } from './libc';
import { parseAuxv, readProcText } from './proc';
import { syscallNumber } from './syscalls';

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

let flagsCache: string[] | undefined;
/** CPU feature flags of the first processor in /proc/cpuinfo ("fpu", "avx512f", ...). */
export function cpuFlags(): string[] {
  if (!flagsCache) {
    const line = readProcText('/proc/cpuinfo').split('\n').find((l) => /^flags\s*:/.test(l));
    flagsCache = line ? line.slice(line.indexOf(':') + 1).trim().split(/\s+/) : [];
  }
  return [...flagsCache];
}

/**
 * `n` (at most 256) random bytes from the kernel's generator, getrandom(2): for the names and
 * cookies cptrst makes up, without loading Node's crypto (2-3 ms) for them.
 */
export function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  const got = rawSyscall(syscallNumber('getrandom'), b, n, 0);
  if (got !== BigInt(n)) throw new CptError('EIO', `getrandom of ${n} bytes returned ${got}`);
  return b;
}
