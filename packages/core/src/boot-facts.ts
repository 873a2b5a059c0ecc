/**
 * Facts about the machine that are fixed when the kernel boots (the XSAVE layout, the vDSO's
 * hash), which root keeps in /run/cptrst for later runs in the same boot: finding one out again
 * costs a helper process (the XSAVE probe) or a module load (Node's crypto for a sha256), several
 * ms of every checkpoint and restart. Each fact is one file, "BOOT_ID VALUE\n", used only by root,
 * from a directory and a file that only root can have written, and only in the boot that wrote
 * it; anything else is ignored and the fact found out again. The caller checks VALUE's form.
 */
import * as fs from 'fs';
import * as path from 'path';
import { O, bootId } from './linux';

/** Where root keeps the facts of this boot (a tmpfs, emptied at boot). */
export const BOOT_FACTS_DIR = '/run/cptrst';
const LINE = /^([0-9a-f-]{36}) ([^\n]*)\n$/;

/** Whether a file or directory (not a symlink) can only have been written by root. */
const rootOnly = (st: fs.Stats) => !st.isSymbolicLink() && st.uid === 0 && (st.mode & 0o022) === 0;

/**
 * The value kept under `name` in this boot, or undefined: only for root, from a file and
 * directory only root can write, at most `maxBytes` long, written in this boot.
 */
export function readBootFact(name: string, maxBytes: number): string | undefined {
  if (process.geteuid?.() !== 0) return undefined;
  let fd: number;
  try {
    const dir = fs.lstatSync(BOOT_FACTS_DIR);
    if (!dir.isDirectory() || !rootOnly(dir)) return undefined;
    fd = fs.openSync(path.join(BOOT_FACTS_DIR, name), O.RDONLY | O.NOFOLLOW | O.CLOEXEC);
  } catch {
    return undefined;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || !rootOnly(st) || st.size > maxBytes + 38) return undefined;
    const m = LINE.exec(fs.readFileSync(fd, 'utf8'));
    return m && m[1] === bootId() ? m[2] : undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/** Keeps `value` (one line) under `name` for later runs in this boot: root only, best effort (a run that cannot write it finds the fact out again). */
export function writeBootFact(name: string, value: string): void {
  if (process.geteuid?.() !== 0 || value.includes('\n')) return;
  const file = path.join(BOOT_FACTS_DIR, name);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.mkdirSync(BOOT_FACTS_DIR, { mode: 0o700 });
  } catch {
    /* there already (who owns it is checked next) */
  }
  try {
    const dir = fs.lstatSync(BOOT_FACTS_DIR);
    if (!dir.isDirectory() || !rootOnly(dir)) return;
    fs.writeFileSync(tmp, `${bootId()} ${value}\n`, { mode: 0o644, flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* not made */
    }
  }
}
