/**
 * File locks, leases and signal-driven I/O owners of the open files.
 *
 * - flock() locks, open file description (OFD) locks and leases belong to the open file
 *   description; POSIX record locks belong to the process. The `lock:` lines of each fd's fdinfo
 *   show both (a POSIX lock on every fd of the locked inode). Each is recorded once, with an fd
 *   number that reaches it (FILE_LOCK), and taken again at restart by the task itself, through
 *   that fd, without waiting: a conflicting lock that someone else took in the meantime makes the
 *   restart fail (EAGAIN, naming the lock) rather than wait or take it over.
 * - A lease being broken (another open conflicted with it) is taken again and its break started
 *   again toward the same target, with no second lease-break signal (see takeLease).
 * - The owner of a description's I/O signals (F_SETOWN_EX) and the signal (F_SETSIG) are
 *   recorded per description (FD_OWNER) and set again through its fd. Only the process itself
 *   (or its thread, or its own process group) can be the owner: another process may not exist,
 *   or be someone else, after a restart.
 *
 * Locks are taken last, in the finish hook after the files' own: a POSIX lock goes when the
 * process closes any fd of the inode, which the files restore does with its temporary fds.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler, RestoreObject,
  StateKey, Tracee, decodeStruct, encodeStruct, i32, i64, linux, objectType, refuse, sameFile, sizeOfStruct, str, u32,
} from '@cptrst/core';
import { OpenFile } from './kinds';
import { frozenOpenFiles } from './file';
import { FILES_ORDER, FS_KEY } from './fs-struct';

const { SYS, O, F, LOCK } = linux;
/** Right after the files (their FDs are all restored by then). */
export const LOCKS_ORDER = FILES_ORDER + 10;

/** The kinds of lock cptrst takes again, as /proc/locks names them. */
const KINDS = ['FLOCK', 'POSIX', 'OFDLCK', 'LEASE'] as const;
type LockKind = (typeof KINDS)[number];

@objectType(ObjectType.FILE_LOCK, 'file-lock', { parents: [ObjectType.TASK] })
export class FileLockImage {
  /** FLOCK, POSIX, OFDLCK or LEASE. */
  @str() kind = '';
  /** The fd it is taken through: the description's (FLOCK, OFDLCK, LEASE), or one of the inode's (POSIX). */
  @u32() fd = 0;
  /** F_RDLCK or F_WRLCK. */
  @i32() type = 0;
  /** The range of a POSIX or OFD lock: first byte and length (0: to the end of the file, and beyond). */
  @i64() start = 0n;
  @i64() len = 0n;
  /**
   * A lease being broken (another process opened the file): where the break goes, F_RDLCK or
   * F_UNLCK, which F_GETLEASE answers until the holder lets go; -1: not being broken. `type`
   * is then the lease held before the break.
   */
  @i32({ since: 6 }) breakTo = -1;
}

@objectType(ObjectType.FD_OWNER, 'fd-owner', { parents: [ObjectType.TASK] })
export class FdOwnerImage {
  @u32() fd = 0;
  /** F_OWNER_TID, F_OWNER_PID or F_OWNER_PGRP; pid 0: no owner. */
  @i32() ownerType = 0;
  @i32() ownerPid = 0;
  /** F_SETSIG: 0 for SIGIO. */
  @i32() signo = 0;
}

const LOCK_NAMES: Record<string, string> = {
  FLOCK: 'a flock() lock',
  POSIX: 'a POSIX record lock (fcntl F_SETLK)',
  OFDLCK: 'an open file description lock (F_OFD_SETLK)',
  LEASE: 'a lease (F_SETLEASE)',
  DELEG: 'a delegation',
};

function lockName(e: { kind: string; type: number; start: bigint; len: bigint }): string {
  const range = e.kind === 'POSIX' || e.kind === 'OFDLCK' ? ` on bytes ${e.start}..${e.len === 0n ? 'EOF' : e.start + e.len - 1n}` : '';
  return `${LOCK_NAMES[e.kind] ?? `a ${e.kind} lock`} (${e.type === F.WRLCK ? 'write' : 'read'}${range})`;
}

const objectOf = (f: OpenFile): string => `fd ${f.fd} (${f.link})`;

/** What check found, for dump (the task is frozen: nothing changes in between). */
const FOUND = new StateKey<{ locks: FileLockImage[]; owners: FdOwnerImage[] }>('files.locks.found');

