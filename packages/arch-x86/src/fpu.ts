/**
 * FPU, SSE, AVX and AVX-512 state: the whole XSAVE area through PTRACE_GETREGSET/SETREGSET
 * with NT_X86_XSTATE (x87 stack, MXCSR, xmm/ymm/zmm, opmask registers). Its first 512 bytes
 * are the legacy FXSAVE area; bytes 464..487 hold the kernel's software-reserved description
 * (XCR0 and the area's size), and bytes 512..519 the XSTATE_BV of the components in use.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ImageHead, MachineProbe, ObjectType, ProbeResult,
  RestartContext, RestartTask, RestoreHandler, RestoreObject, StateKey, bytes, objectType, u32, u64, linux,
} from '@cptrst/core';
import { xsaveInfo } from './xsave';
import { x86ptrace } from './regs-codec';
import { ARCH_ORDER, cpuOwnerOf, cpuOwners } from './regs';
import { X86_64 } from './arch';

/** The XSAVE area read from the image, set into the thread at finish. */
export const XSTATE_KEY = new StateKey<Buffer>('arch-x86.xstate');

const XSTATE_MAX = 64 * 1024;
const XSTATE_BV_OFFSET = 512;

@objectType(ObjectType.XSTATE, 'xstate', { parents: [ObjectType.TASK, ObjectType.THREAD] })
export class XstateImage {
  /** Components present in `area` (XSTATE_BV). */
  @u64() features = 0n;
  @u32() size = 0;
  @bytes() area: Buffer = Buffer.alloc(0);
}

/** Names of XSAVE components, for messages. */
const COMPONENTS = ['x87', 'sse', 'avx', 'mpx-bndregs', 'mpx-bndcsr', 'avx512-opmask', 'avx512-zmm_hi256', 'avx512-hi16_zmm', 'pt', 'pkru'];
export function featureNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if ((mask >> BigInt(i)) & 1n) out.push(COMPONENTS[i] ?? `component-${i}`);
  return out;
}

export class XstateDump implements DumpHandler {
  readonly name = 'arch-x86.xstate';
  readonly order = ARCH_ORDER + 1;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    for (const c of cpuOwners(task)) {
      const area = x86ptrace.getXstate(c.tid, XSTATE_MAX);
      const img = new XstateImage();
      img.area = area;
      img.size = area.length;
      img.features = area.length >= XSTATE_BV_OFFSET + 8 ? area.readBigUInt64LE(XSTATE_BV_OFFSET) : 0n;
      ctx.write(img, c.tag);
    }
  }
}

export class XstateRestore implements RestoreHandler {
  readonly name = 'arch-x86.xstate';
  readonly order = ARCH_ORDER + 1;
  readonly types = [ObjectType.XSTATE];
  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as XstateImage;
    const host = xsaveInfo();
    if (img.area.length !== host.size) {
      throw new CptError('EINVAL', `the image's XSAVE area is ${img.area.length} bytes, this CPU's is ${host.size}`, { pid: task.pid, object: 'xstate' });
    }
    const missing = img.features & ~host.features;
    if (missing) {
      throw new CptError('ENOTSUP', `the image uses CPU state this machine does not have: ${featureNames(missing).join(', ')}`, { pid: task.pid, object: 'xstate' });
    }
    const c = cpuOwnerOf(task, o, 'xstate');
    if (c.state.has(XSTATE_KEY)) throw new CptError('EBADIMG', `a second FPU state for thread ${c.tid}`, { pid: task.pid, object: 'xstate' });
    c.state.set(XSTATE_KEY, img.area);
  }
  finish(_ctx: RestartContext, task: RestartTask): void {
    for (const c of cpuOwners(task)) {
      const area = c.state.get(XSTATE_KEY);
      if (!area) throw new CptError('EBADIMG', `the image has no FPU state for ${c.tid === task.pid ? 'this task' : `thread ${c.tid}`}`, { pid: task.pid, object: 'xstate' });
      x86ptrace.setXstate(c.tid, area);
    }
  }
}

/** The CPU's XSAVE features and area size: part of the capability vector (with the arch's name). */
export class XsaveProbe implements MachineProbe {
  readonly name = 'xsave';
  probe(): ProbeResult[] {
    try {
      const x = xsaveInfo();
      return [{ name: 'xsave', ok: x.size > 0, essential: true, detail: `XCR0 0x${x.features.toString(16)} (${featureNames(x.features).join(' ')}), area ${x.size} bytes` }];
    } catch (e) {
      return [{ name: 'xsave', ok: false, essential: true, detail: (e as Error).message }];
    }
  }
  fillHead(head: ImageHead): void {
    head.arch = X86_64.name;
    const x = xsaveInfo();
    head.xsaveFeatures = x.features;
    head.xsaveSize = x.size;
    head.cpuFlags = linux.cpuFlags().filter((f) => /^(avx|sse|fma|xsave|pku|fsgsbase|amx|sha|aes|bmi)/.test(f)).sort();
  }
  checkHead(head: ImageHead): string[] {
    const x = xsaveInfo();
    const out: string[] = [];
    const missing = head.xsaveFeatures & ~x.features;
    if (missing) out.push(`the image was made on a CPU with ${featureNames(missing).join(', ')} state, which this CPU lacks`);
    else if (head.xsaveSize !== x.size) out.push(`the image's XSAVE area is ${head.xsaveSize} bytes, this CPU's is ${x.size}`);
    const here = new Set(linux.cpuFlags());
    const lost = head.cpuFlags.filter((f) => !here.has(f));
    if (lost.length) out.push(`the image was made on a CPU with ${lost.join(' ')}, which this CPU lacks`);
    return out;
  }
}
