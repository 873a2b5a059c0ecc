/**
 * @cptrst-example/plugin-fanotify: a cptrst module of its own that adds one kind of open file, a
 * fanotify group with no marks and no queued events (an `anon_inode:[fanotify]` fd), which cptrst
 * itself refuses. Load it after the operations module:
 *
 *   cptrst --module @cptrst/cpt-module --module ./examples/plugin-fanotify checkpoint PID -o img
 *
 * It registers one FileKindHandler under @cptrst/files' FileKinds token, with a priority above
 * cptrst's own fanotify kind. The files subsystem does the rest, as for its own kinds: the FILE
 * object (flags, ...), the fd numbers (FD objects), the sharing of one open file description by
 * several fds, close-on-exec.
 */
import type { DependencyContainer } from 'tsyringe';
import { provide } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { FanotifyGroupKind } from './fanotify';

export * from './fanotify';

export function register(c: DependencyContainer): void {
  provide(c, FileKinds, new FanotifyGroupKind());
}
