/**
 * Looking at and ending processes by PID, through /proc. Nothing here ever matches processes by
 * name; killByPid() only signals processes that run one of our workloads.
 */
import { ChildProcess } from 'child_process';
import * as fs from 'fs';
import { USER_DIR_PREFIX, WORK_DIR, WORKLOADS_SRC } from './paths';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Our own children by PID, while they have not exited (see trackChild). */
const liveChildren = new Map<number, ChildProcess>();
/** Every PID the harness started a workload as (restored processes keep the PID). */
const startedPids = new Set<number>();

/** Registers a child so waitGone() can await its 'exit' event (libuv reaps it, not /proc). */
export function trackChild(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined) return;
  startedPids.add(pid);
  if (child.exitCode !== null || child.signalCode !== null) return;
  liveChildren.set(pid, child);
  child.once('exit', () => {
    if (liveChildren.get(pid) === child) liveChildren.delete(pid);
  });
}

/** PIDs of all workloads started so far (whether or not still alive). */
export function startedWorkloadPids(): number[] {
  return [...startedPids];
}

export interface ProcState {
  /** The state letter from /proc/PID/status: R S D T t Z X ... */
  state: string;
  tracerPid: number;
  ppid: number;
  /** Name from /proc/PID/status (comm). */
  name: string;
  threads: number;
  /** Children of every thread (/proc/PID/task/TID/children). */
  children: number[];
}

async function readOrNull(file: string): Promise<string | null> {
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch {
    return null;
  }
}

/** State of a process from /proc, or null if there is no such PID. */
export async function procState(pid: number): Promise<ProcState | null> {
  const status = await readOrNull(`/proc/${pid}/status`);
  if (status === null) return null;
  const field = (key: string): string => {
    const m = new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(status);
    return m === null ? '' : m[1];
  };
  const children: number[] = [];
  try {
    for (const tid of await fs.promises.readdir(`/proc/${pid}/task`)) {
      const c = await readOrNull(`/proc/${pid}/task/${tid}/children`);
      if (c !== null) for (const p of c.trim().split(/\s+/)) if (p !== '') children.push(Number(p));
    }
  } catch {
    /* gone meanwhile */
  }
  return {
    state: field('State').charAt(0),
    tracerPid: Number(field('TracerPid')),
    ppid: Number(field('PPid')),
    name: field('Name'),
    threads: Number(field('Threads')),
    children,
  };
}

/** True while /proc/PID exists and is not a zombie (or, with zombieOk false, exists at all). */
async function present(pid: number, zombieOk: boolean): Promise<boolean> {
  const stat = await readOrNull(`/proc/${pid}/stat`);
  if (stat === null) return false;
  if (!zombieOk) return true;
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

export interface WaitGoneOptions {
  /**
   * Count a zombie as gone (it has finished; its PID is still taken until its parent reaps it,
   * which for a restored process is init, and init is slow here). Default false: wait for the PID
   * to disappear from /proc.
   */
  zombieOk?: boolean;
  /** Poll interval, default 20 ms. */
  pollMs?: number;
}

/**
 * Waits until process PID is gone. For our own live child it first awaits its 'exit' event
 * (libuv reaps it); then it polls /proc/PID. Resolves true when gone, false on timeout.
 */
export async function waitGone(pid: number, timeoutMs: number, opts: WaitGoneOptions = {}): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const child = liveChildren.get(pid);
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    let timer: NodeJS.Timeout | undefined;
    let onExit: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      onExit = resolve;
      child.once('exit', onExit);
      timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
    });
    clearTimeout(timer);
    if (onExit !== undefined) child.removeListener('exit', onExit);
  }
  const zombieOk = opts.zombieOk ?? false;
  for (;;) {
    if (!(await present(pid, zombieOk))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(opts.pollMs ?? 20);
  }
}

/** True if PID runs one of our workloads (its command line names test/workloads, test/work or a makeUserDir directory). */
export async function isOurWorkload(pid: number): Promise<boolean> {
  const cmdline = await readOrNull(`/proc/${pid}/cmdline`);
  if (cmdline === null) return false;
  return cmdline.includes(WORK_DIR) || cmdline.includes(WORKLOADS_SRC) || cmdline.includes(USER_DIR_PREFIX);
}

/**
 * Sends `signal` (default SIGKILL) to PID if it runs one of our workloads. Returns true if a signal
 * was sent. Never kills anything else, and never by name.
 */
