/**
 * Making a process with a chosen PID, as restart must: a helper process is started,
 * seized, and made to run clone3 with set_tid = [pid]. The child is a copy of the helper,
 * auto-attached by ptrace and stopped before it runs a single instruction; the helper then goes
 * away, so the new process is reparented like a daemon. PTRACE_O_EXITKILL means that if cptrst
 * dies half way, the half-made process dies with it.
 */
import {
  CptError, ProcessCreator, RestartContext, RestartTask, Tokens, Tracee, linux,
  encodeStruct,
} from '@cptrst/core';
import { releaseTracee } from '@cptrst/core';

const { ptrace, PTRACE_O, SYS, SIG, killAndReap, waitForEventStop } = linux;

/** How long a PID still held by someone else (e.g. a killed original not yet reaped by init) is waited for. */
export const PID_WAIT_MS = Number(process.env.CPTRST_PID_WAIT_MS ?? 5000);

export class CloneProcessCreator implements ProcessCreator {
  create(ctx: RestartContext, task: RestartTask): Tracee {
    return ctx.timed('create', () => {
      const pid = task.pid;
      const { helper, seized } = startHelper(ctx);
      let made = false;
      let child: Tracee | undefined;
      try {
        const scratch = helper.scratch();
        const setTid = Buffer.alloc(8);
        setTid.writeInt32LE(pid, 0);
        const setTidAddr = helper.stage(setTid, 128);
        const args = encodeStruct(linux.CloneArgs, { flags: 0n, exitSignal: BigInt(SIG.SIGCHLD), setTid: setTidAddr, setTidSize: 1n });
        const argsAddr = helper.stage(args, 0);
        const deadline = Date.now() + PID_WAIT_MS;
        for (let attempt = 0; ; attempt++) {
          const r = helper.syscall(SYS.clone3, [argsAddr, args.length]);
          if (r === -BigInt(linux.ERRNO.EEXIST)) {
            if (Date.now() >= deadline) {
              throw new CptError('EEXIST', `PID ${pid} is taken by ${describeHolder(pid)}; waited ${PID_WAIT_MS} ms for it to be freed`, { pid, object: `pid ${pid}` });
            }
            if (attempt === 0) ctx.log.info(`pid ${pid} is taken by ${describeHolder(pid)}; waiting for it`);
            sleepMs(50);
            continue;
          }
          if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `clone3 with set_tid ${pid} failed: ${linux.errnoName(Number(-r))}`, { pid, object: 'clone3' });
          made = true;
          if (Number(r) !== pid) throw new CptError('EINVAL', `clone3 made pid ${r}, not ${pid}`, { pid });
          break;
        }
        waitForEventStop(pid);
        child = ctx.one(Tokens.TraceeFactory).fromStopped(pid, pid, { diesWithTracer: true });
        // The child has the helper's scratch area at the same address, syscall instruction included.
        child.adoptScratch(scratch.addr);
        unregisterRseq(child);
        ctx.progress({ phase: 'created', pid });
        return child;
      } catch (e) {
        // Nothing half made stays behind: the child, if clone3 made one, goes too.
        if (child) releaseTracee(child, 'kill');
        else if (made) killAndReap(pid);
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
  const seized = linux.spawnSeizedHelper(PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK, 'the helper process');
  try {
    return { helper: ctx.one(Tokens.TraceeFactory).fromStopped(seized.pid, seized.pid, { diesWithTracer: true }), seized };
  } catch (e) {
    seized.kill();
    throw e;
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
