/** `cptrst checkpoint <pid> -o <file>`: sys_checkpoint into a file, or into stdout with `-o -`. */
import * as fs from 'fs';
import * as tty from 'tty';
import { CheckpointFlags, CheckpointResult, asCptError, sys_checkpoint } from '@cptrst/core';
import { OptionSpec, ParsedArgs, UsageError, flag, parsePositiveInt, value } from './args';
import { Command } from './command';
import { catchInterrupts, common, interruptedError, loadModules, printTimings, progressPrinter } from './common';
import { err, fileError, formatBytes, formatMs, json, note, out } from './output';

const OPTIONS: readonly OptionSpec[] = [
  { long: 'output', short: 'o', value: true, arg: 'FILE', help: 'where the image goes (created with mode 0600, truncated); - for stdout' },
  { long: 'kill', help: 'kill the process once the image is complete and synced' },
  { long: 'leave-stopped', help: 'leave the process stopped (SIGSTOP) and untraced' },
];

export const checkpointCommand: Command = {
  name: 'checkpoint',
  summary: 'write an image of a running process',
  usage: 'cptrst checkpoint <pid> -o <file> [--kill | --leave-stopped] [--json] [-v]',
  description: [
    'Freezes the process <pid>, writes its image to <file> and lets it go on running (the default),',
    'kills it (--kill, only after the image is complete and synced) or leaves it stopped',
    '(--leave-stopped). `-o -` writes the image to stdout, e.g. into a pipe or `ssh host cptrst restart -`.',
    'On failure the process goes on running untouched and a partial file is removed.',
    'A one-line summary goes to stderr; with --json a JSON object goes to stdout (to stderr with -o -).',
  ].join('\n'),
  options: OPTIONS,
  errorFd: (p) => (value(p, 'output') === '-' ? 2 : 1),
  run: runCheckpoint,
};

async function runCheckpoint(p: ParsedArgs): Promise<number> {
  const c = common(p);
  const cmd = 'checkpoint';
  if (p.positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[1])}`, cmd);
  const pid = parsePositiveInt(p.positionals[0], 'pid', cmd);
  const output = value(p, 'output');
  if (output === undefined) throw new UsageError('missing -o <file> (use -o - for stdout)', cmd);
  const kill = flag(p, 'kill');
  const leaveStopped = flag(p, 'leave-stopped');
  if (kill && leaveStopped) throw new UsageError('--kill and --leave-stopped exclude each other', cmd);
  const toStdout = output === '-';
  if (toStdout && tty.isatty(1)) throw new UsageError('refusing to write an image to a terminal: redirect stdout, or give -o <file>', cmd);
  const flags = (kill ? CheckpointFlags.KILL : 0) | (leaveStopped ? CheckpointFlags.LEAVE_STOPPED : 0);

  const signal = catchInterrupts();
  loadModules(c);

  let fd = 1;
  let removable = false;
  if (!toStdout) {
    try {
      fd = fs.openSync(output, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
    } catch (e) {
      throw fileError(e, `image file ${output}`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (st.isFile()) {
        removable = true;
        // The image holds the process's memory: never leave it readable by others.
        if ((st.mode & 0o077) !== 0) fs.fchmodSync(fd, 0o600);
      }
    } catch (e) {
      fs.closeSync(fd);
      throw fileError(e, `image file ${output}`);
    }
  }

  let result: CheckpointResult;
  try {
    result = await sys_checkpoint(pid, fd, flags, { signal, ...(c.verbose ? { onProgress: progressPrinter() } : {}) });
    if (!toStdout) fs.closeSync(fd);
  } catch (e) {
    if (!toStdout) {
      try {
        fs.closeSync(fd);
      } catch {
        /* closed already */
      }
      if (removable) {
        try {
          fs.unlinkSync(output);
        } catch {
          /* gone already */
        }
      }
    }
    throw interruptedError(asCptError(e, { pid }), 'the process was left running');
  }

  const released = kill ? 'killed' : leaveStopped ? 'stopped' : 'running';
  if (c.verbose) printTimings(result.timings);
  if (c.json) {
    const doc = {
      pid: result.pid, tasks: result.tasks, image: toStdout ? '-' : output, bytes: result.bytes,
      frozenMs: result.frozenMs, process: released, timings: result.timings,
    };
    // stdout carries the image with -o -: the JSON goes to stderr then, on one line.
    if (toStdout) err(json(doc, false));
    else out(json(doc));
  } else {
    const where = toStdout ? 'stdout' : output;
    note(`checkpointed pid ${result.pid}${result.tasks !== 1 ? ` (${result.tasks} tasks)` : ''}: ${result.bytes} bytes (${formatBytes(result.bytes)}) to ${where}, frozen ${formatMs(result.frozenMs)} ms; process ${released}`);
  }
  return 0;
}
