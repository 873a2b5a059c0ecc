/**
 * Batches of injected calls (Tracee.syscalls) and one-stop single calls, on real processes: the
 * results are those of the calls one by one, a batch takes one stop, the signal that ends a batch
 * is one the task ignores (or, for a task that dies with cptrst, any it does not have pending) and
 * never reaches a handler, and where no such signal exists the calls run one by one. The single
 * step of a task that dies with cptrst leaves its SIGTRAP handler alone, and is not used once
 * SIGTRAP may be ignored.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import { encodeStruct, linux } from '@cptrst/core';
import { X86Tracee } from '../src';
import { alsoKill, letGo, killStarted, pollSync, seizeAndStop, startSleeping, startTarget } from './support';

const { SYS, SIG, sigBit, PTRACE_O, PTRACE_EVENT, ptrace } = linux;
const ALL_BLOCKABLE = 0xffffffffffffffffn & ~(sigBit(SIG.SIGKILL) | sigBit(SIG.SIGSTOP));

/** Seizes with PTRACE_O_EXITKILL (a task that dies with cptrst, as at restart) and waits for its stop. */
function seizeExitKill(pid: number): void {
  ptrace.seize(pid, PTRACE_O.TRACESYSGOOD | PTRACE_O.EXITKILL);
  ptrace.interrupt(pid);
  for (;;) {
    const w = linux.waitTracee(pid);
    if (w.stopped?.event === PTRACE_EVENT.STOP) return;
    ptrace.cont(pid, 0);
  }
}

/**
 * python3 with handlers that record every signal they get in its output, for `caught`, and
 * SIG_IGN or SIG_DFL as asked for the others; prints READY, then sleeps.
 */
async function python(caught: string[], ignored: string[], dfl: string[]): Promise<{ pid: number; out: () => string }> {
  const code = [
    'import signal, sys, time',
    'def h(n, f):',
    '    sys.stdout.write("HANDLER %d\\n" % n); sys.stdout.flush()',
    ...caught.map((s) => `signal.signal(signal.${s}, h)`),
    ...ignored.map((s) => `signal.signal(signal.${s}, signal.SIG_IGN)`),
    ...dfl.map((s) => `signal.signal(signal.${s}, signal.SIG_DFL)`),
    'print("READY"); sys.stdout.flush()',
    'while True: time.sleep(100)',
  ].join('\n');
  const t = await startTarget('/usr/bin/python3', ['-c', code]);
  const outFile = fs.readlinkSync(`/proc/${t.pid}/fd/1`);
  // Sleeping in its loop, past the READY line.
  expect(pollSync(() => linux.readStat(t.pid).state === 'S')).to.equal(true);
  return { pid: t.pid, out: () => fs.readFileSync(outFile, 'utf8') };
}

const calls = (pid: number, dataAddr: bigint) => [
  { nr: SYS.getpid },
  { nr: SYS.gettid },
  { nr: SYS.close, args: [-1] },
  { nr: SYS.uname, args: [dataAddr] },
  { nr: SYS.kill, args: [pid, 0] },
  { nr: SYS.getppid },
];

