/**
 * pidfds (`anon_inode:[pidfd]`, from pidfd_open or clone's CLONE_PIDFD): a pidfd of a process of
 * the tree (the process itself, another of the tree, or one of their threads with PIDFD_THREAD),
 * or of a process that has ended and been reaped (a dead pidfd: fdinfo `Pid: -1`). A pidfd of a
 * process outside the tree is refused: after a restart it would refer to whatever process then
 * has that number, or to none.
 *
 * Restart: pidfd_open(pid, flags) inside the task, with the flags it had (PIDFD_NONBLOCK,
 * PIDFD_THREAD). The processes of the tree are made in image order, each after its parent's
 * files, and threads after their process's files: a pidfd of the process itself or of a process
 * made before it is opened at once; one of a process or thread made later (a child, a thread) is
 * opened as a pidfd of the task itself and replaced, at every fd of that description, once every
 * process and thread exists (`PidfdFinish`). Such a
 * description is refused at checkpoint when another process of the tree holds it too (a child
 * would inherit the stand-in), or when an epoll watches it (it would watch the stand-in).
 *
 * A dead pidfd is made by opening a pidfd of a short-lived helper that then ends with the wait
 * status the dead process had, and is reaped: pidfds of one dead process share one (pidfs) inode
 * again, those of different ones do not, and PIDFD_GET_INFO reports the same exit status (the
 * cgroup id it reports is the restoring cptrst's). A status no helper can end with (a core dump)
 * is refused at checkpoint.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, RestoreHandler, StateKey,
  decodeStruct, i32, linux, objectType, refuse, sizeOfStruct, u64, u32,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest } from './kinds';
import { FileImage } from './file';
import { fdObject, withFileCopy } from './event-files';
import { FILES_ORDER } from './fs-struct';

const { O, PIDFD, SYS } = linux;
/** Status flags a pidfd carries that this kind restores (O_CLOEXEC is the fd's, kept by the files subsystem). */
const KNOWN_FLAGS = O.ACCMODE | O.CLOEXEC | PIDFD.NONBLOCK | PIDFD.THREAD;
/** The wait status of a dead process whose exit the kernel does not report (before PIDFD_INFO_EXIT). */
const STATUS_UNKNOWN = -1;

@objectType(ObjectType.PIDFD, 'pidfd', { parents: [ObjectType.FILE] })
export class PidfdImage {
  /** PIDFD_NONBLOCK and PIDFD_THREAD, as pidfd_open takes them. */
  @u32() flags = 0;
  /** The process (or, with PIDFD_THREAD, the thread) it refers to; -1: one that has ended and been reaped. */
  @i32() target = 0;
  /** A dead pidfd's pidfs inode: pidfds of one dead process share it (and get one helper at restart). */
  @u64() inode = 0n;
  /** A dead pidfd's wait status as PIDFD_GET_INFO reports it, or -1 (not reported by the kernel). */
  @i32() exitStatus = STATUS_UNKNOWN;
}

/** The process a pidfd refers to, from its fdinfo (`Pid:`; -1 once it has been reaped). */
function targetOf(task: CheckpointTask, f: OpenFile): number {
  const pid = f.fdinfo.fields['Pid'];
  if (pid === undefined || !/^-?\d+$/.test(pid)) refuse(task.pid, fdObject(f), 'its fdinfo shows no Pid');
  return Number(pid);
}

/** The wait status PIDFD_GET_INFO reports for a dead pidfd, or -1 when this kernel does not report it. */
function exitStatusOf(task: CheckpointTask, f: OpenFile): number {
  return withFileCopy(task, f, (copy) => {
    const buf = Buffer.alloc(sizeOfStruct(linux.PidfdInfo));
    buf.writeBigUInt64LE(BigInt(linux.PIDFD_INFO.EXIT), 0);
    const r = linux.rawSyscall(SYS.ioctl, copy, linux.PIDFD_GET_INFO, buf);
    if (r < 0n) return STATUS_UNKNOWN;
    const info = decodeStruct(linux.PidfdInfo, buf);
    return (info.mask & BigInt(linux.PIDFD_INFO.EXIT)) !== 0n ? info.exitCode : STATUS_UNKNOWN;
  });
}

/** Image order of the tree: who is made before whom at restart. */
const orderOf = (ctx: CheckpointContext): Map<number, number> => new Map((ctx.tree?.tasks ?? []).map((t, i) => [t.pid, i]));

/** The tree process a pid or tid belongs to, if any. */
function ownerOf(ctx: CheckpointContext, task: CheckpointTask, id: number): CheckpointTask | undefined {
  const tasks = ctx.tree?.tasks ?? [task];
  return tasks.find((t) => t.pid === id || (t.threads ?? []).some((th) => th.tid === id));
}

