/**
 * Real-process helpers for this package's tests: the shared ones live in core's test build;
 * seizeAndStop freezes a target the way the freezer does.
 */
import { CptError, ReleaseMode, Tracee, linux, releaseTracee } from '@cptrst/core';
import { X86_64 } from '../src';

export * from '@cptrst/core/dist/test/support/real-processes';

const { ptrace, PTRACE_O, PTRACE_EVENT } = linux;

/** Seizes `pid` (PTRACE_O_TRACESYSGOOD, as the freezer does) and waits for its interrupt stop. Synchronous. */
export function seizeAndStop(pid: number): void {
  ptrace.seize(pid, PTRACE_O.TRACESYSGOOD);
  ptrace.interrupt(pid);
  for (;;) {
    const w = linux.waitTracee(pid);
    if (w.exited !== undefined || w.signaled !== undefined) throw new CptError('ESRCH', `pid ${pid} died while being stopped`, { pid });
    if (w.stopped!.event === PTRACE_EVENT.STOP) return;
    ptrace.cont(pid, 0);
  }
}

/** Lets a tracee go as the checkpoint does: from its frozen registers, with the syscall-restart rule for the original process. */
export function letGo(t: Tracee, mode: ReleaseMode): void {
  releaseTracee(t, mode, mode === 'kill' ? undefined : X86_64.resumeRegs(t.frozenRegs, 'original'));
}
