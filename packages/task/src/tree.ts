/**
 * Process trees: a process and all its descendants.
 *
 * Checkpoint: the tree is frozen one process at a time, parent before children. A process is
 * frozen (every thread stopped) before its children are listed, so its list of children is final
 * (a stopped process forks no more); a child that forked before its parent stopped is found in
 * that list, and is frozen in turn. Once every process is stopped the whole tree is listed again
 * and compared. A child that exited and is not reaped (a zombie) is kept with its wait status.
 * Tasks are in pre-order (parent before children), which is the order of the image.
 *
 * Restart: the root is made by the ProcessCreator's helper; every other task is made by clone3
 * with set_tid run inside its parent (still held by cptrst), so that it is the parent's child
 * for real (wait(), getppid(), SIGCHLD). A zombie is made the same way and exits at once with its
 * recorded status. A process group whose leader is not in the tree is made by a short-lived
 * helper with the leader's pid, reaped by the parent before anything of the parent runs.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, FrozenTree, RestartContext, RestartTask, SHARED_WITH_PARENT, StateKey,
  TaskState, Tokens, Tracee, encodeStruct, frozenStatus, linux, noteTree, refuse,
} from '@cptrst/core';
import { isChildSubreaper, releaseTracee } from '@cptrst/core';

const { CLONE, KCMP, SIG, SYS, PR, WAIT } = linux;

/** The signal a task's parent gets when it ends (clone's exit_signal), as the image says. */
export const EXIT_SIGNAL = new StateKey<number>('task.exitSignal');

/** The signal that stopped a stopped task (SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU), read before the freeze changes its exit code. */
export const STOP_SIGNAL = new StateKey<number>('task.stopSignal');

/** A zombie's wait status, as its parent's wait() would return it. */
export const ZOMBIE_STATUS = new StateKey<number>('task.zombieStatus');

/** The tree a checkpoint froze (for the checks that look at more than one task). */
const FROZEN = new WeakMap<CheckpointContext, FrozenTree>();

export interface ProcessFreezer {
  /** Freezes one process (all its threads); throws (having let it go) if it is refused. */
  one(pid: number): CheckpointTask;
  /** Lets go of tasks already frozen (never throws). */
  letGo(tasks: CheckpointTask[]): void;
}

/** Bounds a tree (and the rounds of looking again); far above any real process tree. */
const MAX_TASKS = 4096;

/**
 * Freezes `root` and every descendant. On any failure every process frozen so far is let go as it
 * was and the error is thrown.
 */
export function freezeTree(ctx: CheckpointContext, root: number, ops: ProcessFreezer): FrozenTree {
  const tasks: CheckpointTask[] = [];
  const byPid = new Map<number, CheckpointTask>();
  const parentOf = new Map<number, number>();
  const visit = (pid: number, parent: number | undefined): void => {
    if (tasks.length >= MAX_TASKS) throw new CptError('E2BIG', `the tree has more than ${MAX_TASKS} processes`, { pid: root, object: 'process tree' });
    if (byPid.has(pid)) throw new CptError('EAGAIN', `process ${pid} was found twice while the tree was frozen`, { pid, object: 'process tree' });
    let task: CheckpointTask | undefined;
    if (parent !== undefined && isZombie(pid)) task = zombieTask(pid);
    else {
      refuseSharedMemoryChildren(pid);
      refuseStopSignal(pid);
      try {
        task = ops.one(pid);
      } catch (e) {
        // A child that exits while it is being seized is a zombie now (its parent is stopped), or
        // gone (its parent does not wait for children): either way it is no longer a live member.
        // The kernel refuses to attach to a task on its way out (EPERM, which reads as traced by
        // nobody): it is waited for to become one or the other.
        if (parent === undefined || !(e instanceof CptError) || !exiting(pid, e)) throw e;
        if (isZombie(pid)) task = zombieTask(pid);
      }
    }
    if (!task) return;
    tasks.push(task);
    byPid.set(pid, task);
    if (parent !== undefined) parentOf.set(pid, parent);
    if (task.zombie) return;
    for (const child of creationOrder(listChildren(pid))) visit(child, pid);
  };
  try {
    visit(root, undefined);
    // Every process is stopped: its children can only have changed by an exit from outside (a
    // SIGKILL), which the image must not miss.
    for (const t of tasks) {
      if (t.zombie) continue;
      const now = listChildren(t.pid);
      const known = tasks.filter((c) => parentOf.get(c.pid) === t.pid).map((c) => c.pid).sort((a, b) => a - b);
      if (String(now) !== String(known)) {
        throw new CptError('EAGAIN', `the children of process ${t.pid} changed while the tree was frozen (now ${now.join(',') || 'none'}, frozen ${known.join(',') || 'none'})`, { pid: t.pid, object: 'process tree' });
      }
    }
  } catch (e) {
    ops.letGo(tasks.filter((t) => !t.zombie));
    throw e;
  }
  const tree = { root, tasks };
  FROZEN.set(ctx, tree);
  noteTree(ctx, tree); // which processes may share a pipe, socket or memfd (core's holders.ts)
  return tree;
}

