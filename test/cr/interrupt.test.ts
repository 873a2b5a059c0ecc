/**
 * cptrst's own death or interruption never harms the target. `cptrst checkpoint` is killed
 * (SIGKILL) or interrupted (SIGINT, SIGTERM) at moments spread over the whole checkpoint of a
 * process with 1 GiB of memory (the `survive` workload, which checks its registers at every
 * system call, and its mask, alternate stack and memory at the end); afterwards the process
 * runs, untraced, with its mask and its mappings, and finally passes its own checks.
 * A checkpoint that lets the process run takes a copy-on-write snapshot and writes the pages from
 * it after the release: the moments cover that too, and no copy of the process (nor a child of
 * it) is left.
 * A tree's checkpoint takes a snapshot of each process: no copy of any is left either.
 * Multi-threaded processes are killed-at-moments the same way (calls run inside every thread, each
 * over a signal frame on its own stack): every thread runs on, untraced, and passes its checks.
 * `cptrst restart` is killed or interrupted the same way: nothing it made is left behind, none
 * of the threads of a process with 200 threads either.
 */
import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import {
  CLI_MAIN, Workload, buildWorkloads, copiesOf, cptrst, describeStuck, hasFileIn, killByPid, killStartedWorkloads, makeTempDir, parseResult, passLines, procState, sleep, startWorkload,
  trigger, waitGone, waitResult,
} from '../support';

type Sig = 'SIGKILL' | 'SIGINT' | 'SIGTERM';
/** How long an interrupted CLI may take to clean up and end. */
const CLI_END_MS = 60000;
const SIGNO: Record<Sig, number> = { SIGKILL: 9, SIGINT: 2, SIGTERM: 15 };

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Processes seen as the CLI's children while it ran. */
  children: Set<number>;
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const c = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (c) out.push(...c.split(/\s+/).map(Number));
    }
  } catch {
    /* gone */
  }
  return out;
}

/**
 * Runs the CLI and sends it `sig` `delayMs` after it opened a file in `dir` (or, with
 * fromSpawn, after it was started).
 */
async function runAndSignal(args: string[], dir: string, sig: Sig, delayMs: number, fromSpawn = false, twice = false): Promise<Run> {
  const cli: ChildProcess = spawn(process.execPath, [CLI_MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const run: Run = { code: null, signal: null, stderr: '', children: new Set() };
  cli.stderr!.on('data', (d) => (run.stderr += String(d)));
  const done = new Promise<void>((resolve) =>
    cli.once('close', (code, signal) => {
      run.code = code;
      run.signal = signal;
      resolve();
    }),
  );
  let over = false;
  void done.then(() => (over = true));
  const pid = cli.pid!;
  const watch = setInterval(() => {
    for (const c of childrenOf(pid)) run.children.add(c);
  }, 2);
  try {
    if (!fromSpawn) {
      const deadline = Date.now() + 20000;
      while (!over && !hasFileIn(pid, dir) && Date.now() < deadline) await sleep(1);
    }
    await sleep(delayMs);
    if (!over) cli.kill(sig);
    if (twice) {
      // A second signal while it cleans up is ignored: the cleanup runs to its end.
      await sleep(2);
      if (!over) cli.kill(sig);
    }
    // A CLI that does not end is a defect to show, not a test timeout: what it waits in, then kill it.
    let timer: NodeJS.Timeout | undefined;
    const stuck = await Promise.race([
      done.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), CLI_END_MS))),
    ]);
    clearTimeout(timer);
    if (stuck) {
      const what = await describeStuck(pid);
      cli.kill('SIGKILL');
      await done;
      throw new Error(`cptrst ${args[0]} did not end within ${CLI_END_MS} ms of ${sig} (sent ${delayMs} ms in); it was:\n${what}\nstderr: ${run.stderr}`);
    }
  } finally {
    clearInterval(watch);
  }
  return run;
}

function status(pid: number): { state: string; tracer: number; sigBlk: string } | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const f = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)?.[1] ?? '';
    return { state: f('State').charAt(0), tracer: Number(f('TracerPid')), sigBlk: f('SigBlk') };
  } catch {
    return null;
  }
}

