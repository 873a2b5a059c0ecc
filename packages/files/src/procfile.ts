/**
 * Files of the /proc directory of a process of the tree (/proc/PID/stat of a child, the
 * process's own /proc/self/maps...). A restart gives every process its PID again, so the same
 * path names the restored process; but a process's descendants are made after its files, and a
 * process's own /proc files are new ones. Such a file is a regular file with a PROC_FILE record:
 * at restart a stand-in (/dev/null) holds its fd numbers, and once every process exists and has
 * its final credentials the file is opened again by its path inside the task (its own rights, as
 * the original open was), with its flags, moved to its offset, and put at each of those numbers.
 * A file of a process outside the tree (/proc/1/status...) is opened again the same way, but only
 * if, at restart, its pid still names that very process: the same start time, on the same boot
 * (else the restart fails: the pid may name another process, or none).
 * Refused: a file of a thread other than a process's main one (made later still), one whose
 * open file description another process of the tree shares (the stand-in would stay there),
 * one held by a chrooted process (the path is not its).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, ObjectType, RestartContext, RestartTask, RestoreHandler, StateKey, linux,
  nonCanonicalPath, objectType, refuse, sameFile, u32, u64,
} from '@cptrst/core';
import { FileImage } from './file';
import { OpenFile, OpenRequest, fdAt, openInTask, reopenFlags, sameOpenFile } from './kinds';

const { SYS, O, SEEK } = linux;

@objectType(ObjectType.PROC_FILE, 'proc-file', { parents: [ObjectType.FILE] })
export class ProcFileImage {
  /** The process whose /proc directory holds the file. */
  @u32() pid = 0;
  /** For a process outside the tree: its start time (clock ticks after boot), which names it on that boot; 0 for one of the tree. */
  @u64({ since: 6 }) startTime = 0n;
}

let procStDev: bigint | undefined;
function procDev(): bigint {
  procStDev ??= fs.statSync('/proc', { bigint: true }).dev;
  return procStDev;
}

/** /proc/PID/REST, with PID a number (not self: readlink names the process). */
const PROC_PATH = /^\/proc\/(\d+)\/(.+)$/;

/** What procFileOfTree found, by fd: the regular kind asks at check (describe) and again at dump. */
const PROC_OF_FD = new StateKey<Map<number, number | undefined>>('files.proc.of-fd');
/** Every fd of the tree's other processes, with its stat: listed at the task's first /proc file. */
const TREE_FDS = new StateKey<Array<{ pid: number; fd: number; st: fs.BigIntStats }>>('files.proc.tree-fds');

/**
 * The process whose /proc file `f` is, or undefined for any other file (one of /proc itself, not
 * of a process's directory). Refuses one that cannot be opened again. Found once per fd (the
 * task is frozen: the answer cannot change).
 */
export function procFileOfTree(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): number | undefined {
  const known = task.state.ensure(PROC_OF_FD, () => new Map<number, number | undefined>());
  if (known.has(f.fd)) return known.get(f.fd);
  const n = findProcFileOfTree(ctx, task, f);
  known.set(f.fd, n);
  return n;
}

function findProcFileOfTree(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): number | undefined {
  if (f.stat.dev !== procDev()) return undefined;
  const m = PROC_PATH.exec(f.link);
  if (!m) return undefined;
  const n = Number(m[1]);
  const object = `fd ${f.fd} (${f.link})`;
  const threads = linux.listThreads(task.pid);
  if (n !== task.pid && threads.includes(n)) refuse(task.pid, object, `a file of the /proc directory of thread ${n}, not the process's main thread: threads are made after the files, not supported`);
  const task2 = /^task\/(\d+)\//.exec(m[2]);
  if (task2 && Number(task2[1]) !== n) refuse(task.pid, object, `a file of the /proc directory of thread ${task2[1]}, not a process's main thread: threads are made after the files, not supported`);
  if (linux.readRoot(task.pid) !== '/') refuse(task.pid, object, 'a file of the /proc directory of a process of the tree, held by a chrooted process: it is opened again once every process exists, after the chroot, where its path does not lead');
  const why = nonCanonicalPath(f.link);
  if (why) refuse(task.pid, object, `its path cannot be used to open it again: ${why}`);
  for (const { pid: other, fd, st } of task.state.ensure(TREE_FDS, () => treeFds(ctx, task))) {
    if (!sameFile(st, f.stat)) continue;
    let same = false;
    try {
      same = sameOpenFile(fdAt(task, f), { pid: other, fd });
    } catch {
      /* gone */
    }
    if (same) refuse(task.pid, object, `a file of the /proc directory of process ${n} whose open file description process ${other} holds too (fd ${fd}): such a file is opened again by each process on its own, not supported when shared`);
  }
  return n;
}

function treeFds(ctx: CheckpointContext, task: CheckpointTask): Array<{ pid: number; fd: number; st: fs.BigIntStats }> {
  const out: Array<{ pid: number; fd: number; st: fs.BigIntStats }> = [];
  for (const other of ctx.treePids(task)) {
    if (other === task.pid) continue;
    let fds: number[];
    try {
      fds = linux.listFds(other);
    } catch {
      continue; // a zombie has none
    }
    for (const fd of fds) {
      try {
        out.push({ pid: other, fd, st: fs.statSync(`/proc/${other}/fd/${fd}`, { bigint: true }) });
      } catch {
        /* closed meanwhile, or not a file to stat */
      }
    }
  }
  return out;
}

