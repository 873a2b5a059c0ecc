/**
 * Signals: every handler with its flags, mask and restorer (read with rt_sigaction run inside
 * the task: /proc shows only which are caught), the blocked mask, pending signals of the thread
 * and of the process with their siginfo (real-time queues keep every entry and its value),
 * the alternate signal stack, and the three interval timers.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, bool, bytes, i32, linux, objectType, recordLayout, records, u64,
} from '@cptrst/core';

const { SYS, SIG } = linux;
export const SIGNALS_ORDER = 400;
const NSIG = 64;
const SIGACTION_SIZE = 32;
const SIGINFO_SIZE = 128;

@recordLayout('sigaction')
export class SigactionRecord {
  @i32() signo = 0;
  @u64() handler = 0n;
  @u64() flags = 0n;
  @u64() restorer = 0n;
  @u64() mask = 0n;
}

@objectType(ObjectType.SIGHAND, 'sighand', { parents: [ObjectType.TASK] })
export class SighandImage {
  @records(SigactionRecord) actions: SigactionRecord[] = [];
}

@objectType(ObjectType.TASK_SIGNALS, 'signals', { parents: [ObjectType.TASK] })
export class SignalsImage {
  @u64() blocked = 0n;
  @u64() altstackSp = 0n;
  @i32() altstackFlags = 0;
  @u64() altstackSize = 0n;
}

@objectType(ObjectType.SIGPENDING, 'sigpending', { parents: [ObjectType.TASK] })
export class SigPendingImage {
  /** Process-wide (shared) queue, else the thread's own. */
  @bool() shared = false;
  @i32() signo = 0;
  /** The kernel's siginfo_t, 128 bytes. */
  @bytes() siginfo: Buffer = Buffer.alloc(0);
}

@objectType(ObjectType.ITIMERS, 'itimers', { parents: [ObjectType.TASK] })
export class ItimersImage {
  /** struct itimerval (interval sec, usec; value sec, usec) of ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF. */
  @bytes() values: Buffer = Buffer.alloc(0);
}

const catchable = (s: number) => s !== SIG.SIGKILL && s !== SIG.SIGSTOP;

export class SignalsDump implements DumpHandler {
  readonly name = 'task.signals';
  readonly order = SIGNALS_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const t = task.tracee;
    const out = t.stage(Buffer.alloc(SIGACTION_SIZE));
    const hand = new SighandImage();
    for (let s = 1; s <= NSIG; s++) {
      if (!catchable(s)) continue;
      t.syscallOk(SYS.rt_sigaction, [s, 0, out, 8], `rt_sigaction(${linux.signalName(s)})`);
      const b = t.readMemory(out, SIGACTION_SIZE);
      const a = new SigactionRecord();
      a.signo = s;
      a.handler = b.readBigUInt64LE(0);
      a.flags = b.readBigUInt64LE(8);
      a.restorer = b.readBigUInt64LE(16);
      a.mask = b.readBigUInt64LE(24);
      hand.actions.push(a);
    }
    ctx.write(hand, task.tag);

    const sig = new SignalsImage();
    sig.blocked = t.blockedSignals;
    const ss = t.stage(Buffer.alloc(24));
    t.syscallOk(SYS.sigaltstack, [0, ss], 'sigaltstack');
    const sb = t.readMemory(ss, 24);
    sig.altstackSp = sb.readBigUInt64LE(0);
    sig.altstackFlags = sb.readInt32LE(8);
    sig.altstackSize = sb.readBigUInt64LE(16);
    ctx.write(sig, task.tag);

    for (const shared of [false, true]) {
      for (const info of peekAll(task.tid, shared)) ctx.write(pending(shared, info), task.tag);
    }
    // Dequeued before the freeze stop: still pending as far as the task knows.
    for (const info of t.interceptedSignals) ctx.write(pending(false, info), task.tag);

    const timers = new ItimersImage();
    const tv = t.stage(Buffer.alloc(32));
    const all: Buffer[] = [];
    for (const which of [linux.ITIMER.REAL, linux.ITIMER.VIRTUAL, linux.ITIMER.PROF]) {
      t.syscallOk(SYS.getitimer, [which, tv], `getitimer(${which})`);
      all.push(t.readMemory(tv, 32));
    }
    timers.values = Buffer.concat(all);
    ctx.write(timers, task.tag);
  }
}

/**
 * ITIMER_REAL reports a zero value with a non-zero interval only between its expiry and the
 * moment its SIGALRM is dequeued: the kernel re-arms it then, not at expiry. That is the usual
 * state at checkpoint, since every signal is blocked while the task is frozen. (For
 * ITIMER_VIRTUAL and ITIMER_PROF, re-armed at expiry, a zero value means disarmed.)
 */
