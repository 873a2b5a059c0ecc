/**
 * The koffi binding to glibc: the only file that declares native functions.
 *
 * Everything goes through libc's `syscall(2)` wrapper, declared non-variadically (on x86-64 the
 * SysV calling convention passes integer/pointer arguments the same way for variadic and fixed
 * prototypes, and glibc's `syscall` is a register shuffle). Using the raw system call rather than
 * glibc's wrappers keeps kernel semantics exact (ptrace PEEK* stores the word through `data`;
 * no glibc caching of pids).
 *
 * koffi calls are synchronous and run on the JavaScript main thread, so every ptrace request
 * issued here comes from the same OS thread: the one that attached.
 */
import type * as Koffi from 'koffi';
import { CptError } from '../errors';
import { errnoMessage, errnoName } from './errno';
import { F, MAP, O, PROT } from './constants';
import { SYS } from './syscalls';

/** One argument of a system call: an integer, a Buffer (passed as a pointer to its bytes) or null. */
export type SyscallArg = number | bigint | Buffer | null;

let koffiModule: typeof Koffi | undefined;
/**
 * koffi itself, loaded on the first native call: loading it through its entry takes some 20 ms
 * (see loadKoffi), which a run that calls nothing native (`cptrst --help`) need not pay.
 */
function koffiLib(): typeof Koffi {
  koffiModule ??= loadKoffi();
  return koffiModule;
}

/**
 * koffi's entry script spends most of that on its build tools (https, zlib, crypto), which it
 * loads to find its native module. On x86-64 glibc Linux the native module is taken directly, when
 * it is the one of the installed koffi (the entry adds only deprecated aliases to it); anywhere
 * else, or if it does not load (musl), through the entry.
 */
function loadKoffi(): typeof Koffi {
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded on first use */
  if (process.platform === 'linux' && process.arch === 'x64') {
    try {
      const native = require('koffi/build/koffi/linux_x64/koffi.node') as typeof Koffi & { version?: string };
      if (native.version === (require('koffi/package.json') as { version: string }).version) return native;
    } catch {
      /* another libc: the entry finds its module */
    }
  }
  return require('koffi') as typeof Koffi;
  /* eslint-enable @typescript-eslint/no-require-imports */
}

let lib: Koffi.IKoffiLib | undefined;
function libc(): Koffi.IKoffiLib {
  if (!lib) lib = koffiLib().load('libc.so.6');
  return lib;
}

/** koffi declarations of `syscall`, one per pattern of integer ('n') / pointer ('p') arguments. */
const syscallVariants = new Map<string, (...a: unknown[]) => number | bigint>();
function syscallVariant(pattern: string): (...a: unknown[]) => number | bigint {
  let f = syscallVariants.get(pattern);
  if (!f) {
    const params = ['long'];
    for (const c of pattern) params.push(c === 'p' ? 'void *' : 'uint64_t');
    f = libc().func('syscall', 'long', params);
    syscallVariants.set(pattern, f);
  }
  return f;
}

function toU64(v: number | bigint): bigint {
  if (typeof v === 'number' && !Number.isInteger(v)) throw new CptError('EINVAL', `syscall argument ${v} is not an integer`);
  return BigInt.asUintN(64, BigInt(v));
}

/**
 * Runs system call `nr` with up to six arguments. Returns the raw result: the value on success,
 * or -errno (as a bigint) on failure. Buffers are passed as pointers to their bytes, valid for
 * the duration of the call only. Integers are passed as unsigned 64-bit (negative numbers wrap).
 */
export function rawSyscall(nr: number, ...args: SyscallArg[]): bigint {
  if (args.length > 6) throw new CptError('EINVAL', `syscall ${nr}: at most 6 arguments, got ${args.length}`);
  let pattern = '';
  const call: unknown[] = [nr];
  for (let i = 0; i < 6; i++) {
    const a = i < args.length ? args[i] : 0;
    if (a === null || Buffer.isBuffer(a)) {
      pattern += 'p';
      call.push(a);
    } else {
      pattern += 'n';
      call.push(toU64(a));
    }
  }
  const f = syscallVariant(pattern);
  const r = f(...call);
  if (Number(r) === -1) {
    const e = koffiLib().errno();
    if (e > 0) return -BigInt(e);
  }
  return typeof r === 'bigint' ? r : BigInt(r);
}

