/**
 * Terminals open as fds: Unix98 pseudo-terminals whose master is in the checkpointed tree (the
 * screen or tmux case), /dev/tty, and the terminal cptrst runs on (a shell job). Every other
 * terminal (a serial line, a virtual console, /dev/console, a pty whose master is outside the tree)
 * stays with the chardev kind, which refuses it.
 *
 * Checkpoint. A pty is known by its index N (the master's fdinfo `tty-index`, the slave's minor).
 * The master's FILE carries the pty: the slave's termios (a master's termios requests act on its
 * slave), window size, packet mode, lock (TIOCGPTLCK), the slave's exclusive mode, owner and
 * permissions, whether the slave was opened and closed since (the master then reads EIO), and
 * the data buffered in both directions. A slave's FILE names its index. Every holder of the pty
 * (an fd of the master or the slave, or the pty as controlling terminal) must be a process of the
 * tree, and the master's holder must be restored no later than any slave's (the same process, or
 * one before it in the image); otherwise it is refused, naming the fd and the holder.
 *
 * The buffered data cannot be peeked: it is read and put back at once, while every holder is
 * frozen, so the process finds the same bytes whether the checkpoint then succeeds or fails; at
 * checkpoint by a guardian (core/guardian.ts), a child process that finishes the put-back even if
 * cptrst is killed half way. The
 * data waiting for the master's reader is read from a copy of the master (pidfd_getfd) and goes
 * back with TIOCSTI into the master's line discipline, which is always raw. The data waiting for
 * the slave's reader is read through a slave description of cptrst's own (TIOCGPTPEER), line by
 * line in canonical mode (so the line ends and end-of-file marks are kept), then the unfinished
 * line with ICANON off; it goes back with TIOCSTI into the slave under a termios that stores each
 * byte as it is (no echo, no signals, no input translation, no erase or kill characters), followed
 * by the original termios. TIOCSTI needs CAP_SYS_ADMIN: a pty is refused to a checkpoint without it.
 *
 * Restart. The master's FILE opens /dev/ptmx inside the task until the kernel hands out index N
 * (ptys are numbered lowest free first; the lower ones opened on the way are closed again); an N
 * another pty holds is EBUSY. cptrst then sets the pty up through a copy of that master: termios,
 * window size, the buffered data, the slave's owner and mode, packet mode. Slaves are opened by
 * path (/dev/pts/N, checked to be that device) with O_NOCTTY: the controlling terminal is the task
 * subsystem's. Lock and exclusive mode are set in the finish hook, after every slave is open.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointFlags, GuardianEntry, guardianReply, guardianStart, runGuardian, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartFlags, RestartTask,
  RestoreHandler, SharedObject, StateKey, bool, bytes, carriedIn, decodeStruct, encodeStruct, heldByUs, linux, notePtyMaster, objectType, openRecordedFile, otherHolders,
  outsideCttyHolders, ownHolders, ptyIndexOfRdev, shareAmong, ptyMasterSeen, ptySlaveRdev, refuse, sizeOfStruct, str, takeControllingTerminal, ttyName, ttyNrToRdev, u32, u32s,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, reopenFlags } from './kinds';
import { FileImage } from './file';

const { SYS, O, TIOC, TERMIOS, PTY } = linux;

/** A terminal's record, under its FILE. */
@objectType(ObjectType.TTY, 'tty', { parents: [ObjectType.FILE] })
class TtyImage {
  /**
   * 'master' or 'slave' of pty `index`; 'carried-master': a description of a master that an
   * ancestor made for its descendants (its 'master' record, under a FILE_CARRY, has the state);
   * 'hungup': a slave of pty `index` whose master was closed;
   * 'devtty' (/dev/tty: the controlling terminal); 'caller' (the terminal cptrst runs on).
   */
  @str() role = '';
  @u32() index = 0;
  /** The slave's struct termios (the kernel's, 36 bytes): on a master's record only, as all below. */
  @bytes() termios: Buffer = Buffer.alloc(0);
  /** rows, columns, x and y pixels. */
  @u32s() winsize: number[] = [];
  @bool() packet = false;
  @bool() locked = false;
  @bool() exclusive = false;
  /** No process holds the slave, which was opened and closed (the master reads EIO). */
  @bool() slaveClosed = false;
  /** The slave's owner and permissions (on a master's record, and on a hung-up slave's). */
  @u32() slaveUid = 0;
  @u32() slaveGid = 0;
  @u32() slaveMode = 0;
  /** Bytes waiting for the slave's reader: complete lines (ends in `inputLines`), then an unfinished one. */
  @bytes() input: Buffer = Buffer.alloc(0);
  /** End offset of each complete line in `input`. */
  @u32s() inputLines: number[] = [];
  /** Indices (into inputLines) of the lines ended by end-of-file rather than a line-end character. */
  @u32s() inputEof: number[] = [];
  /** Bytes waiting for the master's reader. */
  @bytes() output: Buffer = Buffer.alloc(0);
}

const TERMIOS_SIZE = sizeOfStruct(linux.KernelTermios);
/** The most data stored per direction: what one line discipline buffer holds (TIOCSTI cannot put back more). */
const TTY_DATA_MAX = 4095;
/** What may wait at check time (complete lines in canonical mode), so that with an unfinished line it stays below TTY_DATA_MAX. */
const TTY_CHECK_MAX = 2048;
const { IN: POLLIN, PRI: POLLPRI } = linux.POLL;
const PTMX = makeRdev(PTY.TTYAUX_MAJOR, PTY.PTMX_MINOR);
const DEVTTY = makeRdev(PTY.TTYAUX_MAJOR, PTY.TTY_MINOR);
const PTMX_PATHS = ['/dev/ptmx', '/dev/pts/ptmx'];

function makeRdev(major: number, minor: number): bigint {
  return linux.makeDev(major, minor);
}

const objectOf = (f: OpenFile): string => `fd ${f.fd} (${f.link})`;

// ---------------------------------------------------------------------------------------------
// cptrst's own calls on its copies of the pty

function ioctl(fd: number, req: number, arg: Buffer | number | null, what: string): bigint {
  const r = linux.rawSyscall(SYS.ioctl, fd, req, arg);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `${what}: ${linux.errnoName(Number(-r))}`, { object: 'tty' });
  return r;
}

function ioctlGetInt(fd: number, req: number, what: string): number {
  const v = Buffer.alloc(4);
  ioctl(fd, req, v, what);
  return v.readInt32LE(0);
}

