/**
 * What the kinds of event file (eventfd, epoll, signalfd, timerfd, inotify) share: they are
 * anonymous inodes, recognised by their fd link, made again by a system call inside the task with
 * their O_NONBLOCK, and some are asked things by cptrst through a copy of the task's fd.
 */
import { CheckpointTask, CptError, RestartTask, linux, refuse } from '@cptrst/core';
import type { FileImage } from './file';
import { OpenFile, fdAt } from './kinds';

const { O, F, SYS } = linux;

/** The open flags an event file can carry that restart makes again (O_CLOEXEC is the fd's). */
const EVENT_FILE_FLAGS = O.ACCMODE | O.NONBLOCK | O.CLOEXEC;

export const fdObject = (f: OpenFile): string => `fd ${f.fd} (${f.link})`;

/** Refuses open flags other than the access mode, O_NONBLOCK and O_CLOEXEC (O_ASYNC, ...). */
export function requireEventFlags(task: CheckpointTask, f: OpenFile, what: string): void {
  const odd = f.fdinfo.flags & ~EVENT_FILE_FLAGS;
  if (odd) refuse(task.pid, fdObject(f), `open flags 0${odd.toString(8)} on ${what} are not supported`);
}

/** Checks the FILE object's flags of an event file at restart (EBADIMG): `access` and at most O_NONBLOCK. */
export function checkEventFlags(task: RestartTask, img: FileImage, access: number, object: string, what: string): void {
  if ((img.flags & ~(O.ACCMODE | O.NONBLOCK)) !== 0 || (img.flags & O.ACCMODE) !== access) {
    throw new CptError('EBADIMG', `${what}: open flags 0${img.flags.toString(8)} in the image are not those of ${what}`, { pid: task.pid, object });
  }
}

/** Gives the new fd the image's O_NONBLOCK when the call that made it could not (epoll_create1). */
export function setNonblock(task: RestartTask, fd: bigint, img: FileImage, object: string): void {
  if (img.flags & O.NONBLOCK) task.tracee!.syscallOk(SYS.fcntl, [fd, F.SETFL, O.NONBLOCK], `fcntl(F_SETFL, O_NONBLOCK) of ${object}`);
}

/**
 * Runs `fn` on a copy of open file `f` of the (frozen) task, taken with pidfd_getfd where it is
 * (fdAt: the task's fd, or cptrst's of a file in flight): the same open file description, so
 * that cptrst can ask it what fdinfo does not show.
 */
export function withFileCopy<T>(task: CheckpointTask, f: OpenFile, fn: (copy: number) => T): T {
  const at = fdAt(task, f);
  return linux.withFdCopy(at.pid, at.fd, fn);
}

/** The fdinfo of open file `f` read again now, where it is (fdAt). */
export function fdinfoNow(task: CheckpointTask, f: OpenFile): linux.FdInfo {
  const at = fdAt(task, f);
  return linux.readFdinfo(at.pid, at.fd);
}

/** A count record read from an untrusted image must fit the kernel's limit. */
export function badImage(task: RestartTask, object: string, what: string) {
  return (why: string): CptError => new CptError('EBADIMG', `${what}: ${why}`, { pid: task.pid, object });
}
