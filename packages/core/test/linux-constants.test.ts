import { expect } from 'chai';
import * as fs from 'fs';
import * as koffi from 'koffi';
import {
  ERRNO, ERESTARTSYS, ERESTART_RESTARTBLOCK, MAP, NSIG, O, PR, PR_SET_MM_MAP, PR_SET_MM_MAP_SIZE, PTRACE,
  PTRACE_EVENT, PTRACE_O, RLIMIT, SIG, SYS, errnoMessage, errnoName, errnoNumber, isErrorResult, isRestartErrno,
  ptraceRequestName, rlimitName, sigBit, signalName, signalNumber, sigsetFromList, sigsetToList, syscallName,
} from '../src/linux';

describe('linux constants', () => {
  it('has the x86-64 syscall numbers the brief lists', () => {
    const want: Record<string, number> = {
      read: 0, write: 1, open: 2, close: 3, mmap: 9, mprotect: 10, munmap: 11, brk: 12, rt_sigaction: 13,
      ioctl: 16, mremap: 25, madvise: 28, getpid: 39, clone: 56, fork: 57, exit: 60, wait4: 61, kill: 62,
      fcntl: 72, getcwd: 79, readlink: 89, umask: 95, getrlimit: 97, getppid: 110, setsid: 112, sigaltstack: 131,
      personality: 135, prctl: 157, arch_prctl: 158, gettid: 186, futex: 202, sched_setaffinity: 203,
      set_tid_address: 218, restart_syscall: 219, clock_nanosleep: 230, exit_group: 231, tgkill: 234,
      openat: 257, newfstatat: 262, unlinkat: 263, set_robust_list: 273, rt_tgsigqueueinfo: 297,
      prlimit64: 302, kcmp: 312, memfd_create: 319, statx: 332, rseq: 334, pidfd_open: 434, clone3: 435,
      close_range: 436, pidfd_getfd: 438,
    };
    for (const [k, v] of Object.entries(want)) expect((SYS as Record<string, number>)[k], k).to.equal(v);
    expect(syscallName(230)).to.equal('clock_nanosleep');
    expect(syscallName(0xffffffffffffffffn)).to.equal('syscall_-1');
  });

  it('agrees with the system unistd_64.h for every syscall it declares', function () {
    const hdr = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';
    if (!fs.existsSync(hdr)) this.skip();
    const text = fs.readFileSync(hdr, 'utf8');
    let n = 0;
    for (const m of text.matchAll(/#define __NR_(\w+) (\d+)/g)) {
      expect((SYS as Record<string, number>)[m[1]], m[1]).to.equal(Number(m[2]));
      n++;
    }
    expect(n).to.be.greaterThan(300);
  });

  it('has the ptrace requests, options and events', () => {
    expect(PTRACE.SEIZE).to.equal(0x4206);
    expect(PTRACE.INTERRUPT).to.equal(0x4207);
    expect(PTRACE.GETREGSET).to.equal(0x4204);
    expect(PTRACE.GET_RSEQ_CONFIGURATION).to.equal(0x420f);
    expect(PTRACE.SYSCALL).to.equal(24);
    expect(PTRACE.PEEKUSER).to.equal(3);
    expect(PTRACE_O.TRACECLONE).to.equal(8);
    expect(PTRACE_O.EXITKILL).to.equal(0x100000);
    expect(PTRACE_EVENT.STOP).to.equal(128);
    expect(ptraceRequestName(0x4206)).to.equal('PTRACE_SEIZE');
  });

  it('names errno values like libc does', () => {
    expect(errnoName(1)).to.equal('EPERM');
    expect(errnoName(-3)).to.equal('ESRCH');
    expect(errnoName(512)).to.equal('ERESTARTSYS');
    expect(errnoName(513)).to.equal('ERESTARTNOINTR');
    expect(errnoName(514)).to.equal('ERESTARTNOHAND');
    expect(errnoName(516)).to.equal('ERESTART_RESTARTBLOCK');
    expect(errnoName(9999)).to.equal('E9999');
    expect(errnoMessage(1)).to.equal('Operation not permitted');
    expect(errnoNumber('EWOULDBLOCK')).to.equal(11);
    expect(ERRNO.EHWPOISON).to.equal(133);
    expect(isErrorResult(-4095n)).to.equal(true);
    expect(isErrorResult(-4096n)).to.equal(false);
    expect(isRestartErrno(-BigInt(ERESTARTSYS))).to.equal(true);
    expect(isRestartErrno(ERESTART_RESTARTBLOCK)).to.equal(true);
    expect(isRestartErrno(515)).to.equal(false);
    // koffi exposes the platform's own errno table: every name it knows must match ours
    const platform = koffi.os.errno;
    let checked = 0;
    for (const [name, n] of Object.entries(platform)) {
      if (ERRNO[name] === undefined) continue;
      expect(ERRNO[name], name).to.equal(n);
      checked++;
    }
    expect(checked).to.be.greaterThan(60);
    const names = Object.keys(ERRNO).filter((k) => ERRNO[k] < 200);
    expect(names.length).to.be.greaterThan(130);
  });

  it('names signals, including real-time ones', () => {
    expect(SIG.SIGKILL).to.equal(9);
    expect(SIG.SIGCHLD).to.equal(17);
    expect(SIG.SIGSYS).to.equal(31);
    expect(signalName(9)).to.equal('SIGKILL');
    expect(signalName(32)).to.equal('SIGRTMIN');
    expect(signalName(35)).to.equal('SIGRTMIN+3');
    expect(signalName(64)).to.equal('SIGRTMAX');
    expect(signalNumber('SIGTERM')).to.equal(15);
    expect(signalNumber('usr1')).to.equal(10);
    expect(signalNumber('SIGRTMIN+3')).to.equal(35);
    expect(signalNumber('SIGRTMAX-1')).to.equal(63);
    expect(signalNumber('SIGNOPE')).to.equal(undefined);
    for (let s = 1; s <= NSIG; s++) expect(signalNumber(signalName(s)), String(s)).to.equal(s);
    expect(sigBit(1)).to.equal(1n);
    expect(sigBit(64)).to.equal(1n << 63n);
    expect(sigsetToList(sigsetFromList([2, 10, 64]))).to.deep.equal([2, 10, 64]);
  });

  it('has the mm, file and prctl constants C/R uses', () => {
    expect(MAP.FIXED_NOREPLACE).to.equal(0x100000);
    expect(MAP.GROWSDOWN).to.equal(0x100);
    expect(MAP.STACK).to.equal(0x20000);
    expect(O.CLOEXEC).to.equal(0o2000000);
    expect(O.TMPFILE).to.equal(0o20200000);
    expect(O.PATH).to.equal(0o10000000);
    expect(O.LARGEFILE).to.equal(0o100000);
    expect(PR.SET_MM).to.equal(35);
    expect(PR_SET_MM_MAP).to.equal(14);
    expect(PR_SET_MM_MAP_SIZE).to.equal(15);
    expect(RLIMIT.RTTIME).to.equal(15);
    expect(rlimitName(7)).to.equal('RLIMIT_NOFILE');
  });
});
