/**
 * Per-process facts that are not in stat/status: namespaces, POSIX timers, oom_score_adj, timer
 * slack, and the capability sets as capget/capset see them.
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { encodeStruct, sizeOfStruct } from '../image/cstruct';
import { readProcText } from './proc';
import { CapUserData, CapUserHeader } from './structs';

/** Namespaces a process belongs to (/proc/PID/ns/NAME). */
export const NS_KINDS = ['ipc', 'mnt', 'net', 'pid', 'pid_for_children', 'user', 'uts', 'cgroup', 'time', 'time_for_children'] as const;
export type NsKind = (typeof NS_KINDS)[number];

/** The inode of each namespace of PID (or 'self'); a kind the kernel does not have is left out. */
export function readNamespaces(pid: number | 'self', tid?: number): Partial<Record<NsKind, bigint>> {
  const out: Partial<Record<NsKind, bigint>> = {};
  const dir = tid === undefined ? `/proc/${pid}/ns` : `/proc/${pid}/task/${tid}/ns`;
  for (const k of NS_KINDS) {
    try {
      out[k] = fs.statSync(`${dir}/${k}`, { bigint: true }).ino;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT') continue;
      throw new CptError(code ?? 'EIO', `stat(${dir}/${k}): ${(e as Error).message}`, { pid: typeof pid === 'number' ? pid : undefined });
    }
  }
  return out;
}

export interface PosixTimer {
  id: number;
  signal: number;
  /** The notification as shown, e.g. `signal/pid.42`, `signal/tid.43`, `none/pid.42`. */
  notify: string;
  /** `signal`, `none` or `thread` (the kernel's names of SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD). */
  notifyKind: string;
  /** SIGEV_THREAD_ID: the signal goes to one thread (`tid.N`), not to the process (`pid.N`). */
  notifyThread: boolean;
  /** The pid or tid the notification names. */
  notifyPid: number;
  /** sigev_value (sival_ptr) of the timer's signal. */
  value: bigint;
  clock: number;
}

/** Parses /proc/PID/timers (one block per timer: "ID:", "signal: N/VALUE", "notify: KIND/pid.N", "ClockID:"). */
export function parsePosixTimers(text: string): PosixTimer[] {
  const out: PosixTimer[] = [];
  let cur: PosixTimer | undefined;
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const [, key, val] = m;
    if (key === 'ID') {
      cur = { id: Number(val), signal: 0, notify: '', notifyKind: '', notifyThread: false, notifyPid: 0, value: 0n, clock: 0 };
      out.push(cur);
    } else if (cur && key === 'signal') {
      const [signo, value] = val.split('/');
      cur.signal = Number(signo);
      if (value !== undefined && /^(0x)?[0-9a-f]+$/i.test(value.trim())) cur.value = BigInt(value.trim().startsWith('0x') ? value.trim() : `0x${value.trim()}`);
    } else if (cur && key === 'notify') {
      cur.notify = val;
      const n = /^(\w+)\/(pid|tid)\.(\d+)$/.exec(val.trim());
      if (n) {
        cur.notifyKind = n[1];
        cur.notifyThread = n[2] === 'tid';
        cur.notifyPid = Number(n[3]);
      }
    } else if (cur && key === 'ClockID') cur.clock = Number(val);
  }
  return out;
}

/** The POSIX timers (timer_create) of PID. */
export function readPosixTimers(pid: number): PosixTimer[] {
  return parsePosixTimers(readProcText(`/proc/${pid}/timers`, pid));
}

/** /proc/PID/oom_score_adj, -1000..1000. */
export function readOomScoreAdj(pid: number): number {
  return Number(readProcText(`/proc/${pid}/oom_score_adj`, pid).trim());
}