describe('batches of injected calls', function () {
  this.timeout(30000);
  afterEach(() => killStarted());

  for (const guarded of [true, false]) {
    const kind = guarded ? 'a guarded task' : 'a task that dies with cptrst';
    it(`in ${kind}: the results of the calls one by one, in one stop; untilError; longer than one table`, async () => {
      const { pid } = await startSleeping('/bin/sleep', ['100']);
      if (guarded) seizeAndStop(pid);
      else seizeExitKill(pid);
      const t = new X86Tracee(pid, pid, { diesWithTracer: !guarded });
      const s = t.scratch();
      const batch = calls(pid, s.dataAddr);
      const one = batch.map((c) => t.syscall(c.nr, c.args ?? []));
      const uname = t.readMemory(s.dataAddr, 65);
      t.writeMemory(s.dataAddr, Buffer.alloc(65));
      expect(one).to.deep.equal([BigInt(pid), BigInt(pid), -9n, 0n, 0n, BigInt(process.pid)]);

      let stops = t.stops;
      expect(t.syscalls(batch)).to.deep.equal(one);
      expect(t.stops - stops).to.equal(1);
      expect(t.readMemory(s.dataAddr, 65)).to.deep.equal(uname); // written by the batch's uname
      // Every signal stays blocked between calls (guarded), SIGTRAP aside (the single step's), and the batch's signal is not left pending.
      const st = linux.readStatus(pid);
      expect(st.sigBlk).to.equal(guarded ? ALL_BLOCKABLE : ALL_BLOCKABLE & ~sigBit(SIG.SIGTRAP));
      expect(st.sigPnd | st.shdPnd).to.equal(0n);

      // untilError: the batch ends with the first failure, which is the last result.
      expect(t.syscalls(batch, { untilError: true })).to.deep.equal(one.slice(0, 3));
      expect(t.syscalls([{ nr: SYS.getpid }, { nr: SYS.getpid }], { untilError: true })).to.deep.equal([BigInt(pid), BigInt(pid)]);

      // More calls than one table holds: several stops, every result.
      stops = t.stops;
      const many = Array.from({ length: 300 }, (_, i) => ({ nr: SYS.close, args: [100000 + i] }));
      expect(t.syscalls(many)).to.deep.equal(many.map(() => -9n));
      expect(t.stops - stops).to.be.within(2, 4);
      expect(t.syscalls([])).to.deep.equal([]);

      // A batch with a call that changes the mask runs one call at a time.
      stops = t.stops;
      expect(t.syscalls([{ nr: SYS.getpid }, { nr: linux.syscallNumber('rt_sigprocmask'), args: [0, 0, s.dataAddr, 8] }])).to.deep.equal([BigInt(pid), 0n]);
      expect(t.stops - stops).to.equal(guarded ? 4 : 2);

      // A single call of a task that dies with cptrst takes one stop too (the single step); a guarded one two.
      stops = t.stops;
      expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
      expect(t.stops - stops).to.equal(guarded ? 2 : 1);

      letGo(t, 'run');
      expect(pollSync(() => linux.readStatus(pid).state === 'S')).to.equal(true);
      const after = linux.readStatus(pid);
      expect(after.tracerPid).to.equal(0);
      expect(after.sigBlk).to.equal(0n);
      expect(after.sigPnd | after.shdPnd).to.equal(0n);
      expect(linux.readMaps(pid).filter((m) => m.start === s.addr)).to.deep.equal([]);
    });
  }

  it('a started batch (startSyscalls) runs while cptrst goes on: the tracee is busy until its results are collected, in one stop; never in a guarded task', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    seizeExitKill(pid);
    const t = new X86Tracee(pid, pid, { diesWithTracer: true });
    const s = t.scratch();
    t.stage(Buffer.from(encodeStruct(linux.Timespec, { sec: 0n, nsec: 300_000_000n })));
    const batch = [{ nr: SYS.getpid }, { nr: linux.syscallNumber('clock_nanosleep'), args: [linux.CLOCK.MONOTONIC, 0, s.dataAddr, 0] }, { nr: SYS.close, args: [-1] }, { nr: SYS.gettid }];
    const stops = t.stops;
    const wait = t.startSyscalls(batch);
    expect(wait).to.be.a('function');
    // The task runs its batch (asleep in clock_nanosleep), not stopped for cptrst.
    expect(pollSync(() => linux.readStat(pid).state === 'S')).to.equal(true);
    expect(() => t.syscall(SYS.getpid)).to.throw(/running a batch of calls/);
    expect(() => t.startSyscalls(batch)).to.throw(/running a batch of calls/);
    expect(wait!()).to.deep.equal([BigInt(pid), 0n, -9n, BigInt(pid)]);
    expect(wait!()).to.deep.equal([BigInt(pid), 0n, -9n, BigInt(pid)]);
    expect(t.stops - stops).to.equal(1);
    expect(linux.readStat(pid).state).to.equal('t');
    // Usable again; too long or empty batches are not started.
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.startSyscalls([])).to.equal(undefined);
    expect(t.startSyscalls(Array.from({ length: 200 }, () => ({ nr: SYS.getpid })))).to.equal(undefined);
    letGo(t, 'run');
    expect(pollSync(() => linux.readStatus(pid).state === 'S' && linux.readStatus(pid).tracerPid === 0)).to.equal(true);

    const g = await startSleeping('/bin/sleep', ['100']);
    seizeAndStop(g.pid);
    const guarded = new X86Tracee(g.pid, g.pid);
    expect(guarded.startSyscalls(batch)).to.equal(undefined);
    letGo(guarded, 'run');
  });

  it('in a task that dies with cptrst, every handler read and set again in one batch each (as the signal dump and restore do)', async () => {
    const p = await python(['SIGURG', 'SIGUSR1'], ['SIGWINCH'], []);
    const before = linux.readStatus(p.pid);
    seizeExitKill(p.pid);
    const t = new X86Tracee(p.pid, p.pid, { diesWithTracer: true });
    const s = t.scratch();
    const sigs = Array.from({ length: 64 }, (_, i) => i + 1).filter((x) => x !== SIG.SIGKILL && x !== SIG.SIGSTOP);
    let stops = t.stops;
    const read = t.syscalls(sigs.map((x, i) => ({ nr: SYS.rt_sigaction, args: [x, 0, s.dataAddr + BigInt(32 * i), 8] })));
    expect(read).to.deep.equal(sigs.map(() => 0n));
    expect(t.stops - stops).to.equal(1);
    const acts = t.readMemory(s.dataAddr, 32 * sigs.length);
    expect(acts.readBigUInt64LE(32 * sigs.indexOf(SIG.SIGWINCH))).to.equal(1n); // SIG_IGN
    // Set again from a copy, with every default-ignored signal's handler among them: still one stop.
    t.stage(acts, 4096);
    stops = t.stops;
    const set = t.syscalls(sigs.map((x, i) => ({ nr: SYS.rt_sigaction, args: [x, s.dataAddr + 4096n + BigInt(32 * i), 0, 8] })), { untilError: true });
    expect(set).to.deep.equal(sigs.map(() => 0n));
    expect(t.stops - stops).to.equal(1);
    letGo(t, 'run');
    expect(pollSync(() => linux.readStatus(p.pid).state === 'S')).to.equal(true);
    const after = linux.readStatus(p.pid);
    expect([after.sigCgt, after.sigIgn, after.tracerPid]).to.deep.equal([before.sigCgt, before.sigIgn, 0]);
    linux.kill(p.pid, SIG.SIGUSR1);
    expect(pollSync(() => p.out().includes('HANDLER'))).to.equal(true);
    expect(p.out()).to.equal(`READY\nHANDLER ${SIG.SIGUSR1}\n`);
  });

  it('a guarded batch ends with a signal the task ignores and has not pending; with none such, the calls run one by one', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    seizeAndStop(pid);
    const t = new X86Tracee(pid, pid);
    const s = t.scratch();
    const batch = calls(pid, s.dataAddr);
    const want = batch.map((c) => t.syscall(c.nr, c.args ?? []));
    // SIGURG, then SIGWINCH, sent while it is held: pending (traced, blocked). The batch takes the next one.
    for (const [sig, stops] of [[SIG.SIGURG, 1], [SIG.SIGWINCH, 1], [SIG.SIGCHLD, 2 * batch.length]] as const) {
      linux.kill(pid, sig);
      expect(pollSync(() => (linux.readStatus(pid).shdPnd & sigBit(sig)) !== 0n)).to.equal(true);
      const before = t.stops;
      expect(t.syscalls(batch)).to.deep.equal(want);
      expect(t.stops - before, `with ${linux.signalName(sig)} pending`).to.equal(stops);
    }
    // The signals sent stayed where they were (none taken off the task), and no other was added.
    const st = linux.readStatus(pid);
    expect(t.interceptedSignals).to.deep.equal([]);
    expect(st.shdPnd).to.equal(sigBit(SIG.SIGURG) | sigBit(SIG.SIGWINCH) | sigBit(SIG.SIGCHLD));
    expect(st.sigPnd).to.equal(0n);
    letGo(t, 'run');
    // Let go, it discards them (ignored by default) and sleeps on.
    expect(pollSync(() => { const x = linux.readStatus(pid); return x.state === 'S' && (x.sigPnd | x.shdPnd) === 0n; })).to.equal(true);
  });

  it('a guarded batch uses a signal the process ignores (SIG_IGN) when it catches the default-ignored ones, and none when it ignores nothing; no handler runs', async () => {
    const CAUGHT = ['SIGURG', 'SIGWINCH', 'SIGCHLD'];
    for (const [ignored, stopsPerBatch] of [[['SIGPIPE'], 1], [[], 0]] as const) {
      const p = await python(CAUGHT, [...ignored], ['SIGPIPE', 'SIGXFSZ'].filter((x) => !(ignored as readonly string[]).includes(x)));
      const before = linux.readStatus(p.pid);
      expect(before.sigIgn).to.equal(linux.sigsetFromList(ignored.map((x) => linux.signalNumber(x)!)));
      seizeAndStop(p.pid);
      const t = new X86Tracee(p.pid, p.pid);
      const s = t.scratch();
      const batch = calls(p.pid, s.dataAddr);
      const want = batch.map((c) => t.syscall(c.nr, c.args ?? []));
      const stops = t.stops;
      for (let i = 0; i < 5; i++) expect(t.syscalls(batch)).to.deep.equal(want);
      expect(t.stops - stops).to.equal(stopsPerBatch ? 5 : 5 * 2 * batch.length);
      letGo(t, 'run');
      expect(pollSync(() => linux.readStatus(p.pid).state === 'S')).to.equal(true);
      const after = linux.readStatus(p.pid);
      expect([after.sigCgt, after.sigIgn, after.sigBlk, after.tracerPid]).to.deep.equal([before.sigCgt, before.sigIgn, before.sigBlk, 0]);
      // Its handlers still work, and none ran for our batches.
      linux.kill(p.pid, SIG.SIGURG);
      expect(pollSync(() => p.out().includes('HANDLER'))).to.equal(true);
      expect(p.out()).to.equal(`READY\nHANDLER ${SIG.SIGURG}\n`);
    }
  });

  it('the single step of a task that dies with cptrst leaves its SIGTRAP handler alone, and is not used while SIGTRAP may be ignored', async () => {
    for (const trap of ['caught', 'ignored'] as const) {
      const p = await python(trap === 'caught' ? ['SIGTRAP'] : [], trap === 'ignored' ? ['SIGTRAP'] : [], []);
      const before = linux.readStatus(p.pid);
      seizeExitKill(p.pid);
      const t = new X86Tracee(p.pid, p.pid, { diesWithTracer: true });
      t.scratch();
      let stops = t.stops;
      for (let i = 0; i < 10; i++) expect(t.syscall(SYS.getpid)).to.equal(BigInt(p.pid));
      expect(t.stops - stops).to.equal(trap === 'caught' ? 10 : 20);
      if (trap === 'caught') {
        // SIG_IGN for SIGTRAP, set inside the task: from then on two stops a call, and it stays ignored.
        const act = t.stage(encodeStruct(linux.KernelSigaction, { handler: 1n, flags: 0n, restorer: 0n, mask: 0n }));
        const old = t.stage(Buffer.alloc(32), 64);
        expect(t.syscall(SYS.rt_sigaction, [SIG.SIGTRAP, act, old, 8])).to.equal(0n);
        stops = t.stops;
        for (let i = 0; i < 10; i++) expect(t.syscall(SYS.getpid)).to.equal(BigInt(p.pid));
        expect(t.stops - stops).to.equal(20);
        // ...and back to the handler it had (a batch): one stop again.
        expect(t.syscalls([{ nr: SYS.rt_sigaction, args: [SIG.SIGTRAP, old, 0, 8] }, { nr: SYS.getpid }])).to.deep.equal([0n, BigInt(p.pid)]);
        stops = t.stops;
        expect(t.syscall(SYS.getpid)).to.equal(BigInt(p.pid));
        expect(t.stops - stops).to.equal(1);
      }
      letGo(t, 'run');
      expect(pollSync(() => linux.readStatus(p.pid).state === 'S')).to.equal(true);
      const after = linux.readStatus(p.pid);
      expect([after.sigCgt, after.sigIgn, after.sigBlk, after.tracerPid]).to.deep.equal([before.sigCgt, before.sigIgn, before.sigBlk, 0]);
      if (trap === 'caught') {
        // The handler is still the one of SIGTRAP, and never ran for our steps.
        linux.kill(p.pid, SIG.SIGTRAP);
        expect(pollSync(() => p.out().includes('HANDLER'))).to.equal(true);
      }
      expect(p.out()).to.equal(trap === 'caught' ? `READY\nHANDLER ${SIG.SIGTRAP}\n` : 'READY\n');
    }
  });
  it('in a process of another pid namespace: the batch ends by its own ids (getpid/gettid inside it), in one stop, and it runs on', async () => {
    const u = await startSleeping('/usr/bin/unshare', ['--pid', '--fork', '/bin/sleep', '100']);
    let pid = 0;
    expect(pollSync(() => {
      const c = fs.readFileSync(`/proc/${u.pid}/task/${u.pid}/children`, 'utf8').trim();
      pid = Number(c.split(/\s+/)[0] || 0);
      return pid > 0 && linux.readStat(pid).state === 'S';
    })).to.equal(true);
    alsoKill(pid);
    seizeAndStop(pid);
    const t = new X86Tracee(pid, pid);
    t.scratch();
    const stops = t.stops;
    // Inside its namespace the process is pid 1; cptrst's pid for it names no process there.
    expect(t.syscalls([{ nr: SYS.getpid }, { nr: SYS.gettid }])).to.deep.equal([1n, 1n]);
    expect(t.stops - stops).to.equal(1);
    letGo(t, 'run');
    expect(pollSync(() => linux.readStatus(pid).state === 'S' && linux.readStatus(pid).tracerPid === 0)).to.equal(true);
  });

  it('in a process under a seccomp filter (which could deny the raise): the calls run one by one', async () => {
    const code = [
      'import ctypes, struct, sys, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'class Prog(ctypes.Structure): _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]',
      'f = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0x7fff0000))',
      'p = Prog(1, ctypes.cast(f, ctypes.c_void_p))',
      'assert libc.prctl(38, 1, 0, 0, 0) == 0',
      'assert libc.prctl(22, 2, ctypes.byref(p), 0, 0) == 0',
      'print("READY"); sys.stdout.flush()',
      'while True: time.sleep(100)',
    ].join('\n');
    const { pid } = await startTarget('/usr/bin/python3', ['-c', code]);
    expect(pollSync(() => linux.readStat(pid).state === 'S')).to.equal(true);
    expect(linux.readStatus(pid).seccomp).to.equal(2);
    seizeAndStop(pid);
    const t = new X86Tracee(pid, pid);
    t.scratch();
    const stops = t.stops;
    expect(t.syscalls([{ nr: SYS.getpid }, { nr: SYS.getpid }, { nr: SYS.getpid }])).to.deep.equal([BigInt(pid), BigInt(pid), BigInt(pid)]);
    expect(t.stops - stops).to.equal(6);
    letGo(t, 'run');
    expect(pollSync(() => linux.readStatus(pid).state === 'S' && linux.readStatus(pid).tracerPid === 0)).to.equal(true);
  });
});