export class PidfdKind implements FileKindHandler {
  readonly kind = 'pidfd';
  readonly records = [PidfdImage];

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[pidfd]';
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    this.read(ctx, task, f);
  }

  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    out.write(this.read(ctx, task, f));
  }

  private read(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): PidfdImage {
    const object = fdObject(f);
    const odd = f.fdinfo.flags & ~KNOWN_FLAGS;
    if (odd) refuse(task.pid, object, `open flags 0${odd.toString(8)} on a pidfd are not supported`);
    const rec = new PidfdImage();
    rec.flags = f.fdinfo.flags & (PIDFD.NONBLOCK | PIDFD.THREAD);
    rec.target = targetOf(task, f);
    if (rec.target === -1) {
      rec.inode = f.stat.ino;
      rec.exitStatus = exitStatusOf(task, f);
      if (rec.exitStatus !== STATUS_UNKNOWN && !linux.endingStatusPossible(rec.exitStatus)) {
        refuse(task.pid, object, `it refers to a process that ended with wait status 0x${rec.exitStatus.toString(16)} (a core dump), which no process can be made to end with again`);
      }
      return rec;
    }
    const owner = ownerOf(ctx, task, rec.target);
    if (!owner) refuse(task.pid, object, `it refers to process ${rec.target}, which is not in the checkpointed tree; after a restart that number could be anyone's`);
    const order = orderOf(ctx);
    const later = (order.get(owner.pid) ?? 0) > (order.get(task.pid) ?? 0);
    // Threads are made in their process's finish step, after every process exists; the stand-ins
    // are replaced in each process's own finish step, so another process's thread must come first.
    if (owner.pid !== task.pid && rec.target !== owner.pid && later) {
      refuse(task.pid, object, `it refers to thread ${rec.target} of process ${owner.pid}, which is made after this process at restart; not supported`);
    }
    if (rec.target !== task.pid && (owner.pid === task.pid || later || rec.target !== owner.pid)) this.requireReplaceable(ctx, task, f, object, rec.target);
    return rec;
  }

  /** A pidfd opened late (its process is made after this one) must be the task's alone and watched by no epoll. */
  private requireReplaceable(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, object: string, target: number): void {
    for (const other of ctx.tree?.tasks ?? []) {
      if (other.pid === task.pid || other.zombie) continue;
      for (const fd of linux.listFds(other.pid)) {
        let link = '';
        try {
          link = linux.readFdLink(other.pid, fd);
        } catch {
          continue;
        }
        if (link === f.link && linux.kcmp(task.pid, other.pid, linux.KCMP.FILE, f.fd, fd) === 0) {
          refuse(task.pid, object, `the pidfd of process ${target} (made after this process at restart) is shared with process ${other.pid} (fd ${fd}); not supported`);
        }
      }
    }
    for (const fd of linux.listFds(task.pid)) {
      let link = '';
      try {
        link = linux.readFdLink(task.pid, fd);
      } catch {
        continue;
      }
      if (link !== 'anon_inode:[eventpoll]') continue;
      const watched = linux.readFdinfo(task.pid, fd).extra.some((l) => {
        const m = /^tfd:\s*(\d+)\b.*\bino:\s*([0-9a-f]+)/.exec(l);
        return m !== null && BigInt(`0x${m[2]}`) === f.stat.ino;
      });
      if (watched) refuse(task.pid, object, `the pidfd of process ${target} (made after this process at restart) is watched by epoll fd ${fd}; not supported`);
    }
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const recs = req.records.of(PidfdImage);
    const bad = (why: string) => new CptError('EBADIMG', `pidfd: ${why}`, { pid: task.pid, object: req.object });
    if (recs.length !== 1) throw bad(`${recs.length} pidfd records for one file (one is needed)`);
    const rec = recs[0];
    if (rec.flags & ~(PIDFD.NONBLOCK | PIDFD.THREAD)) throw bad(`unknown pidfd flags 0${rec.flags.toString(8)}`);
    if ((img.flags & ~KNOWN_FLAGS) !== 0 || (img.flags & O.ACCMODE) !== O.RDWR) throw bad(`open flags 0${img.flags.toString(8)}`);
    if (rec.target < -1 || rec.target === 0 || rec.target > 4194304) throw bad(`target ${rec.target}`);
    const t = task.tracee!;
    const pidfdOpen = linux.syscallNumber('pidfd_open');
    if (rec.target === -1) {
      if (rec.exitStatus !== STATUS_UNKNOWN && !linux.endingStatusPossible(rec.exitStatus)) throw bad(`exit status 0x${rec.exitStatus.toString(16)}`);
      const helper = deadHelper(ctx, rec, req.object);
      return t.syscallOk(pidfdOpen, [helper.pid, rec.flags], `pidfd_open of a process that ends (for ${req.object})`);
    }
    // The task itself, or a process made before it (an ancestor, an earlier sibling): it is there now.
    if (rec.target === task.pid || madeAlready(rec.target)) {
      return t.syscallOk(pidfdOpen, [rec.target, rec.flags], `pidfd_open(${rec.target}) for ${req.object}`);
    }
    // Made later: a pidfd of the task itself stands in for it until every process exists.
    const fd = t.syscallOk(pidfdOpen, [task.pid, rec.flags], `pidfd_open(${task.pid}) standing in for ${req.object}`);
    task.state.ensure(LATE, () => []).push({ copy: linux.fdCopyOf(task.pid, Number(fd)), target: rec.target, flags: rec.flags, object: req.object });
    return fd;
  }
}

