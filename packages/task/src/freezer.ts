/**
 * Freezing for checkpoint: every thread of the process seized and stopped (PTRACE_SEIZE, then
 * PTRACE_INTERRUPT, until /proc/PID/task is stable), for each process of the tree (tree.ts); each
 * thread gets its own tracee. What this version cannot checkpoint (a tracer of its own) is refused
 * before anything is touched, and checked again once the process is stopped.
 * A failed freeze lets go of what it seized; release never throws.
 */
import {
  CheckpointContext, CheckpointTask, CptError, Freezer, FrozenTree, ReleaseMode, StateKey, TaskState, Tokens, linux, refuse, setFrozenStatus,
} from '@cptrst/core';

import { TaskThread, Tracee, archOf, releaseGroup, releaseTracee } from '@cptrst/core';
import { STOP_SIGNAL, freezeTree } from './tree';

const { ptrace, waitpid, PTRACE_O, PTRACE_EVENT, WAIT } = linux;

/** The task was stopped by job control when it was frozen (it is let go stopped, and restored so). */
export const WAS_STOPPED = new StateKey<boolean>('task.wasStopped');

/**
 * The checkpoint's release policy: the original process carries on from its frozen registers,
 * with the Arch's syscall-restart rule for a process that keeps its kernel restart state.
 */
function letGo(ctx: CheckpointContext, tracee: Tracee, mode: ReleaseMode, threads: readonly TaskThread[] = [], wasStopped = false): void {
  const resume = (t: Tracee) => (mode === 'kill' ? undefined : archOf(ctx.container).resumeRegs(t.frozenRegs, 'original'));
  const others = threads.filter((t) => t.tracee).map((t) => ({ tracee: t.tracee!, regs: resume(t.tracee!) }));
  if (others.length) releaseGroup(tracee, others, mode, resume(tracee), wasStopped);
  else releaseTracee(tracee, mode, resume(tracee), wasStopped);
}

export class PtraceFreezer implements Freezer {
  /**
   * cptrst's ancestors, listed before the freeze, once per checkpoint (not once per process and
   * check): a process that is not one of them then cannot become one, since an orphan is only
   * ever adopted by one of its ancestors (a subreaper, or init).
   */
  prepare(ctx: CheckpointContext): void {
    ANCESTORS.set(ctx, new Set(ancestorsOf(process.pid)));
  }

  /** The process and all its descendants (tree.ts walks the tree, one process at a time through freezeProcess). */
  freeze(ctx: CheckpointContext, pid: number): FrozenTree {
    if (!ANCESTORS.has(ctx)) this.prepare(ctx);
    const ancestors = ANCESTORS.get(ctx)!;
    return ctx.timed('freeze', () => freezeTree(ctx, pid, {
      one: (p) => this.freezeProcess(ctx, p, ancestors),
      letGo: (tasks) => this.release(ctx, { root: pid, tasks }, 'run'),
    }));
  }

  /** One process: every thread seized and stopped; let go again if it is refused. */
  private freezeProcess(ctx: CheckpointContext, pid: number, ancestors: ReadonlySet<number>): CheckpointTask {
    const status = this.refuseUnsupported(pid, ancestors);
    const wasStopped = status.state.startsWith('T');
    const group = new ThreadGroupFreeze(pid);
    let task: CheckpointTask | undefined;
    try {
      group.freeze();
      // It may have changed before the stop; the read made now serves the handlers (frozenStatus),
      // the main thread's seccomp suspension and its tracee (its seccomp mode and dispositions).
      const frozen = this.refuseUnsupported(pid, ancestors);
      group.suspendSeccomp(frozen);
      const stopSignal = wasStopped ? group.groupStopSignal || linux.SIG.SIGSTOP : 0;
      task = group.frozenTask(ctx, new TaskState([[WAS_STOPPED, wasStopped], [STOP_SIGNAL, stopSignal]]), frozen);
      setFrozenStatus(task, frozen);
      ctx.progress({ phase: 'frozen', pid });
      return task;
    } catch (e) {
      // Every thread with a tracee through it (the other threads first get their registers
      // and mask back, then the main thread is let go, then they are detached); any thread
      // without one as it stands.
      try {
        if (task) letGo(ctx, task.tracee, 'run', task.threads);
      } catch (r) {
        ctx.log.warn(`pid ${pid}: release after a failed freeze: ${(r as Error).message}`);
      } finally {
        group.letGo(task === undefined);
      }
      throw e;
    }
  }