function ioctlSetInt(fd: number, req: number, value: number, what: string): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  ioctl(fd, req, v, what);
}

function getTermios(fd: number): linux.KernelTermios {
  const b = Buffer.alloc(TERMIOS_SIZE);
  ioctl(fd, TIOC.TCGETS, b, 'TCGETS');
  return decodeStruct(linux.KernelTermios, b);
}

function setTermios(fd: number, t: linux.KernelTermios): void {
  ioctl(fd, TIOC.TCSETS, encodeStruct(t), 'TCSETS');
}

function cloneTermios(t: linux.KernelTermios): linux.KernelTermios {
  return decodeStruct(linux.KernelTermios, encodeStruct(t));
}

/** poll(fd) with no wait; a tty's poll also runs the pending transfers into its line discipline. */
function pollNow(fd: number): number {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN | POLLPRI, 4);
  const r = linux.rawSyscall(linux.syscallNumber('poll'), pfd, 1, 0);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), 'poll on the terminal', { object: 'tty' });
  return pfd.readInt16LE(6);
}

/** read(2) of up to n bytes: the bytes, or undefined for EAGAIN. */
function readSome(fd: number, n: number): Buffer | undefined {
  const b = Buffer.alloc(n);
  const r = linux.rawSyscall(SYS.read, fd, b, n);
  if (r === -BigInt(linux.ERRNO.EAGAIN)) return undefined;
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), 'reading the data buffered in the terminal', { object: 'tty' });
  return b.subarray(0, Number(r));
}

function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    fs.closeSync(fd);
  } catch {
    /* closed */
  }
}

/** A slave description of cptrst's own, from its copy of the master (the pty unlocked meanwhile if it is locked). */
function openPeer(master: number): number {
  const locked = ioctlGetInt(master, TIOC.GPTLCK, 'TIOCGPTLCK') !== 0;
  if (locked) ioctlSetInt(master, TIOC.SPTLCK, 0, 'TIOCSPTLCK');
  try {
    return Number(ioctl(master, TIOC.GPTPEER, O.RDWR | O.NOCTTY | O.NONBLOCK | O.CLOEXEC, 'TIOCGPTPEER'));
  } finally {
    if (locked) ioctlSetInt(master, TIOC.SPTLCK, 1, 'TIOCSPTLCK');
  }
}

/** What waits in a pty: for the slave's reader (complete lines, then the unfinished one) and for the master's. */
interface PtyData {
  input: Buffer;
  lines: number[];
  eof: number[];
  output: Buffer;
}

/** Takes the data waiting for the master's reader (strips the packet-mode header of each read). */
function drainMaster(master: number, packet: boolean): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (;;) {
    const ev = pollNow(master);
    if (!(ev & POLLIN)) break;
    const n = linux.ioctlInt(master, linux.FIONREAD);
    if (n <= 0) break;
    const b = readSome(master, n + (packet ? 1 : 0));
    if (!b || b.length === 0) break;
    const data = packet ? b.subarray(1) : b;
    if (packet && b[0] !== 0) throw new CptError('EIO', `a packet-mode status byte 0x${b[0].toString(16)} came with the data`, { object: 'tty' });
    parts.push(Buffer.from(data));
    total += data.length;
    if (total > TTY_DATA_MAX) break;
  }
  return Buffer.concat(parts);
}

/** Takes the data waiting for the slave's reader, through cptrst's own non-blocking slave description. */
function drainSlave(peer: number, t: linux.KernelTermios): Omit<PtyData, 'output'> {
  const parts: Buffer[] = [];
  const lines: number[] = [];
  const eof: number[] = [];
  let total = 0;
  if ((t.lflag & TERMIOS.ICANON) && !(t.lflag & TERMIOS.EXTPROC)) {
    // One read per line: a canonical read ends at a line end, and an end-of-file gives what precedes it.
    const ends = new Set<number>([0x0a]);
    for (const c of [t.cc[TERMIOS.VEOL], ...(t.lflag & TERMIOS.IEXTEN ? [t.cc[TERMIOS.VEOL2]] : [])]) if (c !== TERMIOS.VDISABLE) ends.add(c);
    while (total <= TTY_DATA_MAX && pollNow(peer) & POLLIN) {
      const b = readSome(peer, 2 * (TTY_DATA_MAX + 1));
      if (!b) break;
      parts.push(Buffer.from(b));
      total += b.length;
      if (b.length === 0 || !ends.has(b[b.length - 1])) eof.push(lines.length);
      lines.push(total);
    }
    // The unfinished line: readable only with ICANON off (no line has a boundary left to lose).
    const raw = cloneTermios(t);
    raw.lflag &= ~TERMIOS.ICANON;
    raw.cc[TERMIOS.VMIN] = 0;
    raw.cc[TERMIOS.VTIME] = 0;
    setTermios(peer, raw);
  }
  for (;;) {
    const b = readSome(peer, TTY_DATA_MAX + 1);
    if (!b || b.length === 0) break;
    parts.push(Buffer.from(b));
    total += b.length;
    if (total > TTY_DATA_MAX) break;
  }
  return { input: Buffer.concat(parts), lines, eof };
}

/**
 * Puts data into an (otherwise empty) pty and leaves its slave with termios `t`: the master's
 * share with TIOCSTI on the master (its line discipline is raw), the slave's with TIOCSTI on the
 * slave under a termios that stores every byte as it is, the lines ended as they were.
 */
function putBack(master: number, peer: number, t: linux.KernelTermios, d: PtyData, packet: boolean): void {
  const sti = (fd: number, byte: number) => {
    const b = Buffer.from([byte]);
    ioctl(fd, TIOC.STI, b, 'TIOCSTI');
  };
  for (const byte of d.output) sti(master, byte);
  if (d.input.length) {
    const safe = cloneTermios(t);
    safe.lflag &= ~(TERMIOS.ECHO | TERMIOS.ECHOE | TERMIOS.ECHOK | TERMIOS.ECHONL | TERMIOS.ECHOCTL | TERMIOS.ECHOPRT | TERMIOS.ECHOKE | TERMIOS.ISIG | TERMIOS.IEXTEN);
    safe.iflag &= ~(TERMIOS.INLCR | TERMIOS.IGNCR | TERMIOS.ICRNL | TERMIOS.IUCLC | TERMIOS.ISTRIP);
    // IXON changes are reported to a packet-mode master: left as it is there.
    if (!packet) safe.iflag &= ~TERMIOS.IXON;
    safe.cc[TERMIOS.VERASE] = TERMIOS.VDISABLE;
    safe.cc[TERMIOS.VKILL] = TERMIOS.VDISABLE;
    if (d.eof.length && safe.cc[TERMIOS.VEOF] === TERMIOS.VDISABLE) safe.cc[TERMIOS.VEOF] = eofChar(d, t);
    setTermios(peer, safe);
    let start = 0;
    d.lines.forEach((end, i) => {
      for (const byte of d.input.subarray(start, end)) sti(peer, byte);
      if (d.eof.includes(i)) sti(peer, safe.cc[TERMIOS.VEOF]);
      start = end;
    });
    for (const byte of d.input.subarray(start)) sti(peer, byte);
  }
  setTermios(peer, t);
}

