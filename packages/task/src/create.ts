/**
 * Making a process with a chosen PID (design.md, the restart flow): a helper process is started,
 * seized, and made to run clone3 with set_tid = [pid]. The child is a copy of the helper,
 * auto-attached by ptrace and stopped before it runs a single instruction; the helper then goes
 * away, so the new process is reparented like a daemon. PTRACE_O_EXITKILL means that if cptrst
 * dies half way, the half-made process dies with it.
 */
import { spawn } from 'child_process';
import {
  CptError, ProcessCreator, RestartContext, RestartTask, Tokens, TraceeFactory, Tracee, linux,
} from '@cptrst/core';

const { ptrace, waitpid, PTRACE_O, PTRACE_EVENT, WAIT, SYS, SIG } = linux;

/** How long a PID still held by someone else (e.g. a killed original not yet reaped by init) is waited for. */
export const PID_WAIT_MS = Number(process.env.CPTRST_PID_WAIT_MS ?? 5000);
const HELPER = '/bin/sleep';

export class CloneProcessCreator implements ProcessCreator {
  create(ctx: RestartContext, task: RestartTask): Tracee {
    return ctx.timed('create', () => {
      const deadline = Date.now() + PID_WAIT_MS;
      for (let attempt = 0; ; attempt++) {
        const r = this.tryCreate(ctx, task.pid);
        if (r !== 'EEXIST') return r;
        if (Date.now() >= deadline) {
          throw new CptError('EEXIST', `PID ${task.pid} is taken by ${describeHolder(task.pid)}; waited ${PID_WAIT_MS} ms for it to be freed`, { pid: task.pid, object: `pid ${task.pid}` });
        }
        if (attempt === 0) ctx.log.info(`pid ${task.pid} is taken by ${describeHolder(task.pid)}; waiting for it`);
        sleepMs(50);
      }
    });
  }

  private tryCreate(ctx: RestartContext, pid: number): Tracee | 'EEXIST' {
    const helper = spawn(HELPER, ['1000000'], { stdio: 'ignore', detached: false });
    helper.unref();
    const hpid = helper.pid;
    if (!hpid) throw new CptError('ENOENT', `cannot start the helper process ${HELPER}`);
    let helperTracee: Tracee | undefined;
    try {
      ptrace.seize(hpid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.EXITKILL);
      ptrace.interrupt(hpid);
      waitForEventStop(hpid);
      helperTracee = ctx.one<TraceeFactory>(Tokens.TraceeFactory).fromStopped(hpid, hpid);
      const scratch = helperTracee.scratch();
      const setTid = Buffer.alloc(8);
      setTid.writeInt32LE(pid, 0);
      const setTidAddr = helperTracee.stage(setTid, 128);
      const args = linux.encodeCloneArgs({ flags: 0n, exitSignal: BigInt(SIG.SIGCHLD), setTid: setTidAddr, setTidSize: 1n });
      const argsAddr = helperTracee.stage(args, 0);
      const r = helperTracee.syscall(SYS.clone3, [argsAddr, args.length]);
      if (r === -BigInt(linux.ERRNO.EEXIST)) return 'EEXIST';
      if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `clone3 with set_tid ${pid} failed: ${linux.errnoName(Number(-r))}`, { pid, object: 'clone3' });
      if (Number(r) !== pid) throw new CptError('EINVAL', `clone3 made pid ${r}, not ${pid}`, { pid });
      waitForEventStop(pid);
      const tracee = ctx.one<TraceeFactory>(Tokens.TraceeFactory).fromStopped(pid, pid);
      // The child has the helper's scratch area at the same address, syscall instruction included.
      tracee.adoptScratch(scratch.addr);
      unregisterRseq(tracee);
      ctx.progress({ phase: 'created', pid });
      return tracee;
    } finally {
      if (helperTracee) helperTracee.release('kill');
      else {
        try {
          linux.kill(hpid, SIG.SIGKILL);
        } catch {
          /* already gone */
        }
        reapTraced(hpid);
      }
    }
  }
}

/**
 * The copy of the helper still has the helper's rseq area registered; the kernel writes to it at
 * every preemption, so it must be unregistered before the helper's memory is torn down.
 */
function unregisterRseq(t: Tracee): void {
  const cfg = ptrace.getRseqConfiguration(t.tid);
  if (cfg.rseqAbiPointer === 0n) return;
  t.syscallOk(SYS.rseq, [cfg.rseqAbiPointer, cfg.rseqAbiSize, linux.RSEQ_FLAG_UNREGISTER, cfg.signature], 'rseq unregister of the helper copy');
}

function waitForEventStop(tid: number): void {
  for (;;) {
    const w = waitpid(tid, WAIT.__WALL);
    if (w.exited !== undefined || w.signaled !== undefined) throw new CptError('ESRCH', 'the helper process died', { pid: tid });
    if (w.stopped!.event === PTRACE_EVENT.STOP) return;
    ptrace.cont(tid, 0);
  }
}

/** We are the helper's parent and tracer: collect its exit so it leaves no zombie behind. */
function reapTraced(pid: number): void {
  try {
    for (;;) {
      const w = waitpid(pid, WAIT.__WALL);
      if (w.exited !== undefined || w.signaled !== undefined) return;
    }
  } catch {
    /* reaped already */
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

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
