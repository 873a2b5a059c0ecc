/**
 * SysV semaphore sets used by the process tree (which ones, and the id and collision policy: see
 * sysv-ipc.ts): each set with its id, key, owner, mode, the value of every semaphore and who
 * changed each last. cptrst reads them itself (semctl GETALL and GETPID, as root, in the tree's
 * IPC namespace), twice, until two reads agree: a process outside the tree may be changing them.
 *
 * A made-again set gets its values with SETALL from the tree's first process, so the last changer
 * of every semaphore reads that process afterwards, and the set's times are those of the restart;
 * its creator (cuid, cgid) is the restoring root. SEM_UNDO adjustments are not restored: they live
 * in a per-process list that no interface shows, and a process that may hold some is refused at
 * checkpoint (misc.ts).
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler, RestoreObject,
  StateKey, i64, linux, objectType, refuse, u32s,
} from '@cptrst/core';
import {
  SysvIpcFields, ipcCall, makeWithId, readConsistently, recordsForTree, removeMade, requireFreeKey, requireTrustedIpc, setOwner, withTaskBuffer,
} from './sysv-ipc';

/** After the limits (150), before the threads (190). */
export const SYSV_SEM_ORDER = 180;
/** The kernel's bound on semaphores in one set (SEMMSL can be set no higher). */
const MAX_NSEMS = 32000;
const MAX_ID = 0x7fffffff;

@objectType(ObjectType.SYSV_SEM, 'sysv-sem', { parents: [ObjectType.TASK] })
export class SysvSemImage extends SysvIpcFields {
  @i64() otime = 0n;
  @i64() ctime = 0n;
  /** Every semaphore's value, and the process that changed it last (0: nobody yet). */
  @u32s() values: number[] = [];
  @u32s() pids: number[] = [];
}

const setObject = (id: number, key: number): string => `SysV semaphore set ${id} (key ${key})`;

interface SemState {
  set: linux.SysvSem;
  values: number[];
  pids: number[];
}

/** One read of a set: /proc/sysvipc/sem's line, then its values and last changers. Undefined: it is gone. */
function readOnce(id: number, pid: number): SemState | undefined {
  const set = linux.readSysvSem().find((s) => s.id === id);
  if (!set) return undefined;
  const object = setObject(id, set.key);
  if (set.nsems < 1 || set.nsems > MAX_NSEMS) refuse(pid, object, `the set has ${set.nsems} semaphores`);
  const buf = Buffer.alloc(2 * set.nsems);
  const semctl = 'semctl';
  ipcCall(semctl, [id, 0, linux.SEM.GETALL, buf], `semctl(${id}, GETALL)`, pid, object);
  const values = Array.from({ length: set.nsems }, (_, i) => buf.readUInt16LE(2 * i));
  const pids = values.map((_, i) => Number(ipcCall(semctl, [id, i, linux.SEM.GETPID, 0], `semctl(${id}, ${i}, GETPID)`, pid, object)));
  return { set, values, pids };
}

const sameState = (a: SemState, b: SemState): boolean =>
  a.set.key === b.set.key && a.set.mode === b.set.mode && a.set.uid === b.set.uid && a.set.gid === b.set.gid && a.set.otime === b.set.otime
  && a.set.ctime === b.set.ctime && a.values.join() === b.values.join() && a.pids.join() === b.pids.join();

/** A consistent read of set `id`: see readConsistently. */
const readSet = (id: number, pid: number): SemState | undefined =>
  readConsistently(() => readOnce(id, pid), sameState, pid, (last) => setObject(id, last.set.key), 'set');

/** The sets of /proc/sysvipc/sem that a process of `pids` changed last (any of their semaphores). */
function setsChangedBy(pids: ReadonlySet<number>): linux.SysvSem[] {
  const semctl = linux.syscallNumber('semctl');
  return linux.readSysvSem().filter((s) => {
    for (let i = 0; i < s.nsems; i++) if (pids.has(Number(linux.rawSyscall(semctl, s.id, i, linux.SEM.GETPID, 0)))) return true;
    return false;
  });
}

/** The sets the frozen task changed last, looked for once for its checks (misc.ts asks too). */
const CHANGED_BY_TASK = new StateKey<linux.SysvSem[]>('task.sysv-sem.changedByTask');

export function setsChangedByTask(task: CheckpointTask): linux.SysvSem[] {
  return task.state.ensure(CHANGED_BY_TASK, () => setsChangedBy(new Set([task.pid])));
}

/** The sets a process of `pids` changed last, each read consistently. */
function setsUsedBy(pids: ReadonlySet<number>, pid: number, changed = setsChangedBy(pids)): SemState[] {
  const out: SemState[] = [];
  for (const s of changed) {
    const st = readSet(s.id, pid);
    if (st) out.push(st);
  }
  return out;
}

