/**
 * Shared anonymous memory that is one memory between processes of the tree (or between areas of
 * one process) in a way a child keeping its parent's mapping (anon.ts, VMA.inheritedAt) cannot
 * make again: a process maps a part of it its parent does not map (the parent unmapped or moved
 * pieces after the fork), processes that are not parent and child share it, or a process maps
 * one part of it twice (again through /proc/self/map_files).
 *
 * Checkpoint: the memory object (a shmem inode) of such an area is made at restart by the lowest
 * common ancestor of the processes of the tree that map it (core's holders.ts rule for shared
 * objects), which must map it itself. Its first area of it (the carrier) stores the object's size
 * and its data runs (SEEK_DATA over the whole object, pages no process maps included); every
 * area of it in that process, and every area of it elsewhere that is not kept from the parent,
 * gets a VMA_SHARED_ANON record and stores no pages: every area of the object, in every
 * process, is mapped from the one object.
 *
 * Restart: the maker's carrier makes the object whole (a MAP_SHARED|MAP_ANONYMOUS mapping of its
 * size, clear of the image's layout, filled through its map_files link), and keeps it mapped until
 * its finish, after every process is made. Each area of it, in the maker or in a descendant,
 * opens that object through /proc/MAKER/map_files/ inside the task and maps it at its own offset.
 * Opening map_files needs CAP_CHECKPOINT_RESTORE: only root's images.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, KindRecords, ObjectType, RestartContext, RestartTask, StateKey,
  bool, bytes, linux, objectType, refuse, u32, u64,
} from '@cptrst/core';
import { archOf } from '@cptrst/core';
import { VmaEntry, VmaImage, describeVma, internalShmDev, mapAt, mapFilesPath } from './vma';
import { findFreeRange } from './ranges';

const { MAP, PROT, SYS, O } = linux;

/** Under each VMA of a shared anonymous memory object made once for the tree. */
@objectType(ObjectType.VMA_SHARED_ANON, 'vma-shared-anon', { parents: [ObjectType.VMA] })
export class VmaSharedAnonImage {
  /** The object's inode at checkpoint: names it among the tree's. */
  @u64() id = 0n;
  /** The process that makes it. */
  @u32() maker = 0;
  /** The maker's first area of it: it makes the object, whose size and data runs it carries. */
  @bool() carrier = false;
  @u64() size = 0n;
}

/** A data run of the object, under its carrier. */
@objectType(ObjectType.VMA_SHARED_ANON_DATA, 'vma-shared-anon-data', { parents: [ObjectType.VMA] })
export class VmaSharedAnonDataImage {
  @u64() offset = 0n;
  @bytes() data: Buffer = Buffer.alloc(0);
}

/** Largest amount of data (holes left out) of one object stored in an image. */
const DATA_MAX = 1024 * 1024 * 1024;
/** Largest data record. */
const CHUNK = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// checkpoint

interface TreeObject {
  id: bigint;
  maker: number;
  size: bigint;
  /** The maker's first area of the object (the carrier). */
  carrierStart: bigint;
}

/** Per checkpoint, per object inode: the object made once for the tree, or null where keeping the parent's mapping suffices. */
const OBJECTS = new WeakMap<CheckpointContext, Map<bigint, TreeObject | null>>();
/** The areas that map such an object, with their role (kept from the check to the dump). */
const MARKED = new WeakMap<VmaImage, { obj: TreeObject; carrier: boolean }>();

const isSharedAnon = (e: linux.MapEntry) => e.shared && e.deleted && e.path === '/dev/zero' && e.inode !== 0n;

/** Whether `outer` (of the same object) maps every page `inner` maps. */
const covers = (outer: linux.MapEntry, inner: linux.MapEntry) => outer.offset <= inner.offset && inner.offset + (inner.end - inner.start) <= outer.offset + (outer.end - outer.start);

/**
 * The object of a shared anonymous area when it must be made once for the tree (undefined when the
 * task's area is its own memory, or kept from its parent's mapping); refuses one that cannot be.
 */
