/**
 * The head an image written on this machine carries: the machine facts core reads itself, then
 * each registered MachineProbe's part of the capability vector. The checkpoint flow writes it
 * into the image; `cptrst check` shows it.
 */
import * as os from 'os';
import { DependencyContainer } from 'tsyringe';
import { MachineProbe, Tokens } from './contract';
import { ImageHead } from './image';
import { resolveAll } from './tokens';
import * as linux from './linux';

/** The machine probes registered in the container, in registration order (none: empty). */
export function machineProbes(container: DependencyContainer): MachineProbe[] {
  return resolveAll(container, Tokens.MachineProbe);
}

export interface ImageHeadOptions {
  /**
   * For a report rather than an image: a probe whose fillHead throws is passed here and the head
   * is built on without its part, and a machine fact that cannot be read keeps the head's default
   * (empty, or a 4096-byte page). Without it, any failure is thrown: no image gets a partial head.
   */
  onProbeError?: (probe: MachineProbe, error: unknown) => void;
}

/** The head of an image written now, by `toolVersion`, with the probes registered in the container. */
export function buildImageHead(container: DependencyContainer, toolVersion: string, options: ImageHeadOptions = {}): ImageHead {
  const report = options.onProbeError;
  const fact = <T>(read: () => T, fallback: T): T => {
    if (!report) return read();
    try {
      return read();
    } catch {
      return fallback;
    }
  };
  const head = new ImageHead({
    kernelRelease: fact(() => linux.kernelRelease(), ''),
    pageSize: fact(() => linux.pageSize(), 4096),
    createdNs: BigInt(Date.now()) * 1000000n,
    toolVersion,
    hostname: os.hostname(),
    bootId: fact(() => linux.bootId(), ''),
  });
  for (const probe of machineProbes(container)) {
    try {
      probe.fillHead?.(head);
    } catch (e) {
      if (!report) throw e;
      report(probe, e);
    }
  }
  return head;
}