type PtraceFn = (nr: number, request: number, tid: number, addr: number | bigint, data: unknown) => number | bigint;
let ptracePtr: PtraceFn | undefined;
let ptraceInt: PtraceFn | undefined;
/**
 * ptrace(request, tid, addr, data) through `syscall`, with one fixed koffi declaration per kind of
 * `data` (a pointer, or an integer): the requests of an injected call run thousands of times, and
 * rawSyscall's per-call argument pattern costs about as much as the system call itself. Returns the
 * raw result or -errno, as rawSyscall does.
 */
export function libcPtrace(request: number, tid: number, addr: number | bigint, data: Buffer | null | number | bigint): bigint {
  let f: PtraceFn;
  if (data === null || Buffer.isBuffer(data)) {
    f = ptracePtr ??= libc().func('syscall', 'long', ['long', 'long', 'long', 'uint64_t', 'void *']) as never;
  } else {
    f = ptraceInt ??= libc().func('syscall', 'long', ['long', 'long', 'long', 'uint64_t', 'uint64_t']) as never;
    if (typeof data === 'number' && data < 0) data = BigInt.asUintN(64, BigInt(data));
  }
  if (typeof addr === 'number' && addr < 0) addr = BigInt.asUintN(64, BigInt(addr));
  const r = f(SYS.ptrace, request, tid, addr, data);
  if (Number(r) === -1) {
    const e = koffiLib().errno();
    if (e > 0) return -BigInt(e);
  }
  return typeof r === 'bigint' ? r : BigInt(r);
}

/** A CptError for errno `e` from `call`: code "ESRCH", message "call: No such process". */
export function errnoError(e: number, call: string, pid?: number, object?: string): CptError {
  return new CptError(errnoName(e), `${call}: ${errnoMessage(e)}`, { pid, object });
}

/**
 * rawSyscall that throws a CptError on failure. `describe` names the call for the message,
 * e.g. "kcmp(1234, 1235)".
 */
export function checkedSyscall(describe: string, pid: number | undefined, nr: number, ...args: SyscallArg[]): bigint {
  const r = rawSyscall(nr, ...args);
  if (r < 0n && r >= -4095n) throw errnoError(Number(-r), describe, pid);
  return r;
}

let waitpidFn: ((pid: number, status: Int32Array, options: number) => number) | undefined;
/** The status word of every waitpid (calls are synchronous: one is enough). */
const waitStatus = new Int32Array(1);
/** waitpid(2) itself; returns [pid or -errno, raw status]. Loops on EINTR. */
export function libcWaitpid(pid: number, options: number): [number, number] {
  if (!waitpidFn) waitpidFn = libc().func('int waitpid(int pid, _Inout_ int32_t *status, int options)') as never;
  const st = waitStatus;
  for (;;) {
    const r = waitpidFn(pid, st, options | 0);
    if (r >= 0) return [r, st[0]];
    const e = koffiLib().errno();
    if (e !== 4 /* EINTR */) return [-e, 0];
  }
}

let sysconfFn: ((name: number) => number) | undefined;
/** sysconf(3). */
export function sysconf(name: number): number {
  if (!sysconfFn) sysconfFn = libc().func('long sysconf(int name)') as never;
  return Number(sysconfFn(name));
}
export const _SC_PAGESIZE = 30;
export const _SC_CLK_TCK = 2;
export const _SC_NPROCESSORS_ONLN = 84;

type IovFn = (pid: number, local: unknown, liovcnt: number, remote: unknown, riovcnt: number, flags: number) => number | bigint;
let pvmRead: IovFn | undefined;
let pvmWrite: IovFn | undefined;
/**
 * process_vm_readv / process_vm_writev with one local and one remote iovec.
 * Returns bytes transferred or -errno.
 */
