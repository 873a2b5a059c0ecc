/**
 * Control groups: which group of each hierarchy a process is in (/proc/PID/cgroup), and where a
 * hierarchy is mounted (mountinfo), to move a process into a group by writing cgroup.procs.
 */
import { readMountinfo, readProcText } from './proc';

export interface CgroupMembership {
  /** The hierarchy's number on this boot (0 for the unified, cgroup v2, hierarchy). */
  hierarchy: number;
  /** Its controllers as the kernel lists them ("cpu,cpuacct", "name=systemd"; "" for v2). */
  controllers: string;
  /** The group, from the hierarchy's root. */
  path: string;
}

/** Parses /proc/PID/cgroup ("ID:CONTROLLERS:PATH" per line). */
export function parseCgroups(text: string): CgroupMembership[] {
  const out: CgroupMembership[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    out.push({ hierarchy: Number(line.slice(0, a)), controllers: line.slice(a + 1, b), path: line.slice(b + 1) });
  }
  return out;
}

/** The groups of process PID, or of one of its threads. */
export function readCgroups(pid: number, tid?: number): CgroupMembership[] {
  const file = tid === undefined ? `/proc/${pid}/cgroup` : `/proc/${pid}/task/${tid}/cgroup`;
  return parseCgroups(readProcText(file, pid));
}

export interface CgroupMount {
  mountPoint: string;
  /** The group the mount shows at its mount point ("/" unless only a subtree is mounted). */
  root: string;
}

/**
 * Where the hierarchy with these controllers is mounted in PID's mount namespace: cgroup2 for
 * "", else a cgroup mount whose options name every one of them.
 */
export function findCgroupMount(controllers: string, pid: number | 'self' = 'self'): CgroupMount | undefined {
  const want = controllers.split(',').filter((c) => c !== '');
  for (const m of readMountinfo(pid)) {
    if (want.length === 0 ? m.fsType !== 'cgroup2' : m.fsType !== 'cgroup') continue;
    const opts = new Set(m.superOptions.split(','));
    if (want.every((c) => opts.has(c))) return { mountPoint: m.mountPoint, root: m.root };
  }
  return undefined;
}
