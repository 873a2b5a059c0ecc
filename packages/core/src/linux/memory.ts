/**
 * Tracee memory through /proc/PID/mem (pread/pwrite at the address as file position).
 *
 * /proc/PID/mem goes through access_remote_vm() with FOLL_FORCE (unless the kernel was built or
 * booted with proc_mem.force_override=never/ptrace), so unlike process_vm_readv/writev it can read
 * PROT_NONE pages and write read-only private pages (a COW copy, like a debugger's breakpoint).
 * Checked on this machine's kernel 6.18 (see test/linux-memory.test.ts):
 *   - reading a PROT_NONE private anonymous page of a stopped tracee: works (returns its bytes);
 *   - writing a PROT_READ private anonymous page of a stopped tracee: works, the tracee sees it;
 *   - the same write with the target NOT traced (merely root with ptrace access): also works,
 *     i.e. proc_mem.force_override is "always" here;
 *   - process_vm_readv of the PROT_NONE page: EFAULT; process_vm_writev to the read-only page: EFAULT.
 * Unmapped addresses give EIO. I/O is done with raw pread64/pwrite64 rather than fs.readSync/
 * writeSync: Node's writeSync ignores a bigint position (it would write at offset 0), and the mem
 * file has FMODE_UNSIGNED_OFFSET, so positions >= 2^63 (the vsyscall page) are valid for the kernel.
 *
 * Speed: the mem file copies twice (the kernel goes page by page through a bounce page), 1.5-3
 * GB/s on the machine of bench/README.md; process_vm_readv/writev copy once, straight between the
 * two address spaces (5-6 GB/s). So transfers of at least FAST_MIN bytes try process_vm_readv/
 * writev first and, where they stop (PROT_NONE or read-only pages, or any other refusal), the mem
 * file takes over for up to FALLBACK_SPAN bytes before they are tried again: the result is what
 * the mem file alone would give, only faster.
 *
 * Reading never changes the target: process_vm_readv pins the pages it reads (FOLL_PIN), and the
 * kernel gives an anonymous page shared copy-on-write (with a parent or child, in the checkpoint
 * or not, or with a snapshot) a copy of its own before pinning it, even for reading, so a process
 * tree left running after its checkpoint would no longer share its memory. The mem file does not
 * pin. So process_vm_readv reads only the pages the pagemap says are mapped by this process alone
 * (bit 56, "exclusively mapped"): those cannot be shared, pinning them copies nothing. Every other
 * page (shared, not present, or when the pagemap cannot be read) is read through the mem file.
 * A frozen target cannot fork, so a page exclusively mapped when the pagemap is read stays so.
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { SYS } from './syscalls';
import { errnoName, errnoNumber, errnoMessage } from './errno';
import { libcProcessVm, rawSyscall } from './libc';

const MAX_ADDR = (1n << 64n) - 1n;
/** Transfers at least this big try process_vm_readv/writev first. */
const FAST_MIN = 16 * 1024;
/** Where process_vm_readv/writev stop, the mem file takes over for up to this many bytes (to the end of a page). */
const FALLBACK_SPAN = 64 * 1024;
const PAGE = 4096n;
/** Bytes from `addr` to the end of the FALLBACK_SPAN that ends on a page boundary. */
const fallbackSpan = (addr: bigint) => FALLBACK_SPAN - Number(addr % PAGE);
/** Pagemap entries read at a time when splitting a read into exclusively mapped pages and others. */
const PAGEMAP_BATCH = 512;
/** PAGEMAP.EXCLUSIVE (bit 56) in the upper 32 bits of an entry, tested without a BigInt per page. */
const EXCLUSIVE_HI = 1 << 24;

function ioError(errno: number, what: string, pid: number, addr: bigint): CptError {
  return new CptError(errnoName(errno), `${what}(/proc/${pid}/mem, 0x${addr.toString(16)}): ${errnoMessage(errno)}`, {
    pid,
    object: `address 0x${addr.toString(16)}`,
  });
}

export class ProcMem {
  readonly pid: number;
  readonly writable: boolean;
  private fd: number | undefined;
  private readonly memFileOnly: boolean;
  /** /proc/PID/pagemap, opened on the first large read; null when it cannot be opened (then only the mem file reads). */
  private pagemapFd: number | null | undefined;
  private pagemapBuf: Buffer | undefined;

