/**
 * What SysV semaphore sets and message queues share: which of them a process tree uses, and how
 * one is made again with its id.
 *
 * Such an object belongs to the IPC namespace, not to a process, and nothing lists who holds one.
 * The kernel keeps who used it last: each semaphore's last changer (semctl GETPID), a queue's
 * last sender and receiver (/proc/sysvipc/msg lspid, lrpid). A checkpoint takes every object whose
 * last user (of any semaphore of the set, or either end of the queue) is a process of the tree,
 * zombies included; an object no process of the tree has touched yet (made, never operated on)
 * cannot be told apart from anyone else's and is left out. All of them are recorded once, under
 * the tree's first process, which makes them again at restart.
 *
 * At restart, an object is:
 * - taken back when the very one the tree left is still there, unchanged: same id, key, owner,
 *   mode and state (values and last users, or messages and times), as after checkpoint --kill;
 * - made again with its id (through /proc/sys/kernel/{sem,msg}_next_id) and key (IPC_EXCL) when
 *   both are free;
 * - otherwise refused: another object at the id or key (EEXIST), or the tree's own object changed
 *   since the checkpoint by someone else (EBUSY). Nothing is taken over or overwritten.
 * Only an image root wrote may ask for this (as for SysV shared memory): an object's owner and
 * mode are set with IPC_SET, and a queue's size above the system's default needs privilege.
 */
import {
  CheckpointContext, CheckpointTask, CptError, RestartContext, RestartTask, StateKey, Tracee, decodeStruct, encodeStruct, i32, linux, recordLayout, sizeOfStruct, u32,
} from '@cptrst/core';

const { SYS, PROT, MAP } = linux;

/**
 * The fields a SysV object's record begins with: identity, permissions and creator (which, with
 * the last users and times of each kind, tell the object the tree left from another). The
 * records are each kind's own types that extend these fields.
 */
@recordLayout('sysv-ipc-fields')
export class SysvIpcFields {
  @i32() key = 0;
  @i32() id = 0;
  /** Permission bits (0o777). */
  @u32() mode = 0;
  @u32() uid = 0;
  @u32() gid = 0;
  @u32() cuid = 0;
  @u32() cgid = 0;
}

/** Whether `task` is the one that records the tree's objects: the first process of the tree. */
export function recordsForTree(ctx: CheckpointContext, task: CheckpointTask): boolean {
  return (ctx.tree?.tasks[0]?.pid ?? task.pid) === task.pid;
}

/** Objects that cptrst itself read or removes with its own rights (root, in the target's IPC namespace). */
export function ipcCall(name: string, args: Array<number | bigint | Buffer>, what: string, pid: number, object: string): bigint {
  const r = linux.rawSyscall(linux.syscallNumber(name), ...args);
  if (r < 0n) {
    const code = linux.errnoName(Number(-r));
    throw new CptError(code, `${what}: ${code}`, { pid, object });
  }
  return r;
}

/**
 * A consistent read of an object others may change meanwhile: two reads in a row that agree (a
 * few tries). Undefined: the object is gone; still changing after the tries: EAGAIN.
 */
export function readConsistently<S>(readOnce: () => S | undefined, same: (a: S, b: S) => boolean, pid: number, object: (last: S) => string, kind: string): S | undefined {
  let last = readOnce();
  for (let i = 0; i < 5 && last; i++) {
    const again = readOnce();
    if (again && same(last, again)) return again;
    last = again;
  }
  if (!last) return undefined;
  throw new CptError('EAGAIN', `the ${kind} kept changing while it was read (a process outside the tree is using it)`, { pid, object: object(last) });
}

/** The images this restart may restore SysV objects from: root's. */
export function requireTrustedIpc(ctx: RestartContext, task: RestartTask, object: string): void {
  if (!ctx.imageTrusted) throw new CptError('EPERM', `SysV semaphores and message queues are restored only from an image root wrote (${object})`, { pid: task.pid, object });
}

/** Injected calls whose data does not fit the tracee's staging area get a mapping of their own. */
const STAGE_MAX = 32 * 1024;

/** Runs `fn` with `data` at an address in the task (staged, or in a short-lived mapping). */
export function withTaskBuffer<R>(t: Tracee, data: Buffer, what: string, fn: (at: bigint) => R): R {
  if (data.length <= STAGE_MAX) return fn(t.stage(data));
  const len = (data.length + 0xfff) & ~0xfff;
  const at = t.syscallOk(SYS.mmap, [0, len, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0], `mmap for ${what}`);
  try {
    t.writeMemory(at, data);
    return fn(at);
  } finally {
    t.syscall(SYS.munmap, [at, len]);
  }
}