/** Whether a set is the one the image recorded, as it was left. */
const isLeft = (here: SemState, img: SysvSemImage): boolean => {
  const s = here.set;
  return s.key === img.key && (s.mode & 0o777) === img.mode && s.uid === img.uid && s.gid === img.gid && s.cuid === img.cuid && s.cgid === img.cgid
    && s.otime === img.otime && s.ctime === img.ctime && here.values.join() === img.values.join() && here.pids.join() === img.pids.join();
};

export class SysvSemDump implements DumpHandler {
  readonly name = 'task.sysv-sem';
  readonly order = SYSV_SEM_ORDER;
  /** A zombie may have been the last to change a semaphore: its sets belong to the tree too. */
  readonly zombies = true;

  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    // Reading them is what the dump does: a set that cannot be read is refused here, before anything is written.
    setsUsedBy(new Set([task.pid]), task.pid, setsChangedByTask(task));
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    if (!recordsForTree(ctx, task)) return;
    for (const st of setsUsedBy(new Set(ctx.treePids(task)), task.pid)) {
      const img = new SysvSemImage();
      img.key = st.set.key;
      img.id = st.set.id;
      img.mode = st.set.mode & 0o777;
      img.uid = st.set.uid;
      img.gid = st.set.gid;
      img.cuid = st.set.cuid;
      img.cgid = st.set.cgid;
      img.otime = st.set.otime;
      img.ctime = st.set.ctime;
      img.values = st.values;
      img.pids = st.pids;
      ctx.write(img, task.tag);
      ctx.log.debug(`pid ${task.pid}: ${setObject(img.id, img.key)}: ${img.values.length} semaphores`);
    }
  }
}

const SETS = new StateKey<SysvSemImage[]>('task.sysv-sem.restore');

export class SysvSemRestore implements RestoreHandler {
  readonly name = 'task.sysv-sem';
  readonly order = SYSV_SEM_ORDER;
  readonly types = [ObjectType.SYSV_SEM];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as SysvSemImage;
    const object = setObject(img.id, img.key);
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object });
    const list = task.state.ensure(SETS, () => []);
    if (img.id < 0 || img.id > MAX_ID || list.some((x) => x.id === img.id)) throw bad(`set id ${img.id} is out of range or given twice`);
    if (img.key !== linux.IPC.PRIVATE && list.some((x) => x.key === img.key)) throw bad(`key ${img.key} is given twice`);
    if ((img.mode & ~0o777) !== 0) throw bad(`mode 0${img.mode.toString(8)}`);
    const n = img.values.length;
    if (n < 1 || n > MAX_NSEMS || img.pids.length !== n) throw bad(`${n} semaphores (and ${img.pids.length} last changers)`);
    if (img.values.some((v) => v > linux.SEMVMX)) throw bad(`a semaphore value above ${linux.SEMVMX}`);
    if (img.pids.some((p) => p > 4194304)) throw bad('a last changer pid out of range');
    requireTrustedIpc(ctx, task, object);
    list.push(img);
  }

  finish(ctx: RestartContext, task: RestartTask): void {
    for (const img of task.state.get(SETS) ?? []) this.one(ctx, task, img);
  }

  abort(_ctx: RestartContext, task: RestartTask): void {
    removeMade(task, 'sem');
  }

  private one(ctx: RestartContext, task: RestartTask, img: SysvSemImage): void {
    const object = setObject(img.id, img.key);
    const here = readSet(img.id, task.pid);
    if (here) {
      const s = here.set;
      if (s.key !== img.key || s.nsems !== img.values.length || s.cuid !== img.cuid || s.cgid !== img.cgid) {
        throw new CptError('EEXIST', `SysV semaphore id ${img.id} is taken by another set (key ${s.key}, ${s.nsems} semaphores); it is not taken over`, { pid: task.pid, object });
      }
      if (!isLeft(here, img)) {
        throw new CptError('EBUSY', `the set the process left (id ${img.id}) was changed since the checkpoint (values now ${here.values.join(',')}, image ${img.values.join(',')}); it is not overwritten`, { pid: task.pid, object });
      }
      ctx.log.debug(`pid ${task.pid}: ${object}: taken back as the process left it`);
      return;
    }
    requireFreeKey(task, img.key, linux.readSysvSem, 'semaphore set', object);
    const t = task.tracee!;
    const semctl = linux.syscallNumber('semctl');
    makeWithId(task, 'sem', img.id, object, () =>
      t.syscallOk(linux.syscallNumber('semget'), [img.key, img.values.length, linux.IPC.CREAT | linux.IPC.EXCL | img.mode], `semget(key ${img.key}, ${img.values.length})`));
    setOwner(t, 'sem', img.id, { uid: img.uid, gid: img.gid, mode: img.mode });
    const vals = Buffer.alloc(2 * img.values.length);
    img.values.forEach((v, i) => vals.writeUInt16LE(v, 2 * i));
    withTaskBuffer(t, vals, `the values of ${object}`, (at) => t.syscallOk(semctl, [img.id, 0, linux.SEM.SETALL, at], `semctl(${img.id}, SETALL)`));
    ctx.log.debug(`pid ${task.pid}: ${object}: made again`);
  }
}
