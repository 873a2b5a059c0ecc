/**
 * Unix sockets held by one process, or by several processes of the tree through one description
 * (inherited), and socketpairs with their ends in different processes of the tree (made by the
 * common ancestor that holds one end; the other end is carried to its holder, see
 * openCarriedEnd): socketpairs (stream, datagram, seqpacket) with the data
 * queued in both directions, shutdown state and options; a connected socket whose peer has
 * closed, with what it left queued; sockets not connected, unbound or bound to a name in the
 * filesystem (absolute, or relative to the working directory) or the abstract namespace (a
 * filesystem name may have been unlinked); listening sockets with no connection waiting to be
 * accepted.
 *
 * Checkpoint. NETLINK_SOCK_DIAG (one dump of every unix socket, per task) gives each socket's
 * type, state, name, the socket file of its name, its peer, a listener's waiting connections and
 * the shutdown state; getsockopt on cptrst's copy of the socket (pidfd_getfd) gives SO_SNDBUF,
 * SO_RCVBUF, SO_PASSCRED and SO_PEEK_OFF. A socket is identified by its inode, and so is its
 * peer, so that the two ends of a connection can later live in different processes. What waits
 * in a socket's receive queue is read without taking it (linux.peekSocket: MSG_PEEK, from offset
 * 0 with SO_PEEK_OFF message by message in a guardian that outlives cptrst when one peek does
 * not show it all, the socket's own peek offset put back), and stored
 * under the socket's FILE, one SOCKET_QUEUE record per message (a stream's bytes as one), and
 * the messages' descriptors in flight and credentials in UNIX_SCM records (unix-scm.ts).
 * A connection made through a listener has an accepted end (the listener's name) and a connecting
 * one, told apart when both have names by the listener's socket file (acceptedEnd); its ends may
 * be in two processes of the tree (acrossProcesses).
 * Refused, naming the fd and why: a peer or holder outside the tree, a connection whose ends
 * cannot be told apart, connections not yet accepted from another process or with data sent,
 * messages queued on a socket that is not connected, SO_PASSSEC/SO_PASSPIDFD. A peer outside the tree is refused
 * unless the user said how it comes back (--ext-unix-sk: externalPeer). A name that no longer
 * leads to the socket (unlinked, replaced, its directory gone, a relative name the working
 * directory no longer reaches) is bound again in a private place (unix-name.ts).
 *
 * Restart. The first FILE of a socketpair makes it (socketpair inside the task, both ends moved
 * above the image's fd numbers); the second finds its end by its inode. A socket whose peer had
 * closed is one end of a socketpair whose other end sends the queue and is then closed. A socket that is not
 * connected is made with socket(2) and bound to its name: a stale socket file left at that path
 * by the checkpointed process is removed first, but only if it is the very file recorded (device
 * and inode, on the same boot); a name that no longer led to the socket is bound in a private
 * place instead (unix-name.ts), and a datagram socket connected one way to it is connected from
 * there.
 * Listeners listen, and connections through them are made and accepted, after the final
 * credentials (UnixConnect), which the kernel records for SO_PEERCRED. Buffer sizes and
 * SO_PASSCRED are set as each socket is made; after the connections, each queue is sent again
 * by its peer (non-blocking: a short send is an error, never a hang), then the shutdowns are
 * made (a connected socket's shutdown also marks its peer, as the kernel did) and the peek
 * offsets set.
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointContext, CheckpointFlags, CheckpointTask, CptError, KindRecordWriter, ObjectType, RestartContext, RestartTask, RestoreHandler, StateKey, bool, bytes,
  carriedIn, describeHolders, i32, linux, objectType, str, u64s, openRecordedFile, otherHolders, ownHolders, refuse, requireCanonicalPath, shareGroup, shareOf, u32, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, withOpenFileCopy } from './kinds';
import { FileImage } from './file';
import { objectOf, moveAbove } from './pipe';
import { bindPrivately, connectPrivately, privateSocketFile } from './unix-name';
import { UnixScmImage, closeInFlight, controlOf, peekedQueue, queueControl, scmRecords, sendWithControl } from './unix-scm';

const { SYS, O, F, SO, SOCK, S_IF } = linux;

/** A unix socket's own record, under its FILE. */
@objectType(ObjectType.UNIX_SOCKET, 'unix-socket', { parents: [ObjectType.FILE] })
export class UnixSocketImage {
  /** The socket's inode (socket:[N]). */
  @u64() ino = 0n;
  /** SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET. */
  @u32() type = 0;
  /** TCP_ESTABLISHED (connected), TCP_CLOSE (not connected) or TCP_LISTEN. */
  @u32() state = 0;
  /** The bound name as sun_path holds it (a leading NUL: abstract); empty: unbound. */
  @bytes() name: Buffer = Buffer.alloc(0);
  /** The socket file of a filesystem name (device, inode), to recognise it at restart. */
  @u64() nameDev = 0n;
  @u64() nameIno = 0n;
  /** The filesystem name was unlinked: bound again, then unlinked. */
  @bool() nameUnlinked = false;
  /** The socket file's absolute path (the name may be relative to the working directory). */
  @str() namePath = '';
  /** The socket file's permission bits and owner (set again on the file bind makes). */
  @u32() nameMode = 0;
  @u32() nameUid = 0;
  @u32() nameGid = 0;
  /** Connected, and the peer has closed: its data may still wait here. */
  @bool() peerClosed = false;
  /** How it is connected: ROLE. */
  @u32() role = 0;
  /** The name it was connected through (a listener's, or a datagram socket's it sends to). */
  @bytes() via: Buffer = Buffer.alloc(0);
  /** A listener's connections not accepted yet: their clients' inodes, in backlog order. */
  @u64s() pending: bigint[] = [];
  /** The peer's inode (a socketpair's other end); 0: none. */
  @u64() peer = 0n;
  /** A listener's backlog. */
  @u32() backlog = 0;
  /** RCV_SHUTDOWN | SEND_SHUTDOWN. */
  @u32() shutdown = 0;
  /** getsockopt values (SO_SNDBUF and SO_RCVBUF as the kernel reports them: doubled). */
  @u32() sndbuf = 0;
  @u32() rcvbuf = 0;
  @bool() passcred = false;
  @i32() peekOff = -1;
  /** DGRAM_TO: the inode of the socket it sends to, when that socket is in the image (0: reached by its name only). */
  @u64({ since: 6 }) viaIno = 0n;
  /** DGRAM_TO: that socket's name no longer leads to it (it is bound privately at restart): connected from there. */
  @bool({ since: 6 }) viaPrivate = false;
}

/** One message (or a stream's bytes) waiting in the socket's receive queue, in order. */
@objectType(ObjectType.SOCKET_QUEUE, 'socket-queue', { parents: [ObjectType.FILE] })
export class SocketQueueImage {
  @bytes() data: Buffer = Buffer.alloc(0);
  /** The sender's name, for a message on a socket that is not connected (empty: an unbound sender). */
  @bytes() from: Buffer = Buffer.alloc(0);
}

/** How a socket is connected (UnixSocketImage.role). */
export const ROLE = Object.freeze({
  /** Not connected, a listener, or one end of a socketpair (or of one whose peer closed). */
  NONE: 0,
  /** Accepted from a listener: its name is the listener's; its peer is a CLIENT. */
  ACCEPTED: 1,
  /** Connected through a listener to an ACCEPTED peer. */
  CLIENT: 2,
  /** Connected through a listener that has not accepted the connection yet (the listener's `pending`). */
  PENDING: 3,
  /** A datagram socket connected, one way, to the named socket `via`. */
  DGRAM_TO: 4,
} as const);

/** The most data queued on one socket that goes into an image. */
const QUEUE_MAX = 16 * 1024 * 1024;
const SOCKET_FLAGS = O.ACCMODE | O.NONBLOCK | O.CLOEXEC;
const TYPES = new Set<number>([SOCK.STREAM, SOCK.DGRAM, SOCK.SEQPACKET]);
const TYPE_NAMES: Record<number, string> = { [SOCK.STREAM]: 'stream', [SOCK.DGRAM]: 'datagram', [SOCK.SEQPACKET]: 'seqpacket' };
const SUN_PATH_MAX = 108;

const DIAG = new StateKey<Map<number, linux.UnixDiag>>('files.unixDiag');
function diagOf(task: CheckpointTask, ino: number): linux.UnixDiag | undefined {
  return task.state.ensure(DIAG, () => linux.unixDiagDump()).get(ino);
}

/** What a checkpoint learns about one socket (once). */
interface SocketState {
  rec: UnixSocketImage;
  queue: linux.QueuedMessage[];
  /** The control data of the queued messages (unix-scm.ts). */
  scm: UnixScmImage[];
}
const SOCKETS = new StateKey<Map<number, SocketState>>('files.unixSockets');

const inoOf = (link: string): number => Number(/^socket:\[(\d+)\]$/.exec(link)?.[1] ?? -1);


