/**
 * The address space as a whole. The MM object carries the mm
 * fields (code, data, brk, stack, arg and env ranges, auxv, exe), the layout of every area and
 * the mm-wide settings (THP disabled, KSM merge-any, membarrier registrations, mlockall's
 * MCL_FUTURE); VMA objects and their PAGES follow. Memory-deny-write-execute is refused: the
 * injected calls need a writable and executable scratch area.
 *
 * Checkpoint: `check` does every refusal (each area's kind and flags, the executable, the
 * mm-wide settings) and prepares every VMA object, before the head is written; `dump` only
 * writes them out with their pages.
 *
 * Restart: the MM object clears the new process's address space around the scratch area and
 * the vDSO, moves the vDSO into place, opens the executable inside the task (as the task, same
 * file as recorded) for PR_SET_MM_MAP and sets the mm-wide settings; each VMA is then mapped and
 * filled. At finish, areas mapped writable only to be filled get their protection back, sealed
 * areas are sealed, and MCL_FUTURE comes last (it locks every later mapping).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, MemorySnapshot, ObjectType, RecordList, RestartContext, RestartTask, RestoreHandler, RestoreObject, S_IFMT,
  S_IFREG, StateKey, bytes, encodeStruct, fileTypeName, kindNamed, kindRecordWriter, linux, objectType, openRecordedFile, records, refuse,
  requireKindRecord, runCalls, sameFile, str, u32, u64, u64s,
} from '@cptrst/core';
import { archOf } from '@cptrst/core';
import { DERIVED_FLAGS, MM_LAYOUT, RestoredVma, SEAL_FLAG, VMAS_BY_TAG, VMAS_OF_RESTART, fillsLazily, VmaEntry, VmaImage, VmaKindHandler, VmaKinds, describeVma, kindOf, protOf, taskVmas, validateVma } from './vma';
import { dumpPages, pagemapOf, restorePages, snapshotHolds, storedRuns, takeSnapshot } from './pages';
import { checkGuards, dumpGuards, guardSpans, hasGuardFlag, withoutGuards } from './guard';
import { Span } from './spans';
import { abortFilePages, leaveSectionPayloads } from './file-pages';
import { VdsoPiece, moveVdso, vdsoPieces } from './vdso';
import { AnonVma, INHERITED_AREAS, SharedAnonVma } from './anon';
import { FileVma, closeOpenFile, holdOpenFile } from './file';
import { KeptArea, compareWithParent, keepCandidates, keptRanges, mmRestored } from './cow';
import { Range, complement, findFreeRange, overlaps } from './ranges';
import { IncrementalDump, closeChain, prepareIncremental, restoreIncremental } from './incremental';
import { preCopyArea, preCopyMemory, preCopyOf, preCopyPlan, preparePreCopy } from './precopy';
import { awaitTrackerLeftovers, noteTrackers, trackerAreas } from './uffd-areas';
import { markTreeShared, unmapTreeShared } from './shared-anon';
import { dropHints, hintedRuns, hintedVmas, isHinted, preRead, verifyHints } from './hints';

/** A sanity bound on an image's auxv (the kernel keeps a few dozen 16-byte entries). */
const AUXV_MAX_BYTES = 4096;
const { SYS, PR, PROT, MAP, O, MEMBARRIER_CMD: MB, MCL } = linux;
export const MM_ORDER = 200;
const EINVAL = -BigInt(linux.ERRNO.EINVAL);

/** The membarrier registrations restored, in the order they are registered again. */
const MEMBARRIER_REGISTRATIONS: ReadonlyArray<[number, string]> = [
  [MB.REGISTER_GLOBAL_EXPEDITED, 'GLOBAL_EXPEDITED'],
  [MB.REGISTER_PRIVATE_EXPEDITED, 'PRIVATE_EXPEDITED'],
  [MB.REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 'PRIVATE_EXPEDITED_SYNC_CORE'],
  [MB.REGISTER_PRIVATE_EXPEDITED_RSEQ, 'PRIVATE_EXPEDITED_RSEQ'],
];
const KNOWN_MEMBARRIER = MEMBARRIER_REGISTRATIONS.reduce((a, [bit]) => a | bit, 0);
/** PR_GET_THP_DISABLE: 0, or 1 | PR_THP_DISABLE_EXCEPT_ADVISED (2). */
const THP_VALUES = [0, 1, 3];

