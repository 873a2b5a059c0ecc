/**
 * X86Tracee on a real process: a `/bin/sleep 100` seized and interrupted the way the freezer does
 * it. Every ptrace sequence below runs synchronously (see support.ts).
 */
import { expect } from 'chai';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { container } from 'tsyringe';
import { CptError, Tokens, TraceeFactory, encodeStruct, linux } from '@cptrst/core';
import { x86ptrace } from '../src';
import { SCRATCH_SIZE, X86Tracee, register } from '../src';
import { compileIn, gone, killStarted, letGo, poll, pollSync, seizeAndStop, startSleeping, startTarget, thrown, tmpDir } from './support';

const { SYS, SIG, sigBit } = linux;
const ptrace = x86ptrace;

/** All signals but SIGKILL and SIGSTOP, which the kernel never lets a mask hold. */
const ALL_BLOCKABLE = 0xffffffffffffffffn & ~(sigBit(SIG.SIGKILL) | sigBit(SIG.SIGSTOP));

function scratchInMaps(pid: number, addr: bigint): linux.MapEntry | undefined {
  return linux.readMaps(pid).find((m) => m.start === addr);
}

describe('X86Tracee on a stopped /bin/sleep', function () {
  this.timeout(20000);
  const c = container.createChildContainer();
  register(c);
  const factory = (): TraceeFactory => c.resolve<TraceeFactory>(Tokens.TraceeFactory);

  afterEach(() => killStarted());

  it('runs syscalls inside it, stages data, maps a scratch area, and lets it go on sleeping exactly where it was', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const before = linux.readStatus(pid);
    expect(before.sigBlk).to.equal(0n);

    // ---- synchronous from here to the detach ----
    seizeAndStop(pid);
    const t = factory().fromStopped(pid, pid);
    expect(t).to.be.instanceOf(X86Tracee);
    const x = t as X86Tracee;
    expect(x.pid).to.equal(pid);
    expect(x.tid).to.equal(pid);
    expect(x.released).to.equal(false);
    expect(x.blockedSignals).to.equal(0n);
    const frozen = x.frozenRegs;
    // sleep is in clock_nanosleep, interrupted: the kernel would restart it with restart_syscall.
    expect(Number(frozen.orig_rax)).to.equal(SYS.clock_nanosleep);
    expect(BigInt.asIntN(64, frozen.rax)).to.equal(-516n);

    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.syscall(SYS.getppid)).to.equal(BigInt(process.pid));
    expect(t.syscall(SYS.gettid)).to.equal(BigInt(pid));
    // While cptrst borrows the thread, every signal is blocked.
    expect(linux.readStatus(pid).sigBlk).to.equal(ALL_BLOCKABLE);
    // A signal sent meanwhile stays pending instead of being delivered.
    linux.kill(pid, SIG.SIGWINCH);
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(linux.readStatus(pid).shdPnd & sigBit(SIG.SIGWINCH)).to.equal(sigBit(SIG.SIGWINCH));
    expect(t.interceptedSignals).to.deep.equal([]);

    // Failures come back as -errno; syscallOk turns them into a CptError naming the call.
    expect(t.syscall(SYS.close, [-1])).to.equal(-9n);
    const err = thrown(() => t.syscallOk(SYS.close, [987654], 'close of fd 987654'));
    expect(err).to.be.instanceOf(CptError);
    expect(err.code).to.equal('EBADF');
    expect(err.pid).to.equal(pid);
    expect(err.object).to.equal('close of fd 987654');

    // The scratch area: an rwx private anonymous mapping holding the syscall instruction. A task
    // that must survive cptrst gets it (with its signal frame) before the first call; sleep is
    // linked with libc, whose signal restorer lets even that first mmap run guarded.
    expect((t as X86Tracee).firstCall).to.equal('stack-frame');
    const s = t.scratch();
    expect(t.scratch()).to.equal(s);
    expect(s.size).to.equal(SCRATCH_SIZE);
    expect(s.dataAddr).to.equal(s.addr + 8192n); // after the code and the batch table
    expect(s.dataAddr + BigInt(s.dataSize) <= s.addr + BigInt(s.size) - 4096n).to.equal(true);
    const m = scratchInMaps(pid, s.addr);
    expect(m, 'scratch area in /proc/PID/maps').to.not.equal(undefined);
    expect(m!.end - m!.start).to.equal(BigInt(SCRATCH_SIZE));
    expect(m!.prot).to.deep.equal({ read: true, write: true, exec: true });
    expect(m!.shared).to.equal(false);
    expect(m!.inode).to.equal(0n);
    expect(t.reservedRanges()).to.deep.equal([{ start: s.addr, end: s.addr + BigInt(SCRATCH_SIZE) }]);
    expect(t.readMemory(s.addr, 2)).to.deep.equal(Buffer.from([0x0f, 0x05])); // syscall
    // Syscalls still work, now run from the scratch area's own instruction.
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));

    // Staged data round-trips, is seen by the process itself (process_vm_readv), and by the kernel
    // when an injected syscall reads it.
    const data = crypto.randomBytes(3000);
    const at = t.stage(data, 100);
    expect(at).to.equal(s.dataAddr + 100n);
    expect(t.readMemory(at, data.length)).to.deep.equal(data);
    const viaVm = Buffer.alloc(data.length);
    expect(linux.processVmReadv(pid, at, viaVm)).to.equal(data.length);
    expect(viaVm).to.deep.equal(data);
    expect(t.syscall(SYS.access, [t.stage(Buffer.from('/proc/self/status\0'), 0), 0])).to.equal(0n);
    expect(t.syscall(SYS.access, [t.stage(Buffer.from('/no/such/cptrst/file\0'), 0), 0])).to.equal(-2n); // ENOENT
    // And what the kernel writes into it is read back: uname() into the data area.
    const uts = s.dataAddr + 8192n;
    expect(t.syscall(SYS.uname, [uts])).to.equal(0n);
    expect(t.readMemory(uts, 6).toString('latin1')).to.equal('Linux\0');
    // writeMemory + readMemory on the process's own stack (restored after).
    const stackWord = t.readMemory(frozen.rsp, 8);
    t.writeMemory(frozen.rsp, Buffer.from('cptrst!!'));
    const word = Buffer.alloc(8);
    expect(linux.processVmReadv(pid, frozen.rsp, word)).to.equal(8);
    expect(word.toString()).to.equal('cptrst!!');
    expect(t.readMemory(frozen.rsp, 8).toString()).to.equal('cptrst!!');
    t.writeMemory(frozen.rsp, stackWord);
    // Too much data for the scratch area is refused.
    expect(thrown(() => t.stage(Buffer.alloc(s.dataSize + 1))).code).to.equal('E2BIG');
    expect(thrown(() => t.stage(Buffer.alloc(16), s.dataSize - 8)).code).to.equal('E2BIG');

    letGo(t, 'run');
    expect(t.released).to.equal(true);
    // ---- released: the scratch area is gone, the mask is back, nobody traces it ----
    expect(scratchInMaps(pid, s.addr)).to.equal(undefined);
    expect(pollSync(() => linux.readStatus(pid).state === 'S')).to.equal(true);
    const after = linux.readStatus(pid);
    expect(after.tracerPid).to.equal(0);
    expect(after.sigBlk).to.equal(0n);
    // The SIGWINCH held while we worked was delivered (and ignored, its default) at release.
    expect(pollSync(() => (linux.readStatus(pid).shdPnd & sigBit(SIG.SIGWINCH)) === 0n)).to.equal(true);
    expect(thrown(() => t.syscall(SYS.getpid)).code).to.equal('ESRCH');
    letGo(t, 'run'); // a second release is a no-op

    // Seized again: it is where it was (same rip and stack), still inside its sleep.
    seizeAndStop(pid);
    const again = ptrace.getRegs(pid);
    expect(again.rip).to.equal(frozen.rip);
    expect(again.rsp).to.equal(frozen.rsp);
    expect(again.fs_base).to.equal(frozen.fs_base);
    expect(again.rbx).to.equal(frozen.rbx);
    expect([SYS.clock_nanosleep, SYS.restart_syscall]).to.include(Number(again.orig_rax));
    ptrace.detach(pid, 0);
    // ---- end of the synchronous part ----

    expect(pollSync(() => linux.readStatus(pid).state === 'S')).to.equal(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(linux.readStat(pid).state).to.equal('S'); // still asleep: 100 s are not over
    expect(linux.readStatus(pid).tracerPid).to.equal(0);
  });

  it('release("stop") leaves it stopped (T) and untraced, without the scratch area; SIGCONT lets it sleep on', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    seizeAndStop(pid);
    const t = factory().fromStopped(pid, pid);
    const s = t.scratch();
    expect(scratchInMaps(pid, s.addr)).to.not.equal(undefined);
    letGo(t, 'stop');
    expect(pollSync(() => linux.readStatus(pid).state === 'T')).to.equal(true);
    expect(linux.readStatus(pid).tracerPid).to.equal(0);
    expect(scratchInMaps(pid, s.addr)).to.equal(undefined);
    linux.kill(pid, SIG.SIGCONT);
    expect(pollSync(() => linux.readStatus(pid).state === 'S')).to.equal(true);
  });

  it('release("kill") kills it, leaving its exit to its parent', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    seizeAndStop(pid);
    const t = factory().fromStopped(pid, pid);
    t.scratch();
    letGo(t, 'kill');
    expect(t.released).to.equal(true);
    // This test process is its parent: the exit is left for our own wait (libuv's), not taken.
    expect(pollSync(() => gone(pid))).to.equal(true);
  });

  it('release restores the blocked mask it is given and queues intercepted signals again', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    seizeAndStop(pid);
    const t = factory().fromStopped(pid, pid);
    // As if SIGWINCH had been taken off the task at the freeze, and the task had it blocked:
    // queued again at release, it stays pending behind the restored mask.
    t.blockedSignals = sigBit(SIG.SIGWINCH);
    t.interceptedSignals.push(encodeStruct(linux.Siginfo, { signo: SIG.SIGWINCH, errno: 0, code: -1 /* SI_QUEUE */ }));
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    letGo(t, 'run');
    expect(t.interceptedSignals).to.deep.equal([]);
    expect(pollSync(() => linux.readStatus(pid).state === 'S')).to.equal(true);
    const st = linux.readStatus(pid);
    expect(st.tracerPid).to.equal(0);
    expect(st.sigBlk).to.equal(sigBit(SIG.SIGWINCH));
    expect((st.sigPnd | st.shdPnd) & sigBit(SIG.SIGWINCH)).to.equal(sigBit(SIG.SIGWINCH));
    expect(linux.readMaps(pid).filter((m) => m.prot.read && m.prot.write && m.prot.exec)).to.deep.equal([]);
  });
});