/**
 * A slave description for cptrst to read settings through: a copy of one the tree holds, or
 * else one of its own (openPeer, which unlocks a locked pty for the moment it takes).
 */
function slaveOf(master: number, holder: { pid: number; fd: number } | undefined): number {
  return holder ? linux.fdCopyOf(holder.pid, holder.fd) : openPeer(master);
}

/** Takes the data of a pty and puts it back at once (through a master and a slave description): what was read. */
function takeAndPutBack(master: number, peer: number, packet: boolean): PtyData {
  const t = getTermios(peer);
  const output = drainMaster(master, packet);
  let input: Omit<PtyData, 'output'>;
  try {
    input = drainSlave(peer, t);
  } catch (e) {
    putBack(master, peer, t, { input: Buffer.alloc(0), lines: [], eof: [], output }, packet);
    throw e;
  }
  const data = { ...input, output };
  putBack(master, peer, t, data, packet);
  return data;
}

const PTY_GUARDIAN: GuardianEntry = { file: __filename, pkg: '@cptrst/files', path: ['ptyDataGuardian'] };

/**
 * takeAndPutBack in a guardian (core/guardian.ts: a child process that outlives cptrst) on
 * cptrst's copy of the master, its fd 3, and a slave description of its own (openPeer: a locked
 * pty is unlocked for that moment, guarded too). Between the read and the put-back the bytes are
 * only in the reader's memory and the slave's termios is not its own (ICANON off, then the
 * termios TIOCSTI needs): cptrst dying there would lose them and leave the terminal changed.
 */
function guardedTake(master: number, packet: boolean): PtyData {
  const got = runGuardian<{ input: string; lines: number[]; eof: number[]; output: string }>(PTY_GUARDIAN, [packet ? '1' : '0'], [master], 'reads and puts back a pty\'s data');
  return { input: Buffer.from(got.input, 'base64'), lines: got.lines, eof: got.eof, output: Buffer.from(got.output, 'base64') };
}

/** The guardian's section (see guardedTake): the master is its fd 3. */
export function ptyDataGuardian(): void {
  const args = guardianStart();
  guardianReply(() => {
    if (!args) throw new CptError('EINTR', 'cptrst ended before the pty was read', { object: 'tty' });
    const peer = openPeer(3);
    try {
      const d = takeAndPutBack(3, peer, args[0] === '1');
      return { input: d.input.toString('base64'), lines: d.lines, eof: d.eof, output: d.output.toString('base64') };
    } finally {
      closeQuietly(peer);
    }
  });
}

/** A character to end the EOF-terminated lines with when the terminal has none: one that is in none of them. */
function eofChar(d: PtyData, t: linux.KernelTermios): number {
  const used = new Set([...d.input, 0x0a, t.cc[TERMIOS.VEOL], t.cc[TERMIOS.VEOL2]]);
  for (let c = 4; c < 256; c++) if (!used.has(c)) return c;
  throw new CptError('EOPNOTSUPP', 'no character is free to end the lines ended by end-of-file', { object: 'tty' });
}

// ---------------------------------------------------------------------------------------------
// checkpoint: who holds which pty

interface PtyHolders {
  /** (pid, fd) of every master and slave fd, any process. */
  masters: Array<{ pid: number; fd: number }>;
  slaves: Array<{ pid: number; fd: number }>;
}

const HOLDERS = new WeakMap<CheckpointContext, Map<number, PtyHolders>>();

/** Every process's fds on ptys, by index (one scan of /proc per checkpoint). */
function ptyHolders(ctx: CheckpointContext, index: number): PtyHolders {
  let all = HOLDERS.get(ctx);
  if (!all) {
    all = new Map();
    HOLDERS.set(ctx, all);
    const of = (i: number) => {
      let h = all!.get(i);
      if (!h) all!.set(i, (h = { masters: [], slaves: [] }));
      return h;
    };
    for (const pid of linux.allPids()) {
      if (pid === process.pid) continue;
      for (const { fd, link } of linux.fdLinks(pid)) {
        if (PTMX_PATHS.includes(link)) {
          const i = masterIndex(pid, fd);
          if (i !== undefined) of(i).masters.push({ pid, fd });
        } else if (/^\/dev\/pts\/\d+$/.test(link)) {
          try {
            const i = ptyIndexOfRdev(fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true }).rdev);
            if (i !== undefined) of(i).slaves.push({ pid, fd });
          } catch {
            /* closed meanwhile */
          }
        }
      }
    }
  }
  return all.get(index) ?? { masters: [], slaves: [] };
}

/** The pty index of a master fd (fdinfo `tty-index`). */
function masterIndex(pid: number, fd: number): number | undefined {
  try {
    const v = linux.readFdinfo(pid, fd).fields['tty-index'];
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  } catch {
    return undefined;
  }
}

const isMaster = (f: OpenFile): boolean => f.stat.isCharacterDevice() && f.stat.rdev === PTMX && PTMX_PATHS.includes(f.link);

function describeHolder(h: { pid: number; fd: number }): string {
  return `process ${h.pid} (fd ${h.fd})`;
}

/** Refuses a pty that a process outside the tree holds (an fd of either side, or as its controlling terminal). */
function refuseOutsiders(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, index: number): PtyHolders {
  const h = ptyHolders(ctx, index);
  const outside = [...h.masters, ...h.slaves].filter((x) => !heldByUs(x.pid));
  if (outside.length) {
    refuse(task.pid, objectOf(f), `pty ${index} is also open in ${outside.map(describeHolder).join(', ')}, outside the checkpointed tree; it would lose it`);
  }
  const cttys = outsideCttyHolders(ptySlaveRdev(index));
  if (cttys.length) refuse(task.pid, objectOf(f), `/dev/pts/${index} is the controlling terminal of process ${cttys.join(', ')}, outside the checkpointed tree`);
  return h;
}

