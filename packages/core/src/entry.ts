/**
 * The two entry points, shaped like system calls (a pid or ctid, an fd, flags). They find the
 * loaded module's operations at call time; with none loaded they fail with ENOSYS. Both return
 * promises: an operation gives the event loop a turn at its safe points, so that a signal
 * handler (the CLI's SIGINT/SIGTERM) can abort it through OperationOptions.signal.
 */
import { CptError } from './errors';
import { Tokens } from './contract';
import { moduleContainer } from './modules';
import type { Logger, ProgressEvent } from './context';
import type { CompressionName } from './image/compress';

export interface OperationOptions {
  log?: Logger;
  onProgress?: (e: ProgressEvent) => void;
  /** What errors call the image stream: its path, "stdin", "stdout" ("image fd N" without it). */
  imageName?: string;
  /**
   * Checkpoint only: called once the image is complete and synced, before the tree is released
   * (so before --kill kills it). The CLI renames its temporary file onto the image's path here;
   * a throw fails the checkpoint and the tree runs on.
   */
  commitImage?: () => void;
  /**
   * Aborting it interrupts the operation at its next safe point (between handlers, between
   * objects, every few tens of MiB of pages): it then undoes what it did (a checkpoint lets the
   * process run on as before, a restart kills what it made) and rejects with CptError EINTR,
   * "interrupted by <reason>" (the reason given to abort(), e.g. 'SIGINT').
   */
  signal?: AbortSignal;
  /** Checkpoint only: compress page payloads with this codec (image/compress.ts). */
  compress?: CompressionName;
  /** Checkpoint only: an incremental checkpoint, or one that starts write tracking (mm/src/incremental.ts). */
  incremental?: IncrementalOptions;
  /**
   * Checkpoint only: copy the private memory while the process runs, before the freeze, and while
   * frozen only what it wrote since (mm/src/precopy.ts); one process only (a tree, or what cannot
   * be tracked, falls back to the copy-on-write snapshot, said in the result's preCopy).
   */
  preCopy?: boolean;
}

/** How a --pre-copy checkpoint went (CheckpointResult.preCopy). */
export interface PreCopyReport {
  /** 'pre-copy' when the pages came from the copy made before the freeze, else 'snapshot' (the fallback). */
  path: 'pre-copy' | 'snapshot';
  /** Why the snapshot was used, when it was. */
  why?: string;
  /** Milliseconds the process was stopped before the freeze (to make its userfaultfd), besides frozenMs. */
  stoppedMs: number;
  /** Copy rounds made while the process ran. */
  rounds: number;
  /** Bytes copied while it ran (all rounds), and while it was frozen (written since, or not tracked). */
  copiedRunning: number;
  copiedFrozen: number;
}

/** What an incremental checkpoint is given. */
export interface IncrementalOptions {
  /** The parent image's path, as given: only the pages changed since it are written. */
  parent?: string;
  /** Track the process's writes from this checkpoint on, for the next one (implied by parent). */
  track?: boolean;
  /** The new image's path: a relative parent path is recorded relative to its directory. */
  imagePath?: string;
}

/** How one process's pages were found changed in an incremental checkpoint. */
export interface IncrementalReport {
  pid: number;
  /** 'uffd-wp' (write tracking), 'hashes' (compared with the parent's page hashes) or 'full' (no usable parent). */
  method: string;
  /** Why tracking was not used, when it was not. */
  why?: string;
  storedPages: number;
  parentPages: number;
}

export interface CheckpointResult {
  pid: number;
  tasks: number;
  bytes: number;
  /** Milliseconds the tree was frozen. */
  frozenMs: number;
  timings: Record<string, number>;
  /** An incremental or tracking checkpoint: per process, how its changed pages were found. */
  incremental?: IncrementalReport[];
  /** A --pre-copy checkpoint: which path its pages took, and the stop before the freeze. */
  preCopy?: PreCopyReport;
}

export interface RestartResult {
  /** The restored root PID. */
  pid: number;
  tasks: number;
  timings: Record<string, number>;
  /** Lazy restart: settles once the last page is in (rejects, with the process killed, if it cannot be). */
  pagesIn?: Promise<LazyFillReport>;
}

/** What a lazy restart's fill did, once complete. */
export interface LazyFillReport {
  /** Pages copied in from the image. */
  pages: number;
  /** Of them, copied because the process touched them first. */
  faults: number;
  /** Milliseconds from the release of the process to the last page. */
  ms: number;
}

/** What the loaded checkpoint/restart module provides: the entry points call it. */
export interface CptOperations {
  checkpoint(pid: number, fd: number, flags: number, options?: OperationOptions): Promise<CheckpointResult>;
  restart(ctid: number, fd: number, flags: number, options?: OperationOptions): Promise<RestartResult>;
}

function operations(): CptOperations {
  const c = moduleContainer();
  if (!c || !c.isRegistered(Tokens.CptOperations, true)) {
    throw new CptError('ENOSYS', 'no checkpoint/restart module is loaded (load @cptrst/cpt-module)');
  }
  return c.resolve(Tokens.CptOperations);
}

/** Checkpoints the process tree rooted at `pid` into the image stream `fd`. */
export async function sys_checkpoint(pid: number, fd: number, flags: number, options?: OperationOptions): Promise<CheckpointResult> {
  return operations().checkpoint(pid, fd, flags, options);
}

/**
 * Restarts the image read from `fd`. `ctid` stands where a container id would; cptrst has no
 * containers, so it is the PID the image's root must have, or 0 for "whatever the image says".
 */
export async function sys_restart(ctid: number, fd: number, flags: number, options?: OperationOptions): Promise<RestartResult> {
  return operations().restart(ctid, fd, flags, options);
}
