/**
 * Write tracking between checkpoints, without soft-dirty: userfaultfd write protection in async
 * mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7) and PAGEMAP_SCAN's PAGE_IS_WRITTEN.
 *
 * The userfaultfd is made inside the process (an injected userfaultfd(2): its memory is the one
 * the fd tracks), copied out with pidfd_getfd and closed inside at once, so the process's fd table
 * is as it was. Its private anonymous areas are registered in WP mode from cptrst (the ioctls act
 * on the fd's memory, whoever issues them). In async mode the kernel resolves a write to a
 * protected page itself, clearing the page's uffd-wp bit: the process gets no fault it can see
 * and no signal, only a minor fault on the first write to each page after a checkpoint.
 *
 * Who holds the fd between two checkpoints: a tracker, `/bin/sh -c SCRIPT cptrst-tracker PID
 * START`, started detached by the checkpoint, with the userfaultfd and a small memfd saying what
 * the bits mean (TrackState). The tracker only sleeps (its `sleep` without those fds: a later
 * checkpoint would otherwise wait for it, uffd-areas.ts awaitTrackerLeftovers), and exits once the process is gone (its
 * pid no longer shows the recorded start time): closing the userfaultfd ends the registration.
 * The image records its pid and start time; the next checkpoint (`--parent`) checks both, reads
 * the memfd (pidfd_getfd) and uses the tracking only if it holds since the parent image. The
 * cost: one small shell process per tracked process, and areas of the process that no longer
 * merge with unregistered neighbours.
 *
 * Re-arming needs no commit: it is done while the process is frozen for the image X being taken
 * against parent Y, before the image is known to be good, and loses no written page whether X
 * ever commits or not. The pages written since Y (the bits, read by a scan that clears nothing,
 * plus what the memfd carried if Y is its base) are recorded in the memfd as carried, with Y as
 * base and X as armed (record: carried first, ids last, so that the memfd says at every instant
 * something the bits and the carried pages over-approximate); then PAGEMAP_SCAN with
 * PM_SCAN_WP_MATCHING write-protects every page (protect). The next checkpoint against X takes
 * the bits; against Y (X failed, was killed or removed), the carried pages and the bits; against
 * any other image, the pages are compared by hashes. So the process can run again at once, its
 * pages written from a copy-on-write snapshot, as in a plain checkpoint.
 */
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, CptError, linux } from '@cptrst/core';

const { SYS, O, UFFD, PAGE_IS, PM_SCAN } = linux;

/** The tracker's marker ($0 of its shell) and the seconds between its checks of the process. */
const MARKER = 'cptrst-tracker';
/**
 * Its stdin is a pipe whose write end only cptrst holds: a line there arms it; end of file (the
 * checkpoint gave it up, or cptrst died before arming it) ends it before it tracks anything.
 */
const TRACKER_SCRIPT = [
  'p=$1 t=$2',
  'read -r go || exit 0',
  'exec </dev/null',
  'while :; do',
  '  read -r s < /proc/$p/stat 2>/dev/null || exit 0',
  '  s=${s##*") "}',
  '  set -- $s',
  '  shift 19',
  '  [ "$1" = "$t" ] || exit 0',
  '  sleep 2 </dev/null 3>&- 4>&-',
  'done',
].join('\n');
/**
 * The memfd (TrackState): magic, armed id, base id, the number of carried ranges, the ranges
 * ([start, end) as two u64 each). A memfd of an older cptrst holds only an id (its armed one).
 */
const MAGIC = Buffer.from('cptrstT1', 'latin1');
const ID_BYTES = 64;
const ARMED_AT = 8;
const BASE_AT = ARMED_AT + ID_BYTES;
const COUNT_AT = BASE_AT + ID_BYTES;
const RANGES_AT = COUNT_AT + 8;
/** Carried ranges at most (1 MiB of memfd): more are coarsened (merged into larger aligned ranges). */
const MAX_CARRIED = 65536;
const FEATURES = BigInt(UFFD.FEATURE_WP_ASYNC | UFFD.FEATURE_WP_UNPOPULATED);

