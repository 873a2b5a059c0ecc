/**
 * POSIX timers (timer_create): every timer of the process with its id, clock, notification
 * (signal number and value, or a thread, or none), interval and time left, and whether its
 * signal was queued and not yet taken. /proc/PID/timers gives the id, clock and notification;
 * timer_gettime and timer_getoverrun, run inside the task, give the times and the overrun.
 *
 * At restart the timers are made again with their ids (PR_TIMER_CREATE_RESTORE_IDS lets
 * timer_create take the id it is given) and armed with the time they had left: the time that
 * passed between checkpoint and restart does not count, for any clock. A timer whose signal was
 * queued is armed to expire at once, so that the kernel queues its own signal again: that signal
 * belongs to the timer (one at most, overruns counted on it, a periodic timer re-armed when it is
 * taken), which a signal queued by hand would not.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, Tracee, bool, decodeStruct, encodeStruct, i32, i64, linux, objectType, refuse, sizeOfStruct, u64,
} from '@cptrst/core';

const { SYS, SIGEV, CLOCK } = linux;
/** After the files (300), before the signals (400), which leave the timers' own signals to this handler. */
export const POSIX_TIMERS_ORDER = 390;
const ITIMERSPEC_SIZE = sizeOfStruct(linux.Itimerspec);
const NSEC = 1_000_000_000n;
/** The kernel's ids are non-negative ints. */
const MAX_TIMER_ID = 0x7fffffff;
/** More timers than this in an image is not a process but a hostile image (the kernel's default limit is RLIMIT_SIGPENDING). */
const MAX_TIMERS = 1 << 16;

@objectType(ObjectType.POSIX_TIMER, 'posix-timer', { parents: [ObjectType.TASK] })
export class PosixTimerImage {
  @i32() id = 0;
  /** The clock id as the kernel keeps it (a negative id is a CPU clock of this process or thread). */
  @i32() clock = 0;
  /** sigev_notify: SIGEV_SIGNAL, SIGEV_NONE, or SIGEV_SIGNAL|SIGEV_THREAD_ID. */
  @i32() notify = 0;
  @i32() signo = 0;
  /** sigev_value, as delivered in si_value. */
  @u64() value = 0n;
  /** The thread a SIGEV_THREAD_ID timer signals (0 otherwise). */
  @i32() tid = 0;
  @i64() intervalSec = 0n;
  @i64() intervalNsec = 0n;
  /** Time left to the next expiry (0: disarmed). */
  @i64() valueSec = 0n;
  @i64() valueNsec = 0n;
  /** timer_getoverrun: the overrun count of the signal last delivered. */
  @i32() overrun = 0;
  /** It expired and its signal is queued, not yet taken. */
  @bool() signalQueued = false;
}

/**
 * Ids of the timers that notify by signal: their queued signals are theirs (recorded in their
 * POSIX_TIMER objects), so the signals dump leaves those out.
 */
export const TIMER_SIGNALS = new StateKey<Set<number>>('task.posix-timers.signals');

const cpuClock = (clock: number): boolean => clock < 0;
const PLAIN_CLOCKS: readonly number[] = [
  CLOCK.REALTIME, CLOCK.MONOTONIC, CLOCK.BOOTTIME, CLOCK.TAI, CLOCK.REALTIME_ALARM, CLOCK.BOOTTIME_ALARM,
  CLOCK.PROCESS_CPUTIME_ID, CLOCK.THREAD_CPUTIME_ID,
];

/**
 * Why a timer cannot be recreated faithfully in this process, or undefined. `tids` are the
 * process's threads (the main one included): a timer may signal one of them, or count its CPU
 * time, since the threads are made again before the timers (order 190 before 390).
 */
function unsupported(t: { clock: number; notifyKind: string; notifyThread: boolean; notifyPid: number }, pid: number, tids: readonly number[]): string | undefined {
  if (cpuClock(t.clock)) {
    const who = linux.cpuClockPid(t.clock);
    // 0 is "the calling process (or thread)": what the process made with CLOCK_*_CPUTIME_ID.
    if (who !== 0 && who !== pid && !tids.includes(who)) return `it counts the CPU time of process ${who}, another process`;
  } else if (!PLAIN_CLOCKS.includes(t.clock)) {
    return `its clock ${t.clock} is not one a timer can be made on`;
  }
  if (t.notifyKind !== 'signal' && t.notifyKind !== 'none') return `its notification ${t.notifyKind} is not one the kernel makes itself`;
  if (t.notifyThread && !tids.includes(t.notifyPid)) return `it signals thread ${t.notifyPid}, not a thread of the process`;
  return undefined;
}

