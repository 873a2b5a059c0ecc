/**
 * Terminals, shared by two subsystems: files (the pty masters and slaves, /dev/tty and the
 * caller's terminal open as fds) and task (each process's controlling terminal and its
 * terminal's foreground group).
 *
 * A pty is known by its index N: the master's fdinfo shows `tty-index: N`, its slave is
 * /dev/pts/N (device 136:N). At checkpoint the files subsystem notes which process of the tree
 * holds each master (`notePtyMaster`); a process's controlling terminal can only be made again if
 * it is such a pty, restored before the process, or the terminal cptrst runs on (a shell job). A
 * process "in the tree" is one cptrst holds (it is its tracer): the other holders of a terminal are
 * outside.
 */
import { CptError } from './errors';
import type { Tracee } from './contract';
import type { CheckpointContext } from './context';
import { openRecordedFile } from './recorded-file';
import * as linux from './linux';

const { SYS, O, TIOC, PTY } = linux;

/** The device number of the slave of pty `index`. */
export function ptySlaveRdev(index: number): bigint {
  return linux.makeDev(PTY.SLAVE_MAJOR, index);
}

/** The pty index of a slave device number, or undefined for any other device. */
export function ptyIndexOfRdev(rdev: bigint): number | undefined {
  const major = Number((rdev >> 8n) & 0xfffn);
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & 0xfff00n));
  return major === PTY.SLAVE_MAJOR ? minor : undefined;
}

/** A controlling terminal as /proc/PID/stat gives it (tty_nr: the kernel's dev_t encoding) as a device number. */
export function ttyNrToRdev(ttyNr: number): bigint {
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  return linux.makeDev(major, minor);
}

/** A terminal's name for messages: /dev/pts/N, or its device numbers. */
export function ttyName(rdev: bigint): string {
  const pty = ptyIndexOfRdev(rdev);
  if (pty !== undefined) return `/dev/pts/${pty}`;
  return `tty ${Number((rdev >> 8n) & 0xfffn)}:${Number((rdev & 0xffn) | ((rdev >> 12n) & 0xfff00n))}`;
}

/** Whether cptrst holds the process (it is part of the frozen tree). */
export function heldByUs(pid: number): boolean {
  try {
    return linux.readStatus(pid).tracerPid === process.pid;
  } catch {
    return false;
  }
}

/** What the checkpoint has seen of one pty so far (tasks are checked in image order). */
export interface PtySeen {
  /** The process of the tree that holds its master, and the fd. */
  masterPid: number;
  masterFd: number;
}

const PTYS = new WeakMap<CheckpointContext, Map<number, PtySeen>>();

/** Records that `pid` (checked now, so made at restart no later than the tasks checked after it) holds the master of pty `index`. */
export function notePtyMaster(ctx: CheckpointContext, index: number, pid: number, fd: number): void {
  let m = PTYS.get(ctx);
  if (!m) PTYS.set(ctx, (m = new Map<number, PtySeen>()));
  if (!m.has(index)) m.set(index, { masterPid: pid, masterFd: fd });
}

/** The master of pty `index` as seen in this task or an earlier one, if any. */
export function ptyMasterSeen(ctx: CheckpointContext, index: number): PtySeen | undefined {
  return PTYS.get(ctx)?.get(index);
}

/** The processes other than those of the tree whose controlling terminal is `rdev`, from one scan of /proc. */
export function outsideCttyHolders(rdev: bigint): number[] {
  const out: number[] = [];
  for (const pid of linux.allPids()) {
    try {
      const st = linux.readStat(pid);
      if (st.ttyNr !== 0 && ttyNrToRdev(st.ttyNr) === rdev && !heldByUs(pid)) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * Makes pty `index`'s slave the controlling terminal of the task, a session leader without one:
 * opens /dev/pts/N inside it (O_NOCTTY, checked to be that device), TIOCSCTTY, closes it.
 */
export function takeControllingTerminal(tracee: Tracee, index: number, pid: number, sameBoot: boolean): void {
  const object = `controlling terminal /dev/pts/${index}`;
  const fd = openRecordedFile(tracee, `/dev/pts/${index}`, {
    flags: O.RDWR | O.NOCTTY | O.CLOEXEC | O.NONBLOCK,
    expect: { type: linux.S_IF.CHR, rdev: ptySlaveRdev(index) },
    sameBoot,
    object,
  });
  try {
    const r = tracee.syscall(SYS.ioctl, [fd, TIOC.SCTTY, 0]);
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `TIOCSCTTY: the pty cannot become the process's controlling terminal`, { pid, object });
  } finally {
    tracee.syscall(SYS.close, [fd]);
  }
}