@objectType(ObjectType.MM, 'mm', { parents: [ObjectType.TASK] })
export class MmImage {
  @u64() startCode = 0n;
  @u64() endCode = 0n;
  @u64() startData = 0n;
  @u64() endData = 0n;
  @u64() startBrk = 0n;
  @u64() brk = 0n;
  @u64() startStack = 0n;
  @u64() argStart = 0n;
  @u64() argEnd = 0n;
  @u64() envStart = 0n;
  @u64() envEnd = 0n;
  @bytes() auxv: Buffer = Buffer.alloc(0);
  @str() exe = '';
  /** Every area's [start, end), so restart can keep clear of them before the VMAs arrive. */
  @u64s() layout: bigint[] = [];
  @records(VdsoPiece) vdso: VdsoPiece[] = [];
  /** Identity of the executable, checked when it is opened again (0: not recorded). */
  @u64({ since: 2 }) exeDev = 0n;
  @u64({ since: 2 }) exeIno = 0n;
  @u64({ since: 2 }) exeSize = 0n;
  @u64({ since: 2 }) exeMtimeNs = 0n;
  /** PR_GET_THP_DISABLE: 0, 1, or 3 (1 | PR_THP_DISABLE_EXCEPT_ADVISED). */
  @u32({ since: 2 }) thpDisable = 0;
  /** PR_GET_MEMORY_MERGE: KSM for every eligible area. */
  @u32({ since: 2 }) memoryMerge = 0;
  /** membarrier registrations: a mask of MEMBARRIER_CMD_REGISTER_* commands. */
  @u32({ since: 2 }) membarrier = 0;
  /** mlockall's lasting part: MCL_FUTURE, with MCL_ONFAULT or not (0: none). */
  @u32({ since: 2 }) mlockFuture = 0;
  /**
   * Shared anonymous memory kept from the parent: [address in the parent, length] pairs, moved
   * out of the image's way before the address space is cleared (VMA.inheritedAt).
   */
  @u64s({ since: 4 }) inherited: bigint[] = [];
  /**
   * Private anonymous areas kept copy-on-write from the parent, in place: [start, end) pairs,
   * left alone when the address space is cleared (cow.ts).
   */
  @u64s({ since: 5 }) keptPrivate: bigint[] = [];
}

/** What check prepared for dump: each area with its kind and its VMA object. */
interface Area {
  v: VmaEntry;
  kind: VmaKindHandler;
  img: VmaImage;
}
interface Prepared {
  areas: Area[];
  mm: MmImage;
  /** Private anonymous areas kept from the parent, by start (cow.ts). */
  kept: Map<bigint, KeptArea>;
  /** Areas a write tracker registered (tracking.ts), by start. */
  registered: Set<bigint>;
  /** The current break (brk(0)): /proc shows only its start. */
  brk: bigint;
}

/** What check prepared for dump (the task is frozen: dump writes the same). */
const PREPARED = new StateKey<Prepared>('mm.prepared');

/**
 * Every area's kind, VmFlags and kind-specific description (each refusal of theirs), and the
 * executable: no injected call, so it works on any process that /proc shows.
 */
