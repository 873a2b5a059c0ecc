/**
 * Who else holds a file: pipes, FIFOs, unix sockets and memfds are restored inside the one
 * process, so one that another process also holds (an fd of it, or a mapping of a memfd) would
 * come back unshared. Until process trees are restored together, such a file is refused, naming
 * the other process. One scan of /proc per checkpointed task, made only when a kind asks.
 */
import * as fs from 'fs';
import type { CheckpointTask } from './contract';
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
  let pids: number[];
  try {
    pids = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    return index;
  }
  for (const pid of pids) {
    if (pid === task.pid || pid === process.pid) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or a kernel thread
    }
    for (const name of fds) {
      const fd = Number(name);
      let link: string;
      try {
        link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
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

/** The task's own fds of a file, by the same keys (its open files listed once per task). */
const OWN = new StateKey<HolderIndex>('files.ownHolders');
export function ownHolders(task: CheckpointTask, key: { link: string } | { stat: fs.BigIntStats }): number[] {
  const index = task.state.ensure(OWN, () => {
    const own: HolderIndex = new Map();
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
