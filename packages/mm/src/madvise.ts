/**
 * VmFlags set again on a freshly mapped area: those of madvise (dontfork, dontdump, wipeonfork,
 * hugepage, sequential, mergeable...) and mlock ("lo", or "lf" for MLOCK_ONFAULT). The seal
 * ("sl") comes last of all, at finish, once nothing changes the area any more.
 */
import { RestartTask, linux } from '@cptrst/core';
import { MADVISE_FLAGS, VmaImage } from './vma';

export function applyVmFlags(task: RestartTask, img: VmaImage): void {
  const t = task.tracee!;
  const len = img.end - img.start;
  for (const f of img.vmFlags) {
    const advice = MADVISE_FLAGS[f];
    if (advice === undefined) continue;
    t.syscallOk(linux.SYS.madvise, [img.start, len, advice], `madvise(${f}) of ${img.start.toString(16)}`);
  }
  if (img.vmFlags.includes('lo') || img.vmFlags.includes('lf')) {
    const onFault = img.vmFlags.includes('lf') ? linux.MLOCK_ONFAULT : 0;
    t.syscallOk(linux.SYS.mlock2, [img.start, len, onFault], `mlock of ${img.start.toString(16)} (RLIMIT_MEMLOCK or CAP_IPC_LOCK is needed, as it was for the original)`);
  }
}
