/** `cptrst checkpoint <pid> -o <file>`: sys_checkpoint into a file, or into stdout with `-o -`. */
import type * as Tty from 'tty';
import type { CheckpointResult } from '@cptrst/core';
import { Command as Commander, Option } from 'commander';
import { Command, Invocation } from './command';
import { core } from './core';
import { catchInterrupts, common, interruptedError, loadModules, printTimings, progressPrinter } from './common';
import { ImageOutput, openImageOutput } from './image-file';
import { err, formatBytes, formatMs, json, note, out } from './output';
import { Operand, UsageError, onceOption, positiveInt } from './usage';

interface CheckpointOptions {
  output: string;
  kill?: boolean;
  leaveStopped?: boolean;
  snapshot?: boolean;
  shellJob?: boolean;
  compress?: boolean;
  extUnixSk?: 'reconnect' | 'close';
  parent?: string;
  track?: boolean;
  preCopy?: boolean;
}

export const checkpointCommand: Command = {
  name: 'checkpoint',
  summary: 'write an image of a running process',
  usage: '<pid> -o <file> [--kill | --leave-stopped | --no-snapshot] [--compress] [--track | --parent <image>] [--pre-copy] [--shell-job] [--ext-unix-sk <how>] [--json] [-v]',
  description: [
    'Freezes the process <pid>, writes its image to <file> and lets it go on running (the default),',
    'kills it (--kill, only after the image is complete and synced) or leaves it stopped',
    '(--leave-stopped). `-o -` writes the image to stdout, e.g. into a pipe or `ssh host cptrst restart -`.',
    'The image is written to a temporary file in <file>\'s directory and renamed onto <file> once',
    'complete and synced: on failure the process goes on running untouched and an earlier <file>',
    'stays as it was. A symlink <file> is refused; a FIFO or character device is written directly.',
    'A process left running is frozen only until a copy-on-write snapshot of its private memory is',
    'taken and the rest is recorded; its pages are then written from the snapshot while it runs',
    '(pages it writes meanwhile take extra memory). --no-snapshot keeps it frozen until the image is written.',
    '--compress compresses page data with LZ4 (pages that do not shrink are stored plain); a restart',
    'reads compressed images like any other.',
    '--parent <image> writes only the pages changed since <image> (an image taken with --track or --parent);',
    'the rest is a reference to it, and a restart reads the chain. Changed pages are known from write tracking',
    '(userfaultfd write protection, held by a small tracker process from --track on) or, where tracking is not',
    'available, by comparing page hashes with the parent; the summary says which. --track starts tracking.',
    '--pre-copy (one process left running) copies its private memory while it runs, before the freeze, with',
    'write tracking (userfaultfd write protection held by cptrst), so that the frozen window copies only what it',
    'wrote since instead of taking a snapshot; it stops the process briefly before (reported as "stopped"). A tree,',
    'a process with a userfaultfd of its own or a --track tracker falls back to the snapshot, and says why.',
    'A tree that runs on the terminal of a shell outside it (a job started from an interactive shell) is',
    'refused unless --shell-job is given: its fds on that terminal and its controlling terminal are then',
    'recorded as "the terminal cptrst is run from", which `cptrst restart --shell-job` gives back.',
    'A unix socket connected to a socket that only processes outside the tree hold is refused unless',
    '--ext-unix-sk says how it comes back: `reconnect` (a datagram socket connected one way to a named socket',
    'is connected to that name again at restart; the name must still lead to that socket) or `close` (an',
    'unnamed socket is restored as if its peer had closed, with the data waiting in its queue).',
    'A one-line summary goes to stderr; with --json a JSON object goes to stdout (to stderr with -o -).',
  ].join(' '),
  declare(cmd: Commander): void {
    cmd
      .addArgument(new Operand('<pid>', 'the process to checkpoint', 'pid', positiveInt('pid')))
      .addOption(onceOption('-o, --output <file>', 'where the image goes (mode 0600; written to a temporary file, renamed onto <file> once complete); - for stdout').makeOptionMandatory())
      .addOption(new Option('--kill', 'kill the process once the image is complete and synced').conflicts('leaveStopped'))
      .addOption(new Option('--leave-stopped', 'leave the process stopped (SIGSTOP) and untraced'))
      .addOption(new Option('--no-snapshot', 'keep the process frozen until its pages are written (no copy-on-write snapshot)'))
      .addOption(new Option('--shell-job', 'the tree runs on the terminal of a shell outside it: record that terminal as the caller\'s (restart with --shell-job)'))
      .addOption(new Option('--compress', 'compress page data (LZ4)'))
      .addOption(new Option('--ext-unix-sk <how>', 'a unix socket connected to a socket outside the tree: reconnect (datagram, to its named peer, at restart) or close (restored as if its peer had closed)').choices(['reconnect', 'close']))
      .addOption(new Option('--track', 'track the process\'s writes from now on, for a later --parent checkpoint'))
      .addOption(onceOption('--parent <image>', 'write only the pages changed since <image>; go on tracking'))
      .addOption(new Option('--pre-copy', 'copy the private memory while the process runs, then only what it wrote since while frozen (no snapshot)'));
  },
  errorFd: (p) => ((p.options as Partial<CheckpointOptions>).output === '-' ? 2 : 1),
  run: runCheckpoint,
};