  /**
   * Opens /proc/PID/mem read-write (read-only when `readOnly`). `memFileOnly`: never
   * process_vm_readv/writev. They pin the pages (FOLL_PIN), and a read-only pin of an anonymous
   * page shared copy-on-write makes the kernel copy it first (it unshares the page), so reading a
   * fork's memory that way would duplicate every page; the mem file does not pin.
   */
  constructor(pid: number, opts: { readOnly?: boolean; memFileOnly?: boolean } = {}) {
    this.pid = pid;
    this.writable = !opts.readOnly;
    this.memFileOnly = !!opts.memFileOnly;
    try {
      this.fd = fs.openSync(`/proc/${pid}/mem`, opts.readOnly ? 'r' : 'r+');
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'EIO';
      const n = errnoNumber(code);
      throw new CptError(code, `open(/proc/${pid}/mem): ${n ? errnoMessage(n) : String(e)}`, { pid, cause: e });
    }
  }

  private handle(): number {
    if (this.fd === undefined) throw new CptError('EBADF', `/proc/${this.pid}/mem is closed`, { pid: this.pid });
    return this.fd;
  }

  private checkRange(addr: bigint, len: number): void {
    if (addr < 0n || addr + BigInt(len) - 1n > MAX_ADDR) {
      throw new CptError('EINVAL', `/proc/${this.pid}/mem: address 0x${addr.toString(16)}+${len} is outside the file's range`, { pid: this.pid });
    }
  }

  /**
   * How many bytes from `addr` (at most `len`) lie on pages that are all exclusively mapped, or all
   * not, and which of the two: [bytes, exclusive]. Everything counts as not exclusive when the
   * pagemap cannot be read.
   */
  private sameMapping(addr: bigint, len: number): [number, boolean] {
    if (this.pagemapFd === undefined) {
      try {
        this.pagemapFd = fs.openSync(`/proc/${this.pid}/pagemap`, 'r');
        this.pagemapBuf = Buffer.alloc(PAGEMAP_BATCH * 8);
      } catch {
        this.pagemapFd = null;
      }
    }
    if (this.pagemapFd === null) return [len, false];
    const buf = this.pagemapBuf!;
    const first = addr / PAGE;
    const span = (addr + BigInt(len) - 1n) / PAGE - first + 1n;
    const pages = span < BigInt(PAGEMAP_BATCH) ? Number(span) : PAGEMAP_BATCH;
    const r = rawSyscall(SYS.pread64, this.pagemapFd, buf, pages * 8, first * 8n);
    if (r < 8n) return [len, false];
    const got = Number(r) >> 3;
    const exclusive = (buf.readUInt32LE(4) & EXCLUSIVE_HI) !== 0;
    let same = 1;
    while (same < got && ((buf.readUInt32LE(same * 8 + 4) & EXCLUSIVE_HI) !== 0) === exclusive) same++;
    const bytes = Number((first + BigInt(same)) * PAGE - addr);
    return [Math.min(len, bytes), exclusive];
  }

  /**
   * Reads up to `len` bytes at `addr` into `buf` at `off`. Returns how many bytes were read: fewer
   * than `len` when the range runs into memory that cannot be read. Throws when nothing could be read.
   * Large reads go through process_vm_readv only where the pages are exclusively mapped (see above).
   */
  readInto(addr: bigint, buf: Buffer, off: number, len: number): number {
    this.handle();
    if (len === 0) return 0;
    if (off < 0 || off + len > buf.length) throw new CptError('EINVAL', `ProcMem.readInto: ${off}+${len} outside a buffer of ${buf.length}`, { pid: this.pid });
    this.checkRange(addr, len);
    if (len < FAST_MIN || this.memFileOnly) return this.readSpan(addr, buf, off, len, false, 0);
    let done = 0;
    while (done < len) {
      const at = addr + BigInt(done);
      const [want, exclusive] = this.sameMapping(at, len - done);
      const n = this.readSpan(at, buf, off + done, want, exclusive, done);
      done += n;
      if (n < want) break; // unreadable from here on
    }
    return done;
  }

