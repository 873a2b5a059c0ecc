/**
 * Page contents. Only pages that hold something of the process's own are stored: present or
 * swapped anonymous pages, and the modified (anonymous copy) pages of private file mappings.
 * Untouched pages are not stored. Runs of stored pages become PAGES objects whose payload is
 * page aligned in the stream; at restart they are written straight into the new process.
 */
import {
  CheckpointContext, CheckpointTask, CptError, ObjectType, RestartContext, RestartTask, RestoreObject, linux,
  objectType, u32, u64,
} from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, describeVma } from './vma';

export const PAGE = 4096;
/** Largest PAGES object: the reader refuses objects over 64 MiB. */
const CHUNK_PAGES = 4096; // 16 MiB
const PM_PRESENT = 1n << 63n;
const PM_SWAPPED = 1n << 62n;
const PM_FILE_OR_SHARED = 1n << 61n;

export const isPresentOrSwapped = (pm: bigint): boolean => (pm & (PM_PRESENT | PM_SWAPPED)) !== 0n;
/** A private file mapping's page that is the process's own copy, not the file's page. */
export const isAnonCopy = (pm: bigint): boolean => (pm & PM_SWAPPED) !== 0n || ((pm & PM_PRESENT) !== 0n && (pm & PM_FILE_OR_SHARED) === 0n);

@objectType(ObjectType.PAGES, 'pages', { parents: [ObjectType.VMA] })
export class PagesImage {
  @u64() vaddr = 0n;
  @u32() count = 0;
}

/** Runs [first page index, count) of the pages of `vma` that `kind` stores. */
export function storedRuns(task: CheckpointTask, vma: VmaEntry, kind: VmaKindHandler): Array<[number, number]> {
  if (vma.rss === 0 && vma.swap === 0) return []; // nothing resident: skip the pagemap read
  const n = Number((vma.end - vma.start) / BigInt(PAGE));
  const runs: Array<[number, number]> = [];
  const BATCH = 65536;
  for (let base = 0; base < n; base += BATCH) {
    const pm = linux.readPagemap(task.pid, vma.start + BigInt(base * PAGE), Math.min(BATCH, n - base));
    for (let i = 0; i < pm.length; i++) {
      if (!kind.storesPage(pm[i])) continue;
      const idx = base + i;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === idx && last[1] < CHUNK_PAGES) last[1]++;
      else runs.push([idx, 1]);
    }
  }
  return runs;
}

export function dumpPages(ctx: CheckpointContext, task: CheckpointTask, vma: VmaEntry, runs: Array<[number, number]>, vmaTag: number): void {
  for (const [first, count] of runs) {
    const img = new PagesImage();
    img.vaddr = vma.start + BigInt(first * PAGE);
    img.count = count;
    const data = ctx.timed('read pages', () => task.tracee.readMemory(img.vaddr, count * PAGE));
    ctx.timed('write pages', () => ctx.writeWithPages(img, data, vmaTag));
    ctx.progress({ phase: 'pages', pid: task.pid, bytes: data.length });
  }
}

export function restorePages(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
  const img = o.obj as PagesImage;
  const vmas = task.state.get('mm.vmasByTag') as Map<number, VmaImage>;
  const vma = vmas.get(o.ptag);
  const end = img.vaddr + BigInt(img.count * PAGE);
  const bad = (why: string) => new CptError('EBADIMG', `pages at 0x${img.vaddr.toString(16)} (image offset ${o.offset}): ${why}`, { pid: task.pid, object: 'pages' });
  if (!vma) throw bad('they belong to no memory area');
  if (!o.pages || o.pages.length !== img.count * PAGE) throw bad(`payload is ${o.pages?.length ?? 0} bytes for ${img.count} pages`);
  if (img.vaddr < vma.start || end > vma.end || img.vaddr % BigInt(PAGE) !== 0n) throw bad(`outside ${describeVma(vma)}`);
  task.tracee!.writeMemory(img.vaddr, o.pages);
}
