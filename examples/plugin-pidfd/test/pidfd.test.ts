/**
 * The plugin's own checks, on real pidfds of this process (made with pidfd_open through core's
 * bindings). Checkpoint and restart of a process holding them, through the CLI, are in
 * test/cr/plugin-pidfd.test.ts at the top of the repository.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import { container } from 'tsyringe';
import { CheckpointTask, CptError, layoutOf, linux, objectTypeEntry, registerObjectType, resolveAll } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { OWNER, PIDFD_NONBLOCK, PIDFD_TYPE, PidfdImage, PidfdKind, pidfdTarget, register } from '../src';

describe('plugin-pidfd', () => {
  const opened: number[] = [];
  afterEach(() => {
    for (const fd of opened.splice(0)) fs.closeSync(fd);
  });
  const open = (pid: number, flags = 0) => {
    const fd = linux.pidfdOpen(pid, flags);
    opened.push(fd);
    return fd;
  };
  const file = (fd: number) => ({
    fd, link: linux.readFdLink(process.pid, fd), fdinfo: linux.readFdinfo(process.pid, fd), stat: fs.fstatSync(fd, { bigint: true }),
  });

  it('registers one file kind, with its own record under FILE and a type number of the third-party range', () => {
    const c = container.createChildContainer();
    register(c);
    const kinds = resolveAll(c, FileKinds);
    expect(kinds.map((k) => k.kind)).to.deep.equal(['pidfd']);
    expect(kinds[0].records).to.deep.equal([PidfdImage]);
    expect(PIDFD_TYPE).to.be.at.least(1000);
    expect(layoutOf(PidfdImage)?.type).to.equal(PIDFD_TYPE);
    expect(objectTypeEntry(PIDFD_TYPE)?.owner).to.equal(OWNER);
    expect(registerObjectType(PIDFD_TYPE, 'pidfd', OWNER)).to.equal(PIDFD_TYPE);
    let e: unknown;
    try {
      registerObjectType(PIDFD_TYPE, 'other', '@someone/else');
    } catch (x) {
      e = x;
    }
    expect(e).to.be.instanceOf(CptError);
    expect((e as Error).message).to.include(OWNER).and.include('@someone/else');
  });

  it('reads the process and the flags from a real pidfd\'s fdinfo', () => {
    const plain = file(open(process.pid));
    const nb = file(open(process.pid, PIDFD_NONBLOCK));
    expect(plain.link).to.equal('anon_inode:[pidfd]');
    expect(pidfdTarget(plain.fdinfo)).to.equal(process.pid);
    expect(nb.fdinfo.flags & PIDFD_NONBLOCK).to.equal(PIDFD_NONBLOCK);
    expect(plain.fdinfo.flags & PIDFD_NONBLOCK).to.equal(0);
  });

  it('claims pidfds only, and refuses one of another process', () => {
    const k = new PidfdKind();
    const own = file(open(process.pid));
    const parent = file(open(process.ppid));
    expect(k.claims(own)).to.equal(true);
    expect(k.claims({ ...own, link: 'anon_inode:[eventfd]' })).to.equal(false);
    const task = { pid: process.pid } as CheckpointTask;
    expect(() => k.describe({} as never, task, own)).to.not.throw();
    expect(() => k.describe({} as never, task, parent)).to.throw(CptError, `another process (pid ${process.ppid})`);
  });
});
