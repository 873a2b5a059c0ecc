/**
 * The subsystem contract: what a subsystem package (task, mm, arch-x86, files, or a third
 * party's) provides, and the services subsystems offer each other. Subsystems never import
 * each other; they meet here, through interfaces and container tokens.
 */
import type { CheckpointContext, RestartContext } from './context';
import type { FilePayload, ImageHead, LayoutClass } from './image';
import { token, Token, TaskState } from './tokens';
import type { CptOperations } from './entry';
import type { ArchRegs } from './arch';
import type { ProcStatus } from './linux/proc';

/**
 * Container tokens. Each names the type of its registrations, so `ctx.all(Tokens.FileKind)` is a
 * FileKindHandler[] and `provide(c, Tokens.DumpHandler, h)` checks `h`. Handlers are registered
 * many-per-token (tsyringe multi-injection). A subsystem that has kinds declares its own kind
 * token next to its kind interface (`token<FileKindHandler>('cpt.file-kind')`); the ones here are
 * kept for the subsystems of cptrst's own packages.
 */
export const Tokens = {
  /** The loaded module's operations, which sys_checkpoint and sys_restart call. */
  CptOperations: token<CptOperations>('cpt.operations'),
  /** DumpHandler, many. */
  DumpHandler: token<DumpHandler>('cpt.dump-handler'),
  /** RestoreHandler, many. */
  RestoreHandler: token<RestoreHandler>('cpt.restore-handler'),
  /** Kinds of open file (FileKindHandler of @cptrst/files, many): regular, chardev, ... */
  FileKind: token<KindHandler<unknown>>('cpt.file-kind'),
  /** Kinds of memory area (VmaKindHandler of @cptrst/mm, many): anon, file, shared anon, vdso, ... */
  VmaKind: token<KindHandler<unknown>>('cpt.vma-kind'),
  /** TraceeFactory, one: wraps a ptrace-stopped thread (arch-specific). */
  TraceeFactory: token<TraceeFactory>('cpt.tracee-factory'),
  /** Freezer, one: seizes a process tree and releases it. */
  Freezer: token<Freezer>('cpt.freezer'),
  /** ProcessCreator, one: makes a process with a chosen PID at restart. */
  ProcessCreator: token<ProcessCreator>('cpt.process-creator'),
  /** MachineProbe, many: contributes to the image head's capability vector and to `cptrst check`. */
  MachineProbe: token<MachineProbe>('cpt.machine-probe'),
} as const;

/** Flags of sys_checkpoint. */
export const CheckpointFlags = {
  /** Default: the process goes on running after the image is written. */
  RESUME: 0,
  /** Kill the process once the image is complete and synced. */
  KILL: 1 << 0,
  /** Leave it stopped (SIGSTOP) and untraced. */
  LEAVE_STOPPED: 1 << 1,
  /**
   * No copy-on-write snapshot: the process stays frozen until its pages are written. By default a
   * checkpoint that leaves the process running takes a snapshot of its private memory and lets
   * it run while the pages are written from the snapshot.
   */
  NO_SNAPSHOT: 1 << 2,
  /**
   * The tree runs on a terminal outside it (a job of the shell that runs cptrst): its fds on that
   * terminal and its controlling terminal are recorded as "the caller's terminal" instead of being
   * refused.
   */
  SHELL_JOB: 1 << 3,
  /**
   * A unix datagram socket connected one way to a named socket held only by processes outside the
   * tree is recorded as connected to that name, and connected to it again at restart, instead of
   * being refused.
   */
  EXT_UNIX_RECONNECT: 1 << 4,
  /**
   * An unnamed unix socket connected to a peer held only by processes outside the tree is
   * restored as if that peer had closed (what waits in its queue kept), instead of being refused.
   */
  EXT_UNIX_CLOSE: 1 << 5,
} as const;

/** Flags of sys_restart. */
export const RestartFlags = {
  RESUME: 0,
  /** Leave the restored process stopped (SIGSTOP) and untraced. */
  LEAVE_STOPPED: 1 << 1,
  /**
   * Lazy restart: private anonymous memory is not written before the process runs; it is filled
   * through userfaultfd, on first touch and in the background (mm/src/lazy.ts).
   */
  LAZY: 1 << 2,
  /**
   * The image's tree ran on a terminal outside it (checkpointed with SHELL_JOB): it gets the
   * terminal of the restarting process (cptrst's controlling terminal) and joins its session.
   */
  SHELL_JOB: 1 << 3,
} as const;

