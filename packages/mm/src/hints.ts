/**
 * The process's areas read before the freeze, to keep the kernel's page walk of /proc/PID/smaps
 * (about 17 ms per touched GiB) out of the frozen window. Only for a checkpoint that lets the
 * process run from a copy-on-write snapshot into an image file it can cut back
 * (ctx.memoryHints). The process runs while smaps is read, so what it says is a hint:
 *
 * - While frozen, /proc/PID/maps (no page walk) must show the same areas: ranges, protection,
 *   sharing, offset, file and name. A process holding a userfaultfd, or locked memory (VmLck of
 *   /proc/PID/status, which counts every locked area, mlockall's MCL_FUTURE included), or hints
 *   with locked or userfaultfd areas, take the old way: smaps read while frozen. So does any
 *   difference, and so does a process whenever another process (not cptrst's trackers) held a
 *   userfaultfd when the hints were read: it may register an area in between, which the maps do not
 *   show, and the snapshot's fork would post it a fork event (UFFD_FEATURE_EVENT_FORK) before any
 *   check could see the registration (smaps read while frozen shows it, and it is refused).
 * - The areas' VmFlags, protection keys, and whether a private anonymous area is wholly touched
 *   (its pages then stored without a page walk: pages.ts wholeAreaRuns) come from the hints; the
 *   other areas' pages are found by a page walk of those areas only, while frozen, as before.
 * - Once the process runs again, the snapshot's smaps, exact at the instant of the fork (fork keeps
 *   every VmFlag but the lock and userfaultfd ones, and the pages), must say the same: each area
 *   the same, with the same VmFlags and key, MADV_DONTFORK areas absent from it, wholly touched
 *   areas still wholly touched. The process's own smaps must then show no userfaultfd area
 *   (a registration made after the hints through a userfaultfd the process no longer holds lasts
 *   until that userfaultfd is closed). Where the snapshot could not be made, the process's own
 *   smaps, read while frozen, stands in for it.
 * - Anything else: ctx.staleHints, and the checkpoint is taken again with smaps read while frozen
 *   (the image written so far is cut back; the process ran on as before).
 */
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, CptError, MemorySnapshot, StateKey, linux } from '@cptrst/core';
import { VmaEntry, VmaKindHandler, describeVma } from './vma';
import { pagemapRuns, scannedRuns, snapshotHolds, wholeAreaRuns } from './pages';
import { hasOwnUserfaultfd } from './tracking';
import { userfaultfdElsewhere } from './uffd-areas';
import { holdSnapshot } from './snapshot-uses';

/** VmFlags fork does not keep (mlock's, userfaultfd's): hints with any of them are not used. */
const NOT_FORKED = new Set(['lo', 'lf', 'um', 'uw', 'ui']);
const UFFD_FLAGS = ['um', 'uw', 'ui'];

interface PreRead {
  vmas: VmaEntry[];
  ownUffd: boolean;
  /** Another process holding a userfaultfd (uffd-areas.ts), named. */
  uffdElsewhere?: string;
}
const PRE_READ = new WeakMap<CheckpointContext, Map<number, PreRead>>();

/** What the hints decided for a task, verified later. */
interface Hinted {
  vmas: VmaEntry[];
  /** Areas whose pages were all stored because the hints said every one is touched. */
  whole: Set<bigint>;
}
const HINTED = new StateKey<Hinted>('mm.hinted');

/**
 * Reads the hints of `pid` (before the freeze). Never fails: without hints, smaps is read while
 * frozen. `ours`: areas whose write protection is cptrst's own (a pre-copy's, read again at its
 * end: precopy.ts), shown without it.
 */
export function preRead(ctx: CheckpointContext, pid: number, ours?: (v: VmaEntry) => boolean): void {
  if (!ctx.memoryHints) return;
  try {
    if (linux.listChildren(pid).length) return; // a tree: hints are for one process (checkpoint.ts turns them off)
    const vmas = linux.readSmaps(pid).filter((v) => v.path !== '[vsyscall]');
    if (ours) for (const v of vmas) if (v.vmFlags.includes('uw') && ours(v)) v.vmFlags = v.vmFlags.filter((f) => f !== 'uw');
    const map = PRE_READ.get(ctx) ?? new Map<number, PreRead>();
    PRE_READ.set(ctx, map);
    map.set(pid, { vmas, ownUffd: hasOwnUserfaultfd(pid), uffdElsewhere: userfaultfdElsewhere(ctx, pid) });
  } catch (e) {
    ctx.log.debug(`pid ${pid}: no hints (${(e as Error).message})`);
  }
}

