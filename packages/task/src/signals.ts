/**
 * Signals: every handler with its flags, mask and restorer (read with rt_sigaction run inside
 * the task: /proc shows only which are caught), the blocked mask, pending signals of the thread
 * and of the process with their siginfo (real-time queues keep every entry and its value),
 * the alternate signal stack, and the three interval timers.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, bool, bytes, decodeStruct, encodeStruct, i32, i64, linux, objectType, record, recordLayout, records,
  sizeOfStruct, Tracee, u64,
} from '@cptrst/core';
import { TIMER_SIGNALS } from './posix-timers';

const { SYS, SIG, NSIG } = linux;
export const SIGNALS_ORDER = 400;
const SIGACTION_SIZE = sizeOfStruct(linux.KernelSigaction);
const SIGINFO_SIZE = sizeOfStruct(linux.Siginfo);
const ITIMERVAL_SIZE = sizeOfStruct(linux.Itimerval);
const STACK_T_SIZE = sizeOfStruct(linux.StackT);
const ITIMERS: readonly number[] = [linux.ITIMER.REAL, linux.ITIMER.VIRTUAL, linux.ITIMER.PROF];

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

@objectType(ObjectType.SIGPENDING, 'sigpending', { parents: [ObjectType.TASK, ObjectType.THREAD] })
export class SigPendingImage {
  /** Process-wide (shared) queue, else the thread's own. */
  @bool() shared = false;
  @i32() signo = 0;
  /** The kernel's siginfo_t, 128 bytes. */
  @bytes() siginfo: Buffer = Buffer.alloc(0);
}

@recordLayout('timeval')
export class TimevalRecord {
  @i64() sec = 0n;
  @i64() usec = 0n;
}

/** One interval timer as getitimer reports it. */
@recordLayout('itimer')
export class ItimerRecord {
  /** ITIMER_REAL, ITIMER_VIRTUAL or ITIMER_PROF. */
  @i32() which = 0;
  @record(TimevalRecord) interval = new TimevalRecord();
  @record(TimevalRecord) value = new TimevalRecord();
}

@objectType(ObjectType.ITIMERS, 'itimers', { parents: [ObjectType.TASK] })
export class ItimersImage {
  /**
   * Images before format 1.3 only: the three struct itimerval (REAL, VIRTUAL, PROF) as one
   * 96-byte blob. Written empty since; still read, so that older images restore.
   */
  @bytes() values: Buffer = Buffer.alloc(0);
  /** One record per timer (1.3 on). */
  @records(ItimerRecord, { since: 3 }) timers: ItimerRecord[] = [];
}

/** Signals pending for one thread alone (its SIGPENDING objects), queued once the thread is made (thread.ts). */
export const THREAD_PENDING = new StateKey<Buffer[]>('task.thread.pending');

const catchable = (s: number) => s !== SIG.SIGKILL && s !== SIG.SIGSTOP;
/** The signals that have a disposition to dump: 1-64 but SIGKILL and SIGSTOP. */
const CATCHABLE: readonly number[] = Array.from({ length: NSIG }, (_, i) => i + 1).filter(catchable);

/**
 * A result of a batch (Tracee.syscalls), as syscallOk would take it: a CptError naming the call
 * for -errno, and for a call the batch did not reach (it ended at an earlier failure).
 */
function checkResult(t: Tracee, r: bigint | undefined, what: string): void {
  if (r === undefined) throw new CptError('EIO', `${what} did not run inside the process`, { pid: t.pid, object: what });
  if (r < 0n && r > -4096n) {
    const code = linux.errnoName(Number(-r));
    throw new CptError(code, `${what} failed inside the process: ${code}`, { pid: t.pid, object: what });
  }
}

export class SignalsDump implements DumpHandler {
  readonly name = 'task.signals';
  readonly order = SIGNALS_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const t = task.tracee;
    // The queues first: a timer that expires after this is seen by getitimer below as expired and
    // awaiting its signal (see itimerExpiredAwaitingDequeue), never twice.
    // A POSIX timer's queued signal is the timer's: it is recorded with the timer, which
    // queues it again itself at restart.
    const timerIds = task.state.get(TIMER_SIGNALS);
    const timersOwn = (info: Buffer) => {
      const si = decodeStruct(linux.Siginfo, info);
      return si.code === linux.SI_TIMER && timerIds?.has(si.pid) === true;
    };
    const queued = [false, true].map((shared) => peekAll(task.tid, shared).filter((info) => !timersOwn(info)).map((info) => pending(shared, info)));
    const threadQueues = (task.threads ?? []).map((th) => peekAll(th.tid, false));