  /**
   * readInto for one span: through process_vm_readv when `fast` (the mem file where it stops), else
   * the mem file alone. `before`: bytes already read by the caller, so that an error here ends the
   * read (returning what this span got) instead of throwing.
   */
  private readSpan(addr: bigint, buf: Buffer, off: number, len: number, fast: boolean, before: number): number {
    const fd = this.handle();
    let done = 0;
    while (done < len) {
      const at = addr + BigInt(done);
      if (fast) {
        const n = libcProcessVm(false, this.pid, buf.subarray(off + done, off + len), at);
        if (n > 0) {
          done += n;
          continue;
        }
        if (n === -4 /* EINTR */) continue;
      }
      // The mem file: for the whole range when small, else for a span from where process_vm_readv stopped.
      const want = fast ? Math.min(len - done, fallbackSpan(at)) : len - done;
      const r = rawSyscall(SYS.pread64, fd, buf.subarray(off + done, off + done + want), want, at);
      if (r === -4n /* EINTR */) continue;
      if (r < 0n) {
        if (done + before > 0) return done;
        throw ioError(Number(-r), 'pread', this.pid, addr);
      }
      const n = Number(r);
      if (n === 0) break;
      done += n;
      if (fast && n < want) break; // the mem file stopped short too: unreadable from here on
    }
    if (done + before === 0) throw new CptError('EIO', `pread(/proc/${this.pid}/mem, 0x${addr.toString(16)}): nothing read (process gone?)`, { pid: this.pid });
    return done;
  }

  /** Reads exactly `len` bytes at `addr`; throws CptError (EIO, ...) if any byte cannot be read. */
  read(addr: bigint, len: number): Buffer {
    const b = Buffer.alloc(len);
    this.readFully(addr, b, 0, len);
    return b;
  }

  /** Reads exactly `len` bytes at `addr` into `buf` at `off`; throws CptError (EIO, ...) if any byte cannot be read. */
  readFully(addr: bigint, buf: Buffer, off: number, len: number): void {
    if (len === 0) return;
    const n = this.readInto(addr, buf, off, len);
    if (n !== len) {
      throw new CptError('EIO', `pread(/proc/${this.pid}/mem, 0x${addr.toString(16)}, ${len}): short read of ${n} bytes (unreadable at 0x${(addr + BigInt(n)).toString(16)})`, { pid: this.pid });
    }
  }

  /** Writes all of `buf` at `addr` (read-only private pages included, through FOLL_FORCE). */
  write(addr: bigint, buf: Buffer): void {
    const fd = this.handle();
    if (!this.writable) throw new CptError('EBADF', `/proc/${this.pid}/mem was opened read-only`, { pid: this.pid });
    this.checkRange(addr, buf.length);
    let done = 0;
    const fast = buf.length >= FAST_MIN && !this.memFileOnly;
    while (done < buf.length) {
      const at = addr + BigInt(done);
      if (fast) {
        const n = libcProcessVm(true, this.pid, buf.subarray(done), at);
        if (n > 0) {
          done += n;
          continue;
        }
        if (n === -4 /* EINTR */) continue;
      }
      // The mem file (FOLL_FORCE): for the whole buffer when small, else for a span from where process_vm_writev stopped.
      const want = fast ? Math.min(buf.length - done, fallbackSpan(at)) : buf.length - done;
      const r = rawSyscall(SYS.pwrite64, fd, buf.subarray(done, done + want), want, at);
      if (r === -4n /* EINTR */) continue;
      if (r < 0n) throw ioError(Number(-r), 'pwrite', this.pid, addr + BigInt(done));
      const n = Number(r);
      if (n === 0) throw new CptError('EIO', `pwrite(/proc/${this.pid}/mem, 0x${(addr + BigInt(done)).toString(16)}): wrote nothing`, { pid: this.pid });
      done += n;
    }
  }

  close(): void {
    if (typeof this.pagemapFd === 'number') fs.closeSync(this.pagemapFd);
    this.pagemapFd = undefined;
    if (this.fd !== undefined) {
      const fd = this.fd;
      this.fd = undefined;
      fs.closeSync(fd);
    }
  }
}
