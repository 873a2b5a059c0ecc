/**
 * Pipes, FIFOs and unix sockets: the uapi numbers and cptrst's own calls on them (reading the
 * data in flight of a checkpointed process without taking it away).
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { GuardianEntry, guardianReply, guardianStart, runGuardian } from '../guardian';
import { libcRecvmsg, libcSendmsg, rawSyscall } from './libc';
import { syscallNumber } from './syscalls';
import { F, FIONREAD, O } from './constants';
import { errnoName } from './errno';
import { Nlmsghdr, UnixDiagMsg, UnixDiagReq } from './structs';
import { decodeStruct, encodeStruct, sizeOfStruct } from '../image/cstruct';

/** ioctl on a socket: bytes not yet sent (unix stream: not yet read by the peer). */
export const SIOCOUTQ = 0x5411;
export const SPLICE_F_NONBLOCK = 2;
/** The most a pipe buffer (and so one packet of a packet-mode pipe) holds. */
export const PIPE_BUF_MAX = 4096;

function check(r: bigint, what: string): bigint {
  if (r < 0n) throw new CptError(errnoName(Number(-r)), `${what} failed: ${errnoName(Number(-r))}`, { object: what });
  return r;
}

/** pipe2 in cptrst itself: [read end, write end]. */
export function pipe2(flags: number): [number, number] {
  const fds = Buffer.alloc(8);
  check(rawSyscall(syscallNumber('pipe2'), fds, flags), 'pipe2');
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

/** An int-valued ioctl (FIONREAD, SIOCOUTQ...); -errno on failure. */
export function ioctlInt(fd: number, request: number): number {
  const v = Buffer.alloc(4);
  const r = rawSyscall(syscallNumber('ioctl'), fd, request, v);
  return r < 0n ? Number(r) : v.readInt32LE(0);
}

/** What a pipe holds: its bytes, and where reads end (one segment per packet of a packet-mode pipe). */
export interface PipeContents {
  data: Buffer;
  /** Lengths of the successive reads that took it: a packet buffer ends a read. */
  segments: number[];
}

/**
 * Copies the data waiting in a pipe without consuming it: tee(2) from `fd` (a readable
 * description of the pipe, cptrst's own dup of it) into a new pipe of cptrst's with the same
 * capacity (so with as many buffer slots), then read from there. The original pipe keeps every
 * byte, so a checkpoint that fails afterwards has lost nothing.
 */
export function peekPipe(fd: number, capacity: number): PipeContents {
  const waiting = ioctlInt(fd, FIONREAD);
  if (waiting < 0) check(BigInt(waiting), 'ioctl(FIONREAD) on the pipe');
  if (waiting === 0) return { data: Buffer.alloc(0), segments: [] };
  const [r, w] = pipe2(O.CLOEXEC | O.NONBLOCK);
  try {
    const got = check(rawSyscall(syscallNumber('fcntl'), w, F.SETPIPE_SZ, capacity), `F_SETPIPE_SZ(${capacity}) on cptrst's own pipe`);
    if (got < BigInt(capacity)) throw new CptError('EIO', `cptrst's own pipe holds ${got} bytes, not ${capacity}`, { object: 'pipe' });
    const teed = check(rawSyscall(syscallNumber('tee'), fd, w, waiting, SPLICE_F_NONBLOCK), 'tee of the pipe\'s data');
    if (Number(teed) !== waiting) {
      throw new CptError('EIO', `tee copied ${teed} of the ${waiting} bytes in the pipe`, { object: 'pipe' });
    }
    const data = Buffer.alloc(waiting);
    const segments: number[] = [];
    let done = 0;
    while (done < waiting) {
      const n = fs.readSync(r, data, done, waiting - done, null);
      if (n <= 0) throw new CptError('EIO', `reading the pipe's data stopped at ${done} of ${waiting} bytes`, { object: 'pipe' });
      segments.push(n);
      done += n;
    }
    return { data, segments };
  } finally {
    fs.closeSync(r);
    fs.closeSync(w);
  }
}

// ---------------------------------------------------------------------------------------------
// unix sockets

export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK = Object.freeze({ STREAM: 1, DGRAM: 2, SEQPACKET: 5, NONBLOCK: O.NONBLOCK, CLOEXEC: O.CLOEXEC } as const);
export const SOL_SOCKET = 1;
export const SO = Object.freeze({
  TYPE: 3, SNDBUF: 7, RCVBUF: 8, PASSCRED: 16, ACCEPTCONN: 30, PEEK_OFF: 42, DOMAIN: 39, SNDBUFFORCE: 32, RCVBUFFORCE: 33,
  PASSSEC: 34, PASSPIDFD: 76,
} as const);
export const MSG = Object.freeze({ PEEK: 2, TRUNC: 0x20, DONTWAIT: 0x40, CTRUNC: 8, NOSIGNAL: 0x4000, CMSG_CLOEXEC: 0x40000000 } as const);
export const SCM_RIGHTS = 1;
export const SCM_CREDENTIALS = 2;
export const SHUT = Object.freeze({ RD: 0, WR: 1, RDWR: 2 } as const);
/** Socket states as sock_diag reports them (TCP's numbers). */
export const TCP_ESTABLISHED = 1;
export const TCP_CLOSE = 7;
export const TCP_LISTEN = 10;
/** The shutdown bits of UNIX_DIAG_SHUTDOWN. */
export const RCV_SHUTDOWN = 1;
export const SEND_SHUTDOWN = 2;

const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const UDIAG = Object.freeze({ SHOW_NAME: 1, SHOW_VFS: 2, SHOW_PEER: 4, SHOW_ICONS: 8, SHOW_RQLEN: 0x10 } as const);
const UNIX_DIAG = Object.freeze({ NAME: 0, VFS: 1, PEER: 2, ICONS: 3, RQLEN: 4, SHUTDOWN: 6 } as const);

/** What sock_diag says about one unix socket. */
export interface UnixDiag {
  ino: number;
  type: number;
  state: number;
  /** The bound name: a path, or '@...' for an abstract one (its NUL bytes kept as \0); undefined when unbound. */
  name?: Buffer;
  /** The inode and device of the socket file of a name in the filesystem. */
  vfs?: { ino: number; dev: number };
  /** The inode of the peer (0 or undefined: none). */
  peer?: number;
  /** A listener's connections not accepted yet (inodes). */
  icons: number[];
  /** Listener: connections waiting and the backlog; other sockets: bytes (stream, seqpacket) or the first message's size waiting, and bytes not yet read by the peer. */
  rqlen?: { rqueue: number; wqueue: number };
  shutdown: number;
}

const align4 = (n: number): number => (n + 3) & ~3;

/** Every unix socket of the machine, by inode (one NETLINK_SOCK_DIAG dump). */
export function unixDiagDump(): Map<number, UnixDiag> {
  const sock = check(rawSyscall(syscallNumber('socket'), AF_NETLINK, SOCK.DGRAM | SOCK.CLOEXEC, NETLINK_SOCK_DIAG), 'socket(AF_NETLINK, NETLINK_SOCK_DIAG)');
  const fd = Number(sock);
  const out = new Map<number, UnixDiag>();
  try {
    const hlen = sizeOfStruct(Nlmsghdr);
    const req = encodeStruct(UnixDiagReq, {
      family: AF_UNIX, protocol: 0, pad: 0, states: 0xffffffff, ino: 0,
      show: UDIAG.SHOW_NAME | UDIAG.SHOW_VFS | UDIAG.SHOW_PEER | UDIAG.SHOW_ICONS | UDIAG.SHOW_RQLEN, cookie: [0xffffffff, 0xffffffff],
    });
    const hdr = encodeStruct(Nlmsghdr, { len: hlen + req.length, type: SOCK_DIAG_BY_FAMILY, flags: NLM_F_REQUEST | NLM_F_DUMP, seq: 1, pid: 0 });
    fs.writeSync(fd, Buffer.concat([hdr, req]));
    const buf = Buffer.alloc(65536);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      let off = 0;
      while (off + hlen <= n) {
        const h = decodeStruct(Nlmsghdr, buf, off);
        if (h.len < hlen || off + h.len > n) throw new CptError('EIO', 'a malformed sock_diag answer', { object: 'sock_diag' });
        if (h.type === NLMSG_DONE) return out;
        if (h.type === NLMSG_ERROR) {
          const e = buf.readInt32LE(off + hlen);
          throw new CptError(errnoName(-e), `sock_diag refused the dump of unix sockets: ${errnoName(-e)}`, { object: 'sock_diag' });
        }
        if (h.type === SOCK_DIAG_BY_FAMILY) {
          const m = decodeStruct(UnixDiagMsg, buf, off + hlen);
          const d: UnixDiag = { ino: m.ino, type: m.type, state: m.state, icons: [], shutdown: 0 };
          let a = off + hlen + align4(sizeOfStruct(UnixDiagMsg));
          const end = off + h.len;
          while (a + 4 <= end) {
            const alen = buf.readUInt16LE(a);
            const atype = buf.readUInt16LE(a + 2) & 0x3fff;
            if (alen < 4 || a + alen > end) break;
            const p = buf.subarray(a + 4, a + alen);
            if (atype === UNIX_DIAG.NAME) d.name = Buffer.from(p);
            else if (atype === UNIX_DIAG.VFS && p.length >= 8) d.vfs = { ino: p.readUInt32LE(0), dev: p.readUInt32LE(4) };
            else if (atype === UNIX_DIAG.PEER && p.length >= 4) d.peer = p.readUInt32LE(0);
            else if (atype === UNIX_DIAG.ICONS) for (let i = 0; i + 4 <= p.length; i += 4) d.icons.push(p.readUInt32LE(i));
            else if (atype === UNIX_DIAG.RQLEN && p.length >= 8) d.rqlen = { rqueue: p.readUInt32LE(0), wqueue: p.readUInt32LE(4) };
            else if (atype === UNIX_DIAG.SHUTDOWN && p.length >= 1) d.shutdown = p.readUInt8(0);
            a += align4(alen);
          }
          out.set(d.ino, d);
        }
        off += align4(h.len);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The peer's address of a connected socket (its sun_path bytes; empty: unnamed), or undefined when it is not connected. */
export function getPeerName(fd: number): Buffer | undefined {
  const addr = Buffer.alloc(112);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(addr.length);
  const r = rawSyscall(syscallNumber('getpeername'), fd, addr, len);
  if (r < 0n) return undefined;
  return Buffer.from(addr.subarray(2, Math.min(len.readUInt32LE(0), addr.length)));
}

/** An int socket option (getsockopt SOL_SOCKET) on cptrst's fd; -errno on failure. */
export function getSockoptInt(fd: number, opt: number): number {
  const v = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  const r = rawSyscall(syscallNumber('getsockopt'), fd, SOL_SOCKET, opt, v, len);
  return r < 0n ? Number(r) : v.readInt32LE(0);
}

export function setSockoptInt(fd: number, opt: number, value: number): bigint {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  return rawSyscall(syscallNumber('setsockopt'), fd, SOL_SOCKET, opt, v, 4);
}

/** One message (datagram, seqpacket record) or run of stream bytes waiting on a socket. */
export interface QueuedMessage {
  data: Buffer;
  /** The sender's bound name, for an unconnected datagram socket's messages (empty: none). */
  from: Buffer;
  /** File descriptors in flight with it (SCM_RIGHTS), counted (cptrst closes its copies at once, unless asked to keep them). */
  fds: number;
  /** cptrst's own fds of them, in order, when peekSocket was asked to keep them. */
  rights?: number[];
  /** The sender's credentials (SCM_CREDENTIALS), reported when the socket has SO_PASSCRED. */
  creds?: Ucred;
}

/** struct ucred, as SCM_CREDENTIALS carries it. */
export interface Ucred {
  pid: number;
  uid: number;
  gid: number;
}

/** What a control buffer (struct cmsghdr list, `len` bytes of it) carries: SCM_RIGHTS descriptors in order, SCM_CREDENTIALS. */
export function parseControl(control: Buffer, len: number): { fds: number[]; creds?: Ucred } {
  const out: { fds: number[]; creds?: Ucred } = { fds: [] };
  for (let off = 0; off + CMSG_HDR <= len;) {
    const clen = Number(control.readBigUInt64LE(off));
    const level = control.readInt32LE(off + 8);
    const type = control.readInt32LE(off + 12);
    if (clen < CMSG_HDR || off + clen > len) break;
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = off + CMSG_HDR; p + 4 <= off + clen; p += 4) out.fds.push(control.readInt32LE(p));
    } else if (level === SOL_SOCKET && type === SCM_CREDENTIALS && clen >= CMSG_HDR + 12) {
      out.creds = { pid: control.readInt32LE(off + CMSG_HDR), uid: control.readUInt32LE(off + CMSG_HDR + 4), gid: control.readUInt32LE(off + CMSG_HDR + 8) };
    }
    off += (clen + 7) & ~7;
  }
  return out;
}

/** struct cmsghdr's size (cmsg_len is a size_t): the data follows it. */
const CMSG_HDR = 16;
/** The most descriptors one SCM_RIGHTS message carries (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;

/** Sends one byte with descriptors `fds` (SCM_RIGHTS, in order) on cptrst's connected socket `fd`. */
export function sendRights(fd: number, fds: readonly number[]): void {
  check(BigInt(libcSendmsg(fd, Buffer.from([0]), buildControl(fds), MSG.DONTWAIT | MSG.NOSIGNAL)), 'sendmsg(SCM_RIGHTS)');
}

/** A control buffer for sendmsg: SCM_RIGHTS with `fds` (if any), then SCM_CREDENTIALS (if given). */
export function buildControl(fds: readonly number[], creds?: Ucred): Buffer {
  const space = (n: number) => (CMSG_HDR + n + 7) & ~7;
  const buf = Buffer.alloc((fds.length ? space(4 * fds.length) : 0) + (creds ? space(12) : 0));
  let off = 0;
  if (fds.length) {
    buf.writeBigUInt64LE(BigInt(CMSG_HDR + 4 * fds.length), off);
    buf.writeInt32LE(SOL_SOCKET, off + 8);
    buf.writeInt32LE(SCM_RIGHTS, off + 12);
    fds.forEach((fd, i) => buf.writeInt32LE(fd, off + CMSG_HDR + 4 * i));
    off += space(4 * fds.length);
  }
  if (creds) {
    buf.writeBigUInt64LE(BigInt(CMSG_HDR + 12), off);
    buf.writeInt32LE(SOL_SOCKET, off + 8);
    buf.writeInt32LE(SCM_CREDENTIALS, off + 12);
    buf.writeInt32LE(creds.pid, off + CMSG_HDR);
    buf.writeUInt32LE(creds.uid, off + CMSG_HDR + 4);
    buf.writeUInt32LE(creds.gid, off + CMSG_HDR + 8);
  }
  return buf;
}

/**
 * `endsAtEmpty`: an empty answer is the end of the queue (a stream; a socket shut down for
 * reading, whose end of file reads as an empty message: a message of 0 bytes just before that
 * end cannot be told from it, and is not kept).
 *
 * Reads what waits in a socket's receive queue without taking it, on cptrst's copy of the socket
 * (pidfd_getfd: the same socket). A peek reads from the socket's peek offset, which is the
 * socket's, shared with every holder: setting one is a change the process would keep if cptrst
 * died before putting it back. So:
 * - a socket without a peek offset of its own is peeked once from its start, which sets none.
 *   That is all for an empty queue, and for a stream whose one peek returns every queued byte
 *   (SIOCINQ; a stream's peek ends early where the senders' credentials change, where
 *   descriptors come, and at an out-of-band byte);
 * - otherwise (a datagram or seqpacket queue, whose peek returns its first message only; such a
 *   stream; a socket with a peek offset of its own) a guardian (core/guardian.ts), a child
 *   process that outlives cptrst, sets SO_PEEK_OFF to 0, peeks one message at a time (the offset
 *   moves past each) and puts the socket's own offset back; it sends the descriptors in flight
 *   that came with its peeks to cptrst over a socketpair.
 * Descriptors in flight come to cptrst: with `keepRights` they are kept (`rights`, cptrst's fds,
 * the caller's to close), otherwise counted and closed.
 */
export function peekSocket(fd: number, endsAtEmpty: boolean, keepRights = false): QueuedMessage[] {
  const saved = getSockoptInt(fd, SO.PEEK_OFF);
  if (saved < -1) check(BigInt(saved), 'getsockopt(SO_PEEK_OFF)');
  if (saved === -1) {
    const stream = getSockoptInt(fd, SO.TYPE) === SOCK.STREAM;
    const queued = stream ? ioctlInt(fd, FIONREAD) : 0;
    const p = peekOnce(fd, MSG.PEEK | MSG.DONTWAIT | (endsAtEmpty ? 0 : MSG.TRUNC));
    const empty = p.result === -11 || (p.result === 0 && endsAtEmpty);
    if (empty && (!stream || queued === 0)) return toMessages([p], endsAtEmpty, false);
    if (stream && queued >= 0 && p.result === queued && !(p.flags & MSG.CTRUNC)) return toMessages([p], endsAtEmpty, keepRights);
    toMessages([p], endsAtEmpty, false); // closes what came with it (or throws its error)
  }
  return peekGuarded(fd, endsAtEmpty, keepRights);
}

const PEEK_BUFFER = 4 * 1024 * 1024;
const peekBuffers = { data: Buffer.alloc(0), name: Buffer.alloc(112), control: Buffer.alloc(4096) };

/** One recvmsg on cptrst's fd, its answer copied out. */
function peekOnce(fd: number, flags: number): Peeked {
  if (peekBuffers.data.length !== PEEK_BUFFER) peekBuffers.data = Buffer.alloc(PEEK_BUFFER);
  const { data, name, control } = peekBuffers;
  // Descriptors that come with a peek are close-on-exec in cptrst: no process it starts gets them.
  const r = libcRecvmsg(fd, data, name, control, flags | MSG.CMSG_CLOEXEC);
  const n = r.result;
  // A failed recvmsg writes no lengths back: the buffers then hold an earlier answer's bytes.
  if (n < 0) return { result: n, flags: 0, name: Buffer.alloc(0), control: Buffer.alloc(0) };
  return {
    result: n, flags: r.flags, data: Buffer.from(data.subarray(0, Math.min(n, data.length))),
    name: Buffer.from(name.subarray(0, Math.min(r.nameLen, name.length))), control: Buffer.from(control.subarray(0, Math.min(r.controlLen, control.length))),
  };
}

/** The peeks from offset 0 with SO_PEEK_OFF, the socket's own offset put back (nothing else runs in between). */
function peekWithOffset(fd: number, endsAtEmpty: boolean, keepRights: boolean): QueuedMessage[] {
  const saved = getSockoptInt(fd, SO.PEEK_OFF);
  if (saved < -1) check(BigInt(saved), 'getsockopt(SO_PEEK_OFF)');
  const peeks: Peeked[] = [];
  check(setSockoptInt(fd, SO.PEEK_OFF, 0), 'setsockopt(SO_PEEK_OFF, 0)');
  try {
    let lastOff = -2;
    for (let i = 0; i < 1 << 20; i++) {
      const p = peekOnce(fd, MSG.PEEK | MSG.DONTWAIT | (endsAtEmpty ? 0 : MSG.TRUNC));
      if (p.result === -11) break; // EAGAIN: nothing more
      peeks.push(p);
      if (p.result < 0 || p.result > PEEK_BUFFER || p.flags & MSG.CTRUNC) break;
      // A stream whose peer shut down answers 0 bytes forever: that is its end, not a message.
      if (p.result === 0 && endsAtEmpty) break;
      // An empty datagram is skipped by the next peek (it is marked peeked); an empty answer twice
      // in a row at the same offset would be an end of file where none was expected.
      const off = getSockoptInt(fd, SO.PEEK_OFF);
      if (p.result === 0 && peeks.length > 1 && peeks[peeks.length - 2].result === 0 && off === lastOff) {
        p.result = ENDLESS;
        break;
      }
      lastOff = off;
    }
  } finally {
    setSockoptInt(fd, SO.PEEK_OFF, saved);
  }
  return toMessages(peeks, endsAtEmpty, keepRights);
}

/** A queued message as the guardian reports it (its descriptors come over the socketpair). */
interface GuardedMessage {
  data: string;
  from: string;
  fds: number;
  creds?: Ucred;
}

const PEEK_GUARDIAN: GuardianEntry = { file: __filename, pkg: '@cptrst/core', path: ['linux', 'socketPeekGuardian'] };

/** peekWithOffset in a guardian on the same socket; the descriptors in flight come back to cptrst over a socketpair. */
function peekGuarded(fd: number, endsAtEmpty: boolean, keepRights: boolean): QueuedMessage[] {
  const pair = Buffer.alloc(8);
  check(rawSyscall(syscallNumber('socketpair'), AF_UNIX, SOCK.STREAM | SOCK.CLOEXEC, 0, pair), 'socketpair');
  const [mine, theirs] = [pair.readInt32LE(0), pair.readInt32LE(4)];
  const rights: number[] = [];
  try {
    const got = runGuardian<GuardedMessage[]>(PEEK_GUARDIAN, [endsAtEmpty ? '1' : '0'], [fd, theirs], 'reads a socket\'s queue with a peek offset');
    const want = got.reduce((n, m) => n + m.fds, 0);
    while (rights.length < want) {
      const p = peekOnce(mine, MSG.DONTWAIT | MSG.CMSG_CLOEXEC);
      const { fds } = parseControl(p.control, p.control.length);
      rights.push(...fds);
      if (p.result <= 0 || p.flags & MSG.CTRUNC || !fds.length) {
        throw new CptError('EMSGSIZE', `the descriptors in flight of a socket's queue did not all come to cptrst (${rights.length} of ${want}; its RLIMIT_NOFILE?)`, { object: 'socket' });
      }
    }
    let next = 0;
    return got.map((m) => {
      const these = rights.slice(next, next + m.fds);
      next += m.fds;
      if (!keepRights) closeAll(these);
      return {
        data: Buffer.from(m.data, 'base64'), from: Buffer.from(m.from, 'base64'), fds: m.fds,
        ...(keepRights && these.length ? { rights: these } : {}), ...(m.creds ? { creds: m.creds } : {}),
      };
    });
  } catch (e) {
    closeAll(rights);
    throw e;
  } finally {
    closeAll([mine, theirs]);
  }
}

/** The guardian's section (see peekGuarded): the socket is its fd 3, the socketpair to cptrst its fd 4. */
export function socketPeekGuardian(): void {
  const args = guardianStart();
  guardianReply(() => {
    if (!args) throw new CptError('EINTR', 'cptrst ended before the socket\'s queue was read', { object: 'socket' });
    const queue = peekWithOffset(3, args[0] === '1', true);
    const rights = queue.flatMap((m) => m.rights ?? []);
    try {
      for (let i = 0; i < rights.length; i += SCM_MAX_FD) sendRights(4, rights.slice(i, i + SCM_MAX_FD));
    } finally {
      closeAll(rights);
    }
    return queue.map((m): GuardedMessage => ({ data: m.data.toString('base64'), from: m.from.toString('base64'), fds: m.fds, ...(m.creds ? { creds: m.creds } : {}) }));
  });
}

/** peekWithOffset's mark of a queue that reads as empty messages without end. */
const ENDLESS = -1000;

/** One peek's answer, copied out of the reused buffers. */
interface Peeked {
  result: number;
  flags: number;
  data?: Buffer;
  name: Buffer;
  control: Buffer;
}

/** The messages of a run of peeks (the descriptors that came with them kept or closed); a failed peek throws, after closing them all. */
function toMessages(peeks: Peeked[], endsAtEmpty: boolean, keepRights: boolean): QueuedMessage[] {
  const out: QueuedMessage[] = [];
  let failure: CptError | undefined;
  for (const p of peeks) {
    const { fds, creds } = parseControl(p.control, p.control.length);
    const keep = keepRights && !failure;
    if (!keep) closeAll(fds);
    if (failure || p.result === -11) continue; // EAGAIN: no message
    if (p.result === ENDLESS) failure = new CptError('EIO', 'the socket\'s queue reads as empty messages without end', { object: 'socket' });
    else if (p.result < 0) failure = new CptError(errnoName(-p.result), `recvmsg(MSG_PEEK) of the socket's queue failed: ${errnoName(-p.result)}`, { object: 'recvmsg(MSG_PEEK) of the socket\'s queue' });
    else if (p.result > (p.data?.length ?? 0)) failure = new CptError('EMSGSIZE', `a queued message of ${p.result} bytes`, { object: 'socket' });
    else if (p.flags & MSG.CTRUNC) failure = new CptError('EMSGSIZE', 'a queued message\'s control data does not fit (descriptors beyond cptrst\'s RLIMIT_NOFILE, or more than its buffer holds)', { object: 'socket' });
    if (failure) {
      if (keep) closeAll(fds);
      continue;
    }
    if (p.result === 0 && endsAtEmpty) continue;
    out.push({
      data: p.data!, from: p.name.length > 2 ? Buffer.from(p.name.subarray(2)) : Buffer.alloc(0), fds: fds.length,
      ...(keep && fds.length ? { rights: fds } : {}), ...(creds ? { creds } : {}),
    });
  }
  if (failure) {
    for (const m of out) closeAll(m.rights ?? []);
    throw failure;
  }
  return out;
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      /* already gone */
    }
  }
}

