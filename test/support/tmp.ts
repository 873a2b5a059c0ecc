/**
 * Temporary directories: under test/work/tmp, and, for workloads that drop root, world-reachable
 * ones under the system's temporary directory (the checkout may be in a directory others cannot
 * search, such as a clone under /root with mode 700).
 */
import * as fs from 'fs';
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

/** Whether a user other than root can reach `dir`: every directory from / down to it searchable by others. */
export function isWorldReachable(dir: string): boolean {
  let d = path.resolve(dir);
  for (;;) {
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    const parent = path.dirname(d);
    if (parent === d) return true;
    d = parent;
  }
}

/** World-reachable directories made by makeWorldDir, removed at exit at the latest. */
const worldDirs = new Set<string>();
process.on('exit', () => {
  for (const d of worldDirs) fs.rmSync(d, { recursive: true, force: true });
});

/**
 * Creates a directory of its own for a workload that drops root (`task --nobody`): a new
 * <tmp>/cptrst-user-<checkout hash>-<prefix>-XXXXXX, mode 0755, in the system's temporary directory (or /tmp) so that
 * nobody can reach it whatever the permissions of the checkout. Returns its real path.
 */
export function makeWorldDir(prefix: string): string {
  if (!isWorldReachable(path.dirname(USER_DIR_PREFIX))) throw new Error(`makeWorldDir: ${path.dirname(USER_DIR_PREFIX)} cannot be reached by other users`);
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '_');
  const dir = fs.realpathSync(fs.mkdtempSync(`${USER_DIR_PREFIX}${safe}-`));
  fs.chmodSync(dir, 0o755);
  worldDirs.add(dir);
  return dir;
}

/** Removes a directory made by makeTempDir or makeWorldDir (refuses anything else). */
export function removeTempDir(dir: string): void {
  const resolved = path.resolve(dir);
  if (worldDirs.delete(resolved)) {
    fs.rmSync(resolved, { recursive: true, force: true });
    return;
  }
  const rel = path.relative(TMP_DIR, resolved);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new Error(`removeTempDir: ${dir} is not under ${TMP_DIR}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * A directory for a workload that runs as another user: the same as makeWorldDir.
 * @alias
 */
export const makeUserDir = makeWorldDir;
/**
 * Removes a directory made by makeUserDir.
 * @alias
 */
export const removeUserDir = removeTempDir;
