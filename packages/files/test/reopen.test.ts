/**
 * Restart side of files, up to the point where the task would be asked to open something:
 * the flags used to reopen, the checks that the file is still the same, and the checks of the
 * image's FILE / FD objects. None of these may touch the tracee.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { container } from 'tsyringe';
import { ImageReader, ObjectType, RestartContext, RestartTask, RestoreObject, Tracee, bufferSource, linux } from '@cptrst/core';
import {
  CharDevice, Directory, FdImage, FileDataImage, FileImage, FsImage, RegularFile, reopenFlags, restoreFd, restoreFileObject,
} from '../src';
import { removeTmpDir, thrown, tmpDir, unusedTracee } from './support';

const { O } = linux;
const ctx = new RestartContext(container.createChildContainer(), new ImageReader(bufferSource(Buffer.alloc(0))), -1, 0);
const task = (): RestartTask => ({ pid: 4321, tid: 4321, tag: 2, tracee: unusedTracee<Tracee>(), state: new Map() });

function fileImage(p: string, over: Partial<FileImage> = {}): FileImage {
  const st = fs.statSync(p, { bigint: true });
  return Object.assign(new FileImage(), { kind: 'regular', path: p, flags: O.RDWR, size: st.size, mtimeNs: st.mtimeNs, rdev: st.rdev, inode: st.ino, mode: Number(st.mode) }, over);
}

describe('files: reopening at restart', () => {
  after(() => removeTmpDir());

  it('reopenFlags keeps the access mode and status flags, drops O_CREAT, O_EXCL, O_TRUNC, O_NOCTTY and O_CLOEXEC', () => {
    expect(reopenFlags(O.RDWR | O.CREAT | O.TRUNC | O.CLOEXEC)).to.equal(O.RDWR);
    expect(reopenFlags(O.WRONLY | O.APPEND | O.CREAT | O.EXCL)).to.equal(O.WRONLY | O.APPEND);
    expect(reopenFlags(O.RDONLY | O.NOCTTY | O.NONBLOCK)).to.equal(O.NONBLOCK);
    expect(reopenFlags(O.RDWR | O.APPEND | O.NONBLOCK | O.LARGEFILE | O.NOATIME | O.DIRECT)).to.equal(O.RDWR | O.APPEND | O.NONBLOCK | O.LARGEFILE | O.NOATIME | O.DIRECT);
    expect(reopenFlags(O.DIRECTORY | O.CLOEXEC)).to.equal(O.DIRECTORY);
    expect(reopenFlags(0)).to.equal(0);
    expect([O.CREAT, O.EXCL, O.TRUNC, O.NOCTTY, O.CLOEXEC]).to.deep.equal([0o100, 0o200, 0o1000, 0o400, 0o2000000]);
  });

  it('RegularFile.open refuses a file that is gone, changed size, was modified, or is no longer a file (ESTALE)', () => {
    const dir = fs.mkdtempSync(path.join(tmpDir(), 'reopen-'));
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, 'hello');
    const img = fileImage(p);
    const rf = new RegularFile();

    fs.writeFileSync(p, 'hello world');
    let e = thrown(() => rf.open(ctx, task(), img, []));
    expect(e.code).to.equal('ESTALE');
    expect(e.pid).to.equal(4321);
    expect(e.object).to.equal(`file ${p}`);
    expect(e.message).to.include('changed since the checkpoint: size 11 instead of 5');

    fs.writeFileSync(p, 'HELLO');
    fs.utimesSync(p, new Date(2001, 1, 1), new Date(2001, 1, 1));
    e = thrown(() => rf.open(ctx, task(), img, []));
    expect(e.code).to.equal('ESTALE');
    expect(e.message).to.include('modified after the checkpoint');

    fs.unlinkSync(p);
    e = thrown(() => rf.open(ctx, task(), img, []));
    expect(e.code).to.equal('ESTALE');
    expect(e.message).to.include('it is gone (ENOENT)');

    fs.mkdirSync(p);
    e = thrown(() => rf.open(ctx, task(), img, []));
    expect(e.message).to.include('no longer a regular file');
  });

  it('a deleted file whose image holds fewer bytes than its size is refused before anything is made', () => {
    const dir = fs.mkdtempSync(path.join(tmpDir(), 'reopen-'));
    const img = Object.assign(new FileImage(), { kind: 'regular', path: path.join(dir, 'was-deleted'), deleted: true, size: 10n, mode: 0o100600 });
    const e = thrown(() => new RegularFile().open(ctx, task(), img, [Buffer.from('12345')]));
    expect(e.code).to.equal('ESTALE');
    expect(e.message).to.include('the image holds 5 of its 10 bytes');
    expect(fs.readdirSync(dir)).to.deep.equal([]);
  });

  it('CharDevice.open refuses another device under the same name; Directory.open a directory that is gone', () => {
    const img = fileImage('/dev/null', { kind: 'chardev', rdev: linux.makeDev(1, 5) /* /dev/zero */ });
    const e = thrown(() => new CharDevice().open(ctx, task(), img));
    expect(e.code).to.equal('ESTALE');
    expect(e.message).to.include('it is not the same device');
    const gone = Object.assign(new FileImage(), { kind: 'chardev', path: '/dev/cptrst-no-such-device' });
    expect(thrown(() => new CharDevice().open(ctx, task(), gone)).message).to.include('the device node is gone');
    const dir = Object.assign(new FileImage(), { kind: 'directory', path: path.join(tmpDir(), 'no-such-dir') });
    const d = thrown(() => new Directory().open(ctx, task(), dir));
    expect(d.code).to.equal('ESTALE');
    expect(d.message).to.include('the directory is gone');
  });

  it('FILE_DATA and FD objects must belong to a FILE, and an FD must be in the FS fd list (EBADIMG)', () => {
    const t = task();
    const data: RestoreObject = { type: ObjectType.FILE_DATA, tag: 9, ptag: 8, offset: 640, obj: new FileDataImage() };
    let e = thrown(() => restoreFileObject(ctx, t, data));
    expect(e.code).to.equal('EBADIMG');
    expect(e.message).to.include('image offset 640');

    const fd = (n: number, ptag: number): RestoreObject => ({ type: ObjectType.FD, tag: 10, ptag, offset: 700, obj: Object.assign(new FdImage(), { fd: n }) });
    e = thrown(() => restoreFd(ctx, t, fd(3, 8)));
    expect(e.code).to.equal('EBADIMG');
    expect(e.object).to.equal('fd 3');

    t.state.set('files.fs', Object.assign(new FsImage(), { fds: [0, 1, 2] }));
    restoreFileObject(ctx, t, { type: ObjectType.FILE, tag: 8, ptag: 2, offset: 600, obj: fileImage('/dev/null', { kind: 'chardev' }) });
    restoreFileObject(ctx, t, { ...data }); // now it has its FILE
    e = thrown(() => restoreFd(ctx, t, fd(7, 8)));
    expect(e.code).to.equal('EBADIMG');
    expect(e.message).to.include('fd 7');
    expect(e.object).to.equal('fd 7');
  });
});