    // Every handler, the alternate stack and the three timers in one batch, each call writing its
    // own struct, all read back at once.
    const signals = CATCHABLE;
    const stackAt = SIGACTION_SIZE * signals.length;
    const timersAt = stackAt + STACK_T_SIZE;
    const size = timersAt + ITIMERVAL_SIZE * ITIMERS.length;
    const out = t.stage(Buffer.alloc(size));
    const results = t.syscalls([
      ...signals.map((s, i) => ({ nr: SYS.rt_sigaction, args: [s, 0, out + BigInt(i * SIGACTION_SIZE), 8] })),
      { nr: SYS.sigaltstack, args: [0, out + BigInt(stackAt)] },
      ...ITIMERS.map((which, i) => ({ nr: SYS.getitimer, args: [which, out + BigInt(timersAt + i * ITIMERVAL_SIZE)] })),
    ]);
    const got = t.readMemory(out, size);

    const hand = new SighandImage();
    for (const [i, s] of signals.entries()) {
      checkResult(t, results[i], `rt_sigaction(${linux.signalName(s)})`);
      const k = decodeStruct(linux.KernelSigaction, got, i * SIGACTION_SIZE);
      const a = new SigactionRecord();
      a.signo = s;
      a.handler = k.handler;
      a.flags = k.flags;
      a.restorer = k.restorer;
      a.mask = k.mask;
      hand.actions.push(a);
    }
    ctx.write(hand, task.tag);

    const sig = new SignalsImage();
    sig.blocked = t.blockedSignals;
    checkResult(t, results[signals.length], 'sigaltstack');
    const st = decodeStruct(linux.StackT, got, stackAt);
    sig.altstackSp = st.sp;
    sig.altstackFlags = st.flags;
    sig.altstackSize = st.size;
    ctx.write(sig, task.tag);

    for (const p of queued.flat()) ctx.write(p, task.tag);
    // Dequeued before the freeze stop (or taken off while calls ran): still pending as far as the task knows.
    for (const info of t.interceptedSignals) ctx.write(pending(false, info), task.tag);
    // Each other thread's own queue, under its THREAD object (and what cptrst took off it).
    for (const [i, th] of (task.threads ?? []).entries()) {
      for (const info of [...threadQueues[i], ...(th.tracee?.interceptedSignals ?? [])]) ctx.write(pending(false, info), th.tag);
    }

    const timers = new ItimersImage();
    for (const [i, which] of ITIMERS.entries()) {
      checkResult(t, results[signals.length + 1 + i], `getitimer(${which})`);
      timers.timers.push(itimerRecord(which, decodeStruct(linux.Itimerval, got, timersAt + i * ITIMERVAL_SIZE)));
    }
    ctx.write(timers, task.tag);
  }
}

/**
 * ITIMER_REAL reports a zero value with a non-zero interval only between its expiry and the
 * moment its SIGALRM is dequeued: the kernel re-arms it then, not at expiry. That is the usual
 * state at checkpoint, since every signal is blocked while the task is frozen. (For
 * ITIMER_VIRTUAL and ITIMER_PROF, re-armed at expiry, a zero value means disarmed.)
 */
function itimerExpiredAwaitingDequeue(itv: ItimerRecord): boolean {
  const interval = itv.interval.sec !== 0n || itv.interval.usec !== 0n;
  const value = itv.value.sec !== 0n || itv.value.usec !== 0n;
  return interval && !value;
}

function itimerRecord(which: number, itv: linux.Itimerval): ItimerRecord {
  const r = new ItimerRecord();
  r.which = which;
  r.interval.sec = itv.interval.sec;
  r.interval.usec = itv.interval.usec;
  r.value.sec = itv.value.sec;
  r.value.usec = itv.value.usec;
  return r;
}

/**
 * The timers of an image: its records, or those of a pre-1.3 blob; all three, each once
 * (EBADIMG otherwise).
 */
export function imageTimers(img: ItimersImage, pid: number): ItimerRecord[] {
  const bad = () => new CptError('EBADIMG', 'malformed itimers', { pid, object: 'itimers' });
  let timers = img.timers;
  if (img.values.length > 0) {
    if (timers.length > 0 || img.values.length !== ITIMERS.length * ITIMERVAL_SIZE) throw bad();
    timers = ITIMERS.map((which, i) => itimerRecord(which, decodeStruct(linux.Itimerval, img.values, i * ITIMERVAL_SIZE)));
  }
  const seen = new Set<number>();
  for (const r of timers) {
    if (!ITIMERS.includes(r.which) || seen.has(r.which)) throw bad();
    seen.add(r.which);
  }
  if (seen.size !== ITIMERS.length) throw bad();
  return timers;
}