export function checkAreas(ctx: CheckpointContext, task: CheckpointTask, vmas: VmaEntry[] = taskVmas(task)): { areas: Area[]; mm: MmImage } {
  // The executable first: when it is deleted, so are its mappings, and that says it better.
  const mm = new MmImage();
  const exe = linux.readExe(task.pid);
  if (exe.endsWith(' (deleted)')) refuse(task.pid, `exe ${exe}`, 'the executable has been deleted');
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(`/proc/${task.pid}/exe`, { bigint: true });
  } catch (e) {
    return refuse(task.pid, `exe ${exe}`, `the executable cannot be examined (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if ((Number(st.mode) & S_IFMT) !== S_IFREG) refuse(task.pid, `exe ${exe}`, `the executable is a ${fileTypeName(Number(st.mode))}`);
  mm.exe = exe;
  mm.exeDev = st.dev;
  mm.exeIno = st.ino;
  mm.exeSize = st.size;
  mm.exeMtimeNs = st.mtimeNs;
  const areas: Area[] = [];
  for (const v of vmas) {
    const kind = kindOf(ctx, task, v);
    checkGuards(task, v);
    const img = new VmaImage();
    Object.assign(img, { start: v.start, end: v.end, prot: protOf(v), shared: v.shared, kind: kind.kind, path: v.path, pgoff: v.inode ? v.offset : 0n, vmFlags: v.vmFlags });
    kind.describe(task, v, img);
    areas.push({ v, kind, img });
  }
  return { areas, mm };
}

/** The result of a prctl GET inside the task; EINVAL (an option this kernel lacks) reads as 0. */
function prctlValue(task: CheckpointTask, r: bigint, what: string): number {
  if (r === EINVAL) return 0;
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `${what} inside the process failed`, { pid: task.pid, object: 'mm' });
  return Number(r);
}

/**
 * The membarrier registrations of the task. GET_REGISTRATIONS (Linux 6.3) says them all; before
 * it, each private expedited command is issued inside the task: it fails with EPERM unless the
 * process registered for it. (A global expedited registration cannot be seen that way; it only
 * makes the process receive barriers, and is then lost.)
 */
function membarrierRegistrations(task: CheckpointTask, r: bigint): number {
  const t = task.tracee;
  if (r >= 0n) return Number(r);
  if (r !== EINVAL) return 0; // ENOSYS: no membarrier here, nothing registered
  let mask = 0;
  const probes: Array<[number, number]> = [
    [MB.PRIVATE_EXPEDITED, MB.REGISTER_PRIVATE_EXPEDITED],
    [MB.PRIVATE_EXPEDITED_SYNC_CORE, MB.REGISTER_PRIVATE_EXPEDITED_SYNC_CORE],
    [MB.PRIVATE_EXPEDITED_RSEQ, MB.REGISTER_PRIVATE_EXPEDITED_RSEQ],
  ];
  for (const [cmd, reg] of probes) if (t.syscall(SYS.membarrier, [cmd, 0, 0]) === 0n) mask |= reg;
  return mask;
}

/** The shared anonymous areas of the tasks checked so far in a checkpoint (parents before children), by pid. */
const SHARED_SEEN = new WeakMap<CheckpointContext, Map<number, VmaEntry[]>>();

/**
 * Shared anonymous memory that is one memory with the parent's (the same shmem inode, inherited
 * across fork) is kept from the parent at restart; one shared otherwise (with another process of
 * the tree, or a part its parent does not map) is made once for all (shared-anon.ts).
 */
function inheritSharedAnon(ctx: CheckpointContext, task: CheckpointTask, areas: Area[]): void {
  const seen = SHARED_SEEN.get(ctx) ?? new Map<number, VmaEntry[]>();
  SHARED_SEEN.set(ctx, seen);
  const mine = areas.filter((a) => a.kind instanceof SharedAnonVma);
  seen.set(task.pid, mine.map((a) => a.v));
  if (!mine.length) return;
  const ppid = linux.readStat(task.pid).ppid;
  const parents = seen.get(ppid) ?? [];
  for (const { v, img } of mine) {
    // One object made once for the processes (or areas) that share it (shared-anon.ts).
    if (markTreeShared(ctx, task, v, img)) continue;
    const len = v.end - v.start;
    const p = parents.find((e) => e.inode === v.inode && e.offset <= v.offset && v.offset + len <= e.offset + (e.end - e.start));
    if (p) {
      img.inheritedAt = p.start + (v.offset - p.offset);
      continue;
    }
    for (const [pid, theirs] of seen) {
      if (pid !== task.pid && theirs.some((e) => e.inode === v.inode)) {
        refuse(task.pid, describeVma(v), `the shared anonymous memory is one memory with process ${pid}, which is not its parent (or its parent maps another part of it); only memory shared through the parent can be restored`);
      }
    }
  }
}

/** The kinds of private memory a child may keep copy-on-write from its parent (cow.ts). */
function keepsFromParent(a: { v: VmaEntry; kind: VmaKindHandler }): boolean {
  return a.kind instanceof AnonVma || (a.kind instanceof FileVma && !a.v.shared);
}

export class MmDump implements DumpHandler {
  readonly name = 'mm';
  readonly order = MM_ORDER;

  /** An incremental checkpoint reads its parent image before the freeze; one from a snapshot, the process's areas (hints.ts). */
  prepare(ctx: CheckpointContext, pid: number): void {
    // First, so that what is read next does not show a killed tracker's registrations ending meanwhile.
    awaitTrackerLeftovers(ctx);
    if (ctx.incremental) {
      // The tree's areas are registered with their trackers, if they have some: found now, checked again while frozen.
      noteTrackers(ctx, linux.descendants(pid));
      prepareIncremental(ctx, pid);
    } else preRead(ctx, pid);
    if (ctx.preCopy) preparePreCopy(ctx, pid);
  }

  /** --pre-copy: the process's private memory copied while it runs (precopy.ts). */
  preCopy(ctx: CheckpointContext, task: CheckpointTask, resume: () => void): Promise<void> {
    return preCopyMemory(ctx, task, resume);
  }

  check(ctx: CheckpointContext, task: CheckpointTask): void {
    const t = task.tracee;
    const mdweCall = { nr: SYS.prctl, args: [PR.GET_MDWE, 0, 0, 0, 0] };
    const refuseMdwe = (r: bigint): void => {
      const mdwe = prctlValue(task, r, 'PR_GET_MDWE');
      if (mdwe) refuse(task.pid, 'mm', `memory-deny-write-execute is set (PR_SET_MDWE, flags ${mdwe}): not supported, cptrst's calls inside the process need memory that is writable and executable`);
    };
    // Before anything is mapped (alone: a batch may need the scratch area): with MDWE set, the
    // scratch area (writable and executable) cannot be. Where an earlier handler's calls mapped
    // it already, MDWE is asked in the batch below (a stop of the frozen window saved).
    const mapped = t.reservedRanges().length > 0;
    if (!mapped) refuseMdwe(t.syscall(mdweCall.nr, mdweCall.args));
    // The scratch area exists before the areas are listed (it is left out of them); a fresh
    // mapping, its VmFlags show what mlockall(MCL_FUTURE) left in the mm's default flags.
    const scratch = t.scratch();
    // The other queries inside the task, in one batch: THP, KSM, membarrier, the break.
    const [thpR, mergeR, membarrierR, brk, mdweR] = t.syscalls([
      { nr: SYS.prctl, args: [PR.GET_THP_DISABLE, 0, 0, 0, 0] },
      { nr: SYS.prctl, args: [PR.GET_MEMORY_MERGE, 0, 0, 0, 0] },
      { nr: SYS.membarrier, args: [MB.GET_REGISTRATIONS, 0, 0] },
      { nr: SYS.brk, args: [0] },
      ...(mapped ? [mdweCall] : []),
    ]);
    if (mapped) refuseMdwe(mdweR);
    const reserved = t.reservedRanges();
    // From the hints read before the freeze where the frozen task's maps agree (verified after the
    // release, hints.ts); without them the scratch area's VmFlags are known to have no lock.
    const hinted = hintedVmas(ctx, task, reserved);
    let all: VmaEntry[] = [];
    // Areas registered with a userfaultfd: refused, but for write protection by a tracker of
    // cptrst's (uffd-areas.ts), which is not the process's state and is not recorded.
    let registered = new Set<bigint>();
    const fromSmaps = (): { areas: Area[]; mm: MmImage } => {
      all = linux.readSmaps(task.pid);
      const vmas = all.filter((v) => v.path !== '[vsyscall]' && !reserved.some((r) => r.start === v.start && r.end === v.end));
      registered = ctx.timed('uffd areas', () => trackerAreas(ctx, task, vmas));
      return checkAreas(ctx, task, vmas);
    };
    let checked: { areas: Area[]; mm: MmImage };
    try {
      checked = hinted ? checkAreas(ctx, task, hinted) : fromSmaps();
    } catch (e) {
      if (!hinted || !(e instanceof CptError)) throw e;
      // Refused on the hints' word, which may be stale (a VmFlag gone since): decided again on smaps read now.
      dropHints(ctx, task, `refused on the hints (${e.message})`);
      checked = fromSmaps();
    }
    const { areas, mm } = checked;
    const mine = all.find((v) => v.start <= scratch.addr && scratch.addr < v.end);
    inheritSharedAnon(ctx, task, areas);
    const candidates = keepCandidates(ctx, task, areas.filter(keepsFromParent).map((a) => a.v));
    // Before any page of the tree is read: a read unshares the pages it pins.
    const kept = ctx.timed('pagemap', () => compareWithParent(task, candidates));
    for (const a of areas) if (kept.has(a.v.start) && keepsFromParent(a)) a.img.inheritedAt = a.v.start;

    const flags = mine?.vmFlags ?? [];
    mm.mlockFuture = flags.includes('lo') ? MCL.FUTURE | (flags.includes('lf') ? MCL.ONFAULT : 0) : 0;
    mm.thpDisable = prctlValue(task, thpR, 'PR_GET_THP_DISABLE');
    if (!THP_VALUES.includes(mm.thpDisable)) refuse(task.pid, 'mm', `PR_GET_THP_DISABLE says ${mm.thpDisable}, a setting cptrst does not know`);
    mm.memoryMerge = prctlValue(task, mergeR, 'PR_GET_MEMORY_MERGE');
    mm.membarrier = membarrierRegistrations(task, membarrierR);
    if (mm.membarrier & ~KNOWN_MEMBARRIER) refuse(task.pid, 'mm', `membarrier registrations 0x${mm.membarrier.toString(16)} include some cptrst does not know`);
    if (brk < 0n && brk > -4096n) throw new CptError(linux.errnoName(Number(-brk)), `brk(0) failed inside the process: ${linux.errnoName(Number(-brk))}`, { pid: task.pid, object: 'brk(0)' });
    task.state.set(PREPARED, { areas, mm, kept, registered, brk }); // the task is frozen: dump writes the same
  }

  async dump(ctx: CheckpointContext, task: CheckpointTask): Promise<void> {
    let prepared = task.state.get(PREPARED);
    if (!prepared) {
      this.check(ctx, task);
      prepared = task.state.get(PREPARED)!;
    }
    const { areas, mm, kept, registered } = prepared;
    const st = linux.readStat(task.pid);
    mm.startCode = st.startcode;
    mm.endCode = st.endcode;
    mm.startData = st.startData;
    mm.endData = st.endData;
    mm.startBrk = st.startBrk;
    mm.brk = prepared.brk;
    mm.startStack = st.startstack;
    mm.argStart = st.argStart;
    mm.argEnd = st.argEnd;
    mm.envStart = st.envStart;
    mm.envEnd = st.envEnd;
    mm.auxv = linux.readAuxv(task.pid);
    mm.layout = areas.flatMap((a) => [a.v.start, a.v.end]);
    // From the areas listed while frozen (or the hints the frozen maps matched), every one but
    // [vsyscall] and the scratch area: the maps need not be read again.
    mm.vdso = vdsoPieces(task.pid, areas.map((a) => a.v));
    mm.inherited = areas.filter((a) => a.img.inheritedAt !== 0n && a.kind instanceof SharedAnonVma).flatMap((a) => [a.img.inheritedAt, a.v.end - a.v.start]);
    mm.keptPrivate = areas.filter((a) => kept.has(a.v.start) && keepsFromParent(a)).flatMap((a) => [a.v.start, a.v.end]);
    ctx.write(mm, task.tag);
    const hinted = isHinted(task);
    // Guard regions of an area flagged `gu` (guard.ts), read once: the pagemap shows a guard page as swapped, never a page to store.
    const guardSpansOf = new Map<bigint, Span[]>();
    const guardsOf = (v: VmaEntry): Span[] | undefined => {
      if (!hasGuardFlag(v)) return undefined;
      if (!guardSpansOf.has(v.start)) guardSpansOf.set(v.start, guardSpans(task, v, pagemapOf(ctx, task)));
      return guardSpansOf.get(v.start);
    };
    const runsOf = (a: Area, snap: MemorySnapshot | undefined): Array<[number, number]> => {
      const own = kept.get(a.v.start);
      if (own && keepsFromParent(a)) return own.runs;
      const stored = a.kind.storesPages(a.img) ? ctx.timed('pagemap', () => (hinted ? hintedRuns(ctx, task, a.v, a.kind, snap) : storedRuns(ctx, task, a.v, a.kind))) : [];
      const guards = guardsOf(a.v);
      return guards ? withoutGuards(stored, guards) : stored;
    };
    // A pre-copy (precopy.ts) stands for the snapshot where it serves: the pages it lacks are copied
    // now, the rest come from it (the runs, chosen as always, read first). Else the snapshot is taken.
    const pre = ctx.deferPages ? preCopyOf(ctx, task) : undefined;
    const planned = new Map<bigint, Array<[number, number]>>();
    let lacking: Map<bigint, Array<[number, number]>> | undefined;
    if (pre) {
      const held = areas.filter((a) => a.kind.storesPages(a.img) && snapshotHolds(a.v));
      for (const a of held) planned.set(a.v.start, runsOf(a, undefined));
      lacking = preCopyPlan(ctx, task, pre, held.map((a) => ({ v: a.v, runs: planned.get(a.v.start)! })));
    }
    const snap = lacking ? undefined : takeSnapshot(ctx, task);
    if (hinted) verifyHints(ctx, task, snap, lacking !== undefined);
    // An incremental or tracking checkpoint (incremental.ts): private areas' pages are written by it.
    // Areas with guard regions are written whole (guard.ts): the tracking takes guard markers for its own.
    const inc = ctx.incremental ? IncrementalDump.begin(ctx, task, areas.filter((a) => IncrementalDump.tracks(a.v, a.kind) && !hasGuardFlag(a.v)).map((a) => a.v), registered, snap) : undefined;

    for (const { v, kind, img } of areas) {
      const own = kept.get(v.start);
      const runs = planned.get(v.start) ?? runsOf({ v, kind, img }, snap);
      const guards = guardsOf(v);
      if (!guards && inc && IncrementalDump.handles(v, kind, img, own !== undefined && keepsFromParent({ v, kind }))) {
        await inc.dumpArea(v, kind, img, runs);
        continue;
      }
      img.pageCount = BigInt(runs.reduce((a, r) => a + r[1], 0));
      const vmaTag = ctx.write(img, task.tag);
      kind.dumpRecords?.(ctx, task, v, img, kindRecordWriter(ctx, kind, vmaTag));
      if (guards) dumpGuards(ctx, vmaTag, guards);
      // Pages a lazy restart can fill while the process runs go to the pages section at the end,
      // smaller areas first (a stack, a heap, TLS: what a process touches first); a parent's stay
      // in place, as its children, made from it at restart, keep them copy-on-write.
      const atEnd = fillsLazily(img, kind.kind) && !hasChildrenInTree(ctx, task) ? { rank: Number(v.end - v.start) } : undefined;
      const stale = lacking?.get(v.start);
      const source = pre && stale ? preCopyArea(ctx, task, pre, stale) : snap && snapshotHolds(v) ? snap : undefined;
      await dumpPages(ctx, task, v, runs, vmaTag, source, atEnd);
    }
    inc?.finish();
  }
}