/** A process (or thread) this restart has made already: it is there, and still traced by cptrst. */
function madeAlready(pid: number): boolean {
  try {
    return linux.readStatus(pid).tracerPid === process.pid;
  } catch {
    return false;
  }
}

/** A pidfd opened as a stand-in: cptrst's copy of it (the same description), and what it must become. */
interface Late {
  copy: number;
  target: number;
  flags: number;
  object: string;
}
const LATE = new StateKey<Late[]>('files.pidfd.late');

/** Each dead process is a helper process at restart: far more than a real process holds, few enough for the machine. */
const MAX_DEAD = 256;
/** The helpers of this restart for dead pidfds, by the dead process's pidfs inode. */
const HELPERS = new WeakMap<RestartContext, Map<bigint, linux.EndingHelper>>();

function deadHelper(ctx: RestartContext, rec: PidfdImage, object: string): linux.EndingHelper {
  let map = HELPERS.get(ctx);
  if (!map) HELPERS.set(ctx, (map = new Map<bigint, linux.EndingHelper>()));
  let h = map.get(rec.inode);
  if (!h) {
    if (map.size >= MAX_DEAD) throw new CptError('EBADIMG', `pidfds of more than ${MAX_DEAD} processes that have ended`, { object });
    // Unknown: the kernel that wrote the image did not report it, so nothing could read it.
    h = linux.spawnEndingHelper(rec.exitStatus === STATUS_UNKNOWN ? 0 : rec.exitStatus, `a dead process for ${object}`);
    map.set(rec.inode, h);
  }
  return h;
}

/** Ends the helpers (once every task's files are open) and replaces the stand-ins. */
export class PidfdFinish implements RestoreHandler {
  readonly name = 'files.pidfd';
  /** After the files' own finish (300): only the image's fd numbers are left. */
  readonly order = FILES_ORDER + 5;
  readonly types: number[] = [];

  restore(): void {
    /* no objects of its own: the pidfd kind opens the files */
  }

  /** Every process exists now: the helpers end (every pidfd of them is open), and this task's stand-ins are replaced. */
  finish(ctx: RestartContext, task: RestartTask): void {
    const helpers = HELPERS.get(ctx);
    if (helpers) {
      HELPERS.delete(ctx);
      for (const [, h] of helpers) {
        if (!h.end()) throw new CptError('EIO', `the helper process ${h.pid} standing for a dead process did not end as it should`, { pid: task.pid, object: 'pidfd' });
      }
    }
    const late = task.state.get(LATE) ?? [];
    task.state.delete(LATE);
    try {
      for (const l of late) this.replace(task, l);
    } finally {
      for (const l of late) fs.closeSync(l.copy);
    }
  }

  abort(ctx: RestartContext, task: RestartTask): void {
    const helpers = HELPERS.get(ctx);
    HELPERS.delete(ctx);
    for (const [, h] of helpers ?? []) h.end();
    for (const l of task.state.get(LATE) ?? []) fs.closeSync(l.copy);
    task.state.delete(LATE);
  }

  /** pidfd_open of the real process, put at every fd of the stand-in's description (close-on-exec kept). */
  private replace(task: RestartTask, l: Late): void {
    const t = task.tracee!;
    const fds = linux.listFds(task.pid).filter((fd) => linux.kcmp(process.pid, task.pid, linux.KCMP.FILE, l.copy, fd) === 0);
    if (fds.length === 0) throw new CptError('EIO', `the pidfd standing in for process ${l.target} is at no fd any more`, { pid: task.pid, object: l.object });
    const real = t.syscallOk(linux.syscallNumber('pidfd_open'), [l.target, l.flags], `pidfd_open(${l.target}) for ${l.object}`);
    try {
      for (const fd of fds) {
        const cloexec = (linux.readFdinfo(task.pid, fd).flags & O.CLOEXEC) !== 0;
        t.syscallOk(SYS.dup3, [real, fd, cloexec ? O.CLOEXEC : 0], `dup3 of the pidfd of ${l.target} to fd ${fd}`);
      }
    } finally {
      t.syscall(SYS.close, [real]);
    }
  }
}