/** How a frozen or restored task is let go. */
export type ReleaseMode = 'run' | 'stop' | 'kill';

/** A scratch area mapped inside a task for injected system calls: the syscall instruction and room for arguments. */
export interface ScratchArea {
  readonly addr: bigint;
  readonly size: number;
  /** First byte free for data (after the code). */
  readonly dataAddr: bigint;
  readonly dataSize: number;
}

/**
 * A thread under ptrace control, stopped: mechanism only (run a system call in it, read and write
 * its memory, set its registers, let go of it). Implemented by the arch package (it needs the
 * registers). "Run this syscall in that task" goes through here; how and when a task is let go
 * is decided by its owner (core/release.ts: releaseTracee).
 */
/** One system call of a batch (Tracee.syscalls). */
export interface BatchCall {
  readonly nr: number;
  readonly args?: ReadonlyArray<number | bigint>;
}

export interface Tracee {
  readonly pid: number;
  readonly tid: number;
  /** Runs one system call inside the task; returns the raw result (-errno on failure). */
  syscall(nr: number, args?: ReadonlyArray<number | bigint>): bigint;
  /** Same, but throws a CptError naming `what` when the call fails. */
  syscallOk(nr: number, args: ReadonlyArray<number | bigint>, what: string): bigint;
  /**
   * Runs several system calls inside the task, in order, and returns their raw results (-errno on
   * failure). The arch may run the whole batch in one stop, so no call's arguments may depend on
   * an earlier call's result (stage every buffer beforehand, at different offsets). With
   * `untilError`, the batch ends at the first call that fails (its result is the last one
   * returned); otherwise every call runs. If cptrst dies in the middle of a batch, a task that
   * outlives it runs the rest of the batch before it goes back to its frozen state: put in a
   * batch only calls that are harmless to run to their end (as any call in flight is).
   */
  syscalls(calls: ReadonlyArray<BatchCall>, opts?: { untilError?: boolean }): bigint[];
  /**
   * Optional: starts `calls` (at most one batch's worth) in one stop and returns at once, with a
   * function that waits for them and returns their raw results, so that cptrst can work while the
   * task runs them. Until it has been called the tracee is busy: any other use of it throws.
   * Undefined (nothing started) where the calls cannot run as one batch: the caller then uses
   * syscalls(). Only for a task that dies with cptrst (a restart's): the calls run to their end.
   */
  startSyscalls?(calls: ReadonlyArray<BatchCall>): (() => bigint[]) | undefined;
  /** A scratch area in the task (mapped on first use, unmapped by restore()). */
  scratch(): ScratchArea;
  /** Writes `data` into the scratch data area at `offset` and returns its address in the task. */
  stage(data: Buffer, offset?: number): bigint;
  readMemory(addr: bigint, length: number): Buffer;
  writeMemory(addr: bigint, data: Buffer): void;
  /** Reads exactly `length` bytes at `addr` into `buf` at `offset` (throws if any cannot be read), so that bulk readers can reuse one buffer. */
  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void;
  /** Takes an existing rwx mapping of the scratch size at `addr` as the scratch area (a clone inherits its parent's). */
  adoptScratch(addr: bigint): void;
  /** Addresses the tracee itself uses (the scratch area), so that restore can avoid them. */
  reservedRanges(): Array<{ start: bigint; end: bigint }>;
  /** The registers the thread had when it was wrapped, in the arch's form (for the Arch and the arch's handlers). */
  readonly frozenRegs: ArchRegs;
  /**
   * The thread's own blocked-signal mask. While cptrst runs syscalls inside it, every signal is
   * blocked so that none is delivered under our feet; this mask is what it gets back at restore().
   */
  blockedSignals: bigint;
  /**
   * Signals (raw siginfo) taken off the task (before the freeze stop, or while a call ran inside
   * it): still pending from the task's point of view. Whoever lets the task go queues them again.
   */
  readonly interceptedSignals: Buffer[];
  /**
   * Ends the injected calls: unmaps the scratch area (the last call), gives the thread its blocked
   * mask back and sets `regs`, the registers it carries on with. It stays in its ptrace stop.
   */
  restore(regs: ArchRegs): void;
  /** PTRACE_DETACH: the thread runs on from where restore() left it (a queued signal acts first). */
  detach(): void;
  /** Marks the tracee gone without touching the thread (it died, was killed, or was let go). */
  forget(): void;
  /** True once let go or dead. */
  readonly released: boolean;
  /**
   * Optional: a copy-on-write copy of the process's memory as it is now, held by a process that
   * never runs (see MemorySnapshot). Undefined when the process cannot be copied that way (the
   * caller then copies its memory while it is frozen); the reason goes to `log`.
   */
  snapshotMemory?(log: (why: string) => void): MemorySnapshot | undefined;
}