export interface TrackerRef {
  pid: number;
  start: bigint;
}

function startTimeOf(pid: number): bigint | undefined {
  try {
    return BigInt(linux.readStat(pid).startTime);
  } catch {
    return undefined;
  }
}

/** Whether `t` is a live tracker of process `pid` started at `start` (its command line says so). */
function isTrackerOf(t: TrackerRef, pid: number, start: bigint): boolean {
  if (startTimeOf(t.pid) !== t.start) return false;
  const argv = linux.cmdlineIfAlive(t.pid);
  const i = argv.indexOf(MARKER);
  return i > 0 && argv[i + 1] === String(pid) && argv[i + 2] === String(start);
}

/** Every live tracker of the process (normally none or one; more only after cptrst died in between). */
function trackersOf(pid: number, start: bigint): TrackerRef[] {
  return trackersOfAll([{ pid, start }]).get(pid) ?? [];
}

/** The live trackers of each of `procs` (by pid), from one look at every process's command line. */
export function trackersOfAll(procs: ReadonlyArray<{ pid: number; start: bigint }>): Map<number, TrackerRef[]> {
  const want = new Map(procs.map((p) => [`${p.pid} ${p.start}`, p.pid]));
  const out = new Map<number, TrackerRef[]>(procs.map((p) => [p.pid, []]));
  for (const p of linux.allPids()) {
    const argv = linux.cmdlineIfAlive(p);
    const i = argv.indexOf(MARKER);
    const of = i > 0 ? want.get(`${argv[i + 1]} ${argv[i + 2]}`) : undefined;
    if (of === undefined) continue;
    const s = startTimeOf(p);
    if (s !== undefined) out.get(of)!.push({ pid: p, start: s });
  }
  return out;
}

