/**
 * Open files of a real process (files_target.c): what openFiles sees, which kind handler claims
 * each, how dumpFiles groups fds that share an open file description (kcmp), what it writes for
 * a deleted file, and the refusal of what no handler claims (a pipe) or a handler refuses (a pty master held outside the tree).
 */
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { container, DependencyContainer } from 'tsyringe';
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ImageHead, ImageReader, ImageRecord, ImageWriter, MemorySink, ObjectType,
  RestoreHandler, TaskState, Tokens, Tracee, bufferSource, linux,
} from '@cptrst/core';
import {
  FdOwnerImage, FileDataImage, FileImage, FileKindHandler, FileLockImage, FdImage, FilesDump, FsImage, dumpFiles, dumpFs, findLocks, fsCheck, kindOfFile,
  openFiles, register,
} from '../src';
import { Started, compile, killStarted, removeTmpDir, startTarget, thrown, tmpDir, unusedTracee } from './support';

const { O } = linux;

interface Env {
  c: DependencyContainer;
  ctx: CheckpointContext;
  writer: ImageWriter;
  sink: MemorySink;
  task: CheckpointTask;
}

function env(pid: number): Env {
  const c = container.createChildContainer();
  register(c);
  const sink = new MemorySink();
  const writer = new ImageWriter(sink);
  writer.writeHead(new ImageHead());
  const ctx = new CheckpointContext(c, writer, 0);
  const tag = writer.writeRaw(ObjectType.TASK, Buffer.alloc(0));
  return { c, ctx, writer, sink, task: { pid, tid: pid, tracee: unusedTracee<Tracee>(), tag, state: new TaskState() } };
}

function readBack(e: Env): ImageRecord[] {
  e.writer.writeTerminator();
  const r = new ImageReader(bufferSource(e.sink.toBuffer()));
  r.readHead();
  const out: ImageRecord[] = [];
  for (let x = r.next(); x; x = r.next()) out.push(x);
  return out;
}

const fdOf = (t: Started, name: string): number => Number(t.vars[name]);

describe('files.locks: /proc/locks around the freeze', () => {
  it('with a signal, prepare returns a promise that settles once its read is done (nothing without one), and the check completes on the list frozen() started reading', async () => {
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const e = env(sleeper.pid!);
      const locks = e.c.resolveAll<DumpHandler>(Tokens.DumpHandler).find((h) => h.name === 'files.locks')!;
      expect(locks.prepare!(e.ctx, sleeper.pid!)).to.equal(undefined);
      e.ctx.signal = new AbortController().signal;
      const ready = locks.prepare!(e.ctx, sleeper.pid!);
      expect(ready).to.be.instanceOf(Promise);
      expect(await ready).to.equal(undefined);
      locks.frozen!(e.ctx);
      await locks.check!(e.ctx, e.task); // a process that holds no lock: nothing refused
    } finally {
      sleeper.kill('SIGKILL');
    }
  });
});