/**
 * /proc/locks of the checkpoint, read once the tree is frozen, in the background (see frozen()):
 * every task's check uses the same list, which for the frozen tree's own locks cannot change.
 */
const PROC_LOCKS = new WeakMap<CheckpointContext, Promise<linux.LockEntry[]>>();

/** The group of fds (the first of each) that share one open file description, by fd. */
function descriptionOf(pid: number, files: OpenFile[]): Map<number, number> {
  const first = new Map<number, number>();
  for (const f of files) {
    const g = files.find((x) => x.fd <= f.fd && sameFile(x.stat, f.stat) && (x.fd === f.fd || linux.kcmp(pid, pid, linux.KCMP.FILE, x.fd, f.fd) === 0));
    first.set(f.fd, g ? g.fd : f.fd);
  }
  return first;
}

/** An fd of the process on the same inode whose access mode lets it take a lock of `type`. */
function fdFor(files: OpenFile[], like: OpenFile, type: number): OpenFile | undefined {
  const access = (f: OpenFile) => f.fdinfo.flags & O.ACCMODE;
  const ok = (f: OpenFile) => !(f.fdinfo.flags & O.PATH) && (type === F.WRLCK ? access(f) !== O.RDONLY : access(f) !== O.WRONLY);
  return files.find((f) => sameFile(f.stat, like.stat) && ok(f));
}

/** Reads every lock, lease and I/O owner, refusing what cannot be taken again faithfully. */
export function findLocks(
  task: CheckpointTask, files: OpenFile[], tree: readonly number[] = [], procLocks: readonly linux.LockEntry[] = linux.readLocks(),
): { locks: FileLockImage[]; owners: FdOwnerImage[] } {
  const first = descriptionOf(task.pid, files);
  const locks: FileLockImage[] = [];
  const seen = new Set<string>();
  for (const f of files) {
    for (const line of f.fdinfo.extra) {
      if (!line.startsWith('lock:')) continue;
      const e = linux.parseLockLine(line);
      if (!e) refuse(task.pid, objectOf(f), `it holds a lock cptrst cannot read (${line.trim()})`);
      if (e.waiter) continue; // a request the process is blocked in: it asks again when it runs
      if (!(KINDS as readonly string[]).includes(e.kind)) refuse(task.pid, objectOf(f), `it holds ${LOCK_NAMES[e.kind] ?? `a ${e.kind} lock`}, which cptrst cannot take again`);
      const kind = e.kind as LockKind;
      const breaking = kind === 'LEASE' && e.mode === 'BREAKING';
      if (kind === 'LEASE' && e.mode !== 'ACTIVE' && !breaking) refuse(task.pid, objectOf(f), `it holds a lease in state ${e.mode} ${e.access}`);
      if (breaking ? e.access !== 'READ' && e.access !== 'UNLCK' : e.access !== 'READ' && e.access !== 'WRITE') refuse(task.pid, objectOf(f), `it holds ${LOCK_NAMES[kind]} in state ${e.access} ${e.mode}`);
      if (kind === 'POSIX' && e.pid !== task.pid) refuse(task.pid, objectOf(f), `a POSIX lock on it is held by process ${e.pid}`);
      const img = new FileLockImage();
      img.kind = kind;
      img.type = e.access === 'WRITE' ? F.WRLCK : F.RDLCK;
      if (breaking) {
        img.breakTo = e.access === 'READ' ? F.RDLCK : F.UNLCK;
        img.type = breakingLeaseType(task.pid, f, e, img.breakTo);
      }
      img.start = e.start;
      img.len = e.end === undefined ? 0n : e.end - e.start + 1n;
      const by = kind === 'POSIX' ? fdFor(files, f, img.type) : f;
      if (!by) refuse(task.pid, objectOf(f), `it holds ${lockName(img)}, but no fd of the process could take it again`);
      img.fd = kind === 'POSIX' ? by.fd : first.get(f.fd)!;
      const key = kind === 'POSIX' ? `POSIX ${f.stat.dev}:${f.stat.ino} ${img.type} ${img.start} ${img.len}` : `${kind} ${img.fd} ${img.type} ${img.start} ${img.len}`;
      if (seen.has(key)) continue;
      seen.add(key);
      locks.push(img);
    }
  }
  // A lock /proc/locks gives to this process that no fd shows (taken through a description the
  // process no longer has an fd of) cannot be reached again; unless it is a lock of the description
  // (flock, OFD) and another process of the tree holds that description: its fd shows the lock,
  // and that process takes it again.
  for (const e of procLocks) {
    if (e.waiter || e.pid !== task.pid) continue;
    const inode = { dev: linux.makeDev(e.major, e.minor), ino: e.ino };
    const f = files.find((x) => sameFile(x.stat, inode) && x.fdinfo.extra.some((l) => l.startsWith('lock:')));
    if (!f && !(e.kind !== 'POSIX' && heldElsewhereInTree(task.pid, tree, inode, e.kind))) {
      refuse(task.pid, `lock on inode ${e.major.toString(16)}:${e.minor.toString(16)}:${e.ino}`,
        `the process holds ${LOCK_NAMES[e.kind] ?? `a ${e.kind} lock`} through no fd it still has; cptrst cannot take it again`);
    }
  }
  return { locks, owners: findOwners(task, files, first, tree) };
}

