/**
 * Namespace files: an fd of /proc/PID/ns/<type> (its link reads "net:[4026531840]"). Namespaces
 * other than cptrst's own are refused at checkpoint, so a namespace file the process holds can
 * only be restored faithfully when it is one of the process's own namespaces: the FILE records
 * which of them (the entry under /proc/self/ns), and restart opens that entry again inside the
 * restored task, which is in its namespaces by then. A namespace file of another namespace (of
 * another process, or one kept alive only by the fd) is refused.
 */
import * as fs from 'fs';
import { CheckpointContext, CheckpointTask, CptError, RestartContext, RestartTask, refuse, sameFile } from '@cptrst/core';
import { FileKindHandler, OpenFile, OpenRequest, openInTask, reopenFlags } from './kinds';
import { FileImage } from './file';

/** The entries of /proc/PID/ns, in the order they are matched (pid before pid_for_children: the same namespace unless unshared). */
const NS_ENTRIES = ['net', 'mnt', 'pid', 'pid_for_children', 'uts', 'ipc', 'user', 'cgroup', 'time', 'time_for_children'];
const NS_LINK = /^(net|mnt|pid|uts|ipc|user|cgroup|time):\[\d+\]$/;

export class NamespaceFile implements FileKindHandler {
  readonly kind = 'nsfs';
  readonly inFlight = true;
  claims(f: OpenFile): boolean {
    return NS_LINK.test(f.link);
  }
  describe(_ctx: CheckpointContext, task: CheckpointTask, f: OpenFile, img: FileImage): void {
    const type = NS_LINK.exec(f.link)![1];
    for (const entry of NS_ENTRIES.filter((e) => e === type || e === `${type}_for_children`)) {
      let st: fs.BigIntStats;
      try {
        st = fs.statSync(`/proc/${task.pid}/ns/${entry}`, { bigint: true });
      } catch {
        continue; // a kernel without that namespace type
      }
      if (sameFile(st, f.stat)) {
        img.path = entry;
        return;
      }
    }
    refuse(task.pid, `fd ${f.fd} (${f.link})`, `a file of a ${type} namespace that is not the process's own; only its own namespaces are restored`);
  }
  open(_ctx: RestartContext, task: RestartTask, img: FileImage, req: OpenRequest): bigint {
    if (!NS_ENTRIES.includes(img.path)) throw new CptError('EBADIMG', `"${img.path}" is no namespace of a process`, { pid: task.pid, object: req.object });
    return openInTask(task, `/proc/self/ns/${img.path}`, reopenFlags(img.flags), `opening /proc/self/ns/${img.path} for ${req.object}`);
  }
}
