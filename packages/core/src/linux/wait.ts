/**
 * waitpid(2) with a decoded status.
 *
 * Blocking waits are fine: they run on the thread that attached. Beware that Node's libuv also
 * calls waitpid(pid, WNOHANG) for children it spawned when SIGCHLD arrives, and a traced child's
 * ptrace-stops are reported to a parent without WUNTRACED; run a seize/interrupt/wait/detach
 * sequence synchronously, without yielding to the event loop in the middle.
 */
import { PTRACE_EVENT, SIG, WAIT } from './constants';
import { errnoError, libcWaitpid } from './libc';

export interface WaitStop {
  /** The stop signal (WSTOPSIG): SIGTRAP for ptrace events and syscall stops (|0x80 with TRACESYSGOOD). */
  sig: number;
  /** The ptrace event, `status >> 16` (PTRACE_EVENT_*; 0 for signal-delivery and syscall stops). */
  event: number;
  /**
   * A group-stop as a seized tracee reports it: PTRACE_EVENT_STOP with a stop signal
   * (SIGSTOP/SIGTSTP/SIGTTIN/SIGTTOU). A PTRACE_INTERRUPT stop is PTRACE_EVENT_STOP with SIGTRAP.
   */
  groupStop: boolean;
  /** A syscall-stop reported with PTRACE_O_TRACESYSGOOD (sig = SIGTRAP | 0x80). */
  syscallStop: boolean;
}

export interface WaitResult {
  /** The pid that changed state (0 with WNOHANG when none did). */
  pid: number;
  /** The raw status word. */
  status: number;
  /** Exit code when the process exited normally. */
  exited?: number;
  /** Terminating signal when it was killed; `core` when it dumped core. */
  signaled?: number;
  core?: boolean;
  stopped?: WaitStop;
  continued?: boolean;
}

/** The signals whose default action stops the process (a group stop). */
export const STOP_SIGNALS: ReadonlySet<number> = new Set<number>([SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU]);

/** Decodes a wait status word. */
export function decodeWaitStatus(pid: number, status: number): WaitResult {
  const res: WaitResult = { pid, status };
  if (pid === 0) return res;
  const low = status & 0x7f;
  if (low === 0) {
    res.exited = (status >> 8) & 0xff;
  } else if ((status & 0xff) === 0x7f) {
    const sig = (status >> 8) & 0xff;
    const event = (status >>> 16) & 0xffff;
    res.stopped = {
      sig,
      event,
      groupStop: event === PTRACE_EVENT.STOP && STOP_SIGNALS.has(sig),
      syscallStop: event === 0 && sig === (SIG.SIGTRAP | 0x80),
    };
  } else if (status === 0xffff) {
    res.continued = true;
  } else {
    res.signaled = low;
    res.core = (status & 0x80) !== 0;
  }
  return res;
}

/**
 * waitpid(pid, flags) (flags from WAIT: WNOHANG, WUNTRACED, __WALL, ...). Throws CptError
 * (ECHILD, ...) on failure; with WNOHANG returns { pid: 0 } when nothing changed.
 */
export function waitpid(pid: number, flags = 0): WaitResult {
  const [r, status] = libcWaitpid(pid, flags);
  if (r < 0) throw errnoError(-r, `waitpid(${pid})`, pid > 0 ? pid : undefined);
  return decodeWaitStatus(r, status);
}

/** waitpid with __WALL, the usual choice for tracees (threads and children alike). */
export function waitTracee(tid: number, flags = 0): WaitResult {
  return waitpid(tid, flags | WAIT.__WALL);
}
