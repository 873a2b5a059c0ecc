/** `cptrst restart <file>`: sys_restart from a file, or from stdin with `-`. */
import * as fs from 'fs';
import * as path from 'path';
import type { LazyFillReport, RestartResult } from '@cptrst/core';
import { Command as Commander, Option } from 'commander';
import { Command, Invocation } from './command';
import { core } from './core';
import { catchInterrupts, common, interruptedError, loadModules, printTimings, progressPrinter } from './common';
import { fileError, openImageToRead, json, note, out } from './output';
import { Operand, onceOption } from './usage';

interface RestartOptions {
  leaveStopped?: boolean;
  lazy?: boolean;
  pidfile?: string;
  shellJob?: boolean;
}

export const restartCommand: Command = {
  name: 'restart',
  summary: 'restore a process from an image, with its PID',
  usage: '<file> [--lazy] [--leave-stopped] [--shell-job] [--pidfile <file>] [--json] [-v]',
  description: [
    'Reads the image <file> (- for stdin), checks that this machine can run it, makes the process',
    'again with its original PID, restores it and lets it run detached (or stopped, with',
    '--leave-stopped). Prints the PID on stdout and exits 0 once the process runs on its own.',
    'The restored process gets the file descriptors recorded in the image, not cptrst\'s.',
    'An image checkpointed with --shell-job (a tree that ran on a shell\'s terminal) needs --shell-job: the',
    'tree joins cptrst\'s session, gets cptrst\'s controlling terminal in place of the one it had, and its',
    'process group is put in the terminal\'s foreground if it was there at checkpoint.',
    'With --lazy, the process runs before its private anonymous memory is in: cptrst prints the PID,',
    'fills that memory on first touch and in the background, says on stderr when the last page is in,',
    'and exits then (if the memory cannot be completed, the process is killed and cptrst exits non-zero).',
  ].join(' '),
  declare(cmd: Commander): void {
    cmd
      .addArgument(new Operand('<file>', 'the image (- for stdin)', 'the image file (- for stdin)'))
      .addOption(new Option('--leave-stopped', 'leave the restored process stopped (SIGSTOP) and untraced'))
      .addOption(new Option('--lazy', 'let the process run first and fill its anonymous memory on first touch and in the background'))
      .addOption(new Option('--shell-job', 'give a tree checkpointed with --shell-job the terminal cptrst runs on, in cptrst\'s session'))
      .addOption(onceOption('--pidfile <file>', 'write the restored PID to <file>'));
  },
  run: runRestart,
};

async function runRestart(p: Invocation): Promise<number> {
  const { CptError, RestartFlags, asCptError, sys_restart } = core();
  const o = p.options as RestartOptions & typeof p.options;
  const c = common(o);
  const file = p.operands[0] as string;
  const pidfile = o.pidfile;
  const flags = (o.leaveStopped ? RestartFlags.LEAVE_STOPPED : 0) | (o.shellJob ? RestartFlags.SHELL_JOB : 0) | (o.lazy ? RestartFlags.LAZY : 0);

  const signal = catchInterrupts();
  loadModules(c);

  const fromStdin = file === '-';
  const fd = openImageToRead(file);
  let result: RestartResult;
  try {
    const imageName = fromStdin ? 'stdin' : `image file ${file}`;
    result = await sys_restart(0, fd, flags, { imageName, signal, ...(c.verbose ? { onProgress: progressPrinter() } : {}) });
  } catch (e) {
    if (!fromStdin) fs.closeSync(fd);
    throw interruptedError(asCptError(e), 'nothing was restored');
  }
  // A lazy restart reads the rest of the image while the process runs: the file stays open until then.
  const closeImage = () => {
    if (!fromStdin) fs.closeSync(fd);
  };
  if (result.pagesIn) result.pagesIn.then(closeImage, closeImage);
  else closeImage();

  if (pidfile) {
    try {
      writePidfile(pidfile, result.pid);
    } catch (e) {
      const fe = fileError(e, `pidfile ${pidfile}`);
      throw new CptError(fe.code, fe.message, { pid: result.pid, object: fe.object });
    }
  }
  if (c.verbose) printTimings(result.timings);
  if (c.json) {
    out(json({ pid: result.pid, tasks: result.tasks, process: o.leaveStopped ? 'stopped' : 'running', timings: result.timings }, !o.lazy));
  } else {
    out(String(result.pid));
  }
  if (result.pagesIn) {
    // The process runs; its memory comes in now. A failure here has killed it.
    let r: LazyFillReport;
    try {
      r = await result.pagesIn;
    } catch (e) {
      throw interruptedError(asCptError(e), 'the restored process was killed');
    }
    if (c.json) out(json({ pid: result.pid, pagesIn: r }, false));
    else note(`process ${result.pid}: the last page is in (${r.pages} pages, ${r.faults} on first touch, ${r.ms} ms after it started)`);
  }
  return 0;
}

/** Written to a temporary name and renamed, so a reader never sees a half-written pidfile. */
function writePidfile(file: string, pid: number): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, `${pid}\n`, { mode: 0o644 });
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
