/** Sinks and sources over file descriptors (files, pipes, sockets) and memory. */
import * as fs from 'fs';
import { CptError, asCptError } from '../errors';
import { errnoError, rawSyscall, withFileWindow } from '../linux/libc';
import type { MemoryRegion } from '../linux/libc';
import { SEEK, onlyRootCanChange } from '../linux/files';
import { sleepMs } from '../linux/process';
import { SYS } from '../linux/syscalls';
import type { ImageSource } from './reader';
import type { ImageSink } from './writer';

/** A CptError naming the stream, without Node's "ENOSPC: " prefix repeated in the message. */
function streamError(e: unknown, object: string): CptError {
  if (e instanceof CptError) return e;
  const x = e as { code?: unknown; message?: unknown };
  if (typeof x?.code === 'string' && typeof x.message === 'string' && x.message.startsWith(`${x.code}: `)) {
    return new CptError(x.code, x.message.slice(x.code.length + 2), { object, cause: e });
  }
  return asCptError(e, { object });
}

function isEagain(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === 'EAGAIN' || code === 'EWOULDBLOCK';
}

/**
 * Writes everything to fd, looping over partial writes and waiting out EAGAIN (non-blocking pipes).
 * `name` is what errors call the stream (the image's path, "stdout"); "image fd N" without it.
 * writeAsync does the same on the libuv thread pool, with writev(2).
 */
export function fileSink(fd: number, name?: string): ImageSink {
  const object = name ?? `image fd ${fd}`;
  return {
    write(buf: Buffer): void {
      let off = 0;
      let wait = 1;
      while (off < buf.length) {
        try {
          off += fs.writeSync(fd, buf, off, buf.length - off);
          wait = 1;
        } catch (e) {
          if (!isEagain(e)) throw streamError(e, object);
          sleepMs(wait);
          wait = Math.min(wait * 2, 20);
        }
      }
    },
    async writeAsync(bufs: Buffer[]): Promise<void> {
      let rest = bufs;
      let wait = 1;
      while (rest.length) {
        let n: number;
        try {
          n = await writev(fd, rest);
          wait = 1;
        } catch (e) {
          if (!isEagain(e)) throw streamError(e, object);
          await new Promise((resolve) => setTimeout(resolve, wait));
          wait = Math.min(wait * 2, 20);
          continue;
        }
        rest = skipBytes(rest, n);
      }
    },
  };
}

/** One writev(2) at the fd's position, on the libuv thread pool: the bytes it wrote. */
function writev(fd: number, bufs: Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, bufs, null, (e, n) => (e ? reject(e) : resolve(n))));
}

/** `bufs` without their first `n` bytes (after a partial write). */
function skipBytes(bufs: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < bufs.length && n >= bufs[i].length) n -= bufs[i++].length;
  if (i === bufs.length) return [];
  return n ? [bufs[i].subarray(n), ...bufs.slice(i + 1)] : bufs.slice(i);
}

/** Reads from fd at its current position (no seeking); 0 means EOF. Waits out EAGAIN. `name` as for fileSink. */
export function fileSource(fd: number, name?: string): ImageSource {
  const object = name ?? `image fd ${fd}`;
  const source: ImageSource = {
    name: object,
    read(buf: Buffer, offset: number, length: number): number {
      let wait = 1;
      for (;;) {
        try {
          return fs.readSync(fd, buf, offset, length, null);
        } catch (e) {
          if (!isEagain(e)) throw streamError(e, object);
          sleepMs(wait);
          wait = Math.min(wait * 2, 20);
        }
      }
    },
  };
  if (!isRegularFile(fd)) return source;
  // A regular file can be skipped through and read at an offset (ImageReader.leavePayloads).
  const regular: ImageSource = {
    ...source,
    skip(length: number): number {
      const end = rawSyscall(SYS.lseek, fd, length, SEEK.CUR);
      if (end < 0n) throw errnoError(Number(-end), `lseek of ${object}`);
      return Number(end) - length;
    },
    readAt(buf: Buffer, offset: number, length: number, position: number): number {
      try {
        return fs.readSync(fd, buf, offset, length, position);
      } catch (e) {
        throw streamError(e, object);
      }
    },
  };
  if (!mayMap(fd)) return regular;
  // Only the part inside the file is mapped: a mapped page past its end is SIGBUS, not a short read.
  const inFile = (position: number, length: number): number => Math.max(0, Math.min(length, fs.fstatSync(fd).size - position));
  return {
    ...regular,
    mapAt<T>(position: number, length: number, use: (bytes: Buffer) => T): T {
      return withFileWindow(fd, position, inFile(position, length), use);
    },
    mapOver(region: MemoryRegion, at: number, position: number, length: number): Buffer {
      const n = inFile(position, length);
      return n === 0 ? region.view.subarray(at, at) : region.mapFile(at, n, fd, position);
    },
  };
}

/**
 * Whether the file may be mapped (ImageSource.mapAt): only if no one but root can shorten it
 * while it is, which would kill cptrst with SIGBUS (an image is untrusted input). CPTRST_MAP_IMAGE=0
 * turns mapping off (benchmarks compare both ways).
 */
function mayMap(fd: number): boolean {
  if (process.env.CPTRST_MAP_IMAGE === '0') return false;
  try {
    return onlyRootCanChange(fd);
  } catch {
    return false;
  }
}

function isRegularFile(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFile();
  } catch {
    return false;
  }
}

/** Collects an image in memory (copies each write, since writers reuse their buffers). */
export class MemorySink implements ImageSink {
  private readonly chunks: Buffer[] = [];
  length = 0;

  write(buf: Buffer): void {
    this.chunks.push(Buffer.from(buf));
    this.length += buf.length;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

/** Reads an in-memory image. */
export function bufferSource(data: Buffer): ImageSource {
  let pos = 0;
  return {
    read(buf: Buffer, offset: number, length: number): number {
      const n = Math.min(length, data.length - pos);
      data.copy(buf, offset, pos, pos + n);
      pos += n;
      return n;
    },
  };
}