/** Children in the order they are made at restart: process group leaders first, then by pid. */
function creationOrder(children: number[]): number[] {
  const leader = (pid: number): boolean => {
    try {
      return linux.readStat(pid).pgrp === pid;
    } catch {
      return false;
    }
  };
  const leaders = children.filter(leader);
  return [...leaders, ...children.filter((c) => !leaders.includes(c))];
}

function listChildren(pid: number): number[] {
  try {
    return linux.listChildren(pid);
  } catch {
    throw new CptError('ESRCH', 'the process exited while the tree was being frozen', { pid });
  }
}

/** After a failed seize: whether the process is ending (zombie or gone within a second). */
function exiting(pid: number, e: CptError): boolean {
  // A child that exited between the look at it and the seize is refused by the freezer as a zombie.
  if (e.code === 'EOPNOTSUPP' && e.object === 'process' && isZombie(pid)) return true;
  if (e.code !== 'ESRCH' && e.code !== 'EBUSY') return false;
  for (let i = 0; i < 100; i++) {
    if (!linux.processExists(pid) || isZombie(pid)) return true;
    let tracer = -1;
    try {
      tracer = linux.readStatus(pid).tracerPid;
    } catch {
      return true;
    }
    if (e.code === 'EBUSY' && tracer !== 0) return false; // really traced by someone
    linux.sleepMs(10);
  }
  return false;
}

/**
 * A process stopped by SIGTSTP, SIGTTIN or SIGTTOU is stopped again at restart by the same
 * signal, with its default action, so that its parent's wait reports that signal. One whose
 * signal is now blocked, handled or ignored would not stop by it: refused. Read before the freeze.
 */
function refuseStopSignal(pid: number): void {
  let st: linux.ProcStat;
  try {
    st = linux.readStat(pid);
  } catch {
    return;
  }
  const sig = st.exitCode;
  if (st.state !== 'T' || sig === SIG.SIGSTOP || !linux.STOP_SIGNALS.has(sig)) return;
  // Its status only for a process stopped so (the time of a read is in the frozen window of the tree's first processes).
  let status: linux.ProcStatus;
  try {
    status = linux.readStatus(pid);
  } catch {
    return;
  }
  const bit = 1n << BigInt(sig - 1);
  const why = status.sigBlk & bit ? 'blocked' : status.sigCgt & bit ? 'handled' : status.sigIgn & bit ? 'ignored' : '';
  if (why) refuse(pid, 'stop', `the process was stopped by ${linux.signalName(sig)}, which it has ${why} since: it could not be stopped again by that signal`);
}

/**
 * The kernel discards SIGTSTP, SIGTTIN and SIGTTOU (default action) sent to an orphaned process
 * group, one where no member has a parent in another group of the same session. A process
 * stopped by one of them is restored stopped by it only if its group is not orphaned after the
 * restart: a member whose parent in the tree is in another group of the session (the root's
 * parent is cptrst's caller, which the restart does not keep).
 */
