/**
 * The controlling terminal of each process, and the foreground process group of its terminal.
 *
 * A process's controlling terminal is either a pty of the checkpointed tree (its master is held by
 * the process or by one restored before it: see files/src/tty.ts), or, for a job of the shell that
 * runs cptrst (`--shell-job`), the terminal of that shell: the session's leader is then outside
 * the tree. Anything else is refused at checkpoint, naming the process and the terminal: another
 * kind of terminal, a pty whose master is outside the tree or restored after the process, a pty
 * that is also the controlling terminal of a process outside the tree, a terminal outside the tree
 * without --shell-job, a process whose controlling terminal differs from its parent's while it is
 * not a session leader (only a session leader can take one).
 *
 * Restart (object TASK_CTTY, after the task's files, before its children are made, which inherit
 * it): a session leader takes its pty with TIOCSCTTY (unless its /dev/tty fd already made it take
 * it); a process that inherited a terminal it did not have drops it (TIOCNOTTY); a shell job's
 * process has cptrst's terminal, inherited from the helper that made it (its session and group are
 * cptrst's: task/identity.ts). The finish hook, once every process exists, puts the recorded
 * foreground group back (TIOCSPGRP through /dev/tty, inside the process, every signal blocked so
 * that no SIGTTOU stops it): the group a pty's session leader had in the foreground, and for a
 * shell job the restored group when it was in the foreground of the shell's terminal.
 */
import {
  CheckpointContext, CheckpointFlags, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartFlags, RestartTask,
  RestoreHandler, RestoreObject, StateKey, heldByUs, linux, objectType, outsideCttyHolders, ptyIndexOfRdev, ptyMasterSeen, ptySlaveRdev,
  refuse, str, takeControllingTerminal, ttyName, ttyNrToRdev, u32,
} from '@cptrst/core';
import { IDENTITY_KEY } from './identity';

const { SYS, O, TIOC } = linux;
export const CTTY_ORDER = 305;

@objectType(ObjectType.TASK_CTTY, 'task-ctty', { parents: [ObjectType.TASK] })
export class CttyImage {
  /** 'none'; 'pty': pty `index` of the tree; 'caller': the terminal of the shell that ran cptrst (a shell job). */
  @str() kind = 'none';
  @u32() index = 0;
  /**
   * The foreground group to give the terminal back, 0 for none: a pty's, recorded by its session
   * leader; the shell's terminal's, recorded by a shell job's process whose own group it was.
   */
  @u32() foreground = 0;
}

const CTTY_KEY = new StateKey<CttyImage>('task.ctty');
/** The task's fd on its terminal, from restore to finish (for TIOCSPGRP). */
const TTY_FD = new StateKey<bigint>('task.cttyFd');

/** Every process's group, from one scan of /proc per checkpoint. */
const GROUPS = new WeakMap<CheckpointContext, Map<number, number[]>>();
function groupMembers(ctx: CheckpointContext, pgid: number): number[] {
  let m = GROUPS.get(ctx);
  if (!m) {
    m = new Map();
    GROUPS.set(ctx, m);
    for (const pid of linux.allPids()) {
      try {
        const g = linux.readStat(pid).pgrp;
        const list = m.get(g);
        if (list) list.push(pid);
        else m.set(g, [pid]);
      } catch {
        /* gone */
      }
    }
  }
  return m.get(pgid) ?? [];
}

export class CttyDump implements DumpHandler {
  readonly name = 'task.ctty';
  readonly order = CTTY_ORDER;
  check(ctx: CheckpointContext, task: CheckpointTask): void {
    this.examine(ctx, task);
  }
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    ctx.write(this.examine(ctx, task), task.tag);
  }

  private examine(ctx: CheckpointContext, task: CheckpointTask): CttyImage {
    const img = new CttyImage();
    const st = linux.readStat(task.pid);
    if (st.ttyNr === 0) return img;
    const rdev = ttyNrToRdev(st.ttyNr);
    const object = `controlling terminal ${ttyName(rdev)}`;
    const leader = st.session === task.pid;
    if (!leader && !heldByUs(st.session)) {
      // The session, and its terminal, belong to a process outside the tree: a job of a shell.
      if (!(ctx.flags & CheckpointFlags.SHELL_JOB)) {
        refuse(task.pid, object, `the process runs on the terminal ${ttyName(rdev)} of session ${st.session}, whose leader is outside the checkpointed tree (a job of a shell); checkpoint with --shell-job to restart it on the terminal cptrst runs on`);
      }
      img.kind = 'caller';
      img.foreground = st.tpgid === st.pgrp ? st.pgrp : 0;
      return img;
    }
    const idx = ptyIndexOfRdev(rdev);
    if (idx === undefined) refuse(task.pid, object, 'the controlling terminal is not a pseudo-terminal; only ptys are restored');
    img.kind = 'pty';
    img.index = idx;
    if (!leader) {
      const parent = linux.readStat(st.ppid);
      if (parent.ttyNr !== st.ttyNr) {
        refuse(task.pid, object, `the process is not a session leader and its controlling terminal is not its parent's (${parent.ttyNr ? ttyName(ttyNrToRdev(parent.ttyNr)) : 'none'}); only a session leader can take one`);
      }
      return img;
    }
    if (!ptyMasterSeen(ctx, idx)) {
      refuse(task.pid, object, `the master of pty ${idx} is not held by this process or one restored before it; its controlling terminal could not be made again`);
    }
    const outside = outsideCttyHolders(ptySlaveRdev(idx));
    if (outside.length) refuse(task.pid, object, `it is also the controlling terminal of process ${outside.join(', ')}, outside the checkpointed tree`);
    if (st.tpgid > 0) {
      const members = groupMembers(ctx, st.tpgid);
      if (!members.some((p) => heldByUs(p))) {
        refuse(task.pid, object, `its foreground process group ${st.tpgid} has no process in the checkpointed tree`);
      }
      img.foreground = st.tpgid;
    }
    return img;
  }
}