/** The pids of the tree's tasks that have a child in the tree. */
const PARENTS = new WeakMap<CheckpointContext, Set<number>>();

function hasChildrenInTree(ctx: CheckpointContext, task: CheckpointTask): boolean {
  let parents = PARENTS.get(ctx);
  if (!parents) {
    parents = new Set();
    for (const pid of ctx.treePids(task)) {
      try {
        parents.add(linux.readStat(pid).ppid);
      } catch {
        /* gone: it has no say */
      }
    }
    PARENTS.set(ctx, parents);
  }
  return parents.has(task.pid);
}

/** The objects of incremental images (incremental.ts), restored by mm. */
const INCREMENTAL_TYPES = [ObjectType.IMAGE_ID, ObjectType.IMAGE_PARENT, ObjectType.TASK_TRACKING, ObjectType.VMA_HASHES, ObjectType.VMA_PARENT_PAGES, ObjectType.VMA_PAGE_RUNS];

/** Areas mapped writable only to be filled: they get their own protection back at finish. */
const TEMP_WRITABLE = new StateKey<VmaImage[]>('mm.tempWritable');
/** The MM object, for what is set at finish (MCL_FUTURE). */
const MM_IMAGE = new StateKey<MmImage>('mm.image');
/** A VMA whose kind has records: it is mapped once they are read. */
interface PendingVma {
  tag: number;
  offset: number;
  img: VmaImage;
  kind: VmaKindHandler;
  records: RecordList;
}
const PENDING_VMA = new StateKey<PendingVma>('mm.pendingVma');

