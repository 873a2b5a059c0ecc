/**
 * @cptrst/files: the fd table, open files by kind (regular, deleted regular, character device,
 * directory, pipe, FIFO, memfd, unix socket), the event files (eventfd, epoll, signalfd, timerfd,
 * inotify), cwd, root and umask; file locks, leases and I/O owners (locks.ts). Other kinds
 * (terminals, other sockets...) are refused until a handler for them is registered under
 * Tokens.FileKind.
 */
import { DependencyContainer } from 'tsyringe';
import {
  CheckpointContext, CheckpointTask, DumpHandler, ObjectType, finishDeletedFiles, finishMemfds, RestartContext, RestartTask, RestoreHandler, RestoreObject, Tokens,
  provide,
} from '@cptrst/core';
import { FILES_ORDER, FsRootRestore, dumpFs, fsCheck, restoreFs } from './fs-struct';
import { FileImage, OPEN_FILES, checkSharedFiles, closeTemporaries, dumpCarried, dumpFiles, frozenOpenFiles, inheritedDescriptions, kindOfFile, openFiles, restoreFd, restoreFileObject } from './file';
import { RegularFile } from './regular';
import { FileKinds } from './kinds';
import { CharDevice, Directory } from './chardev';
import { DeletedDirectory, DeletedDirsRestore } from './deleted-dir';
import { NamespaceFile } from './nsfs';
import { SymlinkFile } from './symlink';
import { LocksDump, LocksRestore } from './locks';
import { EventfdKind } from './eventfd';
import { EpollKind } from './epoll';
import { SignalfdKind } from './signalfd';
import { TimerfdKind } from './timerfd';
import { InotifyKind, drainInotifyQueues, inotifyQueuesToDrain } from './inotify';
import { FanotifyKind } from './fanotify';
import { PipeKind } from './pipe';
import { FifoKind } from './fifo';
import { MemfdKind } from './memfd';
import { ShmemFileKind } from './shmem-file';
import { DevTtyKind, PtyMasterKind, PtySlaveKind, TtyRestore } from './tty';
import { SocketQueuesRestore, UnixConnect, UnixSocketKind, connectUnixSockets } from './unix-socket';
import { PidfdFinish, PidfdKind } from './pidfd';
import { UnixNamesFinish } from './unix-name';
import { ScmInFlight, filesInFlight } from './unix-scm';
import { ProcFilesFinish } from './procfile';

export * from './fs-struct';
export * from './file';
export * from './kinds';
export * from './regular';
export * from './chardev';
export * from './deleted-dir';
export * from './nsfs';
export * from './symlink';
export * from './ghost';
export * from './locks';
export * from './eventfd';
export * from './epoll';
export * from './signalfd';
export * from './timerfd';
export * from './inotify';
export * from './fanotify';
export * from './pipe';
export * from './fifo';
export * from './memfd';
export * from './shmem-file';
export * from './unix-socket';
export * from './unix-name';
export * from './unix-scm';
export * from './pidfd';
export { ptyDataGuardian } from './tty';

export class FilesDump implements DumpHandler {
  readonly name = 'files';
  readonly order = FILES_ORDER;
  check(ctx: CheckpointContext, task: CheckpointTask): void {
    fsCheck(task);
    const own = openFiles(task);
    // Its files in flight are its fds in the image too (unix-scm.ts), after its own.
    const files = [...own, ...filesInFlight(ctx, task)];
    for (const f of files) kindOfFile(ctx, task, f).describe(ctx, task, f, new FileImage());
    checkSharedFiles(ctx, task, files);
    task.state.set(OPEN_FILES, own); // the task is frozen: dump and the locks use the same list
  }
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const files = [...frozenOpenFiles(task), ...filesInFlight(ctx, task)];
    const inherited = inheritedDescriptions(ctx, task, files);
    dumpFs(ctx, task, files.map((f) => f.fd), [...new Set(inherited.values())].sort((a, b) => a - b));
    // Objects made for the descendants first: the task's own files may need them (the slave of a carried pty).
    dumpCarried(ctx, task);
    dumpFiles(ctx, task, files, inherited);
  }
}

export class FilesRestore implements RestoreHandler {
  readonly name = 'files';
  readonly order = FILES_ORDER;
  /** FILE_DATA is the regular kind's record: listed here too, since that kind is always ours. */
  readonly types = [ObjectType.FS, ObjectType.FILE, ObjectType.FILE_DATA, ObjectType.FILE_CARRY, ObjectType.FD];
  /** The records of every file kind (a plugin's own...) come here too, and go to their kind with the FILE. */
  readonly kinds = FileKinds;
  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    switch (o.type) {
      case ObjectType.FS:
        return restoreFs(ctx, task, o);
      case ObjectType.FD:
        return restoreFd(ctx, task, o);
      default: // FILE, and the records of its kind
        return restoreFileObject(ctx, task, o);
    }
  }
  finish(ctx: RestartContext, task: RestartTask): void {
    finishDeletedFiles(ctx, task);
    finishMemfds(task); // after every fd and mapping of a memfd is made: its mode and seals
    // After every socket is made: the connections through names; their queues wait for the final credentials.
    const drain = inotifyQueuesToDrain(task);
    closeTemporaries(task, [...connectUnixSockets(ctx, task), ...drain]);
    drainInotifyQueues(task);
  }
}

export function register(c: DependencyContainer): void {
  for (const k of [new RegularFile(), new CharDevice(), new Directory(), new DeletedDirectory(), new SymlinkFile(), new NamespaceFile()]) provide(c, FileKinds, k);
  for (const k of [new EventfdKind(), new EpollKind(), new SignalfdKind(), new TimerfdKind(), new InotifyKind(), new FanotifyKind(), new PidfdKind()]) provide(c, FileKinds, k);
  for (const k of [new PipeKind(), new FifoKind(), new MemfdKind(), new ShmemFileKind(), new UnixSocketKind()]) provide(c, FileKinds, k);
  for (const k of [new PtyMasterKind(), new PtySlaveKind(), new DevTtyKind()]) provide(c, FileKinds, k);
  provide(c, Tokens.DumpHandler, new ScmInFlight());
  provide(c, Tokens.DumpHandler, new FilesDump());
  provide(c, Tokens.RestoreHandler, new FilesRestore());
  provide(c, Tokens.DumpHandler, new LocksDump());
  provide(c, Tokens.RestoreHandler, new LocksRestore());
  provide(c, Tokens.RestoreHandler, new UnixConnect());
  provide(c, Tokens.RestoreHandler, new SocketQueuesRestore());
  provide(c, Tokens.RestoreHandler, new PidfdFinish());
  provide(c, Tokens.RestoreHandler, new UnixNamesFinish());
  provide(c, Tokens.RestoreHandler, new ProcFilesFinish());
  provide(c, Tokens.RestoreHandler, new TtyRestore());
  provide(c, Tokens.RestoreHandler, new FsRootRestore());
  provide(c, Tokens.RestoreHandler, new DeletedDirsRestore());
}