function examine(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): SocketState {
  const states = task.state.ensure(SOCKETS, () => new Map<number, SocketState>());
  const ino = inoOf(f.link);
  const known = states.get(ino);
  if (known) return known;
  const object = objectOf(f);
  // Other processes of the tree hold this very socket (one open file description): inherited.
  const { outside } = shareOf(ctx, task, { link: f.link });
  if (outside.length) refuse(task.pid, object, `the socket is also open in ${describeHolders(outside)}, outside the checkpointed process tree; a socket is restored only together with every process that holds it`);
  const odd = f.fdinfo.flags & ~SOCKET_FLAGS;
  if (odd) refuse(task.pid, object, `open flags 0${odd.toString(8)} on a socket are not supported`);
  const d = diagOf(task, ino);
  if (!d) refuse(task.pid, object, 'not a unix socket (sock_diag does not know it): only unix sockets are supported');
  const type = TYPE_NAMES[d.type] ? d.type : refuse(task.pid, object, `a unix socket of type ${d.type}`);
  const rec = new UnixSocketImage();
  rec.ino = BigInt(ino);
  rec.type = type;
  rec.state = d.state;
  rec.shutdown = d.shutdown;
  if (d.name && d.name.length) describeName(task, d, rec);
  if (d.state === linux.TCP_LISTEN) {
    rec.backlog = d.rqlen?.wqueue ?? 0;
    rec.pending = d.icons.map((e) => BigInt(pendingClient(ctx, task, f, e)));
  } else if (d.state === linux.TCP_ESTABLISHED && !d.peer && listenerOf(ctx, task, ino)) {
    // Connected, and a listener of this process or another of the tree has not accepted the
    // connection yet (sock_diag shows no peer: its other end has no inode until it is accepted).
    const l = listenerOf(ctx, task, ino)!;
    rec.role = ROLE.PENDING;
    rec.via = fsName(l.name!);
    rec.viaIno = BigInt(l.ino);
  } else if (d.peer) {
    describePeer(ctx, task, f, d, rec);
  } else if (d.state === linux.TCP_ESTABLISHED && type === SOCK.DGRAM) {
    // A datagram socket shows ESTABLISHED once it connected, and also once another connected to it.
    const peerName = withOpenFileCopy(task, f, (dup) => linux.getPeerName(dup));
    if (peerName === undefined) {
      rec.state = linux.TCP_CLOSE; // only connected to: itself not connected
    } else if (peerName.length && d.name && fsName(peerName).equals(fsName(d.name))) {
      rec.role = ROLE.DGRAM_TO; // connected to itself
      rec.via = fsName(d.name);
      rec.viaIno = BigInt(ino);
      rec.viaPrivate = rec.nameUnlinked;
    } else if (!(d.name && d.name.length)) {
      rec.peerClosed = true; // connected to a socket that has closed (what it sent may still wait here)
    } else {
      refuse(task.pid, object, `a named datagram socket connected to ${peerName.length ? printable(fsName(peerName)) : 'an unnamed socket'} that has closed or is out of reach; not supported yet`);
    }
  } else if (d.state === linux.TCP_ESTABLISHED && !(d.name && d.name.length)) {
    rec.peerClosed = true; // its peer was closed (what it sent may still wait here)
  } else if (d.state !== linux.TCP_CLOSE) {
    refuse(task.pid, object, `a unix socket in state ${d.state} without a peer`);
  }
  const { queue, opts } = withOpenFileCopy(task, f, (dup) => {
    const get = (opt: number, what: string): number => {
      const v = linux.getSockoptInt(dup, opt);
      if (v < -1 || (v === -1 && opt !== SO.PEEK_OFF)) refuse(task.pid, object, `getsockopt(${what}) failed (${v})`);
      return v;
    };
    const o = { sndbuf: get(SO.SNDBUF, 'SO_SNDBUF'), rcvbuf: get(SO.RCVBUF, 'SO_RCVBUF'), passcred: get(SO.PASSCRED, 'SO_PASSCRED'), peekOff: get(SO.PEEK_OFF, 'SO_PEEK_OFF') };
    if (linux.getSockoptInt(dup, SO.PASSSEC) > 0) refuse(task.pid, object, 'SO_PASSSEC is set on the socket; it is not supported yet');
    if (linux.getSockoptInt(dup, SO.PASSPIDFD) > 0) refuse(task.pid, object, 'SO_PASSPIDFD is set on the socket; it is not supported yet');
    // What a waiting connection's client sent sits on the side no fd reaches until it is accepted.
    const unread = rec.role === ROLE.PENDING ? linux.ioctlInt(dup, linux.SIOCOUTQ) : 0;
    if (unread) refuse(task.pid, object, `${unread} bytes sent on a connection not accepted yet wait in the listener's backlog; not supported yet`);
    // A stream or seqpacket socket has a queue only once connected (recvmsg answers EINVAL before).
    const queued = d.state === linux.TCP_ESTABLISHED || (type === SOCK.DGRAM && d.state !== linux.TCP_LISTEN);
    const q = queued ? (peekedQueue(ctx, ino) ?? linux.peekSocket(dup, type === SOCK.STREAM || (d.shutdown & linux.RCV_SHUTDOWN) !== 0)) : [];
    return { queue: q, opts: o };
  });
  rec.sndbuf = opts.sndbuf;
  rec.rcvbuf = opts.rcvbuf;
  rec.passcred = opts.passcred > 0;
  rec.peekOff = opts.peekOff;
  const scm = queueControl(ctx, task, object, ino, type, rec.passcred, queue);
  const throughListener = rec.role === ROLE.ACCEPTED || rec.role === ROLE.CLIENT;
  if (throughListener && !ownHolders(task, { link: `socket:[${rec.peer}]` }).length && (rec.passcred || scm.length)) {
    refuse(task.pid, object, 'SO_PASSCRED, or descriptors or credentials queued, on a connection through a listener between two processes; not supported yet');
  }
  const bytesQueued = queue.reduce((n, m) => n + m.data.length, 0);
  if (bytesQueued > QUEUE_MAX) refuse(task.pid, object, `${bytesQueued} bytes are queued on the socket; at most ${QUEUE_MAX} are stored in an image`);
  if (queue.length && !rec.peer && !rec.peerClosed) {
    if (rec.role !== ROLE.NONE && rec.role !== ROLE.DGRAM_TO) refuse(task.pid, object, `${queue.length} message(s) wait on a socket connected to a connection not accepted yet`);
    if (!rec.name.length) refuse(task.pid, object, `${queue.length} message(s) wait on a socket that is neither connected nor named; their sender cannot be restored`);
    for (const m of queue) {
      if (m.from.length && !ownNamed(task, m.from)) refuse(task.pid, object, `a message waits from ${printable(m.from)}, which is no socket of this process; its sender cannot be restored`);
    }
  }
  checkUnlinkedName(task, f, rec, queue.length);
  const st: SocketState = { rec, queue, scm };
  states.set(ino, st);
  return st;
}

/** Whether a socket of this process is bound to `name` (as a message's sender shows it). */
function ownNamed(task: CheckpointTask, name: Buffer): boolean {
  const all = task.state.ensure(DIAG, () => linux.unixDiagDump());
  for (const d of all.values()) {
    if (d.name && fsName(d.name).equals(fsName(name)) && ownHolders(task, { link: `socket:[${d.ino}]` }).length) return true;
  }
  return false;
}

/**
 * Where a filesystem name of socket `d` leads from the working directory of process `pid` (a
 * relative name was resolved against the working directory of the bind; it is kept when it still
 * names the socket's file from there): its absolute path, the file there, and whether that file
 * is the socket's own (sock_diag gives the kernel's dev_t, major << 20 | minor). Not the socket's
 * own file (none, another file, its directory gone, or a relative name the working directory no
 * longer reaches): the name is bound again in a private place (unix-name.ts). Of a relative name,
 * the kernel does not say where its file went.
 */
function nameFile(pid: number, d: linux.UnixDiag): { path: string; st?: fs.BigIntStats; leads: boolean } {
  const given = fsName(d.name!).toString('latin1');
  const p = given.startsWith('/') ? given : path.posix.join(linux.readCwd(pid), given);
  let st: fs.BigIntStats | undefined;
  try {
    st = fs.lstatSync(p, { bigint: true });
  } catch {
    st = undefined;
  }
  const dev = d.vfs ? linux.makeDev(d.vfs.dev >>> 20, d.vfs.dev & 0xfffff) : -1n;
  return { path: p, st, leads: !!st?.isSocket() && st.ino === BigInt(d.vfs?.ino ?? -1) && st.dev === dev };
}

/** The bound name: abstract, or a path (its socket file recorded, or bound privately at restart). */
function describeName(task: CheckpointTask, d: linux.UnixDiag, rec: UnixSocketImage): void {
  rec.name = fsName(d.name!);
  if (rec.name[0] === 0) return; // abstract: every byte counts
  const { path: p, st, leads } = nameFile(task.pid, d);
  rec.namePath = p;
  rec.nameDev = d.vfs ? linux.makeDev(d.vfs.dev >>> 20, d.vfs.dev & 0xfffff) : 0n;
  rec.nameIno = BigInt(d.vfs?.ino ?? 0);
  rec.nameUnlinked = !leads;
  if (st && leads) {
    rec.nameMode = Number(st.mode) & 0o7777;
    rec.nameUid = Number(st.uid);
    rec.nameGid = Number(st.gid);
  }
}

/**
 * A name bound in a private place at restart leads nowhere in the filesystem: connections through
 * it are made through its private socket file; messages sent to it by name are refused.
 */