export class MmRestore implements RestoreHandler {
  readonly name = 'mm';
  readonly order = MM_ORDER;
  readonly types = [ObjectType.MM, ObjectType.VMA, ObjectType.PAGES, ...INCREMENTAL_TYPES];

  /** The records of VMA kinds come here too (restart routes the records of VmaKinds to mm). */
  readonly kinds = VmaKinds;

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void | Promise<void> {
    switch (o.type) {
      case ObjectType.MM:
        leaveSectionPayloads(ctx);
        return ctx.timed('mm', () => this.restoreMm(ctx, task, o.obj as MmImage));
      case ObjectType.VMA:
        return ctx.timed('vmas', () => {
          mapPending(ctx, task);
          this.restoreVma(ctx, task, o);
        });
      case ObjectType.PAGES:
        mapPending(ctx, task);
        return ctx.timed('pages', () => restorePages(ctx, task, o));
      case ObjectType.IMAGE_ID:
      case ObjectType.IMAGE_PARENT:
      case ObjectType.TASK_TRACKING:
      case ObjectType.VMA_HASHES:
      case ObjectType.VMA_PARENT_PAGES:
      case ObjectType.VMA_PAGE_RUNS:
        mapPending(ctx, task);
        return restoreIncremental(ctx, task, o);
      default:
        return kindRecord(task, o);
    }
  }