/**
 * The private memory of a frozen process as it was when the snapshot was taken: a copy made by
 * fork (copy-on-write), which never runs code, dies with cptrst and is reaped by close(). Only
 * private mappings are snapshotted: shared mappings are the same memory in the copy, and areas
 * marked MADV_DONTFORK / MADV_WIPEONFORK are absent or empty in it.
 */
export interface MemorySnapshot {
  /** The copy's pid (its /proc/PID/pagemap describes the snapshot). */
  readonly pid: number;
  /** Reads exactly `length` bytes of the snapshot at `addr` into `buf` at `offset` (throws if any cannot be read). */
  readMemoryInto(addr: bigint, buf: Buffer, offset: number, length: number): void;
  /**
   * Optional: the caller will read [addr, addr+length) with readMemoryInto, once. A snapshot may
   * then fetch it ahead while the read that ends where it starts is being used. Reads that were
   * not announced are answered all the same.
   */
  expect?(addr: bigint, length: number): void;
  /**
   * Optional: puts [addr, addr+length) of the snapshot into the file `fd` at `position` without
   * copying it through cptrst (splice(2) from the pipes its pages go through), as readMemoryInto
   * would read it; returns how many bytes it put there, from the start. Fewer (even 0) where it
   * cannot: the caller reads the rest (announced with expect like a read).
   */
  spliceInto?(addr: bigint, length: number, fd: number, position: number): number;
  /** Kills and reaps the copy. Never throws. */
  close(): void;
}

export interface TraceeOptions {
  /**
   * The task dies with cptrst (it was seized with PTRACE_O_EXITKILL: a process made at restart).
   * Otherwise it must survive cptrst's death at any moment, and the tracee keeps it, between and
   * during injected calls, where the kernel would resume it into its own frozen state.
   */
  diesWithTracer?: boolean;
  /**
   * The process's /proc status, read once it was stopped (the freezer's read, or the process it
   * is a copy of): spares the tracee a read of its own in the frozen window.
   */
  status?: ProcStatus;
}

export interface TraceeFactory {
  /**
   * Optional: looks at a process that still runs, before the checkpoint freezes it, for what its
   * tracee's first calls need (x86: code to run them on), to keep that work out of the frozen
   * window. Never fails; fromStopped uses what it found only after checking that it still holds.
   */
  prepare?(pid: number): void;
  /** Wraps a thread that the caller has seized and that is now in a ptrace stop. */
  fromStopped(pid: number, tid: number, opts?: TraceeOptions): Tracee;
  /**
   * Wraps another stopped thread of the process of `main` (a tracee of its main thread). The
   * thread shares the main thread's scratch area for its arguments and maps none of its own, so
   * it can be held, and let go, before or after the main thread.
   */
  threadOf(main: Tracee, tid: number): Tracee;
}

/**
 * A thread of a task other than its main thread (the main thread is the task itself). Each has
 * its own tracee and, once its THREAD object is written or read, its own tag: per-thread records
 * (registers, FPU state, ...) go under that tag instead of the TASK's.
 */
export interface TaskThread {
  readonly tid: number;
  /** The stopped thread (at restart: once the thread is made). */
  tracee?: Tracee;
  /** Image tag of this thread's THREAD object. 0 until written or read. */
  tag: number;
  /** Restart: the registers it carries on with (as RestartTask.resumeRegs). */
  resumeRegs?: ArchRegs;
  readonly state: TaskState;
}