function refuseOrphanedStop(tree: FrozenTree, task: CheckpointTask, st: linux.ProcStat): void {
  const sig = task.state.get(STOP_SIGNAL) ?? 0;
  if (!sig || sig === SIG.SIGSTOP) return;
  // Dispositions do not change under the freeze (the mask may, for cptrst's calls: read before it).
  const status = frozenStatus(task);
  const bit = 1n << BigInt(sig - 1);
  if ((status.sigCgt | status.sigIgn) & bit) refuse(task.pid, 'stop', `the process was stopped by ${linux.signalName(sig)}, which it has ${status.sigCgt & bit ? 'handled' : 'ignored'} since: it could not be stopped again by that signal`);
  const anchored = tree.tasks.some((t) => {
    if (t.zombie || t.pid === tree.root) return false;
    const m = linux.readStat(t.pid);
    if (m.pgrp !== st.pgrp || !tree.tasks.some((p) => p.pid === m.ppid)) return false;
    const p = linux.readStat(m.ppid);
    return p.pgrp !== st.pgrp && p.session === m.session;
  });
  if (!anchored) {
    refuse(task.pid, 'stop', `the process was stopped by ${linux.signalName(sig)}, and its process group ${st.pgrp} has no member whose parent in the tree is in another group of session ${st.session}: after a restart the group is orphaned, and the kernel discards that signal there (checkpoint the tree of the job's shell)`);
  }
}

/** A zombie now (a process gone is not). */
function isZombie(pid: number): boolean {
  return linux.stateIfAlive(pid) === 'Z';
}

/**
 * A child that shares the memory of its parent (vfork, or clone with CLONE_VM) is refused before
 * the parent is frozen: a parent in vfork does not stop until its child execs or exits.
 */
function refuseSharedMemoryChildren(pid: number): void {
  let children: number[];
  try {
    children = linux.listChildren(pid);
  } catch {
    return; // it is gone: its freeze says so
  }
  for (const c of children) {
    if (sameObject(pid, c, KCMP.VM)) {
      refuse(pid, `child ${c}`, 'the child shares the memory of its parent (a vfork in progress, or clone with CLONE_VM); such children are not supported');
    }
  }
}

/** kcmp says that two processes share one kernel object (false when either is gone). */
function sameObject(a: number, b: number, type: number): boolean {
  try {
    return linux.kcmp(a, b, type) === 0;
  } catch {
    return false;
  }
}

/** A zombie: nothing to seize, nothing to run; its identity and its wait status. */
function zombieTask(pid: number): CheckpointTask {
  const st = linux.readStat(pid);
  if (st.numThreads > 1) refuse(pid, 'process', 'its main thread exited while other threads run on; such a process is not supported');
  return { pid, tid: pid, tracee: new ZombieTracee(pid), tag: 0, state: new TaskState([[ZOMBIE_STATUS, st.exitCode]]), zombie: true };
}

/** Stands in for the tracee of a zombie: there is no thread to stop or run anything in. */
class ZombieTracee implements Tracee {
  readonly interceptedSignals: Buffer[] = [];
  blockedSignals = 0n;
  readonly released = true;
  constructor(readonly pid: number) {}
  get tid(): number {
    return this.pid;
  }
  get frozenRegs(): never {
    return this.gone();
  }
  syscall(): bigint {
    return this.gone();
  }
  syscallOk(): bigint {
    return this.gone();
  }
  syscalls(): bigint[] {
    return this.gone();
  }
  scratch(): never {
    return this.gone();
  }
  stage(): bigint {
    return this.gone();
  }
  readMemory(): Buffer {
    return this.gone();
  }
  writeMemory(): void {
    this.gone();
  }
  readMemoryInto(): void {
    this.gone();
  }
  adoptScratch(): void {
    this.gone();
  }
  reservedRanges(): Array<{ start: bigint; end: bigint }> {
    return [];
  }
  restore(): void {
    this.gone();
  }
  detach(): void {
    /* nothing is attached */
  }
  forget(): void {
    /* nothing to forget */
  }
  private gone(): never {
    throw new CptError('ESRCH', 'the process is a zombie: nothing can run in it', { pid: this.pid, object: 'zombie' });
  }
}

