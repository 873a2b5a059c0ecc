/**
 * Unix sockets held by one process: the sockets workload checks its queues (boundaries,
 * credentials), shutdowns, options and names itself after a restart; a checkpoint that fails
 * after the queues were read loses no byte; a socket connected to another process and
 * descriptors in flight on a stream socket (SCM_RIGHTS, see scm.test.ts) are refused, naming the
 * fd and why, and the process keeps them.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, buildWorkloads, cptrst, failAfterDump, killByPid, killStartedWorkloads, makeTempDir, parseResult, passLines, procState,
  sleep, startWorkload, trigger, waitGone, waitResult,
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

describe('unix sockets held by one process', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  itRestoresWorkload('sockets', 'socketpairs with their queues both ways, shutdown, options, names', { args: () => [makeTempDir('sockets')] });

  it('a checkpoint that fails after the queues were read loses no byte', async () => {
    const w = await startWorkload('sockets', [makeTempDir('sockets')]);
    await failAfterDump(w);
    await trigger(w);
    expect(passLines('sockets')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a socket connected to another process is refused, naming the fd and the other process', async () => {
    const dir = makeTempDir('peer');
    const sock = path.join(dir, 'listen');
    const server = net.createServer((c) => c.on('error', () => undefined));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    const pid = await startPython(dir, 'import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint("READY",flush=True)\ntime.sleep(60)', [sock]);
    try {
      const r = await cptrst(['checkpoint', String(pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, fd \\d+ \\(socket:\\[\\d+\\]\\): it is connected to socket:\\[\\d+\\], a socket of process ${process.pid} \\(fd \\d+\\), outside the checkpointed process tree; `));
      expect((await procState(pid))?.state).to.match(/^[RS]$/);
    } finally {
      await killByPid(pid);
      server.close();
    }
  });

  it('descriptors in flight (SCM_RIGHTS) on a stream socket are refused; the process receives them afterwards', async () => {
    const dir = makeTempDir('scm');
    const trig = path.join(dir, 'go');
    const script = [
      'import os,socket,sys,time',
      'a,b=socket.socketpair()',
      'r,w=os.pipe()',
      'os.write(w,b"through the fd")',
      'socket.send_fds(a,[b"m"],[r])',
      'os.close(r)',
      'print("READY",flush=True)',
      'while not os.path.exists(sys.argv[1]): time.sleep(0.01)',
      'msg,fds,_,_=socket.recv_fds(b,10,1)',
      'ok=msg==b"m" and len(fds)==1 and os.read(fds[0],100)==b"through the fd"',
      'print("PASS scm" if ok else "FAIL scm",flush=True)',
    ].join('\n');
    const pid = await startPython(dir, script, [trig]);
    try {
      const r = await cptrst(['checkpoint', String(pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, fd \\d+ \\(socket:\\[\\d+\\]\\): 1 descriptor\\(s\\) are in flight in the queue of a stream socket; `));
      fs.writeFileSync(trig, '');
      expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
      expect(fs.readFileSync(path.join(dir, 'out'), 'utf8')).to.equal('READY\nPASS scm\n');
    } finally {
      await killByPid(pid);
    }
  });
});
