/**
 * Who the task is: pid, parent, session and process group, comm, personality, and its rseq
 * registration. At restart the TASK object is where the process comes into being: the
 * ProcessCreator makes it with its PID, then it takes its session and group back (a session
 * leader becomes one again with setsid), its name and its personality. For an image root does
 * not own, that waits for the credentials object (the next one), which must pass the owner's
 * rights first. Scheduling comes back once the task's objects are read.
 */
import {
  CheckpointContext, CheckpointTask, CptError, SHARED_WITH_PARENT, DumpHandler, ObjectType, RestartContext, RestartFlags, RestartTask,
  RestoreHandler, RestoreObject, StateKey, Tokens, bool, i32, frozenStatus, linux, objectType, str, u32, u32s,
  u64, encodeStruct,
} from '@cptrst/core';
import { releaseTracee } from '@cptrst/core';
import { heldToOwner, nowOrAfterCreds } from './deferred';
import { WAS_STOPPED } from './freezer';
import { EXIT_SIGNAL, GONE_SESSION, STOP_SIGNAL, ZOMBIE_STATUS, becomeZombie, joinGroupWithHelper, joinTree, parentOf, restoredTask, sharesWithParent } from './tree';
import { PID_WAIT_MS } from './create';
import { askedAtCheck } from './misc';
import { checkRobustList, clearChildTidOf, restoreFutexAddresses, robustListOf } from './thread';

const { SYS, PR, SIG } = linux;
export const TASK_ORDER = 100;

@objectType(ObjectType.TASK, 'task', { parents: [ObjectType.HEAD] })
export class TaskImage {
  @u32() pid = 0;
  @u32() tgid = 0;
  @u32() ppid = 0;
  @u32() pgid = 0;
  @u32() sid = 0;
  @str() comm = '';
  @u32() personality = 0;
  /** Controlling terminal (dev_t as in /proc/PID/stat), 0 if none. */
  @u32() ttyNr = 0;
  /** The task was group-stopped when frozen. */
  @bool() stopped = false;
  @u64() rseqAddr = 0n;
  @u32() rseqLen = 0;
  @u32() rseqSig = 0;
  @i32() nice = 0;
  /** Scheduling policy (SCHED_OTHER 0, FIFO 1, RR 2, BATCH 3, IDLE 5; | SCHED_RESET_ON_FORK) and real-time priority. */
  @u32() policy = 0;
  @u32() rtPriority = 0;
  /** For people reading `cptrst show`: the command line. */
  @str() cmdline = '';
  /** The signal its parent gets when it ends (clone's exit_signal; SIGCHLD for a fork). */
  @u32({ since: 4 }) exitSignal = 17;
  /** An exited child its parent has not reaped: nothing else of it is in the image. */
  @bool({ since: 4 }) zombie = false;
  /** A zombie's wait status, as its parent's wait() returns it. */
  @i32({ since: 4 }) exitStatus = 0;
  /** A zombie's ids (it has no credentials object): real, effective, saved, fs uid, then the same gids. */
  @u32s({ since: 4 }) zombieIds: number[] = [];
  /** The main thread's robust futex list (get_robust_list) and clear_child_tid (set_tid_address). */
  @u64({ since: 4 }) robustListHead = 0n;
  @u64({ since: 4 }) robustListLen = 0n;
  @u64({ since: 4 }) clearChildTid = 0n;
  /** CLONE_FILES | CLONE_FS: the fd table and fs struct it shares with its parent (core's SHARED_WITH_PARENT). */
  @u32({ since: 5 }) cloneFlags = 0;
  /** The signal that stopped a stopped task (SIGTSTP, SIGTTIN, SIGTTOU or SIGSTOP); 0 reads as SIGSTOP. */
  @u32({ since: 6 }) stopSignal = 0;
}

/** The TASK object read at restart, until the process is made (and for its later steps). */
export const IDENTITY_KEY = new StateKey<TaskImage>('task.identity');