/** The checks that look at a task among the others of its tree; nothing of its own is written. */
export class TreeDump implements DumpHandler {
  readonly name = 'task.tree';
  readonly order = 101;
  readonly zombies = true;
  check(ctx: CheckpointContext, task: CheckpointTask): void {
    const tree = FROZEN.get(ctx);
    if (!tree) return;
    const st = linux.readStat(task.pid);
    if (task.zombie) {
      const status = task.state.get(ZOMBIE_STATUS) ?? 0;
      if (status & 0x80) refuse(task.pid, 'exit status', `the zombie dumped core (wait status 0x${status.toString(16)}); a process cannot be made to dump core again`);
    }
    if (!task.zombie) refuseOrphanedStop(tree, task, st);
    if (task.pid === tree.root) return;
    const parent = linux.readStat(st.ppid);
    const pids = tree.tasks.map((t) => t.pid);
    const foreignSession = st.session !== task.pid && st.session !== parent.session;
    if (st.pgrp !== task.pid) {
      // The group must exist when the task is made: its leader (if in the tree) made before it.
      const at = pids.indexOf(task.pid);
      const leaderAt = pids.indexOf(st.pgrp);
      if (leaderAt > at) refuse(task.pid, `process group ${st.pgrp}`, `the leader of its process group, ${st.pgrp}, is made after it at restart (it is not its ancestor or an earlier sibling's); not supported`);
    }
    if (foreignSession) checkGoneSession(tree, task, st);
    if (task.zombie) return;
    // An fd table or fs struct shared with the parent is made again by clone inside the parent
    // (CLONE_FILES, CLONE_FS). Within a group of processes sharing one, every member but its top
    // must share it with its own parent: then each pair has one member made from its parent's.
    const live = (pid: number) => tree.tasks.some((t) => t.pid === pid && !t.zombie);
    const sharesUp = (pid: number, type: number) => pid !== tree.root && live(linux.readStat(pid).ppid) && sameObject(pid, linux.readStat(pid).ppid, type);
    let shared = 0;
    if (sharesUp(task.pid, KCMP.FILES)) shared |= CLONE.FILES;
    if (sharesUp(task.pid, KCMP.FS)) shared |= CLONE.FS;
    if (shared) task.state.set(SHARED_WITH_PARENT, shared);
    if (shared && foreignSession) refuse(task.pid, `session ${st.session}`, 'a process entering a session whose leader is gone cannot also share its parent\'s fd table or fs struct');
    for (const other of tree.tasks) {
      if (other.pid === task.pid || other.zombie) continue;
      if (sameObject(task.pid, other.pid, KCMP.VM)) refuse(task.pid, `memory shared with ${other.pid}`, 'two processes of the tree share one address space (clone with CLONE_VM); not supported');
      if (!(shared & CLONE.FILES) && sameObject(task.pid, other.pid, KCMP.FILES) && !sharesUp(other.pid, KCMP.FILES)) {
        refuse(task.pid, `fd table shared with ${other.pid}`, 'two processes of the tree share one fd table (clone with CLONE_FILES), and neither shares it with its parent; only an fd table shared through the parent can be made again');
      }
      if (!(shared & CLONE.FS) && sameObject(task.pid, other.pid, KCMP.FS) && !sharesUp(other.pid, KCMP.FS)) {
        refuse(task.pid, `fs struct shared with ${other.pid}`, 'two processes of the tree share cwd, root and umask (clone with CLONE_FS), and neither shares them with its parent; only an fs struct shared through the parent can be made again');
      }
    }
  }
  dump(): void {
    /* checks only: the tree is in the TASK objects (ppid, pgid, sid) and their order */
  }
}


/**
 * A member in a session that is neither its own nor its parent's: an orphan of a session whose
 * leader is gone, adopted by its parent as a child subreaper (a restart makes it the same way:
 * cloneInGoneSession). Refused unless: the leader is gone (neither in the tree nor alive), no
 * other member enters that session from another one (the session's pid stays taken by the first),
 * its group is its own or the session's, and its parent is a child subreaper.
 */
