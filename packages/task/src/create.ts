/**
 * Making a process with a chosen PID, as restart must. The root of the image: a helper process
 * is started, seized, and made to run clone3 with set_tid = [pid]. The child is a copy of the
 * helper, auto-attached by ptrace and stopped before it runs a single instruction; the helper then
 * goes away, so the new process is reparented like a daemon. Every other task of a tree: clone3
 * runs inside its restored parent (tree.ts), so it is that parent's child. PTRACE_O_EXITKILL
 * (inherited by every auto-attached child) means that if cptrst dies half way, the half-made
 * processes die with it.
 */
import {
  ProcessCreator, RestartContext, RestartTask, SHARED_WITH_PARENT, Tokens, Tracee, linux,
} from '@cptrst/core';
import { releaseTracee } from '@cptrst/core';
import { EXIT_SIGNAL, GONE_SESSION, cloneInGoneSession, cloneInto, parentOf } from './tree';

const { ptrace, PTRACE_O, SYS, SIG } = linux;

/** How long a PID still held by someone else (e.g. a killed original not yet reaped by init) is waited for. */
export const PID_WAIT_MS = Number(process.env.CPTRST_PID_WAIT_MS ?? 5000);

export class CloneProcessCreator implements ProcessCreator {
  create(ctx: RestartContext, task: RestartTask): Tracee {
    return ctx.timed('create', () => {
      const pid = task.pid;
      const parent = parentOf(task);
      if (parent) {
        const exitSignal = task.state.get(EXIT_SIGNAL) ?? SIG.SIGCHLD;
        const session = task.state.get(GONE_SESSION);
        const child = session !== undefined
          ? cloneInGoneSession(ctx, task, session, exitSignal, PID_WAIT_MS)
          : cloneInto(ctx, parent.tracee!, pid, exitSignal, PID_WAIT_MS, task.state.get(SHARED_WITH_PARENT) ?? 0);
        try {
          unregisterRseq(child);
        } catch (e) {
          releaseTracee(child, 'kill');
          throw e;
        }
        ctx.progress({ phase: 'created', pid });
        return child;
      }
      const { helper, seized } = startHelper(ctx);
      let child: Tracee | undefined;
      try {
        child = cloneInto(ctx, helper, pid, SIG.SIGCHLD, PID_WAIT_MS);
        unregisterRseq(child);
        ctx.progress({ phase: 'created', pid });
        return child;
      } catch (e) {
        // Nothing half made stays behind.
        if (child) releaseTracee(child, 'kill');
        throw e;
      } finally {
        // Our own helper: killed, and its exit collected here (we are its parent).
        releaseTracee(helper, 'kill');
        seized.kill();
      }
    });
  }
}

/**
 * The helper: a process of ours, seized and stopped (linux.spawnSeizedHelper), in which clone3
 * runs; EXITKILL kills it and the child it makes with us.
 */
function startHelper(ctx: RestartContext): { helper: Tracee; seized: linux.SeizedHelper } {
  const seized = linux.spawnSeizedHelper(PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE, 'the helper process');
  try {
    return { helper: ctx.one(Tokens.TraceeFactory).fromStopped(seized.pid, seized.pid, { diesWithTracer: true }), seized };
  } catch (e) {
    seized.kill();
    throw e;
  }
}

/**
 * The copy of the helper (or of a parent not yet finished) may have an rseq area registered; the
 * kernel writes to it at every preemption, so it must be unregistered before that memory is torn
 * down.
 */
function unregisterRseq(t: Tracee): void {
  const cfg = ptrace.getRseqConfiguration(t.tid);
  if (cfg.rseqAbiPointer === 0n) return;
  t.syscallOk(SYS.rseq, [cfg.rseqAbiPointer, cfg.rseqAbiSize, linux.RSEQ_FLAG_UNREGISTER, cfg.signature], 'rseq unregister of the helper copy');
}