/** What the checkpoint knows of a pty's master, read at check and kept for the dump. */
interface MasterState {
  index: number;
  holdsSlave: boolean;
  /** A slave fd of the tree, whose description cptrst copies to read the slave's settings (opening one may unlock the pty). */
  slave?: { pid: number; fd: number };
  hup: boolean;
}

function examineMaster(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): MasterState {
  const object = objectOf(f);
  const index = masterIndex(task.pid, f.fd);
  if (index === undefined) refuse(task.pid, object, 'the pty master shows no tty-index in its fdinfo');
  const seen = ptyMasterSeen(ctx, index);
  if (seen && seen.masterPid !== task.pid) {
    // The one description of this master, which an earlier process holds: the files subsystem
    // keeps it when it is the parent's, and refuses it otherwise.
    if (linux.kcmp(task.pid, seen.masterPid, linux.KCMP.FILE, f.fd, seen.masterFd) === 0) return { index, holdsSlave: true, hup: false };
    refuse(task.pid, object, `the master of pty ${index} is also held by process ${seen.masterPid} (fd ${seen.masterFd})`);
  }
  notePtyMaster(ctx, index, task.pid, f.fd);
  const h = refuseOutsiders(ctx, task, f, index);
  if (process.geteuid?.() !== 0) refuse(task.pid, object, 'checkpointing a pty needs root (CAP_SYS_ADMIN): its buffered input is put back with TIOCSTI');
  let copy: number | undefined;
  try {
    copy = linux.fdCopyOf(task.pid, f.fd);
    const ldisc = ioctlGetInt(copy, TIOC.GETD, 'TIOCGETD');
    if (ldisc !== TERMIOS.N_TTY) refuse(task.pid, object, `pty ${index} uses line discipline ${ldisc}; only the default (N_TTY) is supported`);
    const locked = Buffer.alloc(TERMIOS_SIZE);
    ioctl(copy, TIOC.GLCKTRMIOS, locked, 'TIOCGLCKTRMIOS');
    if (locked.some((b) => b !== 0)) refuse(task.pid, object, `pty ${index} has locked termios bits (TIOCSLCKTRMIOS); not supported`);
    const packet = ioctlGetInt(copy, TIOC.GPKT, 'TIOCGPKT') !== 0;
    const ev = pollNow(copy);
    if (packet && ev & POLLPRI) refuse(task.pid, object, `a packet-mode status byte waits on the master of pty ${index}; it cannot be read without taking it`);
    if (packet && getTermios(copy).lflag & TERMIOS.EXTPROC) refuse(task.pid, object, `pty ${index} is in packet mode with EXTPROC; not supported`);
    const holdsSlave = h.slaves.length > 0;
    const hup = (ev & 0x10) !== 0; // POLLHUP: the slave was opened and is closed again
    if (!holdsSlave && !hup) {
      refuse(task.pid, object, `the slave /dev/pts/${index} of this pty has never been opened; what was written to it cannot be read without opening it, which would change the pty`);
    }
    // Read and put back whole only while a line discipline's buffer holds it all: refused before anything is read.
    const slave = holdsSlave ? h.slaves[0] : undefined;
    const peer = slaveOf(copy, slave);
    try {
      pollNow(peer);
      const waiting = Math.max(linux.ioctlInt(copy, linux.FIONREAD), linux.ioctlInt(peer, linux.FIONREAD));
      if (waiting > TTY_CHECK_MAX) refuse(task.pid, object, `${waiting} bytes wait in pty ${index}; at most ${TTY_CHECK_MAX} per direction are read and put back`);
    } finally {
      closeQuietly(peer);
    }
    return { index, holdsSlave, hup, ...(slave ? { slave } : {}) };
  } finally {
    closeQuietly(copy);
  }
}

/** Reads the pty's state and data (putting the data back at once), for the master's record. */
function dumpMaster(task: CheckpointTask, f: OpenFile, st: MasterState, rec: TtyImage): void {
  const object = objectOf(f);
  let copy: number | undefined;
  let peer: number | undefined;
  try {
    copy = linux.fdCopyOf(task.pid, f.fd);
    rec.packet = ioctlGetInt(copy, TIOC.GPKT, 'TIOCGPKT') !== 0;
    rec.locked = ioctlGetInt(copy, TIOC.GPTLCK, 'TIOCGPTLCK') !== 0;
    const ws = Buffer.alloc(8);
    ioctl(copy, TIOC.GWINSZ, ws, 'TIOCGWINSZ');
    const w = decodeStruct(linux.Winsize, ws);
    rec.winsize = [w.row, w.col, w.xpixel, w.ypixel];
    rec.slaveClosed = !st.holdsSlave && st.hup;
    peer = slaveOf(copy, st.slave);
    const pst = fs.fstatSync(peer);
    [rec.slaveUid, rec.slaveGid, rec.slaveMode] = [pst.uid, pst.gid, pst.mode & 0o7777];
    rec.exclusive = ioctlGetInt(peer, TIOC.GEXCL, 'TIOCGEXCL') !== 0;
    const t = getTermios(peer);
    rec.termios = encodeStruct(t);
    // Read and put back at once, every holder frozen, by a process that outlives cptrst: the
    // process finds the same bytes whatever happens next, cptrst's death included.
    const data = guardedTake(copy, rec.packet);
    const { output, input } = data;
    if (output.length > TTY_DATA_MAX || input.length > TTY_DATA_MAX) {
      throw new CptError('EIO', `pty ${st.index}: ${Math.max(output.length, input.length)} bytes were buffered in one direction, more than the ${TTY_DATA_MAX} a line discipline holds`, { pid: task.pid, object });
    }
    rec.input = input;
    rec.inputLines = data.lines;
    rec.inputEof = data.eof;
    rec.output = output;
  } catch (e) {
    if (e instanceof CptError && e.pid === undefined) throw new CptError(e.code, `pty ${st.index}: ${e.message}`, { pid: task.pid, object });
    throw e;
  } finally {
    closeQuietly(peer);
    closeQuietly(copy);
  }
}

/** The master fd of pty `idx` among the task's files, if it holds it. */
function ownMaster(task: CheckpointTask, files: OpenFile[], idx: number): OpenFile | undefined {
  return files.find((g) => isMaster(g) && masterIndex(task.pid, g.fd) === idx);
}

