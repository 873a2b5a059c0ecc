/** The syscall-restart rule (syscall-restart.ts): pure functions over user_regs_struct values. */
import { expect } from 'chai';
import { linux } from '@cptrst/core';
import { USER_REGS_FIELDS, UserRegs } from '../src';
import { resumeRegs, syscallState } from '../src/syscall-restart';

const { SYS, ERRNO } = linux;
const NO_SYSCALL = 0xffffffffffffffffn;
const neg = (n: number): bigint => BigInt.asUintN(64, BigInt(-n));

/** A frozen task's registers: every field distinct, so that a field changed by mistake shows. */
function regs(over: Partial<UserRegs> = {}): UserRegs {
  const r = {} as UserRegs;
  USER_REGS_FIELDS.forEach((f, i) => {
    r[f] = 0x1000n + BigInt(i);
  });
  r.rip = 0x401a2cn;
  r.rsp = 0x7ffd0000f000n;
  return { ...r, ...over };
}

/** Fields other than rax, rip and orig_rax, which the rule may change. */
function untouched(a: UserRegs, b: UserRegs): void {
  for (const f of USER_REGS_FIELDS) if (f !== 'rax' && f !== 'rip' && f !== 'orig_rax') expect(b[f], f).to.equal(a[f]);
}

describe('syscall-restart rule', () => {
  describe('syscallState', () => {
    it('reports the call and the restart code of a task stopped inside a syscall', () => {
      for (const code of [ERRNO.ERESTARTSYS, ERRNO.ERESTARTNOINTR, ERRNO.ERESTARTNOHAND, ERRNO.ERESTART_RESTARTBLOCK]) {
        expect(syscallState(regs({ orig_rax: BigInt(SYS.read), rax: neg(code) }))).to.deep.equal({ nr: SYS.read, restartCode: code });
      }
      expect(ERRNO.ERESTARTSYS).to.equal(512);
      expect(ERRNO.ERESTART_RESTARTBLOCK).to.equal(516);
    });

    it('has no restart code for an ordinary result, an error that is not a restart code, or a task not in a syscall', () => {
      expect(syscallState(regs({ orig_rax: BigInt(SYS.read), rax: 17n }))).to.deep.equal({ nr: SYS.read, restartCode: 0 });
      expect(syscallState(regs({ orig_rax: BigInt(SYS.read), rax: neg(ERRNO.EINTR) }))).to.deep.equal({ nr: SYS.read, restartCode: 0 });
      expect(syscallState(regs({ orig_rax: BigInt(SYS.ioctl), rax: neg(515) /* ENOIOCTLCMD */ }))).to.deep.equal({ nr: SYS.ioctl, restartCode: 0 });
      // Outside a syscall orig_rax is -1; rax may hold anything, even a value that looks like a restart code.
      expect(syscallState(regs({ orig_rax: NO_SYSCALL, rax: neg(ERRNO.ERESTARTSYS) }))).to.deep.equal({ nr: -1, restartCode: 0 });
      // read is syscall 0: nr 0 is a syscall, not "none".
      expect(syscallState(regs({ orig_rax: 0n, rax: neg(ERRNO.ERESTARTSYS) }))).to.deep.equal({ nr: 0, restartCode: ERRNO.ERESTARTSYS });
    });
  });

  describe('resumeRegs', () => {
    for (const name of ['ERESTARTSYS', 'ERESTARTNOINTR', 'ERESTARTNOHAND']) {
      for (const target of ['original', 'restored'] as const) {
        it(`${name} (${target}): backs rip over the syscall instruction and runs the call again`, () => {
          const before = regs({ orig_rax: BigInt(SYS.read), rax: neg(ERRNO[name]) });
          const copy = { ...before };
          const out = resumeRegs(before, target);
          expect(out.rip).to.equal(before.rip - 2n);
          expect(out.rax).to.equal(BigInt(SYS.read));
          expect(out.orig_rax).to.equal(NO_SYSCALL);
          untouched(before, out);
          expect(before).to.deep.equal(copy); // the input is not modified
        });
      }
    }

    it('ERESTART_RESTARTBLOCK, original process: rax = restart_syscall, rip backed up', () => {
      const before = regs({ orig_rax: BigInt(SYS.clock_nanosleep), rax: neg(ERRNO.ERESTART_RESTARTBLOCK) });
      const out = resumeRegs(before, 'original');
      expect(out.rax).to.equal(BigInt(SYS.restart_syscall));
      expect(SYS.restart_syscall).to.equal(219);
      expect(out.rip).to.equal(before.rip - 2n);
      expect(out.orig_rax).to.equal(NO_SYSCALL);
      untouched(before, out);
    });

    it('ERESTART_RESTARTBLOCK, restored process: the call fails with EINTR where it was, rip unchanged', () => {
      const before = regs({ orig_rax: BigInt(SYS.clock_nanosleep), rax: neg(ERRNO.ERESTART_RESTARTBLOCK) });
      const out = resumeRegs(before, 'restored');
      expect(out.rax).to.equal(neg(ERRNO.EINTR));
      expect(BigInt.asIntN(64, out.rax)).to.equal(-4n);
      expect(out.rip).to.equal(before.rip);
      expect(out.orig_rax).to.equal(NO_SYSCALL);
      untouched(before, out);
    });

    it('a syscall that had finished (a result, or -EINTR) keeps its result and rip; only orig_rax is cleared', () => {
      for (const rax of [5n, neg(ERRNO.EINTR), neg(ERRNO.EAGAIN)]) {
        for (const target of ['original', 'restored'] as const) {
          const before = regs({ orig_rax: BigInt(SYS.read), rax });
          const out = resumeRegs(before, target);
          expect(out).to.deep.equal({ ...before, orig_rax: NO_SYSCALL });
        }
      }
    });

    it('a task not in a syscall is resumed exactly where it was, even if rax looks like a restart code', () => {
      for (const target of ['original', 'restored'] as const) {
        const before = regs({ orig_rax: NO_SYSCALL, rax: neg(ERRNO.ERESTARTSYS) });
        expect(resumeRegs(before, target)).to.deep.equal(before);
      }
    });
  });
});