/** The task's threads, the main one first. */
const tidsOf = (task: { tid: number; threads?: ReadonlyArray<{ tid: number }> }): number[] => [task.tid, ...(task.threads ?? []).map((th) => th.tid)];

const timerObject = (t: linux.PosixTimer): string => `posix timer ${t.id} (clock ${t.clock}, signal ${t.signal}, notify ${t.notify})`;

export class PosixTimersDump implements DumpHandler {
  readonly name = 'task.posix-timers';
  readonly order = POSIX_TIMERS_ORDER;

  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    for (const t of linux.readPosixTimers(task.pid)) {
      const why = unsupported(t, task.pid, tidsOf(task));
      if (why) refuse(task.pid, timerObject(t), `${why}; such a timer is not supported`);
    }
  }

  /**
   * The times first, then the queued signals: a timer that expires in between shows as armed
   * (value left) and queued at once, and is recorded queued; one that expires after the read of
   * the queue is recorded armed, and its signal, queued by then, is left out by the signals dump
   * (TIMER_SIGNALS), so each expiry is counted exactly once.
   */
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const timers = linux.readPosixTimers(task.pid);
    const t = task.tracee;
    const images = timers.map((p) => this.read(t, task, p));
    const queued = new Set<number>();
    for (const shared of [false, true]) {
      for (const raw of linux.ptrace.peekAllSiginfo(task.tid, shared)) {
        const info = decodeStruct(linux.Siginfo, raw);
        if (info.code === linux.SI_TIMER) queued.add(info.pid); // si_tid: the timer's id
      }
    }
    const signalling = new Set<number>();
    for (const img of images) {
      if (img.notify !== SIGEV.NONE) {
        signalling.add(img.id);
        img.signalQueued = queued.has(img.id);
      }
      ctx.write(img, task.tag);
    }
    task.state.set(TIMER_SIGNALS, signalling);
  }

  private read(t: Tracee, task: CheckpointTask, p: linux.PosixTimer): PosixTimerImage {
    const img = new PosixTimerImage();
    img.id = p.id;
    img.clock = p.clock;
    img.notify = p.notifyKind === 'none' ? SIGEV.NONE : p.notifyThread ? SIGEV.SIGNAL | SIGEV.THREAD_ID : SIGEV.SIGNAL;
    img.signo = p.signal;
    img.value = p.value;
    img.tid = p.notifyThread ? p.notifyPid : 0;
    const at = t.stage(Buffer.alloc(ITIMERSPEC_SIZE));
    t.syscallOk(linux.syscallNumber('timer_gettime'), [p.id, at], `timer_gettime(${p.id})`);
    const its = decodeStruct(linux.Itimerspec, t.readMemory(at, ITIMERSPEC_SIZE));
    img.intervalSec = its.interval.sec;
    img.intervalNsec = its.interval.nsec;
    img.valueSec = its.value.sec;
    img.valueNsec = its.value.nsec;
    const overrun = t.syscall(linux.syscallNumber('timer_getoverrun'), [p.id]);
    if (overrun < 0n) throw new CptError(linux.errnoName(Number(-overrun)), `timer_getoverrun(${p.id}) failed inside the process`, { pid: task.pid, object: timerObject(p) });
    img.overrun = Number(overrun);
    return img;
  }
}

/** What the restart keeps until finish: the timers are made after the signals are restored. */
const TIMERS = new StateKey<PosixTimerImage[]>('task.posix-timers.restore');

const validTime = (sec: bigint, nsec: bigint): boolean => sec >= 0n && sec < 1n << 62n && nsec >= 0n && nsec < NSEC;