function checkUnlinkedName(task: CheckpointTask, f: OpenFile, rec: UnixSocketImage, queued: number): void {
  if (!rec.nameUnlinked || !rec.name.length || rec.name[0] === 0) return;
  const object = objectOf(f);
  const name = printable(rec.name);
  if (queued && !rec.peer && !rec.peerClosed) refuse(task.pid, object, `${queued} message(s) sent to the name ${name} wait on it, but that name was unlinked (or no longer leads to it); sending them again by that name is not supported`);
}

/**
 * The listening socket, of this process or of another process of the tree, whose backlog holds a
 * connection from `client`, if any (sock_diag lists a listener's waiting connections by their
 * clients).
 */
function listenerOf(ctx: CheckpointContext, task: CheckpointTask, client: number): linux.UnixDiag | undefined {
  const all = task.state.ensure(DIAG, () => linux.unixDiagDump());
  for (const d of all.values()) {
    if (d.state !== linux.TCP_LISTEN || !d.icons.includes(client)) continue;
    if (ownHolders(task, { link: `socket:[${d.ino}]` }).length) return d;
    if (heldInTree(ctx, task, d.ino)) return d;
  }
  return undefined;
}

/** Socket `ino` is held by exactly one other process, of the tree. */
function heldInTree(ctx: CheckpointContext, task: CheckpointTask, ino: number): boolean {
  const link = `socket:[${ino}]`;
  const others = new Set(otherHolders(task, { link }).map((h) => h.pid));
  return others.size === 1 && !ownHolders(task, { link }).length && !shareOf(ctx, task, { link }).outside.length;
}

/** The client of a connection waiting in a listener's backlog: a socket of this process, or of one other process of the tree (refused otherwise). */
function pendingClient(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, client: number): number {
  if (!client || !(ownHolders(task, { link: `socket:[${client}]` }).length || heldInTree(ctx, task, client))) {
    refuse(task.pid, objectOf(f), `a connection waiting in the listening socket's backlog comes from ${client ? `socket:[${client}], which no one other process of the tree holds alone` : 'a socket already closed'}; not supported yet`);
  }
  return client;
}

/** A filesystem name without the NUL the kernel keeps after it; an abstract name as it is. */
function fsName(name: Buffer): Buffer {
  if (name[0] === 0) return name;
  const end = name.indexOf(0);
  return end >= 0 ? name.subarray(0, end) : name;
}

/**
 * A connected socket: its peer must be a socket of this process. Connected back to it: a
 * socketpair (both unnamed) or a connection made through a listener (the accepted end has the
 * listener's name); or, for a datagram socket, connected one way to a named socket.
 */
function describePeer(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, d: linux.UnixDiag, rec: UnixSocketImage): void {
  const object = objectOf(f);
  const peerLink = `socket:[${d.peer}]`;
  rec.peer = BigInt(d.peer!);
  const p = diagOf(task, d.peer!);
  if (!ownHolders(task, { link: peerLink }).length) {
    const elsewhere = otherHolders(task, { link: peerLink });
    if (!elsewhere.length) refuse(task.pid, object, `it is connected to ${peerLink}, which no process holds (a connection not accepted yet, or a closed end); not supported yet`);
    // A connection through a listener (an end has a name) is not a socketpair: not made by a common ancestor.
    if (d.type !== SOCK.DGRAM && p?.peer === d.ino && (d.name?.length || p.name?.length) && !shareOf(ctx, task, { link: peerLink }).outside.length) {
      acrossProcesses(task, object, d, p, elsewhere, rec);
      return;
    }
    const { shared, outside } = shareGroup(ctx, task, [{ link: f.link }, { link: peerLink }]);
    if (outside.length) {
      externalPeer(ctx, task, f, d, p, rec, `it is connected to ${peerLink}, a socket of ${describeHolders(outside)}, outside the checkpointed process tree`, shared !== undefined);
      return;
    }
    if (d.type === SOCK.DGRAM && p?.name?.length && p.peer !== d.ino) {
      // A datagram socket connected one way to a named socket of another process of the tree: connected again once both exist.
      rec.peer = 0n;
      rec.role = ROLE.DGRAM_TO;
      connectedOneWay(task, f, elsewhere[0].pid, p, rec);
      return;
    }
    // In the tree: a socketpair, made by the common ancestor of the two ends' holders, which must
    // hold one of them (datagram sockets connected both ways are one, whatever their names).
    if ((d.type !== SOCK.DGRAM && (d.name?.length || p?.name?.length)) || p?.peer !== d.ino) {
      refuse(task.pid, object, `it is connected to ${peerLink} of ${describeHolders(elsewhere)} through a name (a listener, or a datagram socket connected one way); a connection through a name between two processes is not supported yet`);
    }
    if (shared && !shared.holders.some((h) => h.pid === shared.maker)) {
      refuse(task.pid, object, `its peer ${peerLink} is in ${describeHolders(elsewhere)}, and their common ancestor ${shared.maker} holds neither end; such a socketpair is not supported yet`);
    }
    return;
  }
  const named = (x: linux.UnixDiag | undefined): boolean => !!x?.name?.length;
  if (d.peer === d.ino && d.type === SOCK.DGRAM && named(d)) {
    rec.peer = 0n; // connected to itself
    rec.role = ROLE.DGRAM_TO;
    rec.via = fsName(d.name!);
    rec.viaIno = BigInt(d.ino);
    rec.viaPrivate = rec.nameUnlinked;
    return;
  }
  if (!p || p.peer !== d.ino) {
    if (d.type !== SOCK.DGRAM || !named(p)) refuse(task.pid, object, `it is connected to ${peerLink}, which is not connected back to it and has no name; not supported yet`);
    rec.peer = 0n;
    rec.role = ROLE.DGRAM_TO;
    connectedOneWay(task, f, task.pid, p!, rec);
    return;
  }
  // Datagram sockets connected to each other: a socketpair, each end bound to its name (if any).
  if (d.type === SOCK.DGRAM || !(named(d) || named(p))) return;
  // A connection through a listener: the accepted end has the listener's name. When both ends
  // have names, the connecting end bound its own.
  const accepted = named(d) && named(p) ? acceptedEnd(task, object, d, p) : named(d) ? d : p;
  rec.role = accepted === d ? ROLE.ACCEPTED : ROLE.CLIENT;
  rec.via = fsName(accepted.name!);
}

/**
 * A connection through a listener between two processes of the tree: made again by the connecting
 * process and accepted in the other (UnixConnect). Each end must be held by its one process (the
 * accepted socket replaces a stand-in at its fds there), and carry no credentials or descriptors
 * in its queue (the queues are sent again from the two processes as they connect).
 */
function acrossProcesses(task: CheckpointTask, object: string, d: linux.UnixDiag, p: linux.UnixDiag, elsewhere: ReturnType<typeof otherHolders>, rec: UnixSocketImage): void {
  const holders = new Set(elsewhere.map((h) => h.pid));
  if (holders.size !== 1 || otherHolders(task, { link: `socket:[${d.ino}]` }).length) {
    refuse(task.pid, object, `it is connected through a listener to socket:[${p.ino}] of ${describeHolders(elsewhere)}, and one of the two ends is held by several processes; not supported yet`);
  }
  const named = (x: linux.UnixDiag): boolean => !!x.name?.length;
  const accepted = named(d) && named(p) ? acceptedEnd(task, object, d, p) : named(d) ? d : p;
  rec.role = accepted === d ? ROLE.ACCEPTED : ROLE.CLIENT;
  rec.via = fsName(accepted.name!);
}

/**
 * Which end of a connection whose two ends have names was accepted from a listener: the accepted
 * socket shares its listener's name, the very socket file (bind makes a new file for each socket),
 * so its name's file (sock_diag's UNIX_DIAG_VFS) is that of a socket still listening. A listener
 * already closed leaves two ends alike: refused.
 */
function acceptedEnd(task: CheckpointTask, object: string, a: linux.UnixDiag, b: linux.UnixDiag): linux.UnixDiag {
  const all = task.state.ensure(DIAG, () => linux.unixDiagDump());
  // An abstract name is unique among the sockets bound to it, which the accepted ones are not.
  const sameFile = (l: linux.UnixDiag, x: linux.UnixDiag): boolean => (x.name![0] === 0 ? true : !!x.vfs && l.vfs?.dev === x.vfs.dev && l.vfs.ino === x.vfs.ino);
  const listens = (x: linux.UnixDiag): boolean => [...all.values()].some((l) => l.ino !== x.ino && l.state === linux.TCP_LISTEN && l.type === x.type && !!l.name && fsName(l.name).equals(fsName(x.name!)) && sameFile(l, x));
  const la = listens(a);
  const lb = listens(b);
  if (la === lb) {
    refuse(task.pid, object, `both ends of its connection (socket:[${b.ino}]) have names, and ${la ? 'both names are' : 'neither name is'} a listening socket's: which end was accepted from a listener cannot be told (its listener was closed); not supported yet`);
  }
  return la ? a : b;
}

