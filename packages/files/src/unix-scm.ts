/**
 * The control data of the messages queued on unix sockets: file descriptors in flight
 * (SCM_RIGHTS) and the senders' credentials (SCM_CREDENTIALS).
 *
 * Checkpoint. Before any handler looks at the fds of a task (ScmInFlight, the first check of the
 * checkpoint, for every process of the tree at once), cptrst peeks the queue of each socket on
 * its own copy of it (pidfd_getfd): the files in flight of each message come to cptrst's own fd
 * table (close-on-exec), and stay there until just before the tree is let go
 * (CheckpointContext.beforeRelease), whether the checkpoint succeeded or not; a death of cptrst
 * closes them with it. Nothing is put into the process and nothing is taken from the queue (its
 * peek offset, moved by a guardian's peeks, is put back at once: linux.peekSocket): the process's
 * fd table is exactly as it was at any instant.
 * In the image they are fds of the process that holds the socket, at the lowest fd numbers free
 * in its table (as a receive would place them, within its RLIMIT_NOFILE): each is described and
 * dumped through its kind (a pipe, a regular file, a memfd, an epoll, a unix socket...) with the
 * FILE and FD records of the fd table, reading it where cptrst holds it (OpenFile.held: its link,
 * fdinfo, stat, a copy, kcmp against the process's own fds); a kind that cannot describe a file
 * held so refuses it (FileKindHandler.inFlight). An fd in flight that shares its open file
 * description with one the process has shares its FILE (dup), and what is shared with other
 * processes of the tree is shared the usual way (it counts as an fd of the process: core's
 * addInFlight, for ownHolders and otherHolders).
 * The queue's UNIX_SCM records name, for each message, the fds to send with it, in order. A
 * message's credentials are the ones a peek reports when the socket has SO_PASSCRED (cptrst and
 * the process share pid and user namespaces: cptrst refuses a process in others); they are kept
 * when the sender is a process of the tree.
 * Refused: descriptors in flight on a stream socket, on a socket held by several processes or
 * whose peer is held by another process, on a socket that is itself in flight (so a socket sent
 * over itself and closed, or any cycle), an empty message with descriptors; a file in flight
 * with a lock, lease or I/O owner, or of a kind that cannot be described from outside the
 * process; credentials of a process outside the tree, or a stream whose runs carry different
 * credentials.
 *
 * Restart. The files in flight come back as fds of the process (their FDs), the queue is sent
 * again by the socket's peer (SocketQueuesRestore, after the final credentials) with sendmsg:
 * each message with its SCM_RIGHTS fds in the recorded order and its SCM_CREDENTIALS; then those
 * fds are closed. The credentials are sent by the restored process itself, so the kernel lets it
 * claim only what it may (its own pid, ids, or more with CAP_SYS_ADMIN/CAP_SETUID/CAP_SETGID):
 * never more than the image's owner could.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, KindRecords, ObjectType, RestartTask, addInFlight, bool, forgetInFlight, decodeStruct, encodeStruct, i32, linux, objectType,
  refuse, sizeOfStruct, treeTask, u32, u32s,
} from '@cptrst/core';
import * as fs from 'fs';
import { FS_KEY } from './fs-struct';
import type { OpenFile } from './kinds';

const { SYS, SO, SOCK } = linux;

/** The control data of one queued message (or of a stream's bytes: message 0), under the socket's FILE. */
@objectType(ObjectType.UNIX_SCM, 'unix-scm', { parents: [ObjectType.FILE] })
export class UnixScmImage {
  /** Which SOCKET_QUEUE record of the FILE (from 0) it goes with. */
  @u32() message = 0;
  /** The fds of the process whose files are in flight with the message (SCM_RIGHTS), in order; closed once sent. */
  @u32s() fds: number[] = [];
  /** The message carries its sender's credentials (SCM_CREDENTIALS). */
  @bool() hasCreds = false;
  @i32() pid = 0;
  @u32() uid = 0;
  @u32() gid = 0;
}

const HDR = sizeOfStruct(linux.Msghdr);
const IOV = sizeOfStruct(linux.Iovec);

