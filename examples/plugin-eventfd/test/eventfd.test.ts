/**
 * The plugin's own checks, on real eventfds of this process (made with eventfd2 through core's
 * bindings). Checkpoint and restart of a process holding one, through the CLI, are in
 * test/cr/plugin-eventfd.test.ts at the top of the repository.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import { container } from 'tsyringe';
import { CptError, layoutOf, linux, objectTypeEntry, registerObjectType, resolveAll } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { EFD_SEMAPHORE, EVENTFD_TYPE, EventfdImage, EventfdKind, OWNER, eventfdState, register } from '../src';

const { O } = linux;

function eventfd(count: number, flags: number): number {
  const fd = linux.rawSyscall(linux.syscallNumber('eventfd2'), count, flags | O.CLOEXEC);
  if (fd < 0n) throw new Error(`eventfd2: ${linux.errnoName(Number(-fd))}`);
  return Number(fd);
}

describe('plugin-eventfd', () => {
  const opened: number[] = [];
  afterEach(() => {
    for (const fd of opened.splice(0)) fs.closeSync(fd);
  });

  it('registers one file kind, with its own record under FILE and a type number of the third-party range', () => {
    const c = container.createChildContainer();
    register(c);
    const kinds = resolveAll(c, FileKinds);
    expect(kinds.map((k) => k.kind)).to.deep.equal(['eventfd']);
    expect(kinds[0].records).to.deep.equal([EventfdImage]);
    expect(EVENTFD_TYPE).to.be.at.least(1000);
    expect(layoutOf(EventfdImage)?.type).to.equal(EVENTFD_TYPE);
    expect(objectTypeEntry(EVENTFD_TYPE)?.owner).to.equal(OWNER);
    expect(registerObjectType(EVENTFD_TYPE, 'eventfd', OWNER)).to.equal(EVENTFD_TYPE);
    let e: unknown;
    try {
      registerObjectType(EVENTFD_TYPE, 'other', '@someone/else');
    } catch (x) {
      e = x;
    }
    expect(e).to.be.instanceOf(CptError);
    expect((e as Error).message).to.include(OWNER).and.include('@someone/else');
  });

  it('reads the counter and the mode from a real eventfd\'s fdinfo', function () {
    const plain = eventfd(5, 0);
    const sem = eventfd(7, EFD_SEMAPHORE | O.NONBLOCK);
    opened.push(plain, sem);
    const pInfo = linux.readFdinfo(process.pid, plain);
    const sInfo = linux.readFdinfo(process.pid, sem);
    expect(linux.readFdLink(process.pid, plain)).to.equal('anon_inode:[eventfd]');
    expect(eventfdState(pInfo)?.count).to.equal(5n);
    expect(eventfdState(sInfo)?.count).to.equal(7n);
    expect(sInfo.flags & O.NONBLOCK).to.equal(O.NONBLOCK);
    expect(pInfo.flags & O.NONBLOCK).to.equal(0);
    if (pInfo.fields['eventfd-semaphore'] === undefined) this.skip(); // an older kernel: the kind refuses every eventfd
    expect(eventfdState(pInfo)?.semaphore).to.equal(false);
    expect(eventfdState(sInfo)?.semaphore).to.equal(true);
  });

  it('claims only eventfds', () => {
    const k = new EventfdKind();
    const fd = eventfd(1, 0);
    opened.push(fd);
    const f = (link: string) => ({ fd, link, fdinfo: linux.readFdinfo(process.pid, fd), stat: fs.fstatSync(fd, { bigint: true }) });
    expect(k.claims(f('anon_inode:[eventfd]'))).to.equal(true);
    expect(k.claims(f('anon_inode:[signalfd]'))).to.equal(false);
    expect(k.claims(f('/tmp/x'))).to.equal(false);
  });
});
