/**
 * epoll: every registered target, with its events mask (EPOLLET, EPOLLONESHOT, EPOLLEXCLUSIVE
 * included; a one-shot target that has fired shows only its flags and stays disabled) and its
 * data value. fdinfo lists each target as `tfd:` (the fd number it was registered with), the
 * events, the data, and the inode of its file. The kernel keys a target by its file and that
 * number, and the number may since have been closed, or given to another file, while the target's
 * file lives on at another fd (dup'ed first): kcmp(KCMP_EPOLL_TFD) tells which fd of the process
 * holds the registered file (its files in flight in its sockets' queues count as its fds,
 * unix-scm.ts). A target whose file the process holds at no fd (only another process, or a
 * message in flight to another process, keeps it) is refused.
 *
 * Restore: the targets' files are restored first (restoreAfter: nested epolls in their nesting
 * order), then epoll_create1 and one EPOLL_CTL_ADD per target, under its old number: when that
 * number is not the fd holding the file now, the file is dup3'ed to the number for the call and
 * the number given back as it was. Level-triggered readiness is the kernel's own after the ADD;
 * an edge-triggered target that is ready is reported once more after restart (the kernel does
 * not show whether its last edge was already reported), which EPOLLET users must allow for anyway.
 * Events are not stored: they are the state of the targets, which come back with them.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, KindRecordWriter, ObjectType, RestartContext, RestartTask, StateKey, encodeStruct, fdLocation, linux, objectType,
  refuse, sameFile, sizeOfStruct, u32, u64,
} from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, fdAt } from './kinds';
import { filesInFlight } from './unix-scm';
import type { FileImage } from './file';
import { FS_KEY } from './fs-struct';
import { badImage, checkEventFlags, fdObject, requireEventFlags, setNonblock } from './event-files';

const { O, F, SYS, EPOLL, EPOLL_CTL } = linux;
/** The bits of a target's mask that are not readiness (what a fired one-shot target keeps). */
const PRIVATE_BITS = EPOLL.WAKEUP | EPOLL.ONESHOT | EPOLL.ET | EPOLL.EXCLUSIVE;
const ANY_READINESS = EPOLL.IN | EPOLL.PRI | EPOLL.OUT | EPOLL.RDNORM | EPOLL.RDBAND | EPOLL.WRNORM | EPOLL.WRBAND | EPOLL.MSG | EPOLL.RDHUP;

/** One target of the epoll, under its FILE. */
@objectType(ObjectType.EPOLL_TARGET, 'epoll-target', { parents: [ObjectType.FILE] })
export class EpollTargetImage {
  /** The fd number it was registered with (the kernel's key, with the file). */
  @u32() tfd = 0;
  /** An fd of the task that holds the target's file (restored before the epoll). */
  @u32() fd = 0;
  @u32() events = 0;
  @u64() data = 0n;
}

interface Target extends linux.EpollTargetInfo {
  /** The fd holding its file. */
  fd: number;
}

/** Targets found per epoll fd (the task is frozen: check, ordering and dump see the same). */
const TARGETS = new StateKey<Map<number, Target[]>>('files.epoll.targets');

function targetsOf(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): Target[] {
  const known = task.state.ensure(TARGETS, () => new Map<number, Target[]>());
  let t = known.get(f.fd);
  if (!t) {
    t = findTargets(ctx, task, f);
    known.set(f.fd, t);
  }
  return t;
}

function findTargets(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): Target[] {
  const object = fdObject(f);
  requireEventFlags(task, f, 'an epoll');
  const lines = linux.parseEpollTargets(f.fdinfo);
  if (!lines) refuse(task.pid, object, 'its fdinfo lists a target cptrst cannot read');
  // Its files in flight are fds of the task too (unix-scm.ts), read where cptrst holds them; so is
  // the epoll itself, when it is in flight.
  const fds = [...linux.listFds(task.pid), ...filesInFlight(ctx, task).map((x) => x.fd)];
  const ep = fdAt(task, f);
  const stats = new Map<number, fs.BigIntStats | undefined>();
  const statOf = (fd: number) => {
    if (!stats.has(fd)) {
      let st: fs.BigIntStats | undefined;
      try {
        const at = fdLocation(task.pid, fd);
        st = fs.statSync(`/proc/${at.pid}/fd/${at.fd}`, { bigint: true });
      } catch {
        st = undefined;
      }
      stats.set(fd, st);
    }
    return stats.get(fd);
  };
  const seen = new Map<number, number>();
  return lines.map((l) => {
    const toff = seen.get(l.tfd) ?? 0;
    seen.set(l.tfd, toff + 1);
    const what = `its target registered as fd ${l.tfd}`;
    if (l.events & EPOLL.WAKEUP) refuse(task.pid, object, `${what} has EPOLLWAKEUP, which is not supported`);
    // The number it was registered with first, then any other fd on the same inode.
    const candidates = [l.tfd, ...fds.filter((fd) => fd !== l.tfd)].filter((fd) => fds.includes(fd) && fd !== f.fd);
    const holder = candidates.find((fd) => {
      const st = statOf(fd);
      const at = fdLocation(task.pid, fd);
      return st !== undefined && sameFile(st, { dev: l.dev, ino: l.ino }) && linux.kcmpEpollTarget(at.pid, at.fd, ep.fd, l.tfd, toff, ep.pid);
    });
    if (holder === undefined) {
      refuse(task.pid, object, `${what} (inode ${l.ino}) is open at no fd of the process (another process or a message in flight holds it): it cannot be registered again`);
    }
    return { ...l, fd: holder };
  });
}

