/**
 * The plugin's own checks, on real memfd_secret fds of this process. Checkpoint and restart of a
 * process holding them, through the CLI, are in test/cr/plugin-secretmem.test.ts at the top of
 * the repository.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import { container } from 'tsyringe';
import { CheckpointTask, CptError, layoutOf, linux, objectTypeEntry, registerObjectType, resolveAll } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { OWNER, SECRETMEM_TYPE, SecretmemImage, SecretmemKind, isSecretmem, register, secretmemDev } from '../src';

describe('plugin-secretmem', function () {
  const opened: number[] = [];
  afterEach(() => {
    for (const fd of opened.splice(0)) fs.closeSync(fd);
  });
  /** A memfd_secret fd of this process; the test is skipped where the kernel has none. */
  const secret = (ctx: Mocha.Context): number => {
    const r = linux.rawSyscall(linux.syscallNumber('memfd_secret'), 0);
    if (r < 0n) ctx.skip();
    opened.push(Number(r));
    return Number(r);
  };
  const file = (fd: number) => ({
    fd, link: linux.readFdLink(process.pid, fd), fdinfo: linux.readFdinfo(process.pid, fd), stat: fs.fstatSync(fd, { bigint: true }),
  });

  it('registers one file kind above cptrst\'s own, with its own record under FILE and a type number of the third-party range', () => {
    const c = container.createChildContainer();
    register(c);
    const kinds = resolveAll(c, FileKinds);
    expect(kinds.map((k) => k.kind)).to.deep.equal(['secretmem']);
    expect(kinds[0].priority).to.equal(1);
    expect(kinds[0].records).to.deep.equal([SecretmemImage]);
    expect(SECRETMEM_TYPE).to.be.at.least(1000);
    expect(layoutOf(SecretmemImage)?.type).to.equal(SECRETMEM_TYPE);
    expect(objectTypeEntry(SECRETMEM_TYPE)?.owner).to.equal(OWNER);
    expect(registerObjectType(SECRETMEM_TYPE, 'secretmem-fd', OWNER)).to.equal(SECRETMEM_TYPE);
    expect(() => registerObjectType(SECRETMEM_TYPE, 'other', '@someone/else')).to.throw(CptError, OWNER);
  });

  it('tells a real secret-memory fd apart by its filesystem and device, not by its link alone', function () {
    const fd = secret(this);
    const f = file(fd);
    expect(f.link).to.equal('/secretmem (deleted)');
    expect(isSecretmem(process.pid, fd)).to.equal(true);
    expect(f.stat.dev).to.equal(secretmemDev());
    const k = new SecretmemKind();
    expect(k.claims(f)).to.equal(true);
    // A deleted file of that name elsewhere is not one.
    expect(k.claims({ ...f, stat: { ...f.stat, dev: f.stat.dev + 1n } })).to.equal(false);
    expect(isSecretmem(process.pid, 0)).to.equal(false);
  });

  it('claims an fd of size 0 only, and refuses one that was sized', function () {
    const k = new SecretmemKind();
    const task = { pid: process.pid } as CheckpointTask;
    const fd = secret(this);
    expect(() => k.describe({} as never, task, file(fd))).to.not.throw();
    fs.ftruncateSync(fd, 4096);
    expect(k.claims(file(fd))).to.equal(false);
    expect(() => k.describe({} as never, task, file(fd))).to.throw(CptError, 'secret memory of 4096 bytes: its contents cannot be read');
  });
});