// ---------------------------------------------------------------------------------------------
// Checkpoint

/** The descriptors in flight of one socket, as fds of the process that holds it (in the image). */
interface InFlight {
  pid: number;
  /** Per message (its index in the queue): the fds of the process standing for its files in flight. */
  fds: Map<number, number[]>;
}
const IN_FLIGHT = new WeakMap<CheckpointContext, Map<number, InFlight>>();
/** The files in flight of each process, by pid: held by cptrst, at the fd numbers the process gets them at in the image. */
const FILES = new WeakMap<CheckpointContext, Map<number, OpenFile[]>>();
/**
 * Every queue the first check read, by socket inode: a peek marks an empty datagram, and a later
 * peek by offset skips a marked one, so each queue is read once per checkpoint (the socket's kind
 * takes it from here).
 */
const PEEKED = new WeakMap<CheckpointContext, Map<number, linux.QueuedMessage[]>>();

/** The queue of socket `ino` as the first check read it, if it did. */
export function peekedQueue(ctx: CheckpointContext, ino: number): linux.QueuedMessage[] | undefined {
  return PEEKED.get(ctx)?.get(ino);
}

/** The files in flight in the queues of the task's sockets, as open files of the task (OpenFile.held: cptrst's fds of them). */
export function filesInFlight(ctx: CheckpointContext, task: CheckpointTask): OpenFile[] {
  return FILES.get(ctx)?.get(task.pid) ?? [];
}

const inoOf = (link: string): number => Number(/^socket:\[(\d+)\]$/.exec(link)?.[1] ?? -1);

/** The first check of a checkpoint: takes the descriptors in flight of every process of the tree (once). */
export class ScmInFlight implements DumpHandler {
  readonly name = 'files.scm-in-flight';
  /** Before every handler that looks at a task's fds. */
  readonly order = 1;
  check(ctx: CheckpointContext): void {
    if (!IN_FLIGHT.has(ctx)) takeAll(ctx);
  }
  dump(): void {
    /* the files in flight are dumped as fds of their process (FilesDump) */
  }
}

function takeAll(ctx: CheckpointContext): void {
  const table = new Map<number, InFlight>();
  IN_FLIGHT.set(ctx, table);
  const peeked = new Map<number, linux.QueuedMessage[]>();
  PEEKED.set(ctx, peeked);
  const files = new Map<number, OpenFile[]>();
  FILES.set(ctx, files);
  const held: number[] = [];
  // Registered first: cptrst's fds of the files in flight go before the tree runs on (a pipe's
  // reader then sees its end of file as before), whether the checkpoint succeeded or not.
  const tasks = (ctx.tree?.tasks ?? []).filter((t) => !t.zombie);
  ctx.beforeRelease(() => {
    for (const t of tasks) forgetInFlight(t.pid);
    for (const fd of held.splice(0)) closeQuietly(fd);
  });
  let diag: Map<number, linux.UnixDiag> | undefined;
  for (const task of tasks) {
    const seen = new Set<number>();
    /** The fd numbers of the task, and those its files in flight take in the image. */
    const taken = new Set(linux.listFds(task.pid));
    for (const fd of [...taken].sort((a, b) => a - b)) {
      let link: string;
      try {
        link = linux.readFdLink(task.pid, fd);
      } catch {
        continue;
      }
      const ino = inoOf(link);
      if (ino < 0 || seen.has(ino) || table.has(ino)) continue;
      seen.add(ino);
      diag ??= linux.unixDiagDump();
      const d = diag.get(ino);
      // Only a connected stream or seqpacket socket has a queue to read (recvmsg answers EINVAL before).
      if (!d || d.state === linux.TCP_LISTEN || (d.type !== SOCK.DGRAM && d.state !== linux.TCP_ESTABLISHED)) continue;
      const stream = d.type === SOCK.STREAM;
      const object = `fd ${fd} (${link})`;
      // The peek is cptrst's: the files in flight come to cptrst's own fd table (close-on-exec), never the process's.
      const queue = peeked.get(ino) ?? linux.withFdCopy(task.pid, fd, (dup) => {
        // With SO_PASSPIDFD a peek also brings a pidfd of the sender (SCM_PIDFD): refused before any.
        if (linux.getSockoptInt(dup, SO.PASSPIDFD) > 0) refuse(task.pid, object, 'SO_PASSPIDFD is set on the socket; it is not supported yet');
        try {
          return linux.peekSocket(dup, stream || (d.shutdown & linux.RCV_SHUTDOWN) !== 0, true);
        } catch (e) {
          if (e instanceof CptError && e.pid === undefined) throw new CptError(e.code, `reading its queue: ${e.message}`, { pid: task.pid, object });
          throw e;
        }
      });
      const rights = queue.flatMap((m) => m.rights ?? []);
      held.push(...rights);
      for (const m of queue) delete m.rights;
      peeked.set(ino, queue);
      const count = queue.reduce((n, m) => n + m.fds, 0);
      if (!count) continue;
      checkTaken(tasks, task, fd, link, d, count);
      const mine = files.get(task.pid) ?? [];
      files.set(task.pid, mine);
      table.set(ino, { pid: task.pid, fds: asFdsOf(task, queue, rights, object, taken, mine) });
    }
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* closed */
  }
}

