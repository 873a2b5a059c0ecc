/**
 * Injected system calls, one by one and as batches (Tracee.syscalls), in a `/bin/sleep` seized
 * the way the freezer does it: guarded (a checkpoint target, which must survive cptrst's death)
 * and not (a task that dies with cptrst, as at restart). Prints microseconds per call, the median
 * of several rounds, and the 62 rt_sigaction reads of a signal dump as one batch. Then the first
 * call into a freshly seized guarded task (which maps the scratch area, on code of the task's own
 * found after the freeze, or before it by TraceeFactory.prepare), in microseconds.
 *
 * Usage: node bench/dist/calls.js [--calls N] [--rounds R]
 */
import 'reflect-metadata';
import { spawn } from 'child_process';
import { linux } from '@cptrst/core';
import { X86Tracee, X86TraceeFactory, X86_64 } from '@cptrst/arch-x86';

const { SYS, PTRACE_O, PTRACE_EVENT, ptrace } = linux;
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const CALLS = arg('--calls', 2000);
const ROUNDS = arg('--rounds', 7);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

function seizeAndStop(pid: number, options: number): void {
  ptrace.seize(pid, options);
  ptrace.interrupt(pid);
  for (;;) {
    const w = linux.waitTracee(pid);
    if (w.stopped?.event === PTRACE_EVENT.STOP) return;
    if (!w.stopped) throw new Error(`pid ${pid} died while being stopped`);
    ptrace.cont(pid, 0);
  }
}

function usPer(f: () => number): number {
  const t0 = process.hrtime.bigint();
  const n = f();
  return Number(process.hrtime.bigint() - t0) / 1e3 / n;
}

async function main(): Promise<void> {
  const rows: Array<[string, number]> = [];
  for (const guarded of [true, false]) {
    const child = spawn('/bin/sleep', ['1000'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 100));
    const pid = child.pid!;
    try {
      seizeAndStop(pid, PTRACE_O.TRACESYSGOOD | (guarded ? 0 : PTRACE_O.EXITKILL));
      const t = new X86Tracee(pid, pid, { diesWithTracer: !guarded });
      t.scratch();
      const kind = guarded ? 'guarded' : 'dies with cptrst';
      const single: number[] = [];
      const batch: number[] = [];
      const sig: number[] = [];
      const getpid = Array.from({ length: 62 }, () => ({ nr: SYS.getpid }));
      const SIGACTION = 32;
      const sigactions: Array<{ nr: number; args: bigint[] }> = [];
      for (let s = 1, i = 0; s <= 64; s++) if (s !== 9 && s !== 19) sigactions.push({ nr: SYS.rt_sigaction, args: [BigInt(s), 0n, t.scratch().dataAddr + BigInt(SIGACTION * i++), 8n] });
      for (let r = 0; r < ROUNDS; r++) {
        single.push(usPer(() => {
          for (let i = 0; i < CALLS; i++) if (t.syscall(SYS.getpid) !== BigInt(pid)) throw new Error('getpid');
          return CALLS;
        }));
        batch.push(usPer(() => {
          let n = 0;
          while (n < CALLS) {
            for (const x of t.syscalls(getpid)) if (x !== BigInt(pid)) throw new Error('getpid in a batch');
            n += getpid.length;
          }
          return n;
        }));
        sig.push(usPer(() => {
          for (let i = 0; i < 20; i++) {
            for (const x of t.syscalls(sigactions)) if (x !== 0n) throw new Error('rt_sigaction in a batch');
            t.readMemory(t.scratch().dataAddr, SIGACTION * sigactions.length);
          }
          return 20;
        }));
      }
      rows.push([`${kind}: one call (getpid), us per call`, median(single)]);
      rows.push([`${kind}: batches of 62 (getpid), us per call`, median(batch)]);
      rows.push([`${kind}: 62 rt_sigaction as one batch + one read, us per batch`, median(sig)]);
      t.restore(X86_64.resumeRegs(t.frozenRegs, 'original'));
      t.detach();
    } finally {
      child.kill('SIGKILL');
    }
  }
  rows.push(...(await firstCalls()));
  for (const [what, v] of rows) console.log(`${what.padEnd(62)} ${v.toFixed(1)}`);
}

/** The first call, alternating a search after the freeze with one prepared before it (not timed). */
async function firstCalls(): Promise<Array<[string, number]>> {
  const child = spawn('/bin/sleep', ['1000'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 100));
  const pid = child.pid!;
  const factory = new X86TraceeFactory();
  const times: [number[], number[]] = [[], []];
  try {
    for (let r = 0; r < ROUNDS * 3; r++) {
      for (const prepared of [false, true]) {
        if (prepared) factory.prepare(pid);
        seizeAndStop(pid, PTRACE_O.TRACESYSGOOD);
        const t = factory.fromStopped(pid, pid);
        times[prepared ? 1 : 0].push(usPer(() => {
          if (t.syscall(SYS.getpid) !== BigInt(pid)) throw new Error('getpid');
          return 1;
        }));
        if (t.gadgetSource !== (prepared ? 'prepared' : 'searched')) throw new Error(`gadgets ${t.gadgetSource}`);
        t.restore(X86_64.resumeRegs(t.frozenRegs, 'original'));
        t.detach();
      }
    }
  } finally {
    child.kill('SIGKILL');
  }
  return [
    ['guarded: first call, code searched after the freeze, us', median(times[0])],
    ['guarded: first call, code found before (prepare), us', median(times[1])],
  ];
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