/** Ends a tracker (its userfaultfd closes with it: the process's areas are unregistered). */
export function stopTracker(t: TrackerRef): void {
  try {
    const pidfd = linux.pidfdOpen(t.pid);
    try {
      if (startTimeOf(t.pid) === t.start) {
        linux.rawSyscall(SYS.pidfd_send_signal, pidfd, 9, 0, 0);
        // Its sleep, in its own process group (it was started detached): one of an older cptrst holds copies of its fds.
        try {
          process.kill(-t.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    } finally {
      fs.closeSync(pidfd);
    }
  } catch {
    /* gone already */
  }
  // Its userfaultfd is closed when it exits (a zombie holds no files): only then are the areas free.
  for (let i = 0; i < 400 && startTimeOf(t.pid) === t.start && !holdsNoFiles(t.pid); i++) linux.sleepMs(5);
}

/** Holds no files any more: a zombie, or gone. */
function holdsNoFiles(pid: number): boolean {
  const state = linux.stateIfAlive(pid);
  return state === undefined || state === 'Z';
}

const UFFD_LINK = 'anon_inode:[userfaultfd]';
const MEMFD_NAME = 'cptrst-tracking';
const MEMFD_LINK = `/memfd:${MEMFD_NAME} (deleted)`;
const isSocket = (link: string): boolean => link.startsWith('socket:[');

/** The tracker's fd whose link is `link` or passes it (the shell may move the fds it was given to other numbers). */
function findFd(pid: number, link: string | ((l: string) => boolean)): number | undefined {
  for (const fd of linux.listFds(pid)) {
    try {
      const l = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (typeof link === 'string' ? l === link : link(l)) return fd;
    } catch {
      /* closed meanwhile */
    }
  }
  return undefined;
}

/**
 * cptrst's own copies of the userfaultfd and memfd of the trackers it started or armed in this
 * run (by "pid start"): used instead of copies taken from the tracker, closed at the end (dropFds).
 */
const OWN_FDS = new Map<string, { uffd?: number; memfd?: number }>();
const keyOf = (t: TrackerRef): string => `${t.pid} ${t.start}`;

function ownFd(t: TrackerRef, which: 'uffd' | 'memfd'): number | undefined {
  return OWN_FDS.get(keyOf(t))?.[which];
}

function dropFds(t: TrackerRef): void {
  const own = OWN_FDS.get(keyOf(t));
  OWN_FDS.delete(keyOf(t));
  for (const fd of [own?.uffd, own?.memfd]) if (fd !== undefined) fs.closeSync(fd);
}

/** Runs `fn` with the tracker's userfaultfd ('uffd') or memfd ('memfd'): cptrst's own copy, or one taken from the tracker. */
function withTrackerFd<T>(t: TrackerRef, which: 'uffd' | 'memfd', fn: (fd: number) => T): T {
  const own = ownFd(t, which);
  if (own !== undefined) return fn(own);
  const fd = trackerFd(t, which);
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A copy of the tracker's userfaultfd ('uffd') or memfd ('memfd'). */
function trackerFd(t: TrackerRef, which: 'uffd' | 'memfd'): number {
  // Around each sleep the shell moves the fds it holds (saved to other numbers, then back): one
  // that moved while the fds were listed, or between the look-up and the copy, is looked up
  // again, and the copy is checked to be what was looked for. A tracker of this version holds
  // its userfaultfd in flight in a socket (newTracker): that socket is copied, and the fd peeked.
  const link = which === 'uffd' ? UFFD_LINK : MEMFD_LINK;
  for (let tries = 1; ; tries++) {
    const direct = findFd(t.pid, link);
    const n = direct ?? (which === 'uffd' ? findFd(t.pid, isSocket) : undefined);
    if (n !== undefined) {
      const pidfd = linux.pidfdOpen(t.pid);
      try {
        const copy = linux.pidfdGetfd(pidfd, n);
        const got = direct !== undefined ? copy : inFlight(copy);
        if (linux.readFdLink(process.pid, got) === link) return got;
        fs.closeSync(got);
      } catch (e) {
        if (tries >= 5) throw e;
      } finally {
        fs.closeSync(pidfd);
      }
    }
    if (tries >= 5) throw new CptError('EBADF', `tracker ${t.pid} holds no ${which} (looked for ${tries} times)`);
    linux.sleepMs(1);
  }
}

/** The userfaultfd in flight in socket `sock` (cptrst's copy, closed here), peeked: it stays queued. */
function inFlight(sock: number): number {
  try {
    const rights = linux.peekSocket(sock, true, true).flatMap((m) => m.rights ?? []);
    const uffd = rights.find((fd) => linux.readFdLink(process.pid, fd) === UFFD_LINK);
    for (const fd of rights) if (fd !== uffd) fs.closeSync(fd);
    if (uffd === undefined) throw new CptError('EBADF', 'no userfaultfd in flight in the tracker\'s socket');
    return uffd;
  } finally {
    fs.closeSync(sock);
  }
}

/** An address range [start, end). */
export interface Range {
  start: bigint;
  end: bigint;
}

/** What a tracker's bits mean, as its memfd says. */
interface TrackState {
  /** The image whose freeze the bits were last cleared at: pages written since it have their bit set ('' if none). */
  armed: string;
  /** An image the carried ranges hold for: pages written since it are in them or have their bit set ('' if none). */
  base: string;
  carried: Range[];
}

const idOf = (b: Buffer, at: number): string => b.subarray(at, at + ID_BYTES).toString('latin1').replace(/\0.*$/s, '');

/** The tracker's state (a memfd of an older cptrst: its id as the armed one, no base). */
function readState(t: TrackerRef): TrackState {
  return withTrackerFd(t, 'memfd', (fd) => {
    const size = fs.fstatSync(fd).size;
    const b = Buffer.alloc(size);
    const n = fs.readSync(fd, b, 0, size, 0);
    if (n < RANGES_AT || !b.subarray(0, MAGIC.length).equals(MAGIC)) return { armed: idOf(b, 0), base: '', carried: [] };
    const count = b.readUInt32LE(COUNT_AT);
    const base = idOf(b, BASE_AT);
    // A count the memfd does not hold: no base (a torn state is never trusted).
    if (RANGES_AT + count * 16 > n) return { armed: idOf(b, ARMED_AT), base: '', carried: [] };
    const carried: Range[] = [];
    for (let i = 0; i < count; i++) carried.push({ start: b.readBigUInt64LE(RANGES_AT + i * 16), end: b.readBigUInt64LE(RANGES_AT + i * 16 + 8) });
    return { armed: idOf(b, ARMED_AT), base, carried };
  });
}

function idBytes(id: string): Buffer {
  const b = Buffer.alloc(ID_BYTES);
  b.write(id, 'latin1');
  return b;
}

/** Sorted, merged ranges; past `max`, merged into ranges aligned to ever larger powers of two (more pages, never fewer). */
export function boundedRanges(ranges: Range[], max = MAX_CARRIED): Range[] {
  let out = mergeRanges(ranges);
  for (let shift = 12n; out.length > max; shift++) {
    const g = 1n << shift;
    out = mergeRanges(out.map((r) => ({ start: (r.start / g) * g, end: ((r.end + g - 1n) / g) * g })));
  }
  return out;
}

function mergeRanges(ranges: Range[]): Range[] {
  const s = ranges.filter((r) => r.end > r.start).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Range[] = [];
  for (const r of s) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) {
      if (r.end > last.end) last.end = r.end;
    } else out.push({ start: r.start, end: r.end });
  }
  return out;
}

/**
 * Records the state for the image being taken, `armed`, before its bits are cleared (protect):
 * `base` (or '') and the pages written since it. In an order that leaves, at every instant, a
 * state the bits and the carried ranges over-approximate: the base is forgotten first, the ranges
 * written, then the base, then the armed image (until then the old one, for which the bits hold).
 */
export function record(t: TrackerRef, armed: string, base: string, carried: Range[]): void {
  const ranges = base ? boundedRanges(carried) : [];
  withTrackerFd(t, 'memfd', (fd) => {
    const head = Buffer.alloc(MAGIC.length);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    if (n === MAGIC.length && head.equals(MAGIC)) fs.writeSync(fd, Buffer.alloc(ID_BYTES), 0, ID_BYTES, BASE_AT);
    else {
      // An older cptrst's memfd: no state at all until this one is complete.
      fs.writeSync(fd, Buffer.alloc(RANGES_AT), 0, RANGES_AT, 0);
      fs.writeSync(fd, MAGIC, 0, MAGIC.length, 0);
    }
    const body = Buffer.alloc(ranges.length * 16);
    ranges.forEach((r, i) => {
      body.writeBigUInt64LE(r.start, i * 16);
      body.writeBigUInt64LE(r.end, i * 16 + 8);
    });
    if (body.length) fs.writeSync(fd, body, 0, body.length, RANGES_AT);
    const count = Buffer.alloc(4);
    count.writeUInt32LE(ranges.length);
    fs.writeSync(fd, count, 0, 4, COUNT_AT);
    if (base) fs.writeSync(fd, idBytes(base), 0, ID_BYTES, BASE_AT);
    fs.writeSync(fd, idBytes(armed), 0, ID_BYTES, ARMED_AT);
  });
}

/** A process's tracking during one checkpoint. */
export interface Tracking {
  tracker: TrackerRef;
  /** Whether the tracker was made by this checkpoint (ended if the checkpoint fails). */
  fresh: boolean;
  /** Whether its write bits hold since the parent image (else every page counts as written). */
  valid: boolean;
  /** Pages written since the parent that the bits no longer show (the parent is the tracker's base). */
  carried: Range[];
  /**
   * A fresh tracker tracks nothing until armed: the caller arms it once its areas are registered,
   * so that cptrst killed in between leaves no tracker that holds no registration (it reads end of
   * file and ends). Never armed, it ends with the checkpoint.
   */
  arm?: () => void;
}

/**
 * Whether the tracker the parent image names (`recorded`) holds the process's tracking since the
 * parent: alive, tracking this process, and armed for the parent or carrying the pages written
 * since it. Else why not (`why` undefined: there is no parent).
 */
export function validTracking(recorded: TrackerRef | undefined, pid: number, start: bigint, parentId: string | undefined): { t?: Tracking; why?: string } {
  if (parentId === undefined) return {};
  if (!recorded) return { why: 'the parent image has no tracker for it' };
  if (!isTrackerOf(recorded, pid, start)) return { why: `its tracker (pid ${recorded.pid}) is gone` };
  let state: TrackState;
  try {
    state = readState(recorded);
  } catch (e) {
    return { why: `its tracker (pid ${recorded.pid}) cannot be read (${(e as Error).message})` };
  }
  if (state.armed === parentId) return { t: { tracker: recorded, fresh: false, valid: true, carried: [] } };
  if (state.base === parentId) return { t: { tracker: recorded, fresh: false, valid: true, carried: state.carried } };
  return { why: `its tracking holds since other images (${[state.armed, state.base].filter((x) => x).join(', ') || 'none'}), not the parent` };
}

/**
 * The process's tracking: the tracker the parent image names, if it is alive, tracks this process
 * and was armed for the parent image; else a new one (and every other tracker of the process
 * ended): the one started for it before the freeze (startSpares), else one started now. `known`:
 * the process's trackers found before the freeze (only checked again here). Says why when
 * tracking is impossible here (no uffd-wp async, a userfaultfd of the process's own, seccomp...);
 * the caller then compares pages by hashes.
 */
export function tracking(ctx: CheckpointContext, task: CheckpointTask, start: bigint, recorded: TrackerRef | undefined, parentId: string | undefined, known?: TrackerRef[]): { t?: Tracking; why?: string } {
  const valid = validTracking(recorded, task.pid, start, parentId);
  if (valid.t) return valid;
  const why = valid.why;
  const spare = takeSpare(ctx, task.pid, start);
  // Tracking cannot be trusted: any other tracker of the process goes (its areas are unregistered), and a new one starts.
  const others = known ? known.filter((k) => isTrackerOf(k, task.pid, start)) : trackersOf(task.pid, start);
  for (const old of others) if (old.pid !== spare?.ref.pid) stopTracker(old);
  try {
    const { ref, arm } = newTracker(ctx, task, start, spare);
    return { t: { tracker: ref, fresh: true, valid: false, carried: [], arm }, why };
  } catch (e) {
    return { why: `${why ? why + '; ' : ''}no new tracking: ${(e as Error).message}` };
  }
}

/** Waits (at most 5 s) until the tracker runs its script holding `held` (a link) and the memfd. */
function waitReady(t: TrackerRef, pid: number, start: bigint, held: string): boolean {
  for (let i = 0; i < 1000; i++) {
    if (isTrackerOf(t, pid, start)) {
      if (findFd(t.pid, held) !== undefined && findFd(t.pid, MEMFD_LINK) !== undefined) return true;
    }
    if (startTimeOf(t.pid) !== t.start) return false;
    linux.sleepMs(5);
  }
  return false;
}

/** Whether the process holds a userfaultfd of its own (its areas may be registered already). */
export function hasOwnUserfaultfd(pid: number): boolean {
  for (const fd of linux.listFds(pid)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === UFFD_LINK) return true;
    } catch {
      /* closed meanwhile: it is frozen, so not by itself */
    }
  }
  return false;
}

