import { expect } from 'chai';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import { CptError } from '../src/errors';
import {
  KCMP, NT, PTRACE_EVENT, RLIMIT, RLIM_INFINITY, RSEQ_SIG, SIG, SYS, USER_REGS_SIZE, WNOHANG, cpuFlags,
  debugRegOffset, Siginfo, decodeXsaveHeader, encodeUserRegs, errnoName, gettid, isRestartErrno, kcmp,
  kernelRelease, kill, pageSize, pidfdGetfd, pidfdOpen, prlimit, processExists, ptrace, rawSyscall, readStat,
  readStatus, sigBit, signedReg, tgkill, userRegOffset, waitTracee, xsaveInfo,
} from '../src/linux';
import { decodeStruct } from '../src/image/cstruct';
import { killPid, pollSync, spawnSleeping } from './fixtures/linux-fixtures';

describe('linux syscalls and ptrace', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    killPid(child?.pid);
    child = undefined;
  });

  it('rawSyscall returns results and -errno', () => {
    expect(rawSyscall(SYS.getpid)).to.equal(BigInt(process.pid));
    expect(rawSyscall(SYS.getppid)).to.equal(BigInt(process.ppid));
    expect(gettid()).to.equal(process.pid);
    expect(rawSyscall(SYS.kill, 0x3ffffff0, 0)).to.equal(-3n);
    expect(errnoName(Number(-rawSyscall(SYS.close, -1)))).to.equal('EBADF');
    const buf = Buffer.alloc(256);
    const n = rawSyscall(SYS.getcwd, buf, buf.length);
    expect(buf.subarray(0, Number(n) - 1).toString()).to.equal(process.cwd());
  });

  it('machine facts', () => {
    expect(pageSize()).to.equal(4096);
    expect(kernelRelease()).to.equal(os.release());
    expect(cpuFlags()).to.include('fpu');
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
    const xs = ptrace.getRegset(pid, NT.X86_XSTATE, 65536);
    expect(xs.length).to.be.greaterThan(512);
    expect(xs.length).to.equal(xsaveInfo().size);
    expect(xs.subarray(0, 160)).to.deep.equal(fx.subarray(0, 160)); // legacy area shared with FXSAVE
    expect(decodeXsaveHeader(xs).xstateBv & ~xsaveInfo().features).to.equal(0n); // only enabled components in use
    expect(ptrace.setRegset(pid, NT.X86_XSTATE, xs)).to.equal(xs.length);

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

  it('a seized tracee reports a group-stop as PTRACE_EVENT_STOP with SIGSTOP, and LISTEN', async () => {
    child = await spawnSleeping('/bin/sleep', ['60']);
    const pid = child.pid!;
    ptrace.seize(pid, 0);
    kill(pid, SIG.SIGSTOP);
    let w = waitTracee(pid); // signal-delivery stop
    expect(w.stopped).to.deep.include({ sig: SIG.SIGSTOP, event: 0, groupStop: false });
    ptrace.cont(pid, SIG.SIGSTOP); // let it enter group-stop
    w = waitTracee(pid);
    expect(w.stopped).to.deep.include({ sig: SIG.SIGSTOP, event: PTRACE_EVENT.STOP, groupStop: true });
    ptrace.listen(pid);
    kill(pid, SIG.SIGCONT);
    w = waitTracee(pid);
    expect(w.stopped?.event).to.equal(PTRACE_EVENT.STOP);
    ptrace.detach(pid, 0);
    expect(pollSync(() => readStatus(pid).state === 'S', 3000)).to.equal(true);
    expect(readStatus(pid).tracerPid).to.equal(0);
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

  it('kcmp, prlimit, pidfd on a child', async () => {
    child = await spawnSleeping('/bin/sleep', ['60']);
    const pid = child.pid!;
    expect(kcmp(process.pid, process.pid, KCMP.VM)).to.equal(0);
    expect(kcmp(process.pid, pid, KCMP.VM)).to.not.equal(0);
    const fd2 = fs.openSync('/dev/null', 'r');
    const fd3 = rawSyscall(SYS.dup, fd2);
    try {
      expect(kcmp(process.pid, process.pid, KCMP.FILE, fd2, fd3)).to.equal(0);
      expect(kcmp(process.pid, pid, KCMP.FILE, fd2, 0)).to.not.equal(0); // different open file descriptions
    } finally {
      fs.closeSync(fd2);
      fs.closeSync(Number(fd3));
    }

    const mine = prlimit(0, RLIMIT.NOFILE);
    const theirs = prlimit(pid, RLIMIT.NOFILE);
    expect(theirs).to.deep.equal(mine);
    prlimit(pid, RLIMIT.NOFILE, { cur: 100n, max: theirs.max });
    expect(prlimit(pid, RLIMIT.NOFILE)).to.deep.equal({ cur: 100n, max: theirs.max });
    expect(prlimit(pid, RLIMIT.CPU).max).to.equal(RLIM_INFINITY);
    expect(() => prlimit(pid, 99)).to.throw(CptError).with.property('code', 'EINVAL');

    const pidfd = pidfdOpen(pid);
    try {
      const fd = pidfdGetfd(pidfd, 0);
      expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).to.equal('/dev/null');
      fs.closeSync(fd);
      expect(() => pidfdGetfd(pidfd, 999)).to.throw(CptError).with.property('code', 'EBADF');
    } finally {
      fs.closeSync(pidfd);
    }
  });
});
