/**
 * State of open files that restart does not rebuild yet, refused at checkpoint (deny by default)
 * rather than dropped without a word: file locks (flock, POSIX, OFD) and leases that the process
 * holds, and signal-driven I/O owners (F_SETOWN / F_SETOWN_EX) and signals (F_SETSIG).
 */
import * as fs from 'fs';
import { CheckpointTask, decodeStruct, linux, refuse, sameFile, sizeOfStruct } from '@cptrst/core';
import { OpenFile } from './kinds';

const { SYS, O, F } = linux;

const LOCK_NAMES: Record<string, string> = {
  FLOCK: 'a flock() lock',
  POSIX: 'a POSIX record lock (fcntl F_SETLK)',
  OFDLCK: 'an open file description lock (F_OFD_SETLK)',
  LEASE: 'a lease (F_SETLEASE)',
  DELEG: 'a delegation',
};

function lockName(e: linux.LockEntry): string {
  const how = e.kind === 'LEASE' || e.kind === 'DELEG' ? `${e.mode.toLowerCase()}, ${e.access.toLowerCase()}` : e.access.toLowerCase();
  return `${LOCK_NAMES[e.kind] ?? `a ${e.kind} lock`} (${how})`;
}

const objectOf = (f: OpenFile): string => `fd ${f.fd} (${f.link})`;

/** Refuses any lock or lease the process holds: through an fd (fdinfo `lock:` lines) or otherwise (/proc/locks). */
export function refuseLocks(task: CheckpointTask, files: OpenFile[]): void {
  for (const f of files) {
    for (const line of f.fdinfo.extra) {
      if (!line.startsWith('lock:')) continue;
      const e = linux.parseLockLine(line);
      if (e && !e.waiter) refuse(task.pid, objectOf(f), `it holds ${lockName(e)}; file locks and leases are not supported yet`);
      if (!e) refuse(task.pid, objectOf(f), `it holds a lock cptrst cannot read (${line.trim()}); file locks are not supported yet`);
    }
  }
  // A lock taken by this process on a file it reaches through no fd any more (a description kept
  // by a memory mapping, say): /proc/locks still names the process.
  for (const e of linux.readLocks()) {
    if (e.waiter || e.pid !== task.pid) continue;
    const f = files.find((x) => sameFile(x.stat, { dev: linux.makeDev(e.major, e.minor), ino: e.ino }));
    refuse(task.pid, f ? objectOf(f) : `lock on inode ${e.major.toString(16)}:${e.minor.toString(16)}:${e.ino}`,
      `the process holds ${lockName(e)}; file locks and leases are not supported yet`);
  }
}

/**
 * Refuses owners and signals for signal-driven I/O and leases, which belong to the open file
 * description: cptrst takes a copy of the task's fd (pidfd_getfd: the same description) and asks
 * it with fcntl F_GETOWN_EX, F_GETSIG and F_GETLEASE.
 */
export function refuseOwners(task: CheckpointTask, files: OpenFile[]): void {
  const asked = files.filter((f) => !(f.fdinfo.flags & O.PATH)); // fcntl answers EBADF on O_PATH: they have none
  if (asked.length === 0) return;
  const pidfd = linux.pidfdOpen(task.pid);
  try {
    for (const f of asked) {
      const dup = linux.pidfdGetfd(pidfd, f.fd);
      try {
        const owner = Buffer.alloc(sizeOfStruct(linux.FOwnerEx));
        if (linux.rawSyscall(SYS.fcntl, dup, F.GETOWN_EX, owner) === 0n) {
          const o = decodeStruct(linux.FOwnerEx, owner);
          if (o.pid !== 0) {
            const who = o.type === F.OWNER_PGRP ? 'process group' : o.type === F.OWNER_TID ? 'thread' : 'process';
            refuse(task.pid, objectOf(f), `its I/O signals go to ${who} ${o.pid} (F_SETOWN); signal-driven I/O owners are not supported yet`);
          }
        }
        const sig = linux.rawSyscall(SYS.fcntl, dup, F.GETSIG, 0);
        if (sig > 0n) refuse(task.pid, objectOf(f), `its I/O signal is ${sig} (F_SETSIG); signal-driven I/O is not supported yet`);
        const lease = linux.rawSyscall(SYS.fcntl, dup, F.GETLEASE, 0);
        if (lease >= 0n && lease !== BigInt(F.UNLCK)) refuse(task.pid, objectOf(f), `it holds a ${lease === BigInt(F.RDLCK) ? 'read' : 'write'} lease (F_SETLEASE); leases are not supported yet`);
      } finally {
        fs.closeSync(dup);
      }
    }
  } finally {
    fs.closeSync(pidfd);
  }
}