/** Whether two entries are the same area of the same thing (what maps shows). */
function sameArea(a: linux.MapEntry, b: linux.MapEntry): boolean {
  return a.start === b.start && a.end === b.end && a.prot.read === b.prot.read && a.prot.write === b.prot.write && a.prot.exec === b.prot.exec
    && a.shared === b.shared && a.offset === b.offset && a.major === b.major && a.minor === b.minor && a.inode === b.inode && a.path === b.path
    && a.deleted === b.deleted;
}

/**
 * VmFlags compared: all but the kernel's own bookkeeping, which nothing restores and the image
 * need not match: "ac" (an anon_vma, attached at an area's first touch) and "sd" (soft-dirty).
 */
const UNCOMPARED = new Set(['ac', 'sd']);
const flagsOf = (v: VmaEntry): string => v.vmFlags.filter((f) => !UNCOMPARED.has(f)).sort().join(' ');

/**
 * The task's areas (less `reserved`, cptrst's scratch area) from the hints, when the frozen task's
 * maps agree with them; undefined (and why, in the debug log) when smaps must be read now.
 */
export function hintedVmas(ctx: CheckpointContext, task: CheckpointTask, reserved: ReadonlyArray<{ start: bigint; end: bigint }>): VmaEntry[] | undefined {
  if (!ctx.memoryHints) return undefined;
  const pre = PRE_READ.get(ctx)?.get(task.pid);
  const why = ((): string | undefined => {
    if (!pre) return 'no hints';
    const odd = pre.vmas.find((v) => v.vmFlags.some((f) => NOT_FORKED.has(f)));
    if (odd) return `${describeVma(odd)} is locked or registered with a userfaultfd (VmFlags ${odd.vmFlags.join(' ')})`;
    if (pre.ownUffd || hasOwnUserfaultfd(task.pid)) return 'the process holds a userfaultfd';
    // It may register an area of the process after the hints were read, which neither the maps nor
    // the snapshot show (fork drops registrations), and the snapshot's fork would post it a fork
    // event (UFFD_FEATURE_EVENT_FORK) and wait until it is read.
    if (pre.uffdElsewhere) return `${pre.uffdElsewhere}: it may have registered an area since the hints were read`;
    const locked = linux.readStatus(task.pid).vm.VmLck;
    if (locked !== 0) return `the process has locked memory (VmLck ${locked} kB)`;
    const now = linux.readMaps(task.pid).filter((v) => v.path !== '[vsyscall]' && !reserved.some((r) => r.start === v.start && r.end === v.end));
    if (now.length !== pre.vmas.length) return `the process has ${now.length} areas, ${pre.vmas.length} before the freeze`;
    const i = now.findIndex((v, k) => !sameArea(v, pre.vmas[k]));
    if (i >= 0) return `${describeVma(now[i])} differs from ${describeVma(pre.vmas[i])} before the freeze`;
    return undefined;
  })();
  if (why !== undefined) {
    ctx.log.debug(`pid ${task.pid}: areas read while frozen: ${why}`);
    return undefined;
  }
  ctx.log.debug(`pid ${task.pid}: areas from the hints read before the freeze (maps unchanged)`);
  const hinted: Hinted = { vmas: pre!.vmas, whole: new Set() };
  task.state.set(HINTED, hinted);
  return pre!.vmas;
}

/** The hints are not used after all (a refusal on their word): smaps is read now, while frozen. */
export function dropHints(ctx: CheckpointContext, task: CheckpointTask, why: string): void {
  task.state.delete(HINTED);
  ctx.log.debug(`pid ${task.pid}: areas read while frozen: ${why}`);
}

/** Whether the task's areas came from hints (then storedRuns must not trust their page counts). */
export function isHinted(task: CheckpointTask): boolean {
  return task.state.get(HINTED) !== undefined;
}

/**
 * The runs of an area's stored pages when its entry is a hint: all its pages where the hints say
 * each is touched and the snapshot holds them (verified later), else from a walk of its page
 * table now (never the hints' page counts: the process may have touched pages since).
 */
export function hintedRuns(ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, kind: VmaKindHandler, snap?: MemorySnapshot): Array<[number, number]> {
  if (snap && snapshotHolds(v)) {
    const whole = wholeAreaRuns(v, kind);
    if (whole) {
      task.state.get(HINTED)!.whole.add(v.start);
      return whole;
    }
  }
  return scannedRuns(ctx, task, v, kind) ?? pagemapRuns(task, v, kind);
}

