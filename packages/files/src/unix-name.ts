/**
 * Socket names made where nobody sees them. A unix socket's address is the string given to
 * bind(2), not the file bind made: getsockname and a receiver's recvfrom show the string. A name
 * whose file was unlinked at checkpoint (or replaced by another file, or whose directory is gone,
 * or a relative name that no longer leads to the socket) is therefore bound again in a private
 * place instead of in the user's filesystem, where the file would have to be made and removed
 * again (and would stay behind, or displace another file, should cptrst die in between).
 *
 * The private place: a helper process of cptrst's (linux.spawnSeizedHelper, killed with cptrst by
 * PTRACE_O_EXITKILL) with a tmpfs of its own that is mounted nowhere (fsopen + fsmount: a detached
 * mount). For each socket it makes a fresh directory in that tmpfs and chroots into it, makes the
 * directories of the name there, takes a copy of the task's socket (pidfd_getfd: the same socket)
 * and binds it to the recorded string, absolute or relative (its cwd is that root). A socket
 * connected one way to such a name (a datagram socket) is connected the same way, from the
 * directory where the name was bound. Nothing is ever created, moved or removed in the user's
 * filesystem; the tmpfs lives as long as the sockets bound in it and is reachable by no path.
 *
 * The helper binds with root's rights, but only inside its own tmpfs. An image not owned by root
 * gets a private name only where its owner could have bound that name: the task itself (with the
 * owner's filesystem identity, before its final credentials) must have write and search access to
 * the name's directory, or to the nearest existing ancestor of a directory that is gone
 * (faccessat2 with AT_EACCESS). A relative name claims no place, and needs no such check.
 */
import * as path from 'path';
import { CptError, FdsReceived, RestartContext, RestartTask, RestoreHandler, Tokens, Tracee, linux, withFdChannel } from '@cptrst/core';

const { O, PTRACE_O, MOUNT_ATTR, ACCESS } = linux;

/** The helper of one restart: its tracee, the fd of its tmpfs, and each socket's directory there. */
interface NameHelper {
  seized: linux.SeizedHelper;
  t: Tracee;
  /** The detached tmpfs (fd in the helper). */
  top: bigint;
  /** Socket inode -> O_PATH fd (in the helper) of the directory that is the root of its name, and the name. */
  roots: Map<bigint, { root: bigint; name: Buffer }>;
  /** Connections to a private name not bound yet (its socket is made later, maybe by another process), by its socket's inode. */
  waiting: Map<bigint, PrivateConnect[]>;
  next: number;
}

/** A socket to connect one way to the private name of socket `target`. */
interface PrivateConnect {
  task: RestartTask;
  fd: bigint;
  name: Buffer;
  object: string;
}

const HELPERS = new WeakMap<RestartContext, NameHelper>();

const sc = (name: string): number => linux.syscallNumber(name);

function helperOf(ctx: RestartContext): NameHelper {
  let h = HELPERS.get(ctx);
  if (h) return h;
  const seized = linux.spawnSeizedHelper(PTRACE_O.TRACESYSGOOD, 'the helper for private socket names');
  try {
    const t = ctx.one(Tokens.TraceeFactory).fromStopped(seized.pid, seized.pid, { diesWithTracer: true });
    const fsfd = t.syscallOk(sc('fsopen'), [t.stage(Buffer.from('tmpfs\0')), linux.FSOPEN_CLOEXEC], 'fsopen(tmpfs) for private socket names');
    t.syscallOk(sc('fsconfig'), [fsfd, linux.FSCONFIG_CMD_CREATE, 0, 0, 0], 'fsconfig(FSCONFIG_CMD_CREATE)');
    const top = t.syscallOk(sc('fsmount'), [fsfd, linux.FSMOUNT_CLOEXEC, MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV | MOUNT_ATTR.NOEXEC], 'fsmount of the private tmpfs');
    t.syscall(sc('close'), [fsfd]);
    h = { seized, t, top, roots: new Map(), waiting: new Map(), next: 0 };
    HELPERS.set(ctx, h);
    return h;
  } catch (e) {
    seized.kill();
    throw e;
  }
}

/** Makes `root` the helper's root and working directory. */
function enter(h: NameHelper, root: bigint): void {
  h.t.syscallOk(sc('fchdir'), [root], 'fchdir in the helper for private socket names');
  h.t.syscallOk(sc('chroot'), [h.t.stage(Buffer.from('.\0'))], 'chroot in the helper for private socket names');
}

