/**
 * Restart side of files, in a real ptrace-stopped process (a frozen /bin/sleep stands for the
 * restored task): what is opened, with which flags and offset; what is refused (another file, a
 * symlink in the way, a path with "..", an untrusted owner); deleted files made again without a
 * name, with their holes, owner, mode and times; and the checks of FILE / FILE_DATA / FD objects.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { ObjectType, RecordList, RestartContext, RestoreObject, deletedFileMode, finishDeletedFiles, linux } from '@cptrst/core';
import {
  CharDevice, Directory, FS_KEY, FdImage, FileDataImage, FileImage, FsImage, OpenRequest, RegularFile, reopenFlags, restoreFd,
  register, restoreFileObject, restoreFs,
} from '../src';
import { Frozen, frozenSleeper, restartContext } from './frozen';
import { killStarted, removeTmpDir, thrown, tmpDir } from './support';

const { O, SEEK, SYS } = linux;

function fileImage(p: string, over: Partial<FileImage> = {}): FileImage {
  const st = fs.statSync(p, { bigint: true });
  return Object.assign(new FileImage(), {
    kind: 'regular', path: p, flags: O.RDWR, size: st.size, mtimeNs: st.mtimeNs, atimeNs: st.atimeNs, rdev: st.rdev, inode: st.ino, dev: st.dev,
    mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid),
  }, over);
}
/** The data runs of a deleted file, as the files restore hands them to the kind: FILE_DATA records under its FILE. */
function dataRecords(data: FileDataImage[]): RecordList {
  const l = new RecordList();
  data.forEach((obj, i) => l.all.push({ type: ObjectType.FILE_DATA, tag: 11 + i, ptag: 10, offset: 0, obj }));
  return l;
}
const req = ({ data = [], ...over }: Partial<OpenRequest> & { data?: FileDataImage[] } = {}): OpenRequest =>
  ({ tag: 10, object: 'fd 3 (test)', records: dataRecords(data), above: 100, ...over });
const fdStat = (pid: number, fd: bigint | number) => fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
const fds = (pid: number) => linux.listFds(pid);
const data = (offset: number, text: string, len: number): FileDataImage =>
  Object.assign(new FileDataImage(), { offset: BigInt(offset), data: Buffer.alloc(len, text) });

