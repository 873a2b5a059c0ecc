import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { onlyRootCanChange, withFileMapping } from '../src/linux';

describe('a file mapped into cptrst', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-map-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('gives the bytes of a range of the file, from a page-aligned offset', () => {
    const p = path.join(dir, 'data');
    const bytes = Buffer.alloc(5 * 4096 + 100);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    fs.writeFileSync(p, bytes);
    const fd = fs.openSync(p, 'r');
    try {
      const crc = withFileMapping(fd, 4096, 3 * 4096 + 7, (b) => zlib.crc32(b));
      expect(crc).to.equal(zlib.crc32(bytes.subarray(4096, 4 * 4096 + 7)));
      expect(withFileMapping(fd, 0, 0, (b) => b.length)).to.equal(0);
      expect(() => withFileMapping(fd, 100, 4096, (b) => b.length)).to.throw().with.property('code', 'EINVAL');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('is allowed only for a file no one but root can change', function () {
    if (process.getuid?.() !== 0) this.skip();
    const p = path.join(dir, 'owned');
    fs.writeFileSync(p, 'x', { mode: 0o600 });
    const check = () => {
      const fd = fs.openSync(p, 'r');
      try {
        return onlyRootCanChange(fd);
      } finally {
        fs.closeSync(fd);
      }
    };
    // tmpfs, ext2/3/4, xfs, btrfs, overlayfs
    const onLocalFs = [0x01021994, 0xef53, 0x58465342, 0x9123683e, 0x794c7630].includes(fs.statfsSync(p).type);
    expect(check()).to.equal(onLocalFs);
    fs.chmodSync(p, 0o620);
    expect(check()).to.equal(false);
    fs.chmodSync(p, 0o600);
    fs.chownSync(p, 65534, 0);
    expect(check()).to.equal(false);
  });
});