export class TaskDump implements DumpHandler {
  readonly name = 'task.identity';
  readonly order = TASK_ORDER;
  readonly zombies = true;
  // No check of its own: the controlling terminal is task.ctty's (ctty.ts), seccomp task.seccomp's.
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const st = linux.readStat(task.pid);
    const img = new TaskImage();
    img.pid = task.pid;
    img.tgid = task.pid;
    img.ppid = st.ppid;
    img.pgid = st.pgrp;
    img.sid = st.session;
    img.comm = st.comm;
    img.exitSignal = st.exitSignal;
    img.cloneFlags = task.state.get(SHARED_WITH_PARENT) ?? 0;
    if (task.zombie) {
      img.zombie = true;
      img.exitStatus = task.state.get(ZOMBIE_STATUS) ?? 0;
      const ids = frozenStatus(task);
      img.zombieIds = [...ids.uid, ...ids.gid];
      task.tag = ctx.write(img, ctx.headTag);
      return;
    }
    img.personality = linux.readPersonality(task.pid);
    img.ttyNr = st.ttyNr;
    img.stopped = task.state.get(WAS_STOPPED) === true;
    img.stopSignal = img.stopped ? task.state.get(STOP_SIGNAL) ?? SIG.SIGSTOP : 0;
    const rseq = linux.ptrace.getRseqConfiguration(task.tid);
    img.rseqAddr = rseq.rseqAbiPointer;
    img.rseqLen = rseq.rseqAbiSize;
    img.rseqSig = rseq.signature;
    [img.robustListHead, img.robustListLen] = robustListOf(task.pid, task.tid);
    // Asked in task.misc's batch at check when it succeeded there (the frozen task cannot change it).
    const asked = askedAtCheck(task);
    img.clearChildTid = asked && asked.tidAddressResult >= 0n ? asked.tidAddress : clearChildTidOf(task.tracee, 'the main thread');
    img.cmdline = linux.readCmdline(task.pid).join(' ');
    img.nice = st.nice;
    // The policy with SCHED_RESET_ON_FORK, which /proc does not show (anyone may ask, from outside).
    img.policy = policyOf(task.pid);
    img.rtPriority = st.rtPriority;
    task.tag = ctx.write(img, ctx.headTag);
  }
}

export class TaskRestore implements RestoreHandler {
  readonly name = 'task.identity';
  readonly order = TASK_ORDER;
  readonly types = [ObjectType.TASK];

  /**
   * A root-owned image's process is made here. Any other image's process is made only once its
   * credentials (the next object) have been checked against the owner's rights: see creds.ts.
   */
  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as TaskImage;
    checkRobustList(img.robustListHead, img.robustListLen, (m) => new CptError('EBADIMG', m, { pid: img.pid, object: 'task' }));
    task.state.set(IDENTITY_KEY, img);
    task.leaveStopped = img.stopped;
    if (img.stopSignal !== 0 && (!img.stopped || !linux.STOP_SIGNALS.has(img.stopSignal))) {
      throw new CptError('EBADIMG', `stop signal ${img.stopSignal}${img.stopped ? '' : ' for a task that was not stopped'}`, { pid: img.pid, object: 'task' });
    }
    if (img.stopped) task.stopSignal = img.stopSignal || SIG.SIGSTOP;
    joinTree(ctx, task, img.ppid);
    if (img.exitSignal > linux.NSIG) throw new CptError('EBADIMG', `exit signal ${img.exitSignal}`, { pid: img.pid, object: 'task' });
    task.state.set(EXIT_SIGNAL, img.exitSignal);
    const parent = parentOf(task);
    sharesWithParent(task, img.cloneFlags, parent, img.zombie);
    // A session neither its own nor its parent's: one whose leader is gone (tree.ts, cloneInGoneSession).
    const parentSid = parent?.state.get(IDENTITY_KEY)?.sid;
    if (parent && img.sid !== img.pid && img.sid !== parentSid) {
      if (img.cloneFlags) throw new CptError('EBADIMG', `a task entering session ${img.sid} under its parent cannot share the parent's fd table or fs struct`, { pid: img.pid, object: 'task' });
      if (img.pgid !== img.pid && img.pgid !== img.sid) throw new CptError('EBADIMG', `a task entering session ${img.sid} under its parent in process group ${img.pgid}, neither its own nor the session's`, { pid: img.pid, object: `process group ${img.pgid}` });
      task.state.set(GONE_SESSION, img.sid);
    }
    if (img.zombie) {
      // Made now, whoever owns the image: it runs nothing of its own and ends at once.
      if (!parent) throw new CptError('EBADIMG', 'the root task is a zombie', { pid: img.pid, object: 'task' });
      checkZombieIds(ctx, img);
      bringUpTask(ctx, task);
      if (img.zombieIds.length) zombieIds(task, img.zombieIds);
      becomeZombieQuietly(task, img.exitStatus, parent);
      return;
    }
    if (!heldToOwner(ctx)) {
      bringUpTask(ctx, task);
      return;
    }
    // A process that is not a session leader joins cptrst's session, and with it the session's
    // controlling terminal (/dev/tty): not for a process of another user. A child in the session
    // of its parent (made by the image) is in that session already.
    const parentImg = parent?.state.get(IDENTITY_KEY);
    if (img.sid !== img.pid && img.sid !== parentImg?.sid) {
      throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, and task ${img.pid} would join cptrst's session (it was in session ${img.sid}, not its own); only a session leader is restored from an image root does not own`, { pid: img.pid, object: `session ${img.sid}` });
    }
  }

  /**
   * Scheduling (a real-time policy or a nice value below 0 needs privilege) after everything
   * else of the task is read; for an image held to its owner's rights, after the credentials
   * drop. rseq goes back once memory holds the area again.
   */
  finish(ctx: RestartContext, task: RestartTask): void {
    const img = task.state.get(IDENTITY_KEY)!;
    if (!task.tracee) throw new CptError('EBADIMG', 'the image gives no credentials for this task', { pid: task.pid, object: 'creds' });
    nowOrAfterCreds(ctx, task, 'scheduling', () => restoreScheduling(task, img));
    // rseq goes back with the futex addresses, in one batch: a new process has none of them (clone
    // clears the robust list, and no CLONE_CHILD_CLEARTID was asked).
    const rseq = img.rseqAddr !== 0n ? [{ nr: SYS.rseq, args: [img.rseqAddr, img.rseqLen, 0, img.rseqSig], what: 'rseq registration' }] : [];
    restoreFutexAddresses(task.tracee, img.robustListHead, img.robustListLen, img.clearChildTid, 'the main thread', rseq);
    checkStopSignal(task);
  }

  abort(_ctx: RestartContext, task: RestartTask): void {
    if (task.tracee && !task.tracee.released) {
      try {
        releaseTracee(task.tracee, 'kill');
      } catch {
        /* it is gone */
      }
    }
  }
}