export function libcProcessVm(write: boolean, pid: number, local: Buffer, remote: bigint): number {
  if (!pvmRead || !pvmWrite) {
    const l = libc();
    koffiLib().struct('cpt_local_iovec', { iov_base: 'void *', iov_len: 'size_t' });
    koffiLib().struct('cpt_remote_iovec', { iov_base: 'uint64_t', iov_len: 'size_t' });
    pvmRead = l.func(
      'long process_vm_readv(int pid, cpt_local_iovec *local, unsigned long liovcnt, cpt_remote_iovec *remote, unsigned long riovcnt, unsigned long flags)',
    ) as never;
    pvmWrite = l.func(
      'long process_vm_writev(int pid, cpt_local_iovec *local, unsigned long liovcnt, cpt_remote_iovec *remote, unsigned long riovcnt, unsigned long flags)',
    ) as never;
  }
  if (local.length === 0) return 0;
  const f = write ? pvmWrite : pvmRead;
  const r = Number(f(pid, { iov_base: local, iov_len: local.length }, 1, { iov_base: remote, iov_len: local.length }, 1, 0));
  return r < 0 ? -koffiLib().errno() : r;
}

type RegsetFn = (nr: number, req: number, pid: number, addr: number, iov: { iov_base: Buffer; iov_len: number }) => number | bigint;
let regsetFn: RegsetFn | undefined;
/**
 * ptrace(GETREGSET/SETREGSET, pid, nt, &iov) with iov = {buf, buf.length}. Returns [result or -errno,
 * the iov_len the kernel left (bytes actually transferred)].
 */
export function libcPtraceRegset(req: number, pid: number, nt: number, buf: Buffer): [number, number] {
  if (!regsetFn) {
    koffiLib().struct('cpt_regset_iovec', { iov_base: 'void *', iov_len: 'size_t' });
    regsetFn = libc().func('syscall', 'long', ['long', 'long', 'long', 'uint64_t', koffiLib().inout('cpt_regset_iovec *')]) as never;
  }
  const iov = { iov_base: buf, iov_len: buf.length };
  const r = Number(regsetFn(SYS.ptrace, req, pid, nt, iov));
  if (r < 0) return [-koffiLib().errno(), 0];
  return [r, Number(iov.iov_len)];
}

let sendmsgFn: RecvmsgFn | undefined;
/** sendmsg(fd, {one iovec over data, control}, flags) on one of cptrst's own fds (a connected socket): the result or -errno. */
export function libcSendmsg(fd: number, data: Buffer, control: Buffer, flags: number): number {
  if (!sendmsgFn) {
    declareMsghdr();
    sendmsgFn = libc().func('long sendmsg(int fd, const cpt_msghdr *msg, int flags)') as never;
  }
  const msg: Record<string, unknown> = {
    msg_name: null, msg_namelen: 0, msg_iov: { iov_base: data, iov_len: data.length }, msg_iovlen: 1,
    msg_control: control.length ? control : null, msg_controllen: control.length, msg_flags: 0,
  };
  const r = Number(sendmsgFn(fd, msg, flags));
  return r < 0 ? -koffiLib().errno() : r;
}

/** What recvmsg(2) gave back: the result (or -errno), and the lengths and flags it wrote into the msghdr. */
export interface RecvmsgResult {
  result: number;
  nameLen: number;
  controlLen: number;
  flags: number;
}

type RecvmsgFn = (fd: number, msg: Record<string, unknown>, flags: number) => number | bigint;
let recvmsgFn: RecvmsgFn | undefined;
/** recvmsg(fd, {name, one iovec over data, control}, flags) on one of cptrst's own fds. */
let msghdrDeclared = false;
function declareMsghdr(): void {
  if (msghdrDeclared) return;
  koffiLib().struct('cpt_msg_iovec', { iov_base: 'void *', iov_len: 'size_t' });
  koffiLib().struct('cpt_msghdr', {
    msg_name: 'void *', msg_namelen: 'uint32_t', msg_iov: 'cpt_msg_iovec *', msg_iovlen: 'size_t',
    msg_control: 'void *', msg_controllen: 'size_t', msg_flags: 'int',
  });
  msghdrDeclared = true;
}

export function libcRecvmsg(fd: number, data: Buffer, name: Buffer, control: Buffer, flags: number): RecvmsgResult {
  if (!recvmsgFn) {
    declareMsghdr();
    recvmsgFn = libc().func('long recvmsg(int fd, _Inout_ cpt_msghdr *msg, int flags)') as never;
  }
  const msg: Record<string, unknown> = {
    msg_name: name, msg_namelen: name.length, msg_iov: { iov_base: data, iov_len: data.length }, msg_iovlen: 1,
    msg_control: control, msg_controllen: control.length, msg_flags: 0,
  };
  const r = Number(recvmsgFn(fd, msg, flags));
  return {
    result: r < 0 ? -koffiLib().errno() : r,
    nameLen: Number(msg.msg_namelen),
    controlLen: Number(msg.msg_controllen),
    flags: Number(msg.msg_flags),
  };
}

