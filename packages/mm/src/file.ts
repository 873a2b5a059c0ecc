/**
 * File mappings, private or shared.
 *
 * Checkpoint: only regular files are mapped back. Memory of the kernel's internal shm mount
 * (SysV shm; memfds have a kind of their own, memfd.ts) is refused: it is recognised by the
 * device of the mapped file, not by its name, which the process chooses. A private mapping's pages that the process changed (anonymous
 * copies, pagemap bit 61 clear) go into the image; a shared mapping's contents are the file's,
 * so none of its pages are stored.
 *
 * Restart: the file is opened inside the restored task, with its identity, by the recorded path
 * (canonical, no symlinks) and must be the same file (kind, size, mtime; device and inode on the
 * same boot): core's openRecordedFile. A shared mapping that may write (VmFlag "mw": the file
 * was open for writing) is opened O_RDWR, so the restored user must be allowed to write the
 * file. No page of an image is ever written through a shared file mapping: an image that holds
 * pages for one is refused.
 */
import * as fs from 'fs';
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, KindRecords, NamedCall, RecordedFileIdentity, RestartContext, RestartTask, S_IFMT,
  S_IFREG, StateKey, fileTypeName, linux, openRecordedFile, refuse, runCalls,
} from '@cptrst/core';
import { GUARD_FLAG, LOCK_FLAGS, MADVISE_FLAGS, MM_LAYOUT, SEAL_FLAG, VmaEntry, VmaImage, VmaKindHandler, describeVma, internalShmDev, mapAt, mappedFile } from './vma';
import { vmFlagCalls } from './madvise';
import { isAnonCopy } from './pages';
import { VmaKeptImage, dumpKeptRecord, keepArea } from './cow';

const { MAP, SYS, O } = linux;

/** madvise's flags but wipeonfork (private anonymous memory only), noreserve, locks, seal. */
export const FILE_FLAGS = new Set(['nr', GUARD_FLAG, ...Object.keys(MADVISE_FLAGS).filter((f) => f !== 'wf'), ...LOCK_FLAGS, SEAL_FLAG]);

/**
 * What an image holds of a mapped file's memory (a regular file, a deleted one, a memfd): a
 * private mapping's pages the process changed (anonymous copies); a shared mapping's contents are
 * the file's (its own, or its carrier's), never stored, never written back from an image.
 */
export abstract class MappedFilePages {
  storesPages(img: VmaImage): boolean {
    return !img.shared;
  }
  storesPage(pm: bigint): boolean {
    return isAnonCopy(pm);
  }
}