function treeObject(ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry): TreeObject | undefined {
  const table = OBJECTS.get(ctx) ?? new Map<bigint, TreeObject | null>();
  OBJECTS.set(ctx, table);
  const known = table.get(v.inode);
  if (known !== undefined) return known ?? undefined;
  const shm = internalShmDev();
  const maps = new Map<number, linux.MapEntry[]>();
  const parent = new Map<number, number>();
  for (const pid of ctx.treePids(task)) {
    let mine: linux.MapEntry[];
    try {
      mine = linux.readMaps(pid).filter((e) => isSharedAnon(e) && e.inode === v.inode && linux.makeDev(e.major, e.minor) === shm);
      parent.set(pid, linux.readStat(pid).ppid);
    } catch {
      continue; // a zombie maps nothing
    }
    if (mine.length) maps.set(pid, mine);
  }
  const holders = [...maps.keys()];
  // A child keeps its parent's mapping (anon.ts) when the object has one top holder, every other
  // holder maps only parts its parent maps, and no process maps one part of it twice.
  const tops = holders.filter((pid) => !maps.has(parent.get(pid)!));
  const overlap = (a: linux.MapEntry, b: linux.MapEntry) => a.offset < b.offset + (b.end - b.start) && b.offset < a.offset + (a.end - a.start);
  const aliased = (areas: linux.MapEntry[]) => areas.some((a, i) => areas.some((b, j) => i !== j && overlap(a, b)));
  const needed = tops.length > 1 || holders.some((pid) => aliased(maps.get(pid)!)) ||
    holders.some((pid) => !tops.includes(pid) && maps.get(pid)!.some((a) => !maps.get(parent.get(pid)!)!.some((p) => covers(p, a))));
  if (!needed) {
    table.set(v.inode, null);
    return undefined;
  }
  const chain = (pid: number) => {
    const out = [pid];
    for (let p = parent.get(pid); p !== undefined && ctx.treePids(task).includes(p) && out.length < 4096; p = parent.get(p)) out.push(p);
    return out;
  };
  let common = chain(holders[0]);
  for (const pid of holders.slice(1)) {
    const c = new Set(chain(pid));
    common = common.filter((p) => c.has(p));
  }
  const maker = common[0];
  if (maker === undefined || !maps.has(maker)) {
    refuse(task.pid, describeVma(v), `the shared anonymous memory is mapped by processes ${holders.join(', ')} of the tree, and not by their common ancestor${maker === undefined ? '' : ` ${maker}`}, which would make it again; not supported`);
  }
  const first = maps.get(maker)![0];
  const at = mapFilesPath(maker, first);
  let size: bigint;
  let stored = 0;
  try {
    size = fs.statSync(at, { bigint: true }).size;
    const fd = fs.openSync(at, O.RDONLY);
    try {
      stored = linux.dataRuns(fd, Number(size)).reduce((n, r) => n + r.length, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    return refuse(task.pid, describeVma(v), `the shared anonymous memory cannot be examined through process ${maker}'s map_files (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (stored > DATA_MAX) refuse(task.pid, describeVma(v), `the shared anonymous memory shared in the tree holds ${stored} bytes of data; at most ${DATA_MAX} are stored in an image`);
  const obj = { id: v.inode, maker, size, carrierStart: first.start };
  table.set(v.inode, obj);
  return obj;
}

/**
 * Checkpoint, for a shared anonymous area: marks it as an area of an object made once for the
 * tree (every area of that object, in every process, is); false when the area is the task's own
 * memory or kept from its parent's mapping.
 */
export function markTreeShared(ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, img: VmaImage): boolean {
  const obj = treeObject(ctx, task, v);
  if (!obj) return false;
  MARKED.set(img, { obj, carrier: task.pid === obj.maker && v.start === obj.carrierStart });
  return true;
}

/** Whether the area maps an object made once for the tree (it stores no pages of its own). */
export function treeShared(img: VmaImage): boolean {
  return MARKED.has(img);
}

/** Its VMA_SHARED_ANON record, and for the carrier the object's data runs. */
export function dumpTreeShared(task: CheckpointTask, v: VmaEntry, img: VmaImage, out: KindRecordWriter): void {
  const m = MARKED.get(img);
  if (!m) return;
  const rec = new VmaSharedAnonImage();
  rec.id = m.obj.id;
  rec.maker = m.obj.maker;
  rec.carrier = m.carrier;
  rec.size = m.carrier ? m.obj.size : 0n;
  out.write(rec);
  if (!m.carrier) return;
  const fd = fs.openSync(mapFilesPath(task.pid, v), O.RDONLY);
  try {
    for (const run of linux.dataRuns(fd, Number(m.obj.size))) {
      for (let off = run.offset; off < run.offset + run.length; off += CHUNK) {
        const n = Math.min(CHUNK, run.offset + run.length - off);
        const d = new VmaSharedAnonDataImage();
        d.offset = BigInt(off);
        d.data = Buffer.alloc(n);
        let done = 0;
        while (done < n) {
          const r = fs.readSync(fd, d.data, done, n - done, off + done);
          if (r === 0) break;
          done += r;
        }
        if (done < n) throw new CptError('EIO', `the shared anonymous memory ended at ${off + done} while its data was read`, { pid: task.pid, object: describeVma(v) });
        out.write(d);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// restart

/** The objects made in this restart, by "maker:id": where the maker keeps it whole, and its size. */
const MADE = new WeakMap<RestartContext, Map<string, { maker: number; at: bigint; size: bigint }>>();
/** The objects a task keeps mapped whole until its finish. */
const KEPT = new StateKey<Array<{ at: bigint; size: bigint }>>('mm.treeSharedAnon');

/** Maps an area of an object made once for the tree (making the object at its carrier). */
export function mapTreeShared(ctx: RestartContext, task: RestartTask, img: VmaImage, records: KindRecords, layout: readonly { start: bigint; end: bigint }[]): void {
  const what = describeVma(img);
  const bad = (why: string) => new CptError('EBADIMG', `shared anonymous memory of the tree: ${why}`, { pid: task.pid, object: what });
  const recs = records.of(VmaSharedAnonImage);
  const data = records.of(VmaSharedAnonDataImage);
  if (recs.length !== 1 || records.all.length !== recs.length + data.length) throw bad('not one vma-shared-anon record, or records of another kind');
  const rec = recs[0];
  if (!img.shared || img.pageCount > 0n || img.inheritedAt !== 0n) throw bad('an area of it that is not shared, keeps its parent\'s mapping or stores pages of its own');
  if (!ctx.imageTrusted) {
    throw new CptError('EPERM', 'shared anonymous memory made once for several processes of the tree is opened through /proc/PID/map_files, which needs CAP_CHECKPOINT_RESTORE: only from images root owns', { pid: task.pid, object: what });
  }
  const made = MADE.get(ctx) ?? new Map<string, { maker: number; at: bigint; size: bigint }>();
  MADE.set(ctx, made);
  const key = `${rec.maker}:${rec.id}`;
  const t = task.tracee!;
  if (rec.carrier) {
    if (rec.maker !== task.pid || made.has(key)) throw bad(`a carrier of an object of process ${rec.maker} in process ${task.pid}, or a second one`);
    if (rec.size === 0n || rec.size & 0xfffn || rec.size > 0x800000000000n) throw bad(`size ${rec.size}`);
    let end = 0n;
    let total = 0;
    for (const d of data) {
      if (d.offset < end || d.offset + BigInt(d.data.length) > rec.size) throw bad(`a data run at ${d.offset} overlaps the one before it or ends beyond the size ${rec.size}`);
      end = d.offset + BigInt(d.data.length);
      total += d.data.length;
      if (total > DATA_MAX) throw bad(`more than ${DATA_MAX} bytes of data`);
    }
    const spot = findFreeRange(rec.size, [...layout, ...t.reservedRanges(), ...linux.readMaps(task.pid)], archOf(ctx.container).userSpaceTop);
    const at = t.syscallOk(SYS.mmap, [spot.start, rec.size, PROT.READ | PROT.WRITE, MAP.SHARED | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE, -1, 0], `mmap of the shared anonymous memory for ${what}`);
    if (at !== spot.start) throw new CptError('EFAULT', `mmap of the shared anonymous memory landed at 0x${at.toString(16)}`, { pid: task.pid, object: what });
    task.state.ensure(KEPT, () => []).push({ at, size: rec.size });
    made.set(key, { maker: task.pid, at, size: rec.size });
    if (data.length) {
      const w = fs.openSync(mapFilesPath(task.pid, { start: at, end: at + rec.size }), O.WRONLY);
      try {
        for (const d of data) {
          let done = 0;
          while (done < d.data.length) done += fs.writeSync(w, d.data, done, d.data.length - done, Number(d.offset) + done);
        }
      } finally {
        fs.closeSync(w);
      }
    }
  } else if (data.length) {
    throw bad('data runs under an area that does not carry the object');
  }
  const obj = made.get(key);
  if (!obj) throw bad(`the object is said to be made by process ${rec.maker}, which made none before this area`);
  if (img.pgoff + (img.end - img.start) > obj.size) throw bad(`the area at offset ${img.pgoff} runs beyond the object's ${obj.size} bytes`);
  const path = mapFilesPath(obj.maker === task.pid ? task.pid : obj.maker, { start: obj.at, end: obj.at + obj.size });
  const fd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from(`${path}\0`)), O.RDWR | O.CLOEXEC, 0], `opening the shared anonymous memory of process ${obj.maker} for ${what}`);
  try {
    mapAt(task, img, img.prot, MAP.SHARED, fd, what);
  } finally {
    t.syscall(SYS.close, [fd]);
  }
}

/** At the maker's finish (every process is made): the whole mappings of the objects go. */
export function unmapTreeShared(task: RestartTask): void {
  for (const k of task.state.get(KEPT) ?? []) task.tracee!.syscallOk(SYS.munmap, [k.at, k.size], 'munmap of the shared anonymous memory made for the tree');
  task.state.delete(KEPT);
}