/** One region of PAGEMAP_SCAN's answer: [start, end) with the categories (of the return mask) its pages share. */
export interface PageRegion {
  start: bigint;
  end: bigint;
  categories: bigint;
}
interface PmScanArg {
  size: bigint; flags: bigint; start: bigint; end: bigint; walk_end: bigint; vec: Buffer; vec_len: bigint; max_pages: bigint;
  category_inverted: bigint; category_mask: bigint; category_anyof_mask: bigint; return_mask: bigint;
}
type PmScanFn = (fd: number, req: number, arg: PmScanArg) => number | bigint;
let pmScanFn: PmScanFn | undefined;
/** PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg): 96-byte argument. */
const PAGEMAP_SCAN = 0xc0606610;
const PM_SCAN_ARG_SIZE = 96n;
const PAGE_REGION_SIZE = 24;

/**
 * ioctl(PAGEMAP_SCAN) on an open /proc/PID/pagemap (Linux 6.7): the regions of [start, end) whose
 * pages have any of the categories `anyOf` (PAGE_IS_* bits), with the categories of `returnMask`
 * each region shares. Null when the kernel has no PAGEMAP_SCAN (ENOTTY, EINVAL); -errno thrown
 * as a CptError otherwise.
 */
export function pagemapScan(fd: number, start: bigint, end: bigint, anyOf: bigint, returnMask: bigint, opts: { flags?: bigint; mask?: bigint } = {}): PageRegion[] | null {
  if (!pmScanFn) {
    koffiLib().struct('cpt_pm_scan_arg', {
      size: 'uint64_t', flags: 'uint64_t', start: 'uint64_t', end: 'uint64_t', walk_end: 'uint64_t', vec: 'void *', vec_len: 'uint64_t',
      max_pages: 'uint64_t', category_inverted: 'uint64_t', category_mask: 'uint64_t', category_anyof_mask: 'uint64_t', return_mask: 'uint64_t',
    });
    pmScanFn = libc().func('ioctl', 'int', ['int', 'unsigned long', koffiLib().inout('cpt_pm_scan_arg *')]) as never;
  }
  const N = 512;
  const vec = Buffer.alloc(N * PAGE_REGION_SIZE);
  const out: PageRegion[] = [];
  let at = start;
  while (at < end) {
    const arg: PmScanArg = {
      size: PM_SCAN_ARG_SIZE, flags: opts.flags ?? 0n, start: at, end, walk_end: 0n, vec, vec_len: BigInt(N), max_pages: 0n,
      category_inverted: 0n, category_mask: opts.mask ?? 0n, category_anyof_mask: anyOf, return_mask: returnMask,
    };
    const r = Number(pmScanFn(fd, PAGEMAP_SCAN, arg));
    if (r < 0) {
      const e = koffiLib().errno();
      if (e === 4 /* EINTR */) continue;
      if (e === 25 /* ENOTTY */ || e === 22 /* EINVAL */) return null;
      throw errnoError(e, 'ioctl(PAGEMAP_SCAN)');
    }
    for (let i = 0; i < r; i++) {
      const o = i * PAGE_REGION_SIZE;
      out.push({ start: vec.readBigUInt64LE(o), end: vec.readBigUInt64LE(o + 8), categories: vec.readBigUInt64LE(o + 16) });
    }
    const walkEnd = BigInt(arg.walk_end);
    if (walkEnd <= at) break; // no progress: never loop
    at = walkEnd;
  }
  return out;
}

interface UffdioCopy {
  dst: bigint;
  src: Buffer;
  len: bigint;
  mode: bigint;
  copy: bigint;
}
type UffdCopyFn = (fd: number, req: number, arg: UffdioCopy) => number | bigint;
let uffdCopyFn: UffdCopyFn | undefined;

/**
 * ioctl(UFFDIO_COPY) on a userfaultfd: `src` (its bytes, a whole number of pages) into the
 * registered process's memory at `dst`. Returns 0 or -errno, and the bytes copied (the kernel
 * stops at the first page already present: EEXIST with copy < len).
 */