  /** The image's parents (incremental.ts) are no longer needed once it is read, or when the restart fails. */
  abort(ctx: RestartContext): void {
    abortFilePages(ctx);
    closeChain(ctx);
  }

  finish(ctx: RestartContext, task: RestartTask): void {
    closeChain(ctx);
    mapPending(ctx, task);
    // The last area of the layout closes the fd of its file: one still held means areas are missing.
    if (closeOpenFile(task)) throw new CptError('EBADIMG', 'the memory areas of the image end before the layout of its mm object does', { pid: task.pid, object: 'mm' });
    const t = task.tracee!;
    // Areas mapped writable only to be filled get their own protection back.
    for (const v of task.state.get(TEMP_WRITABLE) ?? []) {
      t.syscallOk(SYS.mprotect, [v.start, v.end - v.start, v.prot], `mprotect of ${describeVma(v)}`);
    }
    // Sealed areas: nothing changes them after this.
    for (const { img } of (task.state.get(VMAS_BY_TAG) ?? new Map<number, RestoredVma>()).values()) {
      if (img.vmFlags.includes(SEAL_FLAG)) t.syscallOk(SYS.mseal, [img.start, img.end - img.start, 0], `mseal of ${describeVma(img)}`);
    }
    // Every process is made: the objects made whole for the tree's shared memory are mapped where they belong.
    unmapTreeShared(task);
    const mm = task.state.get(MM_IMAGE);
    if (!mm) return;
    if (mm.mlockFuture) t.syscallOk(SYS.mlockall, [mm.mlockFuture], 'mlockall(MCL_FUTURE) (RLIMIT_MEMLOCK or CAP_IPC_LOCK is needed, as it was for the original)');
  }