async function runCheckpoint(p: Invocation): Promise<number> {
  const { CheckpointFlags, CptError, asCptError, sys_checkpoint } = core();
  const o = p.options as CheckpointOptions & typeof p.options;
  const c = common(o);
  const pid = p.operands[0] as number;
  const output = o.output;
  const kill = o.kill === true;
  const leaveStopped = o.leaveStopped === true;
  const toStdout = output === '-';
  // tty loads net and the streams (some 2 ms): only when the image goes to stdout.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose
  if (toStdout && (require('tty') as typeof Tty).isatty(1)) throw new UsageError('refusing to write an image to a terminal: redirect stdout, or give -o <file>');
  const flags = (kill ? CheckpointFlags.KILL : 0) | (leaveStopped ? CheckpointFlags.LEAVE_STOPPED : 0) | (o.snapshot === false ? CheckpointFlags.NO_SNAPSHOT : 0) |
    (o.shellJob ? CheckpointFlags.SHELL_JOB : 0) | (o.extUnixSk === 'reconnect' ? CheckpointFlags.EXT_UNIX_RECONNECT : o.extUnixSk === 'close' ? CheckpointFlags.EXT_UNIX_CLOSE : 0);

  if (o.preCopy && (kill || leaveStopped || o.snapshot === false || o.parent !== undefined || o.track)) {
    throw new UsageError('--pre-copy is for a process left running with its memory copied while it runs: not with --kill, --leave-stopped, --no-snapshot, --track or --parent');
  }
  if (o.compress && (o.parent || o.track)) throw new UsageError('--compress cannot be used with --parent or --track: a compressed image cannot be a parent');
  const incremental = o.parent !== undefined || o.track ? { ...(o.parent !== undefined ? { parent: o.parent } : {}), track: true, imagePath: output } : undefined;
  const signal = catchInterrupts();
  loadModules(c);

  // The image goes to a temporary file renamed onto the path once complete (image-file.ts).
  const image: ImageOutput | undefined = toStdout ? undefined : openImageOutput(output);
  const fd = image ? image.fd : 1;
  const imageName = image ? `image file ${image.name}` : 'stdout';

  let result: CheckpointResult;
  try {
    const options = { imageName, ...(incremental ? { incremental } : {}), ...(o.compress ? { compress: 'lz4' as const } : {}), ...(o.preCopy ? { preCopy: true } : {}), commitImage: image ? () => image.commit() : undefined, signal, ...(c.verbose ? { onProgress: progressPrinter() } : {}) };
    result = await sys_checkpoint(pid, fd, flags, options);
    // A module that does not call commitImage: put the image in place now.
    image?.commit();
    image?.close();
  } catch (e) {
    image?.discard();
    const ce = asCptError(e, { pid });
    // An error of the image stream (ENOSPC...) is about this checkpoint's process too.
    const named = ce.pid === undefined ? new CptError(ce.code, ce.message, { pid, object: ce.object, cause: e }) : ce;
    throw interruptedError(named, 'the process was left running');
  }

  const released = kill ? 'killed' : leaveStopped ? 'stopped' : 'running';
  if (c.verbose) printTimings(result.timings);
  if (c.json) {
    const doc = {
      pid: result.pid, tasks: result.tasks, image: toStdout ? '-' : output, bytes: result.bytes,
      frozenMs: result.frozenMs, process: released, timings: result.timings, ...(result.incremental ? { incremental: result.incremental } : {}),
      ...(result.preCopy ? { preCopy: result.preCopy } : {}),
    };
    // stdout carries the image with -o -: the JSON goes to stderr then, on one line.
    if (toStdout) err(json(doc, false));
    else out(json(doc));
  } else {
    const where = toStdout ? 'stdout' : output;
    for (const r of result.incremental ?? []) {
      note(`pid ${r.pid}: ${r.storedPages} pages written, ${r.parentPages} from the parent (${r.method === 'uffd-wp' ? 'write tracking' : r.method === 'hashes' ? 'compared by hashes' : 'full'})${r.why ? `: ${r.why}` : ''}`);
    }
    const pc = result.preCopy;
    if (pc) {
      note(pc.path === 'pre-copy'
        ? `pid ${result.pid}: pages from the pre-copy: ${formatBytes(pc.copiedRunning)} copied while it ran (${pc.rounds} rounds), ${formatBytes(pc.copiedFrozen)} while frozen; stopped ${formatMs(pc.stoppedMs)} ms before the freeze`
        : `pid ${result.pid}: pre-copy not used (${pc.why ?? 'no reason given'}): pages from a copy-on-write snapshot${pc.stoppedMs ? `; stopped ${formatMs(pc.stoppedMs)} ms before the freeze` : ''}`);
    }
    note(`checkpointed pid ${result.pid}${result.tasks !== 1 ? ` (${result.tasks} tasks)` : ''}: ${result.bytes} bytes (${formatBytes(result.bytes)}) to ${where}, frozen ${formatMs(result.frozenMs)} ms; process ${released}`);
  }
  return 0;
}
