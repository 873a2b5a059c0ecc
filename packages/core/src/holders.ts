/**
 * Who else holds a file: a pipe, FIFO, unix socket or memfd that another process also holds (an
 * fd of it, or a mapping of a memfd) is restored shared only when that process is in the
 * checkpointed tree (below); a holder outside the tree is refused, naming it. One scan of /proc
 * per checkpointed task, made only when a kind asks.
 */
import * as fs from 'fs';
import type { CheckpointTask, FrozenTree } from './contract';
import type { CheckpointContext, RestartContext } from './context';
import type { RestartTask } from './contract';
import { CptError } from './errors';
import { StateKey } from './tokens';
import * as linux from './linux';

/** An fd (or a mapping: fd -1) of another process. */
export interface Holder {
  pid: number;
  fd: number;
}

/** Keys: the link text of anonymous files (`pipe:[N]`, `socket:[N]`), `dev:ino` for files with a path and for mappings. */
type HolderIndex = Map<string, Holder[]>;

const HOLDERS = new StateKey<HolderIndex>('files.holders');

function add(index: HolderIndex, key: string, h: Holder): void {
  const list = index.get(key);
  if (list) list.push(h);
  else index.set(key, [h]);
}

function scan(task: CheckpointTask): HolderIndex {
  const index: HolderIndex = new Map();
  for (const pid of linux.allPids()) {
    if (pid === task.pid || pid === process.pid) continue;
    addInFlightOf(index, pid);
    for (const { fd, link } of linux.fdLinks(pid)) {
      if (link.startsWith('pipe:') || link.startsWith('socket:')) {
        add(index, link, { pid, fd });
      } else if (link.startsWith('/')) {
        try {
          const st = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
          if (st.isFIFO() || st.nlink === 0n || link.startsWith('/memfd:')) add(index, `${st.dev}:${st.ino}`, { pid, fd });
        } catch {
          /* closed meanwhile */
        }
      }
    }
    let maps: linux.MapEntry[];
    try {
      maps = linux.readMaps(pid);
    } catch {
      continue;
    }
    for (const m of maps) if (m.inode !== 0n && m.deleted) add(index, `${linux.makeDev(m.major, m.minor)}:${m.inode}`, { pid, fd: -1 });
  }
  return index;
}

/**
 * The other processes' fds (and mappings) of a file: `link` for pipes and sockets, the stat of
 * the file for FIFOs and unlinked files (memfds).
 */
export function otherHolders(task: CheckpointTask, key: { link: string } | { stat: fs.BigIntStats }): Holder[] {
  const index = task.state.ensure(HOLDERS, () => scan(task));
  return index.get('link' in key ? key.link : `${key.stat.dev}:${key.stat.ino}`) ?? [];
}

/**
 * Files in flight in the queues of sockets of the tree (SCM_RIGHTS): the image gives each to the
 * process that holds its socket, at an fd number its fd table does not show, while cptrst holds
 * it (files unix-scm.ts). They count as that process's fds, for the process itself (ownHolders)
 * and for the others (otherHolders); fdLocation tells where each is read. By pid, then fd number.
 */
const IN_FLIGHT = new Map<number, Map<number, { link: string; stat: fs.BigIntStats; at: Holder }>>();

/** Counts a file in flight (held at `at` by cptrst) as fd `fd` of process `pid`. */
export function addInFlight(pid: number, fd: number, link: string, stat: fs.BigIntStats, at: Holder): void {
  const mine = IN_FLIGHT.get(pid) ?? new Map<number, { link: string; stat: fs.BigIntStats; at: Holder }>();
  IN_FLIGHT.set(pid, mine);
  mine.set(fd, { link, stat, at });
}

/** The files in flight of process `pid` go (cptrst closes its fds of them). */
export function forgetInFlight(pid: number): void {
  IN_FLIGHT.delete(pid);
}

/** Where fd `fd` of process `pid` is read: cptrst's fd of a file in flight given to the process, or the process's own fd. */
export function fdLocation(pid: number, fd: number): Holder {
  return IN_FLIGHT.get(pid)?.get(fd)?.at ?? { pid, fd };
}

function addInFlightOf(index: HolderIndex, pid: number): void {
  for (const [fd, f] of IN_FLIGHT.get(pid) ?? []) {
    if (f.link.startsWith('pipe:') || f.link.startsWith('socket:')) add(index, f.link, { pid, fd });
    else if (f.link.startsWith('/')) add(index, `${f.stat.dev}:${f.stat.ino}`, { pid, fd });
  }
}

