/**
 * Pipes (`pipe:[N]`), with the data in flight, their capacity, and the flags of each open file
 * description (O_NONBLOCK, packet mode O_DIRECT). The FIFO kind (fifo.ts) shares the record and
 * the restore machinery.
 *
 * Checkpoint. A pipe is identified by its inode: every FILE of it carries a PIPE record naming
 * that inode, and the first one in the image (the carrier) carries the capacity and the data, so
 * that the two ends can live in different processes: a pipe held by several processes of the
 * tree is made once, by their lowest common ancestor (core's holders.ts; file.ts writes a FILE
 * with FILE_CARRY when that process holds no end), and its descendants carry its anchors; a
 * holder outside the tree is refused, naming it. The data is read without taking it away:
 * cptrst takes a copy of a readable fd of the pipe, the task's or another holder's in the tree
 * (pidfd_getfd: the same open file description) and tee(2)s its buffers into a pipe of its own of the same capacity, then
 * reads that (linux.peekPipe). The target's pipe is never read, so a checkpoint that fails later
 * has lost no byte. A pipe whose read end is closed everywhere keeps data nobody can read: none is
 * stored. Packet mode: each buffer of a packet-mode pipe ends a read, so the reads give the packet
 * boundaries, which are stored with the data.
 *
 * Restart. The carrier's FILE makes the pipe inside the task (pipe2, both ends moved above the
 * image's fd numbers: the "anchors"), sets the capacity (F_SETPIPE_SZ, as the task: an
 * unprivileged owner gets no more than pipe-max-size) and writes the data back through the
 * non-blocking write anchor (one write per packet in packet mode; a short write is an error,
 * never a hang). Each FILE of the pipe then gets its open file description: the anchor of its end
 * for the first one that pipe2 could have made (no O_LARGEFILE), otherwise a new description
 * opened through /proc/self/fd/ANCHOR (what the process itself would have done to get a second
 * description of one end); then its status flags (F_SETFL). The anchors are temporary fds and go
 * at the end of the files restore, so an end no fd of the image holds is closed again.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, Holder, HolderKey, KindRecordWriter, SharedObject, carriedIn, describeHolders, fdLocation, ownHolders, ObjectType, RestartContext,
  RestartTask, StateKey, bool, bytes, linux, objectType, refuse, shareOf, u32, u32s, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, fdAt, openInTask, procFdPath } from './kinds';
import { FileImage } from './file';

const { SYS, O, F } = linux;

/** A pipe's or FIFO's own record, under each of its FILE objects. */
@objectType(ObjectType.PIPE, 'pipe', { parents: [ObjectType.FILE] })
export class PipeImage {
  /** The pipe's inode number (pipe:[N]; a FIFO's inode): every FILE of one pipe names the same. */
  @u64() pipeId = 0n;
  /** This FILE is the pipe's first in the image: it makes the pipe, with the capacity and data below. */
  @bool() carrier = false;
  /** F_GETPIPE_SZ, in bytes. */
  @u32() capacity = 0;
  /** Packet mode: the length of each packet in `data`, in order; empty for a byte-stream pipe. */
  @u32s() packets: number[] = [];
  /** The bytes waiting in the pipe. */
  @bytes() data: Buffer = Buffer.alloc(0);
}

/** The most data in flight stored for one pipe. */
export const PIPE_DATA_MAX = 16 * 1024 * 1024;
/** The largest capacity restored (F_SETPIPE_SZ takes up to 2^31 for a privileged process). */
const PIPE_CAPACITY_MAX = 0x80000000;
/**
 * Status flags a pipe's or FIFO's description may carry (O_LARGEFILE: opened by path or /proc;
 * O_ASYNC: signal-driven I/O, whose owner and signal the locks kind restores, FD_OWNER).
 */
export const PIPE_FLAGS = O.ACCMODE | O.NONBLOCK | O.DIRECT | O.LARGEFILE | O.CLOEXEC | O.ASYNC;
/** What F_SETFL sets again on a restored description (once its data is back: no SIGIO for that). */
const SETFL_FLAGS = O.NONBLOCK | O.DIRECT | O.ASYNC;