/** A slave (or /dev/tty) of pty `idx`: its master must be in the tree and made no later than this task. */
function requireMasterFirst(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, idx: number): void {
  if (ptyMasterSeen(ctx, idx)) return;
  const h = ptyHolders(ctx, idx);
  if (h.masters.some((m) => m.pid === task.pid)) return;
  const inTree = h.masters.filter((m) => heldByUs(m.pid));
  if (inTree.length) return carryMaster(ctx, task, f, idx, h, inTree);
  const where = h.masters.length ? `by ${h.masters.map(describeHolder).join(', ')}, outside the checkpointed tree` : 'by no process';
  refuse(task.pid, objectOf(f), `the master of pty ${idx} is held ${where}; ${shellJobHint(task)}`);
}

/** The ptys whose master an ancestor of its holders makes and carries to them (by index). */
const CARRIED_PTYS = new WeakMap<CheckpointContext, Map<number, SharedObject>>();

/**
 * A slave (or /dev/tty) of a pty whose master a process restored after this one holds (it got the
 * master's description from an ancestor that closed it since): the lowest common ancestor of every
 * process of the tree that holds the pty (an fd of either side, or as controlling terminal) makes
 * the pty at restart, before this process opens its slave, and carries the master's description
 * to the descendants that hold it (core's holders.ts: the master's FILE is written under that
 * ancestor with FILE_CARRY).
 */
function carryMaster(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, idx: number, h: PtyHolders, masters: Array<{ pid: number; fd: number }>): void {
  const rdev = ptySlaveRdev(idx);
  const pids = [task.pid, ...[...h.masters, ...h.slaves].map((x) => x.pid).filter(heldByUs)];
  for (const pid of linux.allPids()) {
    try {
      const st = linux.readStat(pid);
      if (st.ttyNr !== 0 && ttyNrToRdev(st.ttyNr) === rdev && heldByUs(pid)) pids.push(pid);
    } catch {
      /* gone */
    }
  }
  const s = shareAmong(ctx, task, `pty:${idx}`, pids, masters);
  if (!s || masters.some((m) => m.pid === s.maker)) {
    refuse(task.pid, objectOf(f), `the master of pty ${idx} is held by ${describeHolder(masters[0])}, which is restored after this process, and cannot be made by a process restored before it`);
  }
  let table = CARRIED_PTYS.get(ctx);
  if (!table) CARRIED_PTYS.set(ctx, (table = new Map<number, SharedObject>()));
  table.set(idx, s);
  // The master is known from here on: its holders' descriptions are checked against this one.
  notePtyMaster(ctx, idx, masters[0].pid, masters[0].fd);
}

function shellJobHint(task: CheckpointTask): string {
  const st = linux.readStat(task.pid);
  return st.ttyNr !== 0 && !heldByUs(st.session)
    ? `if it is the terminal the tree runs on (the shell's, ${ttyName(ttyNrToRdev(st.ttyNr))}), checkpoint with --shell-job`
    : 'a terminal outside the tree cannot be restored';
}

/** The fd is on the terminal the tree runs on (its session leader is outside the tree), and the checkpoint was asked to treat it as the caller's. */
function isCallerTerminal(ctx: CheckpointContext, task: CheckpointTask, rdev: bigint): boolean {
  if (!(ctx.flags & CheckpointFlags.SHELL_JOB)) return false;
  const st = linux.readStat(task.pid);
  return st.ttyNr !== 0 && ttyNrToRdev(st.ttyNr) === rdev && !heldByUs(st.session);
}

const MASTERS = new WeakMap<CheckpointContext, Map<string, MasterState>>();

export class PtyMasterKind implements FileKindHandler {
  readonly kind = 'pty-master';
  readonly priority = 1;
  readonly records = [TtyImage];
  claims(f: OpenFile): boolean {
    return isMaster(f);
  }
  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    let m = MASTERS.get(ctx);
    if (!m) MASTERS.set(ctx, (m = new Map<string, MasterState>()));
    m.set(`${task.pid}:${f.fd}`, examineMaster(ctx, task, f));
  }
  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const st = MASTERS.get(ctx)!.get(`${task.pid}:${f.fd}`)!;
    const rec = new TtyImage();
    rec.index = st.index;
    // A carried master: the first FILE written (its maker's FILE_CARRY) has the pty's state.
    const carried = CARRIED_PTYS.get(ctx)?.get(st.index);
    if (carried?.written) {
      rec.role = 'carried-master';
      out.write(rec);
      return;
    }
    if (carried) carried.written = true;
    rec.role = 'master';
    dumpMaster(task, f, st, rec);
    out.write(rec);
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const rec = ttyRecord(task, req, 'master', 'carried-master');
    if (rec.role === 'master') return openMaster(ctx, task, img, req, rec);
    const c = carriedIn(ctx, task.pid).get(`pty:${rec.index}`);
    if (!c) throw new CptError('EBADIMG', `the master of pty ${rec.index} is said to be carried from an ancestor, which did not make it`, { pid: task.pid, object: req.object });
    return task.tracee!.syscallOk(SYS.fcntl, [c.fds[0], linux.F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) of the master of pty ${rec.index}`);
  }
  /** Makes the pty in the lowest common ancestor of its holders, for them (the master's description on a carried fd). */
  carry(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): void {
    const rec = ttyRecord(task, req, 'master');
    const t = task.tracee!;
    const opened = openMaster(ctx, task, img, req, rec);
    const fd = t.syscallOk(SYS.fcntl, [opened, linux.F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) of the master of pty ${rec.index}`);
    t.syscall(SYS.close, [opened]);
    const table = carriedIn(ctx, task.pid);
    if (table.has(`pty:${rec.index}`)) throw new CptError('EBADIMG', `a second FILE carries the master of pty ${rec.index}`, { pid: task.pid, object: req.object });
    table.set(`pty:${rec.index}`, { fds: [fd], shared: {} });
  }
}