function checkGoneSession(tree: FrozenTree, task: CheckpointTask, st: linux.ProcStat): void {
  const sid = st.session;
  const what = `session ${sid}`;
  const changed = `its parent changed session after making it, or it was adopted from a session whose leader`;
  if (tree.tasks.some((t) => t.pid === sid)) refuse(task.pid, what, `the process is in session ${sid}, neither its own nor its parent's; ${changed} is a member of the tree but not its ancestor: not supported`);
  if (linux.processExists(sid)) refuse(task.pid, what, `the process is in session ${sid}, whose leader, process ${sid}, is outside the tree: checkpoint the leader's tree`);
  if (st.pgrp !== task.pid && st.pgrp !== sid) refuse(task.pid, `process group ${st.pgrp}`, `the process is in session ${sid} whose leader is gone, and in process group ${st.pgrp}, neither its own nor the session's: not supported`);
  const entering = tree.tasks.filter((t) => {
    if (t.pid === tree.root) return false;
    const s = linux.readStat(t.pid);
    return s.session === sid && s.session !== t.pid && linux.readStat(s.ppid).session !== sid;
  });
  if (entering.length > 1) refuse(task.pid, what, `processes ${entering.map((t) => t.pid).join(', ')} are in session ${sid}, whose leader is gone, each under a parent of another session; only one such process per session can be made again`);
  const parent = tree.tasks.find((t) => t.pid === st.ppid);
  const p = parent?.tracee;
  let subreaper = false;
  if (p && !parent.zombie) subreaper = isChildSubreaper(p) === true;
  if (!subreaper) refuse(task.pid, what, `the process is in session ${sid}, neither its own nor its parent's, and its parent ${st.ppid} is no child subreaper that adopted it: its parent changed session after making it, which cannot be made again`);
}

// ---------------------------------------------------------------------------------------------
// restart

/** The session (whose leader is gone) a task enters under its parent: made by cloneInGoneSession. */
export const GONE_SESSION = new StateKey<number>('task.goneSession');

/** The tasks of a restart by pid, in image order. */
const RESTORED = new WeakMap<RestartContext, Map<number, RestartTask>>();
/** The image's parent of each task (absent for the root). */
const PARENT = new StateKey<RestartTask>('task.parent');

/**
 * Takes a TASK object's place in the tree: the first task is the root; every other one names a
 * parent that comes before it in the image and is not a zombie (EBADIMG otherwise).
 */
export function joinTree(ctx: RestartContext, task: RestartTask, ppid: number): void {
  const tasks = RESTORED.get(ctx) ?? new Map<number, RestartTask>();
  RESTORED.set(ctx, tasks);
  const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: 'process tree' });
  if (tasks.has(task.pid)) throw bad(`a second task with pid ${task.pid}`);
  if (tasks.size > 0) {
    const parent = tasks.get(ppid);
    if (!parent) throw bad(`its parent ${ppid} is not an earlier task of the image`);
    if (parent.zombie) throw bad(`its parent ${ppid} is a zombie`);
    task.state.set(PARENT, parent);
  }
  if (tasks.size >= MAX_TASKS) throw bad(`more than ${MAX_TASKS} tasks`);
  tasks.set(task.pid, task);
}

/**
 * The TASK object's cloneFlags: only CLONE_FILES and CLONE_FS, only for a live task that is not
 * the root (it is made with them inside its parent).
 */
export function sharesWithParent(task: RestartTask, flags: number, parent: RestartTask | undefined, zombie: boolean): void {
  if (!flags) return;
  const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: 'task' });
  if (flags & ~(CLONE.FILES | CLONE.FS)) throw bad(`clone flags 0x${flags.toString(16)}: only CLONE_FILES and CLONE_FS are shared with a parent`);
  if (!parent || zombie) throw bad('only a live task with a parent in the image shares its fd table or fs struct with it');
  task.state.set(SHARED_WITH_PARENT, flags);
}

/** The restored parent of a task, undefined for the root. */
export const parentOf = (task: RestartTask): RestartTask | undefined => task.state.get(PARENT);

/** An earlier task of the image with this pid. */
export const restoredTask = (ctx: RestartContext, pid: number): RestartTask | undefined => RESTORED.get(ctx)?.get(pid);

/**
 * Makes the task exit with its recorded wait status, so that it is its parent's zombie again: an
 * exit code by exit_group, a signal by that signal's default action (no core dump: the task is
 * made non-dumpable first). As its tracer, cptrst collects the exit first, which hands the zombie
 * on to the parent, as it was.
 */