export class EpollKind implements FileKindHandler {
  readonly kind = 'epoll';
  readonly records = [EpollTargetImage];
  readonly inFlight = true;

  claims(f: OpenFile): boolean {
    return f.link === 'anon_inode:[eventpoll]';
  }

  describe(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): void {
    targetsOf(ctx, task, f);
  }

  restoreAfter(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile): number[] {
    return targetsOf(ctx, task, f).map((t) => t.fd);
  }

  dumpRecords(ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, _img: FileImage, out: KindRecordWriter): void {
    for (const t of targetsOf(ctx, task, f)) {
      const rec = new EpollTargetImage();
      rec.tfd = t.tfd;
      rec.fd = t.fd;
      rec.events = t.events;
      rec.data = t.data;
      out.write(rec);
    }
  }

  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    const bad = badImage(task, req.object, 'epoll');
    checkEventFlags(task, img, O.RDWR, req.object, 'an epoll');
    const fds = task.state.get(FS_KEY)?.fds ?? [];
    const targets = req.records.of(EpollTargetImage);
    for (const r of targets) {
      if (!fds.includes(r.fd)) throw bad(`a target's fd ${r.fd} is not among the task's fds`);
      if (r.tfd > 0x7fffffff) throw bad(`a target's fd number ${r.tfd} is out of range`);
      if (r.events & EPOLL.WAKEUP) throw bad(`the target registered as fd ${r.tfd} has EPOLLWAKEUP`);
    }
    const t = task.tracee!;
    const above = (fd: bigint, what: string): bigint => {
      const moved = t.syscallOk(SYS.fcntl, [fd, F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) of ${what}`);
      t.syscall(SYS.close, [fd]);
      return moved;
    };
    // Above the image's fd numbers, so that no target's old number can be this epoll's.
    let ep = above(t.syscallOk(linux.syscallNumber('epoll_create1'), [0], `epoll_create1 for ${req.object}`), req.object);
    setNonblock(task, ep, img, req.object);
    const ctl = (op: number, r: EpollTargetImage, events: number): void => {
      const what = `the target registered as fd ${r.tfd} of ${req.object}`;
      if (BigInt(r.tfd) === ep) ep = above(ep, req.object);
      const ev = t.stage(encodeStruct(linux.EpollEvent, { events, data: u64le(r.data) }));
      if (r.tfd === r.fd) {
        t.syscallOk(linux.syscallNumber('epoll_ctl'), [ep, op, r.fd, ev], `epoll_ctl(${op}) of ${what}`);
        return;
      }
      // The number was closed or given to another file since the registration: lend it the file.
      const fdFlags = t.syscall(SYS.fcntl, [r.tfd, F.GETFD]);
      const saved = fdFlags >= 0n ? t.syscallOk(SYS.fcntl, [r.tfd, F.DUPFD_CLOEXEC, req.above], `fcntl(F_DUPFD_CLOEXEC) of fd ${r.tfd}`) : undefined;
      t.syscallOk(SYS.dup3, [r.fd, r.tfd, 0], `dup3 of fd ${r.fd} to ${r.tfd} for ${what}`);
      const done = t.syscall(linux.syscallNumber('epoll_ctl'), [ep, op, r.tfd, ev]);
      if (saved !== undefined) {
        t.syscallOk(SYS.dup3, [saved, r.tfd, fdFlags & BigInt(linux.FD_CLOEXEC) ? O.CLOEXEC : 0], `dup3 giving fd ${r.tfd} back`);
        t.syscall(SYS.close, [saved]);
      } else {
        t.syscall(SYS.close, [r.tfd]);
      }
      if (done < 0n) throw linux.errnoError(Number(-done), `epoll_ctl(${op}) of ${what}`, task.pid, req.object);
    };
    // A one-shot target that has fired keeps only its flags, and no epoll_ctl sets that state (the
    // kernel adds EPOLLERR|EPOLLHUP to every mask it is given). They go in first, armed for any
    // readiness, and one epoll_wait fires those whose file is ready now; the others are left
    // armed for EPOLLERR|EPOLLHUP only (the nearest state the kernel allows).
    const disabled = targets.filter((r) => (r.events & ~PRIVATE_BITS) === 0);
    for (const r of disabled) ctl(EPOLL_CTL.ADD, r, (r.events | ANY_READINESS) >>> 0);
    if (disabled.length > 0) {
      // A fired one-shot target is not reported again, so a few calls with a bounded buffer do.
      const max = Math.min(disabled.length, 256);
      const buf = t.stage(Buffer.alloc(max * sizeOfStruct(linux.EpollEvent)));
      for (let i = 0; i * max < disabled.length; i++) {
        const n = t.syscallOk(linux.syscallNumber('epoll_wait'), [ep, buf, max, 0], `epoll_wait for the fired one-shot targets of ${req.object}`);
        if (n < BigInt(max)) break;
      }
      const now = linux.parseEpollTargets(linux.readFdinfo(task.pid, Number(ep))) ?? [];
      for (const r of disabled) {
        const line = now.find((l) => l.tfd === r.tfd && l.data === r.data);
        if (line && line.events & ~PRIVATE_BITS) ctl(EPOLL_CTL.MOD, r, r.events);
      }
    }
    for (const r of targets) if (!disabled.includes(r)) ctl(EPOLL_CTL.ADD, r, r.events);
    return ep;
  }
}

function u64le(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}
