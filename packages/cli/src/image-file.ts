/**
 * Where `cptrst checkpoint -o FILE` writes: never into FILE itself. The image goes into a new
 * file in FILE's directory, which is renamed onto FILE only once complete and synced, so a failed
 * or interrupted checkpoint leaves an earlier FILE as it was and no stray file.
 *
 * - Preferred: an O_TMPFILE file, which has no name at all while it is written (a SIGKILL of
 *   cptrst leaves nothing behind). commit() links it to a fresh temporary name (linkat, which
 *   fails rather than replace anything) and renames that onto FILE.
 * - Where the file system has no O_TMPFILE: a named temporary file created with
 *   O_CREAT|O_EXCL|O_NOFOLLOW, removed again by discard().
 * - FILE a symlink: refused (ELOOP), never followed. A FIFO or a character device (/dev/null)
 *   is written directly: it cannot be replaced and holds no earlier image. Anything else that
 *   is not a regular file (a directory, a socket, a block device) is refused.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { CptError } from '@cptrst/core';
import { core } from './core';
import { fileError } from './output';

export interface ImageOutput {
  /** Where sys_checkpoint writes. */
  readonly fd: number;
  /** What errors call the image: its path. */
  readonly name: string;
  /**
   * Puts the image in place: fsync, rename onto the path, fsync the directory. Idempotent. The fd
   * stays open (the caller may still hold its number): close() or discard() closes it. On
   * failure nothing is left at a temporary name and an earlier file at the path is untouched.
   */
  commit(): void;
  /**
   * Drops whatever was written: removes any temporary name and closes the fd; an earlier file at
   * the path stays as it was. After commit() it only closes the fd. Never throws; safe to call
   * more than once and from an interrupt path.
   */
  discard(): void;
  /** Closes the fd once the caller is done with it: after commit(), or else the same as discard(). */
  close(): void;
}

export interface ImageOutputOptions {
  /** Try O_TMPFILE first (default true). False forces the named temporary file, for tests. */
  tmpfile?: boolean;
}

/** The image holds the process's memory: never readable by others. */
const IMAGE_MODE = 0o600;

export function openImageOutput(file: string, opts: ImageOutputOptions = {}): ImageOutput {
  const { CptError } = core();
  const object = `image file ${file}`;
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(file);
  } catch (e) {
    if ((e as { code?: unknown }).code !== 'ENOENT') throw fileError(e, object);
  }
  if (st?.isSymbolicLink()) throw new CptError('ELOOP', `refusing to replace the symlink ${file}`, { object });
  if (st && (st.isFIFO() || st.isCharacterDevice())) return directOutput(file, object);
  if (st && !st.isFile()) throw new CptError(st.isDirectory() ? 'EISDIR' : 'EINVAL', `${file} is ${kindOf(st)}, not a regular file, a FIFO or a character device`, { object });
  return replacingOutput(file, object, opts.tmpfile !== false);
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/** A FIFO or character device: opened as it is (no O_CREAT, no symlink), closed at the end. */
function directOutput(file: string, object: string): ImageOutput {
  const { CptError, linux } = core();
  let fd: number;
  try {
    fd = fs.openSync(file, linux.O.WRONLY | linux.O.NOFOLLOW | linux.O.CLOEXEC);
  } catch (e) {
    throw fileError(e, object);
  }
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    try {
      fs.closeSync(fd);
    } catch {
      /* closed already */
    }
  };
  try {
    const st = fs.fstatSync(fd);
    // It may have been replaced between the lstat and the open.
    if (!st.isFIFO() && !st.isCharacterDevice()) throw new CptError('EINVAL', `${file} changed while it was opened`, { object });
  } catch (e) {
    close();
    throw fileError(e, object);
  }
  return { fd, name: file, commit: () => undefined, discard: close, close };
}

/** Random hex digits, from the kernel (getrandom): not worth loading Node's crypto for. */
function randomHex(bytes: number): string {
  return core().linux.randomBytes(bytes).toString('hex');
}