/** Writes /proc/PID/oom_score_adj (the writer's CAP_SYS_RESOURCE decides whether it may go below the task's floor). */
export function writeOomScoreAdj(pid: number, value: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/oom_score_adj`, `${value}\n`);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new CptError(code, `write(/proc/${pid}/oom_score_adj, ${value}): ${(e as Error).message}`, { pid, object: 'oom_score_adj' });
  }
}

export const OOM_SCORE_ADJ_MIN = -1000;
export const OOM_SCORE_ADJ_MAX = 1000;

/** /proc/PID/coredump_filter: the bit mask (hex in the file) of what a core dump of the process holds. */
export function readCoredumpFilter(pid: number): number {
  return parseInt(readProcText(`/proc/${pid}/coredump_filter`, pid).trim(), 16);
}

/** Writes /proc/PID/coredump_filter (a setting of the process's memory, anyone who may ptrace it may set it). */
export function writeCoredumpFilter(pid: number, mask: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/coredump_filter`, `0x${mask.toString(16)}\n`);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new CptError(code, `write(/proc/${pid}/coredump_filter, 0x${mask.toString(16)}): ${(e as Error).message}`, { pid, object: 'coredump_filter' });
  }
}

/** The audit login uid (/proc/PID/loginuid; 4294967295 when never set), or undefined without audit support. */
export function readLoginuid(pid: number | 'self'): number | undefined {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/loginuid`, 'utf8').trim());
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return undefined;
    throw new CptError((e as { code?: string }).code ?? 'EIO', `read(/proc/${pid}/loginuid): ${(e as Error).message}`, { pid: typeof pid === 'number' ? pid : undefined });
  }
}

/** The login uid of a process that never had one set. */
export const LOGINUID_UNSET = 0xffffffff;

/** capget/capset: _LINUX_CAPABILITY_VERSION_3 takes two data structs (low and high 32 bits of each set). */
const CAP_VERSION_3 = 0x20080522;

export interface CapSets {
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
}

export function encodeCapHeader(pid = 0): Buffer {
  return encodeStruct(CapUserHeader, { version: CAP_VERSION_3, pid });
}

export function encodeCapData(c: CapSets): Buffer {
  const one = sizeOfStruct(CapUserData);
  const b = Buffer.alloc(2 * one);
  const lo = (v: bigint) => Number(v & 0xffffffffn);
  const hi = (v: bigint) => Number((v >> 32n) & 0xffffffffn);
  encodeStruct(CapUserData, { effective: lo(c.effective), permitted: lo(c.permitted), inheritable: lo(c.inheritable) }, b, 0);
  encodeStruct(CapUserData, { effective: hi(c.effective), permitted: hi(c.permitted), inheritable: hi(c.inheritable) }, b, one);
  return b;
}

/**
 * The capabilities that fsuid 0 stands for: setfsuid away from 0 clears them from the effective
 * set, back to 0 raises them again from the permitted set (CAP_FS_MASK): CHOWN, DAC_OVERRIDE,
 * DAC_READ_SEARCH, FOWNER, FSETID, LINUX_IMMUTABLE, MKNOD, MAC_OVERRIDE.
 */
export const CAP_FS_MASK = (1n << 0n) | (1n << 1n) | (1n << 2n) | (1n << 3n) | (1n << 4n) | (1n << 9n) | (1n << 27n) | (1n << 32n);

/** The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap). */
export function capLastCap(): number {
  return Number(readProcText('/proc/sys/kernel/cap_last_cap').trim());
}

/** Bytes of the CPU mask sched_getaffinity/sched_setaffinity use here (a multiple of 8 covering every possible CPU). */
export function cpuMaskBytes(): number {
  let n = 0;
  try {
    // "0-3,5": the highest number + 1.
    for (const part of readProcText('/sys/devices/system/cpu/possible').trim().split(',')) n = Math.max(n, Number(part.split('-').pop()) + 1);
  } catch {
    n = 1024;
  }
  return Math.max(8, Math.ceil(n / 64) * 8);
}

/** The CPUs that are online here (/sys/devices/system/cpu/online, "0-3,5"). */
export function onlineCpus(): number[] {
  const out: number[] = [];
  for (const part of readProcText('/sys/devices/system/cpu/online').trim().split(',')) {
    if (part === '') continue;
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out;
}
