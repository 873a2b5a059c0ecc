/**
 * seccomp: each thread's mode (strict, or filters) and its filters.
 *
 * Checkpoint. Every thread's mode is in /proc; a filter thread's programs are read with
 * PTRACE_SECCOMP_GET_FILTER (number 0 is the oldest) and their flags (SECCOMP_FILTER_FLAG_LOG)
 * with PTRACE_SECCOMP_GET_METADATA. The kernel offers no way to tell whether two threads hold
 * the same filter object (kcmp has no seccomp type), so filters are told apart by their place:
 * two threads whose chains agree, program and flags, from the oldest filter up to some filter,
 * are taken to share those filters (as they do after an inheritance through clone, or TSYNC).
 * Each distinct filter is written once (SECCOMP_FILTER under TASK); each thread with a mode has
 * a SECCOMP object (under TASK for the main thread, under its THREAD otherwise) listing its
 * filters, oldest first. A filter that hands calls to a user-space supervisor
 * (SECCOMP_RET_USER_NOTIF) is refused: its listener cannot be given back.
 *
 * While cptrst holds a process under seccomp, its calls inside it must not meet the process's
 * filters (a filter may kill the process for a call it never makes itself): the freezer and the
 * restart set PTRACE_O_SUSPEND_SECCOMP on such threads, which ends with the detach (or with
 * cptrst's death).
 *
 * Restart. The filters are installed last, by the restored threads themselves, and the
 * suspension keeps cptrst's later calls (the credentials, the release) out of their reach. The
 * filters every thread holds are installed once by the main thread with SECCOMP_FILTER_FLAG_TSYNC,
 * so that they are shared by all threads again (a later TSYNC of the program's own depends on
 * it); the rest of each thread's chain is installed by that thread. Filters are always installed
 * with SECCOMP_FILTER_FLAG_SPEC_ALLOW: the speculation controls are restored as recorded
 * (TASK_MISC), and a new filter must not change them.
 *
 * Installing a filter takes no_new_privs or CAP_SYS_ADMIN in the task. An image root owns
 * installs them just before the credentials drop (as the process did, perhaps as root before a
 * setuid); an image of another user installs them after it, as the owner, so a filter needs the
 * image's no_new_privs (EPERM otherwise: the owner could not have set it up, and a restart
 * without the filter would give the process fewer restrictions than it had).
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, Tracee, bytes, encodeStruct, frozenStatus, linux, objectType, refuse, u32, u32s,
} from '@cptrst/core';
import { beforeCredsDrop, heldToOwner } from './deferred';
import { CREDS_KEY, CredsImage, THREAD_CREDS_KEY } from './creds';
import { THREAD_ORDER } from './thread';

const { SYS, SECCOMP, BPF, ptrace, PTRACE_O } = linux;

/** After the threads (their THREAD objects are the parents), before mm. */
export const SECCOMP_ORDER = THREAD_ORDER + 5;
/** At restart: after the final credentials (900) and the messages sent again under them (950). */
export const SECCOMP_FINISH_ORDER = 960;
/** Filters in one thread's chain (the kernel's limit is in instructions: 32768 with 4 per filter). */
const MAX_FILTERS = 1024;

@objectType(ObjectType.SECCOMP_FILTER, 'seccomp-filter', { parents: [ObjectType.TASK] })
export class SeccompFilterImage {
  /** Referred to by SECCOMP objects of this task. */
  @u32() id = 0;
  /** SECCOMP_FILTER_FLAG_LOG, the only flag the kernel keeps with a filter. */
  @u32() flags = 0;
  /** struct sock_filter[]: the classic BPF program as the process gave it. */
  @bytes() program: Buffer = Buffer.alloc(0);
}

@objectType(ObjectType.SECCOMP, 'seccomp', { parents: [ObjectType.TASK, ObjectType.THREAD] })
export class SeccompImage {
  /** SECCOMP_MODE_STRICT or SECCOMP_MODE_FILTER. */
  @u32() mode = 0;
  /** The thread's filters by id, oldest first (filter mode only). */
  @u32s() filters: number[] = [];
}