export class PtySlaveKind implements FileKindHandler {
  readonly kind = 'pty-slave';
  readonly priority = 1;
  readonly records = [TtyImage];
  claims(f: OpenFile): boolean {
    return f.stat.isCharacterDevice() && ptyIndexOfRdev(f.stat.rdev) !== undefined && /^\/dev\/pts\/\d+( \(deleted\))?$/.test(f.link);
  }
  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    const idx = ptyIndexOfRdev(f.stat.rdev)!;
    if (f.link.endsWith(' (deleted)')) return checkHungUp(task, f, idx);
    if (isHungUp(task, f)) refuse(task.pid, objectOf(f), `this description of /dev/pts/${idx} was hung up (vhangup) while its pty lives on; not supported`);
    if (isCallerTerminal(ctx, task, f.stat.rdev) && !ptyHolders(ctx, idx).masters.some((m) => heldByUs(m.pid))) return;
    requireMasterFirst(ctx, task, f, idx);
    refuseOutsiders(ctx, task, f, idx);
  }
  restoreAfter(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, files: OpenFile[]): number[] {
    if (f.link.endsWith(' (deleted)')) return [];
    const m = ownMaster(task, files, ptyIndexOfRdev(f.stat.rdev)!);
    return m ? [m.fd] : [];
  }
  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const rec = new TtyImage();
    const idx = ptyIndexOfRdev(f.stat.rdev)!;
    if (f.link.endsWith(' (deleted)')) {
      rec.role = 'hungup';
      rec.index = idx;
      [rec.slaveUid, rec.slaveGid, rec.slaveMode] = [Number(f.stat.uid), Number(f.stat.gid), Number(f.stat.mode) & 0o7777];
      out.write(rec);
      return;
    }
    const caller = isCallerTerminal(ctx, task, f.stat.rdev) && !ptyHolders(ctx, idx).masters.some((m) => heldByUs(m.pid));
    rec.role = caller ? 'caller' : 'slave';
    rec.index = caller ? 0 : idx;
    out.write(rec);
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const rec = ttyRecord(task, req, 'slave', 'caller', 'hungup');
    if (rec.role === 'caller') return openCallerTerminal(ctx, task, img, req);
    if (rec.role === 'hungup') return openHungUp(ctx, task, img, req, rec);
    if (!RESTORED.get(ctx)?.has(rec.index)) throw new CptError('EBADIMG', `/dev/pts/${rec.index} is opened before the master of its pty`, { pid: task.pid, object: req.object });
    return openRecordedFile(task.tracee!, `/dev/pts/${rec.index}`, {
      flags: reopenFlags(img.flags) | O.NOCTTY,
      expect: { type: linux.S_IF.CHR, rdev: ptySlaveRdev(rec.index) },
      sameBoot: ctx.sameBoot,
      object: req.object,
    });
  }
}

/** /dev/tty: opens the controlling terminal of the process, which must be a pty of the tree or the caller's terminal. */
export class DevTtyKind implements FileKindHandler {
  readonly kind = 'devtty';
  readonly priority = 1;
  readonly records = [TtyImage];
  claims(f: OpenFile): boolean {
    return f.stat.isCharacterDevice() && f.stat.rdev === DEVTTY && f.link === '/dev/tty';
  }
  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    const rdev = this.terminal(task, f);
    if (isCallerTerminal(ctx, task, rdev)) return;
    const idx = ptyIndexOfRdev(rdev);
    if (idx === undefined) refuse(task.pid, objectOf(f), `/dev/tty is ${ttyName(rdev)} here, which is not a pty; not supported`);
    requireMasterFirst(ctx, task, f, idx);
  }
  restoreAfter(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, files: OpenFile[]): number[] {
    const idx = ptyIndexOfRdev(this.terminal(task, f));
    const m = idx === undefined ? undefined : ownMaster(task, files, idx);
    return m ? [m.fd] : [];
  }
  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const rdev = this.terminal(task, f);
    const rec = new TtyImage();
    const caller = isCallerTerminal(ctx, task, rdev);
    rec.role = caller ? 'devtty-caller' : 'devtty';
    rec.index = caller ? 0 : ptyIndexOfRdev(rdev)!;
    out.write(rec);
  }
  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const rec = ttyRecord(task, req, 'devtty', 'devtty-caller');
    const t = task.tracee!;
    if (rec.role === 'devtty-caller' && !(ctx.flags & RestartFlags.SHELL_JOB)) {
      throw new CptError('EINVAL', 'the process ran on the terminal of the shell that checkpointed it (a shell job); restart it with --shell-job to give it this terminal', { pid: task.pid, object: req.object });
    }
    if (linux.readStat(task.pid).ttyNr === 0) {
      // The controlling terminal is set after the files; a /dev/tty fd needs it now.
      if (rec.role === 'devtty-caller') throw new CptError('EBADIMG', '/dev/tty of the caller\'s terminal in a process without one', { pid: task.pid, object: req.object });
      if (!RESTORED.get(ctx)?.has(rec.index)) throw new CptError('EBADIMG', `/dev/tty names pty ${rec.index}, whose master is not restored`, { pid: task.pid, object: req.object });
      takeControllingTerminal(t, rec.index, task.pid, ctx.sameBoot);
    }
    return openRecordedFile(t, '/dev/tty', { flags: reopenFlags(img.flags), expect: { type: linux.S_IF.CHR, rdev: DEVTTY }, sameBoot: false, object: req.object });
  }
  /** The terminal behind an fd of /dev/tty (TIOCGDEV), which must be the process's controlling terminal still. */
  private terminal(task: CheckpointTask, f: OpenFile): bigint {
    const st = linux.readStat(task.pid);
    const object = objectOf(f);
    if (st.ttyNr === 0) refuse(task.pid, object, 'an fd of /dev/tty in a process that no longer has a controlling terminal');
    let copy: number | undefined;
    let dev: number;
    try {
      copy = linux.fdCopyOf(task.pid, f.fd);
      dev = ioctlGetInt(copy, TIOC.GDEV, 'TIOCGDEV') >>> 0;
    } finally {
      closeQuietly(copy);
    }
    if (dev !== st.ttyNr) {
      refuse(task.pid, object, `this /dev/tty fd is on ${ttyName(ttyNrToRdev(dev))}, which is no longer the process's controlling terminal (${ttyName(ttyNrToRdev(st.ttyNr))})`);
    }
    return ttyNrToRdev(st.ttyNr);
  }
}

// ---------------------------------------------------------------------------------------------
// hung-up slaves

/** A slave description whose pty was hung up (vhangup): its terminal calls fail with EIO. */
function isHungUp(task: CheckpointTask, f: OpenFile): boolean {
  let copy: number | undefined;
  try {
    copy = linux.fdCopyOf(task.pid, f.fd);
    return linux.rawSyscall(SYS.ioctl, copy, TIOC.TCGETS, Buffer.alloc(TERMIOS_SIZE)) === -BigInt(linux.ERRNO.EIO);
  } finally {
    closeQuietly(copy);
  }
}