/** A copy, in the helper, of the task's fd (the same socket). */
function copyOf(h: NameHelper, task: RestartTask, fd: bigint, object: string): bigint {
  const t = h.t;
  const pidfd = t.syscallOk(sc('pidfd_open'), [task.pid, 0], `pidfd_open(${task.pid}) in the helper for ${object}`);
  try {
    return t.syscallOk(sc('pidfd_getfd'), [pidfd, fd, 0], `pidfd_getfd of ${object} in the helper`);
  } finally {
    t.syscall(sc('close'), [pidfd]);
  }
}

function sockaddr(name: Buffer): Buffer {
  const addr = Buffer.alloc(2 + name.length);
  addr.writeUInt16LE(linux.AF_UNIX, 0);
  name.copy(addr, 2);
  return addr;
}

/**
 * Binds the task's socket `fd` (socket inode `ino`) to the filesystem name `name` (the string as
 * recorded: absolute, or relative) in a directory of the helper's tmpfs of its own.
 */
export function bindPrivately(ctx: RestartContext, task: RestartTask, fd: bigint, ino: bigint, name: Buffer, absPath: string, object: string): void {
  if (!name.length || name[0] === 0 || name.includes(0)) throw new CptError('EBADIMG', 'a private name that is not a filesystem name', { pid: task.pid, object });
  if (!ctx.imageTrusted && name[0] === 0x2f) ownerMayName(task, absPath, object);
  const h = helperOf(ctx);
  const t = h.t;
  if (h.roots.has(ino)) throw new CptError('EBADIMG', `unix socket ${ino} is bound twice`, { pid: task.pid, object });
  const dirName = t.stage(Buffer.from(`${h.next++}\0`));
  t.syscallOk(sc('mkdirat'), [h.top, dirName, 0o700], 'mkdirat in the private tmpfs');
  const root = t.syscallOk(sc('openat'), [h.top, dirName, O.PATH | O.DIRECTORY | O.CLOEXEC, 0], 'opening a directory of the private tmpfs');
  h.roots.set(ino, { root, name });
  enter(h, root);
  // The directories of the name, each one made in the private root (an existing one is fine).
  const parts = name.toString('latin1').split('/').slice(0, -1);
  for (let i = 0; i < parts.length; i++) {
    const prefix = parts.slice(0, i + 1).join('/');
    if (!prefix || parts[i] === '' || parts[i] === '.' || parts[i] === '..') continue;
    const r = t.syscall(sc('mkdirat'), [linux.AT_FDCWD, t.stage(Buffer.from(prefix + '\0')), 0o700]);
    if (r < 0n && linux.errnoName(Number(-r)) !== 'EEXIST') throw new CptError(linux.errnoName(Number(-r)), `making the directory ${prefix} of a private name failed`, { pid: task.pid, object });
  }
  const copy = copyOf(h, task, fd, object);
  try {
    const addr = sockaddr(name);
    t.syscallOk(sc('bind'), [copy, t.stage(addr), addr.length], `bind of ${object} to ${name.toString('latin1')} in a private directory`);
  } finally {
    t.syscall(sc('close'), [copy]);
  }
  const waiting = h.waiting.get(ino) ?? [];
  h.waiting.delete(ino);
  for (const c of waiting) connectNow(h, c, ino);
}

/**
 * Connects the task's socket `fd` one way to `name`, which the socket `target` (of this process
 * or another of the image) gets privately: now if it has it, else as soon as it is bound (every
 * socket of the image is made before the finish hooks; the helper ends after the connections).
 */
export function connectPrivately(ctx: RestartContext, task: RestartTask, fd: bigint, target: bigint, name: Buffer, object: string): void {
  const h = helperOf(ctx);
  const c = { task, fd, name, object };
  if (h.roots.has(target)) return connectNow(h, c, target);
  const list = h.waiting.get(target) ?? [];
  if (!list.length) h.waiting.set(target, list);
  list.push(c);
}

function connectNow(h: NameHelper, c: PrivateConnect, target: bigint): void {
  const bound = h.roots.get(target)!;
  if (!bound.name.equals(c.name)) throw new CptError('EBADIMG', `the socket it is connected to (${target}) is not bound to ${c.name.toString('latin1')}`, { pid: c.task.pid, object: c.object });
  enter(h, bound.root);
  const copy = copyOf(h, c.task, c.fd, c.object);
  try {
    const addr = sockaddr(c.name);
    h.t.syscallOk(sc('connect'), [copy, h.t.stage(addr), addr.length], `connecting ${c.object} to the private name ${c.name.toString('latin1')}`);
  } finally {
    h.t.syscall(sc('close'), [copy]);
  }
}