function pending(shared: boolean, info: Buffer): SigPendingImage {
  const p = new SigPendingImage();
  p.shared = shared;
  p.signo = decodeStruct(linux.Siginfo, info).signo;
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
      case ObjectType.SIGHAND: {
        // Every handler in one batch, each from its own staged struct.
        const actions = (o.obj as SighandImage).actions;
        if (actions.length > CATCHABLE.length) throw new CptError('EBADIMG', `${actions.length} signal handlers`, { pid: task.pid, object: 'sighand' });
        const structs = Buffer.alloc(actions.length * SIGACTION_SIZE);
        for (const [i, a] of actions.entries()) {
          if (a.signo < 1 || a.signo > NSIG || !catchable(a.signo)) throw new CptError('EBADIMG', `bad signal number ${a.signo}`, { pid: task.pid, object: 'sighand' });
          encodeStruct(linux.KernelSigaction, { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask }, structs, i * SIGACTION_SIZE);
        }
        const at = t.stage(structs);
        const results = t.syscalls(actions.map((a, i) => ({ nr: SYS.rt_sigaction, args: [a.signo, at + BigInt(i * SIGACTION_SIZE), 0, 8] })), { untilError: true });
        for (const [i, a] of actions.entries()) checkResult(t, results[i], `rt_sigaction(${linux.signalName(a.signo)})`);
        return;
      }
      case ObjectType.TASK_SIGNALS: {
        const s = o.obj as SignalsImage;
        t.blockedSignals = s.blocked; // applied when the task is let go
        if (!(s.altstackFlags & linux.SS.DISABLE)) {
          // SS_ONSTACK is the kernel's to compute
          const b = encodeStruct(linux.StackT, { sp: s.altstackSp, flags: s.altstackFlags & linux.SS.AUTODISARM, size: s.altstackSize });
          t.syscallOk(SYS.sigaltstack, [t.stage(b), 0], 'sigaltstack');
        } else {
          // A child of the tree is a copy of its parent, alternate stack included.
          const b = encodeStruct(linux.StackT, { sp: 0n, flags: linux.SS.DISABLE, size: 0n });
          t.syscallOk(SYS.sigaltstack, [t.stage(b), 0], 'sigaltstack (disable)');
        }
        return;
      }
      case ObjectType.SIGPENDING: {
        const p = o.obj as SigPendingImage;
        if (p.siginfo.length !== SIGINFO_SIZE || p.signo < 1 || p.signo > NSIG) throw new CptError('EBADIMG', 'malformed pending signal', { pid: task.pid, object: 'sigpending' });
        if (o.ptag !== task.tag) {
          const th = task.threads?.find((x) => x.tag === o.ptag);
          if (!th || p.shared) throw new CptError('EBADIMG', `a pending signal under tag ${o.ptag}, which is not a thread of this task`, { pid: task.pid, object: 'sigpending' });
          th.state.ensure(THREAD_PENDING, () => []).push(p.siginfo);
          return;
        }
        const at = t.stage(p.siginfo);
        if (p.shared) t.syscallOk(SYS.rt_sigqueueinfo, [task.pid, p.signo, at], `queueing ${linux.signalName(p.signo)}`);
        else t.syscallOk(SYS.rt_tgsigqueueinfo, [task.pid, task.tid, p.signo, at], `queueing ${linux.signalName(p.signo)} to the thread`);
        return;
      }
      case ObjectType.ITIMERS: {
        const calls: Array<{ which: number; itv: Buffer }> = [];
        for (const r of imageTimers(o.obj as ItimersImage, task.pid)) {
          const value = { sec: r.value.sec, usec: r.value.usec };
          if (r.interval.sec === 0n && r.interval.usec === 0n && value.sec === 0n && value.usec === 0n) continue;
          if (r.which === linux.ITIMER.REAL && itimerExpiredAwaitingDequeue(r)) {
            // setitimer with a zero value would disarm it for good (and forget the interval):
            // it is armed to expire at once instead, which leaves it as it was, SIGALRM pending
            // and the next period starting when the signal is taken.
            value.sec = 0n;
            value.usec = 1n;
          }
          calls.push({ which: r.which, itv: encodeStruct(linux.Itimerval, { interval: r.interval, value }) });
        }
        if (calls.length === 0) return;
        const at = t.stage(Buffer.concat(calls.map((c) => c.itv)));
        const results = t.syscalls(calls.map((c, i) => ({ nr: SYS.setitimer, args: [c.which, at + BigInt(i * ITIMERVAL_SIZE), 0] })), { untilError: true });
        for (const [i, c] of calls.entries()) checkResult(t, results[i], `setitimer(${c.which})`);
        return;
      }
    }
  }
}
