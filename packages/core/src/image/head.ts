/** The two layouts the image module owns itself: the head and the terminator. */
import { objectType, str, strs, u32, u64 } from './layout';
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
