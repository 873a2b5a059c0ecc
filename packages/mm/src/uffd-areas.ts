/**
 * Memory areas registered with a userfaultfd (VmFlags "um" missing pages, "uw" write protection,
 * "ui" minor faults). A registration belongs to whoever holds the userfaultfd: the monitor that is
 * told of the faults (or events) and resolves them, maybe another process that got the fd over
 * SCM_RIGHTS or by pidfd_getfd, maybe a socket queue holding it in flight. A restart cannot make
 * the registration again for that holder: the restored process would silently lose it (and the
 * monitor would no longer see its faults). So every such area is refused, naming the process,
 * the area and why, except write protection held by a live tracker of cptrst's own (tracking.ts),
 * which is cptrst's state, not the process's: its flag is dropped and the area is not recorded as
 * registered. Whether an area is the tracker's is asked of the kernel (a UFFDIO_REGISTER through
 * the tracker's userfaultfd is a no-op on its own areas, EBUSY on another's), not guessed from the
 * process holding no userfaultfd itself.
 */
import { CheckpointContext, CheckpointTask, linux, refuse } from '@cptrst/core';
import { VmaEntry, describeVma } from './vma';
import { TrackerRef, hasOwnUserfaultfd, isTracker, trackerRegistered, trackersOfAll } from './tracking';
import { preCopyOf } from './precopy';

const UFFD_MODES: Readonly<Record<string, string>> = { um: 'missing pages', uw: 'write protection', ui: 'minor faults' };

/** Whether the area carries a userfaultfd registration. */
function uffdRegistered(v: VmaEntry): boolean {
  return v.vmFlags.some((f) => f in UFFD_MODES);
}

/** The trackers of each process found before the freeze (noteTrackers), by pid. */
const KNOWN_TRACKERS = new WeakMap<CheckpointContext, Map<number, TrackerRef[]>>();

/**
 * Before the freeze: the live trackers of each of `pids` (a tree), from one look at every process,
 * kept for trackerAreas and for a new tracking (the frozen window only checks them again).
 */
export function noteTrackers(ctx: CheckpointContext, pids: number | readonly number[]): void {
  const procs: Array<{ pid: number; start: bigint }> = [];
  for (const pid of typeof pids === 'number' ? [pids] : pids) {
    try {
      procs.push({ pid, start: BigInt(linux.readStat(pid).startTime) });
    } catch {
      /* gone: the freeze says so */
    }
  }
  const known = KNOWN_TRACKERS.get(ctx) ?? new Map<number, TrackerRef[]>();
  KNOWN_TRACKERS.set(ctx, known);
  for (const [pid, ts] of trackersOfAll(procs)) known.set(pid, ts);
}

/** The trackers of `pid` found before the freeze, or undefined if it was not looked at then. */
export function knownTrackers(ctx: CheckpointContext, pid: number): TrackerRef[] | undefined {
  return KNOWN_TRACKERS.get(ctx)?.get(pid);
}

/**
 * Refuses the areas of `vmas` registered with a userfaultfd other than a tracker's of cptrst's;
 * the tracker's lose their "uw" (it is not the process's state) and are returned, by start.
 */
