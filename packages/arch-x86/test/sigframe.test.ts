/**
 * The signal frame on which every injected call returns (sigframe.ts): its layout, the code
 * sequences the first and last calls need (tracee.ts), and, on a real process, that rt_sigreturn
 * run on it gives back exactly the frozen registers in their resume form, the task's own mask,
 * and its FPU/vector state.
 */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { linux } from '@cptrst/core';
import { USER_REGS_FIELDS, UserRegs, x86ptrace } from '../src';
import {
  FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2, RT_SIGFRAME, SCRATCH_SIZE, SIGCONTEXT, SS_FLAGS_KEEP, UC, X86Tracee, buildSigframe,
  findRestorer, findSyscallRet, resumeRegs, sigframeBytes, sigframeRegs, syscallState,
} from '../src';
import { alsoKill, compileIn, killStarted, poll, seizeAndStop, tmpDir } from './support';

const { SYS, ERRNO } = linux;
const ptrace = x86ptrace;
const WORKLOADS = path.resolve(__dirname, '../../../../test/workloads');

function regs(over: Partial<UserRegs> = {}): UserRegs {
  const r = {} as UserRegs;
  USER_REGS_FIELDS.forEach((f, i) => {
    r[f] = BigInt(0x1000 + i);
  });
  return { ...r, cs: 0x33n, ss: 0x2bn, ...over };
}

describe('sigframe: the frame rt_sigreturn reads', () => {
  it('lays out rt_sigframe, ucontext and sigcontext as the x86-64 kernel does', () => {
    const xsave = Buffer.alloc(1024);
    const at = 0x7000_0000_0040n;
    const f = buildSigframe({ at, regs: regs({ rip: 0x401000n, rsp: 0x7ffd0000n }), sigmask: 0x201n, xsave, pretcode: 0x1234n });
    expect(RT_SIGFRAME.size).to.equal(440);
    expect(f.length).to.equal(sigframeBytes(1024));
    expect(f.readBigUInt64LE(0)).to.equal(0x1234n);
    expect(f.readBigUInt64LE(RT_SIGFRAME.ucFlags)).to.equal(BigInt(UC.FP_XSTATE | UC.SIGCONTEXT_SS | UC.STRICT_RESTORE_SS));
    expect(f.readInt32LE(RT_SIGFRAME.ucStack + 8)).to.equal(SS_FLAGS_KEEP);
    expect(f.readBigUInt64LE(RT_SIGFRAME.ucSigmask)).to.equal(0x201n);
    const mc = RT_SIGFRAME.ucMcontext;
    expect(f.readBigUInt64LE(mc + 128)).to.equal(0x401000n); // rip
    expect(f.readBigUInt64LE(mc + 120)).to.equal(0x7ffd0000n); // rsp
    expect(f.readUInt16LE(mc + SIGCONTEXT.cs)).to.equal(0x33);
    expect(f.readUInt16LE(mc + SIGCONTEXT.ss)).to.equal(0x2b);
    expect(sigframeRegs(f).r8).to.equal(regs().r8);
    const fp = Number(f.readBigUInt64LE(mc + SIGCONTEXT.fpstate) - at);
    expect((at + BigInt(fp)) % 64n).to.equal(0n);
    expect(fp).to.be.greaterThanOrEqual(RT_SIGFRAME.size);
    expect(f.readUInt32LE(fp + 464)).to.equal(FP_XSTATE_MAGIC1);
    expect(f.readUInt32LE(fp + 468)).to.equal(1024 + 4); // extended_size
    expect(f.readUInt32LE(fp + 480)).to.equal(1024); // xstate_size
    expect(f.readUInt32LE(fp + 1024)).to.equal(FP_XSTATE_MAGIC2);
    expect(() => buildSigframe({ at: at + 8n, regs: regs(), sigmask: 0n, xsave })).to.throw(/aligned/);
  });

  it('finds `syscall; xor...; ret` and the signal restorer, and nothing else', () => {
    // syscall; xor %edx,%edx; xor %r8d,%r8d; xor %r11,%r11; nop; ret
    const good = Buffer.from([0x90, 0x0f, 0x05, 0x31, 0xd2, 0x45, 0x31, 0xc0, 0x4d, 0x31, 0xdb, 0x90, 0xc3]);
    expect(findSyscallRet(good)).to.equal(1);
    // syscall; xor %edx,%ecx (two registers: a real change); ret
    expect(findSyscallRet(Buffer.from([0x0f, 0x05, 0x31, 0xca, 0xc3]))).to.equal(-1);
    // syscall; mov %rax,%rdi; ret
    expect(findSyscallRet(Buffer.from([0x0f, 0x05, 0x48, 0x89, 0xc7, 0xc3]))).to.equal(-1);
    expect(findRestorer(Buffer.from([0xcc, 0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05]))).to.equal(1);
    expect(findRestorer(Buffer.from([0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05]))).to.equal(0);
    expect(findRestorer(Buffer.from([0xb8, 0x0e, 0, 0, 0, 0x0f, 0x05]))).to.equal(-1);
  });
});