/** Refuses the descriptors in flight of socket `fd` of `task` that cannot be restored. */
function checkTaken(tasks: CheckpointTask[], task: CheckpointTask, fd: number, link: string, d: linux.UnixDiag, count: number): void {
  const object = `fd ${fd} (${link})`;
  if (d.type === SOCK.STREAM) refuse(task.pid, object, `${count} descriptor(s) are in flight in the queue of a stream socket; descriptors in flight are supported on datagram and seqpacket sockets only`);
  // The queue is sent again by the process that makes the socket at restart: the process that
  // holds it, also for a socketpair whose other end its descendants hold (it makes the pair).
  for (const other of tasks) {
    if (other === task) continue;
    const at = linux.listFds(other.pid).find((n) => readLink(other.pid, n) === link);
    if (at !== undefined) refuse(task.pid, object, `${count} descriptor(s) are in flight in its queue, and the socket is also held by process ${other.pid} (fd ${at}); descriptors in flight on a socket of several processes are not supported yet`);
    const peer = d.peer ? linux.listFds(other.pid).find((n) => readLink(other.pid, n) === `socket:[${d.peer}]`) : undefined;
    if (peer !== undefined && !descends(other.pid, task.pid)) {
      refuse(task.pid, object, `${count} descriptor(s) are in flight in its queue, and its peer is held by process ${other.pid} (fd ${peer}), which is not a descendant of this process; descriptors in flight are supported where the receiving end's process made the pair`);
    }
  }
}

/** Whether process `pid` descends from process `ancestor` (the tree is frozen: the parents hold still). */
function descends(pid: number, ancestor: number): boolean {
  for (let p = pid, i = 0; p > 1 && i < 4096; i++) {
    p = linux.readStat(p).ppid;
    if (p === ancestor) return true;
  }
  return false;
}

function readLink(pid: number, fd: number): string {
  try {
    return linux.readFdLink(pid, fd);
  } catch {
    return '';
  }
}

/**
 * The files in flight of a queue as fds of the task in the image: each message's at the lowest
 * numbers free in the task's fd table (`taken`: its fds and those given already), as a receive
 * would place them, within its RLIMIT_NOFILE. Each is described where cptrst holds it (`rights`,
 * from its peek); nothing of the task changes. `out` gets each as an open file of the task.
 */
