/**
 * VmFlags set again on a freshly mapped area: those of madvise (dontfork, dontdump, wipeonfork,
 * hugepage, sequential, mergeable...) and mlock ("lo", or "lf" for MLOCK_ONFAULT). The seal
 * ("sl") comes last of all, at finish, once nothing changes the area any more.
 */
import { NamedCall, RestartTask, linux, runCalls } from '@cptrst/core';
import { MADVISE_FLAGS, VmaImage } from './vma';

/** The calls that set the area's VmFlags again, in order (none for an area with none of them). */
export function vmFlagCalls(img: VmaImage): NamedCall[] {
  const len = img.end - img.start;
  const calls: NamedCall[] = [];
  for (const f of img.vmFlags) {
    const advice = MADVISE_FLAGS[f];
    if (advice === undefined) continue;
    calls.push({ nr: linux.SYS.madvise, args: [img.start, len, advice], what: `madvise(${f}) of ${img.start.toString(16)}` });
  }
  if (img.vmFlags.includes('lo') || img.vmFlags.includes('lf')) {
    const onFault = img.vmFlags.includes('lf') ? linux.MLOCK_ONFAULT : 0;
    calls.push({ nr: linux.SYS.mlock2, args: [img.start, len, onFault], what: `mlock of ${img.start.toString(16)} (RLIMIT_MEMLOCK or CAP_IPC_LOCK is needed, as it was for the original)` });
  }
  return calls;
}

export function applyVmFlags(task: RestartTask, img: VmaImage): void {
  runCalls(task.tracee!, vmFlagCalls(img));
}