/**
 * Starts a tracker of process `pid`: `held` becomes its fd 3 (the userfaultfd, or a socket that
 * the userfaultfd is later put in flight in), a new memfd its fd 4 (cptrst keeps a copy: OWN_FDS),
 * its stdin a pipe whose write end (`go`) only cptrst holds. It tracks nothing until armed (arm).
 */
function startTracker(pid: number, start: bigint, held: number): { ref: TrackerRef; go: number } {
  const m = linux.rawSyscall(SYS.memfd_create, Buffer.from(`${MEMFD_NAME}\0`), 1 /* MFD_CLOEXEC */);
  if (m < 0n) throw new CptError(linux.errnoName(Number(-m)), 'memfd_create failed');
  const memfd = Number(m);
  const [r, go] = linux.pipe2(O.CLOEXEC);
  let started = false;
  try {
    fs.writeSync(memfd, MAGIC, 0, MAGIC.length, 0);
    fs.ftruncateSync(memfd, RANGES_AT);
    const child = linux.childProcess().spawn('/bin/sh', ['-c', TRACKER_SCRIPT, MARKER, String(pid), String(start)], { stdio: [r, 'ignore', 'ignore', held, memfd], detached: true });
    child.on('error', () => undefined);
    child.unref();
    const s = child.pid ? startTimeOf(child.pid) : undefined;
    if (!child.pid || s === undefined) throw new CptError('ECHILD', 'the tracker did not start');
    const ref = { pid: child.pid, start: s };
    OWN_FDS.set(keyOf(ref), { memfd });
    started = true;
    return { ref, go };
  } finally {
    fs.closeSync(r);
    if (!started) {
      fs.closeSync(go);
      fs.closeSync(memfd);
    }
  }
}

