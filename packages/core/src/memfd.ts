/**
 * memfds (memfd_create), shared by two subsystems: files (a memfd open as an fd) and mm (a memfd
 * mapped, shared or private). One memfd is one inode of the kernel's internal shm mount, which
 * is how it is recognised (its "/memfd:NAME" path is chosen by the process).
 *
 * Checkpoint. Every FILE and VMA of a memfd carries a MEMFD record naming its inode; the first in
 * the image (mm dumps before files, so a mapping when there is one) is the carrier: name, size,
 * seals (F_GET_SEALS), mode, and the contents as MEMFD_DATA runs (SEEK_DATA/SEEK_HOLE: holes stay
 * holes). A memfd held through fds by several processes of the tree is made by their common
 * ancestor (which holds an fd of it) and opened by the others from its carried fd (holders.ts);
 * one held or mapped by a process outside the tree, or mapped and shared, is refused, naming it:
 * it would come back as a copy.
 *
 * Restart. The carrier makes the memfd inside the task (memfd_create with the recorded name,
 * MFD_ALLOW_SEALING, MFD_EXEC where the kernel has it, so that the mode can be set as recorded),
 * sets its size and writes the runs (pwrite64, as the task: its limits apply). The other FILEs
 * and VMAs of the inode reach it through /proc/self/fd/N (the carrier's fd, above the image's fd
 * numbers) or /proc/self/map_files/START-END (the carrier's mapping: mm runs before the fd table
 * is set up, whose close_range would close any fd mm kept). At the end of the files restore,
 * when every fd and mapping of it exists, the mode is set and the seals added, through one
 * writable description opened before the mode can forbid it.
 */
import * as fs from 'fs';
import { CptError } from './errors';
import { bool, bytes, recordLayout, str, u32, u64 } from './image';
import type { CheckpointTask, KindRecordWriter, KindRecords, RestartTask } from './contract';
import type { CheckpointContext, RestartContext } from './context';
import { StateKey } from './tokens';
import { refuse } from './deny';
import { carriedIn, describeHolders, otherHolders, shareOf } from './holders';
import * as linux from './linux';

const { SYS, O, F, MFD } = linux;

/**
 * The fields of a memfd's record. The records themselves are the subsystems' (files: MEMFD under
 * FILE; mm: VMA_MEMFD under VMA), each a layout of its own type that extends these fields: a
 * restart gives each record type to one subsystem.
 */
@recordLayout('memfd-fields')
export class MemfdFields {
  /** The memfd's inode number: every FILE and VMA of one memfd names the same. */
  @u64() inode = 0n;
  /** The first FILE or VMA of the memfd in the image: it makes it; the fields below and the data runs follow. */
  @bool() carrier = false;
  /** The name given to memfd_create (the path is "/memfd:NAME (deleted)"). */
  @str() name = '';
  @u64() size = 0n;
  /** F_GET_SEALS. */
  @u32() seals = 0;
  /** Permission bits. */
  @u32() mode = 0;
}

/** The fields of a data run of a memfd, under its carrier. */
@recordLayout('memfd-data-fields')
export class MemfdDataFields {
  @u64() offset = 0n;
  @bytes() data: Buffer = Buffer.alloc(0);
}

/**
 * The layouts a subsystem writes and reads a memfd with. `anon`: the records are of the file of
 * shared anonymous memory (below), which has no name.
 */
export interface MemfdLayouts {
  memfd: new () => MemfdFields;
  data: new () => MemfdDataFields;
  anon?: boolean;
}

/**
 * The file behind shared anonymous memory (mmap with MAP_SHARED|MAP_ANONYMOUS): an unnamed file of
 * the internal shm mount, shown as "/dev/zero (deleted)", which a process can open through
 * /proc/self/map_files and then keep as an fd, map again (privately too) and resize. It is kept as
 * a memfd is, with these differences: it has no name; it is sealed against sealing (F_SEAL_SEAL)
 * from the start; restart makes it by mapping one page of shared anonymous memory inside the task,
 * opening it through map_files and unmapping it again.
 */
export function isShmemFile(path: string, dev: bigint): boolean {
  return path === '/dev/zero (deleted)' && dev === shmemDev();
}

