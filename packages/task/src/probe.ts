/** What restart of a process depends on here: ptrace, clone3 with set_tid, process memory access. */
import { readFileSync } from 'fs';
import { MachineProbe, ProbeResult, linux } from '@cptrst/core';

export class TaskProbe implements MachineProbe {
  readonly name = 'task';
  probe(): ProbeResult[] {
    return [probePtrace(), probeCloneSetTid(), probeVmReadv()];
  }
}

function probePtrace(): ProbeResult {
  const scope = readOr('/proc/sys/kernel/yama/ptrace_scope', 'absent');
  const caps = linux.readStatus(process.pid).capEff;
  const sysPtrace = (caps >> 19n) & 1n;
  return { name: 'ptrace', ok: sysPtrace === 1n || scope === 'absent' || scope === '0', essential: true, detail: `CAP_SYS_PTRACE ${sysPtrace ? 'held' : 'not held'}, yama ptrace_scope ${scope}` };
}

function probeCloneSetTid(): ProbeResult {
  // clone3 with an invalid (zero-length) argument: ENOSYS means no clone3, EINVAL means it exists.
  const r = linux.rawSyscall(linux.SYS.clone3, 0, 0);
  const caps = linux.readStatus(process.pid).capEff;
  const cr = ((caps >> 40n) & 1n) === 1n || ((caps >> 21n) & 1n) === 1n;
  const has = r !== -BigInt(linux.ERRNO.ENOSYS);
  return { name: 'clone3 set_tid', ok: has && cr, essential: true, detail: `${has ? 'clone3 present' : 'no clone3'}; CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN ${cr ? 'held' : 'not held'}; pid_max ${readOr('/proc/sys/kernel/pid_max', '?')}` };
}

function probeVmReadv(): ProbeResult {
  const buf = Buffer.alloc(8);
  try {
    const mem = new linux.ProcMem(process.pid);
    mem.close();
    const n = linux.processVmReadv(process.pid, 0n, buf);
    return { name: 'process_vm_readv', ok: true, essential: false, detail: `available (read ${n} bytes of address 0)` };
  } catch (e) {
    const code = (e as { code?: string }).code;
    return { name: 'process_vm_readv', ok: code === 'EFAULT', essential: false, detail: code === 'EFAULT' ? 'available' : `unavailable: ${(e as Error).message}` };
  }
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return fallback;
  }
}