/** A datagram socket connected one way to the named socket `p`, which process `holder` holds: by its name, or privately where that no longer leads to it. */
function connectedOneWay(task: CheckpointTask, f: OpenFile, holder: number, p: linux.UnixDiag, rec: UnixSocketImage): void {
  rec.via = fsName(p.name!);
  rec.viaIno = BigInt(p.ino);
  rec.viaPrivate = rec.via[0] !== 0 && !nameFile(holder, p).leads;
  // Connected again by the name, from this process's working directory: a relative name must lead there too.
  if (rec.via[0] !== 0 && !rec.viaPrivate && holder !== task.pid && !nameFile(task.pid, p).leads) {
    refuse(task.pid, objectOf(f), `it is connected to the relative name ${printable(rec.via)} of process ${holder}, which does not lead to that socket from this process's working directory; not supported`);
  }
}

/**
 * A peer outside the tree is not restored. Refused, unless the user said how the socket comes back
 * (cptrst checkpoint --ext-unix-sk): `reconnect`, a datagram socket connected one way to a named
 * socket is connected again to that name at restart (by the task, as the task: the kernel checks
 * its right to send there); `close`, an unnamed socket is restored as one whose peer has closed,
 * with what waits in its queue.
 */
function externalPeer(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, d: linux.UnixDiag, p: linux.UnixDiag | undefined, rec: UnixSocketImage, where: string, alsoInTree: boolean): void {
  const object = objectOf(f);
  const refuseWith = (why: string): never => refuse(task.pid, object, `${where}; ${why}`);
  if (alsoInTree) refuseWith('its peer is held both inside and outside the tree; not supported');
  if (ctx.flags & CheckpointFlags.EXT_UNIX_RECONNECT && d.type === SOCK.DGRAM && p?.name?.length && p.peer !== d.ino) {
    const via = fsName(p.name);
    if (via[0] !== 0) {
      // The name must still lead to that very socket, or the restart would connect elsewhere.
      const target = via[0] === 0x2f ? via.toString('latin1') : path.posix.join(linux.readCwd(task.pid), via.toString('latin1'));
      let st: fs.BigIntStats | undefined;
      try {
        st = fs.statSync(target, { bigint: true });
      } catch {
        st = undefined;
      }
      const dev = p.vfs ? linux.makeDev(p.vfs.dev >>> 20, p.vfs.dev & 0xfffff) : -1n;
      if (!st?.isSocket() || st.ino !== BigInt(p.vfs?.ino ?? -1) || st.dev !== dev) refuseWith(`its name ${printable(via)} no longer leads to it, so it cannot be connected again by that name`);
    }
    rec.peer = 0n;
    rec.role = ROLE.DGRAM_TO;
    rec.via = via;
    return;
  }
  if (ctx.flags & CheckpointFlags.EXT_UNIX_CLOSE && !d.name?.length) {
    rec.peer = 0n;
    rec.peerClosed = true;
    return;
  }
  refuseWith(
    'a peer is restored only together with the processes that hold it (cptrst checkpoint --ext-unix-sk reconnect: a datagram socket connected one way to a named socket is connected to that name again at restart; --ext-unix-sk close: an unnamed socket is restored as if its peer had closed)',
  );
}

export class UnixSocketKind implements FileKindHandler {
  readonly kind = 'unix-socket';
  readonly records = [UnixSocketImage, SocketQueueImage, UnixScmImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.stat.isSocket() && /^socket:\[\d+\]$/.test(f.link);
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    examine(ctx, task, f);
  }

  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    const st = examine(ctx, task, f);
    out.write(st.rec);
    if (st.rec.type === SOCK.STREAM) {
      if (st.queue.length) {
        const q = new SocketQueueImage();
        q.data = Buffer.concat(st.queue.map((m) => m.data));
        if (q.data.length) out.write(q);
      }
    } else {
      for (const m of st.queue) {
        const q = new SocketQueueImage();
        q.data = m.data;
        if (!st.rec.peer && !st.rec.peerClosed) q.from = fsName(m.from);
        out.write(q);
      }
    }
    for (const c of st.scm) out.write(c);
  }

  open(ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const rec = socketRecord(task, img, req);
    const table = restoredSockets(task);
    let s = table.get(rec.ino);
    if (s) {
      if (s.rec) throw new CptError('EBADIMG', `unix socket ${rec.ino} is restored twice`, { pid: task.pid, object: req.object });
      if (s.peer !== rec.peer) throw new CptError('EBADIMG', `unix socket ${rec.ino} is not the peer of ${s.peer}`, { pid: task.pid, object: req.object });
      if (s.type !== rec.type) throw new CptError('EBADIMG', `unix socket ${rec.ino}: its type differs from its peer's`, { pid: task.pid, object: req.object });
      s.rec = rec;
      bindName(ctx, task, s.fd, rec, req); // a named end of a datagram socketpair
    } else if (carriedIn(ctx, task.pid).has(`unix:${rec.ino}`)) {
      return openCarriedEnd(ctx, task, img, rec, req);
    } else if (rec.role === ROLE.ACCEPTED) {
      // A stand-in until the end of the files restore, when the connection is made through a listener and accepted.
      const t = task.tracee!;
      s = { fd: moveAbove(task, t.syscallOk(linux.syscallNumber('socket'), [linux.AF_UNIX, rec.type | SOCK.CLOEXEC, 0], `socket for ${req.object}`), req.above, 'a socket'), type: rec.type, peer: rec.peer, rec };
      table.set(rec.ino, s);
    } else if ((rec.peer || rec.peerClosed) && rec.role === ROLE.NONE) {
      s = makePair(ctx, task, rec, req);
    } else if (rec.role === ROLE.CLIENT) {
      s = { fd: makeSocket(ctx, task, rec, req), type: rec.type, peer: rec.peer, rec };
      table.set(rec.ino, s);
    } else {
      s = { fd: makeSocket(ctx, task, rec, req), type: rec.type, peer: 0n, rec };
      table.set(rec.ino, s);
    }
    s.queue = req.records.of(SocketQueueImage);
    s.scm = scmRecords(task, req, rec.type, rec.passcred, s.queue.length);
    s.object = req.object;
    s.flags = img.flags;
    setOptions(ctx, task, s.fd, rec, req.object);
    if (rec.role === ROLE.DGRAM_TO && rec.viaPrivate) {
      // Connected from where that name is bound privately (now, or once its socket is made): never by its path.
      connectPrivately(ctx, task, s.fd, rec.viaIno, rec.via, req.object);
      s.connected = true;
    }
    const t = task.tracee!;
    const fd = t.syscallOk(SYS.fcntl, [s.fd, F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) for ${req.object}`);
    t.syscallOk(SYS.fcntl, [fd, F.SETFL, img.flags & O.NONBLOCK], `F_SETFL for ${req.object}`);
    return fd;
  }
}

/** A socket made again: its anchor fd (above the image's), and what the end of the files restore still does with it. */
interface RestoredSocket {
  fd: bigint;
  type: number;
  peer: bigint;
  /** Its record, once its own FILE is read (a socketpair's second end is made with the first). */
  rec?: UnixSocketImage;
  queue?: SocketQueueImage[];
  /** The control data of its queued messages (descriptors in flight, credentials). */
  scm?: UnixScmImage[];
  object?: string;
  /** Shutdown bits already in effect (a peer's shutdown marks it too). */
  shut?: number;
  /** The other end of a socketpair standing for a peer that had closed: it sends the queue, then goes. */
  closedPeer?: bigint;
  /** The FILE's open flags. */
  flags?: number;
  /** A PENDING client, connected into its listener's backlog; a DGRAM_TO socket connected to a private name. */
  connected?: boolean;
  /**
   * A CLIENT: the listener it connects to (the image's, or standIn). `through`: an O_PATH fd of the
   * private socket file of the listener it connects to (a CLIENT), or of its own (a listener with
   * connections waiting).
   */
  listener?: RestoredSocket;
  standIn?: RestoredSocket;
  through?: bigint;
  /** A listener that listens already. */
  listening?: boolean;
  /** A listener whose backlog has clients in other processes (connectBacklog). */
  across?: boolean;
}

const RESTORED = new StateKey<Map<bigint, RestoredSocket>>('files.unixRestored');
function restoredSockets(task: RestartTask): Map<bigint, RestoredSocket> {
  return task.state.ensure(RESTORED, () => new Map<bigint, RestoredSocket>());
}

function socketRecord(task: RestartTask, img: FileImage, req: OpenRequest): UnixSocketImage {
  const bad = (why: string) => new CptError('EBADIMG', `unix socket: ${why}`, { pid: task.pid, object: req.object });
  const recs = req.records.of(UnixSocketImage);
  if (recs.length !== 1) throw bad(`${recs.length} socket records for one file (one is needed)`);
  const r = recs[0];
  if (img.flags & ~SOCKET_FLAGS || (img.flags & O.ACCMODE) !== O.RDWR) throw bad(`open flags 0${img.flags.toString(8)}`);
  if (!TYPES.has(r.type)) throw bad(`type ${r.type}`);
  if (![linux.TCP_ESTABLISHED, linux.TCP_CLOSE, linux.TCP_LISTEN].includes(r.state)) throw bad(`state ${r.state}`);
  if (!Object.values(ROLE).includes(r.role as 0)) throw bad(`role ${r.role}`);
  const throughName = r.role === ROLE.PENDING || r.role === ROLE.DGRAM_TO;
  if ((r.state === linux.TCP_ESTABLISHED) !== (r.peer !== 0n || r.peerClosed || throughName) || (r.peer && (r.peerClosed || throughName))) throw bad('a connected socket without a peer, or a peer without a connection');
  if ((r.role === ROLE.NONE) !== (r.via.length === 0) || r.via.length > SUN_PATH_MAX) throw bad('the name it is connected through');
  if ((r.role === ROLE.ACCEPTED || r.role === ROLE.CLIENT) && (!r.peer || r.type === SOCK.DGRAM)) throw bad('a connection through a listener without a peer');
  if (r.pending.length && r.state !== linux.TCP_LISTEN) throw bad('connections waiting on a socket that does not listen');
  if ((r.viaPrivate && r.role !== ROLE.DGRAM_TO) || (r.viaIno && r.role !== ROLE.DGRAM_TO && r.role !== ROLE.PENDING)) throw bad('the socket it sends to, on a socket that is not connected one way');
  if (r.viaPrivate && (!r.viaIno || r.via[0] === 0)) throw bad('a private name to connect to without its socket');
  if (r.state === linux.TCP_LISTEN && (r.type === SOCK.DGRAM || !r.name.length)) throw bad('a listening socket that is unnamed or not connection-oriented');
  if (r.peer && r.name.length && r.role === ROLE.NONE && r.type !== SOCK.DGRAM) throw bad('a named socket with a peer');
  if (r.name.length > SUN_PATH_MAX) throw bad('a name longer than sun_path');
  if (r.shutdown & ~(linux.RCV_SHUTDOWN | linux.SEND_SHUTDOWN)) throw bad(`shutdown bits ${r.shutdown}`);
  const queue = req.records.of(SocketQueueImage);
  if (queue.length && !r.peer && !r.peerClosed && !r.name.length) throw bad('messages queued on a socket without a peer or a name');
  if (r.name.length && r.name[0] !== 0 && (!r.namePath.startsWith('/') || (r.name[0] === 0x2f && r.namePath !== r.name.toString('latin1')))) throw bad('a name without its path');
  if (queue.reduce((n, q) => n + q.data.length, 0) > QUEUE_MAX) throw bad(`more than ${QUEUE_MAX} bytes queued`);
  if (r.type === SOCK.STREAM && queue.length > 1) throw bad('a stream\'s bytes in more than one record');
  return r;
}

/**
 * The end of a socketpair that an ancestor made (its carried fd): the ancestor's entry for it
 * gets the FILE's record and queue, so that the ancestor, which holds the other end, sends the
 * queues of both ends and makes the shutdowns and peek offsets at the end of its own restore,
 * as for a socketpair of its own; the task only gets its fd.
 */
function openCarriedEnd(ctx: RestartContext, task: RestartTask, img: FileImage, rec: UnixSocketImage, req: OpenRequest): bigint {
  const c = carriedIn(ctx, task.pid).get(`unix:${rec.ino}`)!;
  const s = c.shared as RestoredSocket;
  const bad = (why: string) => new CptError('EBADIMG', `unix socket ${rec.ino}: ${why}`, { pid: task.pid, object: req.object });
  if (s.rec) throw bad('restored twice');
  if (s.peer !== rec.peer || rec.role !== ROLE.NONE || rec.peerClosed) throw bad(`it is not the peer of ${s.peer}`);
  if (s.type !== rec.type) throw bad('its type differs from its peer\'s');
  s.rec = rec;
  s.queue = req.records.of(SocketQueueImage);
  s.scm = scmRecords(task, req, rec.type, rec.passcred, s.queue.length, true);
  s.object = `${req.object} of process ${task.pid}`;
  s.flags = img.flags;
  const t = task.tracee!;
  bindName(ctx, task, c.fds[0], rec, req);
  setOptions(ctx, task, c.fds[0], rec, req.object);
  const fd = t.syscallOk(SYS.fcntl, [c.fds[0], F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) for ${req.object}`);
  t.syscallOk(SYS.fcntl, [fd, F.SETFL, img.flags & O.NONBLOCK], `F_SETFL for ${req.object}`);
  return fd;
}

