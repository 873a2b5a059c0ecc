/** VmFlags that madvise sets (dontfork, dontdump, wipeonfork, hugepage...), set again at restart. */
import { RestartTask, linux } from '@cptrst/core';
import { MADVISE_FLAGS, VmaImage } from './vma';

export function applyMadvise(task: RestartTask, img: VmaImage): void {
  for (const f of img.vmFlags) {
    const advice = MADVISE_FLAGS[f];
    if (advice === undefined) continue;
    task.tracee!.syscallOk(linux.SYS.madvise, [img.start, img.end - img.start, advice], `madvise(${f}) of ${img.start.toString(16)}`);
  }
}