/** A temporary name in FILE's directory, unlikely to exist (it is created exclusively anyway). */
function temporaryName(file: string): string {
  // Kept well under NAME_MAX (255) whatever the length of FILE's own name.
  const base = path.basename(file).slice(0, 128);
  return path.join(path.dirname(file), `.${base}.cptrst-${process.pid}-${randomHex(6)}.tmp`);
}

function replacingOutput(file: string, object: string, tryTmpfile: boolean): ImageOutput {
  const { CptError, linux } = core();
  const dir = path.dirname(file);
  let fd = -1;
  /** The temporary file's name, once it has one. */
  let tmpName: string | undefined;
  let state: 'open' | 'committed' | 'discarded' = 'open';

  if (tryTmpfile) {
    try {
      fd = linux.openTmpfile(dir, IMAGE_MODE);
    } catch (e) {
      const code = (e as CptError).code;
      if (!linux.tmpfileUnsupported(code)) throw new CptError(code, `cannot create the image in ${dir}: ${(e as Error).message}`, { object });
    }
  }
  if (fd < 0) {
    const flags = linux.O.WRONLY | linux.O.CREAT | linux.O.EXCL | linux.O.NOFOLLOW | linux.O.CLOEXEC;
    for (let attempt = 0; fd < 0; attempt++) {
      const name = temporaryName(file);
      try {
        fd = fs.openSync(name, flags, IMAGE_MODE);
        tmpName = name;
      } catch (e) {
        if ((e as { code?: unknown }).code === 'EEXIST' && attempt < 16) continue;
        throw fileError(e, object);
      }
    }
  }
  try {
    // A umask cannot widen 0600, but a default ACL of the directory could.
    if ((fs.fstatSync(fd).mode & 0o077) !== 0) fs.fchmodSync(fd, IMAGE_MODE);
  } catch (e) {
    discard();
    throw fileError(e, object);
  }

  function closeFd(): void {
    if (fd < 0) return;
    const f = fd;
    fd = -1;
    try {
      fs.closeSync(f);
    } catch {
      /* closed already */
    }
  }

  function removeName(): void {
    if (tmpName === undefined) return;
    const name = tmpName;
    tmpName = undefined;
    try {
      fs.unlinkSync(name);
    } catch {
      /* gone already */
    }
  }

  function discard(): void {
    if (state === 'open') {
      state = 'discarded';
      removeName();
    }
    closeFd();
  }

  function commit(): void {
    if (state === 'committed') return;
    if (state === 'discarded') throw new CptError('EINVAL', 'the image was discarded', { object });
    try {
      fs.fsyncSync(fd);
      if (tmpName === undefined) {
        for (let attempt = 0; tmpName === undefined; attempt++) {
          const name = temporaryName(file);
          try {
            linux.linkFd(fd, name);
            tmpName = name;
          } catch (e) {
            if ((e as CptError).code !== 'EEXIST' || attempt >= 16) throw e;
          }
        }
      }
      // The path may have become a symlink since it was opened: still never replaced.
      let now: fs.Stats | undefined;
      try {
        now = fs.lstatSync(file);
      } catch {
        /* gone: fine */
      }
      if (now?.isSymbolicLink()) throw new CptError('ELOOP', `refusing to replace the symlink ${file}`, { object });
      fs.renameSync(tmpName, file);
    } catch (e) {
      // The fd stays open: whoever holds its number closes it with discard().
      removeName();
      throw e instanceof CptError ? e : fileError(e, object);
    }
    // The new name is in place: the temporary one no longer exists.
    tmpName = undefined;
    state = 'committed';
    syncDirectory(dir, object);
  }

  return {
    get fd() {
      return fd;
    },
    name: file,
    commit,
    discard,
    close: discard,
  };
}

/** fsync of the directory, so that the rename itself survives a crash. */
function syncDirectory(dir: string, object: string): void {
  const { linux } = core();
  let dfd: number;
  try {
    dfd = fs.openSync(dir, linux.O.RDONLY | linux.O.DIRECTORY | linux.O.CLOEXEC);
  } catch (e) {
    throw fileError(e, object);
  }
  try {
    fs.fsyncSync(dfd);
  } catch (e) {
    throw fileError(e, object);
  } finally {
    fs.closeSync(dfd);
  }
}
