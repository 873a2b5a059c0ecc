/** Temporary directories under test/work/tmp. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TMP_DIR, USER_DIR_PREFIX } from './paths';

/**
 * Creates a new directory test/work/tmp/<prefix>-XXXXXX, mode 0755 (so that a workload that
 * dropped root, like `task --nobody`, can still see its trigger file). Returns its real path.
 */
export function makeTempDir(prefix: string): string {
  fs.mkdirSync(TMP_DIR, { recursive: true, mode: 0o755 });
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '_');
  const dir = fs.mkdtempSync(path.join(TMP_DIR, `${safe}-`));
  fs.chmodSync(dir, 0o755);
  return fs.realpathSync(dir);
}

/** Removes a directory made by makeTempDir (refuses anything outside test/work/tmp). */
export function removeTempDir(dir: string): void {
  const rel = path.relative(TMP_DIR, path.resolve(dir));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new Error(`removeTempDir: ${dir} is not under ${TMP_DIR}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Creates a directory for a workload that runs as another user: outside the checkout (which may
 * be mode 700), in the system's temporary directory, mode 0755 so that any user can traverse it.
 * A restored process opens its files and executable with its own identity, so whatever such a
 * workload uses must be reachable by that user. Returns its real path.
 */
export function makeUserDir(prefix: string): string {
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '_');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${path.basename(USER_DIR_PREFIX)}${safe}-`));
  fs.chmodSync(dir, 0o755);
  return fs.realpathSync(dir);
}

/** Removes a directory made by makeUserDir (refuses anything else). */
export function removeUserDir(dir: string): void {
  if (!path.basename(dir).startsWith(path.basename(USER_DIR_PREFIX)) || path.dirname(path.resolve(dir)) !== fs.realpathSync(os.tmpdir())) {
    throw new Error(`removeUserDir: ${dir} was not made by makeUserDir`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