describe('code to run guarded calls on, found before the freeze (TraceeFactory.prepare)', function () {
  this.timeout(30000);
  const c = container.createChildContainer();
  register(c);
  const factory = (): TraceeFactory => c.resolve<TraceeFactory>(Tokens.TraceeFactory);
  afterEach(() => killStarted());

  /** A process whose first signal restorer in a search of its code is its own, which it can overwrite (fixtures/moving-restorer.c). */
  async function start(): Promise<{ pid: number; restorer: bigint; changed: string }> {
    const bin = compileIn(path.resolve(__dirname, '../../test/fixtures'), 'moving-restorer');
    const changed = path.join(tmpDir(), `restorer-changed-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    const { pid, vars } = await startTarget(bin, [changed]);
    expect(await poll(() => linux.readStat(pid).state === 'S')).to.equal(true);
    return { pid, restorer: vars.restorer, changed };
  }

  function release(t: X86Tracee, pid: number): void {
    letGo(t, 'run');
    expect(pollSync(() => linux.readStatus(pid).state === 'S')).to.equal(true);
    expect(linux.readStatus(pid).tracerPid).to.equal(0);
    expect(linux.readMaps(pid).filter((m) => m.prot.read && m.prot.write && m.prot.exec && m.start !== 0x100000n)).to.deep.equal([]);
  }

  it('uses what it found once it has checked that the same code is still there', async () => {
    const { pid, restorer } = await start();
    const f = factory();
    expect(typeof f.prepare).to.equal('function');
    f.prepare!(pid);
    seizeAndStop(pid);
    const t = f.fromStopped(pid, pid) as X86Tracee;
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.firstCall).to.equal('stack-frame');
    expect(t.gadgetSource).to.equal('prepared');
    expect(t.codeGadgets?.restorer).to.equal(restorer);
    release(t, pid);
    expect(t.lastCall).to.equal('stack-frame');
  });

  it('searches again when that code changed between the search and the freeze', async () => {
    const { pid, restorer, changed } = await start();
    const f = factory();
    f.prepare!(pid);
    linux.kill(pid, SIG.SIGUSR1);
    expect(await poll(() => fs.existsSync(changed))).to.equal(true);
    seizeAndStop(pid);
    const t = f.fromStopped(pid, pid) as X86Tracee;
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.firstCall).to.equal('stack-frame');
    expect(t.gadgetSource).to.equal('searched');
    const g = t.codeGadgets!;
    expect(g.restorer).to.not.equal(restorer);
    // What it runs on now is a restorer indeed (libc's).
    expect(t.readMemory(g.restorer, 5).equals(Buffer.from([0xb8, SYS.rt_sigreturn, 0, 0, 0])) || t.readMemory(g.restorer, 4).equals(Buffer.from([0x48, 0xc7, 0xc0, SYS.rt_sigreturn]))).to.equal(true);
    release(t, pid);
  });

  it('searches after the freeze when nothing was prepared, and prepares nothing for a process that is gone', async () => {
    const { pid, restorer } = await start();
    const f = factory();
    f.prepare!(0x7ffffff0); // no such process: nothing, no error
    seizeAndStop(pid);
    const t = f.fromStopped(pid, pid) as X86Tracee;
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.gadgetSource).to.equal('searched');
    expect(t.codeGadgets?.restorer).to.equal(restorer);
    release(t, pid);
  });
});