/** Objects made (not taken back) at this restart, removed again if the restart fails. */
const MADE = new StateKey<Array<{ kind: 'sem' | 'msg'; id: number }>>('task.sysv-ipc.made');

/** Removes what this restart made (abort hook: the restart failed). Never throws. */
export function removeMade(task: RestartTask, kind: 'sem' | 'msg'): void {
  const made = task.state.get(MADE) ?? [];
  for (const m of made) {
    if (m.kind !== kind) continue;
    if (kind === 'sem') linux.rawSyscall(linux.syscallNumber('semctl'), m.id, 0, linux.IPC.RMID, 0);
    else linux.rawSyscall(linux.syscallNumber('msgctl'), m.id, linux.IPC.RMID, 0);
  }
  task.state.set(MADE, made.filter((m) => m.kind !== kind));
}

/**
 * The image's key must be free (IPC_PRIVATE always is): an object of another's with that key is
 * not taken over (EEXIST). `objects` reads the kind's objects (/proc/sysvipc), only for a real key.
 */
export function requireFreeKey(task: RestartTask, key: number, objects: () => ReadonlyArray<{ key: number; id: number }>, kindName: string, object: string): void {
  if (key === linux.IPC.PRIVATE) return;
  const other = objects().find((o) => o.key === key);
  if (other) throw new CptError('EEXIST', `SysV key ${key} is taken by ${kindName} ${other.id}; it is not taken over`, { pid: task.pid, object });
}

/**
 * Asks for `id` as the next object's id, makes it with `get` (injected: the object's last user is
 * then the task), and checks the kernel gave that id (another process may have made one in
 * between: the object is removed again, EBUSY).
 */
export function makeWithId(task: RestartTask, kind: 'sem' | 'msg', id: number, object: string, get: () => bigint): void {
  linux.setIpcNextId(kind, id);
  let got: number;
  try {
    got = Number(get());
  } catch (e) {
    // A free id whose slot (its low bits) holds another object: the kernel cannot place it.
    if (e instanceof CptError && e.code === 'ENOSPC') throw new CptError('EEXIST', `the slot of SysV ${kind} id ${id} is taken by another object (${e.message}); it is not taken over`, { pid: task.pid, object, cause: e });
    throw e;
  } finally {
    // The kernel forgets the wish once used; a failed call leaves it for the next caller.
    try {
      linux.setIpcNextId(kind, -1);
    } catch {
      /* best effort */
    }
  }
  task.state.ensure(MADE, () => []).push({ kind, id: got });
  if (got !== id) throw new CptError('EBUSY', `made SysV ${kind} ${got}, not ${id} (another process made one at the same moment)`, { pid: task.pid, object });
}

/** Sets the owner and mode (and, for a queue, its size in bytes) with IPC_STAT then IPC_SET, inside the task. */
export function setOwner(t: Tracee, kind: 'sem' | 'msg', id: number, set: { uid: number; gid: number; mode: number; qbytes?: bigint }): void {
  const ctl = (cmd: number, at: bigint, what: string) => kind === 'sem'
    ? t.syscallOk(linux.syscallNumber('semctl'), [id, 0, cmd, at], what)
    : t.syscallOk(linux.syscallNumber('msgctl'), [id, cmd, at], what);
  // IPC_SET reads only the owner, the mode and (for a queue) qbytes from the struct.
  if (kind === 'sem') {
    const size = sizeOfStruct(linux.SemidDs);
    const at = t.stage(Buffer.alloc(size));
    ctl(linux.IPC.STAT, at, `semctl(${id}, IPC_STAT)`);
    const ds = decodeStruct(linux.SemidDs, t.readMemory(at, size));
    t.writeMemory(at, encodeStruct(linux.SemidDs, { ...ds, uid: set.uid, gid: set.gid, mode: set.mode }));
    ctl(linux.IPC.SET, at, `semctl(${id}, IPC_SET)`);
  } else {
    const size = sizeOfStruct(linux.MsqidDs);
    const at = t.stage(Buffer.alloc(size));
    ctl(linux.IPC.STAT, at, `msgctl(${id}, IPC_STAT)`);
    const ds = decodeStruct(linux.MsqidDs, t.readMemory(at, size));
    t.writeMemory(at, encodeStruct(linux.MsqidDs, { ...ds, uid: set.uid, gid: set.gid, mode: set.mode, qbytes: set.qbytes ?? ds.qbytes }));
    ctl(linux.IPC.SET, at, `msgctl(${id}, IPC_SET)`);
  }
}
