/** The layouts the image module owns itself: the head, the terminator, and the start of the pages section. */
import { objectType, str, strs, u32, u64, u64s } from './layout';
import { ObjectType } from './types';

export type ImageHeadInit = Partial<Pick<ImageHead, keyof ImageHead>>;

/**
 * What the image depends on, checked at restart before anything is built: the machine (arch,
 * kernel, page size), the CPU state format (xsave features/size, cpu flags), the vDSO the image's
 * code may have called into, and who wrote it when.
 */
@objectType(ObjectType.HEAD, 'HEAD', { parents: [] })
export class ImageHead {
  /** The Arch's name (filled by the arch package's machine probe). */
  @str() arch: string = '';
  @str() kernelRelease: string = '';
  @u32() pageSize: number = 4096;
  /** XCR0 mask of the xsave features present in XSTATE objects. */
  @u64() xsaveFeatures: bigint = 0n;
  @u32() xsaveSize: number = 0;
  @strs() cpuFlags: string[] = [];
  @u32() vdsoSize: number = 0;
  /** Hex sha256 of the dumping host's vDSO. */
  @str() vdsoHash: string = '';
  /** Wall clock, ns since the epoch. */
  @u64() createdNs: bigint = 0n;
  @str() toolVersion: string = '';
  @str() hostname: string = '';
  /** The writing machine's boot id: inode and device numbers recorded in the image are only compared within the same boot. */
  @str({ since: 1 }) bootId: string = '';

  constructor(init: ImageHeadInit = {}) {
    Object.assign(this, init);
  }
}

/** Last object of every image; the count lets a reader notice objects dropped from the middle. */
@objectType(ObjectType.TERMINATOR, 'TERMINATOR', { parents: [ObjectType.HEAD] })
export class Terminator {
  /** Objects before the terminator, head included. */
  @u32() objectCount: number = 0;
}

/**
 * The start of the pages section (ImageWriter.writeWithPagesAtEnd): the objects that follow it,
 * to the terminator, are exactly those it lists, in that order. A reader knows from it, before
 * any of them arrives, which pages will come and in what order: a lazy restart lets the processes
 * run here and reads the rest while they run.
 */
@objectType(ObjectType.PAGES_FOLLOW, 'pages-follow', { parents: [ObjectType.HEAD] })
export class PagesFollow {
  /** Per object that follows: its parent's tag, the key its writer gave it (PAGES: its address), its page count. */
  @u64s() entries: bigint[] = [];
}