export async function killByPid(pid: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  if (!(await isOurWorkload(pid))) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** The descendants of PID, children before their own children (empty when it is gone). */
async function descendantsOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  const walk = async (p: number, depth: number): Promise<void> => {
    if (depth > 64) return;
    let tids: string[];
    try {
      tids = await fs.promises.readdir(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const tid of tids) {
      const kids = (await readOrNull(`/proc/${p}/task/${tid}/children`)) ?? '';
      for (const k of kids.trim().split(/\s+/).filter(Boolean).map(Number)) {
        if (out.includes(k)) continue;
        out.push(k);
        await walk(k, depth + 1);
      }
    }
  };
  await walk(pid, 0);
  return out;
}

/**
 * Cleanup for after/afterEach hooks: SIGKILLs every workload PID the harness started that still
 * runs one of our workloads (the original or a restored one), and waits until each has finished
 * (zombies of init count as finished). Returns the PIDs that were killed.
 */
export async function killStartedWorkloads(timeoutMs = 5000): Promise<number[]> {
  const killed: number[] = [];
  for (const pid of startedPids) {
    // A tree's members first (a child in a session of its own does not go with its parent), each by PID.
    for (const d of await descendantsOf(pid)) if (await killByPid(d)) killed.push(d);
    if (await killByPid(pid)) killed.push(pid);
  }
  for (const pid of killed) {
    if (!(await waitGone(pid, timeoutMs, { zombieOk: true }))) throw new Error(`workload ${pid} survived SIGKILL`);
  }
  return killed;
}

export interface MapEntry {
  start: bigint;
  end: bigint;
  perms: string;
  offset: bigint;
  dev: string;
  inode: number;
  /** The path or [name] column, '' for anonymous mappings. */
  path: string;
  /** The whole line as the kernel printed it. */
  line: string;
}

/** Parses /proc/PID/maps. Throws if the process is gone. */
export async function readMaps(pid: number): Promise<MapEntry[]> {
  const text = await fs.promises.readFile(`/proc/${pid}/maps`, 'utf8');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+([0-9a-f]+)\s+(\S+)\s+(\d+)\s*(.*)$/.exec(line);
      if (m === null) throw new Error(`unparsable maps line: ${line}`);
      return {
        start: BigInt(`0x${m[1]}`),
        end: BigInt(`0x${m[2]}`),
        perms: m[3],
        offset: BigInt(`0x${m[4]}`),
        dev: m[5],
        inode: Number(m[6]),
        path: m[7],
        line,
      };
    });
}

/**
 * What a process that should have finished is doing, for a test's failure message: for each of
 * its threads the state, the kernel function it waits in and its kernel stack, then the same for
 * its children (one level).
 */
export async function describeStuck(pid: number): Promise<string> {
  const lines: string[] = [];
  const one = async (p: number, indent: string): Promise<number[]> => {
    const st = await procState(p);
    if (st === null) {
      lines.push(`${indent}${p}: gone`);
      return [];
    }
    lines.push(`${indent}${p} (${st.name}) state ${st.state} ppid ${st.ppid} tracer ${st.tracerPid}`);
    let tids: string[] = [];
    try {
      tids = await fs.promises.readdir(`/proc/${p}/task`);
    } catch {
      /* gone meanwhile */
    }
    for (const tid of tids) {
      const wchan = (await readOrNull(`/proc/${p}/task/${tid}/wchan`)) ?? '?';
      const syscall = ((await readOrNull(`/proc/${p}/task/${tid}/syscall`)) ?? '?').trim().split(' ')[0];
      const stack = ((await readOrNull(`/proc/${p}/task/${tid}/stack`)) ?? '').trim().split('\n').slice(0, 6).map((l) => l.trim()).join(' < ');
      lines.push(`${indent}  thread ${tid}: wchan ${wchan} syscall ${syscall} ${stack}`);
    }
    return st.children;
  };
  for (const c of await one(pid, '')) await one(c, '  ');
  return lines.join('\n');
}

/** Live processes other than `pid` (and `members`) that run its executable (a snapshot's copies; zombies have no exe link). */
export function copiesOf(pid: number, members: number[] = [pid]): number[] {
  const exe = fs.readlinkSync(`/proc/${pid}/exe`);
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d) && !members.includes(Number(d))).filter((d) => {
    try {
      return fs.readlinkSync(`/proc/${d}/exe`) === exe;
    } catch {
      return false;
    }
  }).map(Number);
}

/** The process and its descendants, parent before children. */
export async function membersOf(root: number): Promise<number[]> {
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...((await procState(out[i]))?.children ?? []));
  return out;
}

/** The process's tracer (0: none), -1 if it is gone. */
export function tracerOf(pid: number): number {
  try {
    return Number(/^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? -1);
  } catch {
    return -1;
  }
}

/** The write trackers of `pid` (cptrst's tracking.ts: their command line names it). */
export function trackersOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0');
      const i = argv.indexOf('cptrst-tracker');
      if (i > 0 && argv[i + 1] === String(pid)) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Whether process `pid` has a file of `dir` open (a CLI has then opened the image it writes or reads). */
export function hasFileIn(pid: number, dir: string): boolean {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(dir + '/');
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}
