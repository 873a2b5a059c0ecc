/**
 * @cptrst-example/plugin-pidfd: a cptrst module of its own that adds one kind of open file, a
 * pidfd of the process itself (an `anon_inode:[pidfd]` fd), which cptrst itself refuses. Load it
 * after the operations module:
 *
 *   cptrst --module @cptrst/cpt-module --module ./examples/plugin-pidfd checkpoint PID -o img
 *
 * It registers one FileKindHandler under @cptrst/files' FileKinds token. The files subsystem does
 * the rest, as for its own kinds: the FILE object (flags, ...), the fd numbers (FD objects), the
 * sharing of one open file description by several fds, close-on-exec.
 */
import type { DependencyContainer } from 'tsyringe';
import { provide } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { PidfdKind } from './pidfd';

export * from './pidfd';

export function register(c: DependencyContainer): void {
  provide(c, FileKinds, new PidfdKind());
}
