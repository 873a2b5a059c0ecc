/**
 * Letting a task go: the policy around the Tracee's mechanism. The caller decides how (run, stop
 * or kill) and with which registers (the Arch's syscall-restart rule applied to the frozen or the
 * image's registers); this puts the signals cptrst took off the task back into its queue, ends the
 * injected calls, and detaches, stops or kills it. Used by the task package's freezer at
 * checkpoint and by the flows at restart.
 */
import type { ArchRegs } from './arch';
import type { ReleaseMode, Tracee } from './contract';
import { CptError } from './errors';
import { SIG } from './linux/constants';
import { reapKilled } from './linux/helper-process';
import { kill, sleepMs } from './linux/process';
import { listThreads, readStat } from './linux/proc';
import { SYS } from './linux/syscalls';

/**
 * Lets the thread go. `regs` are the registers it carries on with (needed unless it is killed).
 * `stopped`: the process was in a job-control stop before it was seized; for `stop` no signal is
 * sent then: the detach puts it back into that stop, with its own stop signal, if it is still in
 * effect (the kernel keeps a group stop across tracing), and a SIGCONT sent meanwhile is obeyed
 * (a SIGSTOP of ours would stay pending in the stopped process, or stop it again after that SIGCONT).
 * The tracee is released afterwards whatever happens.
 */
export function releaseTracee(tracee: Tracee, mode: ReleaseMode, regs?: ArchRegs, stopped = false): void {
  if (tracee.released) return;
  try {
    if (mode === 'kill') {
      kill(tracee.pid, SIG.SIGKILL);
      reapIfTraced(tracee.pid, tracee.tid);
      return;
    }
    if (!regs) throw new CptError('EINVAL', 'no registers to let the task go with', { pid: tracee.pid, object: 'regs' });
    // Signals dequeued before the freeze stop go back into the queue, while everything is blocked.
    requeueIntercepted(tracee);
    tracee.restore(regs);
    // Queued after the last injected call (a SIGSTOP during one would be taken off the task) and
    // before the detach: it acts as soon as the task runs.
    if (mode === 'stop' && !stopped) kill(tracee.pid, SIG.SIGSTOP);
    tracee.detach();
    if (mode === 'stop') waitUntilStopped(tracee.pid);
  } finally {
    tracee.forget();
  }
}

/** Another thread of a task, to be let go with it, and the registers it carries on with. */
export interface ThreadRelease {
  readonly tracee: Tracee;
  readonly regs?: ArchRegs;
}

/**
 * Lets a task and its other threads go together: every other thread gets its registers and
 * mask first (staying stopped), then the main thread is let go as releaseTracee does (for
 * `stop`, its SIGSTOP stops the whole group), then the other threads are detached. For `kill`,
 * SIGKILL takes the whole group, and the other threads' exits are collected before the main
 * thread's (a traced group leader is reported only once its other threads are gone).
 */
export function releaseGroup(main: Tracee, threads: readonly ThreadRelease[], mode: ReleaseMode, regs?: ArchRegs, stopped = false): void {
  const held = threads.filter((t) => !t.tracee.released);
  // One thread that cannot be let go does not keep the others, or the main thread, from it.
  let failure: Error | undefined;
  const each = (f: () => void) => {
    try {
      f();
    } catch (e) {
      failure ??= e instanceof Error ? e : new CptError('EIO', String(e));
    }
  };
  try {
    if (mode !== 'kill') {
      for (const t of held) {
        each(() => {
          if (!t.regs) throw new CptError('EINVAL', `no registers to let thread ${t.tracee.tid} go with`, { pid: t.tracee.pid, object: `thread ${t.tracee.tid}` });
          requeueIntercepted(t.tracee);
          t.tracee.restore(t.regs);
        });
      }
    }
    each(() => releaseTracee(main, mode, regs, stopped));
    if (mode !== 'kill') for (const t of held) each(() => t.tracee.detach());
  } finally {
    for (const t of held) t.tracee.forget();
  }
  if (failure !== undefined) throw failure;
}

