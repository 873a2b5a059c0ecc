/**
 * The image is untrusted at restart: VMA and PAGES objects are checked before anything is
 * mapped or written. These checks refuse before the tracee is touched.
 */
import { expect } from 'chai';
import { container } from 'tsyringe';
import { ImageReader, ObjectType, RestartContext, RestartTask, RestoreObject, TaskState, Tracee, bufferSource, objectType, u32 } from '@cptrst/core';
import * as fs from 'fs';
import { AnonVma, FileVma, MmRestore, PagesImage, RestoredVma, VMAS_BY_TAG, VmaImage, register, restorePages, validateVma } from '../src';
import { thrown, unusedTracee } from './support';

/** A record a VMA kind could declare (none of mm's own kinds has one). */
@objectType(1790, 'TEST_VMA_NOTE', { parents: [ObjectType.VMA], testOnly: true, owner: '@test/mm' })
class TestVmaNote {
  @u32() n = 0;
}

const mmContainer = container.createChildContainer();
register(mmContainer);
// The context looks at who owns its image stream: /dev/null stands in (open for the test run).
const ctx = new RestartContext(mmContainer, new ImageReader(bufferSource(Buffer.alloc(0))), fs.openSync('/dev/null', 'r'), 0);

function vma(start: bigint, end: bigint, prot = 3): VmaImage {
  return Object.assign(new VmaImage(), { start, end, prot, kind: 'anon' });
}
const anon = (img: VmaImage): RestoredVma => ({ img, kind: new AnonVma() });

function task(vmas: Map<number, RestoredVma> = new Map()): RestartTask {
  return { pid: 31337, tid: 31337, tag: 2, tracee: unusedTracee<Tracee>(), state: new TaskState([[VMAS_BY_TAG, vmas]]) };
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
    const vmas = new Map([[7, anon(vma(0x400000n, 0x404000n))]]);
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

  it('no page of an image goes through a shared file mapping: its VMA with pages, or PAGES under it, are EBADIMG', () => {
    const shared = Object.assign(vma(0x400000n, 0x404000n), { kind: 'file', shared: true, path: '/etc/passwd', vmFlags: ['rd', 'wr', 'sh', 'mr', 'mw', 'me', 'ms'] });
    // The VMA object itself, when it claims pages: refused before anything is opened or mapped.
    const withPages = Object.assign(new VmaImage(), shared, { pageCount: 1n });
    const e = thrown(() => new MmRestore().restore(ctx, task(), vmaObj(withPages)));
    expect(e.code).to.equal('EBADIMG');
    expect(e.message).to.include('image offset 4242').and.include('whose contents are not kept in an image');
    expect(e.object).to.equal('vma 400000-404000 /etc/passwd');
    // PAGES under such a VMA (one that said it had none).
    const vmas = new Map([[7, { img: shared, kind: new FileVma() }]]);
    const p = thrown(() => restorePages(ctx, task(vmas), pagesObj(0x400000n, 1, 4096)));
    expect(p.code).to.equal('EBADIMG');
    expect(p.message).to.include('shared file mapping, whose contents are not kept in an image');
    // A private file mapping's pages (the process's own copies) are fine up to the write, which needs the tracee.
    const priv = new Map([[7, { img: Object.assign(new VmaImage(), shared, { shared: false }), kind: new FileVma() }]]);
    expect(thrown(() => restorePages(ctx, task(priv), pagesObj(0x400000n, 1, 4096))).message).to.include('the tracee was used');
  });

  it('a VMA whose VmFlags its kind does not restore is EBADIMG', () => {
    const v = Object.assign(vma(0x400000n, 0x404000n), { vmFlags: ['rd', 'wr', 'um'] });
    const e = thrown(() => new MmRestore().restore(ctx, task(), vmaObj(v)));
    expect(e.code).to.equal('EBADIMG');
    expect(e.message).to.include('VmFlags um on anon memory');
  });

  it('a record of a VMA kind must follow a VMA whose kind declares it, before its pages (EBADIMG)', () => {
    const note: RestoreObject = { type: 1790, tag: 9, ptag: 7, offset: 5000, obj: new TestVmaNote() };
    const e = thrown(() => new MmRestore().restore(ctx, task(), note));
    expect(e.code).to.equal('EBADIMG');
    expect(e.message).to.include('image offset 5000').and.include('belongs to no memory area waiting for its records');
  });
});