/**
 * A task stopped by SIGTSTP, SIGTTIN or SIGTTOU is stopped again at release by that signal
 * (core's releaseTracees), which stops it only with its default action, unblocked, outside an
 * orphaned process group. Every process of the tree exists by now and has its dispositions and
 * mask: one that would not stop is refused here, before anything runs.
 */
function checkStopSignal(task: RestartTask): void {
  const sig = task.stopSignal ?? SIG.SIGSTOP;
  if (!task.leaveStopped || sig === SIG.SIGSTOP) return;
  const bit = 1n << BigInt(sig - 1);
  const status = linux.readStatus(task.pid);
  const why = task.tracee!.blockedSignals & bit ? 'blocks it'
    : status.sigCgt & bit ? 'handles it' : status.sigIgn & bit ? 'ignores it'
      : linux.processGroupOrphaned(linux.readStat(task.pid).pgrp) ? 'is in an orphaned process group, where the kernel discards it' : '';
  if (why) throw new CptError('EBADIMG', `the task was stopped by ${linux.signalName(sig)}, and the restored task ${why}: it would not stop again`, { pid: task.pid, object: 'stop' });
}

/**
 * Makes the process (with its PID), and gives it its session or group, personality and name.
 * Exported for creds.ts, which makes the process of an image held to its owner's rights once the
 * credentials are checked.
 */
export function bringUpTask(ctx: RestartContext, task: RestartTask): void {
  const img = task.state.get(IDENTITY_KEY)!;
  const t = ctx.one(Tokens.ProcessCreator).create(ctx, task);
  task.tracee = t;
  restoreSession(ctx, task, img);
  if (img.personality !== linux.readPersonality(task.pid)) {
    t.syscallOk(SYS.personality, [img.personality], `personality 0x${img.personality.toString(16)}`);
  }
  const name = Buffer.alloc(16);
  name.write(img.comm.slice(0, 15), 'utf8');
  t.syscallOk(SYS.prctl, [PR.SET_NAME, t.stage(name)], `prctl(PR_SET_NAME, ${img.comm})`);
}

