/**
 * The ring of an aio context (io_setup): an area named `/[aio]` on the kernel's internal aio
 * mount, whose address is the context's id. The kernel keeps its own state beside the ring (the
 * completion tail it writes next, the requests in flight, the limit of events) that no interface
 * shows or sets, so a context is refused at checkpoint by name, here, rather than by the file
 * kind's complaint about the area's flags.
 */
import { CheckpointTask, CptError, RestartContext, RestartTask, refuse } from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, describeVma } from './vma';

export class AioRingVma implements VmaKindHandler {
  readonly kind = 'aio-ring';
  /** Above the file kind, which would refuse the area for its flags. */
  readonly priority = 1;

  claims(v: VmaEntry): boolean {
    return v.shared && v.path === '/[aio]';
  }

  describe(task: CheckpointTask, v: VmaEntry): void {
    refuse(task.pid, describeVma(v), `an aio context (io_setup; its ring at 0x${v.start.toString(16)} is its id) is not supported: the kernel's completion tail and requests in flight cannot be read or restored`);
  }

  /** Any: describe refuses the area, with a reason that is not its flags. */
  acceptsVmFlag(): boolean {
    return true;
  }
  storesPages(): boolean {
    return false;
  }
  storesPage(): boolean {
    return false;
  }

  map(_ctx: RestartContext, task: RestartTask, img: VmaImage): void {
    throw new CptError('EBADIMG', 'an aio ring in the image: cptrst never writes one', { pid: task.pid, object: describeVma(img) });
  }
}