describe('files: reopening at restart, inside a real stopped process', function () {
  this.timeout(30000);
  let fz: Frozen;
  let dir: string;
  let ctx: RestartContext;
  beforeEach(async () => {
    fz = await frozenSleeper();
    dir = fs.realpathSync(fs.mkdtempSync(path.join(tmpDir(), 'reopen-')));
    ctx = restartContext();
  });
  afterEach(async () => {
    fz.kill();
    await killStarted();
  });
  after(() => removeTmpDir());

  it('reopenFlags keeps the access mode and status flags; O_PATH keeps what O_PATH allows; O_TMPFILE bits go', () => {
    expect(reopenFlags(O.RDWR | O.CREAT | O.TRUNC | O.CLOEXEC)).to.equal(O.RDWR);
    expect(reopenFlags(O.WRONLY | O.APPEND | O.CREAT | O.EXCL)).to.equal(O.WRONLY | O.APPEND);
    expect(reopenFlags(O.RDONLY | O.NOCTTY | O.NONBLOCK)).to.equal(O.NONBLOCK);
    expect(reopenFlags(O.RDWR | O.APPEND | O.NONBLOCK | O.LARGEFILE | O.NOATIME | O.DIRECT)).to.equal(O.RDWR | O.APPEND | O.NONBLOCK | O.LARGEFILE | O.NOATIME | O.DIRECT);
    expect(reopenFlags(O.DIRECTORY | O.CLOEXEC)).to.equal(O.DIRECTORY);
    expect(reopenFlags(O.PATH | O.LARGEFILE | O.NOFOLLOW | O.CLOEXEC)).to.equal(O.PATH | O.NOFOLLOW);
    expect(reopenFlags(O.RDWR | O.TMPFILE | O.LARGEFILE)).to.equal(O.RDWR | O.LARGEFILE);
  });

  it('a regular file is opened inside the task with its flags and offset; O_PATH as O_PATH', () => {
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, '0123456789');
    const fd = new RegularFile().open(ctx, fz.task, fileImage(p, { flags: O.RDWR | O.APPEND, pos: 3n }), req());
    const info = linux.readFdinfo(fz.task.pid, Number(fd));
    expect(info.flags & (O.ACCMODE | O.APPEND)).to.equal(O.RDWR | O.APPEND);
    expect(info.pos).to.equal(3n);
    expect(fdStat(fz.task.pid, fd).ino).to.equal(fs.statSync(p, { bigint: true }).ino);
    const opath = new RegularFile().open(ctx, fz.task, fileImage(p, { flags: O.PATH | O.LARGEFILE }), req());
    expect(linux.readFdinfo(fz.task.pid, Number(opath)).flags & (O.PATH | O.ACCMODE)).to.equal(O.PATH);
  });

  it('refuses another file under the name: size, mtime, inode (same boot), kind, gone; the fd is closed again', () => {
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, 'hello');
    const img = fileImage(p);
    const rf = new RegularFile();
    const before = fds(fz.task.pid);
    const fail = (code: string, text: string, c: RestartContext = ctx) => {
      const e = thrown(() => rf.open(c, fz.task, img, req()));
      expect(e.code, e.message).to.equal(code);
      expect(e.pid).to.equal(fz.task.pid);
      expect(e.object).to.equal('fd 3 (test)');
      expect(e.message).to.include(text);
      expect(fds(fz.task.pid)).to.deep.equal(before);
    };
    fs.writeFileSync(p, 'hello world');
    fail('ESTALE', 'size 11 instead of 5');
    fs.writeFileSync(p, 'HELLO');
    fs.utimesSync(p, new Date(2001, 1, 1), new Date(2001, 1, 1));
    fail('ESTALE', 'modified at 2001');
    // Same size and mtime, but another inode: only on the same boot can that be told.
    fs.writeFileSync(`${p}.new`, 'hello'); // made while the old one exists: another inode number
    const mt = img.mtimeNs;
    execFileSync('touch', ['-m', '-d', `@${mt / 1000000000n}.${String(mt % 1000000000n).padStart(9, '0')}`, `${p}.new`]);
    fs.renameSync(`${p}.new`, p);
    fail('ESTALE', `inode ${fs.statSync(p).ino}, not ${img.inode}`);
    const otherBoot = restartContext({ sameBoot: false });
    expect(fdStat(fz.task.pid, rf.open(otherBoot, fz.task, img, req())).ino).to.not.equal(img.inode);
    const opened = fds(fz.task.pid);
    fs.unlinkSync(p);
    const e = thrown(() => rf.open(ctx, fz.task, img, req()));
    expect(e.code).to.equal('ENOENT');
    fs.mkdirSync(p);
    expect(thrown(() => rf.open(ctx, fz.task, img, req())).code).to.equal('EISDIR'); // O_RDWR on a directory
    const d = thrown(() => rf.open(ctx, fz.task, Object.assign(new FileImage(), img, { flags: O.RDONLY }), req()));
    expect(d.code).to.equal('ESTALE');
    expect(d.message).to.include('it is a directory, not a regular file');
    expect(fds(fz.task.pid)).to.deep.equal(opened);
  });

  it('a symlink in the way is refused (ELOOP), at the end or on the path; a path with ".." is EBADIMG', () => {
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'root only');
    fs.chmodSync(secret, 0o600);
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, 'root only');
    const img = fileImage(p);
    fs.unlinkSync(p);
    fs.symlinkSync(secret, p);
    const before = fds(fz.task.pid);
    const e = thrown(() => new RegularFile().open(ctx, fz.task, img, req()));
    expect(e.code).to.equal('ELOOP');
    expect(e.message).to.include('a symlink is in the way');
    fs.mkdirSync(path.join(dir, 'real'));
    fs.writeFileSync(path.join(dir, 'real', 'g'), 'x');
    fs.symlinkSync(path.join(dir, 'real'), path.join(dir, 'link'));
    const viaLink = fileImage(path.join(dir, 'real', 'g'), { path: path.join(dir, 'link', 'g') });
    expect(thrown(() => new RegularFile().open(ctx, fz.task, viaLink, req())).code).to.equal('ELOOP');
    const dots = fileImage(path.join(dir, 'real', 'g'), { path: `${dir}/real/../real/g` });
    const b = thrown(() => new RegularFile().open(ctx, fz.task, dots, req()));
    expect(b.code).to.equal('EBADIMG');
    expect(b.message).to.include('".." component');
    expect(fds(fz.task.pid)).to.deep.equal(before);
  });

  it('a character device must have the recorded device number; a directory is reopened, O_PATH too', () => {
    const bad = thrown(() => new CharDevice().open(ctx, fz.task, fileImage('/dev/null', { kind: 'chardev', rdev: linux.makeDev(1, 5) }), req()));
    expect(bad.code).to.equal('ESTALE');
    expect(bad.message).to.include('device number');
    const nul = new CharDevice().open(ctx, fz.task, fileImage('/dev/null', { kind: 'chardev' }), req());
    expect(fdStat(fz.task.pid, nul).rdev).to.equal(linux.makeDev(1, 3));
    const d = new Directory().open(ctx, fz.task, fileImage(dir, { kind: 'directory', flags: O.PATH | O.DIRECTORY }), req());
    expect(linux.readFdinfo(fz.task.pid, Number(d)).flags & O.PATH).to.equal(O.PATH);
    const gone = fileImage(dir, { kind: 'directory', path: path.join(dir, 'no-such-dir') });
    expect(thrown(() => new Directory().open(ctx, fz.task, gone, req())).code).to.equal('ENOENT');
  });

  it('a deleted file is made again with no name: contents with their holes, flags, offset; then owner, mode (no setuid on an executable), times', () => {
    const p = path.join(dir, 'ghost');
    const MiB = 1024 * 1024;
    const img = Object.assign(new FileImage(), {
      kind: 'regular', path: p, deleted: true, flags: O.RDONLY, pos: 5n, size: BigInt(MiB), mode: 0o104755, uid: 65534, gid: 65534,
      dev: fs.statSync(dir, { bigint: true }).dev, mtimeNs: 1234567890123456789n, atimeNs: 1000000000000000001n,
    });
    const before = fds(fz.task.pid);
    const fd = new RegularFile().open(ctx, fz.task, img, req({ data: [data(65536, 'x', 4096), data(512 * 1024, 'y', 4096)] }));
    expect(fs.readdirSync(dir), 'nothing has a name').to.deep.equal([]);
    const st = fdStat(fz.task.pid, fd);
    expect(st.nlink).to.equal(0n);
    expect(st.size).to.equal(BigInt(MiB));
    expect(st.dev).to.equal(img.dev);
    const info = linux.readFdinfo(fz.task.pid, Number(fd));
    expect(info.flags & O.ACCMODE).to.equal(O.RDONLY);
    expect(info.pos).to.equal(5n);
    // Contents and holes, read through the task's fd.
    const r = fs.openSync(`/proc/${fz.task.pid}/fd/${fd}`, 'r');
    try {
      const all = Buffer.alloc(MiB);
      expect(fs.readSync(r, all, 0, MiB, 0)).to.equal(MiB);
      expect(all.subarray(65536, 65536 + 4096).equals(Buffer.alloc(4096, 'x'))).to.equal(true);
      expect(all.subarray(512 * 1024, 512 * 1024 + 4096).equals(Buffer.alloc(4096, 'y'))).to.equal(true);
      const zeros = Buffer.concat([all.subarray(0, 65536), all.subarray(65536 + 4096, 512 * 1024), all.subarray(512 * 1024 + 4096)]);
      expect(zeros.every((b) => b === 0)).to.equal(true);
      expect(linux.rawSyscall(SYS.lseek, r, 0, SEEK.DATA)).to.equal(65536n);
      expect(linux.rawSyscall(SYS.lseek, r, 65536, SEEK.HOLE)).to.equal(65536n + 4096n);
      expect(linux.rawSyscall(SYS.lseek, r, 70000, SEEK.DATA)).to.equal(512n * 1024n);
      expect(linux.rawSyscall(SYS.lseek, r, 512 * 1024, SEEK.HOLE)).to.equal(512n * 1024n + 4096n);
    } finally {
      fs.closeSync(r);
    }
    // The creating descriptor sits above the image's fds until the end of the files restore.
    expect(fds(fz.task.pid).filter((n) => !before.includes(n)).length).to.equal(2);
    finishDeletedFiles(ctx, fz.task);
    expect(fds(fz.task.pid).filter((n) => !before.includes(n))).to.deep.equal([Number(fd)]);
    const after = fdStat(fz.task.pid, fd);
    expect(Number(after.mode) & 0o7777).to.equal(0o755);
    expect([after.uid, after.gid]).to.deep.equal([65534n, 65534n]);
    expect(after.mtimeNs).to.equal(img.mtimeNs);
    expect(after.atimeNs).to.equal(img.atimeNs);
    expect(fs.readdirSync(dir)).to.deep.equal([]);
  });

  it('an untrusted image: the deleted file stays the task\'s; the task itself writes it and sets its mode and times', () => {
    const untrusted = restartContext({ owner: 65534 });
    const p = path.join(dir, 'ghost');
    const img = Object.assign(new FileImage(), {
      kind: 'regular', path: p, deleted: true, flags: O.RDWR, size: 300000n, mode: 0o100640, uid: 65534, gid: 65534,
      mtimeNs: 1500000000000000007n, atimeNs: 1500000000000000003n,
    });
    // More than the scratch area holds: written by the task in several pieces.
    const big = Buffer.from(Array.from({ length: 200000 }, (_v, i) => (i * 7) % 251));
    const run = Object.assign(new FileDataImage(), { offset: 4096n, data: big });
    const fd = new RegularFile().open(untrusted, fz.task, img, req({ data: [run] }));
    const back = fs.readFileSync(`/proc/${fz.task.pid}/fd/${fd}`);
    expect(back.length).to.equal(300000);
    expect(back.subarray(4096, 4096 + 200000).equals(big)).to.equal(true);
    expect(back.subarray(0, 4096).every((b) => b === 0) && back.subarray(204096).every((b) => b === 0)).to.equal(true);
    finishDeletedFiles(untrusted, fz.task);
    const st = fdStat(fz.task.pid, fd);
    expect(Number(st.mode) & 0o7777).to.equal(0o640);
    expect(st.uid).to.equal(0n); // the task's fsuid here (a frozen root process), not the recorded 65534
    expect([st.mtimeNs, st.atimeNs]).to.deep.equal([img.mtimeNs, img.atimeNs]);
    expect(fs.readdirSync(dir)).to.deep.equal([]);
  });

  it('deletedFileMode: setuid and setgid go from an executable file, and stay on one that cannot be executed', () => {
    expect(deletedFileMode(0o104755)).to.equal(0o755);
    expect(deletedFileMode(0o102711)).to.equal(0o711);
    expect(deletedFileMode(0o106001)).to.equal(0o0001);
    expect(deletedFileMode(0o106604)).to.equal(0o6604);
    expect(deletedFileMode(0o101644)).to.equal(0o1644);
  });

  it('a deleted file opened twice (sameAs) is one inode again, with two open file descriptions', () => {
    const p = path.join(dir, 'ghost');
    const base = { kind: 'regular', path: p, deleted: true, size: 10n, mode: 0o100600, dev: fs.statSync(dir, { bigint: true }).dev };
    const first = Object.assign(new FileImage(), base, { flags: O.RDWR, pos: 2n });
    const second = Object.assign(new FileImage(), base, { flags: O.RDONLY, pos: 7n, sameAs: 10 });
    const a = new RegularFile().open(ctx, fz.task, first, req({ tag: 10, data: [data(0, 'z', 10)] }));
    const b = new RegularFile().open(ctx, fz.task, second, req({ tag: 11 }));
    expect(fdStat(fz.task.pid, a).ino).to.equal(fdStat(fz.task.pid, b).ino);
    expect(linux.readFdinfo(fz.task.pid, Number(a)).pos).to.equal(2n);
    expect(linux.readFdinfo(fz.task.pid, Number(b)).pos).to.equal(7n);
    expect(linux.kcmp(fz.task.pid, fz.task.pid, linux.KCMP.FILE, a, b)).to.not.equal(0);
    const orphan = Object.assign(new FileImage(), base, { sameAs: 99 });
    expect(thrown(() => new RegularFile().open(ctx, fz.task, orphan, req({ tag: 12 }))).code).to.equal('EBADIMG');
  });

  it('deleted files from an untrusted image: another uid is EPERM naming both; a path with ".." is EBADIMG; nothing is made', () => {
    const untrusted = restartContext({ owner: 65534 });
    expect(untrusted.imageTrusted).to.equal(false);
    const before = fds(fz.task.pid);
    const img = Object.assign(new FileImage(), { kind: 'regular', path: path.join(dir, 'ghost'), deleted: true, size: 1n, mode: 0o100600, uid: 0 });
    const e = thrown(() => new RegularFile().open(untrusted, fz.task, img, req({ data: [data(0, 'a', 1)] })));
    expect(e.code).to.equal('EPERM');
    expect(e.object).to.equal('fd 3 (test)');
    expect(e.message).to.include('uid 0').and.include('uid 65534');
    const dots = Object.assign(new FileImage(), img, { path: `${dir}/../${path.basename(dir)}/ghost`, uid: 65534 });
    expect(thrown(() => new RegularFile().open(untrusted, fz.task, dots, req())).code).to.equal('EBADIMG');
    expect(fds(fz.task.pid)).to.deep.equal(before);
    expect(fs.readdirSync(dir)).to.deep.equal([]);
  });

  it('restoreFs: cwd through an O_PATH open and fchdir, umask; a symlinked cwd is ELOOP; an untrusted image is refused while the task is root', () => {
    const fsImg = Object.assign(new FsImage(), { cwd: dir, umask: 0o027, fds: [0, 1, 2], cwdDev: fs.statSync(dir, { bigint: true }).dev, cwdIno: fs.statSync(dir, { bigint: true }).ino });
    const o = (obj: object): RestoreObject => ({ type: ObjectType.FS, tag: 3, ptag: 2, offset: 100, obj });
    restoreFs(ctx, fz.task, o(fsImg));
    expect(fs.readlinkSync(`/proc/${fz.task.pid}/cwd`)).to.equal(dir);
    expect(linux.readStatus(fz.task.pid).umask).to.equal(0o027);
    expect(fds(fz.task.pid)).to.deep.equal([]);
    fs.symlinkSync(dir, path.join(tmpDir(), `cwdlink-${process.pid}`));
    const viaLink = Object.assign(new FsImage(), fsImg, { cwd: path.join(tmpDir(), `cwdlink-${process.pid}`) });
    expect(thrown(() => restoreFs(ctx, fz.task, o(viaLink))).code).to.equal('ELOOP');
    const e = thrown(() => restoreFs(restartContext({ owner: 65534 }), fz.task, o(fsImg)));
    expect(e.code).to.equal('EPERM');
    expect(e.message).to.include('uid 65534').and.include('fsuid 0');
  });

  it('FILE_DATA must belong to a deleted FILE, in order, inside its size, before its fds; an FD must be in the FS fd list (EBADIMG)', () => {
    const t = fz.task;
    register(ctx.container);
    const at = (o: Partial<RestoreObject>): RestoreObject => ({ type: ObjectType.FILE_DATA, tag: 9, ptag: 8, offset: 640, obj: new FileDataImage(), ...o });
    let e = thrown(() => restoreFileObject(ctx, t, at({})));
    expect(e.code).to.equal('EBADIMG');
    expect(e.message).to.include('image offset 640');
    const ghost = Object.assign(new FileImage(), { kind: 'regular', path: path.join(dir, 'g'), deleted: true, size: 100n, mode: 0o100600 });
    restoreFileObject(ctx, t, { type: ObjectType.FILE, tag: 8, ptag: 2, offset: 600, obj: ghost });
    restoreFileObject(ctx, t, at({ obj: data(10, 'a', 20) }));
    expect(thrown(() => restoreFileObject(ctx, t, at({ obj: data(20, 'b', 5) }))).message).to.include('overlaps');
    expect(thrown(() => restoreFileObject(ctx, t, at({ obj: data(90, 'b', 20) }))).message).to.include('beyond the size 100');
    restoreFileObject(ctx, t, { type: ObjectType.FILE, tag: 12, ptag: 2, offset: 700, obj: fileImage('/dev/null', { kind: 'chardev' }) });
    expect(thrown(() => restoreFileObject(ctx, t, at({ ptag: 12, obj: data(0, 'a', 1) }))).message).to.include('no contents of its own');

    const fd = (n: number, ptag: number): RestoreObject => ({ type: ObjectType.FD, tag: 10, ptag, offset: 700, obj: Object.assign(new FdImage(), { fd: n }) });
    e = thrown(() => restoreFd(ctx, t, fd(3, 8)));
    expect(e.code).to.equal('EBADIMG');
    expect(e.object).to.equal('fd 3');
    t.state.set(FS_KEY, Object.assign(new FsImage(), { fds: [0, 1, 2] }));
    e = thrown(() => restoreFd(ctx, t, fd(7, 12)));
    expect(e.code).to.equal('EBADIMG');
    expect(e.object).to.equal('fd 7');
    // The ghost is made at its first fd; data arriving after that is refused.
    restoreFd(ctx, t, fd(1, 8));
    expect(fdStat(t.pid, 1).size).to.equal(100n);
    expect(thrown(() => restoreFileObject(ctx, t, at({ obj: data(50, 'c', 1) }))).message).to.include("after the file's fds");
  });
});