function asFdsOf(task: CheckpointTask, queue: linux.QueuedMessage[], rights: number[], object: string, taken: Set<number>, out: OpenFile[]): Map<number, number[]> {
  const limit = Number(linux.readLimits(task.pid)[linux.RLIMIT.NOFILE]?.cur ?? 1024n);
  const got = new Map<number, number[]>();
  let next = 0;
  let low = 0;
  queue.forEach((m, i) => {
    if (!m.fds) return;
    if (!m.data.length) refuse(task.pid, object, 'an empty message carries descriptors in flight; not supported');
    const these: number[] = [];
    for (const held of rights.slice(next, next + m.fds)) {
      while (taken.has(low)) low++;
      if (low >= limit) refuse(task.pid, object, `the descriptors in flight do not fit in the process's fd table (RLIMIT_NOFILE ${limit})`);
      taken.add(low);
      these.push(low);
      const at = `/proc/${process.pid}/fd/${held}`;
      const f: OpenFile = { fd: low, link: fs.readlinkSync(at), fdinfo: linux.readFdinfo(process.pid, held), stat: fs.statSync(at, { bigint: true }), held: { pid: process.pid, fd: held } };
      refuseLocked(task, f);
      addInFlight(task.pid, f.fd, f.link, f.stat, f.held!);
      out.push(f);
    }
    if (these.length !== m.fds) throw new CptError('EIO', `message ${i} carries ${m.fds} descriptor(s) in flight, and ${these.length} came to cptrst`, { pid: task.pid, object });
    next += m.fds;
    got.set(i, these);
  });
  return got;
}

/**
 * Locks, leases and I/O owners are those of the files the task holds (locks.ts); a file in flight
 * holding any is refused rather than restored without them.
 */
function refuseLocked(task: CheckpointTask, f: OpenFile): void {
  const object = `fd ${f.fd} (${f.link}, in flight in a socket's queue)`;
  if (f.fdinfo.extra.some((l) => l.startsWith('lock:'))) refuse(task.pid, object, 'a file in flight holds a lock or lease; not supported yet');
  const buf = Buffer.alloc(sizeOfStruct(linux.FOwnerEx));
  const owner = linux.rawSyscall(SYS.fcntl, f.held!.fd, linux.F.GETOWN_EX, buf) === 0n ? decodeStruct(linux.FOwnerEx, buf).pid : 0;
  const sig = Number(linux.rawSyscall(SYS.fcntl, f.held!.fd, linux.F.GETSIG, 0));
  if (owner !== 0 || sig > 0) refuse(task.pid, object, 'a file in flight has an I/O owner or signal (F_SETOWN, F_SETSIG); not supported yet');
}

/**
 * The UNIX_SCM records of a socket's queue (as its kind examines it), or a refusal: descriptors in
 * flight that were not installed (the socket is itself in flight), credentials that cannot be
 * restored.
 */
export function queueControl(ctx: CheckpointContext, task: CheckpointTask, object: string, ino: number, type: number, passcred: boolean, queue: linux.QueuedMessage[]): UnixScmImage[] {
  const inflight = IN_FLIGHT.get(ctx)?.get(ino);
  const stream = type === SOCK.STREAM;
  const out: UnixScmImage[] = [];
  if (stream && passcred && queue.length) {
    const c = queue[0].creds;
    if (queue.some((m) => !sameCreds(m.creds, c))) refuse(task.pid, object, 'the bytes queued on the stream socket come from senders with different credentials (SO_PASSCRED); not supported yet');
  }
  queue.forEach((m, i) => {
    const fds = m.fds ? (inflight?.pid === task.pid ? inflight.fds.get(i) : undefined) : [];
    if (!fds || fds.length !== m.fds) {
      refuse(task.pid, object, `${m.fds} descriptor(s) are in flight in its queue, but the socket is itself in flight or was not seen by the first check; descriptors in flight in a socket in flight are not supported`);
    }
    const creds = passcred && (!stream || i === 0) ? m.creds : undefined;
    if (creds) {
      if (creds.pid <= 0 || !treeTask(ctx, creds.pid)) {
        refuse(task.pid, object, `a queued message carries the credentials (SO_PASSCRED) of ${creds.pid > 0 ? `process ${creds.pid}, outside the checkpointed tree` : 'no process (sent before SO_PASSCRED was set)'}; they cannot be restored`);
      }
    }
    if (!fds.length && !creds) return;
    const r = new UnixScmImage();
    r.message = stream ? 0 : i;
    r.fds = fds;
    if (creds) Object.assign(r, { hasCreds: true, pid: creds.pid, uid: creds.uid, gid: creds.gid });
    out.push(r);
  });
  return out;
}