/** Arms a tracker: a line on its stdin, which is then closed (it reads end of file if it is never armed). */
function arm(go: number): void {
  try {
    fs.writeSync(go, 'go\n');
  } finally {
    fs.closeSync(go);
  }
}

/**
 * A tracker started before the freeze for a process that may need a new one (startSpares): the
 * slowest part of a first --track of a tree (a shell started per process) is then out of the
 * frozen window. While frozen, the process's new userfaultfd is sent over `sock` (cptrst's end of
 * a socketpair, the other end the tracker's fd 3) and left in flight there, held for as long as the
 * tracker lives; then the tracker is armed. One not armed ends with the checkpoint, and on its own
 * (end of file on its stdin) if cptrst dies first.
 */
interface Spare {
  ref: TrackerRef;
  /** The start time of the process it is for. */
  start: bigint;
  sock: number;
  go: number;
}
const SPARES = new WeakMap<CheckpointContext, Map<number, Spare>>();

/**
 * Before the freeze: starts a tracker for each of `procs` (pid and start time), and waits until
 * each runs its shell. Those not taken while frozen (takeSpare) are ended when the checkpoint ends.
 */
export function startSpares(ctx: CheckpointContext, procs: ReadonlyArray<{ pid: number; start: bigint }>): void {
  const spares = SPARES.get(ctx) ?? new Map<number, Spare>();
  if (!SPARES.has(ctx)) {
    SPARES.set(ctx, spares);
    ctx.atEnd(() => {
      for (const s of spares.values()) endSpare(s);
      spares.clear();
    });
  }
  const links = new Map<number, string>();
  for (const p of procs) {
    if (spares.has(p.pid) || hasOwnUserfaultfd(p.pid)) continue;
    const pair = Buffer.alloc(8);
    const r = linux.rawSyscall(linux.syscallNumber('socketpair'), linux.AF_UNIX, linux.SOCK.STREAM | linux.SOCK.CLOEXEC, 0, pair);
    if (r < 0n) {
      ctx.log.debug(`pid ${p.pid}: no tracker started before the freeze (socketpair: ${linux.errnoName(Number(-r))})`);
      continue;
    }
    const [sock, theirs] = [pair.readInt32LE(0), pair.readInt32LE(4)];
    try {
      const { ref, go } = startTracker(p.pid, p.start, theirs);
      spares.set(p.pid, { ref, start: p.start, sock, go });
      links.set(p.pid, `socket:[${fs.fstatSync(theirs).ino}]`);
    } catch (e) {
      fs.closeSync(sock);
      ctx.log.debug(`pid ${p.pid}: no tracker started before the freeze (${(e as Error).message})`);
    } finally {
      fs.closeSync(theirs);
    }
  }
  // Their fds are their own only once they run the shell (before that, each is a copy of cptrst).
  for (const [pid, s] of spares) {
    const link = links.get(pid);
    if (link !== undefined && !waitReady(s.ref, pid, s.start, link)) {
      endSpare(s);
      spares.delete(pid);
    }
  }
}