export function trackerAreas(ctx: CheckpointContext, task: CheckpointTask, vmas: VmaEntry[]): Set<bigint> {
  const reg = vmas.filter(uffdRegistered);
  if (!reg.length) return new Set();
  // The --pre-copy's own registrations (precopy.ts), whatever the process holds: cptrst's, not the process's.
  const pre = preCopyOf(ctx, task);
  const precopied = pre ? reg.filter((v) => !v.shared && v.vmFlags.every((f) => !(f in UFFD_MODES) || f === 'uw') && pre.isMine(v)) : [];
  const own = hasOwnUserfaultfd(task.pid);
  // A tracker registers private areas for write protection only, and only in a process that holds no userfaultfd itself.
  const candidates = own ? [] : reg.filter((v) => !v.shared && v.vmFlags.every((f) => !(f in UFFD_MODES) || f === 'uw'));
  const tracked = candidates.length ? trackerRegistered(task.pid, BigInt(linux.readStat(task.pid).startTime), candidates, KNOWN_TRACKERS.get(ctx)?.get(task.pid)) : new Set<bigint>();
  for (const v of precopied) tracked.add(v.start);
  for (const v of reg) {
    if (tracked.has(v.start)) continue;
    const modes = v.vmFlags.filter((f) => f in UFFD_MODES);
    const holder = own ? 'the process holds a userfaultfd of its own' : 'the userfaultfd is held outside the process (by another process, or in flight in a socket queue)';
    refuse(task.pid, describeVma(v), `the area is registered with a userfaultfd for ${modes.map((f) => UFFD_MODES[f]).join(' and ')} (VmFlags ${modes.join(' ')}); ${holder}: a restored process would lose the registration, and its monitor the faults`);
  }
  for (const v of reg) (v as { vmFlags: string[] }).vmFlags = v.vmFlags.filter((f) => f !== 'uw');
  return tracked;
}

const UFFD_LINK = 'anon_inode:[userfaultfd]';

/** Whether `pid` is a tracker's pause (tracking.ts): `sleep 2`, which held copies of the tracker's fds before cptrst closed them for it. */
function isTrackerSleep(pid: number): boolean {
  const argv = linux.cmdlineIfAlive(pid);
  return argv.length === 2 && argv[0] === 'sleep' && argv[1] === '2';
}

/** The holders of a userfaultfd on the system, from one walk of every process's fds before the freeze. */
const UFFD_HOLDERS = new WeakMap<CheckpointContext, Array<{ pid: number; fd: number }>>();

function userfaultfdHolders(ctx: CheckpointContext): Array<{ pid: number; fd: number }> {
  let found = UFFD_HOLDERS.get(ctx);
  if (!found) {
    found = [];
    for (const pid of linux.allPids()) for (const { fd, link } of linux.fdLinks(pid)) if (link === UFFD_LINK) found.push({ pid, fd });
    UFFD_HOLDERS.set(ctx, found);
  }
  return found;
}

/**
 * Before the freeze, once per checkpoint: a tracker of an older cptrst killed alone (its process
 * group was not) leaves its `sleep` holding the userfaultfd, and with it the registrations, for up to 2 s. Where
 * a `sleep 2` holds one, waits (at most 3 s) until every such one has ended, so that the frozen
 * window finds the registrations gone instead of refusing them. Waiting only delays: whatever is
 * still registered at the freeze is refused.
 */
export function awaitTrackerLeftovers(ctx: CheckpointContext): void {
  if (UFFD_HOLDERS.has(ctx)) return;
  // A live tracker's own sleep is no leftover (waiting for it cost up to 2 s of every checkpoint).
  const sleeps = userfaultfdHolders(ctx).filter((h) => isTrackerSleep(h.pid) && !isTracker(linux.ppidIfAlive(h.pid))).map((h) => h.pid);
  for (let i = 0; i < 300 && sleeps.some(isTrackerSleep); i++) linux.sleepMs(10);
}

/**
 * A process other than `pid`, cptrst and cptrst's trackers that holds a userfaultfd (which it may
 * use to register areas of `pid`, if the fd was made there), named; undefined if none. From the
 * walk before the freeze (awaitTrackerLeftovers): it costs a look at every fd of the system,
 * which the frozen window does not pay.
 */
export function userfaultfdElsewhere(ctx: CheckpointContext, pid: number): string | undefined {
  for (const { pid: holder, fd } of userfaultfdHolders(ctx)) {
    if (holder !== pid && holder !== process.pid && !isTracker(holder) && !isTrackerSleep(holder)) return `process ${holder} holds a userfaultfd (fd ${fd})`;
  }
  return undefined;
}