/** What check read, for dump. */
interface Read {
  filters: SeccompFilterImage[];
  threads: Array<{ tid: number; img: SeccompImage }>;
}
const READ = new StateKey<Read>('task.seccomp.read');
const FILTERS = new StateKey<Map<number, SeccompFilterImage>>('task.seccomp.filters');
/** A thread's SECCOMP object at restart (the main thread's under the task's state). */
const MODE = new StateKey<SeccompImage>('task.seccomp');
const SCHEDULED = new StateKey<boolean>('task.seccomp.scheduled');

/** Whether a program returns SECCOMP_RET_USER_NOTIF anywhere (a constant return). */
function notifiesUserSpace(program: Buffer): boolean {
  for (let o = 0; o + BPF.INSN_SIZE <= program.length; o += BPF.INSN_SIZE) {
    const code = program.readUInt16LE(o);
    if ((code & BPF.CLASS_MASK) !== BPF.RET || (code & BPF.RVAL_MASK) !== BPF.K) continue;
    if ((program.readUInt32LE(o + 4) & SECCOMP.RET_ACTION_FULL) >>> 0 === SECCOMP.RET_USER_NOTIF) return true;
  }
  return false;
}

/** A thread's filters, oldest first: [flags, program] each. */
function filtersOf(pid: number, tid: number, count: number): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  for (let i = 0; ; i++) {
    let program: Buffer;
    try {
      program = ptrace.seccompGetFilter(tid, i);
    } catch (e) {
      const code = (e as CptError).code;
      if (code === 'ENOENT') break;
      if (code === 'EMEDIUMTYPE') refuse(pid, `thread ${tid} seccomp filter ${i}`, 'the kernel kept no copy of the filter program (a kernel without CONFIG_CHECKPOINT_RESTORE)');
      throw e;
    }
    out.push([Number(ptrace.seccompGetMetadata(tid, i)) & SECCOMP.FILTER_FLAG_LOG, program]);
    if (out.length > MAX_FILTERS) refuse(pid, `thread ${tid} seccomp`, `more than ${MAX_FILTERS} seccomp filters`);
  }
  // A filter thread with no count shown: a kernel before 5.9, without Seccomp_filters.
  if (count > 0 && out.length !== count) throw new CptError('EIO', `thread ${tid} has ${count} seccomp filters by /proc, ${out.length} by ptrace`, { pid, object: `thread ${tid} seccomp` });
  return out;
}

export class SeccompDump implements DumpHandler {
  readonly name = 'task.seccomp';
  readonly order = SECCOMP_ORDER;

  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    const read: Read = { filters: [], threads: [] };
    // Filter ids by place: the id of the filter below it, its flags and its program.
    const ids = new Map<string, number>();
    for (const tid of [task.pid, ...(task.threads ?? []).map((t) => t.tid)]) {
      const s = tid === task.pid ? frozenStatus(task) : linux.readStatus(task.pid, tid);
      if (s.seccomp === SECCOMP.MODE_DISABLED) continue;
      const img = new SeccompImage();
      img.mode = s.seccomp;
      if (s.seccomp === SECCOMP.MODE_FILTER) {
        let below = -1;
        for (const [flags, program] of filtersOf(task.pid, tid, s.seccompFilters)) {
          if (notifiesUserSpace(program)) refuse(task.pid, `thread ${tid} seccomp filter ${img.filters.length}`, 'the filter hands system calls to a user-space supervisor (SECCOMP_RET_USER_NOTIF), which a restart cannot give back');
          const key = `${below}/${flags}/${program.toString('hex')}`;
          let id = ids.get(key);
          if (id === undefined) {
            id = read.filters.length;
            ids.set(key, id);
            read.filters.push(Object.assign(new SeccompFilterImage(), { id, flags, program }));
          }
          img.filters.push(id);
          below = id;
        }
      } else if (s.seccomp !== SECCOMP.MODE_STRICT) {
        refuse(task.pid, `thread ${tid} seccomp`, `seccomp mode ${s.seccomp} is not known to cptrst`);
      }
      read.threads.push({ tid, img });
    }
    task.state.set(READ, read);
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const read = task.state.get(READ);
    if (!read) return;
    for (const f of read.filters) ctx.write(f, task.tag);
    for (const { tid, img } of read.threads) {
      const tag = tid === task.pid ? task.tag : task.threads?.find((t) => t.tid === tid)?.tag;
      if (!tag) throw new CptError('EINVAL', `thread ${tid} has no THREAD object to hold its seccomp state`, { pid: task.pid, object: `thread ${tid} seccomp` });
      ctx.write(img, tag);
    }
  }
}