export class PosixTimersRestore implements RestoreHandler {
  readonly name = 'task.posix-timers';
  readonly order = POSIX_TIMERS_ORDER;
  readonly types = [ObjectType.POSIX_TIMER];

  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as PosixTimerImage;
    const list = task.state.ensure(TIMERS, () => []);
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: `posix timer ${img.id}` });
    if (img.id < 0 || img.id > MAX_TIMER_ID || list.some((x) => x.id === img.id)) throw bad(`timer id ${img.id} is out of range or given twice`);
    if (list.length >= MAX_TIMERS) throw bad(`more than ${MAX_TIMERS} timers`);
    const notifyKind = img.notify === SIGEV.NONE ? 'none' : img.notify === SIGEV.SIGNAL || img.notify === (SIGEV.SIGNAL | SIGEV.THREAD_ID) ? 'signal' : '';
    if (!notifyKind) throw bad(`notification ${img.notify}`);
    const why = unsupported({ clock: img.clock, notifyKind, notifyThread: (img.notify & SIGEV.THREAD_ID) !== 0, notifyPid: img.tid }, task.pid, tidsOf(task));
    if (why) throw bad(why);
    if (notifyKind === 'signal' && (img.signo < 1 || img.signo > linux.NSIG)) throw bad(`signal ${img.signo}`);
    if (!validTime(img.intervalSec, img.intervalNsec) || !validTime(img.valueSec, img.valueNsec)) throw bad('a time out of range');
    if (img.signalQueued && notifyKind !== 'signal') throw bad('a queued signal for a timer that sends none');
    list.push(img);
  }

  /**
   * After every object of the task, so after its signal handlers and queued signals: a timer
   * that expires at once queues behind the signals that were queued before it.
   */
  finish(ctx: RestartContext, task: RestartTask): void {
    const list = task.state.get(TIMERS);
    if (!list?.length) return;
    const t = task.tracee!;
    const PR_IDS = linux.PR_TIMER_CREATE_RESTORE_IDS;
    const on = t.syscall(SYS.prctl, [PR_IDS, linux.PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0]);
    if (on < 0n) {
      throw new CptError('EOPNOTSUPP', `this kernel cannot make a timer with a given id (prctl(PR_TIMER_CREATE_RESTORE_IDS): ${linux.errnoName(Number(-on))})`,
        { pid: task.pid, object: `posix timer ${list[0].id}` });
    }
    try {
      for (const img of list) this.create(t, task, img);
    } finally {
      t.syscall(SYS.prctl, [PR_IDS, linux.PR_TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0]);
    }
    for (const img of list) this.arm(ctx, t, task, img);
  }

  private create(t: Tracee, task: RestartTask, img: PosixTimerImage): void {
    const sev = t.stage(encodeStruct(linux.Sigevent, { value: img.value, signo: img.signo, notify: img.notify, tid: img.tid }));
    const idBuf = Buffer.alloc(4);
    idBuf.writeInt32LE(img.id);
    const idAt = t.stage(idBuf, 128); // past the sigevent: both are read by the one call
    const what = `timer_create(clock ${img.clock}, id ${img.id})`;
    t.syscallOk(linux.syscallNumber('timer_create'), [img.clock, sev, idAt], what);
    const got = t.readMemory(idAt, 4).readInt32LE(0);
    if (got !== img.id) throw new CptError('EEXIST', `${what} made timer ${got}`, { pid: task.pid, object: `posix timer ${img.id}` });
  }

  private arm(ctx: RestartContext, t: Tracee, task: RestartTask, img: PosixTimerImage): void {
    let valueSec = img.valueSec;
    let valueNsec = img.valueNsec;
    // Expired with its signal queued: expire again at once (the kernel queues the timer's own signal).
    if (img.signalQueued) {
      valueSec = 0n;
      valueNsec = 1n;
    }
    // No call sets it: timer_getoverrun answers 0 until the timer's next signal is taken.
    if (img.overrun !== 0) ctx.log.warn(`pid ${task.pid}: posix timer ${img.id}: the overrun count of its last signal (${img.overrun}) reads 0 until its next signal`);
    if (valueSec === 0n && valueNsec === 0n) return; // disarmed (a zero value would disarm it anyway)
    const its = encodeStruct(linux.Itimerspec, { interval: { sec: img.intervalSec, nsec: img.intervalNsec }, value: { sec: valueSec, nsec: valueNsec } });
    t.syscallOk(linux.syscallNumber('timer_settime'), [img.id, 0, t.stage(its), 0], `timer_settime(${img.id})`);
  }
}