/** What a checkpoint learns about one pipe (once per pipe and task). */
interface PipeState {
  capacity: number;
  waiting: number;
  /** Some description of the write end has O_DIRECT. */
  packetWriter: boolean;
  carried: boolean;
  /** Other processes of the tree hold the pipe too: it is made once, by their common ancestor. */
  shared?: SharedObject;
}

const PIPE_STATE = new StateKey<Map<string, PipeState>>('files.pipeState');

/** `fd N (link)` */
export const objectOf = (f: OpenFile): string => `fd ${f.fd} (${f.link})`;

/**
 * Examines one pipe or FIFO of the task (once): refuses what cannot be restored (another holder
 * outside the tree, odd flags); reads capacity and the amount waiting. A pipe that other
 * processes of the tree hold too is restored as one pipe, made by their lowest common ancestor.
 */
export function examinePipe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, key: HolderKey, what: string): PipeState {
  const states = task.state.ensure(PIPE_STATE, () => new Map<string, PipeState>());
  const id = `${what}:${f.stat.dev}:${f.stat.ino}`;
  const known = states.get(id);
  if (known) return known;
  const object = objectOf(f);
  const { shared, outside } = shareOf(ctx, task, key);
  if (outside.length) {
    refuse(task.pid, object, `the ${what} is also open in ${describeHolders(outside)}, outside the checkpointed process tree; a ${what} is restored only together with every process that holds it`);
  }
  const fds = ownHolders(task, key);
  // Its fds in flight are read where cptrst holds them (fdLocation).
  const infos = fds.map((fd) => ({ fd, flags: flagsOf({ pid: task.pid, fd }) }));
  for (const i of infos) {
    const odd = i.flags & ~PIPE_FLAGS;
    if (odd) refuse(task.pid, `fd ${i.fd} (${f.link})`, `open flags 0${odd.toString(8)} on a ${what} are not supported`);
  }
  const writerFlags = [...infos.map((i) => i.flags), ...(shared?.holders ?? []).filter((h) => h.pid !== task.pid && h.fd >= 0).map((h) => flagsOf(h))];
  {
    const at = infos.length ? fdLocation(task.pid, infos[0].fd) : fdAt(task, f);
    const { capacity, waiting } = linux.withFdCopy(at.pid, at.fd, (dup) => ({ capacity: linux.rawSyscall(SYS.fcntl, dup, F.GETPIPE_SZ, 0), waiting: linux.ioctlInt(dup, linux.FIONREAD) }));
    if (capacity <= 0n) refuse(task.pid, object, `F_GETPIPE_SZ on the ${what} failed (${capacity})`);
    if (waiting < 0) refuse(task.pid, object, `FIONREAD on the ${what} failed (${waiting})`);
    if (waiting > PIPE_DATA_MAX) refuse(task.pid, object, `the ${what} holds ${waiting} bytes; at most ${PIPE_DATA_MAX} in flight are stored in an image`);
    const st: PipeState = {
      capacity: Number(capacity),
      waiting,
      packetWriter: writerFlags.some((fl) => (fl & O.ACCMODE) !== O.RDONLY && (fl & O.DIRECT) !== 0),
      carried: false,
      ...(shared ? { shared } : {}),
    };
    states.set(id, st);
    return st;
  }
}

/** The status flags of a process's fd, read where it is (fdLocation); 0 when it cannot be read (the process is frozen, so never). */
function flagsOf(h: Holder): number {
  try {
    const at = fdLocation(h.pid, h.fd);
    return linux.readFdinfo(at.pid, at.fd).flags;
  } catch {
    return 0;
  }
}

/**
 * Reads the data waiting in a pipe (without consuming it), from a readable description: a copy of
 * one of the task's, or of another holder's in the tree (pidfd_getfd), or for a FIFO without one a
 * new read-only description of cptrst's. Returns no data when the pipe cannot be read any more
 * (no reader and no name).
 */