/** A process tree frozen for checkpoint. */
export interface FrozenTree {
  readonly root: number;
  /** Every task (thread group leaders first, in tree order). */
  readonly tasks: CheckpointTask[];
}

export interface Freezer {
  /** Optional: what can be learnt before the freeze (the checkpoint flow calls it before the process is stopped). */
  prepare?(ctx: CheckpointContext): void;
  /** Seizes `pid` (and refuses what it cannot handle), returning stopped tasks. */
  freeze(ctx: CheckpointContext, pid: number): FrozenTree;
  /** Lets every task of the tree go. Never throws: a release failure is logged. */
  release(ctx: CheckpointContext, tree: FrozenTree, mode: ReleaseMode): void;
}

/** Creates the process of a TASK object at restart, with its original PID. */
export interface ProcessCreator {
  create(ctx: RestartContext, task: RestartTask): Tracee;
}

/** A task being checkpointed. `state` lets handlers of one subsystem keep per-task data. */
export interface CheckpointTask {
  readonly pid: number;
  readonly tid: number;
  readonly tracee: Tracee;
  /** Image tag of this task's TASK object; its objects use it as ptag. 0 until written. */
  tag: number;
  /** Per-task data of the subsystems, by typed key (StateKey). */
  readonly state: TaskState;
  /** The other threads of the process, stopped, by tid (none for a single-threaded one). */
  readonly threads?: TaskThread[];
  /**
   * An exited child not yet reaped by its parent: it has no tracee to run anything in (every call
   * on `tracee` fails), and only the dump handlers that declare `zombies` see it.
   */
  readonly zombie?: boolean;
}

/** A task being restarted. The tracee exists once the TASK object's handler created it. */
export interface RestartTask {
  /** The PID the task had, and gets again. */
  pid: number;
  tid: number;
  tag: number;
  tracee?: Tracee;
  /** The task was stopped (job control) when checkpointed: it is let go stopped. */
  leaveStopped?: boolean;
  /** The signal it is stopped by when it is let go stopped (SIGSTOP when absent): its parent's wait reports it. */
  stopSignal?: number;
  /** The registers it carries on with, decided by the arch's finish hook (the syscall-restart rule applied to the image's). */
  resumeRegs?: ArchRegs;
  /** Per-task data of the subsystems, by typed key (StateKey). */
  readonly state: TaskState;
  /** The other threads of the process, as their THREAD objects are read (made in a finish hook). */
  threads?: TaskThread[];
  /**
   * Made again as a zombie (it exited with its recorded status when its TASK object was read):
   * no other object of it may follow, and it has no finish hooks and no release.
   */
  zombie?: boolean;
}

/**
 * Writes a subsystem's objects for one task. Handlers run in ascending `order`; the restore
 * side of the same objects runs in the same order, so the stream is read front to back.
 */
export interface DumpHandler {
  readonly name: string;
  readonly order: number;
  /** Also runs for a zombie task (CheckpointTask.zombie), which has nothing but its identity. */
  readonly zombies?: boolean;
  /**
   * Runs once before the tree is frozen: reads what the checkpoint needs (a parent image, hints
   * about the process `pid` the checkpoint is of), so the tree is not kept waiting for it. A
   * promise it returns (only where ctx.signal lets the event loop run) is awaited right before the
   * freeze, after every handler's prepare: work that must be over by then.
   */
  prepare?(ctx: CheckpointContext, pid: number): void | Promise<void>;
  /**
   * Optional (a --pre-copy checkpoint of one process, ctx.preCopy): runs after every prepare with
   * the process briefly stopped (`task`, a tracee of that stop); the handler calls `resume()` once
   * it needs the process stopped no more (it is then let run), and copies what it can while the
   * process runs; the promise ends before the freeze. What it made must not outlive cptrst.
   */
  preCopy?(ctx: CheckpointContext, task: CheckpointTask, resume: () => void): Promise<void>;
  /**
   * Runs once right after the tree is frozen, before any check: starts what may proceed while the
   * checks run (a read the kernel makes slow, handed over as a promise that the check awaits).
   */
  frozen?(ctx: CheckpointContext): void;
  /**
   * Refuses, before anything is written, what this subsystem cannot checkpoint faithfully. May
   * return a promise (awaited before the next check).
   */
  check?(ctx: CheckpointContext, task: CheckpointTask): void | Promise<void>;
  /** May return a promise (a long dump awaits ctx.checkpointYield() now and then). */
  dump(ctx: CheckpointContext, task: CheckpointTask): void | Promise<void>;
}