export function becomeZombie(task: RestartTask, status: number): void {
  const t = task.tracee!;
  const pid = task.pid;
  const sig = status & 0x7f;
  const bad = (m: string) => new CptError('EBADIMG', m, { pid, object: 'exit status' });
  if ((status & 0xff) === 0x7f || status & 0x80 || status >>> 16 || (sig !== 0 && (status & 0xff00))) throw bad(`wait status 0x${status.toString(16)} is not that of a process that ended without a core dump`);
  if (sig === 0) {
    try {
      t.syscall(SYS.exit_group, [(status >> 8) & 0xff]);
    } catch (e) {
      if (!(e instanceof CptError) || e.code !== 'ESRCH') throw e;
    }
  } else {
    if (sig === SIG.SIGKILL) {
      linux.kill(pid, SIG.SIGKILL);
    } else {
      if (!fatalByDefault(sig)) throw bad(`signal ${sig} does not end a process by default`);
      t.syscallOk(SYS.prctl, [PR.SET_DUMPABLE, 0, 0, 0, 0], 'prctl(PR_SET_DUMPABLE, 0)');
      const dfl = encodeStruct(linux.KernelSigaction, { handler: 0n, flags: 0n, restorer: 0n, mask: 0n });
      t.syscallOk(SYS.rt_sigaction, [sig, t.stage(dfl), 0, 8], `rt_sigaction(${linux.signalName(sig)}, SIG_DFL)`);
      linux.ptrace.setSigmask(pid, 0n);
      linux.kill(pid, sig);
    }
    runToDeath(pid);
  }
  t.forget();
  const now = linux.readStat(pid);
  if (now.state !== 'Z' || now.exitCode !== status) throw new CptError('EIO', `the zombie is ${now.state} with wait status 0x${now.exitCode.toString(16)}, not 0x${status.toString(16)}`, { pid, object: 'exit status' });
  task.zombie = true;
}

/** Signals whose default action ends the process (not ignore, stop or continue). */
function fatalByDefault(sig: number): boolean {
  const notFatal: number[] = [SIG.SIGCHLD, SIG.SIGCONT, SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU, SIG.SIGURG, SIG.SIGWINCH];
  return sig >= 1 && sig <= linux.NSIG && !notFatal.includes(sig);
}

/** Lets a traced task run into its pending fatal signal, and collects its end as its tracer. */
function runToDeath(pid: number): void {
  contQuietly(pid, 0); // SIGKILL takes it out of its stop by itself
  for (;;) {
    const w = linux.waitpid(pid, WAIT.__WALL);
    if (w.exited !== undefined || w.signaled !== undefined) return;
    const s = w.stopped!;
    // The signal-delivery stop: let the signal act.
    contQuietly(pid, s.event === 0 && !s.syscallStop ? s.sig : 0);
  }
}

function contQuietly(pid: number, sig: number): void {
  try {
    linux.ptrace.cont(pid, sig);
  } catch (e) {
    if (!(e instanceof CptError) || e.code !== 'ESRCH') throw e;
  }
}

/**
 * Puts a task that is not the root into its process group when no process of it exists yet
 * (its leader exited before the checkpoint): a helper with the leader's pid is made in the
 * parent, becomes the group's leader, and is killed and reaped by the parent once the task has
 * joined. The helper's exit signal is 0, so the parent is not told.
 */
export function joinGroupWithHelper(ctx: RestartContext, task: RestartTask, pgid: number, waitMs: number): void {
  const parent = parentOf(task);
  if (!parent?.tracee) throw new CptError('EPERM', `process group ${pgid} does not exist here`, { pid: task.pid, object: `process group ${pgid}` });
  const p = parent.tracee;
  const helper = cloneInto(ctx, p, pgid, 0, waitMs);
  let reaped: bigint;
  try {
    helper.syscallOk(SYS.setpgid, [0, 0], `setpgid of the helper for process group ${pgid}`);
    task.tracee!.syscallOk(SYS.setpgid, [0, pgid], `setpgid(0, ${pgid})`);
  } finally {
    releaseTracee(helper, 'kill');
    // The parent takes the helper's exit (it is its child), before anything of the parent runs:
    // its own wait() must never see it.
    reaped = p.syscall(SYS.wait4, [pgid, 0, WAIT.__WALL, 0]);
  }
  if (reaped !== BigInt(pgid)) throw new CptError('EIO', `the parent could not reap the helper of process group ${pgid} (${reaped < 0n ? linux.errnoName(Number(-reaped)) : reaped})`, { pid: task.pid, object: `process group ${pgid}` });
}

/**
 * A task in a session whose leader is gone, under a parent of another session that adopted it as
 * a child subreaper, is made as it came to be: a helper with the leader's pid is made in the
 * parent and calls setsid, the task is made in the helper (so in that session and its group), and
 * the helper is killed: the task is adopted by the parent (a child subreaper by now: task.misc
 * sets it before the children are made), which reaps the helper before anything of it runs. The
 * helper's exit signal is 0, so the parent is not told.
 */