/**
 * What a lease being broken was before the break. Toward read it was a write lease (only a write
 * lease is downgraded); toward unlocked it was either, which an open for reading tells (see
 * leaseTypeOfBreak). Refused when other leases share the inode: taking them again one by one
 * cannot rebuild a break that reached them all, nor a read lease taken while another was breaking.
 */
function breakingLeaseType(pid: number, f: OpenFile, e: linux.LockEntry, breakTo: number): number {
  const leases = linux.readLocks().filter((x) => !x.waiter && x.kind === 'LEASE' && x.major === e.major && x.minor === e.minor && x.ino === e.ino);
  if (leases.length > 1) refuse(pid, objectOf(f), `its lease is being broken and ${leases.length - 1} other lease(s) are held on the same file; cptrst cannot break them again together`);
  if (breakTo === F.RDLCK) return F.WRLCK;
  // The probe of a read lease reaches the filesystem's open, which on FUSE waits for its server (maybe frozen in the tree).
  const fsType = linux.readMountinfo(pid).find((m) => m.mountId === f.fdinfo.mntId)?.fsType ?? '';
  if (fsType === 'fuse' || fsType.startsWith('fuse.') || fsType === 'fuseblk') {
    refuse(pid, objectOf(f), `its lease is being broken toward unlocked on a FUSE filesystem (${fsType}), where cptrst cannot tell a read lease from a write lease without an open the server would answer`);
  }
  const type = linux.leaseTypeOfBreak(pid, f.fd);
  if (type < 0) refuse(pid, objectOf(f), `its lease is being broken toward unlocked, and whether it was a read or a write lease cannot be told: an open for reading fails (${linux.errnoName(-type)})`);
  // The kernel ends a break whose time is up only when someone looks: the probe may have been that.
  const now = linux.readFdinfo(pid, f.fd).extra.find((l) => l.startsWith('lock:') && linux.parseLockLine(l)?.kind === 'LEASE');
  if (!now || now.trim() !== e.line) {
    throw new CptError('EAGAIN', 'its lease changed while cptrst read it (its break timed out); checkpoint it again', { pid, object: objectOf(f) });
  }
  return type;
}

/** Whether another process of the tree has an fd on the inode whose description shows a lock of this kind. */
function heldElsewhereInTree(self: number, tree: readonly number[], inode: { dev: bigint; ino: bigint }, kind: string): boolean {
  for (const pid of tree) {
    if (pid === self) continue;
    let fds: number[];
    try {
      fds = linux.listFds(pid);
    } catch {
      continue; // a zombie has none
    }
    for (const fd of fds) {
      try {
        if (!sameFile(fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true }), inode)) continue;
        if (linux.readFdinfo(pid, fd).extra.some((l) => l.startsWith('lock:') && linux.parseLockLine(l)?.kind === kind)) return true;
      } catch {
        /* not a file to stat */
      }
    }
  }
  return false;
}

/**
 * The I/O owner and signal of each description, asked with fcntl F_GETOWN_EX and F_GETSIG on a
 * copy of the task's fd (pidfd_getfd: the same description).
 */