/**
 * An O_PATH fd, in the task, of the socket file the private name of socket `ino` made. The task
 * connects to it through /proc/self/fd/N, as itself (the kernel records the connecting process's
 * credentials, and the peer's name is the string bound): no path of the user's filesystem leads
 * there. The helper opens the file; cptrst takes a copy and gives it to the task as a receive of
 * its own would (core's withFdChannel). The file is made writable for the task, which could write
 * to its own socket's file before (the connection existed) and nobody else can reach it. The fd
 * is placed at `above` or higher.
 */
export function privateSocketFile(ctx: RestartContext, task: RestartTask, ino: bigint, above: bigint, object: string): bigint {
  const h = HELPERS.get(ctx);
  const bound = h?.roots.get(ino);
  if (!h || !bound) throw new CptError('EBADIMG', `unix socket ${ino} has no private name to connect to`, { pid: task.pid, object });
  const t = task.tracee!;
  enter(h, bound.root);
  const name = h.t.stage(Buffer.concat([bound.name, Buffer.from([0])]));
  h.t.syscallOk(sc('fchmodat'), [linux.AT_FDCWD, name, 0o777, 0], `chmod of the private socket file of ${object}`);
  const file = h.t.syscallOk(sc('openat'), [linux.AT_FDCWD, name, O.PATH | O.NOFOLLOW | O.CLOEXEC, 0], `opening the private socket file of ${object}`);
  let got: FdsReceived;
  try {
    got = linux.withFdCopy(h.t.pid, Number(file), (mine) => withFdChannel(t, object, `the private socket file of ${object}`, (give) => give([mine])));
  } finally {
    h.t.syscall(sc('close'), [file]);
  }
  try {
    if (got.flags & linux.MSG.CTRUNC || got.fds.length !== 1) throw new CptError('EIO', 'the private socket file did not arrive', { pid: task.pid, object });
    return t.syscallOk(linux.SYS.fcntl, [got.fds[0], linux.F.DUPFD_CLOEXEC, above], `fcntl(F_DUPFD_CLOEXEC) of the private socket file of ${object}`);
  } finally {
    for (const fd of got.fds) t.syscall(sc('close'), [fd]);
  }
}

/**
 * An image not owned by root: the task (with its owner's filesystem identity) must be able to
 * write into the name's directory, or into the nearest ancestor that exists (it could have made
 * the missing ones): else EACCES, and nothing is bound.
 */
function ownerMayName(task: RestartTask, absPath: string, object: string): void {
  const t = task.tracee!;
  let dir = path.posix.dirname(absPath);
  for (;;) {
    const r = t.syscall(sc('faccessat2'), [linux.AT_FDCWD, t.stage(Buffer.from(dir + '\0')), ACCESS.W_OK | ACCESS.X_OK, linux.AT.EACCESS]);
    if (r === 0n) return;
    const e = linux.errnoName(Number(-r));
    if (e !== 'ENOENT' || dir === '/') throw new CptError(e === 'ENOENT' ? 'EACCES' : e, `the image's owner may not make the socket name ${absPath} (no write access to ${dir}: ${e})`, { pid: task.pid, object });
    dir = path.posix.dirname(dir);
  }
}

/** Ends the helper once every process exists and every socket is connected (its sockets keep their names). */
export class UnixNamesFinish implements RestoreHandler {
  readonly name = 'files.unix-names';
  /**
   * After the connections through listeners (920), which may need it in every process (the finish
   * hooks from the final credentials on run hook by hook across the tree).
   */
  readonly order = 930;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own */
  }
  finish(ctx: RestartContext): void {
    const h = HELPERS.get(ctx);
    const left = h ? [...h.waiting.values()].flat() : [];
    endHelper(ctx);
    if (left.length) throw new CptError('EBADIMG', `connected to the private name ${left[0].name.toString('latin1')}, which no socket of the image was bound to`, { pid: left[0].task.pid, object: left[0].object });
  }
  abort(ctx: RestartContext): void {
    endHelper(ctx);
  }
}

function endHelper(ctx: RestartContext): void {
  const h = HELPERS.get(ctx);
  if (!h) return;
  HELPERS.delete(ctx);
  h.t.forget();
  h.seized.kill();
}