/**
 * socketpair inside the task; both ends above the image's fds; the peer's end waits for its FILE,
 * in the task or in a descendant (which carries it: carriedIn).
 */
function makePair(ctx: RestartContext, task: RestartTask, rec: UnixSocketImage, req: OpenRequest): RestoredSocket {
  const t = task.tracee!;
  const table = restoredSockets(task);
  if (table.has(rec.peer)) throw new CptError('EBADIMG', `unix socket ${rec.peer} is the peer of two sockets`, { pid: task.pid, object: req.object });
  const at = t.stage(Buffer.alloc(8));
  t.syscallOk(linux.syscallNumber('socketpair'), [linux.AF_UNIX, rec.type | SOCK.CLOEXEC, 0, at], `socketpair for ${req.object}`);
  const fds = t.readMemory(at, 8);
  const mine: RestoredSocket = { fd: moveAbove(task, BigInt(fds.readInt32LE(0)), req.above, 'a socket'), type: rec.type, peer: rec.peer, rec };
  const other = moveAbove(task, BigInt(fds.readInt32LE(4)), req.above, 'a socket');
  table.set(rec.ino, mine);
  bindName(ctx, task, mine.fd, rec, req); // datagram sockets connected both ways may have names
  // A closed peer: the other end only sends the queue, and is closed at the end.
  if (rec.peerClosed) mine.closedPeer = other;
  else {
    const peer: RestoredSocket = { fd: other, type: rec.type, peer: rec.ino };
    table.set(rec.peer, peer);
    carriedIn(ctx, task.pid).set(`unix:${rec.peer}`, { fds: [other], shared: peer });
  }
  return mine;
}

/** socket(2), bound to its name (a stale socket file of the same inode removed first), listening if it did. */
function makeSocket(ctx: RestartContext, task: RestartTask, rec: UnixSocketImage, req: OpenRequest): bigint {
  const t = task.tracee!;
  const fd = moveAbove(task, t.syscallOk(linux.syscallNumber('socket'), [linux.AF_UNIX, rec.type | SOCK.CLOEXEC, 0], `socket for ${req.object}`), req.above, 'a socket');
  bindName(ctx, task, fd, rec, req); // a listener listens after the final credentials (UnixConnect)
  return fd;
}

/** Binds the task's socket `fd` to the recorded name, if any (in place, or privately: unix-name.ts). */
function bindName(ctx: RestartContext, task: RestartTask, fd: bigint, rec: UnixSocketImage, req: { object: string }): void {
  const t = task.tracee!;
  if (rec.name.length && rec.name[0] !== 0 && rec.nameUnlinked) {
    // Its file was gone at the checkpoint: the name is bound where nobody sees it.
    bindPrivately(ctx, task, fd, rec.ino, rec.name, rec.namePath, req.object);
  } else if (rec.name.length) {
    const fsName = rec.name[0] !== 0;
    if (fsName) removeStale(ctx, task, rec, req);
    const addr = Buffer.alloc(2 + rec.name.length);
    addr.writeUInt16LE(linux.AF_UNIX, 0);
    rec.name.copy(addr, 2);
    t.syscallOk(linux.syscallNumber('bind'), [fd, t.stage(addr), addr.length], `bind of ${req.object} to ${printable(rec.name)}`);
    if (fsName) setNameAttributes(ctx, task, rec, req);
  }
}

const printable = (name: Buffer): string => (name[0] === 0 ? `@${name.subarray(1).toString('latin1')}` : name.toString('latin1'));

/**
 * The socket file the checkpointed process left at its name (bind made it; the process's death
 * does not remove it): removed inside the task only if it is the very file recorded, on the same
 * boot; anything else there makes bind fail with EADDRINUSE.
 */
function removeStale(ctx: RestartContext, task: RestartTask, rec: UnixSocketImage, req: { object: string }): void {
  const t = task.tracee!;
  const p = rec.namePath;
  requireCanonicalPath(p, task.pid, req.object);
  const dir = path.posix.dirname(p);
  const dirfd = openRecordedFile(t, dir, { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR }, sameBoot: ctx.sameBoot, object: `${req.object}: the directory of its name` });
  try {
    const base = t.stage(Buffer.from(path.posix.basename(p) + '\0'));
    const fd = t.syscall(SYS.openat, [dirfd, base, O.PATH | O.NOFOLLOW | O.CLOEXEC, 0]);
    if (fd < 0n) return; // nothing there
    let same = false;
    try {
      const st = fs.statSync(`/proc/${task.pid}/fd/${fd}`, { bigint: true });
      same = ctx.sameBoot && st.isSocket() && st.ino === rec.nameIno && st.dev === rec.nameDev;
    } finally {
      t.syscall(SYS.close, [fd]);
    }
    if (same) t.syscallOk(linux.syscallNumber('unlinkat'), [dirfd, base, 0], `removing the stale socket file ${p}`);
  } finally {
    t.syscall(SYS.close, [dirfd]);
  }
}

/**
 * The socket file bind just made gets the recorded permission bits and owner (through an O_PATH
 * fd of it, inside the task: the owner only for root's image, or when it is the image owner's).
 */