/** The options of a restored thread (as the process was made), with its seccomp suspended. */
const SUSPENDED = PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.EXITKILL | PTRACE_O.SUSPEND_SECCOMP;

interface Member {
  tid: number;
  tracee: Tracee;
  img?: SeccompImage;
  creds?: CredsImage;
}

export class SeccompRestore implements RestoreHandler {
  readonly name = 'task.seccomp';
  readonly order = SECCOMP_FINISH_ORDER;
  readonly types = [ObjectType.SECCOMP_FILTER, ObjectType.SECCOMP];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    if (o.type === ObjectType.SECCOMP_FILTER) return this.filter(task, o.obj as SeccompFilterImage);
    const img = o.obj as SeccompImage;
    const th = o.ptag === task.tag ? undefined : task.threads?.find((t) => t.tag === o.ptag);
    const who = th ? `thread ${th.tid}` : 'the main thread';
    const bad = (m: string) => new CptError('EBADIMG', `seccomp of ${who}: ${m}`, { pid: task.pid, object: `${who} seccomp` });
    if (o.ptag !== task.tag && !th) throw bad(`its parent tag ${o.ptag} is neither the task nor one of its threads`);
    const state = th ? th.state : task.state;
    if (state.has(MODE)) throw bad('a second seccomp object');
    const known = task.state.get(FILTERS) ?? new Map<number, SeccompFilterImage>();
    if (img.mode === SECCOMP.MODE_STRICT) {
      if (img.filters.length) throw bad('strict mode with filters');
    } else if (img.mode === SECCOMP.MODE_FILTER) {
      if (!img.filters.length || img.filters.length > MAX_FILTERS) throw bad(`${img.filters.length} filters`);
      for (const id of img.filters) if (!known.has(id)) throw bad(`filter ${id} is not among the task's filters before it`);
    } else {
      throw bad(`mode ${img.mode}`);
    }
    const creds = (th ? th.state.get(THREAD_CREDS_KEY) : undefined) ?? task.state.get(CREDS_KEY);
    if (!creds) throw bad('it comes before the credentials');
    if (img.mode === SECCOMP.MODE_FILTER && heldToOwner(ctx) && !creds.noNewPrivs) {
      throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, and ${who} of task ${task.pid} has seccomp filters without no_new_privs: only a privileged process can set that up`, { pid: task.pid, object: `${who} seccomp` });
    }
    state.set(MODE, img);
    // An image root owns: installed with the privilege the process may have had when it did it.
    if (!heldToOwner(ctx) && !task.state.has(SCHEDULED)) {
      task.state.set(SCHEDULED, true);
      beforeCredsDrop(task, 'seccomp filters', () => install(ctx, task));
    }
  }

  private filter(task: RestartTask, f: SeccompFilterImage): void {
    const bad = (m: string) => new CptError('EBADIMG', `seccomp filter ${f.id}: ${m}`, { pid: task.pid, object: `seccomp filter ${f.id}` });
    const known = task.state.ensure(FILTERS, () => new Map<number, SeccompFilterImage>());
    if (known.has(f.id)) throw bad('a second filter with this id');
    if (known.size >= MAX_FILTERS * 8) throw bad('too many filters');
    if ((f.flags & ~SECCOMP.FILTER_FLAG_LOG) !== 0) throw bad(`flags 0x${f.flags.toString(16)}`);
    const n = f.program.length / BPF.INSN_SIZE;
    if (!Number.isInteger(n) || n < 1 || n > BPF.MAXINSNS) throw bad(`a program of ${f.program.length} bytes`);
    known.set(f.id, f);
  }

  /** An image of another user: installed now, as the owner. Then, for every task, the check. */
  finish(ctx: RestartContext, task: RestartTask): void {
    if (heldToOwner(ctx) && members(task).some((m) => m.img)) install(ctx, task);
    verify(task);
  }
}

function members(task: RestartTask): Member[] {
  const main = { tid: task.pid, tracee: task.tracee!, img: task.state.get(MODE), creds: task.state.get(CREDS_KEY) };
  return [main, ...(task.threads ?? []).map((th) => ({ tid: th.tid, tracee: th.tracee!, img: th.state.get(MODE), creds: th.state.get(THREAD_CREDS_KEY) ?? main.creds }))];
}

/** The thread installs one filter (with TSYNC: for every thread of the process). */
function installFilter(t: Tracee, pid: number, tid: number, f: SeccompFilterImage, tsync: boolean): void {
  const at = t.stage(f.program, 64);
  const prog = t.stage(encodeStruct(linux.SockFprog, { len: f.program.length / BPF.INSN_SIZE, filter: at }), 0);
  const flags = f.flags | SECCOMP.FILTER_FLAG_SPEC_ALLOW | (tsync ? SECCOMP.FILTER_FLAG_TSYNC : 0);
  const what = `seccomp filter ${f.id} in thread ${tid}${tsync ? ' for every thread' : ''}`;
  const r = t.syscall(SYS.seccomp, [SECCOMP.SET_MODE_FILTER, flags, prog]);
  if (r > 0n) throw new CptError('EBUSY', `${what}: thread ${r} could not take it`, { pid, object: `thread ${tid} seccomp` });
  if (r === -BigInt(linux.ERRNO.EACCES)) throw new CptError('EPERM', `${what}: the thread has neither no_new_privs nor CAP_SYS_ADMIN`, { pid, object: `thread ${tid} seccomp` });
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `${what} failed inside the process: ${linux.errnoName(Number(-r))}`, { pid, object: `thread ${tid} seccomp` });
}

function install(ctx: RestartContext, task: RestartTask): void {
  const all = members(task);
  const filters = task.state.get(FILTERS) ?? new Map<number, SeccompFilterImage>();
  // From here on cptrst's calls in these threads pass their filters by (until the detach).
  for (const m of all) ptrace.setOptions(m.tid, SUSPENDED);
  const chains = all.map((m) => (m.img?.mode === SECCOMP.MODE_FILTER ? m.img.filters : []));
  let common = 0;
  while (chains.every((c) => common < c.length && c[common] === chains[0][common])) common++;
  for (let i = 0; i < common; i++) installFilter(all[0].tracee, task.pid, all[0].tid, filters.get(chains[0][i])!, all.length > 1);
  all.forEach((m, k) => {
    for (const id of chains[k].slice(common)) installFilter(m.tracee, task.pid, m.tid, filters.get(id)!, false);
    if (m.img?.mode === SECCOMP.MODE_STRICT) m.tracee.syscallOk(SYS.seccomp, [SECCOMP.SET_MODE_STRICT, 0, 0], `seccomp strict mode in thread ${m.tid}`);
  });
  ctx.log.debug(`pid ${task.pid}: seccomp installed (${common} filter(s) shared by all threads)`);
}

/** Every thread has the recorded mode and number of filters, and no_new_privs as recorded (TSYNC may set it). */
function verify(task: RestartTask): void {
  const all = members(task);
  // Without seccomp objects, the main thread says it for all: the others were made from it, and
  // only a filter it held when they were made (cptrst's own, through the helper) could be theirs.
  for (const m of all.some((x) => x.img) ? all : all.slice(0, 1)) {
    const s = linux.readStatus(task.pid, m.tid);
    const mode = m.img?.mode ?? SECCOMP.MODE_DISABLED;
    const count = mode === SECCOMP.MODE_FILTER ? m.img!.filters.length : 0;
    const diffs: string[] = [];
    if (s.seccomp !== mode) diffs.push(`seccomp mode ${s.seccomp} instead of ${mode}`);
    if (s.seccompFilters !== count && !(s.seccompFilters === 0 && s.seccomp === SECCOMP.MODE_FILTER)) diffs.push(`${s.seccompFilters} seccomp filters instead of ${count}`);
    if (m.creds && (s.noNewPrivs !== 0) !== m.creds.noNewPrivs) diffs.push(`no_new_privs ${s.noNewPrivs} instead of ${m.creds.noNewPrivs ? 1 : 0}`);
    if (diffs.length) throw new CptError('EPERM', `thread ${m.tid} could not be given its seccomp state exactly: ${diffs.join('; ')}`, { pid: task.pid, object: `thread ${m.tid} seccomp` });
  }
}