/** The task's own fds of a file, by the same keys (its open files listed once per task; its files in flight too). */
const OWN = new StateKey<HolderIndex>('files.ownHolders');
export function ownHolders(task: CheckpointTask, key: { link: string } | { stat: fs.BigIntStats }): number[] {
  const index = task.state.ensure(OWN, () => {
    const own: HolderIndex = new Map();
    addInFlightOf(own, task.pid);
    for (const fd of linux.listFds(task.pid)) {
      try {
        const link = linux.readFdLink(task.pid, fd);
        if (link.startsWith('pipe:') || link.startsWith('socket:')) add(own, link, { pid: task.pid, fd });
        else if (link.startsWith('/')) {
          const st = fs.statSync(`/proc/${task.pid}/fd/${fd}`, { bigint: true });
          add(own, `${st.dev}:${st.ino}`, { pid: task.pid, fd });
        }
      } catch {
        /* the task is frozen: nothing closes; an fd that cannot be read is refused by its kind */
      }
    }
    return own;
  });
  return (index.get('link' in key ? key.link : `${key.stat.dev}:${key.stat.ino}`) ?? []).map((h) => h.fd);
}

/** "process 123 (fd 4)" / "process 123 (a mapping)", for refusals; at most three named. */
export function describeHolders(hs: Holder[]): string {
  const named = hs.slice(0, 3).map((h) => `process ${h.pid} (${h.fd >= 0 ? `fd ${h.fd}` : 'a mapping'})`).join(', ');
  return hs.length > 3 ? `${named} and ${hs.length - 3} more` : named;
}

// ---------------------------------------------------------------------------------------------
// Objects shared by several processes of a tree
//
// A pipe, FIFO, unix socket or memfd held by several processes of the tree is made once at
// restart, by the lowest common ancestor of its holders, before that process's children: it
// keeps the object on "carried" fds above its own fd numbers, its children get them by clone
// (each keeps its parent's carried fds, fs-struct.ts), and every holder makes its own fds of the
// object from them. The carried fds go with the other temporary fds once every task is made.

/** The tree of a checkpoint: its tasks by pid and their parents. */
interface TreeInfo {
  tasks: Map<number, CheckpointTask>;
  parent: Map<number, number>;
}
const TREES = new WeakMap<CheckpointContext, TreeInfo>();

/** Called by the freezer once the tree is frozen: which processes are in it. */
export function noteTree(ctx: CheckpointContext, tree: FrozenTree): void {
  const tasks = new Map(tree.tasks.map((t) => [t.pid, t]));
  const parent = new Map<number, number>();
  for (const t of tree.tasks) {
    if (t.pid === tree.root) continue;
    try {
      parent.set(t.pid, linux.readStat(t.pid).ppid);
    } catch {
      /* gone: the checkpoint fails elsewhere */
    }
  }
  TREES.set(ctx, { tasks, parent });
}

/** The frozen task of the tree with this pid. */
export function treeTask(ctx: CheckpointContext, pid: number): CheckpointTask | undefined {
  return TREES.get(ctx)?.tasks.get(pid);
}

function ancestry(tree: TreeInfo, pid: number): number[] {
  const chain = [pid];
  for (let p = tree.parent.get(pid); p !== undefined && chain.length <= tree.tasks.size; p = tree.parent.get(p)) chain.push(p);
  return chain;
}

/** One object (by its holder key) held by several processes of the tree. */
export interface SharedObject {
  key: string;
  /** The process that makes it at restart: the lowest common ancestor of its holders. */
  maker: number;
  /** Every fd (or mapping, fd -1) of it in the tree, the task's own included. */
  holders: Holder[];
  /** Its carrier is written to the image (by the maker's dump). */
  written: boolean;
}

const SHARED = new WeakMap<CheckpointContext, Map<string, SharedObject>>();

export type HolderKey = { link: string } | { stat: fs.BigIntStats };
const keyText = (key: HolderKey): string => ('link' in key ? key.link : `${key.stat.dev}:${key.stat.ino}`);

/**
 * The holders of a task's object among the other processes: those of the tree (the object is
 * shared with them and made by their lowest common ancestor at restart: `shared`) and the others,
 * which cannot be (`outside`). Without a tree (a bare task), every other holder is outside.
 */
export function shareOf(ctx: CheckpointContext, task: CheckpointTask, key: HolderKey): { shared?: SharedObject; outside: Holder[] } {
  return shareGroup(ctx, task, [key]);
}

/**
 * As shareOf, for objects made together (the two ends of a socketpair): their holders in the
 * tree, one maker for all; `shared` is undefined when the task alone holds them.
 */
