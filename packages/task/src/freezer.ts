/**
 * Freezing for checkpoint: PTRACE_SEIZE, then PTRACE_INTERRUPT, until the task
 * sits in a ptrace stop. What this version cannot checkpoint (threads, children, a tracer of its
 * own) is refused before anything is touched, and checked again once the task is stopped.
 * A failed freeze lets go of what it seized; release never throws.
 */
import {
  CheckpointContext, CheckpointTask, CptError, Freezer, FrozenTree, ReleaseMode, StateKey, TaskState, Tokens, linux, refuse,
} from '@cptrst/core';

import { Tracee, archOf, releaseTracee } from '@cptrst/core';

const { ptrace, waitpid, PTRACE_O, PTRACE_EVENT, WAIT } = linux;

/** The task was stopped by job control when it was frozen (it is let go stopped, and restored so). */
export const WAS_STOPPED = new StateKey<boolean>('task.wasStopped');

/**
 * The checkpoint's release policy: the original process carries on from its frozen registers,
 * with the Arch's syscall-restart rule for a process that keeps its kernel restart state.
 */
function letGo(ctx: CheckpointContext, tracee: Tracee, mode: ReleaseMode): void {
  releaseTracee(tracee, mode, mode === 'kill' ? undefined : archOf(ctx.container).resumeRegs(tracee.frozenRegs, 'original'));
}

export class PtraceFreezer implements Freezer {
  freeze(ctx: CheckpointContext, pid: number): FrozenTree {
    return ctx.timed('freeze', () => {
      this.refuseUnsupported(pid);
      const status = linux.readStatus(pid);
      const wasStopped = status.state.startsWith('T');
      ptrace.seize(pid, PTRACE_O.TRACESYSGOOD);
      let task: CheckpointTask | undefined;
      try {
        const intercepted = this.interrupt(pid);
        this.refuseUnsupported(pid); // a thread or child may have appeared before the stop
        const tracee = ctx.one(Tokens.TraceeFactory).fromStopped(pid, pid);
        tracee.interceptedSignals.push(...intercepted);
        task = { pid, tid: pid, tracee, tag: 0, state: new TaskState([[WAS_STOPPED, wasStopped]]) };
        ctx.progress({ phase: 'frozen', pid });
        return { root: pid, tasks: [task] };
      } catch (e) {
        if (task) letGo(ctx, task.tracee, 'run');
        else detachQuietly(pid);
        throw e;
      }
    });
  }

  release(ctx: CheckpointContext, tree: FrozenTree, mode: ReleaseMode): void {
    ctx.timed('release', () => {
      for (const t of tree.tasks) {
        // A task that was stopped before we came stays stopped when it is let run.
        const m: ReleaseMode = mode === 'run' && t.state.get(WAS_STOPPED) === true ? 'stop' : mode;
        try {
          letGo(ctx, t.tracee, m);
        } catch (e) {
          // A task that died meanwhile has nothing left to release.
          if (isAlive(t.pid)) ctx.log.warn(`pid ${t.pid}: release (${m}) failed: ${(e as Error).message}`);
          detachQuietly(t.tid);
        }
      }
    });
  }

  /** Waits for the interrupt stop; signal-delivery stops on the way are taken off the task and returned. */
  private interrupt(pid: number): Buffer[] {
    const intercepted: Buffer[] = [];
    ptrace.interrupt(pid);
    for (;;) {
      const w = waitpid(pid, WAIT.__WALL);
      if (w.exited !== undefined || w.signaled !== undefined) {
        throw new CptError('ESRCH', 'the process exited while it was being frozen', { pid });
      }
      const s = w.stopped!;
      if (s.event === PTRACE_EVENT.STOP) return intercepted;
      if (s.event === 0) intercepted.push(ptrace.getSiginfo(pid));
      ptrace.cont(pid, 0);
    }
  }

  private refuseUnsupported(pid: number): void {
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
    const threads = linux.listThreads(pid);
    if (threads.length > 1) refuse(pid, `threads ${threads.filter((t) => t !== pid).join(',')}`, `the process has ${threads.length} threads; multi-threaded processes are not supported yet`);
    const children = linux.listChildren(pid);
    if (children.length) refuse(pid, `children ${children.join(',')}`, 'the process has child processes; process trees are not supported yet');
    for (const ancestor of ancestorsOf(process.pid)) {
      if (ancestor === pid) refuse(pid, 'process', 'it is an ancestor of cptrst itself');
    }
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
