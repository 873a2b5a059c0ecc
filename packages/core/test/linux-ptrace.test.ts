import { expect } from 'chai';
import { ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import { CptError } from '../src/errors';
import {
  KCMP, PTRACE_EVENT, RLIMIT, RLIM_INFINITY, SIG, SYS, cpuFlags, errnoName, gettid, kcmp, kernelRelease, kill,
  pageSize, pidfdGetfd, pidfdOpen, prlimit, ptrace, randomBytes, rawSyscall, readStatus, waitTracee,
} from '../src/linux';
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

  it('randomBytes: as many bytes as asked, from the kernel, different each time', () => {
    const a = randomBytes(16);
    const b = randomBytes(16);
    expect(a.length).to.equal(16);
    expect(randomBytes(1).length).to.equal(1);
    expect(randomBytes(256).length).to.equal(256);
    expect(a.equals(b)).to.equal(false);
    expect(a.equals(Buffer.alloc(16))).to.equal(false);
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