export function libcUffdCopy(fd: number, req: number, dst: bigint, src: Buffer): { r: number; copied: number } {
  if (!uffdCopyFn) {
    koffiLib().struct('cpt_uffdio_copy', { dst: 'uint64_t', src: 'void *', len: 'uint64_t', mode: 'uint64_t', copy: 'int64_t' });
    uffdCopyFn = libc().func('ioctl', 'int', ['int', 'unsigned long', koffiLib().inout('cpt_uffdio_copy *')]) as never;
  }
  const arg: UffdioCopy = { dst, src, len: BigInt(src.length), mode: 0n, copy: 0n };
  const r = Number(uffdCopyFn(fd, req, arg));
  const copy = Number(arg.copy);
  if (r < 0) return { r: -koffiLib().errno(), copied: copy > 0 ? copy : 0 };
  return { r: 0, copied: copy };
}

type MmapFn = (addr: unknown, length: number, prot: number, flags: number, fd: number, offset: bigint) => unknown;
type MunmapFn = (addr: unknown, length: number) => number;
let mmapFns: { mmap: MmapFn; munmap: MunmapFn } | undefined;

function mmapBindings(): { mmap: MmapFn; munmap: MunmapFn } {
  mmapFns ??= {
    mmap: libc().func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'int64_t']) as never,
    munmap: libc().func('munmap', 'int', ['void *', 'size_t']) as never,
  };
  return mmapFns;
}

/** Whether mmap's result is MAP_FAILED. */
function mapFailed(addr: unknown): boolean {
  return addr === null || koffiLib().address(addr) === BigInt.asUintN(64, -1n);
}

/**
 * Maps `length` bytes of the file open as `fd`, from `offset` (a multiple of the page size),
 * shared and read-only into cptrst, and gives them to `use` as a Buffer over the mapping: the page
 * cache's own pages, read without a copy. The Buffer is valid only during `use` (it is unmapped
 * after), so `use` must not keep it or anything that views it.
 * A file shortened by someone else while it is mapped kills cptrst with SIGBUS on the next read of
 * the lost part: callers map only files that no one else can shorten (see onlyRootCanChange).
 */
export function withFileMapping<T>(fd: number, offset: number, length: number, use: (bytes: Buffer) => T): T {
  const k = koffiLib();
  const { mmap, munmap } = mmapBindings();
  if (length === 0) return use(Buffer.alloc(0));
  // Populated: the pages are read once, in order, right away.
  const addr = mmap(null, length, PROT.READ, MAP.SHARED | MAP.POPULATE, fd, BigInt(offset));
  if (mapFailed(addr)) throw errnoError(k.errno(), `mmap of ${length} bytes at ${offset}`);
  try {
    return use(Buffer.from(k.view(addr, length)));
  } finally {
    munmap(addr, length);
  }
}

/** The most withFileWindow maps at once: the size of its window. */
export const FILE_WINDOW_BYTES = 32 * 1024 * 1024;
/**
 * The size of the small window, for the ranges that fit it (a PAGES object of up to 2 MiB, with
 * the page before it). V8 counts the view of a window as external memory when it is made: 32 MiB
 * of it at once starts a garbage collection (some 10 ms), which an image of small payloads (an
 * idle process, or memory in objects of up to 2 MiB) has no need to pay.
 */
export const SMALL_FILE_WINDOW_BYTES = 4 * 1024 * 1024;

interface FileWindow {
  size: number;
  /** Its place in cptrst's memory; null: it could not be made, or cannot be used again. */
  region: MemoryRegion | null | undefined;
  busy: boolean;
}
const smallWindow: FileWindow = { size: SMALL_FILE_WINDOW_BYTES, region: undefined, busy: false };
const largeWindow: FileWindow = { size: FILE_WINDOW_BYTES, region: undefined, busy: false };

/**
 * As withFileMapping, but always at the same place: a window in cptrst's address space (a
 * MemoryRegion), reserved once and kept for the life of the process, seen through one Buffer made
 * once. Each Buffer over new memory is an ArrayBuffer that V8 counts as external memory: a few
 * hundred MiB mapped and unmapped that way cost dozens of garbage collections. A range of up to
 * SMALL_FILE_WINDOW_BYTES goes through a small window, a larger one through a window of
 * FILE_WINDOW_BYTES, made only when first needed. The range is mapped over the window, and zero
 * pages take its place again after `use`, so the file's pages are let go and anything that kept a
 * view reads zeros, never the next file's bytes. A range larger than the large window, a call made
 * inside `use` (its window busy), or a window that could not be made goes through withFileMapping.
 * `offset` need not be on a page: the mapping starts on the page below, and `use` sees only the range.
 */