function findOwners(task: CheckpointTask, files: OpenFile[], first: Map<number, number>, tree: readonly number[]): FdOwnerImage[] {
  const asked = files.filter((f) => !(f.fdinfo.flags & O.PATH) && first.get(f.fd) === f.fd); // fcntl answers EBADF on O_PATH: they have none
  const out: FdOwnerImage[] = [];
  if (asked.length === 0) return out;
  const pgid = linux.readStat(task.pid).pgrp;
  const pidfd = linux.pidfdOpen(task.pid);
  try {
    for (const f of asked) {
      const dup = linux.pidfdGetfd(pidfd, f.fd);
      try {
        const buf = Buffer.alloc(sizeOfStruct(linux.FOwnerEx));
        const o = linux.rawSyscall(SYS.fcntl, dup, F.GETOWN_EX, buf) === 0n ? decodeStruct(linux.FOwnerEx, buf) : { type: 0, pid: 0 };
        const sig = Number(linux.rawSyscall(SYS.fcntl, dup, F.GETSIG, 0));
        if (o.pid === 0 && sig <= 0) continue;
        if (o.pid !== 0) {
          const self = (o.type === F.OWNER_TID && o.pid === task.tid) || (o.type === F.OWNER_PID && o.pid === task.pid) || (o.type === F.OWNER_PGRP && o.pid === pgid && pgid === task.pid);
          // Another process of the tree (a description shared with a child that made itself the owner)
          // exists again by the time owners are set: every task is made before the finish hooks.
          const inTree = o.type === F.OWNER_PID && tree.includes(o.pid);
          if (!self && !inTree) {
            const who = o.type === F.OWNER_PGRP ? 'process group' : o.type === F.OWNER_TID ? 'thread' : 'process';
            refuse(task.pid, objectOf(f), `its I/O signals go to ${who} ${o.pid} (F_SETOWN), neither the process itself nor another process of the checkpointed tree`);
          }
        }
        const img = new FdOwnerImage();
        img.fd = f.fd;
        img.ownerType = o.type;
        img.ownerPid = o.pid;
        img.signo = Math.max(sig, 0);
        out.push(img);
      } finally {
        fs.closeSync(dup);
      }
    }
  } finally {
    fs.closeSync(pidfd);
  }
  return out;
}

export class LocksDump implements DumpHandler {
  readonly name = 'files.locks';
  readonly order = LOCKS_ORDER;
  /**
   * A read of /proc/locks is a write section of the kernel's file-lock rwsem, whose entry waits
   * for an RCU grace period (several ms), unless another such section ended less than a grace
   * period before. So a first read, its result unused, is made before the freeze and finished
   * before it (the flow awaits the promise), and a second one, started as the first ends, runs in
   * the pool around the freeze: the read made once the tree is frozen (frozen()) finds the
   * rwsem's fast state still on and ends at once instead of a grace period after the freeze. A
   * freeze longer than a grace period (a large tree) gets the wait back. Only where the
   * frozen read is made in the background too (see frozen).
   */
  prepare(ctx: CheckpointContext): Promise<void> | undefined {
    if (!ctx.signal) return undefined;
    return linux.readLocksAsync().then(
      () => void linux.readLocksAsync().catch(() => undefined),
      () => undefined,
    );
  }

  /**
   * The list the checks use, read from the frozen tree: its read starts as soon as the tree is
   * frozen, and the checks of the other handlers run meanwhile. Only for a caller that lets the
   * event loop run during the operation (it passed a signal: see checkpointYield), since the
   * result comes through the event loop; others read it in the check.
   */
  frozen(ctx: CheckpointContext): void {
    if (!ctx.signal) return;
    const all = linux.readLocksAsync();
    all.catch(() => undefined); // a checkpoint refused before this check never awaits it
    PROC_LOCKS.set(ctx, all);
  }
  async check(ctx: CheckpointContext, task: CheckpointTask): Promise<void> {
    const pending = PROC_LOCKS.get(ctx);
    const all = pending ? await pending : linux.readLocks();
    if (!pending) PROC_LOCKS.set(ctx, Promise.resolve(all)); // one list for every task of the tree
    task.state.set(FOUND, findLocks(task, frozenOpenFiles(task), ctx.treePids(task), all));
  }
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const found = task.state.get(FOUND) ?? findLocks(task, frozenOpenFiles(task), ctx.treePids(task));
    for (const l of found.locks) ctx.write(l, task.tag);
    for (const o of found.owners) ctx.write(o, task.tag);
  }
}

const PENDING = new StateKey<{ locks: FileLockImage[]; owners: FdOwnerImage[] }>('files.locks.restore');
const MAX_LOCKS = 1 << 16;

