/**
 * timerfd: its clock, settime flags, interval, the time to its next expiry and the expirations
 * counted but not read yet. fdinfo shows them all; cptrst first asks the timer its time with
 * timerfd_gettime through a copy of the fd, because a periodic timer that expired unread is not
 * re-armed until then (fdinfo would show it disarmed, with one expiration counted): gettime
 * re-arms it and counts the expirations missed meanwhile, as the task's own read would.
 *
 * Across the time between checkpoint and restart: a relative timer keeps its time left (the
 * process did not run, as if it had been stopped), a TFD_TIMER_ABSTIME timer keeps its deadline
 * on its clock. A deadline that passed meanwhile counts its expirations as the kernel would have
 * (one, plus one per whole interval since) and a periodic timer is armed for the next one.
 *
 * Restore: timerfd_create(clock, flags), timerfd_settime, then TFD_IOC_SET_TICKS for the unread
 * expirations (the kernel has it with CONFIG_CHECKPOINT_RESTORE; an fd with unread expirations
 * is refused where it lacks it). CLOCK_REALTIME, CLOCK_MONOTONIC and CLOCK_BOOTTIME; the alarm
 * clocks are refused (they need CAP_WAKE_ALARM and wake the machine).
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, KindRecordWriter, ObjectType, RestartContext, RestartTask, decodeStruct, encodeStruct, linux, objectType,
  refuse, sizeOfStruct, u32, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest } from './kinds';
import type { FileImage } from './file';
import { badImage, checkEventFlags, fdObject, fdinfoNow, requireEventFlags, withFileCopy } from './event-files';

const { O, CLOCK, TFD_TIMER, TFD_IOC_SET_TICKS } = linux;
const NS = 1000000000n;
const CLOCKS: ReadonlyMap<number, string> = new Map([
  [CLOCK.REALTIME, 'CLOCK_REALTIME'], [CLOCK.MONOTONIC, 'CLOCK_MONOTONIC'], [CLOCK.BOOTTIME, 'CLOCK_BOOTTIME'],
]);
/** A time in the image must fit a timespec's seconds (and stay clear of overflow when added to). */
const MAX_NS = (1n << 62n) - 1n;

@objectType(ObjectType.TIMERFD, 'timerfd', { parents: [ObjectType.FILE] })
export class TimerfdImage {
  @u32() clockid = 0;
  /** TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET. */
  @u32() settimeFlags = 0;
  /** Expirations counted and not read. */
  @u64() ticks = 0n;
  /** With TFD_TIMER_ABSTIME the next expiry on the clock, else the time left to it (ns); 0: disarmed. */
  @u64() valueNs = 0n;
  @u64() intervalNs = 0n;
}

const toNs = (t: linux.TimespecValue): bigint => t.sec * NS + t.nsec;
const toTimespec = (ns: bigint) => ({ sec: ns / NS, nsec: ns % NS });

/** clock_gettime(2) of cptrst itself: the clocks a timerfd can use are the same for every process here. */
function clockNow(clock: number): bigint {
  const buf = Buffer.alloc(sizeOfStruct(linux.Timespec));
  linux.checkedSyscall(`clock_gettime(${clock})`, undefined, linux.syscallNumber('clock_gettime'), clock, buf);
  const t = decodeStruct(linux.Timespec, buf);
  return t.sec * NS + t.nsec;
}

let setTicksKnown: boolean | undefined;
/** Whether this kernel has TFD_IOC_SET_TICKS: asked of a timerfd of cptrst's own (0 ticks: EINVAL if it has it). */
function kernelSetsTicks(): boolean {
  if (setTicksKnown === undefined) {
    const fd = Number(linux.checkedSyscall('timerfd_create', undefined, linux.syscallNumber('timerfd_create'), CLOCK.MONOTONIC, O.CLOEXEC));
    try {
      setTicksKnown = linux.rawSyscall(linux.SYS.ioctl, fd, TFD_IOC_SET_TICKS, Buffer.alloc(8)) !== -25n; // -ENOTTY
    } finally {
      fs.closeSync(fd);
    }
  }
  return setTicksKnown;
}