export function withFileWindow<T>(fd: number, offset: number, length: number, use: (bytes: Buffer) => T): T {
  if (length === 0) return use(Buffer.alloc(0));
  const below = offset % sysconf(_SC_PAGESIZE);
  const span = below + length;
  const w = span <= SMALL_FILE_WINDOW_BYTES ? smallWindow : largeWindow;
  if (span <= FILE_WINDOW_BYTES && w.region === undefined && !w.busy) w.region = MemoryRegion.reserve(w.size);
  const region = w.region;
  if (span > FILE_WINDOW_BYTES || !region || w.busy) return withFileMapping(fd, offset - below, span, (bytes) => use(bytes.subarray(below, span)));
  w.busy = true;
  try {
    return use(region.mapFile(0, length, fd, offset));
  } finally {
    try {
      region.clear(0, span);
    } catch {
      w.region = null; // its view would show a hole or someone else's mapping: never used again
    }
    w.busy = false;
  }
}

/** glibc's sizes on x86-64 of posix_spawn_file_actions_t and posix_spawnattr_t (the calls only need room). */
const SPAWN_FILE_ACTIONS_BYTES = 80;
const SPAWNATTR_BYTES = 336;
const SIGSET_BYTES = 128;
/** POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK */
const SPAWN_SIGNAL_FLAGS = 0x04 | 0x08;
/** POSIX_SPAWN_SETSID (glibc 2.26 and later) */
const SPAWN_SETSID = 0x80;
type PosixSpawn = {
  spawn: (pid: number[], path: string, fa: Buffer, attr: Buffer, argv: (string | null)[], envp: (string | null)[]) => number;
  faInit: (fa: Buffer) => number;
  faDestroy: (fa: Buffer) => number;
  faDup2: (fa: Buffer, fd: number, newFd: number) => number;
  faOpen: (fa: Buffer, fd: number, path: string, oflag: number, mode: number) => number;
  attrInit: (attr: Buffer) => number;
  attrDestroy: (attr: Buffer) => number;
  attrSetFlags: (attr: Buffer, flags: number) => number;
  attrSetSigDefault: (attr: Buffer, set: Buffer) => number;
  attrSetSigMask: (attr: Buffer, set: Buffer) => number;
  /** glibc 2.34 and later; null before. */
  faCloseFrom: ((fa: Buffer, from: number) => number) | null;
};
let posixSpawnFns: PosixSpawn | undefined;

/** A libc function that older versions lack: null where it is missing. */
function optionalFunc(l: Koffi.IKoffiLib, prototype: string): unknown {
  try {
    return l.func(prototype);
  } catch {
    return null;
  }
}

/**
 * Starts `path` (with an empty environment) through posix_spawn: a vfork-like
 * clone that execs at once, which costs a fraction of what a fork of cptrst's address space
 * (child_process.spawn) does. Its stdin is `stdinFd`, its stdout and stderr /dev/null; every
 * signal has its default action and none is blocked (as in a child of child_process.spawn); every
 * other descriptor is closed, including those cptrst inherited without close-on-exec from whoever
 * started it (where glibc is older than 2.34, only Node's own, which are close-on-exec, are sure to
 * be). Returns the child's pid; we are its parent and must reap it.
 * `opts.args` are its arguments after its name; `opts.fds` become its fds 3, 4, ... (each is
 * duplicated above them first, so that no one is overwritten before it is moved); with
 * `opts.newSession` it runs in a session of its own (setsid), out of reach of the signals a
 * terminal sends to cptrst's process group.
 */