function setNameAttributes(ctx: RestartContext, task: RestartTask, rec: UnixSocketImage, req: { object: string }): void {
  const t = task.tracee!;
  const p = rec.namePath;
  requireCanonicalPath(p, task.pid, req.object);
  const dirfd = openRecordedFile(t, path.posix.dirname(p), { flags: O.PATH | O.DIRECTORY, expect: { type: S_IF.DIR }, sameBoot: ctx.sameBoot, object: `${req.object}: the directory of its name` });
  try {
    const fd = t.syscallOk(SYS.openat, [dirfd, t.stage(Buffer.from(path.posix.basename(p) + '\0')), O.PATH | O.NOFOLLOW | O.CLOEXEC, 0], `opening the socket file ${p}`);
    try {
      const st = fs.statSync(`/proc/${task.pid}/fd/${fd}`, { bigint: true });
      if (!st.isSocket()) throw new CptError('EEXIST', `${p} is not the socket file bind made`, { pid: task.pid, object: req.object });
      const mode = Number(st.mode) & 0o7777;
      if (mode !== rec.nameMode) {
        t.syscallOk(linux.syscallNumber('fchmodat'), [linux.AT_FDCWD, t.stage(Buffer.from(`/proc/self/fd/${fd}\0`)), rec.nameMode, 0], `chmod of the socket file ${p}`);
      }
      if (Number(st.uid) !== rec.nameUid || Number(st.gid) !== rec.nameGid) {
        if (!ctx.imageTrusted && rec.nameUid !== ctx.imageOwner.uid) {
          throw new CptError('EPERM', `the socket file ${p} was owned by uid ${rec.nameUid}, but the image belongs to uid ${ctx.imageOwner.uid}`, { pid: task.pid, object: req.object });
        }
        t.syscallOk(linux.syscallNumber('fchownat'), [fd, t.stage(Buffer.from('\0')), rec.nameUid, rec.nameGid, linux.AT.EMPTY_PATH], `chown of the socket file ${p}`);
      }
    } finally {
      t.syscall(SYS.close, [fd]);
    }
  } finally {
    t.syscall(SYS.close, [dirfd]);
  }
}

/** SO_SNDBUF, SO_RCVBUF (the kernel doubles what it is given), SO_PASSCRED. */
function setOptions(ctx: RestartContext, task: RestartTask, fd: bigint, rec: UnixSocketImage, object: string): void {
  const t = task.tracee!;
  const v = t.stage(Buffer.alloc(8));
  const get = (opt: number): number => {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(4);
    t.writeMemory(v + 4n, len);
    t.syscallOk(linux.syscallNumber('getsockopt'), [fd, linux.SOL_SOCKET, opt, v, v + 4n], `getsockopt for ${object}`);
    return t.readMemory(v, 4).readInt32LE(0);
  };
  const set = (opt: number, value: number, what: string): void => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    t.writeMemory(v, b);
    t.syscallOk(linux.syscallNumber('setsockopt'), [fd, linux.SOL_SOCKET, opt, v, 4], `setsockopt(${what}) for ${object}`);
  };
  for (const [opt, force, want, what] of [[SO.SNDBUF, SO.SNDBUFFORCE, rec.sndbuf, 'SO_SNDBUF'], [SO.RCVBUF, SO.RCVBUFFORCE, rec.rcvbuf, 'SO_RCVBUF']] as const) {
    if (get(opt) === want) continue;
    set(opt, Math.floor(want / 2), what);
    // Above net.core.[wr]mem_max only a privileged process got it (the FORCE option), and so may a restore of root's image.
    if (get(opt) !== want && ctx.imageTrusted) set(force, Math.floor(want / 2), `${what}FORCE`);
    if (get(opt) !== want) throw new CptError('EPERM', `${what} is ${get(opt)}, not ${want} as at the checkpoint`, { pid: task.pid, object });
  }
  if (rec.passcred) set(SO.PASSCRED, 1, 'SO_PASSCRED');
}

/**
 * End of the files restore: every socket exists. The connections made through names; returns the
 * fds the queues still need (every socket's anchor), which the files restore keeps open.
 */
export function connectUnixSockets(ctx: RestartContext, task: RestartTask): bigint[] {
  const table = restoredSockets(task);
  for (const [ino, s] of table) {
    if (!s.rec) throw new CptError('EBADIMG', `unix socket ${ino} is the peer of a restored socket, but no FILE of the image is it`, { pid: task.pid, object: `socket:[${ino}]` });
  }
  const keep = connectThroughNames(ctx, task, table);
  return [...keep, ...[...table.values()].flatMap((s) => (s.closedPeer !== undefined ? [s.fd, s.closedPeer] : [s.fd]))];
}

/**
 * After the final credentials (a message carries its sender's credentials, which must be the
 * restored process's own, not those it has while being made): each queue is sent again by the
 * socket's peer (in order, one send per message, non-blocking), then the shutdowns, then the
 * peek offsets; then the sockets' temporary fds go.
 */
export class SocketQueuesRestore implements RestoreHandler {
  readonly name = 'files.socket-queues';
  /** After task.creds.final (900). */
  readonly order = 950;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own */
  }
  finish(_ctx: RestartContext, task: RestartTask): void {
    for (const s of restoredSockets(task).values()) {
      const across = (s.rec?.role === ROLE.ACCEPTED || s.rec?.role === ROLE.CLIENT) && !restoredSockets(task).has(s.peer);
      if (across && !s.connected) throw new CptError('EBADIMG', 'a connection through a listener with another process that was not made', { pid: task.pid, object: s.object ?? `socket:[${s.rec!.ino}]` });
      if (s.rec?.role === ROLE.PENDING && !s.connected) throw new CptError('EBADIMG', 'a connection waiting in no listener\'s backlog', { pid: task.pid, object: s.object ?? `socket:[${s.rec.ino}]` });
    }
    sendQueues(task);
  }
}

function sendQueues(task: RestartTask): void {
  const t = task.tracee!;
  const table = restoredSockets(task);
  if (!table.size) return;
  // Room for the data in the scratch area, with the address after it.
  const room = Math.max(4096, Math.floor((t.scratch().dataSize - 2048) / 4096) * 4096);
  let unbound: bigint | undefined;
  const senderByName = (from: Buffer, type: number, object: string): bigint => {
    if (!from.length) {
      unbound ??= t.syscallOk(linux.syscallNumber('socket'), [linux.AF_UNIX, type | SOCK.CLOEXEC, 0], 'socket for sending queued messages');
      return unbound;
    }
    const named = [...table.values()].find((x) => x.rec!.name.length && x.rec!.name.equals(from));
    if (!named) throw new CptError('EBADIMG', `a message queued from ${printable(from)}, which is no socket of the image`, { pid: task.pid, object });
    return named.fd;
  };
  for (const s of table.values()) {
    const sender = s.closedPeer ?? (s.peer ? table.get(s.peer)?.fd : undefined);
    for (const [i, q] of (s.queue ?? []).entries()) {
      const scm = s.scm?.find((c) => c.message === i);
      const byName = !s.peer && !s.closedPeer;
      const from = byName ? senderByName(q.from, s.type, s.object!) : sender;
      const to = byName ? sockaddr(s.rec!.name) : undefined;
      if (from === undefined) throw new CptError('EBADIMG', 'messages queued on a socket without a peer', { pid: task.pid, object: s.object! });
      if (s.type !== SOCK.STREAM && q.data.length > room) throw new CptError('EMSGSIZE', `a queued message of ${q.data.length} bytes is larger than cptrst can send in one call (${room})`, { pid: task.pid, object: s.object! });
      let done = 0;
      do {
        const n = Math.min(room, q.data.length - done);
        const at = t.stage(q.data.subarray(done, done + n), 0);
        const addr = to ? t.stage(to, Math.ceil((n + 1) / 8) * 8) : 0n;
        const control = controlOf(scm, done === 0);
        const w = control
          ? sendWithControl(task, from, at, n, addr, to?.length ?? 0, control, Math.ceil((n + 1) / 8) * 8 + 128, s.object!)
          : t.syscall(linux.syscallNumber('sendto'), [from, at, n, linux.MSG.DONTWAIT | linux.MSG.NOSIGNAL, addr, to?.length ?? 0]);
        if (w < 0n || (s.type !== SOCK.STREAM && w !== BigInt(n)) || (w === 0n && n > 0)) {
          throw new CptError(w < 0n ? linux.errnoName(Number(-w)) : 'EIO', `sending the queued data again: ${w < 0n ? linux.errnoName(Number(-w)) : `${w} of ${n} bytes`}`, { pid: task.pid, object: s.object! });
        }
        done += Number(w);
      } while (done < q.data.length);
    }
    if (s.closedPeer !== undefined) {
      t.syscall(SYS.close, [s.closedPeer]); // the peer closes: end of file after the data, as before
      s.shut = (s.shut ?? 0) | (s.type !== SOCK.DGRAM ? linux.RCV_SHUTDOWN | linux.SEND_SHUTDOWN : 0);
    }
  }
  if (unbound !== undefined) t.syscall(SYS.close, [unbound]);
  closeInFlight(task, [...table.values()].flatMap((s) => s.scm ?? []));
  for (const s of table.values()) {
    const want = s.rec!.shutdown & ~(s.shut ?? 0);
    const how = (want & linux.RCV_SHUTDOWN ? 1 : 0) + (want & linux.SEND_SHUTDOWN ? 2 : 0); // SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2
    if (!how) continue;
    t.syscallOk(linux.syscallNumber('shutdown'), [s.fd, how - 1], `shutdown of ${s.object}`);
    s.shut = (s.shut ?? 0) | want;
    // A connection-oriented peer is marked the other way round, as the kernel does.
    const peer = s.peer && s.type !== SOCK.DGRAM ? table.get(s.peer) : undefined;
    if (peer) peer.shut = (peer.shut ?? 0) | (want & linux.RCV_SHUTDOWN ? linux.SEND_SHUTDOWN : 0) | (want & linux.SEND_SHUTDOWN ? linux.RCV_SHUTDOWN : 0);
  }
  for (const s of table.values()) {
    if (s.rec!.peekOff < 0) continue;
    const v = Buffer.alloc(4);
    v.writeInt32LE(s.rec!.peekOff);
    t.syscallOk(linux.syscallNumber('setsockopt'), [s.fd, linux.SOL_SOCKET, SO.PEEK_OFF, t.stage(v), 4], `setsockopt(SO_PEEK_OFF) for ${s.object}`);
  }
  for (const s of table.values()) t.syscall(SYS.close, [s.fd]); // the anchors: the image's fds hold the sockets
  table.clear();
}