/** sched_getscheduler of a process, asked from outside: the policy with SCHED_RESET_ON_FORK. */
function policyOf(pid: number): number {
  const r = linux.rawSyscall(SYS.sched_getscheduler, pid);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `sched_getscheduler: ${linux.errnoName(Number(-r))}`, { pid, object: 'scheduling policy' });
  return Number(r);
}

/** Policy first (it may reset the nice value), then the nice value. */
function restoreScheduling(task: RestartTask, img: TaskImage): void {
  const t = task.tracee!;
  const st = linux.readStat(task.pid);
  const policy = policyOf(task.pid);
  if (img.policy !== policy || img.rtPriority !== st.rtPriority) {
    const param = encodeStruct(linux.SchedParam, { priority: img.rtPriority });
    t.syscallOk(SYS.sched_setscheduler, [0, img.policy, t.stage(param)], `sched_setscheduler(${img.policy}, ${img.rtPriority})`);
  }
  if (img.nice !== st.nice) t.syscallOk(SYS.setpriority, [0 /* PRIO_PROCESS */, 0, img.nice], `setpriority(nice ${img.nice})`);
}

function restoreSession(ctx: RestartContext, task: RestartTask, img: TaskImage): void {
  const t = task.tracee!;
  if (parentOf(task)) return restoreChildSession(ctx, task, img);
  if (img.sid === img.pid) {
    t.syscallOk(SYS.setsid, [], 'setsid');
    if (img.pgid !== img.pid) {
      throw new CptError('EINVAL', `a session leader in another process group (${img.pgid}) cannot be recreated`, { pid: img.pid, object: 'process group' });
    }
    return;
  }
  const here = linux.readStat(task.pid);
  if (ctx.flags & RestartFlags.SHELL_JOB) {
    // A job of the shell that runs cptrst: it joins cptrst's session and, unless it led its own
    // group, cptrst's group; its children follow (shellJobIds).
    SHELL_JOB_IDS.set(ctx, { sid: img.sid, pgid: img.pgid, newSid: here.session, newPgid: here.pgrp });
    if (img.pgid !== img.pid) return;
  } else if (here.session !== img.sid) {
    throw new CptError('ESRCH', `the process belonged to session ${img.sid}, and cptrst runs in session ${here.session}; restart it from that session, or with --shell-job for a job of the shell that checkpointed it, or checkpoint a session leader`, { pid: img.pid, object: `session ${img.sid}` });
  }
  const target = img.pgid === img.pid ? 0 : img.pgid;
  const r = t.syscall(SYS.setpgid, [0, target]);
  if (r < 0n) {
    throw new CptError(linux.errnoName(Number(-r)), `cannot join process group ${img.pgid} (it may no longer exist in session ${img.sid})`, { pid: img.pid, object: `process group ${img.pgid}` });
  }
}

/** A shell job's root session and group, and cptrst's that replace them. */
const SHELL_JOB_IDS = new WeakMap<RestartContext, { sid: number; pgid: number; newSid: number; newPgid: number }>();

/** A task's session and group at restart: a shell job's root session and outside group are cptrst's. */
function shellJobIds(ctx: RestartContext, img: TaskImage): { sid: number; pgid: number } {
  const m = SHELL_JOB_IDS.get(ctx);
  if (!m) return { sid: img.sid, pgid: img.pgid };
  return { sid: img.sid === m.sid ? m.newSid : img.sid, pgid: img.pgid === m.pgid && m.pgid !== m.newPgid && !restoredTask(ctx, m.pgid) ? m.newPgid : img.pgid };
}

/**
 * A task made by its parent has the parent's session and group: it makes its own session, or
 * moves to its own group or to another group of the session. A group none of whose processes is
 * made yet (its leader exited before the checkpoint) is made by a helper with the leader's pid.
 */