export class CttyRestore implements RestoreHandler {
  readonly name = 'task.ctty';
  readonly order = CTTY_ORDER;
  readonly types = [ObjectType.TASK_CTTY];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as CttyImage;
    const object = 'controlling terminal';
    const t = task.tracee;
    const me = task.state.get(IDENTITY_KEY);
    if (!t || !me) throw new CptError('EBADIMG', 'a controlling terminal before its task', { pid: task.pid, object });
    const bad = (why: string) => new CptError('EBADIMG', why, { pid: task.pid, object });
    if (img.foreground > 4194304) throw bad(`foreground group ${img.foreground}`);
    const now = linux.readStat(task.pid).ttyNr;
    const leader = me.sid === me.pid;
    switch (img.kind) {
      case 'none':
        if (now !== 0) dropTerminal(task);
        break;
      case 'pty':
        if (img.index >= 1 << 20) throw bad(`pty ${img.index}`);
        if (leader && now === 0) takeControllingTerminal(t, img.index, task.pid, ctx.sameBoot);
        if (ttyNrToRdev(linux.readStat(task.pid).ttyNr) !== ptySlaveRdev(img.index)) {
          throw new CptError('EIO', `the process has ${now ? ttyName(ttyNrToRdev(now)) : 'no controlling terminal'}, not /dev/pts/${img.index}`, { pid: task.pid, object });
        }
        break;
      case 'caller': {
        if (!(ctx.flags & RestartFlags.SHELL_JOB)) {
          throw new CptError('EINVAL', 'the process ran on the terminal of the shell that checkpointed it (a shell job); restart it with --shell-job to give it the terminal cptrst runs on', { pid: task.pid, object });
        }
        const mine = linux.readStat(process.pid).ttyNr;
        if (mine === 0) throw new CptError('ENOTTY', 'the process ran on the terminal of a shell (a shell job), and cptrst has no controlling terminal to give it', { pid: task.pid, object });
        if (now !== mine) throw new CptError('EIO', `the process has ${now ? ttyName(ttyNrToRdev(now)) : 'no controlling terminal'}, not cptrst's ${ttyName(ttyNrToRdev(mine))}`, { pid: task.pid, object });
        break;
      }
      default:
        throw bad(`controlling terminal of kind '${img.kind}'`);
    }
    if (img.foreground) {
      // Opened now: by the finish hook a pty may be locked again (no more opens of it).
      const fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from('/dev/tty\0')), O.RDWR | O.NOCTTY | O.CLOEXEC | O.NONBLOCK, 0], 'opening /dev/tty');
      task.state.set(TTY_FD, fd);
    }
    task.state.set(CTTY_KEY, img);
  }

}

/**
 * The foreground group, once every process exists, through the fd opened at restore: a handler of
 * its own, ordered before the files subsystem's finish hook, which closes every fd above the image's.
 */
export class CttyForeground implements RestoreHandler {
  readonly name = 'task.ctty.foreground';
  readonly order = 299;
  readonly types: number[] = [];
  restore(): void {
    /* no objects: CttyRestore reads TASK_CTTY */
  }
  finish(_ctx: RestartContext, task: RestartTask): void {
    const img = task.state.get(CTTY_KEY);
    const fd = task.state.get(TTY_FD);
    if (!img || fd === undefined) return;
    task.state.delete(TTY_FD);
    const group = img.kind === 'caller' ? linux.readStat(task.pid).pgrp : img.foreground;
    const t = task.tracee!;
    try {
      const v = Buffer.alloc(4);
      v.writeInt32LE(group, 0);
      const r = t.syscall(SYS.ioctl, [fd, TIOC.SPGRP, t.stage(v)]);
      if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `TIOCSPGRP: process group ${group} cannot be put in the foreground of its terminal`, { pid: task.pid, object: `process group ${group}` });
    } finally {
      t.syscall(SYS.close, [fd]);
    }
  }
}

/** A terminal the process inherited but did not have: dropped (TIOCNOTTY through /dev/tty; not a session leader, so nobody is signalled). */
function dropTerminal(task: RestartTask): void {
  const t = task.tracee!;
  const fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from('/dev/tty\0')), O.RDWR | O.NOCTTY | O.CLOEXEC | O.NONBLOCK, 0], 'opening /dev/tty');
  try {
    t.syscallOk(SYS.ioctl, [fd, TIOC.NOTTY, 0], 'TIOCNOTTY');
  } finally {
    t.syscall(SYS.close, [fd]);
  }
}