/** An object read from the image, handed to the restore handler that owns its type. */
export interface RestoreObject<T = unknown> {
  readonly type: number;
  readonly tag: number;
  readonly ptag: number;
  readonly offset: number;
  readonly obj: T;
  readonly pages?: Buffer;
  /** Stream offset of the first byte of `pages` (a lazy restart reads them again from a file image). */
  readonly pagesOffset?: number;
  /**
   * The page payload left in the image file instead of `pages` (ImageReader.leavePayloads): the
   * handler reads it from there and must check it (ImageReader.checkPayload) before the process runs.
   */
  readonly filePayload?: FilePayload;
}

export interface RestoreHandler {
  readonly name: string;
  readonly order: number;
  /** Object types this handler restores. */
  readonly types: readonly number[];
  /**
   * The token of this subsystem's kinds, if it has any: the restart flow then also hands it the
   * object types of every registered kind's `records`, so the subsystem can give them to the kind
   * with the generic object.
   */
  readonly kinds?: Token<KindHandler<never>>;
  restore(ctx: RestartContext, task: RestartTask, object: RestoreObject): void | Promise<void>;
  /** After all of a task's objects are read, in ascending order (the arch handler, last, sets the registers). */
  finish?(ctx: RestartContext, task: RestartTask): void | Promise<void>;
  /** Undo what this handler made when the restart fails (best effort, never throws). */
  abort?(ctx: RestartContext, task: RestartTask): void;
}

/**
 * A handler for one kind of a subsystem's objects (a kind of fd, a kind of VMA). The subsystem
 * enumerates its objects and asks the registered kind handlers which ones claim each; the one
 * with the highest `priority` takes it (core/deny.ts `claim`). An object that none claims aborts
 * the checkpoint (deny by default); two claims at the same highest priority are an error too.
 *
 * A kind owns its image records. It declares their layouts in `records`; at dump the subsystem
 * gives it a KindRecordWriter that writes them as children of the generic object (FILE, VMA), and
 * at restore it hands them back to the kind together with the generic object (KindRecords).
 * Nothing of a kind travels through task state.
 */
export interface KindHandler<Obj> {
  /** Written into the generic object, so that restore finds the same kind again. */
  readonly kind: string;
  /**
   * Claims are ranked by priority (default 0): a third party takes over one of our kinds by
   * claiming the same objects with a higher one.
   */
  readonly priority?: number;
  /** Layouts (object types whose parents include the generic object's type) this kind writes under its objects. */
  readonly records?: readonly LayoutClass[];
  claims(obj: Obj): boolean;
}

/** Writes a kind's own records under its generic object (only the layouts the kind declared). */
export interface KindRecordWriter {
  /** Tag of the generic object (FILE, VMA) the records go under. */
  readonly parentTag: number;
  write(record: object): number;
}

/** A kind's own records of one generic object at restore, in stream order. */
export interface KindRecords {
  readonly all: readonly RestoreObject[];
  /** The records of one of the kind's layouts, decoded. */
  of<T extends object>(layout: LayoutClass<T>): T[];
}

/**
 * Facts about this machine that C/R depends on: shown by `cptrst check`, written into the image
 * head's capability vector at checkpoint, and compared with it at restart.
 */
export interface MachineProbe {
  readonly name: string;
  probe(): ProbeResult[];
  /** Writes this probe's part of the capability vector. */
  fillHead?(head: ImageHead): void;
  /** Reasons the image cannot be restored on this machine (empty when it can). */
  checkHead?(head: ImageHead): string[];
}

export interface ProbeResult {
  readonly name: string;
  readonly ok: boolean;
  /** Whether C/R cannot work without it. */
  readonly essential: boolean;
  readonly detail: string;
}