/**
 * Lets several tasks go (a restored process tree) with the shortest window between the first and
 * the last one running on their own: every task's last injected calls and registers first (its
 * other threads' too), then the detaches (and stop signals: SIGSTOP, or the entry's stopSignal)
 * one after the other. Killed ones are
 * killed first. Each tracee is released afterwards whatever happens.
 */
export function releaseTracees(all: ReadonlyArray<{ tracee: Tracee; mode: ReleaseMode; regs?: ArchRegs; threads?: readonly ThreadRelease[]; stopSignal?: number }>): void {
  const live = all.filter((a) => !a.tracee.released);
  const threadsOf = (a: { threads?: readonly ThreadRelease[] }) => (a.threads ?? []).filter((t) => !t.tracee.released);
  try {
    for (const a of live) if (a.mode === 'kill') releaseGroup(a.tracee, threadsOf(a), 'kill');
    const going = live.filter((a) => a.mode !== 'kill');
    for (const a of going) {
      for (const t of threadsOf(a)) {
        if (!t.regs) throw new CptError('EINVAL', `no registers to let thread ${t.tracee.tid} go with`, { pid: t.tracee.pid, object: `thread ${t.tracee.tid}` });
        requeueIntercepted(t.tracee);
        t.tracee.restore(t.regs);
      }
      if (!a.regs) throw new CptError('EINVAL', 'no registers to let the task go with', { pid: a.tracee.pid, object: 'regs' });
      requeueIntercepted(a.tracee);
      a.tracee.restore(a.regs);
    }
    // A job-control stop (SIGTSTP...) is made by its own signal, so that the parent's wait reports it.
    for (const a of going) if (a.mode === 'stop') kill(a.tracee.pid, a.stopSignal ?? SIG.SIGSTOP);
    for (const a of going) {
      a.tracee.detach();
      for (const t of threadsOf(a)) t.tracee.detach();
    }
    for (const a of going) if (a.mode === 'stop') waitUntilStopped(a.tracee.pid);
  } finally {
    for (const a of live) {
      for (const t of a.threads ?? []) t.tracee.forget();
      a.tracee.forget();
    }
  }
}

/** Intercepted signals go back into the task's queue (rt_tgsigqueueinfo inside it, with their siginfo). */
export function requeueIntercepted(tracee: Tracee): void {
  for (const info of tracee.interceptedSignals.splice(0)) {
    const at = tracee.stage(info, 0);
    tracee.syscallOk(SYS.rt_tgsigqueueinfo, [tracee.pid, tracee.tid, info.readInt32LE(0), at], 'queueing an intercepted signal again');
  }
}

/**
 * After SIGKILL. As its tracer we collect the exit, which hands the zombie on to its parent.
 * When we are that parent too (the API used by the process that started the target), the exit
 * is left for the caller's own wait: collecting it here would take it from them.
 */
function reapIfTraced(pid: number, tid: number): void {
  // The other threads first, whoever the parent is: a traced thread's exit is reported to its
  // tracer only, and the group leader's only once they are all collected.
  let others: number[] = [];
  try {
    others = listThreads(pid).filter((t) => t !== tid);
  } catch {
    /* gone already */
  }
  for (const t of others) reapKilled(t);
  try {
    if (readStat(pid).ppid === process.pid) return;
  } catch {
    return; // gone already
  }
  reapKilled(tid);
}

/**
 * The SIGSTOP queued before the detach takes effect only once the task runs again: wait (a
 * little) until it is stopped, so that "left stopped" holds when release returns.
 */
function waitUntilStopped(pid: number): void {
  for (let i = 0; i < 2000; i++) {
    try {
      if (readStat(pid).state === 'T') return;
    } catch {
      return; // gone
    }
    sleepMs(1);
  }
}