export class TimerfdKind implements FileKindHandler {
  readonly kind = 'timerfd';
  readonly records = [TimerfdImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[timerfd]';
  }

  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    check(task, f, info(task, f, f.fdinfo));
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    withFileCopy(task, f, (copy) => {
      linux.checkedSyscall(`timerfd_gettime of ${fdObject(f)}`, task.pid, linux.syscallNumber('timerfd_gettime'), copy, Buffer.alloc(sizeOfStruct(linux.Itimerspec)));
    });
    const t = info(task, f, fdinfoNow(task, f));
    const now = clockNow(t.clockid);
    check(task, f, t);
    const rec = new TimerfdImage();
    rec.clockid = t.clockid;
    rec.settimeFlags = t.settimeFlags;
    rec.ticks = t.ticks;
    const left = toNs(t.value);
    rec.valueNs = left !== 0n && t.settimeFlags & TFD_TIMER.ABSTIME ? now + left : left;
    rec.intervalNs = toNs(t.interval);
    out.write(rec);
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const bad = badImage(task, req.object, 'timerfd');
    const recs = req.records.of(TimerfdImage);
    if (recs.length !== 1) throw bad(`${recs.length} timerfd records for one file (one is needed)`);
    const r = recs[0];
    if (!CLOCKS.has(r.clockid)) throw bad(`clock ${r.clockid} is not one a restored timerfd may use`);
    if (r.settimeFlags & ~(TFD_TIMER.ABSTIME | TFD_TIMER.CANCEL_ON_SET)) throw bad(`unknown settime flags 0${r.settimeFlags.toString(8)}`);
    if (r.valueNs > MAX_NS || r.intervalNs > MAX_NS || r.ticks > MAX_NS) throw bad('a time or count out of range');
    checkEventFlags(task, img, O.RDWR, req.object, 'a timerfd');
    const t = task.tracee!;
    const fd = t.syscallOk(linux.syscallNumber('timerfd_create'), [r.clockid, img.flags & O.NONBLOCK], `timerfd_create for ${req.object}`);
    let { ticks, valueNs: value } = r;
    const abs = (r.settimeFlags & TFD_TIMER.ABSTIME) !== 0;
    if (abs && value !== 0n) {
      const now = clockNow(r.clockid);
      if (value <= now) {
        // The deadline passed while the process was not running: counted as the kernel would.
        const missed = r.intervalNs ? (now - value) / r.intervalNs + 1n : 1n;
        ticks += missed;
        value = r.intervalNs ? value + missed * r.intervalNs : 0n;
      }
    }
    if (value !== 0n) {
      const spec = encodeStruct(linux.Itimerspec, { interval: toTimespec(r.intervalNs), value: toTimespec(value) });
      t.syscallOk(linux.syscallNumber('timerfd_settime'), [fd, abs ? r.settimeFlags : 0, t.stage(spec), 0], `timerfd_settime for ${req.object}`);
    }
    if (ticks !== 0n) {
      const v = Buffer.alloc(8);
      v.writeBigUInt64LE(ticks);
      t.syscallOk(linux.SYS.ioctl, [fd, TFD_IOC_SET_TICKS, t.stage(v)], `ioctl(TFD_IOC_SET_TICKS, ${ticks}) for ${req.object}`);
    }
    return fd;
  }
}

function info(task: CheckpointTask, f: OpenFile, fdinfo: linux.FdInfo): linux.TimerfdInfo {
  const t = linux.parseTimerfdInfo(fdinfo);
  if (!t) refuse(task.pid, fdObject(f), 'its fdinfo does not show the timer (clockid, ticks, settime flags, it_value, it_interval)');
  return t;
}

function check(task: CheckpointTask, f: OpenFile, t: linux.TimerfdInfo): void {
  const object = fdObject(f);
  requireEventFlags(task, f, 'a timerfd');
  if (!CLOCKS.has(t.clockid)) {
    const alarm = t.clockid === CLOCK.REALTIME_ALARM || t.clockid === CLOCK.BOOTTIME_ALARM;
    refuse(task.pid, object, alarm ? `timers on an alarm clock (clock ${t.clockid}) are not supported` : `timers on clock ${t.clockid} are not supported`);
  }
  if (t.settimeFlags & ~(TFD_TIMER.ABSTIME | TFD_TIMER.CANCEL_ON_SET)) refuse(task.pid, object, `settime flags 0${t.settimeFlags.toString(8)} are not known`);
  if (t.ticks !== 0n && !kernelSetsTicks()) {
    refuse(task.pid, object, `it has ${t.ticks} expirations not read yet, and this kernel cannot set them again (no TFD_IOC_SET_TICKS: CONFIG_CHECKPOINT_RESTORE)`);
  }
}