export function cloneInGoneSession(ctx: RestartContext, task: RestartTask, sid: number, exitSignal: number, waitMs: number): Tracee {
  const parent = parentOf(task);
  const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: `session ${sid}` });
  if (!parent?.tracee) throw bad('a task entering a session under its parent needs a parent');
  if (restoredTask(ctx, sid)) throw bad(`the leader of session ${sid} is a task of the image, not one that is gone`);
  const p = parent.tracee;
  const helper = cloneInto(ctx, p, sid, 0, waitMs);
  let child: Tracee | undefined;
  let reaped: bigint;
  try {
    helper.syscallOk(SYS.setsid, [], `setsid of the helper for session ${sid}`);
    child = cloneInto(ctx, helper, task.pid, exitSignal, waitMs);
  } finally {
    releaseTracee(helper, 'kill');
    // The parent takes the helper's exit (it is its child) before anything of the parent runs.
    reaped = p.syscall(SYS.wait4, [sid, 0, WAIT.__WALL, 0]);
  }
  const ppid = linux.readStat(task.pid).ppid;
  if (reaped !== BigInt(sid) || ppid !== parent.pid) {
    releaseTracee(child, 'kill');
    throw new CptError('EIO', `the helper of session ${sid} was ${reaped === BigInt(sid) ? '' : 'not '}reaped by the parent, and the task's parent is ${ppid}, not ${parent.pid} (the parent must be a child subreaper)`, { pid: task.pid, object: `session ${sid}` });
  }
  return child;
}

/**
 * clone3 inside `parent` with set_tid = [pid] (and `flags`: CLONE_FILES, CLONE_FS to share the
 * parent's fd table or fs struct): the new process is a copy of the parent, stopped
 * (auto-attached, PTRACE_O_TRACEFORK inherited from the process cptrst made first) before it runs
 * an instruction, with the parent's scratch area at the same address. A PID still held by a
 * process going away is waited for, up to `waitMs`.
 */
export function cloneInto(ctx: RestartContext, parent: Tracee, pid: number, exitSignal: number, waitMs: number, flags = 0): Tracee {
  const scratch = parent.scratch();
  const setTid = Buffer.alloc(8);
  setTid.writeInt32LE(pid, 0);
  const setTidAddr = parent.stage(setTid, 128);
  const args = encodeStruct(linux.CloneArgs, { flags: BigInt(flags), exitSignal: BigInt(exitSignal), setTid: setTidAddr, setTidSize: 1n });
  const argsAddr = parent.stage(args, 0);
  const deadline = Date.now() + waitMs;
  for (let attempt = 0; ; attempt++) {
    const r = parent.syscall(SYS.clone3, [argsAddr, args.length]);
    if (r === -BigInt(linux.ERRNO.EEXIST)) {
      if (Date.now() >= deadline) {
        throw new CptError('EEXIST', `PID ${pid} is taken by ${describeHolder(pid)}; waited ${waitMs} ms for it to be freed`, { pid, object: `pid ${pid}` });
      }
      if (attempt === 0) ctx.log.info(`pid ${pid} is taken by ${describeHolder(pid)}; waiting for it`);
      linux.sleepMs(50);
      continue;
    }
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `clone3 with set_tid ${pid} in process ${parent.pid} failed: ${linux.errnoName(Number(-r))}`, { pid, object: 'clone3' });
    if (Number(r) !== pid) {
      linux.killAndReap(Number(r));
      throw new CptError('EINVAL', `clone3 made pid ${r}, not ${pid}`, { pid });
    }
    break;
  }
  let child: Tracee | undefined;
  try {
    linux.waitForEventStop(pid, `process ${pid}`);
    child = ctx.one(Tokens.TraceeFactory).fromStopped(pid, pid, { diesWithTracer: true });
    child.adoptScratch(scratch.addr);
    return child;
  } catch (e) {
    if (child) releaseTracee(child, 'kill');
    else linux.killAndReap(pid);
    throw e;
  }
}

function describeHolder(pid: number): string {
  try {
    const st = linux.readStat(pid);
    return `process ${pid} (${st.comm}, state ${st.state}, parent ${st.ppid})`;
  } catch {
    return `a process ${pid} that is going away`;
  }
}
