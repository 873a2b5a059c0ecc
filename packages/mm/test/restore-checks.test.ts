/**
 * The image is untrusted at restart: VMA and PAGES objects are checked before anything is
 * mapped or written. These checks refuse before the tracee is touched.
 */
import { expect } from 'chai';
import { container } from 'tsyringe';
import { ImageReader, ObjectType, RestartContext, RestartTask, RestoreObject, Tracee, bufferSource } from '@cptrst/core';
import { PagesImage, VmaImage, restorePages, validateVma } from '../src';
import { thrown, unusedTracee } from './support';

const ctx = new RestartContext(container.createChildContainer(), new ImageReader(bufferSource(Buffer.alloc(0))), require('fs').openSync('/dev/null', 'r') as number, 0);

function vma(start: bigint, end: bigint, prot = 3): VmaImage {
  return Object.assign(new VmaImage(), { start, end, prot, kind: 'anon' });
}

function task(vmas: Map<number, VmaImage> = new Map()): RestartTask {
  return { pid: 31337, tid: 31337, tag: 2, tracee: unusedTracee<Tracee>(), state: new Map<string, unknown>([['mm.vmasByTag', vmas]]) };
}

const vmaObj = (v: VmaImage): RestoreObject => ({ type: ObjectType.VMA, tag: 7, ptag: 2, offset: 4242, obj: v });
const pagesObj = (vaddr: bigint, count: number, payload: number, ptag = 7): RestoreObject => ({
  type: ObjectType.PAGES, tag: 8, ptag, offset: 8192, obj: Object.assign(new PagesImage(), { vaddr, count }), pages: Buffer.alloc(payload),
});

describe('mm restore checks of image objects', () => {
  it('validateVma accepts a page-aligned user range with rwx protection bits', () => {
    const v = vma(0x400000n, 0x401000n, 7);
    expect(validateVma(task(), vmaObj(v))).to.equal(v);
    expect(validateVma(task(), vmaObj(vma(0x7ffffffde000n, 0x7ffffffff000n)))).to.be.instanceOf(VmaImage);
  });

  it('validateVma refuses empty, reversed, unaligned, kernel-space ranges and unknown protection bits', () => {
    const cases: Array<[VmaImage, string]> = [
      [vma(0x400000n, 0x400000n), 'not a page-aligned range'],
      [vma(0x402000n, 0x401000n), 'not a page-aligned range'],
      [vma(0x400800n, 0x401000n), 'not a page-aligned range'],
      [vma(0x400000n, 0x401001n), 'not a page-aligned range'],
      [vma(0x7ffffffff000n, 0x800000001000n), 'outside user space'],
      [vma(0xffffffffff600000n, 0xffffffffff601000n), 'outside user space'],
      [vma(0x400000n, 0x401000n, 8), 'bad protection'],
    ];
    for (const [v, why] of cases) {
      const e = thrown(() => validateVma(task(), vmaObj(v)));
      expect(e.code, why).to.equal('EBADIMG');
      expect(e.pid).to.equal(31337);
      expect(e.message).to.include(why);
      expect(e.message).to.include('image offset 4242');
      expect(e.object).to.equal(`vma ${v.start.toString(16)}-${v.end.toString(16)}`);
    }
  });

  it('restorePages refuses pages of no VMA, a payload of the wrong size, and pages outside their VMA', () => {
    const vmas = new Map([[7, vma(0x400000n, 0x404000n)]]);
    const cases: Array<[RestoreObject, string]> = [
      [pagesObj(0x400000n, 1, 4096, 99), 'belong to no memory area'],
      [pagesObj(0x400000n, 2, 4096), 'payload is 4096 bytes for 2 pages'],
      [pagesObj(0x400000n, 1, 0), 'payload is 0 bytes for 1 pages'],
      [pagesObj(0x3ff000n, 1, 4096), 'outside vma 400000-404000'],
      [pagesObj(0x403000n, 2, 8192), 'outside vma 400000-404000'],
      [pagesObj(0x400800n, 1, 4096), 'outside vma 400000-404000'],
    ];
    for (const [o, why] of cases) {
      const e = thrown(() => restorePages(ctx, task(vmas), o));
      expect(e.code, why).to.equal('EBADIMG');
      expect(e.message, why).to.include(why);
      expect(e.message).to.include('image offset 8192');
      expect(e.pid).to.equal(31337);
    }
  });
});