/** Each process is there and traced by no one again (a dead cptrst's tracees are let go by the kernel); their status. */
async function untracedAgain(pids: number[], what: string): Promise<Array<{ state: string; tracer: number; sigBlk: string }>> {
  const out = [];
  for (const p of pids) {
    let st = status(p);
    for (let i = 0; i < 500 && st !== null && st.tracer !== 0; i++) {
      await sleep(10);
      st = status(p);
    }
    expect(st?.tracer, `${what}: process ${p} gone or still traced`).to.equal(0);
    out.push(st!);
  }
  return out;
}

/**
 * The tree as `list` shows it once it is `want` again, or after 5 s. A process let go by a dead
 * cptrst in the middle of a snapshot still has its first copy (and that one the snapshot) as a
 * child for a moment: the first copy dies of EXITKILL and the process reaps it once it runs.
 */
async function settled(list: () => number[], want: number[]): Promise<number[]> {
  let now = list();
  for (let i = 0; i < 500 && now.join() !== want.join(); i++) {
    await sleep(10);
    now = list();
  }
  return now;
}

function expectInterruptedLine(run: Run, sig: Sig, outcome: string): void {
  expect(run.signal, run.stderr).to.equal(null);
  expect(run.code, run.stderr).to.equal(128 + SIGNO[sig]);
  // A restart interrupted before it read the task object names no pid.
  expect(run.stderr).to.match(new RegExp(`^cptrst: EINTR: (pid \\d+: )?interrupted by ${sig}; ${outcome}\\n$`));
}

/** After the CLI is gone: the target runs on, untraced, with its mask and (but for a scratch area left by a SIGKILL) its mappings. */
async function expectUnharmed(w: Workload, sigBlk: string, maps: string[], what: string): Promise<string[]> {
  let st = status(w.pid);
  for (let i = 0; i < 500 && st !== null && st.tracer !== 0; i++) {
    await sleep(10);
    st = status(w.pid);
  }
  expect(st, `${what}: the process is gone`).to.not.equal(null);
  expect(st!.tracer, `${what}: still traced`).to.equal(0);
  // Let go by a dead cptrst, it first finishes the call it was in (and, in the snapshot's clone
  // code, waits for its first child to die of EXITKILL and reaps it), then returns to its frozen
  // state through rt_sigreturn: on a loaded machine that takes a moment.
  await sleep(30);
  st = status(w.pid);
  for (let i = 0; i < 300 && st !== null && st.sigBlk !== sigBlk; i++) {
    await sleep(10);
    st = status(w.pid);
  }
  expect(st, `${what}: the process died`).to.not.equal(null);
  expect(st!.state, `${what}: state`).to.match(/^[RS]$/);
  expect(st!.sigBlk, `${what}: blocked mask`).to.equal(sigBlk);
  // The copy-on-write snapshot's processes: the target has no child, and no copy of it runs on
  // (EXITKILL ends them; init reaps the last one, which is no longer the target's).
  expect(childrenOf(w.pid), `${what}: children of the process`).to.deep.equal([]);
  let copies = copiesOf(w.pid);
  for (let i = 0; i < 200 && copies.length; i++) {
    await sleep(10);
    copies = copiesOf(w.pid);
  }
  expect(copies, `${what}: copies of the process left`).to.deep.equal([]);
  const now = fs.readFileSync(`/proc/${w.pid}/maps`, 'utf8').trim().split('\n');
  const missing = maps.filter((l) => !now.includes(l));
  expect(missing, `${what}: mappings lost`).to.deep.equal([]);
  return now.filter((l) => !maps.includes(l));
}