function restoreChildSession(ctx: RestartContext, task: RestartTask, img: TaskImage): void {
  const t = task.tracee!;
  if (img.sid === img.pid) {
    if (img.pgid !== img.pid) throw new CptError('EBADIMG', `a session leader in another process group (${img.pgid})`, { pid: img.pid, object: 'process group' });
    t.syscallOk(SYS.setsid, [], 'setsid');
    return;
  }
  const st = linux.readStat(task.pid);
  const { sid, pgid } = shellJobIds(ctx, img);
  if (st.session !== sid) {
    throw new CptError('EBADIMG', `the process was in session ${img.sid}, and its parent is in session ${st.session}`, { pid: img.pid, object: `session ${img.sid}` });
  }
  if (st.pgrp === pgid) return;
  const r = t.syscall(SYS.setpgid, [0, pgid === img.pid ? 0 : pgid]);
  if (r >= 0n) return;
  // No process of the group exists (EPERM): a helper stands in for its leader, unless the leader
  // is a task of the image (which should have been made before it).
  if (r !== -BigInt(linux.ERRNO.EPERM) || img.pgid === img.pid || restoredTask(ctx, img.pgid)) {
    throw new CptError(linux.errnoName(Number(-r)), `cannot join process group ${img.pgid} in session ${img.sid}`, { pid: img.pid, object: `process group ${img.pgid}` });
  }
  joinGroupWithHelper(ctx, task, img.pgid, PID_WAIT_MS);
}

/** A zombie's ids: 8 of them, or none (an older image); for an image root does not own, the owner's. */
function checkZombieIds(ctx: RestartContext, img: TaskImage): void {
  const ids = img.zombieIds;
  if (ids.length !== 0 && ids.length !== 8) throw new CptError('EBADIMG', `a zombie with ${ids.length} ids`, { pid: img.pid, object: 'task' });
  if (!heldToOwner(ctx)) return;
  const owner = linux.userRights(ctx.imageOwner.uid);
  if (ids.length === 0 || ids.slice(0, 4).some((u) => u !== owner.uid) || ids.slice(4).some((g) => !owner.gids.includes(g))) {
    throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, and zombie ${img.pid} has ids [${ids.join(' ')}] beyond its owner's`, { pid: img.pid, object: 'creds' });
  }
}

/** The zombie's own ids, set inside it before it ends (no groups: it runs nothing). */
function zombieIds(task: RestartTask, ids: number[]): void {
  const t = task.tracee!;
  const st = linux.readStatus(task.pid);
  if (st.capEff !== st.capPrm) {
    t.syscallOk(SYS.capset, [t.stage(linux.encodeCapHeader(0), 0), t.stage(linux.encodeCapData({ effective: st.capPrm, permitted: st.capPrm, inheritable: st.capInh }), 64)], 'capset (zombie)');
  }
  t.syscallOk(SYS.setgroups, [0, 0], 'setgroups (zombie)');
  t.syscallOk(SYS.setresgid, [ids[4], ids[5], ids[6]], 'setresgid (zombie)');
  t.syscall(SYS.setfsgid, [ids[7]]);
  t.syscallOk(SYS.setresuid, [ids[0], ids[1], ids[2]], 'setresuid (zombie)');
  t.syscall(SYS.setfsuid, [ids[3]]);
  const now = linux.readStatus(task.pid);
  if (String([...now.uid, ...now.gid]) !== String(ids)) {
    throw new CptError('EPERM', `the zombie's ids are [${[...now.uid, ...now.gid].join(' ')}], not [${ids.join(' ')}]`, { pid: task.pid, object: 'creds' });
  }
}

/**
 * The zombie's exit sends its parent SIGCHLD (or its exit signal), which the parent had taken long
 * ago: unless one was pending already (it is in the image then), it is taken off the parent again.
 */
function becomeZombieQuietly(task: RestartTask, status: number, parent: RestartTask): void {
  const sig = task.state.get(EXIT_SIGNAL) ?? 0;
  const bit = sig ? 1n << BigInt(sig - 1) : 0n;
  const before = linux.readStatus(parent.pid);
  const pendingBefore = ((before.shdPnd | before.sigPnd) & bit) !== 0n;
  becomeZombie(task, status);
  if (!bit || pendingBefore) return;
  const p = parent.tracee!;
  const set = Buffer.alloc(8);
  set.writeBigUInt64LE(bit, 0);
  const zero = Buffer.alloc(16);
  // EAGAIN: none was queued (the parent ignores the signal).
  const r = p.syscall(SYS.rt_sigtimedwait, [p.stage(set, 0), 0, p.stage(zero, 16), 8]);
  if (r !== BigInt(sig) && r !== -BigInt(linux.ERRNO.EAGAIN)) {
    throw new CptError('EIO', `the parent's ${linux.signalName(sig)} from the zombie could not be taken off it (${r < 0n ? linux.errnoName(Number(-r)) : r})`, { pid: parent.pid, object: 'signals' });
  }
}
