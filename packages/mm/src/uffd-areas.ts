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
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, linux, refuse } from '@cptrst/core';
import { VmaEntry, describeVma } from './vma';
import { TrackerRef, hasOwnUserfaultfd, isTracker, trackerRegistered, trackersOf } from './tracking';

const UFFD_MODES: Readonly<Record<string, string>> = { um: 'missing pages', uw: 'write protection', ui: 'minor faults' };

/** Whether the area carries a userfaultfd registration. */
function uffdRegistered(v: VmaEntry): boolean {
  return v.vmFlags.some((f) => f in UFFD_MODES);
}

/** The trackers of each process found before the freeze (noteTrackers), by pid. */
const KNOWN_TRACKERS = new WeakMap<CheckpointContext, Map<number, TrackerRef[]>>();

/** Before the freeze: the live trackers of `pid`, kept for trackerAreas (the frozen window only checks them again). */
export function noteTrackers(ctx: CheckpointContext, pid: number): void {
  try {
    const known = KNOWN_TRACKERS.get(ctx) ?? new Map<number, TrackerRef[]>();
    KNOWN_TRACKERS.set(ctx, known);
    known.set(pid, trackersOf(pid, BigInt(linux.readStat(pid).startTime)));
  } catch {
    /* gone: the freeze says so */
  }
}

/**
 * Refuses the areas of `vmas` registered with a userfaultfd other than a tracker's of cptrst's;
 * the tracker's lose their "uw" (it is not the process's state) and are returned, by start.
 * Where what a tracker killed alone left may still hold its userfaultfd (awaitLeftovers), that is
 * waited for and the areas are read again with `reread` (into `vmas`): the registration has ended.
 */
export function trackerAreas(ctx: CheckpointContext, task: CheckpointTask, vmas: VmaEntry[], reread?: () => VmaEntry[]): Set<bigint> {
  const reg = vmas.filter(uffdRegistered);
  if (!reg.length) return new Set();
  const own = hasOwnUserfaultfd(task.pid);
  // A tracker registers private areas for write protection only, and only in a process that holds no userfaultfd itself.
  const candidates = own ? [] : reg.filter((v) => !v.shared && v.vmFlags.every((f) => !(f in UFFD_MODES) || f === 'uw'));
  const tracked = candidates.length ? trackerRegistered(task.pid, BigInt(linux.readStat(task.pid).startTime), candidates, KNOWN_TRACKERS.get(ctx)?.get(task.pid)) : new Set<bigint>();
  if (reread && reg.some((v) => !tracked.has(v.start)) && awaitLeftovers()) {
    // What a tracker killed alone left has ended, and its registrations with it: the areas again.
    vmas.splice(0, vmas.length, ...reread());
    return trackerAreas(ctx, task, vmas);
  }
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
/** A tracker's pause (tracking.ts): `sleep 2`, which holds copies of the tracker's fds. */
const TRACKER_SLEEP = 'sleep\u00002\u0000';

/** Every fd of the system that links to a userfaultfd: [holder pid, fd]. */
function* userfaultfds(): Generator<[number, string]> {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${d}/fd`);
    } catch {
      continue; // gone, or a kernel thread
    }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${d}/fd/${fd}`) === UFFD_LINK) yield [Number(d), fd];
      } catch {
        /* closed meanwhile */
      }
    }
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  } catch {
    return '';
  }
}

/**
 * A tracker killed alone (its process group was not) leaves its `sleep` holding the userfaultfd,
 * and with it the registrations, for up to 2 s. Where a `sleep 2` holds a userfaultfd, waits (at
 * most 3 s) until every such one has ended and says so; false at once where none does. Waiting
 * only delays: whatever is still registered afterwards is asked about again, and refused.
 */
function awaitLeftovers(): boolean {
  const sleeps = [...userfaultfds()].filter(([pid]) => cmdline(pid) === TRACKER_SLEEP).map(([pid]) => pid);
  if (!sleeps.length) return false;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 300 && sleeps.some((pid) => cmdline(pid) === TRACKER_SLEEP); i++) Atomics.wait(cell, 0, 0, 10);
  return true;
}

/**
 * A process other than `pid`, cptrst and cptrst's trackers that holds a userfaultfd (which it may
 * use to register areas of `pid`, if the fd was made there), named; undefined if none. Read before
 * the freeze (hints.ts): it costs a look at every fd of the system, which the frozen window does
 * not pay.
 */
export function userfaultfdElsewhere(pid: number): string | undefined {
  for (const [holder, fd] of userfaultfds()) {
    if (holder !== pid && holder !== process.pid && !isTracker(holder) && cmdline(holder) !== TRACKER_SLEEP) return `process ${holder} holds a userfaultfd (fd ${fd})`;
  }
  return undefined;
}
