/**
 * What a task interrupted inside a system call does when it carries on (the rule of the kernel's
 * arch_do_signal_or_restart). A task frozen in a syscall shows orig_rax = the call
 * and rax = one of the kernel-internal restart codes. With no signal handler to run, the kernel
 * would back rip up over the `syscall` instruction and run the call again; ERESTART_RESTARTBLOCK
 * instead runs restart_syscall, which continues from the kernel's restart_block.
 *
 * We apply that rule ourselves and set orig_rax = -1 so the kernel does not apply it a second
 * time. The restart_block survives in the original process (so it gets restart_syscall), but not
 * in a restored one: there the call fails with EINTR, as it does when a handler runs.
 */
import { linux } from '@cptrst/core';
import { UserRegs } from './regs-codec';
import './syscalls';

const { ERRNO, SYS } = linux;

const NO_SYSCALL = 0xffffffffffffffffn;
const SYSCALL_INSN_LEN = 2n;

export type RestartTarget = 'original' | 'restored';

export interface SyscallState {
  /** The system call the task was in, or -1. */
  nr: number;
  /** The kernel-internal restart code it would return, or 0. */
  restartCode: number;
}

export function syscallState(regs: UserRegs): SyscallState {
  const nr = Number(BigInt.asIntN(64, regs.orig_rax));
  const rax = Number(BigInt.asIntN(64, regs.rax));
  const restartCodes = [ERRNO.ERESTARTSYS, ERRNO.ERESTARTNOINTR, ERRNO.ERESTARTNOHAND, ERRNO.ERESTART_RESTARTBLOCK];
  return { nr, restartCode: nr >= 0 && restartCodes.includes(-rax) ? -rax : 0 };
}

/** The registers with which the task carries on as if it had been stopped by a signal without a handler. */
export function resumeRegs(regs: UserRegs, target: RestartTarget): UserRegs {
  const { restartCode } = syscallState(regs);
  const out: UserRegs = { ...regs, orig_rax: NO_SYSCALL };
  switch (restartCode) {
    case 0:
      break;
    case ERRNO.ERESTART_RESTARTBLOCK:
      if (target === 'original') {
        out.rax = BigInt(SYS.restart_syscall);
        out.rip = regs.rip - SYSCALL_INSN_LEN;
      } else {
        out.rax = BigInt.asUintN(64, BigInt(-ERRNO.EINTR));
      }
      break;
    default: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND: run the call again
      out.rax = regs.orig_rax;
      out.rip = regs.rip - SYSCALL_INSN_LEN;
  }
  return out;
}
