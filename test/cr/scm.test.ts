/**
 * Descriptors in flight (SCM_RIGHTS) and credentials (SCM_CREDENTIALS) in unix socket queues: the
 * scm workload (a parent and its child passing a pipe, a file, a memfd, a shared pipe end and a
 * socket with its own queue) checks each file after a restart; a checkpoint that lets the tree
 * run, or that fails after the dump, leaves the queue and the fd table as they were; what cannot
 * be restored faithfully (descriptors in flight on a stream socket, a socket in flight that
 * carries descriptors itself) is refused, naming the fd and why, and the process keeps it all.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, buildWorkloads, cptrst, expectPass, failAfterDump, killByPid, killStartedWorkloads, makeTempDir, parseResult, passLines, recodeImage, sleep, startWorkload,
  trigger, waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;

/** Runs a python3 script detached, output to <dir>/out; waits for its READY line. */
async function startPython(dir: string, script: string, args: string[] = []): Promise<number> {
  const out = path.join(dir, 'out');
  const ofd = fs.openSync(out, 'a');
  const child = spawn('python3', ['-c', script, ...args], { stdio: ['ignore', ofd, ofd], detached: true });
  fs.closeSync(ofd);
  child.unref();
  for (let i = 0; i < 1000 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
  expect(fs.readFileSync(out, 'utf8')).to.include('READY');
  return child.pid!;
}

/** Its fd table, its queue: what the script checks after the trigger (the fds listed before and after must be the same). */
const PY_CHECK = [
  'def fds(): return sorted(int(x) for x in os.listdir("/proc/self/fd"))',
  'before=fds()',
  'print("READY",flush=True)',
  'while not os.path.exists(sys.argv[1]): time.sleep(0.01)',
  'after=fds()',
];

/** Refused at checkpoint (one line, naming the process, the object and `what`); the script then checks everything is still there. */
async function expectRefusedAndKept(script: string, what: RegExp, object = 'fd \\d+ \\(socket:\\[\\d+\\]\\)'): Promise<void> {
  const dir = makeTempDir('scm-refused');
  const trig = path.join(dir, 'go');
  const pid = await startPython(dir, script, [trig]);
  try {
    const r = await cptrst(['checkpoint', String(pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, ${object}: `)).and.match(what);
    fs.writeFileSync(trig, '');
    expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
    expect(fs.readFileSync(path.join(dir, 'out'), 'utf8')).to.equal('READY\nPASS\n');
  } finally {
    await killByPid(pid);
  }
}

describe('descriptors in flight and credentials in unix socket queues', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  itRestoresWorkload('scm', 'a pipe, a file, a memfd, a shared pipe end and a socket in flight, with credentials', { args: () => [makeTempDir('scm')] });

  it('a checkpoint that lets the tree run leaves no descriptor behind and the queue whole', async () => {
    const w = await startWorkload('scm', [makeTempDir('scm')]);
    const r = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'i.cpt')]);
    expect(r.code, r.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('a checkpoint that fails after the dump leaves the queue and the fd table exactly as before', async () => {
    const w = await startWorkload('scm', [makeTempDir('scm')]);
    await failAfterDump(w);
    await trigger(w);
    await expectPass(w);
  });

  it('one process, checkpointed while it runs on (a snapshot): its descriptors in flight are closed again before it goes on', async () => {
    const dir = makeTempDir('scm-snap');
    const trig = path.join(dir, 'go');
    const script = [
      'import os,socket,sys,time',
      'a,b=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'r,w=os.pipe()',
      'os.write(w,b"in flight")',
      'socket.send_fds(a,[b"m"],[r,w])',
      'os.close(r); os.close(w)',
      ...PY_CHECK,
      'msg,got,_,_=socket.recv_fds(b,10,4)',
      'ok=after==before and msg==b"m" and len(got)==2 and os.read(got[0],100)==b"in flight"',
      'print("PASS" if ok else "FAIL %r %r %r %r"%(before,after,msg,got),flush=True)',
    ].join('\n');
    const pid = await startPython(dir, script, [trig]);
    try {
      const r = await cptrst(['checkpoint', String(pid), '-o', path.join(dir, 'i.cpt')]);
      expect(r.code, r.stderr).to.equal(0);
      fs.writeFileSync(trig, '');
      expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
      expect(fs.readFileSync(path.join(dir, 'out'), 'utf8')).to.equal('READY\nPASS\n');
    } finally {
      await killByPid(pid);
    }
  });

  // Crafted images: the control data of a message is checked before anything is sent (EBADIMG),
  // and the half-made tree goes; the untouched image then restores.
  const CRAFTED: { what: string; edit: (o: Record<string, unknown>) => void; why: RegExp }[] = [
    { what: 'a descriptor that is no fd of the process', edit: (o) => { o.fds = [999]; }, why: /EBADIMG: .*a descriptor in flight that is no fd of the process/ },
    { what: 'a message that is not queued', edit: (o) => { o.message = 99; }, why: /EBADIMG: .*message 99 of 7/ },
    { what: 'more descriptors than a message carries', edit: (o) => { o.fds = new Array(254).fill(0); }, why: /EBADIMG: .*254 descriptors in flight/ },
  ];
  for (const c of CRAFTED) {
    it(`a crafted unix-scm record (${c.what}) is refused at restart, and nothing is left half-made`, async () => {
      const w = await startWorkload('scm', [makeTempDir('scm')]);
      const img = path.join(w.dir, 'good.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      const bad = path.join(w.dir, 'crafted.cpt');
      let edited = 0;
      recodeImage(img, bad, {
        records: (recs) => {
          for (const { name, obj } of recs) if (name === 'unix-scm' && edited++ === 0) c.edit(obj);
          return recs;
        },
      });
      expect(edited, 'no unix-scm record in the image').to.be.greaterThan(0);
      const r = await cptrst(['restart', bad]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(c.why);
      expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await trigger(w);
      expect(passLines('scm')).to.include(parseResult(await waitResult(w, 30000)).verdict);
    });
  }

  it('descriptors in flight on a stream socket are refused; the process receives them afterwards', async () => {
    await expectRefusedAndKept([
      'import os,socket,sys,time',
      'a,b=socket.socketpair()',
      'r,w=os.pipe()',
      'os.write(w,b"through the fd")',
      'socket.send_fds(a,[b"m"],[r])',
      'os.close(r)',
      ...PY_CHECK,
      'msg,got,_,_=socket.recv_fds(b,10,1)',
      'ok=after==before and msg==b"m" and len(got)==1 and os.read(got[0],100)==b"through the fd"',
      'print("PASS" if ok else "FAIL",flush=True)',
    ].join('\n'), /1 descriptor\(s\) are in flight in the queue of a stream socket; /);
  });

  it('descriptors in flight on a socket with SO_PASSPIDFD are refused before any peek: no pidfd is left in the process', async () => {
    await expectRefusedAndKept([
      'import os,socket,sys,time',
      'a,b=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'b.setsockopt(socket.SOL_SOCKET,76,1)', // SO_PASSPIDFD
      'r,w=os.pipe()',
      'os.write(w,b"through the fd")',
      'socket.send_fds(a,[b"m"],[r])',
      'os.close(r)',
      ...PY_CHECK,
      'b.setsockopt(socket.SOL_SOCKET,76,0)', // a receive then carries the pipe only
      'msg,got,_,_=socket.recv_fds(b,10,1)',
      'ok=after==before and msg==b"m" and len(got)==1 and os.read(got[0],100)==b"through the fd"',
      'print("PASS" if ok else "FAIL %r %r"%(before,after),flush=True)',
    ].join('\n'), /SO_PASSPIDFD is set on the socket; /);
  });

  it('a file in flight of a kind that is not described from outside the process (an inotify) is refused; the process receives it afterwards', async () => {
    await expectRefusedAndKept([
      'import ctypes,os,socket,sys,time',
      'libc=ctypes.CDLL(None,use_errno=True)',
      'a,b=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'i=libc.inotify_init1(0)',
      'libc.inotify_add_watch(i,sys.argv[1].rsplit("/",1)[0].encode(),0x100)', // IN_CREATE in the test's directory
      'socket.send_fds(a,[b"m"],[i])',
      'os.close(i)',
      ...PY_CHECK,
      'msg,got,_,_=socket.recv_fds(b,10,1)',
      'ok=after==before and msg==b"m" and len(got)==1 and os.readlink("/proc/self/fd/%d"%got[0])=="anon_inode:inotify"',
      'print("PASS" if ok else "FAIL %r %r"%(before,after),flush=True)',
    ].join('\n'), /inotify files in flight \(SCM_RIGHTS\) are not supported yet/, 'fd \\d+ \\(anon_inode:inotify, in flight in a socket\'s queue\\)');
  });

  it('a socket sent over itself and closed (in flight in its own queue) is refused; the process receives it afterwards', async () => {
    await expectRefusedAndKept([
      'import os,socket,sys,time',
      'a,b=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'c,d=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'r,w=os.pipe()',
      // d holds a pipe in flight, then d itself goes in flight on b, and the process closes d.
      'socket.send_fds(c,[b"inner"],[r])',
      'socket.send_fds(a,[b"outer"],[d.fileno()])',
      'd.close(); os.close(r)',
      ...PY_CHECK,
      'msg,got,_,_=socket.recv_fds(b,10,1)',
      'dd=socket.socket(fileno=got[0])',
      'm2,got2,_,_=socket.recv_fds(dd,10,1)',
      'os.write(w,b"x")',
      'ok=after==before and msg==b"outer" and m2==b"inner" and len(got2)==1 and os.read(got2[0],10)==b"x"',
      'print("PASS" if ok else "FAIL",flush=True)',
    ].join('\n'), /1 descriptor\(s\) are in flight in its queue, but the socket is itself in flight/);
  });
});
