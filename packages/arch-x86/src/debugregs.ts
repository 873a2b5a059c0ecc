/**
 * Hardware debug registers DR0-DR3 (addresses), DR6 (status) and DR7 (control), through
 * PEEKUSER/POKEUSER on struct user's u_debugreg. DR7 goes in last: the kernel checks it
 * against the addresses already set.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler, RestoreObject,
  StateKey, objectType, u64s, linux,
} from '@cptrst/core';
import { debugRegOffset } from './regs-codec';
import { ARCH_ORDER, cpuOwnerOf, cpuOwners } from './regs';

const SLOTS = [0, 1, 2, 3, 6, 7];

@objectType(ObjectType.DEBUGREGS, 'debugregs', { parents: [ObjectType.TASK, ObjectType.THREAD] })
export class DebugRegsImage {
  /** DR0, DR1, DR2, DR3, DR6, DR7. */
  @u64s() regs: bigint[] = [];
}

export class DebugRegsDump implements DumpHandler {
  readonly name = 'arch-x86.debugregs';
  readonly order = ARCH_ORDER + 2;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    for (const c of cpuOwners(task)) {
      const img = new DebugRegsImage();
      img.regs = SLOTS.map((i) => linux.ptrace.peekUser(c.tid, debugRegOffset(i)));
      ctx.write(img, c.tag);
    }
  }
}

/** The debug registers read from the image, set at finish. */
export const DEBUGREGS_KEY = new StateKey<bigint[]>('arch-x86.debugregs');

export class DebugRegsRestore implements RestoreHandler {
  readonly name = 'arch-x86.debugregs';
  readonly order = ARCH_ORDER + 2;
  readonly types = [ObjectType.DEBUGREGS];
  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as DebugRegsImage;
    if (img.regs.length !== SLOTS.length) throw new CptError('EBADIMG', `expected ${SLOTS.length} debug registers, the image has ${img.regs.length}`, { pid: task.pid, object: 'debugregs' });
    cpuOwnerOf(task, o, 'debugregs').state.set(DEBUGREGS_KEY, img.regs);
  }
  /**
   * A restored thread is new: it has no breakpoint, DR7 = 0. Writing an address slot, even 0,
   * makes the kernel register a (disabled) hardware breakpoint for the thread, a task-bound perf
   * event; the first such event on the system switches the perf_sched_events static key on and
   * waits for an RCU grace period (milliseconds, paid by every restart on an otherwise quiet
   * machine, since the key goes off again a second after the last event is freed). So a slot is
   * written only when it holds an address or DR7 uses it, and DR7 only when it is not 0. DR6 (the
   * status, a plain per-thread value) is always written. What a thread reads back is the same.
   */
  finish(_ctx: RestartContext, task: RestartTask): void {
    for (const c of cpuOwners(task)) {
      const regs = c.state.get(DEBUGREGS_KEY);
      if (!regs) continue;
      const dr7 = regs[SLOTS.indexOf(7)];
      for (let n = 0; n < 4; n++) {
        if (regs[n] !== 0n || dr7SlotBits(dr7, n) !== 0n) linux.ptrace.pokeUser(c.tid, debugRegOffset(n), regs[n]);
      }
      linux.ptrace.pokeUser(c.tid, debugRegOffset(6), regs[SLOTS.indexOf(6)]);
      if (dr7 !== 0n) linux.ptrace.pokeUser(c.tid, debugRegOffset(7), dr7);
    }
  }
}

/** The bits of DR7 that concern address slot n: its local and global enables, and its type and length. */
export function dr7SlotBits(dr7: bigint, n: number): bigint {
  const enables = 3n << BigInt(2 * n);
  const typeLen = 0xfn << BigInt(16 + 4 * n);
  return dr7 & (enables | typeLen);
}
