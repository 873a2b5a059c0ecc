/**
 * The x86-64 register and XSAVE layouts and the ptrace requests that move them, on real
 * processes (these were core's Linux-binding tests until the layouts moved into this package).
 */
import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import { CptError, decodeStruct, linux } from '@cptrst/core';
import {
  NT_X86, RSEQ_SIG, USER_REGS_FIELDS, USER_REGS_SIZE, UserRegs, debugRegOffset, decodeUserRegs, decodeXsaveHeader, encodeUserRegs,
  userRegOffset, x86ptrace as ptrace, xsaveInfo,
} from '../src';
import { killPid, pollSync, spawnSleeping } from '@cptrst/core/dist/test/fixtures/linux-fixtures';

const {
  NT, PTRACE_EVENT, SIG, SYS, Siginfo, WNOHANG, cpuFlags, isRestartErrno, kill, processExists, readStat, readStatus,
  sigBit, signedReg, tgkill, waitTracee,
} = linux;

describe('x86-64 bindings: registers, struct user, XSAVE', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    killPid(child?.pid);
    child = undefined;
  });

  it('seize / interrupt / waitpid / regs / detach on a sleeping child', async () => {
    child = await spawnSleeping('/bin/sleep', ['60']);
    const pid = child.pid!;
    // From here on, synchronous: libuv must not get to waitpid() in between.
    ptrace.seize(pid, 0);
    expect(readStatus(pid).tracerPid).to.equal(process.pid);
    expect(waitTracee(pid, WNOHANG).pid).to.equal(0);
    ptrace.interrupt(pid);
    const w = waitTracee(pid);
    expect(w.pid).to.equal(pid);
    expect(w.stopped).to.deep.equal({ sig: SIG.SIGTRAP, event: PTRACE_EVENT.STOP, groupStop: false, syscallStop: false });
    expect(readStatus(pid).state).to.equal('t');

    const regs = ptrace.getRegs(pid);
    // sleep(1) sits in clock_nanosleep; interrupted, rax shows the restart code
    expect(Number(regs.orig_rax)).to.equal(SYS.clock_nanosleep);
    expect(signedReg(regs.rax)).to.equal(-516n); // -ERESTART_RESTARTBLOCK
    expect(isRestartErrno(signedReg(regs.rax))).to.equal(true);
    expect(regs.cs).to.equal(0x33n);
    expect(regs.ss).to.equal(0x2bn);
    expect(regs.fs_base > 0n).to.equal(true);

    expect(ptrace.getRegset(pid, NT.PRSTATUS, 1024)).to.deep.equal(encodeUserRegs(regs));
    expect(ptrace.getRegset(pid, NT.PRSTATUS, 1024).length).to.equal(USER_REGS_SIZE);
    expect(ptrace.peekUser(pid, userRegOffset('rip'))).to.equal(regs.rip);
    expect(ptrace.peekUser(pid, userRegOffset('orig_rax'))).to.equal(regs.orig_rax);
    expect(ptrace.peekData(pid, regs.rip)).to.be.a('bigint');

    // setRegs / pokeUser round trips, then restore
    ptrace.setRegs(pid, { ...regs, r15: 0x1122334455667788n });
    expect(ptrace.getRegs(pid).r15).to.equal(0x1122334455667788n);
    ptrace.pokeUser(pid, userRegOffset('r14'), 0xdeadbeefn);
    expect(ptrace.getRegs(pid).r14).to.equal(0xdeadbeefn);
    ptrace.setRegs(pid, regs);
    expect(ptrace.getRegs(pid)).to.deep.equal(regs);

    // debug registers through struct user
    expect(ptrace.peekUser(pid, debugRegOffset(7))).to.equal(0n);
    ptrace.pokeUser(pid, debugRegOffset(0), regs.rip);
    expect(ptrace.peekUser(pid, debugRegOffset(0))).to.equal(regs.rip);
    ptrace.pokeUser(pid, debugRegOffset(0), 0n);

    // FPU / xstate
    const fx = ptrace.getFpRegs(pid);
    expect(fx.length).to.equal(512);
    expect(ptrace.getRegset(pid, NT.PRFPREG, 4096)).to.deep.equal(fx);
    const xs = ptrace.getRegset(pid, NT_X86.XSTATE, 65536);
    expect(xs.length).to.be.greaterThan(512);
    expect(xs.length).to.equal(xsaveInfo().size);
    expect(xs.subarray(0, 160)).to.deep.equal(fx.subarray(0, 160)); // legacy area shared with FXSAVE
    expect(decodeXsaveHeader(xs).xstateBv & ~xsaveInfo().features).to.equal(0n); // only enabled components in use
    expect(ptrace.setRegset(pid, NT_X86.XSTATE, xs)).to.equal(xs.length);

    // siginfo of an interrupt stop: SIGTRAP with si_code = PTRACE_EVENT_STOP << 8 | SIGTRAP
    const si = decodeStruct(Siginfo, ptrace.getSiginfo(pid));
    expect(si.signo).to.equal(SIG.SIGTRAP);
    expect(si.code).to.equal((PTRACE_EVENT.STOP << 8) | SIG.SIGTRAP);
    ptrace.setSiginfo(pid, si.raw);

    // sigmask and queued signals
    expect(ptrace.getSigmask(pid)).to.equal(0n);
    ptrace.setSigmask(pid, sigBit(SIG.SIGUSR1));
    expect(ptrace.getSigmask(pid)).to.equal(sigBit(SIG.SIGUSR1));
    expect(readStatus(pid).sigBlk).to.equal(sigBit(SIG.SIGUSR1));
    kill(pid, SIG.SIGUSR1);
    tgkill(pid, pid, SIG.SIGUSR1);
    const shared = ptrace.peekSiginfo(pid, { shared: true, nr: 8 });
    expect(shared.length).to.equal(1);
    const q = decodeStruct(Siginfo, shared[0]);
    expect(q.signo).to.equal(SIG.SIGUSR1);
    expect(q.code).to.equal(0); // SI_USER
    expect(q.pid).to.equal(process.pid);
    const priv = ptrace.peekSiginfo(pid, { shared: false, nr: 8 });
    expect(priv.length).to.equal(1);
    expect(decodeStruct(Siginfo, priv[0]).code).to.equal(-6); // SI_TKILL
    expect(ptrace.peekAllSiginfo(pid, true, 1).length).to.equal(1);
    expect(readStatus(pid).shdPnd).to.equal(sigBit(SIG.SIGUSR1));

    // rseq registered by glibc 2.36
    const rseq = ptrace.getRseqConfiguration(pid);
    expect(rseq.rseqAbiPointer > 0n).to.equal(true);
    expect(rseq.rseqAbiSize).to.be.at.least(20);
    expect(rseq.signature).to.equal(RSEQ_SIG);

    const info = ptrace.getSyscallInfo(pid);
    expect(info.op).to.equal(0); // PTRACE_SYSCALL_INFO_NONE for an interrupt stop
    expect(info.arch).to.equal(0xc000003e);
    expect(info.instructionPointer).to.equal(regs.rip);

    ptrace.detach(pid, 0);
    expect(pollSync(() => readStatus(pid).state === 'S', 3000)).to.equal(true);
    const after = readStatus(pid);
    expect(after.tracerPid).to.equal(0);
    expect(readStat(pid).state).to.equal('S');
    expect(processExists(pid)).to.equal(true);
  });

  it('errors: ESRCH for a dead pid and an untraced process, EPERM for a second seize', async () => {
    const dead = spawn('/bin/true');
    await new Promise((r) => dead.on('exit', r));
    try {
      ptrace.seize(dead.pid!, 0);
      expect.fail('seize of a dead pid succeeded');
    } catch (e) {
      expect(e).to.be.instanceOf(CptError);
      expect((e as CptError).code).to.equal('ESRCH');
      expect((e as CptError).pid).to.equal(dead.pid);
      expect((e as CptError).message).to.equal(`ptrace(PTRACE_SEIZE, ${dead.pid}): No such process`);
    }
    child = await spawnSleeping('/bin/sleep', ['60']);
    const pid = child.pid!;
    expect(() => ptrace.getRegs(pid)).to.throw(CptError, /PTRACE_GETREGS/).with.property('code', 'ESRCH');
    ptrace.seize(pid, 0);
    expect(() => ptrace.seize(pid, 0)).to.throw(CptError).with.property('code', 'EPERM');
    // running (not stopped) tracee: requests other than INTERRUPT fail with ESRCH
    expect(() => ptrace.getRegs(pid)).to.throw(CptError).with.property('code', 'ESRCH');
    expect(() => ptrace.seize(pid, 1 << 30)).to.throw(CptError); // EPERM (already traced)
    ptrace.interrupt(pid);
    waitTracee(pid);
    ptrace.detach(pid);
    expect(() => kill(0x3ffffff0, 0)).to.throw(CptError).with.property('code', 'ESRCH');
  });

  it('xsaveInfo reads the xfeatures mask at byte 464 of NT_X86_XSTATE', () => {
    const x = xsaveInfo();
    expect(x.size).to.be.greaterThan(512);
    expect(x.features & 0x3n).to.equal(0x3n); // x87, SSE: every x86-64 CPU
    // The others as this CPU says (no CPU model or feature is assumed).
    expect((x.features & 0x4n) !== 0n).to.equal(cpuFlags().includes('avx'));
    if (cpuFlags().includes('avx512f')) expect(x.features & 0xe0n).to.equal(0xe0n);
    expect(x.swReserved.readUInt32LE(0)).to.not.equal(0x46505853); // not the signal-frame magic
    expect(xsaveInfo()).to.equal(x);
  });

  it('user_regs_struct: 27 fields in kernel order, round trip', () => {
    expect(USER_REGS_FIELDS.length).to.equal(27);
    expect(USER_REGS_SIZE).to.equal(216);
    expect(userRegOffset('r15')).to.equal(0);
    expect(userRegOffset('rax')).to.equal(80);
    expect(userRegOffset('orig_rax')).to.equal(120);
    expect(userRegOffset('rip')).to.equal(128);
    expect(userRegOffset('rsp')).to.equal(152);
    expect(userRegOffset('fs_base')).to.equal(168);
    expect(userRegOffset('gs')).to.equal(208);
    const regs = {} as UserRegs;
    USER_REGS_FIELDS.forEach((f, i) => {
      regs[f] = BigInt(i + 1) * 0x0101010101010101n;
    });
    regs.rax = BigInt.asUintN(64, -516n);
    const buf = encodeUserRegs(regs);
    expect(buf.length).to.equal(216);
    expect(buf.readBigUInt64LE(128)).to.equal(regs.rip);
    expect(decodeUserRegs(buf)).to.deep.equal(regs);
    expect(signedReg(decodeUserRegs(buf).rax)).to.equal(-516n);
    expect(() => decodeUserRegs(Buffer.alloc(100))).to.throw(/216/);
  });

  it('debug registers live at 848 in struct user', () => {
    expect(debugRegOffset(0)).to.equal(848);
    expect(debugRegOffset(7)).to.equal(848 + 56);
    expect(() => debugRegOffset(8)).to.throw();
  });
});