export class LocksRestore implements RestoreHandler {
  readonly name = 'files.locks';
  readonly order = LOCKS_ORDER;
  readonly types = [ObjectType.FILE_LOCK, ObjectType.FD_OWNER];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const p = task.state.ensure(PENDING, () => ({ locks: [], owners: [] }));
    const fds = task.state.get(FS_KEY)?.fds ?? [];
    if (o.type === ObjectType.FILE_LOCK) {
      const l = o.obj as FileLockImage;
      const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: `file lock on fd ${l.fd}` });
      if (!(KINDS as readonly string[]).includes(l.kind)) throw bad(`lock kind ${JSON.stringify(l.kind)}`);
      if (!fds.includes(l.fd)) throw bad(`fd ${l.fd} is not in the task's fd list`);
      if (l.type !== F.RDLCK && l.type !== F.WRLCK) throw bad(`lock type ${l.type}`);
      if (l.start < 0n || l.len < 0n || (l.kind !== 'POSIX' && l.kind !== 'OFDLCK' && (l.start !== 0n || l.len !== 0n))) throw bad('a range out of bounds');
      if (l.breakTo !== -1 && (l.kind !== 'LEASE' || (l.breakTo !== F.UNLCK && !(l.breakTo === F.RDLCK && l.type === F.WRLCK)))) throw bad(`a break toward ${l.breakTo} of ${lockName(l)}`);
      if (p.locks.length >= MAX_LOCKS) throw bad(`more than ${MAX_LOCKS} locks`);
      p.locks.push(l);
      return;
    }
    const w = o.obj as FdOwnerImage;
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: `fd ${w.fd} I/O owner` });
    if (!fds.includes(w.fd) || p.owners.some((x) => x.fd === w.fd)) throw bad(`fd ${w.fd} is not in the task's fd list, or given twice`);
    if (w.signo < 0 || w.signo > linux.NSIG) throw bad(`signal ${w.signo}`);
    if (w.ownerPid !== 0) {
      const self = (w.ownerType === F.OWNER_TID && w.ownerPid === task.tid) || ((w.ownerType === F.OWNER_PID || w.ownerType === F.OWNER_PGRP) && w.ownerPid === task.pid);
      if (!self && w.ownerType !== F.OWNER_PID) throw bad(`owner ${w.ownerType}:${w.ownerPid} is not the process itself`);
      // SIGIO to another process is sent with the credentials of whoever set the owner: cptrst's,
      // while the task is restored. Only root's own image may aim it at another process.
      if (!self && !ctx.imageTrusted) throw new CptError('EPERM', `an I/O owner that is another process (${w.ownerPid}) is restored only from an image root wrote`, { pid: task.pid, object: `fd ${w.fd} I/O owner` });
      if (!self && (!Number.isInteger(w.ownerPid) || w.ownerPid <= 0 || w.ownerPid > 4194304)) throw bad(`owner pid ${w.ownerPid}`);
      // The kernel keeps the credentials of whoever sets the owner to decide whom SIGIO may reach;
      // while restored the task holds cptrst's, which a group of other processes must not get.
      if (w.ownerType === F.OWNER_PGRP && !ctx.imageTrusted) throw new CptError('EPERM', 'an I/O owner that is a process group is restored only from an image root wrote', { pid: task.pid, object: `fd ${w.fd} I/O owner` });
    }
    p.owners.push(w);
  }

  finish(_ctx: RestartContext, task: RestartTask): void {
    const p = task.state.get(PENDING);
    if (!p) return;
    const t = task.tracee!;
    // Locks before owners: F_SETLEASE makes the caller the description's owner, and a lease's
    // break is started again while the description has none (see takeLease).
    for (const l of p.locks) take(t, task, l);
    for (const w of p.owners) {
      if (w.ownerPid !== 0 && w.ownerPid !== task.pid && w.ownerPid !== task.tid && !linux.processExists(w.ownerPid)) {
        throw new CptError('ESRCH', `the I/O owner ${w.ownerPid} is no process of the restored tree`, { pid: task.pid, object: `fd ${w.fd} I/O owner` });
      }
      if (w.ownerPid !== 0) {
        const own = encodeStruct(linux.FOwnerEx, { type: w.ownerType, pid: w.ownerPid });
        t.syscallOk(SYS.fcntl, [w.fd, F.SETOWN_EX, t.stage(own)], `fcntl(${w.fd}, F_SETOWN_EX, ${w.ownerPid})`);
      }
      if (w.signo !== 0) t.syscallOk(SYS.fcntl, [w.fd, F.SETSIG, w.signo], `fcntl(${w.fd}, F_SETSIG, ${w.signo})`);
    }
  }
}