/** struct sockaddr_un for a name (a filesystem path without its NUL, or an abstract name). */
function sockaddr(name: Buffer): Buffer {
  const addr = Buffer.alloc(2 + name.length);
  addr.writeUInt16LE(linux.AF_UNIX, 0);
  name.copy(addr, 2);
  return addr;
}

/** connect(2) without waiting (a full backlog is an error, never a hang); the description's flags are put back. */
function connectTo(task: RestartTask, fd: bigint, name: Buffer, object: string): void {
  const t = task.tracee!;
  const flags = t.syscallOk(SYS.fcntl, [fd, F.GETFL, 0], `F_GETFL for ${object}`);
  t.syscallOk(SYS.fcntl, [fd, F.SETFL, Number(flags) | O.NONBLOCK], `F_SETFL for ${object}`);
  const addr = sockaddr(name);
  const r = t.syscall(linux.syscallNumber('connect'), [fd, t.stage(addr), addr.length]);
  t.syscallOk(SYS.fcntl, [fd, F.SETFL, flags], `F_SETFL for ${object}`);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `connecting ${object} to ${printable(name)} failed: ${linux.errnoName(Number(-r))}`, { pid: task.pid, object });
}

/**
 * The connections made through names, prepared once every socket exists: for each connection
 * accepted from a listener, the listener to connect to (the image's, or a stand-in bound to the
 * same name, in place or privately: the accepted end takes the listener's name) and, for a name
 * bound privately, an O_PATH fd of its socket file to connect through; then the datagram sockets
 * connected one way are connected. The stream connections themselves are made after the final
 * credentials (UnixConnect).
 */
function connectThroughNames(ctx: RestartContext, task: RestartTask, table: Map<bigint, RestoredSocket>): bigint[] {
  const listenerFor = (name: Buffer, type: number) => [...table.values()].find((x) => x.rec!.state === linux.TCP_LISTEN && x.type === type && x.rec!.name.equals(name));
  const keep: bigint[] = [];
  for (const a of table.values()) {
    if (a.rec!.role !== ROLE.ACCEPTED || table.has(a.peer)) continue;
    // Its connecting end is in another process, which connects after its final credentials.
    const real = listenerFor(a.rec!.via, a.type);
    const listener = real ?? standInFor(ctx, task, a);
    if (!real) keep.push(listener.fd);
    crossOf(ctx, a.rec!.ino).accepted = { task, s: a, listener, standIn: real ? undefined : listener };
  }
  for (const c of table.values()) {
    if (c.rec!.role !== ROLE.CLIENT) continue;
    if (!table.has(c.peer)) {
      crossOf(ctx, c.peer).client = { task, s: c };
      continue;
    }
    const a = table.get(c.peer);
    const object = c.object!;
    if (!a || a.rec!.role !== ROLE.ACCEPTED || a.peer !== c.rec!.ino || !a.rec!.via.equals(c.rec!.via) || a.type !== c.type || !a.rec!.name.equals(c.rec!.via)) {
      throw new CptError('EBADIMG', 'a connection through a listener whose accepted end does not match', { pid: task.pid, object });
    }
    const real = listenerFor(c.rec!.via, c.type);
    let listener = real;
    if (!listener) {
      listener = standInFor(ctx, task, a);
      keep.push(listener.fd);
      c.standIn = listener;
    }
    c.listener = listener;
    if (listener.rec!.nameUnlinked && listener.rec!.name[0] !== 0) {
      // Its name is bound privately: reached through its socket file, never by a path.
      c.through = privateSocketFile(ctx, task, listener.rec!.ino, a.fd, object);
      keep.push(c.through);
    }
  }
  for (const l of table.values()) {
    // A backlog with clients in other processes: connected in its order once all have their credentials.
    if (l.rec!.pending.some((ino) => !table.has(ino))) {
      backlogOf(ctx, l.rec!.ino).listener = { task, l };
      l.across = true;
      continue;
    }
    if (l.rec!.pending.length && l.rec!.nameUnlinked && l.rec!.name[0] !== 0) {
      l.through = privateSocketFile(ctx, task, l.rec!.ino, l.fd, l.object!);
      keep.push(l.through);
    }
  }
  for (const s of table.values()) {
    if (s.rec!.role === ROLE.PENDING && s.rec!.viaIno && !table.has(s.rec!.viaIno)) backlogOf(ctx, s.rec!.viaIno).clients.set(s.rec!.ino, { task, s });
  }
  for (const s of table.values()) {
    if (s.rec!.role !== ROLE.DGRAM_TO || s.connected) continue;
    // A name bound privately is never reached by its path (which leads elsewhere, or nowhere).
    const target = s.rec!.viaIno ? table.get(s.rec!.viaIno)?.rec : undefined;
    if (target?.nameUnlinked) throw new CptError('EBADIMG', `connected to ${printable(s.rec!.via)}, a name bound privately, by its path`, { pid: task.pid, object: s.object! });
    connectTo(task, s.fd, s.rec!.via, s.object!);
  }
  return keep;
}

/** A listener standing in for the closed one an accepted socket came from: bound to the same name (in place, or privately), not listening yet. */
function standInFor(ctx: RestartContext, task: RestartTask, a: RestoredSocket): RestoredSocket {
  const rec = Object.assign(new UnixSocketImage(), a.rec!, { state: linux.TCP_LISTEN, backlog: 1, role: ROLE.NONE, via: Buffer.alloc(0), peer: 0n });
  return { fd: makeSocket(ctx, task, rec, { tag: 0, object: a.object!, records: { all: [], of: () => [] }, above: 0 }), type: a.type, peer: 0n, rec, object: a.object! };
}

/** A connection through a listener between two processes, by its accepted socket's inode: each side as its process's files restore finds it. */
interface CrossConnection {
  accepted?: { task: RestartTask; s: RestoredSocket; listener: RestoredSocket; standIn?: RestoredSocket; ready?: boolean };
  client?: { task: RestartTask; s: RestoredSocket; ready?: boolean };
  done?: boolean;
}
const CROSS = new WeakMap<RestartContext, Map<bigint, CrossConnection>>();
function crossOf(ctx: RestartContext, ino: bigint): CrossConnection {
  const all = CROSS.get(ctx) ?? new Map<bigint, CrossConnection>();
  CROSS.set(ctx, all);
  let x = all.get(ino);
  if (!x) {
    x = {};
    all.set(ino, x);
  }
  return x;
}

/**
 * A connection between two processes, once both have their final credentials (the finish hooks
 * from there on run hook by hook across the tree, so the second of the two gets here after the
 * first): the connecting process connects, the other accepts from the listener and puts the
 * accepted socket at its fds; then each sends what waited on the other end (as the process that
 * had sent it), before either makes its shutdowns.
 */
function connectAcross(ctx: RestartContext, x: CrossConnection): void {
  const { accepted: A, client: C } = x;
  if (!A || !C || !A.ready || !C.ready || x.done) return;
  x.done = true;
  const a = A.s;
  const c = C.s;
  const object = c.object!;
  if (a.peer !== c.rec!.ino || c.peer !== a.rec!.ino || !a.rec!.via.equals(c.rec!.via) || !a.rec!.name.equals(c.rec!.via) || a.type !== c.type) {
    throw new CptError('EBADIMG', 'a connection through a listener whose accepted end does not match', { pid: C.task.pid, object });
  }
  if (a.scm?.length || c.scm?.length) throw new CptError('EBADIMG', 'control data queued on a connection between two processes', { pid: C.task.pid, object });
  const at = A.task.tracee!;
  const l = A.listener;
  let through: bigint | undefined;
  if (l.rec!.nameUnlinked && l.rec!.name[0] !== 0) through = privateSocketFile(ctx, C.task, l.rec!.ino, c.fd, object);
  try {
    connectTo(C.task, c.fd, through !== undefined ? Buffer.from(`/proc/self/fd/${through}`) : c.rec!.via, object);
  } finally {
    if (through !== undefined) C.task.tracee!.syscall(SYS.close, [through]);
  }
  const got = at.syscallOk(linux.syscallNumber('accept4'), [l.fd, 0, 0, SOCK.CLOEXEC], `accept of the connection of ${object} of process ${C.task.pid}`);
  if (A.standIn) at.syscall(SYS.close, [A.standIn.fd]);
  replaceSocket(A.task, a, got);
  setOptions(ctx, A.task, a.fd, a.rec!, a.object!);
  sendPlain(C.task, c.fd, a.type, a.queue ?? [], a.object!);
  sendPlain(A.task, a.fd, c.type, c.queue ?? [], object);
  a.queue = [];
  c.queue = [];
  a.connected = true;
  c.connected = true;
}