  private restoreMm(ctx: RestartContext, task: RestartTask, mm: MmImage): void {
    const t = task.tracee!;
    const bad = (why: string) => new CptError('EBADIMG', why, { pid: task.pid, object: 'mm' });
    if (mm.layout.length % 2) throw bad('odd mm layout');
    if (!THP_VALUES.includes(mm.thpDisable)) throw bad(`THP setting ${mm.thpDisable}`);
    if (mm.memoryMerge > 1) throw bad(`KSM merge setting ${mm.memoryMerge}`);
    if (mm.membarrier & ~KNOWN_MEMBARRIER) throw bad(`membarrier registrations 0x${mm.membarrier.toString(16)}`);
    if (mm.mlockFuture & ~(MCL.FUTURE | MCL.ONFAULT) || (mm.mlockFuture && !(mm.mlockFuture & MCL.FUTURE))) throw bad(`mlockall flags 0x${mm.mlockFuture.toString(16)}`);
    if (mm.auxv.length > AUXV_MAX_BYTES || mm.auxv.length % 16) throw new CptError('EBADIMG', `auxv of ${mm.auxv.length} bytes`, { pid: task.pid, object: 'auxv' });
    const layout: Range[] = [];
    for (let i = 0; i < mm.layout.length; i += 2) layout.push({ start: mm.layout[i], end: mm.layout[i + 1] });
    task.state.set(VMAS_BY_TAG, new Map<number, RestoredVma>());
    task.state.set(MM_IMAGE, mm);
    task.state.set(MM_LAYOUT, layout);

    // The scratch area must not sit where the image has memory.
    let scratch = t.reservedRanges()[0];
    if (layout.some((r) => overlaps(r, scratch))) {
      const here = linux.readMaps(task.pid);
      const spot = findFreeRange(scratch.end - scratch.start, [...layout, ...here], archOf(ctx.container).userSpaceTop);
      t.syscallOk(SYS.mmap, [spot.start, spot.end - spot.start, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE, -1, 0], 'mmap of a new scratch area');
      const old = scratch;
      t.adoptScratch(spot.start);
      t.syscallOk(SYS.munmap, [old.start, old.end - old.start], 'munmap of the old scratch area');
      scratch = t.reservedRanges()[0];
    }

    // The parent's shared memory the task keeps goes out of the image's way first.
    const kept = keepInheritedAreas(ctx, task, mm, [scratch, ...layout]);
    // The parent's private memory the task keeps copy-on-write stays where it is.
    const keptPrivate = keptRanges(ctx, task, mm.keptPrivate, layout);

    // Clear everything of the helper's (or the parent's) but the scratch area, the vDSO and the kept areas.
    const keep: Range[] = [scratch, ...vdsoPieces(task.pid), ...kept, ...keptPrivate];
    runCalls(t, complement(keep, archOf(ctx.container).userSpaceTop).map((r) => ({ nr: SYS.munmap, args: [r.start, r.end - r.start], what: `munmap ${r.start.toString(16)}-${r.end.toString(16)}` })));
    moveVdso(ctx, task, mm.vdso, [scratch, ...layout, ...kept]);

    // mm fields and /proc/PID/exe. The helper's executable is unmapped now, so exe_file may change.
    // The executable is opened inside the task, as the task: the same file the image recorded.
    const object = `exe ${mm.exe}`;
    const known = mm.exeMtimeNs !== 0n;
    const exeFlags = O.RDONLY | O.CLOEXEC;
    const expect = known ? { type: S_IFREG, size: mm.exeSize, mtimeNs: mm.exeMtimeNs, dev: mm.exeDev, ino: mm.exeIno } : { type: S_IFREG };
    const exeFd = openRecordedFile(t, mm.exe, { flags: exeFlags, expect, sameBoot: ctx.sameBoot, object });
    let held = false;
    try {
      // A child that keeps its parent's private mappings of the executable already has that
      // executable (the kernel refuses to change exe_file while the old one is mapped): left as it is.
      const exeNow = fs.statSync(`/proc/${task.pid}/exe`, { bigint: true });
      const exeNew = fs.statSync(`/proc/${task.pid}/fd/${exeFd}`, { bigint: true });
      const sameExe = keptPrivate.length > 0 && sameFile(exeNow, exeNew);
      const auxvAt = t.stage(mm.auxv, 8192);
      const map = encodeStruct(linux.PrctlMmMap, {
        startCode: mm.startCode, endCode: mm.endCode, startData: mm.startData, endData: mm.endData,
        startBrk: mm.startBrk, brk: mm.brk, startStack: mm.startStack, argStart: mm.argStart, argEnd: mm.argEnd,
        envStart: mm.envStart, envEnd: mm.envEnd, auxv: auxvAt, auxvSize: mm.auxv.length, exeFd: sameExe ? 0xffffffff : Number(exeFd),
      });
      const r = t.syscall(SYS.prctl, [PR.SET_MM, linux.PR_SET_MM.MAP, t.stage(map, 0), map.length, 0]);
      if (r < 0n) {
        const code = linux.errnoName(Number(-r));
        const why = code === 'EPERM' ? ': setting the executable needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) in the restored process' : '';
        throw new CptError(code, `prctl(PR_SET_MM_MAP) failed${why}`, { pid: task.pid, object });
      }
      // The executable's areas come next: they map it through this fd (file.ts), not opened again.
      holdOpenFile(task, mm.exe, exeFlags, expect, exeFd);
      held = true;
    } finally {
      if (!held) t.syscall(SYS.close, [exeFd]);
    }

    // mm-wide settings that shape the areas mapped next (THP, KSM), and membarrier registrations.
    // Set only where the new process differs (it inherits cptrst's); a kernel without the option reads as 0.
    const [thpNow, mergeNow] = t.syscalls([{ nr: SYS.prctl, args: [PR.GET_THP_DISABLE, 0, 0, 0, 0] }, { nr: SYS.prctl, args: [PR.GET_MEMORY_MERGE, 0, 0, 0, 0] }]);
    const differs = (now: bigint, want: number) => (now < 0n ? want !== 0 : Number(now) !== want);
    if (differs(thpNow, mm.thpDisable)) {
      t.syscallOk(SYS.prctl, [PR.SET_THP_DISABLE, mm.thpDisable & 1, mm.thpDisable & ~1, 0, 0], `prctl(PR_SET_THP_DISABLE, ${mm.thpDisable & 1}, ${mm.thpDisable & ~1})`);
    }
    if (differs(mergeNow, mm.memoryMerge)) {
      t.syscallOk(SYS.prctl, [PR.SET_MEMORY_MERGE, mm.memoryMerge, 0, 0, 0], `prctl(PR_SET_MEMORY_MERGE, ${mm.memoryMerge})`);
    }
    for (const [bit, name] of MEMBARRIER_REGISTRATIONS) {
      if (mm.membarrier & bit) t.syscallOk(SYS.membarrier, [bit, 0, 0], `membarrier registration for ${name}`);
    }
    mmRestored(ctx, task);
  }