export function readPipeData(task: CheckpointTask, f: OpenFile, key: HolderKey, st: PipeState, fifo: boolean): linux.PipeContents {
  const none = { data: Buffer.alloc(0), segments: [] };
  if (st.waiting === 0) return none;
  const candidates: Holder[] = [...ownHolders(task, key).map((fd) => ({ pid: task.pid, fd })), ...(st.shared?.holders ?? []).filter((h) => h.pid !== task.pid && h.fd >= 0)];
  const reader = candidates.find((h) => (flagsOf(h) & O.ACCMODE) !== O.WRONLY);
  let src: number;
  if (reader !== undefined) {
    const at = fdLocation(reader.pid, reader.fd);
    src = linux.fdCopyOf(at.pid, at.fd);
  } else if (fifo) {
    src = fs.openSync(procFdPath(task, f), O.RDONLY | O.NONBLOCK);
  } else {
    return none; // the read end is closed for good: nobody can ever read these bytes
  }
  try {
    return linux.peekPipe(src, st.capacity);
  } catch (e) {
    if (e instanceof CptError) throw new CptError(e.code, `reading the data in flight: ${e.message}`, { pid: task.pid, object: objectOf(f) });
    throw e;
  } finally {
    fs.closeSync(src);
  }
}

/**
 * Fills the PIPE record at dump; the first FILE of the pipe in the image carries capacity and
 * data (for a pipe shared in the tree: the first written, which is its maker's).
 */
export function dumpPipeRecord(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, key: HolderKey, what: string, out: KindRecordWriter, fifo: boolean): void {
  const st = examinePipe(ctx, task, f, key, what);
  const rec = new PipeImage();
  rec.pipeId = f.stat.ino;
  rec.capacity = st.capacity;
  const first = st.shared ? !st.shared.written : !st.carried;
  if (first) {
    st.carried = true;
    if (st.shared) st.shared.written = true;
    rec.carrier = true;
    const c = readPipeData(task, f, key, st, fifo);
    const packet = st.packetWriter || c.segments.length > 1;
    if (packet && c.segments.some((n) => n > linux.PIPE_BUF_MAX)) {
      refuse(task.pid, objectOf(f), `the packet-mode ${what} holds a run of ${Math.max(...c.segments)} bytes that is not one packet (data written both in packet mode and not)`);
    }
    rec.data = c.data;
    rec.packets = packet ? c.segments : [];
  }
  out.write(rec);
}

/** A pipe made again inside the task (or by an ancestor, whose anchors the task carries): its anchors (temporary fds above the image's), and which descriptions took them. */
interface RestoredPipe {
  /** Read and write anchors (one O_RDWR fd for a FIFO: both the same). */
  read: bigint;
  write: bigint;
  /** Shared by every process that carries the pipe: an anchor's description is one holder's only. */
  taken: { read: boolean; write: boolean };
}

/** The one PIPE record of a FILE, checked (EBADIMG). */
export function pipeRecord(task: RestartTask, img: FileImage, req: OpenRequest, what: string): PipeImage {
  const recs = req.records.of(PipeImage);
  const bad = (why: string) => new CptError('EBADIMG', `${what}: ${why}`, { pid: task.pid, object: req.object });
  if (recs.length !== 1) throw bad(`${recs.length} pipe records for one file (one is needed)`);
  const r = recs[0];
  if (img.flags & ~PIPE_FLAGS) throw bad(`open flags 0${img.flags.toString(8)}`);
  if (r.carrier) {
    if (r.capacity < linux.PIPE_BUF_MAX || r.capacity > PIPE_CAPACITY_MAX) throw bad(`capacity ${r.capacity}`);
    if (r.data.length > Math.min(r.capacity, PIPE_DATA_MAX)) throw bad(`${r.data.length} bytes in flight in a pipe of ${r.capacity}`);
    if (r.packets.length) {
      if (r.packets.some((n) => n < 1 || n > linux.PIPE_BUF_MAX)) throw bad('a packet of a packet-mode pipe is empty or longer than a pipe buffer');
      if (r.packets.reduce((a, b) => a + b, 0) !== r.data.length) throw bad('the packets do not add up to the data');
      if (r.packets.length > r.capacity / linux.PIPE_BUF_MAX) throw bad(`${r.packets.length} packets in a pipe of ${r.capacity / linux.PIPE_BUF_MAX} buffers`);
    }
  } else if (r.data.length || r.packets.length) {
    throw bad('data in flight on a FILE that does not carry the pipe');
  }
  return r;
}

