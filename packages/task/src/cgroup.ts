/**
 * The control groups a process is in, one TASK_CGROUP object per hierarchy. A restored process
 * starts in cptrst's groups; it is moved into its own, which must exist (cptrst does not make
 * groups: their limits are someone's policy). A root-owned image's process is moved by cptrst,
 * early, so that the memory it gets back is charged to its own group; any other image's process
 * moves itself once its credentials are dropped, so the kernel decides whether its owner may put
 * it there.
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, linux, objectType, refuse, str,
} from '@cptrst/core';
import { nowOrAfterCreds } from './deferred';

const { SYS } = linux;
/** After the credentials (110), before anything is charged to a group (memory, 200). */
export const CGROUP_ORDER = 115;

@objectType(ObjectType.TASK_CGROUP, 'task-cgroup', { parents: [ObjectType.TASK] })
export class TaskCgroupImage {
  /** The hierarchy, by its controllers as the kernel names them ("" for cgroup v2). */
  @str() controllers = '';
  /** The group, from the hierarchy's root. */
  @str() path = '';
}

/** The groups read at check (the dump writes the same list). */
const CHECKED = new StateKey<linux.CgroupMembership[]>('task.cgroup.checked');
/**
 * At restart, the new process's groups, read once for all its objects: only a move by this handler
 * changes one, and it changes the line of the hierarchy it moved, which no other object names.
 */
const HERE = new StateKey<{ groups: Map<string, string>; seen: Set<string> }>('task.cgroup.here');

const label = (controllers: string): string => (controllers === '' ? 'the unified (v2) hierarchy' : `hierarchy ${controllers}`);

export class CgroupDump implements DumpHandler {
  readonly name = 'task.cgroup';
  readonly order = CGROUP_ORDER;

  /** Threads of one process in different groups (possible in v1) cannot be restored as one process is. */
  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    const own = linux.readCgroups(task.pid);
    task.state.set(CHECKED, own);
    for (const tid of linux.listThreads(task.pid)) {
      if (tid === task.pid) continue;
      for (const m of linux.readCgroups(task.pid, tid)) {
        const same = own.find((o) => o.hierarchy === m.hierarchy);
        if (same && same.path !== m.path) {
          refuse(task.pid, `thread ${tid} in cgroup ${m.path}`, `its thread ${tid} is in another group of ${label(m.controllers)} than the process (${same.path})`);
        }
      }
    }
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    for (const m of task.state.get(CHECKED) ?? linux.readCgroups(task.pid)) {
      const img = new TaskCgroupImage();
      img.controllers = m.controllers;
      img.path = m.path;
      ctx.write(img, task.tag);
    }
  }
}

export class CgroupRestore implements RestoreHandler {
  readonly name = 'task.cgroup';
  readonly order = CGROUP_ORDER;
  readonly types = [ObjectType.TASK_CGROUP];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as TaskCgroupImage;
    const object = `cgroup ${img.controllers}:${img.path}`;
    const fail = (code: string, m: string) => new CptError(code, m, { pid: task.pid, object });
    if (!/^[A-Za-z0-9_=,.-]*$/.test(img.controllers)) throw fail('EBADIMG', `a cgroup hierarchy named ${JSON.stringify(img.controllers)}`);
    if (!img.path.startsWith('/') || img.path.length > 4096 || img.path.includes('\0') || img.path.split('/').some((c) => c === '.' || c === '..')) {
      throw fail('EBADIMG', `a cgroup path ${JSON.stringify(img.path)} that is not a plain absolute path`);
    }
    const known = task.state.ensure(HERE, () => ({ groups: new Map(linux.readCgroups(task.pid).map((m) => [m.controllers, m.path])), seen: new Set<string>() }));
    if (known.seen.has(img.controllers)) throw fail('EBADIMG', `${label(img.controllers)} is given twice`);
    known.seen.add(img.controllers);
    const here = known.groups.get(img.controllers);
    if (here === img.path) return;
    if (here === undefined) throw fail('ENOENT', `the process was in ${label(img.controllers)}, which this machine does not have`);
    const mount = linux.findCgroupMount(img.controllers);
    if (!mount) throw fail('ENOENT', `${label(img.controllers)} is not mounted where cptrst can see it`);
    const root = mount.root === '/' ? '' : mount.root;
    if (root && img.path !== root && !img.path.startsWith(`${root}/`)) throw fail('ENOENT', `group ${img.path} is outside the part of ${label(img.controllers)} mounted here (${mount.root})`);
    const dir = path.join(mount.mountPoint, img.path.slice(root.length));
    if (!fs.existsSync(dir)) throw fail('ENOENT', `group ${img.path} of ${label(img.controllers)} does not exist here (${dir}); cptrst does not make groups`);
    if (isFrozen(dir, img.controllers)) throw fail('EBUSY', `group ${img.path} of ${label(img.controllers)} is frozen: the process could not be restored in it`);
    const procs = path.join(dir, 'cgroup.procs');
    nowOrAfterCreds(ctx, task, object, () => {
      if (ctx.imageTrusted) {
        writeProcs(procs, task.pid, object);
        return;
      }
      // The kernel checks a write to cgroup.procs with the rights of whoever opened it: the task, as its owner.
      const t = task.tracee!;
      const at = t.stage(Buffer.from(`${procs}\0`), 0);
      const fd = Number(t.syscallOk(SYS.openat, [linux.AT_FDCWD, at, linux.O.WRONLY | linux.O.CLOEXEC, 0], `open(${procs})`));
      try {
        const text = Buffer.from('0\n');
        const r = t.syscall(SYS.write, [fd, t.stage(text, 0), text.length]);
        if (r < 0n) throw fail(linux.errnoName(Number(-r)), `moving into group ${img.path} failed inside the process: ${linux.errnoName(Number(-r))}`);
      } finally {
        t.syscall(SYS.close, [fd]);
      }
    });
  }
}

function writeProcs(procs: string, pid: number, object: string): void {
  try {
    fs.writeFileSync(procs, `${pid}\n`);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new CptError(code, `write(${procs}, ${pid}): ${(e as Error).message}`, { pid, object });
  }
}

/** A frozen group (v1 freezer.state FROZEN or FREEZING, v2 cgroup.freeze 1) stops whatever joins it. */
function isFrozen(dir: string, controllers: string): boolean {
  const read = (f: string): string | undefined => {
    try {
      return fs.readFileSync(path.join(dir, f), 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  if (controllers === '') return read('cgroup.freeze') === '1';
  if (controllers.split(',').includes('freezer')) return (read('freezer.state') ?? 'THAWED') !== 'THAWED';
  return false;
}