/** Largest amount of data (not counting holes) of one memfd that goes into the image. */
export const MEMFD_DATA_MAX = 256 * 1024 * 1024;
const DATA_CHUNK = 16 * 1024 * 1024;
const KNOWN_SEALS = F.SEAL_SEAL | F.SEAL_SHRINK | F.SEAL_GROW | F.SEAL_WRITE | F.SEAL_FUTURE_WRITE | F.SEAL_EXEC;
const NAME_MAX = 249; // memfd_create: 255 bytes with the "memfd:" prefix and the NUL

let shmDev: bigint | undefined;
/**
 * The device of the kernel's internal shm mount, which holds every memfd, SysV segment and
 * shared anonymous area: found from a memfd of cptrst's own, made once and closed at once.
 */
export function shmemDev(): bigint {
  if (shmDev === undefined) {
    const fd = Number(linux.checkedSyscall('memfd_create', undefined, SYS.memfd_create, Buffer.from('cptrst-shm-probe\0'), MFD.CLOEXEC));
    try {
      shmDev = fs.fstatSync(fd, { bigint: true }).dev;
    } finally {
      fs.closeSync(fd);
    }
  }
  return shmDev;
}

/** Whether a file with this /proc path and device is a memfd (on the internal shm mount, not hugetlbfs). */
export function isMemfd(path: string, dev: bigint): boolean {
  return path.startsWith('/memfd:') && dev === shmemDev();
}

/** The name given to memfd_create, from the /proc path ("/memfd:NAME (deleted)"). */
export function memfdName(path: string): string {
  return path.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, '');
}

/** A memfd as a checkpoint sees it: a path cptrst opens to read it (/proc/PID/fd/N or /proc/PID/map_files/A-B). */
export interface MemfdSource {
  at: string;
  stat: fs.BigIntStats;
  path: string;
}

/** The memfds a task holds that another process of the tree makes at restart (its FILEs carry nothing). */
const MADE_ELSEWHERE = new StateKey<Set<bigint>>('memfd.madeElsewhere');

/**
 * Checkpoint: refuses a memfd shared with another process, or too large. With `ctx` (an fd of
 * the memfd), other processes of the tree may hold it too, through fds only: their lowest common
 * ancestor, which must hold an fd of it, makes it, and the others open it from its carried fd.
 */
export function checkMemfd(task: CheckpointTask, src: MemfdSource, object: string, ctx?: CheckpointContext): void {
  if (ctx) {
    const { shared, outside } = shareOf(ctx, task, { stat: src.stat });
    if (outside.length) refuse(task.pid, object, `the memfd is also open or mapped in ${describeHolders(outside)}, outside the checkpointed process tree; a memfd is restored only together with every process that holds it`);
    if (shared) {
      const mapped = shared.holders.filter((h) => h.fd < 0);
      if (mapped.length) refuse(task.pid, object, `the memfd is also mapped in ${describeHolders(mapped)}; a memfd both mapped and held by several processes is not supported yet`);
      if (!shared.holders.some((h) => h.pid === shared.maker)) refuse(task.pid, object, `the memfd is held by several processes (${describeHolders(shared.holders)}) and not by their common ancestor ${shared.maker}; not supported yet`);
      if (task.pid !== shared.maker) task.state.ensure(MADE_ELSEWHERE, () => new Set<bigint>()).add(src.stat.ino);
    }
  } else {
    const others = otherHolders(task, { stat: src.stat });
    if (others.length) {
      refuse(task.pid, object, `the memfd is also open or mapped in ${describeHolders(others)}; a mapped memfd shared with another process is not supported yet`);
    }
  }
  if (Buffer.byteLength(memfdName(src.path)) > NAME_MAX) refuse(task.pid, object, 'the memfd\'s name is too long');
  const fd = fs.openSync(src.at, O.RDONLY);
  try {
    const stored = linux.dataRuns(fd, Number(src.stat.size)).reduce((n, r) => n + r.length, 0);
    if (stored > MEMFD_DATA_MAX) refuse(task.pid, object, `the memfd holds ${stored} bytes of data; at most ${MEMFD_DATA_MAX} are stored in an image`);
  } finally {
    fs.closeSync(fd);
  }
}