/** Takes one lock again inside the task, never waiting. */
function take(t: Tracee, task: RestartTask, l: FileLockImage): void {
  let r: bigint;
  let call: string;
  if (l.kind === 'FLOCK') {
    call = `flock(${l.fd}, ${l.type === F.WRLCK ? 'LOCK_EX' : 'LOCK_SH'})`;
    r = t.syscall(linux.syscallNumber('flock'), [l.fd, (l.type === F.WRLCK ? LOCK.EX : LOCK.SH) | LOCK.NB]);
  } else if (l.kind === 'LEASE') {
    call = `fcntl(${l.fd}, F_SETLEASE)`;
    r = t.syscall(SYS.fcntl, [l.fd, F.SETLEASE, l.type]);
    if (r >= 0n) return takeLease(t, task, l);
  } else {
    const cmd = l.kind === 'POSIX' ? F.SETLK : F.OFD_SETLK;
    const fl = encodeStruct(linux.Flock, { type: l.type, whence: 0, start: l.start, len: l.len, pid: 0 });
    call = `fcntl(${l.fd}, ${l.kind === 'POSIX' ? 'F_SETLK' : 'F_OFD_SETLK'})`;
    r = t.syscall(SYS.fcntl, [l.fd, cmd, t.stage(fl)]);
  }
  if (r >= 0n) return;
  const code = linux.errnoName(Number(-r));
  const held = code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EACCES';
  throw new CptError(code, held
    ? `${call} failed (${code}): another process holds a conflicting lock or has the file open; it is not taken over`
    : `${call} failed inside the process: ${code}`, { pid: task.pid, object: `fd ${l.fd}: ${lockName(l)}` });
}

/**
 * After F_SETLEASE: no owner (the owners recorded are set next; a description that had none keeps
 * none), then a lease that was being broken is broken again the way it was, by a non-blocking
 * open of the file from the task itself, for reading (a break toward read) or for writing (toward
 * unlocked). With no owner the kernel signals nobody: the process got its lease-break signal
 * before the checkpoint (or has it pending, which the signals restore gives back), and does not
 * get a second. The kernel gives the holder a fresh lease-break-time from now; the time the
 * break had already run is not subtracted (a holder has at least as long as before to let go).
 */
function takeLease(t: Tracee, task: RestartTask, l: FileLockImage): void {
  t.syscallOk(SYS.fcntl, [l.fd, F.SETOWN, 0], `fcntl(${l.fd}, F_SETOWN, 0)`);
  if (l.breakTo === -1) return;
  const object = `fd ${l.fd}: ${lockName(l)} being broken toward ${l.breakTo === F.RDLCK ? 'read' : 'unlocked'}`;
  const path = t.stage(Buffer.from(`/proc/self/fd/${l.fd}\0`));
  const mode = l.breakTo === F.RDLCK ? O.RDONLY : O.WRONLY;
  const r = t.syscall(SYS.openat, [linux.AT_FDCWD, path, mode | O.NONBLOCK | O.NOCTTY | O.CLOEXEC, 0]);
  if (r >= 0n) {
    t.syscall(SYS.close, [r]);
    throw new CptError('EIO', 'the lease taken again did not conflict with an open of the file: no break was started', { pid: task.pid, object });
  }
  if (r !== -11n /* EWOULDBLOCK: the break is started */) {
    throw new CptError(linux.errnoName(Number(-r)), `the break of the lease could not be started: an open of the file ${mode === O.RDONLY ? 'for reading' : 'for writing'} inside the process failed (${linux.errnoName(Number(-r))})`, { pid: task.pid, object });
  }
  const now = Number(t.syscallOk(SYS.fcntl, [l.fd, F.GETLEASE, 0], `fcntl(${l.fd}, F_GETLEASE)`));
  if (now !== l.breakTo) throw new CptError('EIO', `after the break was started again F_GETLEASE answers ${now}, not ${l.breakTo}`, { pid: task.pid, object });
}