  release(ctx: CheckpointContext, tree: FrozenTree, mode: ReleaseMode): void {
    ctx.timed('release', () => {
      for (const t of tree.tasks) {
        // A task that was stopped before we came stays stopped when it is let run.
        const wasStopped = t.state.get(WAS_STOPPED) === true;
        const m: ReleaseMode = mode === 'run' && wasStopped ? 'stop' : mode;
        try {
          letGo(ctx, t.tracee, m, t.threads, wasStopped);
        } catch (e) {
          // A task that died meanwhile has nothing left to release.
          if (isAlive(t.pid)) ctx.log.warn(`pid ${t.pid}: release (${m}) failed: ${(e as Error).message}`);
          for (const th of t.threads ?? []) detachQuietly(th.tid);
          detachQuietly(t.tid);
        }
      }
    });
  }

  /** Refuses what this version cannot freeze; returns the status it read. */
  private refuseUnsupported(pid: number, ancestors: ReadonlySet<number>): linux.ProcStatus {
    if (pid === process.pid) refuse(pid, 'process', 'cptrst cannot checkpoint itself');
    let status: linux.ProcStatus;
    try {
      status = linux.readStatus(pid);
    } catch {
      throw new CptError('ESRCH', 'no such process', { pid });
    }
    if (status.state.startsWith('Z') || status.state.startsWith('X')) refuse(pid, 'process', 'it is a zombie');
    if (status.tracerPid !== 0 && status.tracerPid !== process.pid) {
      throw new CptError('EBUSY', `it is already traced by pid ${status.tracerPid}`, { pid, object: 'ptrace' });
    }
    if (ancestors.has(pid)) refuse(pid, 'process', 'it is an ancestor of cptrst itself');
    return status;
  }
}

/** cptrst's ancestors as listed before the freeze of a checkpoint. */
const ANCESTORS = new WeakMap<CheckpointContext, ReadonlySet<number>>();

/** Rounds of listing /proc/PID/task before a process that keeps making threads is given up on. */
const MAX_ROUNDS = 1000;

/**
 * Every thread of one process, seized and stopped at once. Each thread is traced on its own:
 * PTRACE_SEIZE and PTRACE_INTERRUPT each thread listed in /proc/PID/task, with
 * PTRACE_O_TRACECLONE so that a thread made by a seized thread before its stop is attached by the
 * kernel (it starts in a stop of its own); list again until every listed thread is stopped. A
 * thread that exits on the way is dropped. Blocking waits, each on one thread id: never a wait
 * for any child, which could collect a child of whoever called cptrst.
 */
export class ThreadGroupFreeze {
  /** Signals taken off the main thread in signal-delivery stops (its tracee queues them again). */
  readonly intercepted: Buffer[] = [];
  /**
   * The signal of the group stop the main thread was in when seized (its PTRACE_EVENT_STOP
   * names it even once the parent has collected the stop); 0 when it was not in one.
   */
  groupStopSignal = 0;
  private readonly stopped = new Set<number>();
  /** Seized (or attached by the kernel) and interrupted, their stop not yet collected. */
  private readonly pending = new Set<number>();
  private handedOver = false;

  constructor(private readonly pid: number) {}

  freeze(): void {
    for (let round = 0; ; round++) {
      if (round === MAX_ROUNDS) throw new CptError('EAGAIN', `its threads did not settle after ${MAX_ROUNDS} rounds of seizing`, { pid: this.pid, object: 'threads' });
      let fresh = 0;
      for (const tid of this.listThreads()) {
        if (this.stopped.has(tid) || this.pending.has(tid)) continue;
        if (this.seize(tid)) fresh++;
      }
      if (fresh === 0 && this.pending.size === 0) break;
      for (const tid of [...this.pending]) this.collectStop(tid);
    }
    if (!this.stopped.has(this.pid)) throw new CptError('ESRCH', 'the process exited while it was being frozen', { pid: this.pid });
  }

  /**
   * cptrst's calls inside a thread under seccomp must not meet its filters (one may kill the
   * process for a call it never makes itself): PTRACE_O_SUSPEND_SECCOMP until the detach. Only
   * once every thread is stopped (after freeze()), since a running one could still give the others
   * a filter (TSYNC). `main`: the main thread's status, read since they all stopped.
   */
  suspendSeccomp(main: linux.ProcStatus): void {
    for (const tid of this.stopped) {
      const seccomp = tid === this.pid ? main.seccomp : linux.readStatus(this.pid, tid).seccomp;
      if (seccomp !== 0) ptrace.setOptions(tid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACECLONE | PTRACE_O.SUSPEND_SECCOMP);
    }
  }

  stoppedThreads(): number[] {
    return [...this.stopped].sort((a, b) => a - b);
  }

