/** Private anonymous memory: heap, stack, plain anonymous maps, named ones ([anon:name]). */
import { RestartContext, RestartTask, linux } from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, mapAt } from './vma';
import { applyMadvise } from './madvise';
import { isPresentOrSwapped } from './pages';

const { MAP, PROT, SYS } = linux;
const PR_SET_VMA = 0x53564d41;
const PR_SET_VMA_ANON_NAME = 0;

export class AnonVma implements VmaKindHandler {
  readonly kind = 'anon';
  claims(v: VmaEntry): boolean {
    return !v.shared && v.inode === 0n && (v.path === '' || v.path === '[heap]' || v.path === '[stack]' || v.path.startsWith('[anon:'));
  }
  describe(): void {}
  storesPage(pm: bigint): boolean {
    return isPresentOrSwapped(pm);
  }
  map(_ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean): void {
    const prot = img.prot | (writable ? PROT.WRITE : 0);
    mapAt(task, img, prot, MAP.PRIVATE | MAP.ANONYMOUS, -1, `anonymous memory ${img.start.toString(16)}`);
    const m = /^\[anon:(.*)\]$/.exec(img.path);
    if (m) {
      const t = task.tracee!;
      const name = Buffer.from(m[1] + '\0');
      t.syscallOk(SYS.prctl, [PR_SET_VMA, PR_SET_VMA_ANON_NAME, img.start, img.end - img.start, t.stage(name)], `naming ${img.path}`);
    }
    applyMadvise(task, img);
  }
}

/** MAP_SHARED|MAP_ANONYMOUS: shown as /dev/zero (deleted); its pages are shmem. */
export class SharedAnonVma implements VmaKindHandler {
  readonly kind = 'shared-anon';
  claims(v: VmaEntry): boolean {
    return v.shared && v.path === '/dev/zero' && v.deleted;
  }
  describe(): void {}
  storesPage(pm: bigint): boolean {
    return isPresentOrSwapped(pm);
  }
  map(_ctx: RestartContext, task: RestartTask, img: VmaImage, writable: boolean): void {
    const prot = img.prot | (writable ? PROT.WRITE : 0);
    mapAt(task, { ...img, pgoff: 0n } as VmaImage, prot, MAP.SHARED | MAP.ANONYMOUS, -1, `shared anonymous memory ${img.start.toString(16)}`);
    applyMadvise(task, img);
  }
}