describe('sigframe on a real process', function () {
  this.timeout(30000);
  afterEach(() => killStarted());

  it('rt_sigreturn on the scratch area\'s frame gives back the resume registers, the mask and the vector state', async () => {
    const bin = compileIn(WORKLOADS, 'survive', ['-g', '-Wextra', '-std=gnu11']);
    const dir = fs.mkdtempSync(path.join(tmpDir(), 'sigframe-'));
    const out = path.join(dir, 'out');
    const { spawn } = await import('child_process');
    const fd = fs.openSync(out, 'w');
    const target = spawn(bin, [path.join(dir, 'trigger'), '4'], { stdio: ['ignore', fd, fd], detached: true });
    fs.closeSync(fd);
    target.unref();
    const pid = target.pid!;
    alsoKill(pid);
    expect(await poll(() => /^READY \d+\n/.test(fs.readFileSync(out, 'utf8')), 10000)).to.equal(true);
    await new Promise((r) => setTimeout(r, 50));

    // ---- synchronous from here to the detach ----
    seizeAndStop(pid);
    const xsaveBefore = ptrace.getXstate(pid, 65536);
    const raw = new linux.ProcMem(pid);
    const sp = ptrace.getRegs(pid).rsp;
    const belowBefore = raw.read(sp - 8192n, 8192);
    const t = new X86Tracee(pid, pid);
    const frozen = t.frozenRegs;
    expect(t.syscall(SYS.getpid)).to.equal(BigInt(pid));
    expect(t.firstCall).to.equal('stack-frame');
    // The frame sits below the stack pointer; read through the tracee, that memory is as it was.
    expect(raw.read(sp - 8192n, 8192).equals(belowBefore), 'a frame was written below rsp').to.equal(false);
    expect(t.readMemory(sp - 8192n, 8192)).to.deep.equal(belowBefore);
    const viaInto = Buffer.alloc(8192 + 16);
    t.readMemoryInto(sp - 8192n, viaInto, 16, 8192);
    expect(viaInto.subarray(16)).to.deep.equal(belowBefore);
    raw.close();
    expect(linux.readStatus(pid).sigBlk).to.not.equal(t.blockedSignals); // all blocked while borrowed
    const [area] = t.reservedRanges();
    expect(area.end - area.start).to.equal(BigInt(SCRATCH_SIZE));
    const st = syscallState(frozen);
    const want = resumeRegs(frozen, st.restartCode === ERRNO.ERESTART_RESTARTBLOCK ? 'restored' : 'original');

    // As if cptrst were gone: let the task run on from its exit stop. The scratch area's code
    // unmaps the area (through the task's own `syscall ... ret`), then rt_sigreturn runs on the
    // frame below the stack pointer.
    const here = ptrace.getRegs(pid);
    expect(here.rip).to.equal(area.start + 2n);
    const seen: number[] = [];
    let w: linux.WaitResult | undefined;
    for (let i = 0; i < 4; i++) {
      ptrace.syscall(pid, 0);
      w = linux.waitTracee(pid);
      seen.push(Number(BigInt.asIntN(64, ptrace.getRegs(pid).orig_rax)));
    }
    expect(seen).to.deep.equal([SYS.munmap, SYS.munmap, SYS.rt_sigreturn, -1]);
    expect(linux.readMaps(pid).some((m) => m.start === area.start), 'the scratch area is gone').to.equal(false);
    expect(w?.stopped, 'stopped at the exit of rt_sigreturn').to.not.equal(undefined);
    const back = ptrace.getRegs(pid);
    for (const f of USER_REGS_FIELDS) {
      if (f === 'orig_rax' || f === 'eflags') continue;
      expect(back[f], f).to.equal(want[f]);
    }
    expect(back.eflags & 0xcd5n).to.equal(want.eflags & 0xcd5n); // CF PF AF ZF SF DF OF
    expect(ptrace.getSigmask(pid)).to.equal(t.blockedSignals);
    const xsaveAfter = ptrace.getXstate(pid, 65536);
    // The legacy area (x87, MXCSR, xmm0-15) and every component marked in use are the same.
    expect(xsaveAfter.subarray(0, 416)).to.deep.equal(xsaveBefore.subarray(0, 416));
    expect(xsaveAfter.subarray(576)).to.deep.equal(xsaveBefore.subarray(576));
    t.forget(); // the tracee no longer stands where it thinks; only detach
    ptrace.detach(pid, 0);
    // ---- end of the synchronous part ----

    process.kill(pid, 'SIGUSR2');
    expect(await poll(() => /\n(PASS|FAIL)[^\n]*\n/.test(fs.readFileSync(out, 'utf8')), 10000)).to.equal(true);
    expect(fs.readFileSync(out, 'utf8')).to.match(/^READY \d+\nPASS survive\n$/);
  });
});
