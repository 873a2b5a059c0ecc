/** Where things are: the repository, the workload sources, and test/work (git-ignored). */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

function findRepoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'test', 'workloads')) && fs.existsSync(path.join(dir, 'packages'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the repository root above ${__dirname}`);
    dir = parent;
  }
}

export const REPO_ROOT = fs.realpathSync(findRepoRoot());
export const WORKLOADS_SRC = path.join(REPO_ROOT, 'test', 'workloads');
/** Everything the tests create lives under here (ignored by git). */
export const WORK_DIR = path.join(REPO_ROOT, 'test', 'work');
export const BIN_DIR = path.join(WORK_DIR, 'bin');
export const TMP_DIR = path.join(WORK_DIR, 'tmp');
/**
 * The cptrst command line tool as installed: the bin shim, which runs the single-file bundle
 * (built by `npm run build`) with its code cache.
 */
export const CLI_MAIN = path.join(REPO_ROOT, 'packages', 'cli', 'bin', 'cptrst.js');
/**
 * Directories for workloads run as another user start with this (see makeUserDir). It names the
 * checkout, so that the suites of two checkouts run at once never take each other's workloads for
 * their own (a PID of one's, ended and reused by the other's, would be killed by its clean-up).
 */
export const USER_DIR_PREFIX = path.join(fs.realpathSync(os.tmpdir()), `cptrst-user-${createHash('sha256').update(REPO_ROOT).digest('hex').slice(0, 8)}-`);