/** The tracker started before the freeze for process `pid` (started at `start`), now the caller's to arm or end. */
function takeSpare(ctx: CheckpointContext, pid: number, start: bigint): Spare | undefined {
  const spares = SPARES.get(ctx);
  const s = spares?.get(pid);
  if (!s) return undefined;
  spares!.delete(pid);
  if (s.start === start) return s;
  endSpare(s);
  return undefined;
}

/** Ends a tracker that was never armed (it holds no userfaultfd). */
function endSpare(s: Spare): void {
  fs.closeSync(s.sock);
  fs.closeSync(s.go);
  stopTracker(s.ref);
  dropFds(s.ref);
}

/**
 * A new userfaultfd of the process, for cptrst (a tracker's, a pre-copy's): made inside it (an
 * injected userfaultfd(2)), copied out with pidfd_getfd and closed inside at once, so that its fd
 * table is as it was; its API set to asynchronous write protection.
 */
export function userfaultfdOf(task: CheckpointTask): number {
  const t = task.tracee;
  const r = t.syscall(SYS.userfaultfd, [O.CLOEXEC | O.NONBLOCK | UFFD.USER_MODE_ONLY]);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `userfaultfd() inside the process failed (${linux.errnoName(Number(-r))})`, { pid: task.pid });
  let fd: number;
  try {
    fd = linux.fdCopyOf(task.pid, Number(r));
  } finally {
    t.syscall(SYS.close, [r]); // its fd table as it was
  }
  const api = Buffer.alloc(24);
  api.writeBigUInt64LE(BigInt(UFFD.API), 0);
  api.writeBigUInt64LE(FEATURES, 8);
  const a = Number(linux.rawSyscall(SYS.ioctl, fd, UFFD.IOC_API, api));
  if (a < 0) {
    fs.closeSync(fd);
    throw new CptError(linux.errnoName(-a), 'this kernel has no asynchronous userfaultfd write protection (UFFD_FEATURE_WP_ASYNC)', { pid: task.pid });
  }
  return fd;
}

