/** The entry points and run-time module loading (ENOSYS while no module is loaded). */
import 'reflect-metadata';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { expect } from 'chai';
import { CptError, loadModule, loadedModules, sys_checkpoint, sys_restart, unloadModule } from '../src';

function expectCode(fn: () => unknown, code: string): CptError {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(CptError);
    expect((e as CptError).code).to.equal(code);
    return e as CptError;
  }
  throw new Error(`expected a CptError ${code}`);
}

async function expectRejection(p: () => Promise<unknown>, code: string): Promise<CptError> {
  try {
    await p();
  } catch (e) {
    expect(e).to.be.instanceOf(CptError);
    expect((e as CptError).code).to.equal(code);
    return e as CptError;
  }
  throw new Error(`expected a CptError ${code}`);
}

describe('entry points', () => {
  it('sys_restart and sys_checkpoint fail with ENOSYS when no module is loaded', async () => {
    expect(loadedModules()).to.deep.equal([]);
    expect((await expectRejection(() => sys_restart(0, 0, 0), 'ENOSYS')).message).to.match(/no checkpoint\/restart module/);
    await expectRejection(() => sys_checkpoint(process.pid, 1, 0), 'ENOSYS');
  });

  it('a module loaded at run time by path binds cpt_operations, and unloading it brings ENOSYS back', async () => {
    // A third-party provider: a plain CommonJS file that registers its operations in the container.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-mod-'));
    const file = path.join(dir, 'provider.js');
    fs.writeFileSync(file, `exports.register = (c) => c.register('cpt.operations', { useValue: {
      checkpoint: (pid, fd, flags) => ({ pid, tasks: 0, bytes: fd, frozenMs: flags, timings: {} }),
      restart: (ctid) => ({ pid: ctid, tasks: 0, timings: {} }),
    } });\n`);
    try {
      loadModule(file);
      expect(loadedModules()).to.deep.equal([file]);
      expect((await sys_restart(4321, 0, 0)).pid).to.equal(4321);
      expect(await sys_checkpoint(77, 5, 2)).to.include({ pid: 77, bytes: 5, frozenMs: 2 });
      unloadModule(file);
      expect(loadedModules()).to.deep.equal([]);
      await expectRejection(() => sys_restart(0, 0, 0), 'ENOSYS');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to load something that is not a module', () => {
    expectCode(() => loadModule('/nonexistent/cptrst-module'), 'ENOENT');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-mod-'));
    const file = path.join(dir, 'not-a-module.js');
    fs.writeFileSync(file, 'exports.hello = 1;\n');
    try {
      expectCode(() => loadModule(file), 'ENOEXEC');
      expect(loadedModules()).to.deep.equal([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