export function shareGroup(ctx: CheckpointContext, task: CheckpointTask, keys: HolderKey[]): { shared?: SharedObject; outside: Holder[] } {
  const others = keys.flatMap((key) => otherHolders(task, key));
  const tree = TREES.get(ctx);
  const inTree = tree ? others.filter((h) => tree.tasks.has(h.pid) && h.pid !== task.pid) : [];
  const outside = others.filter((h) => !inTree.includes(h));
  if (!tree || inTree.length === 0) return { outside };
  const k = keys.map(keyText).sort().join('+');
  const table = SHARED.get(ctx) ?? new Map<string, SharedObject>();
  SHARED.set(ctx, table);
  let s = table.get(k);
  if (!s) {
    const own = keys.flatMap((key) => ownHolders(task, key).map((fd) => ({ pid: task.pid, fd })));
    const holders = [...own, ...inTree];
    s = { key: k, maker: commonAncestor(tree, holders.map((h) => h.pid), task.pid, k), holders, written: false };
    table.set(k, s);
  }
  return { shared: s, outside };
}

function commonAncestor(tree: TreeInfo, pids: number[], pid: number, k: string): number {
  const list = [...new Set(pids)];
  let common = ancestry(tree, list[0]);
  for (const p of list.slice(1)) {
    const a = new Set(ancestry(tree, p));
    common = common.filter((c) => a.has(c));
  }
  if (!common.length) throw new CptError('EINVAL', `the processes holding ${k} have no common ancestor in the tree`, { pid, object: k });
  return common[0];
}

/**
 * An object whose holders its kind finds by itself (a pty: master and slave fds, and the processes
 * it is the controlling terminal of), shared by processes of the tree `pids` (the task's among
 * them): made by their lowest common ancestor, described from and carried for `holders` (fds of
 * processes of the tree). Undefined without a tree.
 */
export function shareAmong(ctx: CheckpointContext, task: CheckpointTask, key: string, pids: number[], holders: Holder[]): SharedObject | undefined {
  const tree = TREES.get(ctx);
  if (!tree || !pids.length) return undefined;
  const table = SHARED.get(ctx) ?? new Map<string, SharedObject>();
  SHARED.set(ctx, table);
  let s = table.get(key);
  if (!s) {
    s = { key, maker: commonAncestor(tree, pids, task.pid, key), holders, written: false };
    table.set(key, s);
  }
  return s;
}

/** The shared objects that `pid` makes at restart without holding them itself. */
export function carriedOnlyBy(ctx: CheckpointContext, pid: number): SharedObject[] {
  return [...(SHARED.get(ctx)?.values() ?? [])].filter((s) => s.maker === pid && !s.holders.some((h) => h.pid === pid));
}

// restart

/** An object a process made (or got from its parent) for its descendants: its carried fds, and the kind's state shared by every process. */
export interface Carried {
  fds: bigint[];
  shared: object;
}

const CARRIED = new WeakMap<RestartContext, Map<number, Map<string, Carried>>>();

/** The objects a restored process carries, by the kind's id of them. */
export function carriedIn(ctx: RestartContext, pid: number): Map<string, Carried> {
  const all = CARRIED.get(ctx) ?? new Map<number, Map<string, Carried>>();
  CARRIED.set(ctx, all);
  let m = all.get(pid);
  if (!m) {
    m = new Map<string, Carried>();
    all.set(pid, m);
  }
  return m;
}

/**
 * A new child (a copy of its parent, `parent`): the parent's carried fds are the child's too;
 * they move to `floor` and above (the originals go with the child's other inherited fds); returns
 * where they are now, to be spared when the rest is closed.
 */
export function inheritCarried(ctx: RestartContext, task: RestartTask, parent: number, floor: number): bigint[] {
  const from = CARRIED.get(ctx)?.get(parent);
  if (!from || from.size === 0) return [];
  const t = task.tracee!;
  const moved = new Map<bigint, bigint>();
  const mine = carriedIn(ctx, task.pid);
  for (const [id, c] of from) {
    const fds = c.fds.map((fd) => {
      let m = moved.get(fd);
      if (m === undefined) {
        m = t.syscallOk(linux.SYS.fcntl, [fd, linux.F.DUPFD_CLOEXEC, floor], `fcntl(F_DUPFD_CLOEXEC) of a descriptor carried from the parent (${id})`);
        moved.set(fd, m);
      }
      return m;
    });
    mine.set(id, { fds, shared: c.shared });
  }
  return [...moved.values()];
}