export function spawnProcess(path: string, stdinFd: number, opts: { args?: readonly string[]; fds?: readonly number[]; newSession?: boolean } = {}): number {
  if (!posixSpawnFns) {
    const l = libc();
    posixSpawnFns = {
      spawn: l.func('int posix_spawn(_Out_ int *pid, const char *path, void *fa, void *attr, const char **argv, const char **envp)') as never,
      faInit: l.func('int posix_spawn_file_actions_init(void *fa)') as never,
      faDestroy: l.func('int posix_spawn_file_actions_destroy(void *fa)') as never,
      faDup2: l.func('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)') as never,
      faOpen: l.func('int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, int mode)') as never,
      attrInit: l.func('int posix_spawnattr_init(void *attr)') as never,
      attrDestroy: l.func('int posix_spawnattr_destroy(void *attr)') as never,
      attrSetFlags: l.func('int posix_spawnattr_setflags(void *attr, short flags)') as never,
      attrSetSigDefault: l.func('int posix_spawnattr_setsigdefault(void *attr, void *set)') as never,
      attrSetSigMask: l.func('int posix_spawnattr_setsigmask(void *attr, void *set)') as never,
      faCloseFrom: optionalFunc(l, 'int posix_spawn_file_actions_addclosefrom_np(void *fa, int from)') as never,
    };
  }
  const f = posixSpawnFns;
  const fds = opts.fds ?? [];
  // Above 2 + fds.length, close-on-exec: a dup2 to 3, 4, ... overwrites none of them.
  const moved: number[] = [];
  try {
    for (const fd of fds) {
      const r = rawSyscall(SYS.fcntl, fd, F.DUPFD_CLOEXEC, 3 + fds.length);
      if (r < 0n) throw errnoError(Number(-r), `fcntl(F_DUPFD_CLOEXEC) of fd ${fd} for ${path}`);
      moved.push(Number(r));
    }
    return spawnWith(f, path, stdinFd, opts.args ?? [], moved, opts.newSession === true);
  } finally {
    for (const fd of moved) rawSyscall(SYS.close, fd);
  }
}

function spawnWith(f: PosixSpawn, path: string, stdinFd: number, args: readonly string[], fds: readonly number[], newSession: boolean): number {
  const fa = Buffer.alloc(SPAWN_FILE_ACTIONS_BYTES);
  const attr = Buffer.alloc(SPAWNATTR_BYTES);
  const check = (r: number, call: string): void => {
    if (r !== 0) throw errnoError(r, `${call} for ${path}`);
  };
  check(f.faInit(fa), 'posix_spawn_file_actions_init');
  try {
    check(f.attrInit(attr), 'posix_spawnattr_init');
    try {
      check(f.faDup2(fa, stdinFd, 0), 'posix_spawn_file_actions_adddup2');
      check(f.faOpen(fa, 1, '/dev/null', O.WRONLY, 0), 'posix_spawn_file_actions_addopen');
      check(f.faOpen(fa, 2, '/dev/null', O.WRONLY, 0), 'posix_spawn_file_actions_addopen');
      fds.forEach((fd, i) => check(f.faDup2(fa, fd, 3 + i), 'posix_spawn_file_actions_adddup2'));
      if (f.faCloseFrom) check(f.faCloseFrom(fa, 3 + fds.length), 'posix_spawn_file_actions_addclosefrom_np');
      check(f.attrSetFlags(attr, SPAWN_SIGNAL_FLAGS | (newSession ? SPAWN_SETSID : 0)), 'posix_spawnattr_setflags');
      // Every signal back to its default action (glibc leaves its own two alone), none blocked.
      check(f.attrSetSigDefault(attr, Buffer.alloc(SIGSET_BYTES, 0xff)), 'posix_spawnattr_setsigdefault');
      check(f.attrSetSigMask(attr, Buffer.alloc(SIGSET_BYTES)), 'posix_spawnattr_setsigmask');
      const pid = [0];
      check(f.spawn(pid, path, fa, attr, [path, ...args, null], [null]), 'posix_spawn');
      return pid[0];
    } finally {
      f.attrDestroy(attr);
    }
  } finally {
    f.faDestroy(fa);
  }
}

type IoctlPtrFn = ((fd: number, req: number, arg: Buffer) => number) & {
  async: (fd: number, req: number, arg: Buffer, cb: (err: unknown, r: number) => void) => void;
};
let ioctlPtrFn: IoctlPtrFn | undefined;

/**
 * ioctl(fd, req, arg) with `arg` a pointer to the Buffer's bytes, run on a thread of libuv's pool
 * (koffi's asynchronous call) while the JavaScript thread goes on: the one native call cptrst makes
 * off its main thread (never a ptrace request). The kernel reads and writes `arg` from that
 * thread: the caller leaves the Buffer alone until the promise settles. Resolves to the call's
 * return value (-1 on failure: errno is the pool thread's, not known here; a request that reports
 * its outcome in `arg`, as UFFDIO_COPY does, tells more).
 */