  private restoreVma(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = validateVma(task, o);
    const what = describeVma(img);
    const kind = kindNamed(ctx.all(VmaKinds), img.kind);
    if (!kind) throw new CptError('EOPNOTSUPP', `no handler for ${img.kind} memory areas is loaded`, { pid: task.pid, object: what });
    const scratch = task.tracee!.reservedRanges();
    if (scratch.some((r) => overlaps(r, img))) throw new CptError('EBADIMG', `${what} is not in the image's layout`, { pid: task.pid, object: what });
    if (img.pageCount > 0n && !kind.storesPages(img)) {
      throw new CptError('EBADIMG', `${what} at image offset ${o.offset}: the image holds pages for a ${img.shared ? 'shared ' : ''}${img.kind} mapping, whose contents are not kept in an image (a shared file mapping's are the file's; a droppable area's may be dropped)`, { pid: task.pid, object: what });
    }
    const odd = img.vmFlags.filter((f) => !DERIVED_FLAGS.has(f) && !kind.acceptsVmFlag(f));
    if (odd.length) throw new CptError('EBADIMG', `${what} at image offset ${o.offset}: VmFlags ${odd.join(' ')} on ${img.kind} memory`, { pid: task.pid, object: what });
    // An fd held for the next area of the same file (file.ts) is closed before any other kind maps.
    if (!(kind instanceof FileVma)) closeOpenFile(task);
    const pending: PendingVma = { tag: o.tag, offset: o.offset, img, kind, records: new RecordList() };
    const all = VMAS_OF_RESTART.get(ctx) ?? new Map<number, { task: RestartTask; area: () => RestoredVma | undefined }>();
    VMAS_OF_RESTART.set(ctx, all);
    all.set(o.tag, { task, area: () => {
      mapPending(ctx, task);
      return task.state.get(VMAS_BY_TAG)?.get(o.tag);
    } });
    if (kind.records?.length && (kind.expectsRecords?.(img) ?? true)) task.state.set(PENDING_VMA, pending);
    else mapVma(ctx, task, pending);
  }
}

/**
 * Each [address in the parent, length] of MmImage.inherited must be shared anonymous memory the
 * task has now (its copy of the parent's mapping); it is moved to a spot clear of the image's
 * layout, the scratch area and the vDSO, where its VMA finds it (INHERITED_AREAS).
 */
function keepInheritedAreas(ctx: RestartContext, task: RestartTask, mm: MmImage, avoid: Range[]): Range[] {
  const t = task.tracee!;
  const bad = (why: string) => new CptError('EBADIMG', why, { pid: task.pid, object: 'mm' });
  if (mm.inherited.length % 2 || mm.inherited.length > 2 * 65536) throw bad('malformed list of inherited areas');
  const spots = new Map<bigint, bigint>();
  task.state.set(INHERITED_AREAS, spots);
  if (!mm.inherited.length) return [];
  const here = linux.readMaps(task.pid);
  const taken: Range[] = [...avoid, ...here, ...mm.vdso];
  const out: Range[] = [];
  for (let i = 0; i < mm.inherited.length; i += 2) {
    const at = mm.inherited[i];
    const len = mm.inherited[i + 1];
    const what = `the parent's shared memory at 0x${at.toString(16)}`;
    if (len <= 0n || (at | len) & 0xfffn || spots.has(at)) throw bad(`${what}: a bad range`);
    const m = here.find((e) => e.start <= at && at + len <= e.end);
    if (!m || !m.shared || !m.deleted || m.path !== '/dev/zero') throw bad(`${what}: the task has no shared anonymous memory there to keep`);
    const spot = findFreeRange(len, [...taken, ...out], archOf(ctx.container).userSpaceTop);
    const r = t.syscallOk(SYS.mremap, [at, len, len, linux.MREMAP.MAYMOVE | linux.MREMAP.FIXED, spot.start], `mremap of ${what}`);
    if (r !== spot.start) throw new CptError('EFAULT', `mremap of ${what} landed at 0x${r.toString(16)}`, { pid: task.pid, object: 'mm' });
    spots.set(at, spot.start);
    out.push(spot);
  }
  return out;
}

function mapVma(ctx: RestartContext, task: RestartTask, { tag, img, kind, records }: PendingVma): void {
  const vmas = task.state.get(VMAS_BY_TAG);
  if (!vmas) throw new CptError('EBADIMG', `${describeVma(img)} comes before the task's mm object`, { pid: task.pid, object: describeVma(img) });
  // Shared memory cannot be written through /proc/PID/mem unless writable; private can (FOLL_FORCE).
  // Only anonymous shared memory ever gets here with pages (a shared file mapping has none).
  const tempWritable = img.pageCount > 0n && img.shared && !(img.prot & PROT.WRITE);
  kind.map(ctx, task, img, tempWritable, records);
  records.clear();
  if (tempWritable) task.state.ensure(TEMP_WRITABLE, () => []).push(img);
  vmas.set(tag, { img, kind });
}

/** Maps the area whose kind waited for its records, if any. */
function mapPending(ctx: RestartContext, task: RestartTask): void {
  const p = task.state.get(PENDING_VMA);
  if (!p) return;
  task.state.delete(PENDING_VMA);
  ctx.timed('vmas', () => mapVma(ctx, task, p));
}

/** A record of a VMA kind: it must follow a VMA of that kind, before the area's pages. */
function kindRecord(task: RestartTask, o: RestoreObject): void {
  const p = task.state.get(PENDING_VMA);
  const where = `object of type ${o.type} at image offset ${o.offset}`;
  if (!p || p.tag !== o.ptag) throw new CptError('EBADIMG', `${where} belongs to no memory area waiting for its records`, { pid: task.pid, object: 'vma' });
  requireKindRecord(p.kind, o, task.pid, describeVma(p.img), `${where}: ${p.img.kind} memory areas have no such records`);
  p.records.all.push(o);
}