  /**
   * The frozen process as a checkpoint task: a tracee for the main thread (holding the signals
   * taken off it) and one for each other thread, which borrows the main thread's scratch area.
   * Once this returns, every thread is let go through the task's tracees (letGo(false) for the
   * threads the freeze may still hold on a failure).
   */
  frozenTask(ctx: CheckpointContext, state: TaskState, status: linux.ProcStatus): CheckpointTask {
    const factory = ctx.one(Tokens.TraceeFactory);
    const tracee = factory.fromStopped(this.pid, this.pid, { status });
    tracee.interceptedSignals.push(...this.intercepted);
    const threads: TaskThread[] = [];
    for (const tid of this.stoppedThreads()) {
      if (tid !== this.pid) threads.push({ tid, tracee: factory.threadOf(tracee, tid), tag: 0, state: new TaskState() });
    }
    this.handedOver = true;
    return { pid: this.pid, tid: this.pid, tracee, tag: 0, state, threads };
  }

  /**
   * Lets every thread go as it stands (nothing was run in any of them), except the main thread
   * when `withMain` is false (its tracee releases it).
   */
  letGo(withMain: boolean): void {
    if (this.handedOver) return; // the task's tracees let every thread go
    for (const tid of [...this.pending]) {
      try {
        this.collectStop(tid);
      } catch {
        /* gone */
      }
    }
    for (const tid of this.stopped) {
      if (tid !== this.pid || withMain) detachQuietly(tid);
    }
  }

  private listThreads(): number[] {
    try {
      return linux.listThreads(this.pid);
    } catch {
      throw new CptError('ESRCH', 'the process exited while it was being frozen', { pid: this.pid });
    }
  }

  /** Seizes and interrupts one listed thread; false when it is gone already. */
  private seize(tid: number): boolean {
    try {
      ptrace.seize(tid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACECLONE);
    } catch (e) {
      const code = (e as CptError).code;
      if (code === 'ESRCH') {
        if (tid === this.pid) throw new CptError('ESRCH', 'the process exited while it was being frozen', { pid: this.pid });
        return false;
      }
      // A thread made by a seized thread is ours already: its creator's clone event names it.
      if (code === 'EPERM' && tracerOf(this.pid, tid) === process.pid) {
        this.pending.add(tid);
        return true;
      }
      if (code === 'EPERM') {
        const tracer = tracerOf(this.pid, tid);
        // The kernel refuses to attach to a thread on its way out: untraced, it is exiting.
        if (tracer === 0) {
          if (tid === this.pid) throw new CptError('ESRCH', 'the process exited while it was being frozen', { pid: this.pid });
          return false;
        }
        throw new CptError('EBUSY', `thread ${tid} is already traced by pid ${tracer}`, { pid: this.pid, object: `thread ${tid}` });
      }
      throw e;
    }
    this.pending.add(tid);
    ptrace.interrupt(tid);
    return true;
  }

  /** Waits for the thread's PTRACE_EVENT_STOP, handling what comes before it. */
  private collectStop(tid: number): void {
    for (;;) {
      const w = waitpid(tid, WAIT.__WALL);
      if (w.exited !== undefined || w.signaled !== undefined) {
        this.pending.delete(tid);
        if (tid === this.pid) throw new CptError('ESRCH', 'the process exited while it was being frozen', { pid: this.pid });
        return;
      }
      const s = w.stopped!;
      if (s.event === PTRACE_EVENT.STOP) {
        if (tid === this.pid && s.groupStop) this.groupStopSignal = s.sig;
        this.pending.delete(tid);
        this.stopped.add(tid);
        return;
      }
      let sig = 0;
      if (s.event === PTRACE_EVENT.CLONE) {
        // The new thread is attached and starts in a stop of its own.
        const child = Number(ptrace.getEventMsg(tid));
        if (!this.stopped.has(child)) this.pending.add(child);
      } else if (s.event === 0 && !s.syscallStop) {
        // A signal on its way to the thread. The main thread's tracee keeps it and queues it
        // again; any other thread gets it now, as it would have without cptrst.
        if (tid === this.pid) this.intercepted.push(ptrace.getSiginfo(tid));
        else sig = s.sig;
      }
      // Any ptrace stop clears a pending interrupt: ask again before it runs on.
      ptrace.interrupt(tid);
      ptrace.cont(tid, sig);
    }
  }
}

/** The tracer of one thread (0 if none or gone). */
function tracerOf(pid: number, tid: number): number {
  try {
    return linux.readStatus(pid, tid).tracerPid;
  } catch {
    return 0;
  }
}

function ancestorsOf(pid: number): number[] {
  const out: number[] = [];
  for (let p = pid; p > 1 && out.length < 256; ) {
    try {
      p = linux.readStat(p).ppid;
      out.push(p);
    } catch {
      break;
    }
  }
  return out;
}

/** Running or stopped; not a zombie, not gone. */
function isAlive(pid: number): boolean {
  try {
    return !['Z', 'X'].includes(linux.readStat(pid).state);
  } catch {
    return false;
  }
}

function detachQuietly(tid: number): void {
  try {
    ptrace.detach(tid, 0);
  } catch {
    /* not stopped or not ours any more: the kernel detaches on our exit */
  }
}