export function ioctlOnPool(fd: number, req: number, arg: Buffer): Promise<number> {
  const f = (ioctlPtrFn ??= libc().func('ioctl', 'int', ['int', 'unsigned long', 'void *']) as never);
  return new Promise((resolve, reject) => f.async(fd, req, arg, (err, r) => (err ? reject(err instanceof Error ? err : new CptError('EIO', `ioctl ${req} on the pool failed`)) : resolve(r))));
}

type MmapAtFn = (addr: bigint, length: number, prot: number, flags: number, fd: number, offset: bigint) => bigint;
let mmapAtFn: MmapAtFn | undefined;

/**
 * A stretch of cptrst's address space reserved once (anonymous, read-write), seen through one
 * Buffer made once (a Buffer per mapping would be external memory V8 collects for, see
 * withFileWindow), into which parts of a file can be mapped read-only (MAP_FIXED): reused places
 * whose addresses can be given to the kernel (UFFDIO_COPY's source), each valid until the caller
 * maps something else there or clears it.
 */
export class MemoryRegion {
  private constructor(
    private readonly addr: unknown,
    /** Its first byte's address. */
    readonly base: bigint,
    /** The whole region. */
    readonly view: Buffer,
  ) {}

  /** A new region of `bytes` (a multiple of the page size), or null where it cannot be reserved. */
  static reserve(bytes: number): MemoryRegion | null {
    const addr = mmapBindings().mmap(null, bytes, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS | MAP.NORESERVE, -1, 0n);
    if (mapFailed(addr)) return null;
    const k = koffiLib();
    return new MemoryRegion(addr, k.address(addr), Buffer.from(k.view(addr, bytes)));
  }

  get size(): number {
    return this.view.length;
  }

  /** The address of the region's byte `at`. */
  address(at: number): bigint {
    return this.base + BigInt(at);
  }

  /**
   * Maps `length` bytes of the file `fd` from `offset` into the region from `at` (a page),
   * read-only and populated, and returns the view of them. An `offset` off a page is mapped from
   * the page below, at `at`: the caller's room there is that much larger. A file shortened by
   * someone else meanwhile kills cptrst with SIGBUS: as for withFileMapping, only for files no one
   * else can shorten. On failure the range is made anonymous again (a failed MAP_FIXED may leave a
   * hole) and the error thrown.
   */
  mapFile(at: number, length: number, fd: number, offset: number): Buffer {
    const below = offset % sysconf(_SC_PAGESIZE);
    const span = below + length;
    const r = this.mmapAt(at, span, PROT.READ, MAP.SHARED | MAP.FIXED | MAP.POPULATE, fd, BigInt(offset - below));
    if (r !== this.address(at)) {
      const e = errnoError(koffiLib().errno(), `mmap of ${span} bytes at ${offset - below}`);
      this.clear(at, span);
      throw e;
    }
    return this.view.subarray(at + below, at + span);
  }

  /** Anonymous, writable, zero memory over [at, at + length) again: a file's pages mapped there are let go. */
  clear(at = 0, length = this.size - at): void {
    const r = this.mmapAt(at, length, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS | MAP.NORESERVE | MAP.FIXED, -1, 0n);
    if (r !== this.address(at)) throw errnoError(koffiLib().errno(), `mmap of anonymous memory over ${length} bytes of a region`);
  }

  /** Unmaps the whole region: nothing may use it, or its view, after. */
  release(): void {
    mmapBindings().munmap(this.addr, this.size);
  }

  private mmapAt(at: number, length: number, prot: number, flags: number, fd: number, offset: bigint): bigint {
    if (at < 0 || length <= 0 || at + length > this.size || at % sysconf(_SC_PAGESIZE) !== 0) {
      throw new CptError('EINVAL', `${length} bytes at offset ${at} of a region of ${this.size} bytes`);
    }
    // The address as an integer (the same register as a pointer on x86-64): MAP_FIXED takes it as it is.
    const f = (mmapAtFn ??= libc().func('mmap', 'uint64_t', ['uint64_t', 'size_t', 'int', 'int', 'int', 'int64_t']) as never);
    return BigInt(f(this.address(at), length, prot, flags, fd, offset));
  }
}