function sameCreds(a: linux.Ucred | undefined, b: linux.Ucred | undefined): boolean {
  return a?.pid === b?.pid && a?.uid === b?.uid && a?.gid === b?.gid;
}

// ---------------------------------------------------------------------------------------------
// Restart

/**
 * The UNIX_SCM records of a socket's FILE, checked against its queue and the process's fd list.
 * `carried`: the end of a socketpair an ancestor made, whose queue the ancestor sends: its
 * messages carry no descriptors (they would be fds of another process).
 */
export function scmRecords(task: RestartTask, req: { object: string; records: KindRecords }, type: number, passcred: boolean, messages: number, carried = false): UnixScmImage[] {
  const bad = (why: string) => new CptError('EBADIMG', `unix socket control data: ${why}`, { pid: task.pid, object: req.object });
  const recs = req.records.of(UnixScmImage);
  const fds = new Set(task.state.get(FS_KEY)?.fds ?? []);
  const seen = new Set<number>();
  for (const r of recs) {
    if (r.message >= messages || seen.has(r.message)) throw bad(`message ${r.message} of ${messages}, or twice`);
    seen.add(r.message);
    if (r.fds.length > linux.SCM_MAX_FD || (r.fds.length && (type === SOCK.STREAM || carried))) throw bad(`${r.fds.length} descriptors in flight`);
    if (r.fds.some((fd) => !fds.has(fd))) throw bad('a descriptor in flight that is no fd of the process');
    if (r.hasCreds && !passcred) throw bad('credentials on a socket without SO_PASSCRED');
    if (!r.hasCreds && (r.pid || r.uid || r.gid)) throw bad('credentials without their flag');
  }
  return recs;
}

/** The control data to send with one piece of a message: its descriptors with the first piece only, its credentials with each. */
export function controlOf(scm: UnixScmImage | undefined, first: boolean): Buffer | undefined {
  if (!scm) return undefined;
  const fds = first ? scm.fds : [];
  if (!fds.length && !scm.hasCreds) return undefined;
  return linux.buildControl(fds, scm.hasCreds ? { pid: scm.pid, uid: scm.uid, gid: scm.gid } : undefined);
}

/**
 * sendmsg inside the task of `n` bytes staged at `at`, to `addr` (staged, `addrLen` bytes; 0: the
 * peer) with `control`; staged at `stageAt` in the scratch data area. Returns the raw result.
 */
export function sendWithControl(task: RestartTask, fd: bigint, at: bigint, n: number, addr: bigint, addrLen: number, control: Buffer, stageAt: number, object: string): bigint {
  const t = task.tracee!;
  const buf = Buffer.alloc(HDR + IOV + control.length);
  const base = t.stage(buf, stageAt);
  encodeStruct(linux.Msghdr, { name: addrLen ? addr : 0n, namelen: addrLen, iov: base + BigInt(HDR), iovlen: 1n, control: base + BigInt(HDR + IOV), controllen: BigInt(control.length), flags: 0 }, buf, 0);
  encodeStruct(linux.Iovec, { base: at, len: BigInt(n) }, buf, HDR);
  control.copy(buf, HDR + IOV);
  t.writeMemory(base, buf);
  const r = t.syscall(linux.syscallNumber('sendmsg'), [fd, base, linux.MSG.DONTWAIT | linux.MSG.NOSIGNAL]);
  if (r === -1n) {
    // EPERM: credentials the restored process may not claim (another pid without CAP_SYS_ADMIN, ids it does not have).
    throw new CptError('EPERM', 'sending a queued message again with its sender\'s credentials (SCM_CREDENTIALS): the restored process may not claim them', { pid: task.pid, object });
  }
  return r;
}

/** The process's fds that only stood for files in flight go, once every queue is sent. */
export function closeInFlight(task: RestartTask, scms: Iterable<UnixScmImage>): void {
  const done = new Set<number>();
  for (const s of scms) {
    for (const fd of s.fds) {
      if (done.has(fd)) continue;
      done.add(fd);
      task.tracee!.syscall(SYS.close, [fd]);
    }
  }
}