/** The PROC_FILE record of a file procFileOfTree claimed: a process outside the tree is named by its start time too. */
export function procFileRecord(ctx: CheckpointContext, task: CheckpointTask, pid: number, object: string): ProcFileImage {
  const rec = new ProcFileImage();
  rec.pid = pid;
  if (!ctx.treePids(task).includes(pid)) {
    try {
      rec.startTime = BigInt(linux.readStat(pid).startTime);
    } catch {
      refuse(task.pid, object, `a file of the /proc directory of process ${pid}, which has ended: it cannot be opened again`);
    }
  }
  return rec;
}

/** A stand-in open in the task: cptrst's copy of its description, and what it must become. */
interface Late {
  copy: number;
  img: FileImage;
  pid: number;
  /** 0 for a process of the tree; else the start time that names the process outside it. */
  startTime: bigint;
  object: string;
}
const LATE = new StateKey<Late[]>('files.proc.late');

/** At the file's first fd: checks the record and the path, and opens the stand-in. */
export function openProcStandIn(task: RestartTask, img: FileImage, rec: ProcFileImage, req: OpenRequest): bigint {
  const bad = (why: string) => new CptError('EBADIMG', `a file of a /proc directory: ${why}`, { pid: task.pid, object: req.object });
  const m = PROC_PATH.exec(img.path);
  if (!m || Number(m[1]) !== rec.pid || rec.pid <= 0 || rec.pid > 4194304) throw bad(`the path ${JSON.stringify(img.path)} is not one of process ${rec.pid}`);
  const why = nonCanonicalPath(img.path);
  if (why) throw bad(`its path ${JSON.stringify(img.path)}: ${why}`);
  if (img.flags & (O.CREAT | O.TRUNC | O.TMPFILE)) throw bad(`open flags 0${img.flags.toString(8)}`);
  const fd = openInTask(task, '/dev/null', O.RDONLY | O.CLOEXEC, `/dev/null standing in for ${req.object}`);
  task.state.ensure(LATE, () => []).push({ copy: linux.fdCopyOf(task.pid, Number(fd)), img, pid: rec.pid, startTime: rec.startTime, object: req.object });
  return fd;
}

/** Orders after the final credentials (900), before seccomp's filters (960). */
const PROC_FILES_ORDER = 950;

/** Opens the /proc files again once every process exists, and puts them in place of their stand-ins. */
export class ProcFilesFinish implements RestoreHandler {
  readonly name = 'files.proc';
  readonly order = PROC_FILES_ORDER;
  readonly types: number[] = [];

  restore(): void {
    /* no objects of its own: the regular kind reads PROC_FILE records */
  }

  finish(ctx: RestartContext, task: RestartTask): void {
    const late = task.state.get(LATE) ?? [];
    task.state.delete(LATE);
    try {
      for (const l of late) replace(ctx, task, l);
    } finally {
      for (const l of late) fs.closeSync(l.copy);
    }
  }

  abort(_ctx: RestartContext, task: RestartTask): void {
    for (const l of task.state.get(LATE) ?? []) fs.closeSync(l.copy);
    task.state.delete(LATE);
  }
}

/** A process this restart made (traced by cptrst), or the task itself. */
function madeHere(task: RestartTask, pid: number): boolean {
  if (pid === task.pid) return true;
  try {
    return linux.readStatus(pid).tracerPid === process.pid;
  } catch {
    return false;
  }
}

/** Whether `pid` is, on this boot, the process outside the tree that the image names by its start time. */
function sameOutsider(ctx: RestartContext, pid: number, startTime: bigint): boolean {
  if (!ctx.sameBoot) return false;
  try {
    return BigInt(linux.readStat(pid).startTime) === startTime;
  } catch {
    return false;
  }
}

function replace(ctx: RestartContext, task: RestartTask, l: Late): void {
  if (l.startTime === 0n) {
    if (!madeHere(task, l.pid)) throw new CptError('EBADIMG', `a file of the /proc directory of process ${l.pid}, which is not a process of the image`, { pid: task.pid, object: l.object });
  } else if (!sameOutsider(ctx, l.pid, l.startTime)) {
    throw new CptError('ESRCH', `a file of the /proc directory of process ${l.pid}, outside the image: that pid no longer names the process of the checkpoint (it ended, or the machine rebooted)`, { pid: task.pid, object: l.object });
  }
  const t = task.tracee!;
  const fds = linux.listFds(task.pid).filter((fd) => linux.kcmp(process.pid, task.pid, linux.KCMP.FILE, l.copy, fd) === 0);
  if (fds.length === 0) throw new CptError('EIO', 'the stand-in of the file is at no fd any more', { pid: task.pid, object: l.object });
  const flags = reopenFlags(l.img.flags);
  const real = openInTask(task, l.img.path, flags | O.CLOEXEC, `open of ${l.object}`);
  try {
    const st = fs.statSync(`/proc/${task.pid}/fd/${real}`, { bigint: true });
    if (st.dev !== procDev() || !st.isFile()) throw new CptError('EIO', `${l.img.path} opened again is not a file of /proc`, { pid: task.pid, object: l.object });
    if (!(flags & O.PATH) && l.img.pos !== 0n) t.syscallOk(SYS.lseek, [real, l.img.pos, SEEK.SET], `lseek of ${l.object} to ${l.img.pos}`);
    for (const fd of fds) {
      const cloexec = (linux.readFdinfo(task.pid, fd).flags & O.CLOEXEC) !== 0;
      t.syscallOk(SYS.dup3, [real, fd, cloexec ? O.CLOEXEC : 0], `dup3 of ${l.object} to fd ${fd}`);
    }
  } finally {
    t.syscall(SYS.close, [real]);
  }
}
