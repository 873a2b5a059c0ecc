/**
 * Page payloads put straight into the image file. Where the image goes to a regular file that no
 * one but root can change (the file `cptrst checkpoint -o FILE` creates, written by root), a
 * deferred payload whose source can move it from a pipe (PayloadFileSource: the snapshot's pipes)
 * lands in the file at its offset through splice(2): one copy, in the kernel, from the snapshot's
 * pages into the file's. Its checksum is then computed over a read-only mapping of what landed
 * (withFileWindow), and the object's header, which holds that checksum, is written at its place
 * (the writer's settle()). The bytes never pass through a buffer of cptrst's, and the file comes
 * out byte for byte as if written in order.
 *
 * Only where the writer is given the file (ImageWriterOptions.file: the checkpoint flow does so
 * with CPTRST_SPLICE_PAGES=1, see docs/architecture.md for why not by default), and not (the
 * payloads are read and written as before) for a pipe or a socket, a file opened
 * with O_APPEND (where splice and pwrite cannot write at an offset), or a file that another user
 * could shorten meanwhile (cptrst, reading a mapping past the file's end, would die of SIGBUS).
 */
import * as fs from 'fs';
import { asCptError } from '../errors';
import { F, O } from '../linux/constants';
import { SEEK, openForMapping } from '../linux/files';
import { errnoError, rawSyscall, withFileWindow } from '../linux/libc';
import { SYS } from '../linux/syscalls';

export class PayloadFile {
  private closed = false;

  private constructor(
    /** The image file, as the writer writes it (its position is where the stream goes on). */
    readonly fd: number,
    /** The same file opened read-only, for the mappings. */
    private readonly mapFd: number,
    /** The file offset of the stream's offset 0. */
    private readonly base: number,
    private readonly object: string,
  ) {}

  /**
   * The file `fd` whose position is the stream's offset `streamOffset`, if payloads may be put
   * into it in place (see above); undefined otherwise. The caller closes it.
   */
  static open(fd: number, streamOffset: number, object: string): PayloadFile | undefined {
    const flags = rawSyscall(SYS.fcntl, fd, F.GETFL, 0);
    if (flags < 0n || (Number(flags) & O.APPEND) !== 0) return undefined;
    const pos = rawSyscall(SYS.lseek, fd, 0, SEEK.CUR);
    if (pos < 0n || Number(pos) < streamOffset) return undefined;
    const mapFd = openForMapping(fd);
    if (mapFd === undefined) return undefined;
    return new PayloadFile(fd, mapFd, Number(pos) - streamOffset, object);
  }

  /** The file offset of a stream offset. */
  position(streamOffset: number): number {
    return this.base + streamOffset;
  }

  /** Writes all of `buf` at the stream offset `streamOffset` (the file's position stays). */
  writeAt(buf: Buffer, streamOffset: number): void {
    const at = this.position(streamOffset);
    try {
      for (let done = 0; done < buf.length; ) done += fs.writeSync(this.fd, buf, done, buf.length - done, at + done);
    } catch (e) {
      throw asCptError(e, { object: this.object });
    }
  }

  /** Runs `use` on the `length` bytes at the stream offset `streamOffset`, read from a read-only mapping of the file. */
  mapped<T>(streamOffset: number, length: number, use: (bytes: Buffer) => T): T {
    // Through the one reused window: a new Buffer per mapping is external memory V8 collects for.
    return withFileWindow(this.mapFd, this.position(streamOffset), length, use);
  }

  /** Moves the file's position `length` bytes on: past a payload put there at its offset. */
  skip(length: number): void {
    const r = rawSyscall(SYS.lseek, this.fd, length, SEEK.CUR);
    if (r < 0n) throw errnoError(Number(-r), `lseek of ${this.object}`);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.mapFd);
  }
}