/** The messages (or a stream's bytes) of `queue`, sent in order on `fd` of the task (non-blocking: a short send is an error). */
function sendPlain(task: RestartTask, fd: bigint, type: number, queue: SocketQueueImage[], object: string): void {
  const t = task.tracee!;
  const room = Math.max(4096, Math.floor((t.scratch().dataSize - 2048) / 4096) * 4096);
  for (const q of queue) {
    if (type !== SOCK.STREAM && q.data.length > room) throw new CptError('EMSGSIZE', `a queued message of ${q.data.length} bytes is larger than cptrst can send in one call (${room})`, { pid: task.pid, object });
    let done = 0;
    do {
      const n = Math.min(room, q.data.length - done);
      const w = t.syscall(linux.syscallNumber('sendto'), [fd, t.stage(q.data.subarray(done, done + n), 0), n, linux.MSG.DONTWAIT | linux.MSG.NOSIGNAL, 0, 0]);
      if (w < 0n || (type !== SOCK.STREAM && w !== BigInt(n)) || (w === 0n && n > 0)) {
        throw new CptError(w < 0n ? linux.errnoName(Number(-w)) : 'EIO', `sending the queued data again: ${w < 0n ? linux.errnoName(Number(-w)) : `${w} of ${n} bytes`}`, { pid: task.pid, object });
      }
      done += Number(w);
    } while (done < q.data.length);
  }
}

/**
 * After the final credentials, before the queues: listening sockets listen, and each connection
 * through a listener is made by its connecting socket and accepted, so that the kernel records
 * what it did at the checkpointed process's own listen and connect: SO_PEERCRED on both ends is
 * the process's final credentials, not those it has while being made. Then the connections that
 * wait in each listener's backlog, in its order.
 */
export class UnixConnect implements RestoreHandler {
  readonly name = 'files.unix-connect';
  /** After task.creds.final (900), before the queues (950). */
  readonly order = 920;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own */
  }
  finish(ctx: RestartContext, task: RestartTask): void {
    const t = task.tracee!;
    const table = restoredSockets(task);
    const listen = (l: RestoredSocket): void => {
      if (l.listening) return;
      t.syscallOk(linux.syscallNumber('listen'), [l.fd, l.rec!.backlog], `listen of ${l.object}`);
      l.listening = true;
    };
    for (const l of table.values()) if (l.rec!.state === linux.TCP_LISTEN) listen(l);
    // Connections with another process: made by the second of the two to get here.
    for (const [ino, x] of CROSS.get(ctx) ?? []) {
      if (x.accepted?.task === task) {
        listen(x.accepted.listener);
        x.accepted.ready = true;
      } else if (x.client?.task === task) {
        x.client.ready = true;
      } else continue;
      if (!x.accepted || !x.client) throw new CptError('EBADIMG', `socket ${ino}: a connection through a listener whose other end no process of the image holds`, { pid: task.pid, object: `socket:[${ino}]` });
      connectAcross(ctx, x);
    }
    for (const c of table.values()) {
      if (c.rec!.role !== ROLE.CLIENT || !table.has(c.peer)) continue;
      const a = table.get(c.peer)!;
      listen(c.listener!);
      connectTo(task, c.fd, c.through !== undefined ? Buffer.from(`/proc/self/fd/${c.through}`) : c.rec!.via, c.object!);
      if (c.through !== undefined) t.syscall(SYS.close, [c.through]);
      const accepted = t.syscallOk(linux.syscallNumber('accept4'), [c.listener!.fd, 0, 0, SOCK.CLOEXEC], `accept of the connection of ${c.object}`);
      if (c.standIn) t.syscall(SYS.close, [c.standIn.fd]);
      replaceSocket(task, a, accepted);
      setOptions(ctx, task, a.fd, a.rec!, a.object!);
    }
    for (const l of table.values()) {
      if (l.across) continue;
      for (const ino of l.rec!.pending) {
        const c = table.get(ino);
        if (!c?.rec || c.rec.role !== ROLE.PENDING || !c.rec.via.equals(l.rec!.name)) throw new CptError('EBADIMG', `the connection waiting from socket ${ino} does not match its listener`, { pid: task.pid, object: l.object! });
        connectTo(task, c.fd, l.through !== undefined ? Buffer.from(`/proc/self/fd/${l.through}`) : l.rec!.name, c.object!);
        c.connected = true;
      }
      if (l.through !== undefined) t.syscall(SYS.close, [l.through]);
    }
    for (const [ino, b] of BACKLOGS.get(ctx) ?? []) {
      if (b.listener?.task === task) b.listener.ready = true;
      for (const c of b.clients.values()) if (c.task === task) c.ready = true;
      if (!b.listener) throw new CptError('EBADIMG', `a connection waiting in the backlog of socket ${ino}, which no process of the image listens on`, { pid: task.pid, object: `socket:[${ino}]` });
      connectBacklog(ctx, b);
    }
  }
}

/** A listener's backlog with clients in other processes of the tree, by the listener's inode. */
interface Backlog {
  listener?: { task: RestartTask; l: RestoredSocket; ready?: boolean };
  clients: Map<bigint, { task: RestartTask; s: RestoredSocket; ready?: boolean }>;
  done?: boolean;
}
const BACKLOGS = new WeakMap<RestartContext, Map<bigint, Backlog>>();
function backlogOf(ctx: RestartContext, ino: bigint): Backlog {
  const all = BACKLOGS.get(ctx) ?? new Map<bigint, Backlog>();
  BACKLOGS.set(ctx, all);
  let b = all.get(ino);
  if (!b) {
    b = { clients: new Map() };
    all.set(ino, b);
  }
  return b;
}

/**
 * Once the listener listens and every client has its final credentials: each waiting connection
 * is made again, in the backlog's order, by the process that holds its client (through the
 * listener's private socket file when its name is private).
 */
function connectBacklog(ctx: RestartContext, b: Backlog): void {
  const L = b.listener!;
  if (b.done || !L.ready || [...b.clients.values()].some((c) => !c.ready)) return;
  b.done = true;
  const l = L.l;
  const own = restoredSockets(L.task);
  for (const ino of l.rec!.pending) {
    const mine = own.get(ino);
    const c = mine ? { task: L.task, s: mine } : b.clients.get(ino);
    if (!c?.s.rec || c.s.rec.role !== ROLE.PENDING || !c.s.rec.via.equals(l.rec!.name)) throw new CptError('EBADIMG', `the connection waiting from socket ${ino} does not match its listener`, { pid: L.task.pid, object: l.object! });
    const through = l.rec!.nameUnlinked && l.rec!.name[0] !== 0 ? privateSocketFile(ctx, c.task, l.rec!.ino, c.s.fd, c.s.object!) : undefined;
    try {
      connectTo(c.task, c.s.fd, through !== undefined ? Buffer.from(`/proc/self/fd/${through}`) : l.rec!.name, c.s.object!);
    } finally {
      if (through !== undefined) c.task.tracee!.syscall(SYS.close, [through]);
    }
    c.s.connected = true;
  }
  if (b.clients.size !== l.rec!.pending.filter((ino) => !own.has(ino)).length) throw new CptError('EBADIMG', 'a connection registered in a backlog that does not list it', { pid: L.task.pid, object: l.object! });
}

/** Puts `real` at every fd of the task that holds the stand-in socket `s`, with the FILE's flags; the stand-in goes. */
function replaceSocket(task: RestartTask, s: RestoredSocket, real: bigint): void {
  const t = task.tracee!;
  const ino = fs.statSync(`/proc/${task.pid}/fd/${s.fd}`, { bigint: true }).ino;
  const moved = t.syscallOk(SYS.fcntl, [real, F.DUPFD_CLOEXEC, s.fd], `fcntl(F_DUPFD_CLOEXEC) of ${s.object}`);
  t.syscall(SYS.close, [real]);
  for (const fd of linux.listFds(task.pid)) {
    if (BigInt(fd) === s.fd || BigInt(fd) === moved || linux.readFdLink(task.pid, fd) !== `socket:[${ino}]`) continue;
    const cloexec = (linux.readFdinfo(task.pid, fd).flags & O.CLOEXEC) !== 0;
    t.syscallOk(SYS.dup3, [moved, fd, cloexec ? O.CLOEXEC : 0], `dup3 of the accepted socket to fd ${fd}`);
  }
  t.syscall(SYS.close, [s.fd]);
  s.fd = moved;
  t.syscallOk(SYS.fcntl, [moved, F.SETFL, (s.flags ?? 0) & O.NONBLOCK], `F_SETFL for ${s.object}`);
}