/**
 * While frozen: a new tracker of the process, not armed yet (`arm`: once its areas are registered).
 * The spare started before the freeze gets the userfaultfd in flight in its socket; without one (or
 * if the socket refuses it, e.g. too many fds in flight for the user), a tracker is started now
 * with the userfaultfd as its fd 3.
 */
function newTracker(ctx: CheckpointContext, task: CheckpointTask, start: bigint, spare: Spare | undefined): { ref: TrackerRef; arm: () => void } {
  let uffd: number;
  try {
    if (hasOwnUserfaultfd(task.pid)) throw new CptError('EBUSY', 'the process has a userfaultfd of its own');
    uffd = ctx.timed('tracking: userfaultfd', () => userfaultfdOf(task));
  } catch (e) {
    if (spare) endSpare(spare);
    throw e;
  }
  try {
    let held: { ref: TrackerRef; go: number } | undefined;
    if (spare) {
      try {
        linux.sendRights(spare.sock, [uffd]);
        fs.closeSync(spare.sock);
        held = spare;
      } catch (e) {
        ctx.log.debug(`pid ${task.pid}: the tracker started before the freeze cannot hold the userfaultfd (${(e as Error).message})`);
        endSpare(spare);
      }
    }
    if (!held) {
      held = ctx.timed('tracking: start tracker', () => startTracker(task.pid, start, uffd));
      if (!waitReady(held.ref, task.pid, start, UFFD_LINK)) {
        fs.closeSync(held.go);
        stopTracker(held.ref);
        dropFds(held.ref);
        throw new CptError('ETIMEDOUT', 'the tracker did not start');
      }
    }
    const { ref, go } = held;
    let unarmed = true;
    // cptrst's copy serves this checkpoint's registrations (registerAreas), closed at its end.
    OWN_FDS.set(keyOf(ref), { ...OWN_FDS.get(keyOf(ref)), uffd });
    ctx.atEnd(() => {
      if (unarmed) {
        unarmed = false;
        fs.closeSync(go); // end of file: it ends without tracking
      }
      dropFds(ref);
    });
    ctx.log.debug(`pid ${task.pid}: write tracking held by tracker ${ref.pid}`);
    const armNow = (): void => {
      if (!unarmed) return;
      unarmed = false;
      arm(go);
    };
    return { ref, arm: armNow };
  } catch (e) {
    fs.closeSync(uffd);
    throw e;
  }
}