/**
 * A slave whose master was closed: the kernel hung its descriptions up (reads give 0, writes and
 * terminal calls EIO, poll says POLLHUP) and removed /dev/pts/N. Restart makes a pty, opens the
 * slave's descriptions and closes the master, which hangs them up the same way; so every
 * description must be opened by one process, and any other process holding the slave must have
 * exactly the same descriptions (inherited from it).
 */
function checkHungUp(task: CheckpointTask, f: OpenFile, idx: number): void {
  const object = objectOf(f);
  const others = otherHolders(task, { stat: f.stat });
  const outside = others.filter((h) => !heldByUs(h.pid));
  if (outside.length) refuse(task.pid, object, `the hung-up slave of pty ${idx} is also open in ${outside.map(describeHolder).join(', ')}, outside the checkpointed tree`);
  const own = ownHolders(task, { stat: f.stat });
  const same = (pid: number, fd: number, ownFd: number): boolean => {
    try {
      return linux.kcmp(task.pid, pid, linux.KCMP.FILE, ownFd, fd) === 0;
    } catch {
      return false;
    }
  };
  for (const pid of new Set(others.map((h) => h.pid))) {
    const theirs = others.filter((h) => h.pid === pid);
    const alike = theirs.every((h) => own.some((o) => same(pid, h.fd, o))) && own.every((o) => theirs.some((h) => same(pid, h.fd, o)));
    if (!alike) {
      refuse(task.pid, object, `the hung-up slave of pty ${idx} is open in ${describeHolder(theirs[0])} through other open file descriptions than this process's; a hung-up pty is made again by one process, with every description of it`);
    }
  }
}

/** The in-task master of each hung-up pty being made, by index: the files' temporaries, closed once every fd is in place. */
const HUNG_MASTERS = new StateKey<Map<number, bigint>>('files.tty.hungMasters');

/**
 * A hung-up slave: the task makes pty `index` (the first of its descriptions) and opens the slave;
 * the master stays on a temporary fd, which the files subsystem closes with its other temporaries
 * once every fd of the task exists: that close hangs every description of the slave up, as the
 * master's close did in the original.
 */
