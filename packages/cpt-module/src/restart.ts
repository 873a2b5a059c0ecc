/**
 * The restart flow: read and check the head (format, arch, capability
 * vector), then read the stream front to back, handing each object to the restore handler that
 * owns its type: the TASK object creates the process with its PID, later objects fill it in.
 * Once every task is made (a tree's children are made from their parents), the finish hooks run
 * for each task in order (the arch one decides the registers), those from the final credentials
 * on hook by hook across the tree, and all are let go together. On failure, or when interrupted (options.signal, checked
 * between objects and hooks), every process made so far is killed.
 */
import { DependencyContainer } from 'tsyringe';
import { naming } from './checkpoint';
import {
  CptError, ImageReader, ObjectType, OperationOptions, PagesFollow, RestartContext, RestartFlags, RestartResult, RestartTask,
  RestoreHandler, TaskState, Tokens, fileSource, kindRecordTypes, linux,
} from '@cptrst/core';
import { archOf, releaseTracee, releaseTracees } from '@cptrst/core';

export async function restart(container: DependencyContainer, ctid: number, fd: number, flags: number, options: OperationOptions = {}): Promise<RestartResult> {
  const reader = new ImageReader(fileSource(fd, options.imageName));
  const ctx = new RestartContext(container, reader, fd, flags, options.log);
  ctx.signal = options.signal;
  if (options.onProgress) ctx.events.on('progress', options.onProgress);
  ctx.throwIfAborted();
  const head = reader.readHead();
  ctx.head = head;
  checkHead(ctx);
  if (flags & RestartFlags.LAZY && !ctx.imageTrusted) {
    // The userfaultfd that fills the memory must be made with CAP_SYS_PTRACE (mm/src/lazy.ts).
    throw new CptError('EPERM', 'a lazy restart is only for images owned by root: the process would need a privilege (CAP_SYS_PTRACE, to make the userfaultfd that fills its memory) that a user\'s image does not give it; restart without --lazy', { object: 'lazy restart' });
  }

  const handlers = ctx.all(Tokens.RestoreHandler).sort((a, b) => a.order - b.order);
  const byType = new Map<number, RestoreHandler>();
  for (const h of handlers) for (const t of h.types) if (!byType.has(t)) byType.set(t, h);
  // The records of a subsystem's kinds go to the subsystem, which hands them to the kind.
  for (const h of handlers) {
    if (!h.kinds) continue;
    for (const k of ctx.all(h.kinds)) for (const t of kindRecordTypes(k)) if (!byType.has(t)) byType.set(t, h);
  }

  const tasks: RestartTask[] = [];
  let current: RestartTask | undefined;
  // The finish hooks run task by task up to the final credentials; from there on (the final
  // credentials, then what needs them in every process, such as a connection between two
  // processes made by one and accepted by the other) hook by hook across the tree.
  const FINAL = 900;
  const finishTask = async (t: RestartTask): Promise<void> => {
    for (const h of handlers) {
      if (h.order >= FINAL) continue;
      await ctx.checkpointYield();
      await ctx.timed(`finish ${h.name}`, () => h.finish?.(ctx, t));
    }
    await ctx.checkpointYield();
  };
  const finishLate = async (live: RestartTask[]): Promise<void> => {
    for (const h of handlers) {
      if (h.order < FINAL) continue;
      for (const t of live) {
        await ctx.checkpointYield();
        await ctx.timed(`finish ${h.name}`, () => h.finish?.(ctx, t));
      }
    }
    await ctx.checkpointYield();
  };
  try {
    const next = () => ctx.timed('read image', () => reader.next());
    // The task of each object read, by tag: the objects of the pages section name an area of any task.
    const taskOfTag = new Map<number, RestartTask>();
    for (let rec = next(); rec; rec = next()) {
      await ctx.checkpointYield();
      if (rec.type === ObjectType.PAGES_FOLLOW) {
        if (ctx.pagesFollow || !current) throw new CptError('EBADIMG', `a pages section at image offset ${rec.offset} ${current ? 'after another one' : 'before any task'}`, { object: rec.name });
        ctx.pagesFollow = { entries: (rec.obj as PagesFollow).entries, offset: rec.offset };
        // A lazy restart lets the processes run here, and its fill reads the rest while they run.
        const h = byType.get(rec.type);
        if (flags & RestartFlags.LAZY && h) {
          await ctx.timed(h.name, () => h.restore(ctx, current!, { type: rec.type, tag: rec.tag, ptag: rec.ptag, offset: rec.offset, obj: rec.obj }));
          if (ctx.lazyFill) break;
        }
        continue;
      }
      if (ctx.pagesFollow && rec.type !== ObjectType.PAGES) throw new CptError('EBADIMG', `${rec.name} object at image offset ${rec.offset} in the pages section`, { object: rec.name });
      if (rec.type === ObjectType.TASK) {
        // A process tree: every task is made (children from their parent, which is still held)
        // before any finish hook runs, so a parent's credentials drop only once its children exist.
        const pid = (rec.obj as { pid?: number } | undefined)?.pid ?? 0;
        if (!Number.isInteger(pid) || pid <= 0 || pid > 4194304) throw new CptError('EBADIMG', `task object at image offset ${rec.offset} has pid ${pid}`, { object: 'task' });
        if (tasks.length === 0 && ctid && ctid !== pid) throw new CptError('EINVAL', `the image's root process is ${pid}, not ${ctid}`, { pid });
        current = { pid, tid: pid, tag: rec.tag, state: new TaskState() };
        tasks.push(current);
      }
      const h = byType.get(rec.type);
      if (rec.obj === undefined || !h) {
        // Only an object its writer marked OPTIONAL may be left out; any other one would be lost.
        if (rec.optional) {
          ctx.log.warn(`skipping an optional object of ${rec.obj === undefined ? 'unknown ' : ''}type ${rec.type} (${rec.name}) at image offset ${rec.offset}`);
          continue;
        }
        if (rec.obj === undefined) throw new CptError('EOPNOTSUPP', `the image has an object of unknown type ${rec.type} at image offset ${rec.offset}, not marked optional: this cptrst cannot restore it`, { object: `type ${rec.type} at image offset ${rec.offset}` });
      }
      if (!h) throw new CptError('EOPNOTSUPP', `the image has ${rec.name} objects and no loaded module restores them`, { object: `${rec.name} at image offset ${rec.offset}` });
      if (!current) throw new CptError('EBADIMG', `${rec.name} object at image offset ${rec.offset} comes before any task`, { object: rec.name });
      const task = ctx.pagesFollow ? taskOfTag.get(rec.ptag) : current;
      if (!task) throw new CptError('EBADIMG', `${rec.name} object at image offset ${rec.offset} belongs to no task`, { object: rec.name });
      taskOfTag.set(rec.tag, task);
      if (task.zombie && rec.type !== ObjectType.TASK) throw new CptError('EBADIMG', `${rec.name} object at image offset ${rec.offset} belongs to a zombie`, { pid: task.pid, object: rec.name });
      // An image not owned by root gets its process only once its credentials are checked.
      if (!task.tracee && rec.type !== ObjectType.TASK && rec.type !== ObjectType.TASK_CREDS) {
        throw new CptError('EBADIMG', `${rec.name} object at image offset ${rec.offset} comes before the task's credentials`, { pid: task.pid, object: rec.name });
      }
      await ctx.timed(h.name, () => h.restore(ctx, task, { type: rec.type, tag: rec.tag, ptag: rec.ptag, offset: rec.offset, obj: rec.obj, pages: rec.pages, pagesOffset: rec.pagesOffset, filePayload: rec.filePayload }));
    }
    if (!current) throw new CptError('EBADIMG', 'the image holds no task');
    await ctx.runAfterRecords();
    for (const t of tasks) if (!t.zombie) await finishTask(t);
    await finishLate(tasks.filter((t) => !t.zombie));
  } catch (e) {
    for (const t of tasks) {
      for (const h of handlers) {
        try {
          h.abort?.(ctx, t);
        } catch {
          /* best effort */
        }
      }
      killQuietly(t);
    }
    throw naming(e, current?.pid);
  }
  // From here on nothing is interrupted: the release is quick, and the process is whole.
  const stopAll = (flags & RestartFlags.LEAVE_STOPPED) !== 0;
  ctx.timed('release', () => {
    // Children before their parents (the image lists parents first): a parent that runs finds
    // its children already running. Every task's last calls first (each thread's too), then the
    // detaches, one after the other. A zombie's tracee is released already.
    releaseTracees([...tasks].reverse().map((t) => ({
      tracee: t.tracee!,
      mode: stopAll || t.leaveStopped ? 'stop' as const : 'run' as const,
      stopSignal: t.leaveStopped ? t.stopSignal : undefined,
      regs: t.resumeRegs,
      threads: (t.threads ?? []).filter((th) => th.tracee).map((th) => ({ tracee: th.tracee!, regs: th.resumeRegs })),
    })));
  });
  ctx.progress({ phase: 'done', pid: tasks[0].pid });
  // A lazy restart's memory is filled from here on, while the processes run.
  const pagesIn = ctx.lazyFill?.();
  // A caller that does not wait for it must not crash on its failure (the processes are killed then).
  pagesIn?.catch(() => undefined);
  return { pid: tasks[0].pid, tasks: tasks.length, timings: ctx.timings, ...(pagesIn ? { pagesIn } : {}) };
}

function checkHead(ctx: RestartContext): void {
  const head = ctx.head!;
  const problems: string[] = [];
  const arch = archOf(ctx.container);
  if (head.arch !== arch.name) problems.push(`the image is for ${head.arch}, this machine is ${arch.name}`);
  if (head.pageSize !== linux.pageSize()) problems.push(`the image has ${head.pageSize}-byte pages, this machine ${linux.pageSize()}`);
  for (const p of ctx.all(Tokens.MachineProbe)) problems.push(...(p.checkHead?.(head) ?? []));
  if (problems.length) throw new CptError('ENOTSUP', `this image cannot be restored on this machine: ${problems.join('; ')}`, { object: 'image head' });
}

function killQuietly(t: RestartTask): void {
  if (!t.tracee || t.tracee.released) return;
  try {
    releaseTracee(t.tracee, 'kill');
  } catch {
    /* gone already */
  }
}
