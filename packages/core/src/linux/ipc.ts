/**
 * Pipes, FIFOs and unix sockets: the uapi numbers and cptrst's own calls on them (reading the
 * data in flight of a checkpointed process without taking it away).
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { rawSyscall } from './libc';
import { syscallNumber } from './syscalls';
import { F, O } from './constants';
import { errnoName } from './errno';

/** ioctl: bytes waiting to be read (a pipe, a socket's receive queue). */
export const FIONREAD = 0x541b;
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