function openHungUp(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest, rec: TtyImage): bigint {
  const t = task.tracee!;
  const object = req.object;
  if (rec.slaveMode & ~0o777) throw new CptError('EBADIMG', `tty: slave mode 0${rec.slaveMode.toString(8)}`, { pid: task.pid, object });
  const masters = task.state.ensure(HUNG_MASTERS, () => new Map<number, bigint>());
  let fresh = false;
  if (!masters.has(rec.index)) {
    const opened = openPtmx(task, PTMX_PATHS[0], O.RDWR, rec.index, object);
    const m = t.syscallOk(SYS.fcntl, [opened, linux.F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) of the master of pty ${rec.index}`);
    t.syscall(SYS.close, [opened]);
    t.syscallOk(SYS.ioctl, [m, TIOC.SPTLCK, t.stage(Buffer.alloc(4))], `unlocking pty ${rec.index}`);
    masters.set(rec.index, m);
    fresh = true;
  }
  const fd = openRecordedFile(t, `/dev/pts/${rec.index}`, {
    flags: reopenFlags(img.flags) | O.NOCTTY,
    expect: { type: linux.S_IF.CHR, rdev: ptySlaveRdev(rec.index) },
    sameBoot: false,
    object,
  });
  if (fresh) {
    // The slave's owner as recorded from an image root wrote; the image owner's otherwise.
    const uid = ctx.imageTrusted ? rec.slaveUid : ctx.imageOwner.uid;
    const gid = ctx.imageTrusted ? rec.slaveGid : ctx.imageOwner.gid;
    t.syscallOk(linux.syscallNumber('fchown'), [fd, uid, gid], `fchown of /dev/pts/${rec.index}`);
    t.syscallOk(SYS.fchmod, [fd, rec.slaveMode], `fchmod of /dev/pts/${rec.index}`);
  }
  return fd;
}

// ---------------------------------------------------------------------------------------------
// restart

/** A pty made again: cptrst's copy of its master (until the finish hook), and what is left to set then. */
interface RestoredPty {
  copy: number;
  locked: boolean;
  exclusive: boolean;
  pid: number;
}

const RESTORED = new WeakMap<RestartContext, Map<number, RestoredPty>>();

function ttyRecord(task: RestartTask, req: OpenRequest, ...roles: string[]): TtyImage {
  const recs = req.records.of(TtyImage);
  const bad = (why: string) => new CptError('EBADIMG', `tty: ${why}`, { pid: task.pid, object: req.object });
  if (recs.length !== 1) throw bad(`${recs.length} tty records for one file (one is needed)`);
  const r = recs[0];
  if (!roles.includes(r.role)) throw bad(`role '${r.role}' on a file of this kind`);
  if (r.index >= 1 << 20) throw bad(`pty index ${r.index}`);
  if (r.role === 'master') {
    if (r.termios.length !== TERMIOS_SIZE) throw bad(`a termios of ${r.termios.length} bytes`);
    if (r.winsize.length !== 4 || r.winsize.some((v) => v > 0xffff)) throw bad('window size');
    if (r.input.length > TTY_DATA_MAX || r.output.length > TTY_DATA_MAX) throw bad('more buffered data than a terminal holds');
    let prev = 0;
    for (const end of r.inputLines) {
      if (end < prev || end > r.input.length) throw bad('line ends out of order');
      prev = end;
    }
    if (r.inputEof.some((i) => i >= r.inputLines.length)) throw bad('an end-of-file mark on no line');
    if (r.slaveMode & ~0o777) throw bad(`slave mode 0${r.slaveMode.toString(8)}`);
  } else if (r.termios.length || r.input.length || r.output.length) {
    throw bad('pty state on a file that does not carry the pty');
  }
  return r;
}

/** Opens /dev/ptmx inside the task until it is pty `index`; the ones opened on the way are closed again. */
function openPtmx(task: RestartTask, path: string, flags: number, idx: number, object: string): bigint {
  const t = task.tracee!;
  const held: bigint[] = [];
  try {
    for (let i = 0; i <= idx; i++) {
      const fd = openRecordedFile(t, path, { flags: flags | O.NOCTTY, expect: { type: linux.S_IF.CHR, rdev: PTMX }, sameBoot: false, object });
      const at = t.stage(Buffer.alloc(4));
      t.syscallOk(SYS.ioctl, [fd, TIOC.GPTN, at], `TIOCGPTN for ${object}`);
      const got = t.readMemory(at, 4).readUInt32LE(0);
      if (got === idx) return fd;
      held.push(fd);
      if (got > idx) break;
    }
    throw new CptError('EBUSY', `pty ${idx} is in use by another process (/dev/pts/${idx} exists); its slave's name must stay the same`, { pid: task.pid, object });
  } finally {
    for (const fd of held) t.syscall(SYS.close, [fd]);
  }
}

function openMaster(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest, rec: TtyImage): bigint {
  const object = req.object;
  if (!PTMX_PATHS.includes(img.path)) throw new CptError('EBADIMG', `a pty master at ${img.path}`, { pid: task.pid, object });
  let table = RESTORED.get(ctx);
  if (!table) RESTORED.set(ctx, (table = new Map<number, RestoredPty>()));
  if (table.has(rec.index)) throw new CptError('EBADIMG', `a second master of pty ${rec.index}`, { pid: task.pid, object });
  if (!ctx.imageTrusted && (rec.slaveUid !== ctx.imageOwner.uid)) {
    throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, and /dev/pts/${rec.index} belonged to uid ${rec.slaveUid}`, { pid: task.pid, object });
  }
  const fd = openPtmx(task, img.path, reopenFlags(img.flags), rec.index, object);
  let copy: number | undefined;
  let peer: number | undefined;
  try {
    copy = linux.fdCopyOf(task.pid, Number(fd));
    ioctlSetInt(copy, TIOC.SPTLCK, 0, 'TIOCSPTLCK');
    peer = openPeer(copy);
    const t = decodeStruct(linux.KernelTermios, rec.termios);
    putBack(copy, peer, t, { input: rec.input, lines: rec.inputLines, eof: rec.inputEof, output: rec.output }, rec.packet);
    ioctl(copy, TIOC.SWINSZ, encodeStruct(linux.Winsize, { row: rec.winsize[0], col: rec.winsize[1], xpixel: rec.winsize[2], ypixel: rec.winsize[3] }), 'TIOCSWINSZ');
    const pst = fs.fstatSync(peer);
    if (ctx.imageTrusted && (pst.uid !== rec.slaveUid || pst.gid !== rec.slaveGid)) fs.fchownSync(peer, rec.slaveUid, rec.slaveGid);
    if ((pst.mode & 0o7777) !== rec.slaveMode) fs.fchmodSync(peer, rec.slaveMode);
    if (rec.packet) ioctlSetInt(copy, TIOC.PKT, 1, 'TIOCPKT');
  } catch (e) {
    closeQuietly(copy);
    if (e instanceof CptError && e.pid === undefined) throw new CptError(e.code, `restoring pty ${rec.index}: ${e.message}`, { pid: task.pid, object });
    throw e;
  } finally {
    // Closing cptrst's slave leaves the pty as a slave that was opened and closed, until the image's slaves open it.
    closeQuietly(peer);
  }
  table.set(rec.index, { copy, locked: rec.locked, exclusive: rec.exclusive, pid: task.pid });
  return fd;
}

/** The terminal cptrst runs on (its controlling terminal): its device and a path that names it. */
function callerTerminal(pid: number, object: string): { rdev: bigint; path: string } {
  const st = linux.readStat(process.pid);
  if (st.ttyNr === 0) throw new CptError('ENOTTY', 'the image\'s tree ran on the terminal of the shell that checkpointed it, and cptrst has no controlling terminal to give it', { pid, object });
  const rdev = ttyNrToRdev(st.ttyNr);
  for (const fd of [0, 1, 2]) {
    try {
      const link = fs.readlinkSync(`/proc/self/fd/${fd}`);
      const s = fs.statSync(`/proc/self/fd/${fd}`, { bigint: true });
      if (s.isCharacterDevice() && s.rdev === rdev && link.startsWith('/dev/')) return { rdev, path: link };
    } catch {
      /* not open */
    }
  }
  const idx = ptyIndexOfRdev(rdev);
  if (idx !== undefined) return { rdev, path: `/dev/pts/${idx}` };
  throw new CptError('ENOTTY', `cptrst's controlling terminal (${ttyName(rdev)}) is on none of its fds 0-2; run it with the terminal as its input or output`, { pid, object });
}

function openCallerTerminal(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
  if (!(ctx.flags & RestartFlags.SHELL_JOB)) {
    throw new CptError('EINVAL', 'the process ran on the terminal of the shell that checkpointed it (a shell job); restart it with --shell-job to give it this terminal', { pid: task.pid, object: req.object });
  }
  const term = callerTerminal(task.pid, req.object);
  return openRecordedFile(task.tracee!, term.path, { flags: reopenFlags(img.flags) | O.NOCTTY, expect: { type: linux.S_IF.CHR, rdev: term.rdev }, sameBoot: false, object: req.object });
}

/**
 * After every slave is open (all tasks are made): the lock and exclusive mode of each pty whose
 * master this task holds; cptrst's copies of the masters are closed.
 */
export class TtyRestore implements RestoreHandler {
  readonly name = 'files.tty';
  readonly order = 302;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own: the TTY records go with their FILEs */
  }
  finish(ctx: RestartContext, task: RestartTask): void {
    const table = RESTORED.get(ctx);
    if (!table) return;
    for (const [idx, p] of table) {
      if (p.pid !== task.pid) continue;
      try {
        if (p.exclusive) {
          const peer = openPeer(p.copy);
          try {
            ioctl(peer, TIOC.EXCL, null, 'TIOCEXCL');
          } finally {
            closeQuietly(peer);
          }
        }
        if (p.locked) ioctlSetInt(p.copy, TIOC.SPTLCK, 1, 'TIOCSPTLCK');
      } catch (e) {
        if (e instanceof CptError) throw new CptError(e.code, `pty ${idx}: ${e.message}`, { pid: task.pid, object: `pty ${idx}` });
        throw e;
      } finally {
        closeQuietly(p.copy);
        table.delete(idx);
      }
    }
  }
  abort(ctx: RestartContext): void {
    const table = RESTORED.get(ctx);
    if (!table) return;
    for (const p of table.values()) closeQuietly(p.copy);
    table.clear();
  }
}