function itimerExpiredAwaitingDequeue(itv: Buffer): boolean {
  const interval = itv.readBigInt64LE(0) !== 0n || itv.readBigInt64LE(8) !== 0n;
  const value = itv.readBigInt64LE(16) !== 0n || itv.readBigInt64LE(24) !== 0n;
  return interval && !value;
}

function pending(shared: boolean, info: Buffer): SigPendingImage {
  const p = new SigPendingImage();
  p.shared = shared;
  p.signo = info.readInt32LE(0);
  p.siginfo = Buffer.from(info);
  return p;
}

function peekAll(tid: number, shared: boolean): Buffer[] {
  const out: Buffer[] = [];
  for (;;) {
    const batch = linux.ptrace.peekSiginfo(tid, { shared, off: out.length, nr: 32 });
    out.push(...batch);
    if (batch.length < 32) return out;
  }
}

export class SignalsRestore implements RestoreHandler {
  readonly name = 'task.signals';
  readonly order = SIGNALS_ORDER;
  readonly types = [ObjectType.SIGHAND, ObjectType.TASK_SIGNALS, ObjectType.SIGPENDING, ObjectType.ITIMERS];

  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const t = task.tracee!;
    switch (o.type) {
      case ObjectType.SIGHAND:
        for (const a of (o.obj as SighandImage).actions) {
          if (a.signo < 1 || a.signo > NSIG || !catchable(a.signo)) throw new CptError('EBADIMG', `bad signal number ${a.signo}`, { pid: task.pid, object: 'sighand' });
          const b = Buffer.alloc(SIGACTION_SIZE);
          b.writeBigUInt64LE(a.handler, 0);
          b.writeBigUInt64LE(a.flags, 8);
          b.writeBigUInt64LE(a.restorer, 16);
          b.writeBigUInt64LE(a.mask, 24);
          t.syscallOk(SYS.rt_sigaction, [a.signo, t.stage(b), 0, 8], `rt_sigaction(${linux.signalName(a.signo)})`);
        }
        return;
      case ObjectType.TASK_SIGNALS: {
        const s = o.obj as SignalsImage;
        t.blockedSignals = s.blocked; // applied when the task is let go
        if (!(s.altstackFlags & linux.SS.DISABLE)) {
          const b = Buffer.alloc(24);
          b.writeBigUInt64LE(s.altstackSp, 0);
          b.writeInt32LE(s.altstackFlags & linux.SS.AUTODISARM, 8); // SS_ONSTACK is the kernel's to compute
          b.writeBigUInt64LE(s.altstackSize, 16);
          t.syscallOk(SYS.sigaltstack, [t.stage(b), 0], 'sigaltstack');
        }
        return;
      }
      case ObjectType.SIGPENDING: {
        const p = o.obj as SigPendingImage;
        if (p.siginfo.length !== SIGINFO_SIZE || p.signo < 1 || p.signo > NSIG) throw new CptError('EBADIMG', 'malformed pending signal', { pid: task.pid, object: 'sigpending' });
        const at = t.stage(p.siginfo);
        if (p.shared) t.syscallOk(SYS.rt_sigqueueinfo, [task.pid, p.signo, at], `queueing ${linux.signalName(p.signo)}`);
        else t.syscallOk(SYS.rt_tgsigqueueinfo, [task.pid, task.tid, p.signo, at], `queueing ${linux.signalName(p.signo)} to the thread`);
        return;
      }
      case ObjectType.ITIMERS: {
        const v = (o.obj as ItimersImage).values;
        if (v.length !== 96) throw new CptError('EBADIMG', 'malformed itimers', { pid: task.pid, object: 'itimers' });
        [linux.ITIMER.REAL, linux.ITIMER.VIRTUAL, linux.ITIMER.PROF].forEach((which, i) => {
          const one = Buffer.from(v.subarray(32 * i, 32 * i + 32));
          if (one.every((x) => x === 0)) return;
          if (which === linux.ITIMER.REAL && itimerExpiredAwaitingDequeue(one)) {
            // setitimer with a zero value would disarm it for good (and forget the interval):
            // it is armed to expire at once instead, which leaves it as it was, SIGALRM pending
            // and the next period starting when the signal is taken.
            one.writeBigInt64LE(0n, 16);
            one.writeBigInt64LE(1n, 24);
          }
          t.syscallOk(SYS.setitimer, [which, t.stage(one), 0], `setitimer(${which})`);
        });
        return;
      }
    }
  }
}
