/**
 * @cptrst-example/plugin-secretmem: a cptrst module of its own that adds one kind of open file, a
 * memfd_secret fd made and not sized yet (`/secretmem (deleted)`), which cptrst itself refuses.
 * Load it after the operations module:
 *
 *   cptrst --module @cptrst/cpt-module --module ./examples/plugin-secretmem checkpoint PID -o img
 *
 * It registers one FileKindHandler under @cptrst/files' FileKinds token, with a priority above
 * cptrst's own regular-file kind. The files subsystem does the rest, as for its own kinds: the
 * FILE object (flags, ...), the fd numbers (FD objects), the sharing of one open file description
 * by several fds, close-on-exec.
 */
import type { DependencyContainer } from 'tsyringe';
import { provide } from '@cptrst/core';
import { FileKinds } from '@cptrst/files';
import { SecretmemKind } from './secretmem';

export * from './secretmem';

export function register(c: DependencyContainer): void {
  provide(c, FileKinds, new SecretmemKind());
}