export class FileVma extends MappedFilePages implements VmaKindHandler {
  readonly kind = 'file';
  /** A private mapping kept copy-on-write from the parent (cow.ts) has one: the pages to discard. */
  readonly records = [VmaKeptImage];
  claims(v: VmaEntry): boolean {
    // A SysV segment's inode is its id, which may be 0: claimed here so that it is refused by name.
    return (v.inode !== 0n || v.path.startsWith('/SYSV')) && v.path.startsWith('/') && !(v.shared && v.path === '/dev/zero' && v.deleted);
  }
  describe(task: CheckpointTask, v: VmaEntry, img: VmaImage): void {
    const what = describeVma(v);
    const st = mappedFile(task, v).stat;
    if (st.dev === internalShmDev() || (v.deleted && (v.path.startsWith('/memfd:') || v.path.startsWith('/SYSV')))) {
      const which = v.path.startsWith('/SYSV') ? 'SysV shared memory' : 'memory of the kernel\'s internal shm mount (SysV or a file opened through map_files)';
      refuse(task.pid, what, `${which} is mapped; SysV shared memory mappings are not supported yet`);
    }
    if (v.deleted || st.nlink === 0n) refuse(task.pid, what, 'the mapped file has been deleted since this area was read (its name is gone now)');
    if ((Number(st.mode) & S_IFMT) !== S_IFREG) {
      refuse(task.pid, what, `the mapped file is a ${fileTypeName(Number(st.mode))}; only regular files are mapped back (device mappings are not supported)`);
    }
    img.inode = st.ino;
    img.fileDev = st.dev;
    img.fileSize = st.size;
    img.fileMtimeNs = st.mtimeNs;
  }
  acceptsVmFlag(flag: string): boolean {
    return FILE_FLAGS.has(flag);
  }
  /** Only an area kept from the parent has a record. */
  expectsRecords(img: VmaImage): boolean {
    return img.inheritedAt !== 0n;
  }
  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, _img: VmaImage, out: KindRecordWriter): void {
    dumpKeptRecord(task, v, out);
  }
  map(ctx: RestartContext, task: RestartTask, img: VmaImage, _writable: boolean, records: KindRecords): void {
    const t = task.tracee!;
    const what = describeVma(img);
    const kept = records.of(VmaKeptImage);
    const mayWrite = img.shared && img.vmFlags.includes('mw');
    const flags = (mayWrite ? O.RDWR : O.RDONLY) | O.CLOEXEC;
    const expect: RecordedFileIdentity = { type: S_IFREG, size: img.fileSize, mtimeNs: img.fileMtimeNs, ino: img.inode || undefined, dev: img.fileDev || undefined };
    const fd = openFileOnce(ctx, task, img, flags, expect, what);
    try {
      if (kept.length || img.inheritedAt !== 0n) {
        // The parent's copy, kept in place: it must map the very file just checked.
        const mapped = fs.statSync(`/proc/${task.pid}/map_files/${img.start.toString(16)}-${img.end.toString(16)}`, { bigint: true });
        const opened = fs.statSync(`/proc/${task.pid}/fd/${fd}`, { bigint: true });
        if (img.shared || mapped.dev !== opened.dev || mapped.ino !== opened.ino) {
          throw new CptError('EBADIMG', 'an area kept from the parent maps another file than the recorded one', { pid: task.pid, object: what });
        }
        keepArea(task, img, kept);
        closeOpenFile(task);
        runCalls(t, vmFlagCalls(img));
        return;
      }
      // The areas of one file come one after the other (a library's code, its data...): where the
      // layout has an area right after this one, the fd stays open for it (openFileOnce).
      const keep = (task.state.get(MM_LAYOUT) ?? []).some((r) => r.start === img.end);
      const close: NamedCall[] = keep ? [] : [{ nr: SYS.close, args: [fd], what: `close of ${img.path}`, mayFail: true }];
      // Its own protection, never more: no page of the image goes through a file mapping that is
      // shared. Its VmFlags, and the close, go in the same batch as the mmap.
      mapAt(task, img, img.prot, img.shared ? MAP.SHARED : MAP.PRIVATE, fd, img.path, [...vmFlagCalls(img), ...close]);
      const held = task.state.get(OPEN_FILE)!;
      if (keep) held.last = { end: img.end, prot: img.prot, shared: img.shared, pgoffEnd: img.pgoff + (img.end - img.start) };
      else task.state.delete(OPEN_FILE);
    } catch (e) {
      closeOpenFile(task);
      throw e;
    }
  }
}

/** The file the task's last file area was mapped from, held open inside the task for the next area of the same file. */
interface OpenFile {
  key: string;
  fd: bigint;
  /** The last area mapped through it. */
  last?: { end: bigint; prot: number; shared: boolean; pgoffEnd: bigint };
}
const OPEN_FILE = new StateKey<OpenFile>('mm.openFile');

const fileKey = (path: string, flags: number, e: RecordedFileIdentity) => [flags, e.type, e.size, e.mtimeNs, e.dev, e.ino, path].map((x) => String(x ?? '-')).join(':');

/**
 * The fd of the area's file inside the task, opened and checked as the recorded file
 * (openRecordedFile), or the one held open (holdOpenFile) when it was opened with the same path,
 * flags and expected identity: the same checked file, not looked up again. Not where the area
 * continues the last one mapped through it (right after it, the same protection and sharing, the
 * next file offset): through the same open file the kernel would merge the two into one area,
 * which they were not. It stays held until closeOpenFile.
 */
function openFileOnce(ctx: RestartContext, task: RestartTask, img: VmaImage, flags: number, expect: RecordedFileIdentity, object: string): bigint {
  const key = fileKey(img.path, flags, expect);
  const held = task.state.get(OPEN_FILE);
  const l = held?.last;
  const merges = !!l && l.end === img.start && l.prot === img.prot && l.shared === img.shared && l.pgoffEnd === img.pgoff;
  if (held?.key === key && !merges) return held.fd;
  closeOpenFile(task);
  const fd = openRecordedFile(task.tracee!, img.path, { flags, expect, sameBoot: ctx.sameBoot, object });
  task.state.set(OPEN_FILE, { key, fd });
  return fd;
}

/** Holds `fd`, opened inside the task as openFileOnce would have, for the task's next file area. */
export function holdOpenFile(task: RestartTask, path: string, flags: number, expect: RecordedFileIdentity, fd: bigint): void {
  closeOpenFile(task);
  task.state.set(OPEN_FILE, { key: fileKey(path, flags, expect), fd });
}

/**
 * Closes the fd held for the next file area, if any: before an area of another kind is mapped,
 * and at the end of the task's areas. Returns whether one was held.
 */
export function closeOpenFile(task: RestartTask): boolean {
  const held = task.state.get(OPEN_FILE);
  if (!held) return false;
  task.state.delete(OPEN_FILE);
  task.tracee!.syscall(SYS.close, [held.fd]);
  return true;
}
