import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  CloneArgs, Iovec, KernelSigaction, Msghdr, SCM_CREDENTIALS, SCM_RIGHTS, SOL_SOCKET, buildControl, parseControl, KernelStat, PrctlMmMap, RLIM_INFINITY, Rlimit, SA, SIG, Siginfo, StackT, SYS,
  decodeWaitStatus, devMajor, devMinor, makeDev, rawSyscall,
} from '../src/linux';
import { decodeStruct, encodeStruct, offsetOfField, sizeOfStruct } from '../src/image/cstruct';

describe('linux structs', () => {
  it('kernel sigaction matches what rt_sigaction returns', () => {
    expect(sizeOfStruct(KernelSigaction)).to.equal(32);
    const sa = { handler: 0x401000n, flags: BigInt(SA.SIGINFO | SA.RESTORER | SA.ONSTACK), restorer: 0x402000n, mask: 0x8000000000000001n };
    expect(decodeStruct(KernelSigaction, encodeStruct(KernelSigaction, sa))).to.deep.equal(sa);
    // SIGPIPE in node is ignored (SIG_IGN = 1)
    const old = Buffer.alloc(32);
    expect(rawSyscall(SYS.rt_sigaction, SIG.SIGPIPE, null, old, 8)).to.equal(0n);
    expect(decodeStruct(KernelSigaction, old).handler).to.equal(1n);
  });

  it('stack_t decodes sigaltstack output', () => {
    expect(sizeOfStruct(StackT)).to.equal(24);
    const old = Buffer.alloc(24);
    expect(rawSyscall(SYS.sigaltstack, null, old)).to.equal(0n);
    const st = decodeStruct(StackT, old);
    expect(st.flags === 0 || st.flags === 2 /* SS_DISABLE */ || st.flags === 1).to.equal(true);
  });

  it('prctl_mm_map is 104 bytes and round-trips', () => {
    expect(sizeOfStruct(PrctlMmMap)).to.equal(104);
    const m = {
      startCode: 1n, endCode: 2n, startData: 3n, endData: 4n, startBrk: 5n, brk: 6n, startStack: 7n,
      argStart: 8n, argEnd: 9n, envStart: 10n, envEnd: 11n, auxv: 0x7fff0000n, auxvSize: 368, exeFd: 0xffffffff,
    };
    const b = encodeStruct(PrctlMmMap, m);
    expect(b.length).to.equal(104);
    expect(b.readBigUInt64LE(88)).to.equal(0x7fff0000n);
    expect(b.readUInt32LE(96)).to.equal(368);
    expect(b.readUInt32LE(100)).to.equal(0xffffffff);
    expect(decodeStruct(PrctlMmMap, b)).to.deep.equal(m);
  });

  it('clone_args is 11 u64', () => {
    expect(sizeOfStruct(CloneArgs)).to.equal(88);
    const b = encodeStruct(CloneArgs, { flags: 0x100n, exitSignal: 17n, setTid: 0x1234n, setTidSize: 1n });
    expect(b.readBigUInt64LE(32)).to.equal(17n);
    expect(b.readBigUInt64LE(64)).to.equal(0x1234n);
    expect(b.readBigUInt64LE(72)).to.equal(1n);
    const d = decodeStruct(CloneArgs, b);
    expect(d.flags).to.equal(0x100n);
    expect(d.cgroup).to.equal(0n);
  });

  it('struct stat decodes fstat output like node does', () => {
    const p = path.join(os.tmpdir(), `cptrst-stat-${process.pid}`);
    fs.writeFileSync(p, 'x'.repeat(1234));
    const fd = fs.openSync(p, 'r');
    try {
      const b = Buffer.alloc(144);
      expect(rawSyscall(SYS.fstat, fd, b)).to.equal(0n);
      const st = decodeStruct(KernelStat, b);
      const ns = fs.fstatSync(fd, { bigint: true });
      expect(st.ino).to.equal(ns.ino);
      expect(st.size).to.equal(1234n);
      expect(BigInt(st.mode)).to.equal(ns.mode);
      expect(BigInt(st.nlink)).to.equal(ns.nlink);
      expect(st.dev).to.equal(ns.dev);
      expect(st.mtime.sec).to.equal(ns.mtimeMs / 1000n);
    } finally {
      fs.closeSync(fd);
      fs.unlinkSync(p);
    }
    expect(devMajor(makeDev(259, 70000))).to.equal(259);
    expect(devMinor(makeDev(259, 70000))).to.equal(70000);
    expect(makeDev(0xfe, 1)).to.equal(0xfe01n);
  });

  it('rlimit64 and siginfo', () => {
    expect(decodeStruct(Rlimit, encodeStruct(Rlimit, { cur: 1024n, max: RLIM_INFINITY }))).to.deep.equal({ cur: 1024n, max: RLIM_INFINITY });
    const raw = Buffer.alloc(128);
    raw.writeInt32LE(1234, 16);
    raw.writeUInt32LE(0, 20);
    const si = decodeStruct(Siginfo, encodeStruct(Siginfo, { raw, signo: SIG.SIGUSR1, errno: 0, code: -6 }));
    expect(si.signo).to.equal(10);
    expect(si.code).to.equal(-6);
    expect(si.pid).to.equal(1234);
    expect(si.raw.length).to.equal(128);
  });

  it('decodes wait statuses', () => {
    expect(decodeWaitStatus(5, 0x0300)).to.include({ exited: 3 });
    expect(decodeWaitStatus(5, 9)).to.include({ signaled: 9, core: false });
    expect(decodeWaitStatus(5, 0x8b)).to.include({ signaled: 11, core: true });
    expect(decodeWaitStatus(5, 0x80057f).stopped).to.deep.equal({ sig: 5, event: 128, groupStop: false, syscallStop: false });
    expect(decodeWaitStatus(5, 0x80137f).stopped).to.deep.equal({ sig: 19, event: 128, groupStop: true, syscallStop: false });
    expect(decodeWaitStatus(5, 0x3057f).stopped!.event).to.equal(3);
    expect(decodeWaitStatus(5, 0x857f).stopped!.syscallStop).to.equal(true);
    expect(decodeWaitStatus(5, 0xffff).continued).to.equal(true);
    expect(decodeWaitStatus(0, 0)).to.deep.equal({ pid: 0, status: 0 });
  });

  it('msghdr and iovec have the x86-64 layout; control data round-trips (SCM_RIGHTS, SCM_CREDENTIALS)', () => {
    expect(sizeOfStruct(Msghdr)).to.equal(56);
    expect([offsetOfField(Msghdr, 'iov'), offsetOfField(Msghdr, 'control'), offsetOfField(Msghdr, 'controllen'), offsetOfField(Msghdr, 'flags')]).to.deep.equal([16, 32, 40, 48]);
    expect(sizeOfStruct(Iovec)).to.equal(16);
    const c = buildControl([7, 3, 9], { pid: 123, uid: 1000, gid: 100 });
    // CMSG_SPACE(12) twice: the rights (3 ints) and the credentials (struct ucred).
    expect(c.length).to.equal(64);
    expect([Number(c.readBigUInt64LE(0)), c.readInt32LE(8), c.readInt32LE(12)]).to.deep.equal([28, SOL_SOCKET, SCM_RIGHTS]);
    expect([Number(c.readBigUInt64LE(32)), c.readInt32LE(40), c.readInt32LE(44)]).to.deep.equal([28, SOL_SOCKET, SCM_CREDENTIALS]);
    expect(parseControl(c, c.length)).to.deep.equal({ fds: [7, 3, 9], creds: { pid: 123, uid: 1000, gid: 100 } });
    expect(parseControl(buildControl([]), 0)).to.deep.equal({ fds: [] });
    // A truncated header ends the walk.
    expect(parseControl(c, 20)).to.deep.equal({ fds: [] });
  });
});
