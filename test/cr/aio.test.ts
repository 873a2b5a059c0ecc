/**
 * An aio context (io_setup) is refused at checkpoint by name, before anything is written; the
 * process runs on.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import { cptrst, makeTempDir, procState, removeTempDir, waitGone } from '../support';

describe('aio contexts', function () {
  this.timeout(60000);
  before(() => loadModule('@cptrst/cpt-module'));

  it('an io_setup context is refused at checkpoint, naming its ring; the process runs on untraced', async () => {
    const dir = makeTempDir('aio');
    // A python3 process with an aio context (io_setup(8, &ctx)), nothing else of note.
    const p = spawn('python3', ['-c', [
      'import ctypes, os, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'ctx = ctypes.c_ulong(0)',
      'r = libc.syscall(206, 8, ctypes.byref(ctx))',
      'print("READY %d %x" % (r, ctx.value), flush=True)',
      'os.closerange(0, 4096)',
      'time.sleep(60)',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const line = await new Promise<string>((resolve) => p.stdout.once('data', (d: Buffer) => resolve(d.toString())));
      const m = /^READY 0 ([0-9a-f]+)/.exec(line);
      expect(m, line).to.not.equal(null);
      const img = path.join(dir, 'image.cpt');
      const r = await cptrst(['checkpoint', String(p.pid), '-o', img]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${p.pid}, vma ${m![1]}-[0-9a-f]+ /\\[aio\\]: an aio context \\(io_setup; its ring at 0x${m![1]} is its id\\) is not supported`));
      expect(fs.existsSync(img)).to.equal(false);
      const st = await procState(p.pid!);
      expect(st?.tracerPid).to.equal(0);
      expect(st?.state).to.match(/^[RS]$/);
    } finally {
      p.kill('SIGKILL');
      await waitGone(p.pid!, 5000, { zombieOk: true });
      removeTempDir(dir);
    }
  });
});