/** The first way in which `exact` (smaps of the instant) differs from the hints; undefined if none. */
function difference(hinted: Hinted, exact: VmaEntry[], ofSnapshot: boolean): string | undefined {
  const byStart = new Map(exact.map((v) => [v.start, v]));
  for (const h of hinted.vmas) {
    const e = byStart.get(h.start);
    const what = describeVma(h);
    if (ofSnapshot && h.vmFlags.includes('dc')) {
      // MADV_DONTFORK: absent from the copy (and nothing else there).
      if (exact.some((x) => x.start < h.end && h.start < x.end)) return `${what}: an area of the snapshot where MADV_DONTFORK said none`;
      continue;
    }
    if (!e || !sameArea(e, h)) return `${what}: ${e ? describeVma(e) : 'no such area'} at the instant of the checkpoint`;
    if (flagsOf(e) !== flagsOf(h)) return `${what}: VmFlags ${e.vmFlags.join(' ')} at the instant of the checkpoint, ${h.vmFlags.join(' ')} before`;
    if (e.fields.ProtectionKey !== h.fields.ProtectionKey) return `${what}: protection key ${e.fields.ProtectionKey} at the instant of the checkpoint, ${h.fields.ProtectionKey} before`;
    if (hinted.whole.has(h.start) && e.anonymous + e.swap !== e.size) return `${what}: not every page touched at the instant of the checkpoint`;
  }
  return undefined;
}

function stale(ctx: CheckpointContext, task: CheckpointTask, why: string): never {
  ctx.staleHints = `hints about the memory areas proved stale (${why})`;
  throw new CptError('ESTALE', ctx.staleHints, { pid: task.pid, object: 'mm' });
}

/**
 * Verifies the hints once the task runs again, against its snapshot's smaps (`snap`'s; read in
 * libuv's pool while the pages are written), or now against the frozen task's own (no snapshot).
 * Throws (ctx.staleHints) where they differ.
 */
export function verifyHints(ctx: CheckpointContext, task: CheckpointTask, snap?: MemorySnapshot, preCopied = false): void {
  const hinted = task.state.get(HINTED);
  if (!hinted) return;
  if (preCopied) {
    // A pre-copy (precopy.ts) has no snapshot: the process's own smaps once it runs again, after
    // the pre-copy's registrations ended (its afterRelease came first). Not an exact instant: a
    // VmFlag changed after the hints and changed back before this read is not seen.
    ctx.afterRelease(async () => {
      let own: VmaEntry[];
      try {
        own = await linux.readSmapsInBackground(task.pid);
      } catch (e) {
        if (fs.existsSync(`/proc/${task.pid}`)) throw e;
        return; // exited: its image stands as taken
      }
      const why = difference(hinted, own, false);
      if (why) stale(ctx, task, why);
      const reg = own.find((v) => v.vmFlags.some((f) => UFFD_FLAGS.includes(f)) && hinted.vmas.some((h) => h.start < v.end && v.start < h.end));
      if (reg) stale(ctx, task, `${describeVma(reg)} is registered with a userfaultfd`);
    });
    return;
  }
  if (snap === undefined) {
    const why = ctx.timed('verify hints', () => difference(hinted, linux.readSmaps(task.pid), false));
    if (why) stale(ctx, task, why);
    return;
  }
  // The snapshot is kept until its smaps are read (snapshot-uses.ts).
  const done = holdSnapshot(snap);
  ctx.afterRelease(async () => {
    // Both reads start now; the process's own may fail only because it has exited since.
    const own = linux.readSmapsInBackground(task.pid).catch((e: unknown) => {
      if (fs.existsSync(`/proc/${task.pid}`)) throw e;
      return [] as VmaEntry[]; // exited: its image stands as taken
    });
    own.catch(() => undefined); // awaited below, after the snapshot's
    let fromSnapshot: VmaEntry[];
    try {
      fromSnapshot = await linux.readSmapsInBackground(snap.pid);
    } finally {
      done();
    }
    const why = difference(hinted, fromSnapshot, true);
    if (why) stale(ctx, task, why);
    // What the snapshot cannot show: a userfaultfd registration (fork drops it).
    const reg = (await own).find((v) => v.vmFlags.some((f) => UFFD_FLAGS.includes(f)) && hinted.vmas.some((h) => h.start < v.end && v.start < h.end));
    if (reg) stale(ctx, task, `${describeVma(reg)} is registered with a userfaultfd`);
  });
}
