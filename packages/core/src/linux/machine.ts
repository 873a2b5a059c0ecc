/**
 * Facts about the running machine: kernel release, page size, CPU flags. Cached after the first
 * call. (The XSAVE layout is the arch package's.)
 */
import * as fs from 'fs';
import { AUXV } from './constants';
import { _SC_PAGESIZE, sysconf } from './libc';
import { parseAuxv, readProcText } from './proc';

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
