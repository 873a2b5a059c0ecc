/**
 * The general registers (struct user_regs_struct), fs_base and gs_base included. Dumped as the
 * freeze found them; at restart the syscall-restart rule (syscall-restart.ts) decides where the
 * task carries on, and the registers are set last, after every injected syscall.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler, RestoreObject,
  StateKey, TaskState, Tracee, objectType, u64,
} from '@cptrst/core';
import { resumeRegs, syscallState } from './syscall-restart';
import { UserRegs, asUserRegs } from './regs-codec';

@objectType(ObjectType.REGS, 'regs', { parents: [ObjectType.TASK, ObjectType.THREAD] })
export class RegsImage {
  @u64() r15 = 0n;
  @u64() r14 = 0n;
  @u64() r13 = 0n;
  @u64() r12 = 0n;
  @u64() rbp = 0n;
  @u64() rbx = 0n;
  @u64() r11 = 0n;
  @u64() r10 = 0n;
  @u64() r9 = 0n;
  @u64() r8 = 0n;
  @u64() rax = 0n;
  @u64() rcx = 0n;
  @u64() rdx = 0n;
  @u64() rsi = 0n;
  @u64() rdi = 0n;
  @u64() orig_rax = 0n;
  @u64() rip = 0n;
  @u64() cs = 0n;
  @u64() eflags = 0n;
  @u64() rsp = 0n;
  @u64() ss = 0n;
  @u64() fs_base = 0n;
  @u64() gs_base = 0n;
  @u64() ds = 0n;
  @u64() es = 0n;
  @u64() fs = 0n;
  @u64() gs = 0n;
}

export const ARCH_ORDER = 800;

/** One thread whose CPU state the arch's records hold: the main thread (under TASK) or another (under its THREAD). */
export interface CpuOwner {
  readonly tid: number;
  /** The parent tag of its records. */
  readonly tag: number;
  readonly tracee?: Tracee;
  readonly state: TaskState;
  /** Restart: where its resume registers go. */
  setResume?(regs: UserRegs): void;
}

/** The main thread, then every other thread (each with its THREAD tag). */
export function cpuOwners(task: CheckpointTask | RestartTask): CpuOwner[] {
  const main: CpuOwner = { tid: task.tid, tag: task.tag, tracee: task.tracee, state: task.state, setResume: (r) => { (task as RestartTask).resumeRegs = r; } };
  return [main, ...(task.threads ?? []).map((th): CpuOwner => ({ tid: th.tid, tag: th.tag, tracee: th.tracee, state: th.state, setResume: (r) => { th.resumeRegs = r; } }))];
}

/** The thread a restored record belongs to, by its parent tag (EBADIMG for any other parent). */
export function cpuOwnerOf(task: RestartTask, o: RestoreObject, what: string): CpuOwner {
  const owner = cpuOwners(task).find((c) => c.tag === o.ptag);
  if (!owner) throw new CptError('EBADIMG', `a ${what} object under tag ${o.ptag}, which is neither the task nor one of its threads`, { pid: task.pid, object: what });
  return owner;
}

export function toImage(regs: UserRegs): RegsImage {
  return Object.assign(new RegsImage(), regs);
}

export function fromImage(img: RegsImage): UserRegs {
  const r = {} as Record<string, bigint>;
  for (const k of Object.keys(new RegsImage())) r[k] = (img as unknown as Record<string, bigint>)[k];
  return r as unknown as UserRegs;
}

export class RegsDump implements DumpHandler {
  readonly name = 'arch-x86.regs';
  readonly order = ARCH_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    for (const c of cpuOwners(task)) {
      const regs = asUserRegs(c.tracee!.frozenRegs);
      const st = syscallState(regs);
      if (st.nr >= 0) ctx.log.debug(`pid ${task.pid} thread ${c.tid}: frozen in syscall ${st.nr}${st.restartCode ? ` (restart code ${st.restartCode})` : ''}`);
      ctx.write(toImage(regs), c.tag);
    }
  }
}

/** The registers read from the image, set when the tracee is released. */
export const REGS_KEY = new StateKey<UserRegs>('arch-x86.regs');

export class RegsRestore implements RestoreHandler {
  readonly name = 'arch-x86.regs';
  readonly order = ARCH_ORDER;
  readonly types = [ObjectType.REGS];
  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const c = cpuOwnerOf(task, o, 'regs');
    if (c.state.has(REGS_KEY)) throw new CptError('EBADIMG', `a second registers object for thread ${c.tid}`, { pid: task.pid, object: 'regs' });
    c.state.set(REGS_KEY, fromImage(o.obj as RegsImage));
  }
  /** The registers go in when the task is let go, after its last injected syscall: the flow passes these to the Tracee's restore(). */
  finish(_ctx: RestartContext, task: RestartTask): void {
    for (const c of cpuOwners(task)) {
      const regs = c.state.get(REGS_KEY);
      if (!regs) throw new CptError('EBADIMG', `the image has no registers for ${c.tid === task.pid ? 'this task' : `thread ${c.tid}`}`, { pid: task.pid, object: 'regs' });
      c.setResume!(resumeRegs(regs, 'restored'));
    }
  }
}