describe('files: open files of a real process', function () {
  this.timeout(30000);
  let bin: string;
  let dir: string;
  before(() => {
    bin = compile('files_target');
  });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(tmpDir(), 'files-'));
  });
  after(() => removeTmpDir());
  afterEach(() => killStarted());

  it('register() adds the regular, chardev, directory, removed directory, symlink, namespace file, event file, pidfd, pipe, FIFO, memfd, shmem file and unix socket kinds and the files handlers', () => {
    const c = container.createChildContainer();
    register(c);
    expect(c.resolveAll<FileKindHandler>(Tokens.FileKind).map((k) => k.kind)).to.deep.equal([
      'regular', 'chardev', 'directory', 'deleted-directory', 'symlink', 'nsfs', 'eventfd', 'epoll', 'signalfd', 'timerfd', 'inotify', 'fanotify', 'pidfd', 'pipe', 'fifo', 'memfd', 'shmem-file', 'unix-socket',
      'pty-master', 'pty-slave', 'devtty',
    ]);
    expect(c.resolveAll<DumpHandler>(Tokens.DumpHandler).map((d) => [d.name, d.order])).to.deep.equal([['files.scm-in-flight', 1], ['files', 300], ['files.locks', 310]]);
    expect(c.resolveAll<RestoreHandler>(Tokens.RestoreHandler).map((r) => [r.name, r.types])).to.deep.equal([
      ['files', [ObjectType.FS, ObjectType.FILE, ObjectType.FILE_DATA, ObjectType.FILE_CARRY, ObjectType.FD]],
      ['files.locks', [ObjectType.FILE_LOCK, ObjectType.FD_OWNER]],
      ['files.unix-connect', []],
      ['files.socket-queues', []],
      ['files.pidfd', []],
      ['files.unix-names', []],
      ['files.proc', []],
      ['files.tty', []],
      ['files.root', []],
      ['files.deleted-dirs', []],
    ]);
  });

  it('openFiles lists every fd with its link, fdinfo and stat; each is claimed by the right kind', async () => {
    const t = await startTarget(bin, [dir]);
    const e = env(t.pid);
    const files = openFiles(e.task);
    expect(files.map((f) => f.fd)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20]);
    expect(files.map((f) => f.fd)).to.deep.equal(linux.listFds(t.pid));
    const by = (name: string) => files.find((f) => f.fd === fdOf(t, name))!;
    const real = fs.realpathSync(dir);

    expect(by('plain').link).to.equal(`${real}/plain`);
    expect(by('plain').fdinfo.pos).to.equal(3n);
    expect(by('plain').fdinfo.flags & O.ACCMODE).to.equal(O.RDWR);
    expect(by('plain').fdinfo.flags & O.CLOEXEC).to.equal(0);
    expect(by('plain').stat.size).to.equal(10n);
    expect(by('plainDup').fdinfo.pos).to.equal(3n);
    expect(by('plainAgain').fdinfo.pos).to.equal(0n);
    expect(by('plainAgain').fdinfo.flags & O.ACCMODE).to.equal(O.RDONLY);
    expect(by('plainAgain').stat.ino).to.equal(by('plain').stat.ino);
    expect(by('log').fdinfo.flags & (O.ACCMODE | O.APPEND | O.CLOEXEC)).to.equal(O.WRONLY | O.APPEND | O.CLOEXEC);
    expect(by('null').link).to.equal('/dev/null');
    expect(by('null').stat.isCharacterDevice()).to.equal(true);
    expect(by('gone').link).to.equal(`${real}/gone (deleted)`);
    expect(by('gone').stat.nlink).to.equal(0n);
    expect(by('gone').stat.size).to.equal(100n);
    expect(by('dir').link).to.equal(real);
    expect(by('dir').stat.isDirectory()).to.equal(true);

    const kinds = Object.fromEntries(files.map((f) => [f.fd, kindOfFile(e.ctx, e.task, f).kind]));
    expect(kinds).to.deep.equal({
      0: 'chardev', 1: 'regular', 2: 'chardev',
      [fdOf(t, 'plain')]: 'regular', [fdOf(t, 'plainDup')]: 'regular', 20: 'regular', [fdOf(t, 'plainAgain')]: 'regular',
      [fdOf(t, 'log')]: 'regular', [fdOf(t, 'null')]: 'chardev', [fdOf(t, 'gone')]: 'regular', [fdOf(t, 'dir')]: 'directory',
    });
    // No two handlers claim the same file.
    const handlers = e.c.resolveAll<FileKindHandler>(Tokens.FileKind);
    for (const f of files) expect(handlers.filter((h) => h.claims(f)), `fd ${f.fd}`).to.have.length(1);
    // The whole check passes for this process.
    expect(() => new FilesDump().check(e.ctx, e.task)).to.not.throw();
  });

  it('dumpFiles writes one FILE per open file description, its fds under it (dup and dup2 grouped, a second open not)', async () => {
    const t = await startTarget(bin, [dir]);
    const e = env(t.pid);
    dumpFiles(e.ctx, e.task, openFiles(e.task));
    const recs = readBack(e).slice(1); // after the raw TASK object
    const fileRecs = recs.filter((r) => r.type === ObjectType.FILE);
    for (const r of recs) if (r.type === ObjectType.FILE) expect(r.ptag).to.equal(e.task.tag);
    const fdsOf = (r: ImageRecord) => recs.filter((x) => x.type === ObjectType.FD && x.ptag === r.tag).map((x) => (x.obj as FdImage).fd);
    const fileWithFd = (fd: number) => fileRecs.find((r) => fdsOf(r).includes(fd))!;
    const img = (r: ImageRecord) => r.obj as FileImage;

    // Every fd once, under exactly one FILE.
    const allFds = recs.filter((r) => r.type === ObjectType.FD).map((r) => (r.obj as FdImage).fd).sort((a, b) => a - b);
    expect(allFds).to.deep.equal(linux.listFds(t.pid));

    const plain = fileWithFd(fdOf(t, 'plain'));
    expect(fdsOf(plain)).to.deep.equal([fdOf(t, 'plain'), fdOf(t, 'plainDup'), 20]);
    expect(img(plain)).to.include({ kind: 'regular', path: `${fs.realpathSync(dir)}/plain`, pos: 3n, size: 10n, deleted: false });
    expect(img(plain).flags & O.ACCMODE).to.equal(O.RDWR);
    const again = fileWithFd(fdOf(t, 'plainAgain'));
    expect(again).to.not.equal(plain);
    expect(fdsOf(again)).to.deep.equal([fdOf(t, 'plainAgain')]);
    expect(img(again).inode).to.equal(img(plain).inode); // same file, another description
    expect(img(again).pos).to.equal(0n);

    const log = fileWithFd(fdOf(t, 'log'));
    expect(img(log).flags & ~O.LARGEFILE).to.equal(O.WRONLY | O.APPEND); // status flags kept, O_CLOEXEC is the fd's
    const logFd = recs.find((r) => r.type === ObjectType.FD && r.ptag === log.tag)!.obj as FdImage;
    expect(logFd.cloexec).to.equal(true);
    const plainFd = recs.find((r) => r.type === ObjectType.FD && r.ptag === plain.tag)!.obj as FdImage;
    expect(plainFd.cloexec).to.equal(false);

    const nul = fileWithFd(fdOf(t, 'null'));
    expect(img(nul)).to.include({ kind: 'chardev', path: '/dev/null', rdev: linux.makeDev(1, 3) });
    expect(img(fileWithFd(fdOf(t, 'dir')))).to.include({ kind: 'directory', path: fs.realpathSync(dir) });

    // The deleted file: its path without " (deleted)", and its contents in FILE_DATA.
    const gone = fileWithFd(fdOf(t, 'gone'));
    expect(img(gone)).to.include({ kind: 'regular', path: `${fs.realpathSync(dir)}/gone`, deleted: true, size: 100n, pos: 100n });
    const data = recs.filter((r) => r.type === ObjectType.FILE_DATA);
    expect(data).to.have.length(1);
    expect(data[0].ptag).to.equal(gone.tag);
    expect((data[0].obj as FileDataImage).offset).to.equal(0n);
    const expected = Buffer.from(Array.from({ length: 100 }, (_v, i) => 65 + (i % 26)));
    expect((data[0].obj as FileDataImage).data).to.deep.equal(expected);
  });

  it('dumpFs writes cwd, root, umask and the fd list', async () => {
    const t = await startTarget(bin, [dir]);
    const e = env(t.pid);
    expect(() => fsCheck(e.task)).to.not.throw();
    const fds = linux.listFds(t.pid);
    dumpFs(e.ctx, e.task, fds);
    const recs = readBack(e).filter((r) => r.type === ObjectType.FS);
    expect(recs).to.have.length(1);
    const fsImg = recs[0].obj as FsImage;
    expect(fsImg.cwd).to.equal(fs.realpathSync(dir));
    expect(fsImg.root).to.equal('/');
    expect(fsImg.umask).to.equal(linux.readStatus(process.pid).umask);
    expect(fsImg.fds).to.deep.equal(fds);
  });

  it('a pipe with both ends in the process is claimed by the pipe kind; a userfaultfd by no handler: EOPNOTSUPP naming the fd, before anything is written', async () => {
    const t = await startTarget(bin, [dir, 'pipe']);
    const e = env(t.pid);
    const files = openFiles(e.task);
    const pr = files.find((f) => f.fd === fdOf(t, 'pipeRead'))!;
    expect(pr.link).to.match(/^pipe:\[\d+\]$/);
    expect(pr.stat.isFIFO()).to.equal(true);
    expect(kindOfFile(e.ctx, e.task, pr).kind).to.equal('pipe');
    const pf = files.find((f) => f.fd === fdOf(t, 'uffd'))!;
    const err = thrown(() => kindOfFile(e.ctx, e.task, pf));
    expect(err).to.be.instanceOf(CptError);
    expect(err.code).to.equal('EOPNOTSUPP');
    expect(err.pid).to.equal(t.pid);
    expect(err.object).to.equal(`fd ${pf.fd} (${pf.link})`);
    expect(err.message).to.include('no handler');
    // The check finds it too (the first unclaimed fd), and so would the dump.
    const before = e.sink.toBuffer().length;
    const chk = thrown(() => new FilesDump().check(e.ctx, e.task));
    expect(chk.code).to.equal('EOPNOTSUPP');
    expect(chk.object).to.equal(`fd ${pf.fd} (${pf.link})`);
    expect(e.sink.toBuffer().length).to.equal(before);
  });
  it('a memfd is claimed by the memfd kind, above the regular kind', async () => {
    const t = await startTarget(bin, [dir, 'memfd']);
    const e = env(t.pid);
    const m = openFiles(e.task).find((f) => f.fd === fdOf(t, 'memfd'))!;
    expect(m.link).to.equal('/memfd:cptrst-test (deleted)');
    expect(kindOfFile(e.ctx, e.task, m).kind).to.equal('memfd');
  });
  it('a pty master is claimed by the pty-master kind, which refuses it while a holder is outside the tree (the target: nothing froze it), naming the fd', async () => {
    const t = await startTarget(bin, [dir, 'tty']);
    const e = env(t.pid);
    const f = openFiles(e.task).find((x) => x.fd === fdOf(t, 'ptmx'))!;
    expect(f.stat.isCharacterDevice()).to.equal(true);
    expect(linux.devMajor(f.stat.rdev)).to.equal(5);
    expect(kindOfFile(e.ctx, e.task, f).kind).to.equal('pty-master');
    const err = thrown(() => new FilesDump().check(e.ctx, e.task));
    expect(err.code).to.equal('EOPNOTSUPP');
    expect(err.pid).to.equal(t.pid);
    expect(err.object).to.equal(`fd ${f.fd} (${f.link})`);
    expect(err.message).to.match(new RegExp(`^pty \\d+ is also open in process ${t.pid} \\(fd ${f.fd}\\), outside the checkpointed tree`));
  });
  it('parseLockLine reads fdinfo and /proc/locks lines (held locks, waiters, leases); anything else is undefined', () => {
    expect(linux.parseLockLine('lock:\t1: FLOCK  ADVISORY  WRITE 9661 fe:00:2146978 0 EOF')).to.deep.include({
      kind: 'FLOCK', mode: 'ADVISORY', access: 'WRITE', pid: 9661, major: 0xfe, minor: 0, ino: 2146978n, waiter: false,
    });
    expect(linux.parseLockLine('1: OFDLCK ADVISORY  READ -1 00:1f:12 0 EOF')).to.deep.include({ kind: 'OFDLCK', pid: -1, minor: 0x1f, ino: 12n });
    expect(linux.parseLockLine('2: -> POSIX  ADVISORY  WRITE 77 08:01:5 0 99')).to.deep.include({ kind: 'POSIX', waiter: true, pid: 77, major: 8, minor: 1, start: 0n, end: 99n });
    expect(linux.parseLockLine('lock:\t3: POSIX  ADVISORY  READ 77 08:01:5 200 EOF')).to.deep.include({ start: 200n, end: undefined });
    expect(linux.parseLockLine('lock:\t1: LEASE  ACTIVE    READ 5 fe:00:3 0 EOF')).to.deep.include({ kind: 'LEASE', mode: 'ACTIVE', access: 'READ' });
    expect(linux.parseLockLine('pos:\t0')).to.equal(undefined);
    const shm = '       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n' +
      '-1828667366          3  1600                 40960 10090 10091      2  1000  1001     0     0          0 1795982300 1795982300                 40960                     0\n';
    expect(linux.parseSysvShm(shm)).to.deep.equal([{ key: -1828667366, id: 3, mode: 0o1600, size: 40960n, cpid: 10090, lpid: 10091, nattch: 2, uid: 1000, gid: 1001, cuid: 0, cgid: 0 }]);
    expect(linux.parseSysvSem('       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n 486596686          6   777         10     0     0     0     0          0 1795993565\n'))
      .to.deep.equal([{ key: 486596686, id: 6, mode: 0o777, nsems: 10, uid: 0, gid: 0, cuid: 0, cgid: 0, otime: 0n, ctime: 1795993565n }]);
    const msg = '       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n' +
      '-2113879534          0   620          42          2 16700    12  1000  1001     0     0 1795992717          0 1795992718\n';
    expect(linux.parseSysvMsg(msg)).to.deep.equal([{
      key: -2113879534, id: 0, mode: 0o620, cbytes: 42, qnum: 2, lspid: 16700, lrpid: 12, uid: 1000, gid: 1001, cuid: 0, cgid: 0, stime: 1795992717n, rtime: 0n, ctime: 1795992718n,
    }]);
    expect(linux.parseLockLine('')).to.equal(undefined);
  });

  const kept: Array<[string, string, (r: { locks: FileLockImage[]; owners: FdOwnerImage[] }, fd: number, pid: number) => void]> = [
    ['flock', 'locked', (r, fd) => expect(r.locks.map((l) => ({ ...l }))).to.deep.equal([{ kind: 'FLOCK', fd, type: linux.F.WRLCK, start: 0n, len: 0n, breakTo: -1 }])],
    ['posix', 'locked', (r, fd) => expect(r.locks.map((l) => ({ ...l }))).to.deep.equal([{ kind: 'POSIX', fd, type: linux.F.WRLCK, start: 0n, len: 0n, breakTo: -1 }])],
    ['ofd', 'locked', (r, fd) => expect(r.locks.map((l) => ({ ...l }))).to.deep.equal([{ kind: 'OFDLCK', fd, type: linux.F.WRLCK, start: 0n, len: 0n, breakTo: -1 }])],
    ['lease', 'locked', (r, fd) => expect(r.locks.map((l) => ({ ...l }))).to.deep.equal([{ kind: 'LEASE', fd, type: linux.F.RDLCK, start: 0n, len: 0n, breakTo: -1 }])],
    ['setown', 'owned', (r, fd, pid) => expect(r.owners.map((o) => ({ ...o }))).to.deep.equal([{ fd, ownerType: linux.F.OWNER_PID, ownerPid: pid, signo: 0 }])],
    ['setsig', 'owned', (r, fd) => expect(r.owners.map((o) => ({ ...o }))).to.deep.equal([{ fd, ownerType: 0, ownerPid: 0, signo: 10 }])],
  ];
  for (const [mode, name, check] of kept) {
    it(`${mode}: found by the locks check, with the fd to take it again through`, async () => {
      const t = await startTarget(bin, [dir, mode]);
      const e = env(t.pid);
      check(findLocks(e.task, openFiles(e.task)), fdOf(t, name), t.pid);
    });
  }

  it('a sparse deleted file: only its data runs are written, each with its offset', async () => {
    const t = await startTarget(bin, [dir, 'sparse']);
    const e = env(t.pid);
    const files = openFiles(e.task);
    new FilesDump().check(e.ctx, e.task);
    dumpFiles(e.ctx, e.task, files);
    const recs = readBack(e).slice(1);
    const sparse = recs.find((r) => r.type === ObjectType.FILE && (r.obj as FileImage).path.endsWith('/sparse'))!;
    expect(sparse.obj).to.include({ deleted: true, size: 1048576n, sameAs: 0 });
    const runs = recs.filter((r) => r.type === ObjectType.FILE_DATA && r.ptag === sparse.tag).map((r) => r.obj as FileDataImage);
    expect(runs.map((d) => [d.offset, d.data.length])).to.deep.equal([[65536n, 4096], [524288n, 4096]]);
    expect(runs.every((d) => d.data.every((b) => b === 0x78))).to.equal(true);
    expect((sparse.obj as FileImage).mode & 0o7777).to.equal(0o640);
    expect((sparse.obj as FileImage).uid).to.equal(0);
  });

  it('a deleted file opened twice: the second FILE names the first (sameAs) and carries no data', async () => {
    const t = await startTarget(bin, [dir, 'twice']);
    const e = env(t.pid);
    dumpFiles(e.ctx, e.task, openFiles(e.task));
    const recs = readBack(e).slice(1);
    const gones = recs.filter((r) => r.type === ObjectType.FILE && (r.obj as FileImage).deleted);
    expect(gones).to.have.length(2);
    expect((gones[0].obj as FileImage).sameAs).to.equal(0);
    expect((gones[1].obj as FileImage).sameAs).to.equal(gones[0].tag);
    expect(recs.filter((r) => r.type === ObjectType.FILE_DATA).map((r) => r.ptag)).to.deep.equal([gones[0].tag]);
  });
});
