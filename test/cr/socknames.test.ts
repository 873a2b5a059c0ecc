/**
 * Unix socket names that no longer lead to their socket (unlinked and replaced by a regular file
 * or a FIFO, relative to a directory the process left, in a directory that was removed): bound
 * again where nobody sees them, nothing made, moved or left in the filesystem (the socknames
 * workload checks its names, peers, data both ways and its directory itself); in an image not
 * owned by root only where the owner could have made the name. A socket connected to a peer
 * outside the tree: refused by default, reconnected or closed with --ext-unix-sk.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, buildWorkloads, cptrst, killByPid, killStartedWorkloads, makeTempDir, makeUserDir, parseResult, passLines, procState, removeUserDir,
  sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

const NOBODY = { uid: 65534, gid: 65534 };

/** Runs a python3 script detached, output to <dir>/<name>.out; waits for its READY line. */
async function startPython(dir: string, name: string, script: string, args: string[] = []): Promise<{ pid: number; out: string }> {
  const out = path.join(dir, `${name}.out`);
  const ofd = fs.openSync(out, 'a');
  const child = spawn('python3', ['-c', script, ...args], { stdio: ['ignore', ofd, ofd], detached: true });
  fs.closeSync(ofd);
  child.unref();
  for (let i = 0; i < 1000 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
  expect(fs.readFileSync(out, 'utf8')).to.include('READY');
  return { pid: child.pid!, out };
}

async function waitFor(file: string, text: string): Promise<string> {
  for (let i = 0; i < 1000 && !fs.readFileSync(file, 'utf8').includes(text); i++) await sleep(10);
  return fs.readFileSync(file, 'utf8');
}

describe('unix socket names that no longer lead to the socket', function () {
  this.timeout(120000);
  const dirs: string[] = [];
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());
  after(() => dirs.forEach(removeUserDir));

  itRestoresWorkload('socknames', 'names as bound, peers, data both ways; nothing made or moved in the directory', { args: () => [makeTempDir('socknames')] });

  /** The workload as nobody in a directory of nobody's; its image given to nobody. */
  async function nobodysImage(): Promise<{ dir: string; img: string; pid: number; w: Awaited<ReturnType<typeof startWorkload>> }> {
    const dir = makeUserDir('socknames');
    dirs.push(dir);
    fs.chownSync(dir, NOBODY.uid, NOBODY.gid);
    const w = await startWorkload('socknames', [dir, '--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
    const img = path.join(dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    fs.chownSync(img, NOBODY.uid, NOBODY.gid);
    return { dir, img, pid: w.pid, w };
  }

  it("an image of nobody's: the names are bound again with nobody's rights, and it passes", async () => {
    const { img, pid, w } = await nobodysImage();
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    expect(fs.readFileSync(`/proc/${pid}/status`, 'utf8')).to.match(/\nUid:\s+65534\s+65534\s+65534\s+65534\n/);
    await trigger(w);
    expect(passLines('socknames')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it("an image of nobody's whose names' directory nobody may no longer write: EACCES, no process, nothing left", async () => {
    const { dir: top, img, pid } = await nobodysImage();
    const dir = path.join(top, 'names');
    const before = fs.readdirSync(dir).sort();
    fs.chownSync(dir, 0, 0); // 0755, root's: nobody could not bind a name there now
    const rs = await cptrst(['restart', img]);
    expect(rs.code).to.equal(1);
    expect(rs.stderr).to.match(new RegExp(`^cptrst: EACCES: pid ${pid}, fd 10 \\(socket:\\[\\d+\\]\\): the image's owner may not make the socket name ${dir}/srv \\(no write access to ${dir}: EACCES\\)\\n$`));
    expect(await waitGone(pid, 10000)).to.equal(true);
    expect(fs.readdirSync(dir).sort()).to.deep.equal(before);
  });
});

describe('a datagram socket connected to a deleted name of another process of the tree', function () {
  this.timeout(120000);
  before(() => loadModule('@cptrst/cpt-module'));

  /** A parent bound to <dir>/srv, its child connected to that name; the name then replaced by a regular file. */
  const TREE = [
    'import os,socket,sys,time',
    'd,trig=sys.argv[1],sys.argv[2]',
    'name=d+"/srv"',
    's=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)',
    's.bind(name)',
    'r,w=os.pipe()',
    'pid=os.fork()',
    'if pid==0:',
    '  s.close(); os.close(r)',
    '  c=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)',
    '  c.bind("\\0cptrst-socknames-child-%d"%os.getpid())',
    '  c.connect(name)',
    '  os.write(w,b"x"); os.close(w)',
    '  while not os.path.exists(trig): time.sleep(0.01)',
    '  c.settimeout(10)',
    '  ok=c.getpeername()==name and c.send(b"from child")==10 and c.recv(100)==b"reply"',
    '  os._exit(0 if ok else 1)',
    'os.close(w); os.read(r,1); os.close(r)',
    'os.unlink(name)',
    'open(name,"w").write("a file")',
    'print("READY",pid,flush=True)',
    'while not os.path.exists(trig): time.sleep(0.01)',
    's.settimeout(10)',
    'm,a=s.recvfrom(100)',
    's.sendto(b"reply",a)',
    '_,st=os.waitpid(pid,0)',
    'ok=m==b"from child" and a==b"\\0cptrst-socknames-child-%d"%pid and s.getsockname()==name and st==0 and open(name).read()=="a file"',
    'print("PASS tree" if ok else "FAIL tree %r %r %r"%(m,a,st),flush=True)',
  ].join('\n');

  it('checkpoint, kill, restart: the child sends to the parent through the deleted name, and gets its answer', async () => {
    const dir = makeTempDir('socknames-tree');
    const trig = path.join(dir, 'go');
    const root = await startPython(dir, 'tree', TREE, [dir, trig]);
    const child = Number(/READY (\d+)/.exec(fs.readFileSync(root.out, 'utf8'))![1]);
    try {
      const img = path.join(dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(root.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      expect(await waitGone(root.pid, 10000)).to.equal(true);
      expect(await waitGone(child, 10000)).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      fs.writeFileSync(trig, '');
      expect(await waitFor(root.out, 'tree')).to.equal(`READY ${child}\nPASS tree\n`);
      expect(fs.readdirSync(dir).sort()).to.deep.equal(['go', 'i.cpt', 'srv', 'tree.out']);
    } finally {
      await killByPid(child);
      await killByPid(root.pid);
    }
  });
});

describe('a unix socket connected to a peer outside the tree', function () {
  this.timeout(120000);
  before(() => loadModule('@cptrst/cpt-module'));
  afterEach(() => killStartedWorkloads());

  /** A datagram socket bound to <dir>/ext in a process of its own, printing what it receives and from whom. */
  const OUTSIDE = [
    'import os,socket,sys',
    's=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)',
    's.bind(sys.argv[1])',
    'print("READY",flush=True)',
    'while True:',
    '  m,a=s.recvfrom(100)',
    '  print("GOT",m.decode(),a,flush=True)',
  ].join('\n');
  /** Connected to <dir>/ext; after the trigger it checks its peer's name and sends one datagram. */
  const CLIENT = [
    'import os,socket,sys,time',
    'c=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)',
    'c.bind(sys.argv[1]+".client")',
    'c.connect(sys.argv[1])',
    'print("READY",flush=True)',
    'while not os.path.exists(sys.argv[2]): time.sleep(0.01)',
    'ok=c.getpeername()==sys.argv[1] and c.send(b"after")==5',
    'print("PASS ext" if ok else "FAIL ext",flush=True)',
  ].join('\n');

  async function pair(): Promise<{ dir: string; outside: { pid: number; out: string }; client: { pid: number; out: string }; trig: string }> {
    const dir = makeTempDir('ext');
    const name = path.join(dir, 'ext');
    const outside = await startPython(dir, 'outside', OUTSIDE, [name]);
    const trig = path.join(dir, 'go');
    const client = await startPython(dir, 'client', CLIENT, [name, trig]);
    return { dir, outside, client, trig };
  }

  it('refused by default, naming the peer and the option; the process runs on', async () => {
    const { dir, outside, client, trig } = await pair();
    try {
      const r = await cptrst(['checkpoint', String(client.pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${client.pid}, fd \\d+ \\(socket:\\[\\d+\\]\\): it is connected to socket:\\[\\d+\\], a socket of process ${outside.pid} \\(fd \\d+\\), outside the checkpointed process tree; .*--ext-unix-sk reconnect.*\\n$`));
      expect((await procState(client.pid))?.state).to.match(/^[RS]$/);
      fs.writeFileSync(trig, '');
      expect(await waitFor(client.out, 'PASS')).to.equal('READY\nPASS ext\n');
      expect(await waitFor(outside.out, 'GOT')).to.include(`GOT after ${path.join(dir, 'ext')}.client`);
    } finally {
      await killByPid(client.pid);
      await killByPid(outside.pid);
    }
  });

  it('--ext-unix-sk reconnect: a datagram socket is connected to its named peer again at restart, and sends to it', async () => {
    const { dir, outside, client, trig } = await pair();
    try {
      const img = path.join(dir, 'i.cpt');
      const ck = await cptrst(['checkpoint', String(client.pid), '-o', img, '--kill', '--ext-unix-sk', 'reconnect']);
      expect(ck.code, ck.stderr).to.equal(0);
      expect(await waitGone(client.pid, 10000)).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      fs.writeFileSync(trig, '');
      expect(await waitFor(client.out, 'PASS')).to.equal('READY\nPASS ext\n');
      expect(await waitFor(outside.out, 'GOT')).to.include(`GOT after ${path.join(dir, 'ext')}.client`);
    } finally {
      await killByPid(client.pid);
      await killByPid(outside.pid);
    }
  });

  it('--ext-unix-sk reconnect is refused for a stream socket; --ext-unix-sk close restores it as if its peer had closed', async () => {
    const dir = makeTempDir('ext-stream');
    const sock = path.join(dir, 'listen');
    const server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.write('sent before');
    });
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    const trig = path.join(dir, 'go');
    const script = [
      'import os,socket,sys,time',
      's=socket.socket(socket.AF_UNIX)',
      's.connect(sys.argv[1])',
      'while len(s.recv(11,socket.MSG_PEEK))<11: time.sleep(0.01)',
      'print("READY",flush=True)',
      'while not os.path.exists(sys.argv[2]): time.sleep(0.01)',
      's.setblocking(False)',
      'ok=s.recv(100)==b"sent before" and s.recv(100)==b""',
      'print("PASS closed" if ok else "FAIL closed",flush=True)',
    ].join('\n');
    const client = await startPython(dir, 'client', script, [sock, trig]);
    try {
      const img = path.join(dir, 'i.cpt');
      const refused = await cptrst(['checkpoint', String(client.pid), '-o', img, '--kill', '--ext-unix-sk', 'reconnect']);
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.match(/outside the checkpointed process tree; a peer is restored only together with the processes that hold it/);
      const ck = await cptrst(['checkpoint', String(client.pid), '-o', img, '--kill', '--ext-unix-sk', 'close']);
      expect(ck.code, ck.stderr).to.equal(0);
      expect(await waitGone(client.pid, 10000)).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      fs.writeFileSync(trig, '');
      expect(await waitFor(client.out, 'closed')).to.equal('READY\nPASS closed\n');
    } finally {
      await killByPid(client.pid);
      server.close();
    }
  });
});
