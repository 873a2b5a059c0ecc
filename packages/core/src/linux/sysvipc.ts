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
  /** Permission bits. */
  mode: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  /** Last semop, last change (creation, IPC_SET, SETVAL, SETALL): seconds since the epoch. */
  otime: bigint;
  ctime: bigint;
}

/** Parses /proc/sysvipc/sem (a header line, then one set a line). */
export function parseSysvSem(text: string): SysvSem[] {
  const out: SysvSem[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    out.push({
      key: Number(f[0]), id: Number(f[1]), mode: parseInt(f[2], 8), nsems: Number(f[3]), uid: Number(f[4]), gid: Number(f[5]),
      cuid: Number(f[6]), cgid: Number(f[7]), otime: BigInt(f[8]), ctime: BigInt(f[9]),
    });
  }
  return out;
}

export function readSysvSem(): SysvSem[] {
  return parseSysvSem(fs.readFileSync('/proc/sysvipc/sem', 'utf8'));
}

/** semctl commands. */
export const SEM = Object.freeze({ GETPID: 11, GETVAL: 12, GETALL: 13, GETNCNT: 14, GETZCNT: 15, SETVAL: 16, SETALL: 17 } as const);
/** The kernel's bound on a semaphore's value (SEMVMX). */
export const SEMVMX = 32767;

/** One message queue of /proc/sysvipc/msg. */
export interface SysvMsg {
  key: number;
  id: number;
  mode: number;
  /** Bytes of message text queued, and the number of messages. */
  cbytes: number;
  qnum: number;
  /** The last to send, and to receive (0: nobody yet). */
  lspid: number;
  lrpid: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  stime: bigint;
  rtime: bigint;
  ctime: bigint;
}

/** Parses /proc/sysvipc/msg (a header line, then one queue a line). */
export function parseSysvMsg(text: string): SysvMsg[] {
  const out: SysvMsg[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 14) continue;
    out.push({
      key: Number(f[0]), id: Number(f[1]), mode: parseInt(f[2], 8), cbytes: Number(f[3]), qnum: Number(f[4]), lspid: Number(f[5]), lrpid: Number(f[6]),
      uid: Number(f[7]), gid: Number(f[8]), cuid: Number(f[9]), cgid: Number(f[10]), stime: BigInt(f[11]), rtime: BigInt(f[12]), ctime: BigInt(f[13]),
    });
  }
  return out;
}

export function readSysvMsg(): SysvMsg[] {
  return parseSysvMsg(fs.readFileSync('/proc/sysvipc/msg', 'utf8'));
}

/**
 * msgrcv flags: MSG_COPY reads the message at an index without taking it off the queue (nor
 * changing the queue's times or last receiver); it needs IPC_NOWAIT and a kernel built with
 * CONFIG_CHECKPOINT_RESTORE (ENOSYS otherwise).
 */
export const MSGRCV = Object.freeze({ NOERROR: 0o10000, EXCEPT: 0o20000, COPY: 0o40000, NOWAIT: 0o4000 } as const);
