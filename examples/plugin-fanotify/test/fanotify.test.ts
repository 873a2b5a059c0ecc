/**
 * The plugin's own checks, on real fanotify groups of this process (made with fanotify_init, as
 * root). Checkpoint and restart of a process holding them, through the CLI, are in
 * test/cr/plugin-fanotify.test.ts at the top of the repository.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { container } from 'tsyringe';
import { CheckpointTask, CptError, layoutOf, linux, objectTypeEntry, registerObjectType, resolveAll } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { FAN_NONBLOCK, FANOTIFY_TYPE, FanotifyGroupImage, FanotifyGroupKind, OWNER, fanotifyFdinfo, register } from '../src';

const FAN_REPORT_FID = 0x200;
const FAN_UNLIMITED_QUEUE = 0x10;
const FAN_MARK_ADD = 0x1;
const FAN_MARK_REMOVE = 0x2;
const FAN_CREATE = 0x100;
const AT_FDCWD = -100;

describe('plugin-fanotify', () => {
  const opened: number[] = [];
  afterEach(() => {
    for (const fd of opened.splice(0)) fs.closeSync(fd);
  });
  const init = (flags: number, eventFlags: number = linux.O.RDONLY) => {
    const fd = Number(linux.rawSyscall(linux.syscallNumber('fanotify_init'), flags, eventFlags));
    expect(fd, 'fanotify_init').to.be.at.least(0);
    opened.push(fd);
    return fd;
  };
  const file = (fd: number) => ({
    fd, link: linux.readFdLink(process.pid, fd), fdinfo: linux.readFdinfo(process.pid, fd), stat: fs.fstatSync(fd, { bigint: true }),
  });

  it('registers one file kind above cptrst\'s own, with its own record under FILE and a type number of the third-party range', () => {
    const c = container.createChildContainer();
    register(c);
    const kinds = resolveAll(c, FileKinds);
    expect(kinds.map((k) => k.kind)).to.deep.equal(['fanotify-group']);
    expect(kinds[0].priority).to.equal(1);
    expect(kinds[0].records).to.deep.equal([FanotifyGroupImage]);
    expect(FANOTIFY_TYPE).to.be.at.least(1000);
    expect(layoutOf(FanotifyGroupImage)?.type).to.equal(FANOTIFY_TYPE);
    expect(objectTypeEntry(FANOTIFY_TYPE)?.owner).to.equal(OWNER);
    expect(registerObjectType(FANOTIFY_TYPE, 'fanotify-group', OWNER)).to.equal(FANOTIFY_TYPE);
    expect(() => registerObjectType(FANOTIFY_TYPE, 'other', '@someone/else')).to.throw(CptError, OWNER);
  });

  it('reads the init flags, the event flags and the marks from a real group\'s fdinfo', () => {
    const fd = init(FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_FID, linux.O.RDONLY | linux.O.LARGEFILE);
    const f = file(fd);
    expect(f.link).to.equal('anon_inode:[fanotify]');
    expect(fanotifyFdinfo(f.fdinfo)).to.deep.equal({ flags: FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_FID, eventFlags: linux.O.LARGEFILE, marks: 0 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fan-'));
    try {
      const r = linux.rawSyscall(linux.syscallNumber('fanotify_mark'), fd, FAN_MARK_ADD, FAN_CREATE, AT_FDCWD, Buffer.from(`${dir}\0`));
      expect(r).to.equal(0n);
      expect(fanotifyFdinfo(file(fd).fdinfo)?.marks).to.equal(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('claims groups without marks only, and refuses one with queued events', () => {
    const k = new FanotifyGroupKind();
    const fd = init(FAN_REPORT_FID);
    const bare = file(fd);
    expect(k.claims(bare)).to.equal(true);
    expect(k.claims({ ...bare, link: 'anon_inode:[eventfd]' })).to.equal(false);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fan-'));
    try {
      linux.rawSyscall(linux.syscallNumber('fanotify_mark'), fd, FAN_MARK_ADD, FAN_CREATE, AT_FDCWD, Buffer.from(`${dir}\0`));
      expect(k.claims(file(fd))).to.equal(false);
      fs.writeFileSync(path.join(dir, 'x'), '');
      // An event is queued; removing the mark leaves it queued on a group with no marks.
      expect(linux.rawSyscall(linux.syscallNumber('fanotify_mark'), fd, FAN_MARK_REMOVE, FAN_CREATE, AT_FDCWD, Buffer.from(`${dir}\0`))).to.equal(0n);
      const flushed = file(fd);
      expect(k.claims(flushed)).to.equal(true);
      const task = { pid: process.pid } as CheckpointTask;
      expect(() => k.describe({} as never, task, flushed)).to.throw(CptError, 'bytes of events are queued');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
