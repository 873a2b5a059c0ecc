/**
 * userfaultfd in cptrst: the ioctls cptrst issues on a userfaultfd it holds (a duplicate, taken
 * with pidfd_getfd, of one a restored process made). The ioctls act on the memory of the process
 * that made the fd, whoever issues them.
 */
import { SYS } from './syscalls';
import { UFFD } from './constants';
import { errnoError, ioctlOnPool, libcUffdCopy, rawSyscall } from './libc';
import { ERRNO } from './errno';

/** UFFDIO_REGISTER of [start, end) in `mode`: 0 or -errno. */
export function uffdRegister(fd: number, start: bigint, end: bigint, mode: bigint): number {
  const arg = Buffer.alloc(32);
  arg.writeBigUInt64LE(start, 0);
  arg.writeBigUInt64LE(end - start, 8);
  arg.writeBigUInt64LE(mode, 16);
  return Number(rawSyscall(SYS.ioctl, fd, UFFD.IOC_REGISTER, arg));
}

/** UFFDIO_COPY of `src` to `dst`: 0 or -errno, and the bytes copied. */
export function uffdCopy(fd: number, dst: bigint, src: Buffer): { r: number; copied: number } {
  return libcUffdCopy(fd, UFFD.IOC_COPY, dst, src);
}

/**
 * UFFDIO_COPY of the `len` bytes at address `src` of cptrst (memory that stays where it is until
 * the promise settles, such as a MemoryRegion's) to `dst`, on a thread of libuv's pool
 * (ioctlOnPool) while cptrst goes on. Resolves to the bytes copied: `len`, or fewer where the
 * kernel stopped (at a page present already, ...); -errno where it said why it failed; 0 where it
 * failed before it could say (uffdCopy on what is left tells why).
 */
export async function uffdCopyOnPool(fd: number, dst: bigint, src: bigint, len: number): Promise<number> {
  const arg = Buffer.alloc(40);
  arg.writeBigUInt64LE(dst, 0);
  arg.writeBigUInt64LE(src, 8);
  arg.writeBigUInt64LE(BigInt(len), 16);
  const r = await ioctlOnPool(fd, UFFD.IOC_COPY, arg);
  const copy = Number(arg.readBigInt64LE(32));
  return r === 0 ? len : copy;
}

/** UFFDIO_ZEROPAGE over [start, start + len): 0 or -errno, and the bytes zeroed. */
export function uffdZeropage(fd: number, start: bigint, len: number): { r: number; zeroed: number } {
  const arg = Buffer.alloc(32);
  arg.writeBigUInt64LE(start, 0);
  arg.writeBigUInt64LE(BigInt(len), 8);
  const r = Number(rawSyscall(SYS.ioctl, fd, UFFD.IOC_ZEROPAGE, arg));
  const z = Number(arg.readBigInt64LE(24));
  return { r: r < 0 ? r : 0, zeroed: z > 0 ? z : 0 };
}

/** UFFDIO_WAKE over [start, start + len): wakes threads waiting on those pages. */
export function uffdWake(fd: number, start: bigint, len: number): number {
  const arg = Buffer.alloc(16);
  arg.writeBigUInt64LE(start, 0);
  arg.writeBigUInt64LE(BigInt(len), 8);
  return Number(rawSyscall(SYS.ioctl, fd, UFFD.IOC_WAKE, arg));
}

/** One message read from a userfaultfd. */
export type UffdMessage =
  | { event: 'pagefault'; address: bigint }
  | { event: 'fork'; fd: number }
  | { event: 'remap'; from: bigint; to: bigint; len: bigint }
  | { event: 'remove' | 'unmap'; start: bigint; end: bigint }
  | { event: 'other'; code: number };

/** The messages waiting on a non-blocking userfaultfd (none: an empty list); an error other than EAGAIN is thrown. */
export function uffdRead(fd: number, buf: Buffer): UffdMessage[] {
  // A raw read: an empty queue (EAGAIN) is the common case, and must cost no exception.
  const r = rawSyscall(SYS.read, fd, buf, buf.length - (buf.length % UFFD.MSG_SIZE));
  if (r === -BigInt(ERRNO.EAGAIN)) return [];
  if (r < 0n) throw errnoError(Number(-r), 'read of a userfaultfd');
  const n = Number(r);
  const out: UffdMessage[] = [];
  for (let o = 0; o + UFFD.MSG_SIZE <= n; o += UFFD.MSG_SIZE) {
    const code = buf[o];
    if (code === UFFD.EVENT_PAGEFAULT) out.push({ event: 'pagefault', address: buf.readBigUInt64LE(o + 16) });
    else if (code === UFFD.EVENT_FORK) out.push({ event: 'fork', fd: buf.readUInt32LE(o + 8) });
    else if (code === UFFD.EVENT_REMAP) out.push({ event: 'remap', from: buf.readBigUInt64LE(o + 8), to: buf.readBigUInt64LE(o + 16), len: buf.readBigUInt64LE(o + 24) });
    else if (code === UFFD.EVENT_REMOVE || code === UFFD.EVENT_UNMAP) {
      out.push({ event: code === UFFD.EVENT_REMOVE ? 'remove' : 'unmap', start: buf.readBigUInt64LE(o + 8), end: buf.readBigUInt64LE(o + 16) });
    } else out.push({ event: 'other', code });
  }
  return out;
}