/**
 * Registers `ranges` (areas not registered yet) for write protection with the tracker's
 * userfaultfd. A failure (the process exec'd: the fd tracks its old memory) is thrown.
 */
export function registerAreas(t: TrackerRef, ranges: Array<{ start: bigint; end: bigint }>): void {
  if (!ranges.length) return;
  withTrackerFd(t, 'uffd', (fd) => {
    for (const r of ranges) {
      let e = linux.uffdRegister(fd, r.start, r.end, UFFD.REGISTER_MODE_WP);
      // An old tracker's userfaultfd may still be open for a moment (its sleep holds a copy for up to 2 s).
      for (let i = 0; i < 80 && e === -linux.ERRNO.EBUSY; i++) {
        linux.sleepMs(50);
        e = linux.uffdRegister(fd, r.start, r.end, UFFD.REGISTER_MODE_WP);
      }
      if (e < 0) throw new CptError(linux.errnoName(-e), `UFFDIO_REGISTER of ${r.start.toString(16)}-${r.end.toString(16)} failed (${linux.errnoName(-e)})`);
    }
  });
}

/**
 * The pages of the registered area [start, end) written since the tracking was armed; null when
 * the kernel cannot say (every page then counts as written). PM_SCAN_CHECK_WPASYNC makes an area
 * that is not registered an error rather than an empty answer.
 */
export function writtenRegions(pagemapFd: number, start: bigint, end: bigint): Array<{ start: bigint; end: bigint }> | null {
  try {
    return linux.pagemapScan(pagemapFd, start, end, 0n, PAGE_IS.WRITTEN, { mask: PAGE_IS.WRITTEN, flags: PM_SCAN.CHECK_WPASYNC });
  } catch {
    return null;
  }
}

/**
 * Write-protects every registered page of the process (pages written from here on are the next
 * image's): after record(), while the process is frozen.
 */
export function protect(pid: number, userTop: bigint): void {
  const pm = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    linux.pagemapScan(pm, 0n, userTop, 0n, PAGE_IS.WRITTEN, { mask: PAGE_IS.WRITTEN, flags: PM_SCAN.WP_MATCHING });
  } finally {
    fs.closeSync(pm);
  }
}

/**
 * The areas among `areas` that a live tracker of the process holds registered: a UFFDIO_REGISTER
 * for write protection through the tracker's userfaultfd changes nothing on an area registered with
 * it already, and fails with EBUSY on one registered with another userfaultfd (mm/src/uffd-areas.ts).
 */
export function trackerRegistered(pid: number, start: bigint, areas: ReadonlyArray<{ start: bigint; end: bigint }>, known?: TrackerRef[]): Set<bigint> {
  const mine = new Set<bigint>();
  // Trackers found before the freeze (a look at every process's command line) are only checked again.
  for (const t of known ? known.filter((k) => isTrackerOf(k, pid, start)) : trackersOf(pid, start)) {
    let fd: number | undefined;
    try {
      fd = ownFd(t, 'uffd') ?? trackerFd(t, 'uffd');
    } catch {
      continue; // ended meanwhile: its registrations went with it
    }
    try {
      for (const a of areas) if (!mine.has(a.start) && linux.uffdRegister(fd, a.start, a.end, UFFD.REGISTER_MODE_WP) === 0) mine.add(a.start);
    } finally {
      if (fd !== ownFd(t, 'uffd')) fs.closeSync(fd);
    }
  }
  return mine;
}

/** Whether `pid` runs as a tracker (of any process): its userfaultfd can only reach the memory of the process it tracks. */
export function isTracker(pid: number): boolean {
  return linux.cmdlineIfAlive(pid).indexOf(MARKER) > 0;
}