/**
 * The pipe a FILE belongs to: made by its carrier (`make` gives the anchors), found by the others
 * of the task and of its descendants (which carry the anchors from their parent).
 */
export function restoredPipe(ctx: RestartContext, task: RestartTask, rec: PipeImage, what: string, object: string, make: () => { read: bigint; write: bigint }): RestoredPipe {
  const table = carriedIn(ctx, task.pid);
  const id = `${what}:${rec.pipeId}`;
  let c = table.get(id);
  if (rec.carrier) {
    if (c) throw new CptError('EBADIMG', `a second FILE carries the ${what} ${rec.pipeId}`, { pid: task.pid, object });
    const a = make();
    c = { fds: [a.read, a.write], shared: { read: false, write: false } };
    table.set(id, c);
    fillPipe(task, { read: a.read, write: a.write, taken: c.shared as RestoredPipe['taken'] }, rec, object);
  } else if (!c) {
    throw new CptError('EBADIMG', `the ${what} ${rec.pipeId} is used before the FILE that carries it (in the task or an ancestor)`, { pid: task.pid, object });
  }
  return { read: c.fds[0], write: c.fds[1], taken: c.shared as RestoredPipe['taken'] };
}

/** Moves an fd of the task above the image's fd numbers (the anchor's place); closes the old one. */
export function moveAbove(task: RestartTask, fd: bigint, above: number, what: string): bigint {
  const t = task.tracee!;
  const moved = t.syscallOk(SYS.fcntl, [fd, F.DUPFD_CLOEXEC, above], `fcntl(F_DUPFD_CLOEXEC) of ${what}`);
  t.syscall(SYS.close, [fd]);
  return moved;
}

/** Capacity, then the data, through the write anchor (non-blocking: a short write is an error). */
function fillPipe(task: RestartTask, p: RestoredPipe, rec: PipeImage, object: string): void {
  const t = task.tracee!;
  const cap = t.syscallOk(SYS.fcntl, [p.write, F.GETPIPE_SZ, 0], `F_GETPIPE_SZ for ${object}`);
  if (cap !== BigInt(rec.capacity)) {
    const got = t.syscallOk(SYS.fcntl, [p.write, F.SETPIPE_SZ, rec.capacity], `F_SETPIPE_SZ(${rec.capacity}) for ${object}`);
    if (got !== BigInt(rec.capacity)) throw new CptError('EIO', `F_SETPIPE_SZ(${rec.capacity}) gave a capacity of ${got}`, { pid: task.pid, object });
  }
  if (!rec.data.length) return;
  const packet = rec.packets.length > 0;
  const flags = Number(t.syscallOk(SYS.fcntl, [p.write, F.GETFL, 0], `F_GETFL for ${object}`));
  t.syscallOk(SYS.fcntl, [p.write, F.SETFL, (flags & ~O.DIRECT) | O.NONBLOCK | (packet ? O.DIRECT : 0)], `F_SETFL for ${object}`);
  const room = Math.max(linux.PIPE_BUF_MAX, Math.floor(t.scratch().dataSize / linux.PIPE_BUF_MAX) * linux.PIPE_BUF_MAX);
  const pieces = packet ? rec.packets : [rec.data.length];
  let off = 0;
  for (const len of pieces) {
    let done = 0;
    while (done < len) {
      const n = Math.min(room, len - done);
      const w = t.syscall(SYS.write, [p.write, t.stage(rec.data.subarray(off + done, off + done + n), 0), n]);
      if (w < 0n || (packet && w !== BigInt(n))) {
        throw new CptError(w < 0n ? linux.errnoName(Number(-w)) : 'EIO', `writing the data in flight back: ${w < 0n ? linux.errnoName(Number(-w)) : `${w} of ${n} bytes`}`, { pid: task.pid, object });
      }
      if (w === 0n) throw new CptError('EIO', 'writing the data in flight back made no progress', { pid: task.pid, object });
      done += Number(w);
    }
    off += len;
  }
  t.syscallOk(SYS.fcntl, [p.write, F.SETFL, flags], `F_SETFL for ${object}`);
}