describe('cptrst killed or interrupted', function () {
  this.timeout(300000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  // Moments, in ms after the image file is open: before the freeze, around the first injected
  // calls, all through the memory dump (about 2 s here for 1 GiB), and near the end.
  const DELAYS = [0, 1, 3, 8, 20, 60, 200, 600, 1100, 1700, 2300];

  for (const sig of ['SIGKILL', 'SIGINT', 'SIGTERM'] as const) {
    it(`checkpoint: ${sig} at any moment leaves the process running exactly as before`, async () => {
      const w = await startWorkload('survive', ['1024'], { readyTimeoutMs: 60000 });
      const sigBlk = status(w.pid)!.sigBlk;
      const maps = fs.readFileSync(`/proc/${w.pid}/maps`, 'utf8').trim().split('\n');
      let extra: string[] = [];
      let completed = 0;
      const delays = sig === 'SIGKILL' ? [-150, ...DELAYS] : DELAYS;
      for (const [k, d] of delays.entries()) {
        const img = path.join(w.dir, `img-${k}`);
        const twice = sig !== 'SIGKILL' && d === 200;
        const run = await runAndSignal(['checkpoint', String(w.pid), '-o', img], w.dir, sig, Math.abs(d), d < 0, twice);
        const what = `${sig} ${d} ms`;
        const left = fs.readdirSync(w.dir).filter((f) => f.includes(`img-${k}`));
        if (run.code === 0) {
          completed++; // it finished before the signal came: a whole image, a released process
          expect(parseInt(fs.statSync(img).size.toString(), 10)).to.be.greaterThan(1 << 30);
        } else if (sig === 'SIGKILL') {
          expect(run.signal, what).to.equal('SIGKILL');
        } else {
          expectInterruptedLine(run, sig, 'the process was left running');
          expect(left, `${what}: files left`).to.deep.equal([]);
        }
        for (const f of left) fs.rmSync(path.join(w.dir, f), { force: true });
        const added = await expectUnharmed(w, sigBlk, maps, what);
        if (sig !== 'SIGKILL' || run.code === 0) {
          expect(added, `${what}: new mappings`).to.deep.equal(extra);
        } else {
          // The scratch area unmaps itself when the process is let go by a dead cptrst, except after
          // a kill during its own mmap: then it stays, unused (rwx, anonymous, 64 KiB).
          for (const l of added) expect(l, `${what}: new mapping`).to.match(/^[0-9a-f]+-[0-9a-f]+ rwxp 00000000 00:00 0\s*$/);
          extra = added;
        }
      }
      expect(completed, 'every run completed: the signals came too late').to.be.lessThan(delays.length);
      expect(extra.length, `scratch areas left: ${extra.join('; ')}`).to.be.lessThan(3);
      await trigger(w);
      expect(passLines('survive')).to.include(parseResult(await waitResult(w, 60000)).verdict);
    });
  }

  it('checkpoint with a copy-on-write snapshot: SIGKILL every few ms through the frozen window and the snapshot leaves no copy and no child', async () => {
    const w = await startWorkload('survive', ['256'], { readyTimeoutMs: 60000 });
    const sigBlk = status(w.pid)!.sigBlk;
    const maps = fs.readFileSync(`/proc/${w.pid}/maps`, 'utf8').trim().split('\n');
    let extra: string[] = [];
    let killed = 0;
    for (let d = 0; d <= 240; d += 6) {
      const img = path.join(w.dir, `img-${d}`);
      const run = await runAndSignal(['checkpoint', String(w.pid), '-o', img], w.dir, 'SIGKILL', d);
      const what = `SIGKILL ${d} ms`;
      if (run.signal === 'SIGKILL') killed++;
      else expect(run.code, `${what}: ${run.stderr}`).to.equal(0);
      for (const f of fs.readdirSync(w.dir).filter((n) => n.includes(`img-${d}`))) fs.rmSync(path.join(w.dir, f), { force: true });
      const added = await expectUnharmed(w, sigBlk, maps, what);
      for (const l of added) expect(l, `${what}: new mapping`).to.match(/^[0-9a-f]+-[0-9a-f]+ rwxp 00000000 00:00 0\s*$/);
      if (run.signal !== 'SIGKILL') expect(added, `${what}: new mappings`).to.deep.equal(extra);
      extra = added;
    }
    expect(killed, 'the kills all came too late').to.be.greaterThan(0);
    await trigger(w);
    expect(passLines('survive')).to.include(parseResult(await waitResult(w, 60000)).verdict);
  });

  it('checkpoint of a tree with a copy-on-write snapshot per process (cowwritetree): SIGKILL every few ms leaves every member running untraced with the same children, and no copy of any', async () => {
    const w = await startWorkload('cowwritetree', ['64'], { readyTimeoutMs: 60000 });
    const members = (): number[] => {
      const out = [w.pid];
      for (let i = 0; i < out.length; i++) out.push(...childrenOf(out[i]));
      return out;
    };
    let pids = members();
    for (let i = 0; i < 500 && pids.length < 3; i++) {
      await sleep(10);
      pids = members();
    }
    expect(pids.length, 'members').to.equal(3);
    const copies = (): number[] => copiesOf(w.pid, pids);
    let killed = 0;
    for (let d = 0; d <= 360; d += 9) {
      const img = path.join(w.dir, `img-${d}`);
      const run = await runAndSignal(['checkpoint', String(w.pid), '-o', img], w.dir, 'SIGKILL', d);
      const what = `SIGKILL ${d} ms`;
      if (run.signal === 'SIGKILL') killed++;
      else expect(run.code, `${what}: ${run.stderr}`).to.equal(0);
      for (const st of await untracedAgain(pids, what)) expect(st.state, `${what}: process state`).to.match(/^[RS]$/);
      expect(await settled(members, pids), `${what}: the tree`).to.deep.equal(pids);
      let left = copies();
      for (let i = 0; i < 200 && left.length; i++) {
        await sleep(10);
        left = copies();
      }
      expect(left, `${what}: copies left`).to.deep.equal([]);
      for (const f of fs.readdirSync(w.dir).filter((n) => n.includes(`img-${d}`))) fs.rmSync(path.join(w.dir, f), { force: true });
    }
    expect(killed, 'the kills all came too late').to.be.greaterThan(0);
    await trigger(w);
    expect(passLines('cowwritetree')).to.include(parseResult(await waitResult(w, 60000)).verdict);
  });

  for (const name of ['threadchurn', 'pthreads']) {
  it(`checkpoint of a multi-threaded process (${name}): SIGKILL at any moment leaves every thread running, untraced`, async () => {
    const w = await startWorkload(name);
    const delays = [-150, -60, 0, 1, 2, 3, 5, 8, 13, 20, 30, 40, 60, 90];
    let killed = 0;
    for (const [k, d] of delays.entries()) {
      const img = path.join(w.dir, `img-${k}`);
      const run = await runAndSignal(['checkpoint', String(w.pid), '-o', img], w.dir, 'SIGKILL', Math.abs(d), d < 0);
      const what = `SIGKILL ${d} ms`;
      // Killed, or the checkpoint was over first.
      if (run.signal === null) expect(run.code, `${what}: ${run.stderr}`).to.equal(0);
      else expect(run.signal, what).to.equal('SIGKILL');
      if (run.signal !== null) killed++;
      let traced: string[] = [];
      for (let i = 0; i < 200; i++) {
        traced = fs.readdirSync(`/proc/${w.pid}/task`).filter((tid) => {
          try {
            return !/^TracerPid:\s*0$/m.test(fs.readFileSync(`/proc/${w.pid}/task/${tid}/status`, 'utf8'));
          } catch {
            return false; // a short-lived thread ended
          }
        });
        if (traced.length === 0) break;
        await sleep(10);
      }
      expect(traced, `${what}: threads still traced`).to.deep.equal([]);
      expect(status(w.pid)?.state, `${what}: state`).to.match(/^[RS]$/);
      for (const f of fs.readdirSync(w.dir).filter((n) => n.includes(`img-${k}`))) fs.rmSync(path.join(w.dir, f), { force: true });
    }
    expect(killed, 'the kills all came too late').to.be.greaterThan(0);
    await trigger(w);
    expect(passLines(name)).to.include(parseResult(await waitResult(w, 60000)).verdict);
  });
  }

  it('checkpoint of a process with queued unix socket messages, descriptors in flight and a peek offset of its own: SIGKILL at any moment leaves its fd table, every queue and peek offset exactly as before; it receives its files in flight whole, and again after a restart', async () => {
    // Queues are peeked with SO_PEEK_OFF (the socket's, shared with the process, put back at once)
    // and the files in flight come to cptrst's own fd table: nothing is ever put into the process.
    // Its fd table (each fd's file, offset and flags) is compared from outside after every kill;
    // the process compares its own, then receives every message and checks each file in flight:
    // pipes with their bytes, a file at its offset, a memfd with its contents and offset, and an
    // epoll watching one of its sockets.
    const dir = makeTempDir('scm-kill');
    const trig = path.join(dir, 'go');
    fs.writeFileSync(path.join(dir, 'data'), '0123456789abcdef');
    const script = [
      'import fcntl,os,re,select,socket,struct,sys,time',
      'PEEK_OFF=42',
      'def off(s): return struct.unpack("i",s.getsockopt(socket.SOL_SOCKET,PEEK_OFF,4))[0]',
      'def table():',
      '  out=[]',
      // Not stdout and stderr, whose offset moves as it prints READY (the test compares them from outside).
      '  for x in sorted(int(x) for x in os.listdir("/proc/self/fd") if int(x)>2):',
      // Inode numbers aside (a restart makes new pipes and sockets): each fd's file, offset and flags.
      '    try: out.append((x,re.sub(r"\\[\\d+\\]","[]",os.readlink("/proc/self/fd/%d"%x)),open("/proc/self/fdinfo/%d"%x).read().split("\\n")[:2]))',
      '    except OSError: pass',
      '  return [t for t in out if not t[1].startswith("/proc/")]',
      'a,b=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'for i in range(6):',
      '  if i%2:',
      '    r,w=os.pipe(); os.write(w,b"pipe%d"%i)',
      '    socket.send_fds(a,[b"dgram%d"%i],[r,w]); os.close(r); os.close(w)',
      '  else: a.send(b"dgram%d"%i)',
      'f=os.open(sys.argv[2],os.O_RDWR); os.lseek(f,5,0)',
      'm=os.memfd_create("cpt-kill"); os.write(m,b"memfd contents"); os.lseek(m,3,0)',
      'h,k=socket.socketpair(socket.AF_UNIX,socket.SOCK_DGRAM)',
      'ep=select.epoll(); ep.register(k.fileno(),select.EPOLLIN)',
      'socket.send_fds(a,[b"files"],[f,m,ep.fileno()]); os.close(f); os.close(m); ep.close()',
      'c,d=socket.socketpair(socket.AF_UNIX,socket.SOCK_STREAM)',
      'c.send(b"stream bytes"); c.send(b" and more")',
      'e,g=socket.socketpair(socket.AF_UNIX,socket.SOCK_SEQPACKET)',
      'for i in range(4): e.send(b"record%d"%i)',
      'g.setsockopt(socket.SOL_SOCKET,PEEK_OFF,0); g.recv(100,socket.MSG_PEEK)',
      'offs=(off(b),off(d),off(g))',
      'before=table()',
      'print("READY",offs,flush=True)',
      'while not os.path.exists(sys.argv[1]): time.sleep(0.01)',
      'after=table()',
      'bad=[]',
      'if after!=before: bad.append(("fd table",before,after))',
      'if (off(b),off(d),off(g))!=offs: bad.append(("peek offsets",offs,(off(b),off(d),off(g))))',
      'if g.recv(100,socket.MSG_PEEK)!=b"record1": bad.append("the seqpacket peek offset moved")',
      'for i in range(6):',
      '  msg,got,_,_=socket.recv_fds(b,100,4,socket.MSG_DONTWAIT)',
      '  if msg!=b"dgram%d"%i or len(got)!=2*(i%2): bad.append(("dgram",i,msg,got)); continue',
      '  if got:',
      '    r,w=got',
      '    if os.read(r,10)!=b"pipe%d"%i: bad.append(("pipe bytes",i))',
      '    os.write(w,b"again"); ',
      '    if os.read(r,10)!=b"again": bad.append(("pipe ends",i))',
      '    os.close(r); os.close(w)',
      'msg,got,_,_=socket.recv_fds(b,100,4,socket.MSG_DONTWAIT)',
      'if msg!=b"files" or len(got)!=3: bad.append(("files",msg,got))',
      'else:',
      '  f,m,epfd=got',
      '  if os.lseek(f,0,1)!=5 or os.read(f,3)!=b"567" or fcntl.fcntl(f,fcntl.F_GETFL)&3!=os.O_RDWR: bad.append("the file in flight")',
      '  if os.lseek(m,0,1)!=3 or os.pread(m,100,0)!=b"memfd contents" or not os.readlink("/proc/self/fd/%d"%m).startswith("/memfd:cpt-kill"): bad.append("the memfd in flight")',
      '  ep=select.epoll.fromfd(epfd)',
      '  if ep.poll(0)!=[]: bad.append("the epoll reports an event before any")',
      '  h.send(b"wake")',
      '  if ep.poll(1)!=[(k.fileno(),select.EPOLLIN)] or k.recv(10)!=b"wake": bad.append("the epoll in flight does not watch its socket")',
      'if d.recv(100,socket.MSG_DONTWAIT)!=b"stream bytes and more": bad.append("stream")',
      'for i in range(4):',
      '  if g.recv(100,socket.MSG_DONTWAIT)!=b"record%d"%i: bad.append(("record",i))',
      'print("PASS" if not bad else "FAIL %r"%bad,flush=True)',
    ].join('\n');
    const out = path.join(dir, 'out');
    const ofd = fs.openSync(out, 'a');
    const child = spawn('python3', ['-c', script, trig, path.join(dir, 'data')], { stdio: ['ignore', ofd, ofd], detached: true });
    fs.closeSync(ofd);
    child.unref();
    let pid = child.pid!;
    /** The process's fd table seen from outside: each fd's file, offset and flags (the pipes' and sockets' inodes too). */
    const table = (): string[] => fs.readdirSync(`/proc/${pid}/fd`).map(Number).sort((x, y) => x - y).map((fd) => {
      const info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').split('\n').slice(0, 2).join(' ');
      return `${fd} ${fs.readlinkSync(`/proc/${pid}/fd/${fd}`)} ${info}`;
    });
    try {
      for (let i = 0; i < 1000 && !fs.readFileSync(out, 'utf8').includes('READY'); i++) await sleep(10);
      expect(fs.readFileSync(out, 'utf8')).to.match(/^READY \(-1, -1, 7\)\n$/);
      const before = table();
      let killed = 0;
      for (let d = 0; d <= 300; d += 5) {
        const img = path.join(dir, `img-${d}`);
        const run = await runAndSignal(['checkpoint', String(pid), '-o', img], dir, 'SIGKILL', d);
        const what = `SIGKILL ${d} ms`;
        if (run.signal === 'SIGKILL') killed++;
        else expect(run.code, `${what}: ${run.stderr}`).to.equal(0);
        let st = status(pid);
        for (let i = 0; i < 500 && st !== null && st.tracer !== 0; i++) {
          await sleep(10);
          st = status(pid);
        }
        expect(st?.tracer, `${what}: gone or still traced`).to.equal(0);
        expect(table(), `${what}: the fd table`).to.deep.equal(before);
        fs.rmSync(img, { force: true });
      }
      expect(killed, 'the kills all came too late').to.be.greaterThan(0);
      // Whole after all that: checkpointed, killed, restarted, and its own checks pass.
      const img = path.join(dir, 'image');
      const ck = await cptrst(['checkpoint', String(pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
      expect(await waitGone(pid, 10000)).to.equal(true);
      const rs = await cptrst(['restart', img]);
      expect(rs.code, rs.stderr).to.equal(0);
      const bare = (t: string[]) => t.map((l) => l.replace(/\[\d+\]/g, '[]'));
      expect(bare(table()), 'the fd table after the restart').to.deep.equal(bare(before));
      fs.writeFileSync(trig, '');
      expect(await waitGone(pid, 10000, { zombieOk: true })).to.equal(true);
      expect(fs.readFileSync(out, 'utf8')).to.match(/^READY .*\nPASS\n$/);
      pid = 0;
    } finally {
      if (pid) await killByPid(pid);
    }
  });

  it('checkpoint of a tree on ptys with bytes buffered both ways (ptys): SIGKILL at any moment loses no byte and leaves every termios as it was', async () => {
    // The bytes cannot be peeked: they are read and put back, and the slave's termios is changed
    // meanwhile. Kills every few ms over the whole checkpoint (the tree runs on after each).
    const w = await startWorkload('ptys');
    const tree = (): number[] => {
      const out = [w.pid];
      for (let i = 0; i < out.length; i++) out.push(...childrenOf(out[i]));
      return out;
    };
    const pids = tree();
    let killed = 0;
    for (let d = 0; d <= 600; d += 12) {
      const img = path.join(w.dir, `img-${d}`);
      const run = await runAndSignal(['checkpoint', String(w.pid), '-o', img], w.dir, 'SIGKILL', d);
      const what = `SIGKILL ${d} ms`;
      if (run.signal === 'SIGKILL') killed++;
      else expect(run.code, `${what}: ${run.stderr}`).to.equal(0);
      // What cptrst started (the process that puts the bytes back) ends by itself.
      for (const c of run.children) expect(await waitGone(c, 30000, { zombieOk: true }), `${what}: its child ${c} is still there`).to.equal(true);
      await untracedAgain(pids, what);
      expect(await settled(tree, pids), `${what}: the tree`).to.deep.equal(pids);
      for (const f of fs.readdirSync(w.dir).filter((n) => n.includes(`img-${d}`))) fs.rmSync(path.join(w.dir, f), { force: true });
    }
    expect(killed, 'the kills all came too late').to.be.greaterThan(0);
    await trigger(w);
    expect(passLines('ptys')).to.include(parseResult(await waitResult(w, 60000)).verdict);
  });

  it('restart of a process with 200 threads: SIGKILL or SIGINT at any moment, while its threads are made too, leaves no thread behind', async () => {
    const w = await startWorkload('threads.py', ['200'], { readyTimeoutMs: 60000 });
    const tids = fs.readdirSync(`/proc/${w.pid}/task`).map(Number);
    const img = path.join(w.dir, 'image');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    expect(await waitGone(w.pid, 10000)).to.equal(true);
    const plan: Array<[Sig, number]> = [['SIGKILL', 30], ['SIGKILL', 90], ['SIGKILL', 180], ['SIGKILL', 300], ['SIGKILL', 450], ['SIGINT', 120], ['SIGINT', 350]];
    let completed = 0;
    for (const [sig, d] of plan) {
      const what = `${sig} ${d} ms`;
      const run = await runAndSignal(['restart', img], w.dir, sig, d);
      await sleep(100);
      const after = status(w.pid);
      if (run.code === 0 || (after !== null && after.tracer === 0 && !/^[ZX]$/.test(after.state))) {
        completed++; // whole and its own before the signal came
        process.kill(w.pid, 'SIGKILL');
      } else if (sig === 'SIGKILL') {
        expect(run.signal, what).to.equal('SIGKILL');
      } else {
        expectInterruptedLine(run, sig, 'nothing was restored');
      }
      expect(await waitGone(w.pid, 15000), `${what}: pid ${w.pid} still there`).to.equal(true);
      // Still there as a thread of that process (on a busy machine the numbers of its threads may
      // already belong to other processes).
      const left = tids.filter((t) => {
        try {
          return /^Tgid:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${t}/status`, 'utf8'))?.[1] === String(w.pid);
        } catch {
          return false;
        }
      });
      expect(left, `${what}: threads left`).to.deep.equal([]);
    }
    expect(completed, 'every restart completed: the signals came too late').to.be.lessThan(plan.length);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('threads.py', ['200'])).to.include(parseResult(await waitResult(w, 60000)).verdict);
  });

  it('restart: SIGKILL, SIGINT or SIGTERM at any moment leaves no process behind', async () => {
    const w = await startWorkload('survive', ['256'], { readyTimeoutMs: 30000 });
    const img = path.join(w.dir, 'image');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    const gone = await waitGone(w.pid, 10000);
    expect(gone, gone ? '' : await describeStuck(w.pid)).to.equal(true);

    const plan: Array<[Sig, number]> = [
      ['SIGKILL', 0], ['SIGKILL', 5], ['SIGKILL', 20], ['SIGKILL', 60], ['SIGKILL', 150], ['SIGKILL', 300],
      ['SIGINT', 0], ['SIGINT', 30], ['SIGINT', 150], ['SIGTERM', 10], ['SIGTERM', 80], ['SIGTERM', 250],
    ];
    let completed = 0;
    for (const [sig, d] of plan) {
      const what = `${sig} ${d} ms`;
      const run = await runAndSignal(['restart', img], w.dir, sig, d);
      await sleep(100);
      const after = status(w.pid);
      // Killed after its last step (PTRACE_DETACH) but before it printed: the process is whole and
      // its own (untraced, alive). Anything half made is still traced when cptrst dies, and dies.
      const detachedWhole = run.code !== 0 && after !== null && after.tracer === 0 && !/^[ZX]$/.test(after.state);
      if (detachedWhole) {
        completed++;
        process.kill(w.pid, 'SIGKILL');
      } else if (run.code === 0) {
        // Restored before the signal came: a whole process of its own; end it for the next round.
        completed++;
        const st = await procState(w.pid);
        expect(st?.tracerPid, what).to.equal(0);
        process.kill(w.pid, 'SIGKILL');
      } else if (sig === 'SIGKILL') {
        expect(run.signal, what).to.equal('SIGKILL');
      } else {
        expectInterruptedLine(run, sig, 'nothing was restored');
      }
      // Whatever it made dies with it (PTRACE_O_EXITKILL); init reaps it, slowly.
      expect(await waitGone(w.pid, 15000), `${what}: pid ${w.pid} still there`).to.equal(true);
      for (const c of run.children) expect(await waitGone(c, 15000, { zombieOk: true }), `${what}: its child ${c} is still there`).to.equal(true);
    }
    expect(completed, 'every restart completed: the signals came too late').to.be.lessThan(plan.length);
    // The image is whole and the PID free: a restart to the end, and the process passes.
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('survive')).to.include(parseResult(await waitResult(w, 60000)).verdict);
  });
});
