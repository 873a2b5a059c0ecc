/**
 * SysV IPC of the IPC namespace, as /proc/sysvipc shows it, and the knobs that choose the id the
 * next object gets (/proc/sys/kernel/{shm,sem,msg}_next_id).
 */
import * as fs from 'fs';
import { CptError } from '../errors';

/** One shared memory segment of /proc/sysvipc/shm. */
export interface SysvShm {
  key: number;
  id: number;
  /** Permission bits, with SHM_DEST (0o1000) once removed while attached, SHM_LOCKED (0o2000). */
  mode: number;
  size: bigint;
  cpid: number;
  lpid: number;
  nattch: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
}

/** Marked for removal (IPC_RMID) while still attached. */
export const SHM_DEST = 0o1000;
export const SHM_LOCKED = 0o2000;
/** shmat flags. */
export const SHM_RDONLY = 0o10000;
export const SHM_EXEC = 0o100000;
/** IPC flags and commands. */
export const IPC = Object.freeze({ CREAT: 0o1000, EXCL: 0o2000, RMID: 0, SET: 1, STAT: 2, PRIVATE: 0 } as const);

/** Parses /proc/sysvipc/shm (a header line, then one segment a line). */
export function parseSysvShm(text: string): SysvShm[] {
  const out: SysvShm[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 11) continue;
    out.push({
      key: Number(f[0]), id: Number(f[1]), mode: parseInt(f[2], 8), size: BigInt(f[3]), cpid: Number(f[4]), lpid: Number(f[5]),
      nattch: Number(f[6]), uid: Number(f[7]), gid: Number(f[8]), cuid: Number(f[9]), cgid: Number(f[10]),
    });
  }
  return out;
}

export function readSysvShm(): SysvShm[] {
  return parseSysvShm(fs.readFileSync('/proc/sysvipc/shm', 'utf8'));
}

/** Asks the kernel to give `id` to the next object of that kind made in this IPC namespace (root only). */
export function setIpcNextId(kind: 'shm' | 'sem' | 'msg', id: number): void {
  try {
    fs.writeFileSync(`/proc/sys/kernel/${kind}_next_id`, `${id}\n`);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new CptError(code, `writing /proc/sys/kernel/${kind}_next_id: ${(e as Error).message}`, { object: `sysv ${kind} ${id}` });
  }
}

/** One semaphore set of /proc/sysvipc/sem. */
export interface SysvSem {
  key: number;
  id: number;
  nsems: number;
}

/** Parses /proc/sysvipc/sem (a header line, then one set a line). */
export function parseSysvSem(text: string): SysvSem[] {
  const out: SysvSem[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    out.push({ key: Number(f[0]), id: Number(f[1]), nsems: Number(f[3]) });
  }
  return out;
}

export function readSysvSem(): SysvSem[] {
  return parseSysvSem(fs.readFileSync('/proc/sysvipc/sem', 'utf8'));
}

/** semctl commands. */
export const SEM = Object.freeze({ GETPID: 11 } as const);
