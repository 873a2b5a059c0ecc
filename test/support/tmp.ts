/** Temporary directories under test/work/tmp. */
import * as fs from 'fs';
import * as path from 'path';
import { TMP_DIR } from './paths';

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