/**
 * The open file description of one FILE of a pipe: the anchor of its end when that is still free
 * and the FILE is one pipe2 could have made (a pipe (not FIFO) end without O_LARGEFILE), else a
 * new description through /proc/self/fd/ANCHOR; then its status flags.
 */
export function pipeDescription(task: RestartTask, p: RestoredPipe, img: FileImage, req: OpenRequest, mayTakeAnchor: boolean): bigint {
  const t = task.tracee!;
  const acc = img.flags & O.ACCMODE;
  const writing = acc === O.WRONLY;
  const anchor = writing ? p.write : p.read;
  let fd: bigint;
  if (mayTakeAnchor && !(img.flags & O.LARGEFILE) && !(writing ? p.taken.write : p.taken.read)) {
    if (writing) p.taken.write = true;
    else p.taken.read = true;
    fd = t.syscallOk(SYS.fcntl, [anchor, F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) for ${req.object}`);
  } else {
    // O_DIRECT is refused by open on a pipe: F_SETFL below sets it.
    const flags = (img.flags & (O.ACCMODE | O.NONBLOCK | O.LARGEFILE)) | O.CLOEXEC;
    fd = openInTask(task, `/proc/self/fd/${anchor}`, flags | O.NONBLOCK, `opening a description of ${req.object}`);
  }
  t.syscallOk(SYS.fcntl, [fd, F.SETFL, img.flags & SETFL_FLAGS], `F_SETFL for ${req.object}`);
  return fd;
}

export class PipeKind implements FileKindHandler {
  readonly kind = 'pipe';
  readonly records = [PipeImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.stat.isFIFO() && /^pipe:\[\d+\]$/.test(f.link);
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    examinePipe(ctx, task, f, { link: f.link }, 'pipe');
    const acc = f.fdinfo.flags & O.ACCMODE;
    if (acc !== O.RDONLY && acc !== O.WRONLY) refuse(task.pid, objectOf(f), `a pipe end open with access mode ${acc}`);
  }

  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    dumpPipeRecord(ctx, task, f, { link: f.link }, 'pipe', out, false);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    return pipeDescription(task, this.make(ctx, task, img, req), img, req, true);
  }

  carry(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): void {
    this.make(ctx, task, img, req);
  }

  private make(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): RestoredPipe {
    const rec = pipeRecord(task, img, req, 'pipe');
    const acc = img.flags & O.ACCMODE;
    if (acc !== O.RDONLY && acc !== O.WRONLY) throw new CptError('EBADIMG', `pipe: access mode ${acc}`, { pid: task.pid, object: req.object });
    return restoredPipe(ctx, task, rec, 'pipe', req.object, () => {
      const t = task.tracee!;
      const at = t.stage(Buffer.alloc(8));
      t.syscallOk(SYS.pipe2, [at, O.CLOEXEC | O.NONBLOCK], `pipe2 for ${req.object}`);
      const fds = t.readMemory(at, 8);
      return {
        read: moveAbove(task, BigInt(fds.readInt32LE(0)), req.above, 'the pipe\'s read end'),
        write: moveAbove(task, BigInt(fds.readInt32LE(4)), req.above, 'the pipe\'s write end'),
      };
    });
  }
}