const CARRIED = new StateKey<Set<bigint>>('memfd.carried');

/** Checkpoint: the MEMFD record of one FILE or VMA; the first one of the inode carries the memfd. */
export function dumpMemfd(task: CheckpointTask, src: MemfdSource, out: KindRecordWriter, object: string, layouts: MemfdLayouts): void {
  const carried = task.state.ensure(CARRIED, () => new Set<bigint>());
  const rec = new layouts.memfd();
  rec.inode = src.stat.ino;
  if (carried.has(rec.inode) || task.state.get(MADE_ELSEWHERE)?.has(rec.inode)) {
    out.write(rec);
    return;
  }
  carried.add(rec.inode);
  rec.carrier = true;
  rec.name = layouts.anon ? '' : memfdName(src.path);
  rec.size = src.stat.size;
  rec.mode = Number(src.stat.mode) & 0o7777;
  const fd = fs.openSync(src.at, O.RDONLY);
  try {
    const seals = linux.rawSyscall(SYS.fcntl, fd, F.GET_SEALS, 0);
    if (seals < 0n) throw new CptError(linux.errnoName(Number(-seals)), 'F_GET_SEALS of the memfd failed', { pid: task.pid, object });
    rec.seals = Number(seals);
    if (rec.seals & ~KNOWN_SEALS) refuse(task.pid, object, `unknown memfd seals 0x${rec.seals.toString(16)}`);
    out.write(rec);
    for (const run of linux.dataRuns(fd, Number(rec.size))) {
      for (let off = run.offset; off < run.offset + run.length; off += DATA_CHUNK) {
        const chunk = Buffer.alloc(Math.min(DATA_CHUNK, run.offset + run.length - off));
        const n = fs.readSync(fd, chunk, 0, chunk.length, off);
        if (n !== chunk.length) throw new CptError('EIO', `short read of the memfd at ${off}: ${n} of ${chunk.length} bytes`, { pid: task.pid, object });
        const d = new layouts.data();
        d.offset = BigInt(off);
        d.data = chunk;
        out.write(d);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Restart: the MEMFD record of a FILE or VMA and its data runs, checked (EBADIMG). */
export function memfdRecord(pid: number, records: KindRecords, object: string, layouts: MemfdLayouts): { rec: MemfdFields; data: MemfdDataFields[] } {
  const bad = (why: string) => new CptError('EBADIMG', `memfd: ${why}`, { pid, object });
  const recs = records.of(layouts.memfd);
  if (recs.length !== 1) throw bad(`${recs.length} memfd records for one file or area (one is needed)`);
  const rec = recs[0];
  const data = records.of(layouts.data);
  if (!rec.carrier) {
    if (data.length) throw bad('data runs under a memfd record that does not carry the memfd');
    return { rec, data };
  }
  if (rec.seals & ~KNOWN_SEALS) throw bad(`unknown seals 0x${rec.seals.toString(16)}`);
  if (rec.mode & ~0o7777) throw bad(`mode 0${rec.mode.toString(8)}`);
  if (layouts.anon) {
    if (rec.name !== '' || rec.seals !== F.SEAL_SEAL) throw bad('the file of shared anonymous memory has a name or seals of its own');
  } else if (!rec.name || Buffer.byteLength(rec.name) > NAME_MAX || rec.name.includes('\0') || rec.name.includes('/')) throw bad('a bad name');
  if (rec.size > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`size ${rec.size}`);
  let end = 0n;
  let total = 0;
  for (const d of data) {
    if (d.offset < end) throw bad(`a run at ${d.offset} overlaps or precedes the one before it`);
    end = d.offset + BigInt(d.data.length);
    if (end > rec.size) throw bad(`a run at ${d.offset} of ${d.data.length} bytes ends beyond the size ${rec.size}`);
    total += d.data.length;
  }
  if (total > MEMFD_DATA_MAX) throw bad(`more than ${MEMFD_DATA_MAX} bytes of data`);
  return { rec, data };
}

/** How the task reaches a memfd made again: its carrier's fd, or its carrier's mapping. */
type Reach = { fd: bigint } | { start: bigint; end: bigint };

interface RestoredMemfd {
  reach: Reach;
  rec: MemfdFields;
  object: string;
  done: boolean;
  /**
   * memfd_create's own description, kept for the first FILE that can be it: unlike a description
   * opened later, it does not count as a writer of the inode, which execveat(2) of the memfd
   * refuses (ETXTBSY) while any exists.
   */
  created?: bigint;
  createdTaken?: boolean;
}

const RESTORED = new StateKey<Map<bigint, RestoredMemfd>>('memfd.restored');

function restored(task: RestartTask): Map<bigint, RestoredMemfd> {
  return task.state.ensure(RESTORED, () => new Map<bigint, RestoredMemfd>());
}

/**
 * Restart: makes the memfd of a carrier record inside the task, with its size and contents;
 * returns its fd (O_RDWR). `above`: move it above the image's fd numbers (0: leave it).
 */
export function createMemfd(task: RestartTask, rec: MemfdFields, data: MemfdDataFields[], above: number, object: string, anon = false): bigint {
  const t = task.tracee!;
  if (restored(task).has(rec.inode)) throw new CptError('EBADIMG', `memfd: a second record carries the memfd of inode ${rec.inode}`, { pid: task.pid, object });
  let fd: bigint;
  if (anon) {
    fd = createShmemFile(task, object);
  } else {
    const name = t.stage(Buffer.from(`${rec.name}\0`));
    fd = t.syscall(SYS.memfd_create, [name, MFD.CLOEXEC | MFD.ALLOW_SEALING | MFD.EXEC]);
    if (fd === -22n) fd = t.syscall(SYS.memfd_create, [name, MFD.CLOEXEC | MFD.ALLOW_SEALING]); // no MFD_EXEC before Linux 6.3
    if (fd < 0n) throw new CptError(linux.errnoName(Number(-fd)), `memfd_create(${rec.name}) failed`, { pid: task.pid, object });
  }
  if (above > 0) {
    const moved = t.syscallOk(SYS.fcntl, [fd, F.DUPFD_CLOEXEC, above], `fcntl(F_DUPFD_CLOEXEC) of the memfd for ${object}`);
    t.syscall(SYS.close, [fd]);
    fd = moved;
  }
  t.syscallOk(SYS.ftruncate, [fd, rec.size], `ftruncate of the memfd for ${object} to ${rec.size}`);
  const room = Math.max(4096, Math.floor(t.scratch().dataSize / 4096) * 4096);
  for (const d of data) {
    let done = 0;
    while (done < d.data.length) {
      const n = Math.min(room, d.data.length - done);
      const w = t.syscallOk(SYS.pwrite64, [fd, t.stage(d.data.subarray(done, done + n), 0), n, d.offset + BigInt(done)], `writing the memfd for ${object}`);
      if (w === 0n) throw new CptError('EIO', `writing the memfd at ${d.offset + BigInt(done)} made no progress`, { pid: task.pid, object });
      done += Number(w);
    }
  }
  return fd;
}

/**
 * The file of new shared anonymous memory inside the task (O_RDWR|O_LARGEFILE, as the process's
 * own open of map_files gives): one page mapped wherever the kernel likes, opened, unmapped; the
 * size is set by the caller.
 */
function createShmemFile(task: RestartTask, object: string): bigint {
  const t = task.tracee!;
  const page = BigInt(linux.pageSize());
  const at = t.syscallOk(SYS.mmap, [0, page, linux.PROT.READ | linux.PROT.WRITE, linux.MAP.SHARED | linux.MAP.ANONYMOUS, -1, 0], `mmap of shared anonymous memory for ${object}`);
  try {
    const path = t.stage(Buffer.from(`/proc/self/map_files/${at.toString(16)}-${(at + page).toString(16)}\0`));
    return t.syscallOk(SYS.openat, [linux.AT_FDCWD, path, O.RDWR | O.LARGEFILE | O.CLOEXEC, 0], `opening the file of shared anonymous memory for ${object}`);
  } finally {
    t.syscall(SYS.munmap, [at, page]);
  }
}

/**
 * Restart: remembers how the task reaches a memfd it made (for the other FILEs and VMAs of it,
 * and its seals), and memfd_create's own fd, `created`, kept open for a FILE of the memfd.
 */
export function registerMemfd(task: RestartTask, rec: MemfdFields, reach: Reach, object: string, created?: bigint): void {
  restored(task).set(rec.inode, { reach, rec, object, done: false, ...(created !== undefined ? { created } : {}) });
}

/**
 * Restart, before the fd table is cleared (close_range of the helper's fds): moves the memfd_create
 * fds kept so far (by mm, which runs before the fd table exists) above the image's fd numbers;
 * returns the fds to spare.
 */
export function keepMemfdsAbove(task: RestartTask, above: number): bigint[] {
  const t = task.tracee!;
  const kept: bigint[] = [];
  for (const m of restored(task).values()) {
    if (m.created === undefined || m.createdTaken) continue;
    const moved = t.syscallOk(SYS.fcntl, [m.created, F.DUPFD_CLOEXEC, above], `fcntl(F_DUPFD_CLOEXEC) of the memfd for ${m.object}`);
    t.syscall(SYS.close, [m.created]);
    m.created = moved;
    m.reach = { fd: moved };
    kept.push(moved);
  }
  return kept.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Restart: memfd_create's own description of a memfd, the first time a FILE asks (a FILE whose
 * flags it can have: read-write), as a new fd above `above`; undefined otherwise.
 */
export function takeCreatedMemfd(task: RestartTask, inode: bigint, above: number, object: string): bigint | undefined {
  const m = restored(task).get(inode);
  if (!m || m.created === undefined || m.createdTaken) return undefined;
  m.createdTaken = true;
  return task.tracee!.syscallOk(SYS.fcntl, [m.created, F.DUPFD_CLOEXEC, above], `fcntl(F_DUPFD_CLOEXEC) of the memfd for ${object}`);
}

/**
 * Restart: the path inside the task that opens a memfd made earlier, by the task or (`ctx` given)
 * by an ancestor whose fd of it the task carries; EBADIMG when none did.
 */
export function memfdPath(task: RestartTask, inode: bigint, object: string, ctx?: RestartContext): string {
  const m = restored(task).get(inode);
  const carried = ctx && !m ? carriedIn(ctx, task.pid).get(`memfd:${inode}`) : undefined;
  if (carried) return `/proc/self/fd/${carried.fds[0]}`;
  if (!m) throw new CptError('EBADIMG', `memfd: the memfd of inode ${inode} is used before the record that carries it`, { pid: task.pid, object });
  return 'fd' in m.reach ? `/proc/self/fd/${m.reach.fd}` : `/proc/self/map_files/${m.reach.start.toString(16)}-${m.reach.end.toString(16)}`;
}

/**
 * Restart, at the end (every fd and mapping made): the mode and the seals of every memfd made,
 * through one new writable description (F_ADD_SEALS wants one; opened while the mode still allows it).
 */
export function finishMemfds(task: RestartTask): void {
  const t = task.tracee!;
  for (const [inode, m] of restored(task)) {
    if (m.done) continue;
    m.done = true;
    const at = t.stage(Buffer.from(`${memfdPath(task, inode, m.object)}\0`));
    const fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, at, O.RDWR | O.CLOEXEC, 0], `opening the memfd for ${m.object}`);
    try {
      t.syscallOk(SYS.fchmod, [fd, m.rec.mode], `fchmod of the memfd for ${m.object}`);
      // Only the seals it lacks: the file of shared anonymous memory has F_SEAL_SEAL from the start.
      const missing = m.rec.seals & ~Number(t.syscallOk(SYS.fcntl, [fd, F.GET_SEALS, 0], `F_GET_SEALS on the memfd for ${m.object}`));
      if (missing) t.syscallOk(SYS.fcntl, [fd, F.ADD_SEALS, missing], `F_ADD_SEALS(0x${missing.toString(16)}) on the memfd for ${m.object}`);
    } finally {
      t.syscall(SYS.close, [fd]);
    }
  }
}
