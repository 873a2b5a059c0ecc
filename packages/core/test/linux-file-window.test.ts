import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { FILE_WINDOW_BYTES, MemoryRegion, SMALL_FILE_WINDOW_BYTES, withFileWindow } from '../src/linux/libc';

describe('a file mapped into cptrst through the one window', () => {
  let dir: string;
  let file: string;
  let bytes: Buffer;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-window-'));
    file = path.join(dir, 'data');
    bytes = Buffer.alloc(9 * 4096 + 100);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    fs.writeFileSync(file, bytes);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('gives the bytes of each range, one after the other, and zeros to a view kept after the call', () => {
    const fd = fs.openSync(file, 'r');
    try {
      let kept: Buffer | undefined;
      const a = withFileWindow(fd, 4096, 3 * 4096 + 7, (b) => {
        kept = b;
        return zlib.crc32(b);
      });
      expect(a).to.equal(zlib.crc32(bytes.subarray(4096, 4 * 4096 + 7)));
      expect(kept!.every((x) => x === 0)).to.equal(true);
      const b = withFileWindow(fd, 8192, 2 * 4096, (v) => Buffer.from(v));
      expect(b.equals(bytes.subarray(8192, 4 * 4096))).to.equal(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a range over the small window goes through the large one, with zeros to a view kept after the call', () => {
    const big = path.join(dir, 'big');
    const data = Buffer.alloc(SMALL_FILE_WINDOW_BYTES + 3 * 4096);
    for (let i = 0; i < data.length; i++) data[i] = (i * 40503) >>> 8;
    fs.writeFileSync(big, data);
    const fd = fs.openSync(big, 'r');
    try {
      let kept: Buffer | undefined;
      const crc = withFileWindow(fd, 4096, SMALL_FILE_WINDOW_BYTES + 4096, (b) => {
        kept = b;
        // A small range inside it goes through the small window.
        expect(withFileWindow(fd, 0, 4096, (s) => Buffer.from(s)).equals(data.subarray(0, 4096))).to.equal(true);
        return zlib.crc32(b);
      });
      expect(crc).to.equal(zlib.crc32(data.subarray(4096, SMALL_FILE_WINDOW_BYTES + 2 * 4096)));
      expect(kept!.length).to.equal(SMALL_FILE_WINDOW_BYTES + 4096);
      expect(kept!.every((x) => x === 0)).to.equal(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a range that does not start on a page: mapped from the page below, its own bytes given', () => {
    const fd = fs.openSync(file, 'r');
    try {
      const got = withFileWindow(fd, 4096 + 100, 2 * 4096, (b) => Buffer.from(b));
      expect(got.equals(bytes.subarray(4096 + 100, 3 * 4096 + 100))).to.equal(true);
      expect(withFileWindow(fd, 100, 0, (b) => b.length)).to.equal(0);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a call inside another, a range larger than the window, a failed mapping: each still right, and the window usable after', () => {
    const fd = fs.openSync(file, 'r');
    try {
      const nested = withFileWindow(fd, 0, 4096, (outer) => {
        const inner = withFileWindow(fd, 4096, 4096, (b) => Buffer.from(b));
        return [Buffer.from(outer), inner];
      });
      expect(nested[0].equals(bytes.subarray(0, 4096))).to.equal(true);
      expect(nested[1].equals(bytes.subarray(4096, 8192))).to.equal(true);
      // Past the end of this small file only the first pages exist: a range over the window's size maps elsewhere.
      expect(withFileWindow(fd, 0, FILE_WINDOW_BYTES + 4096, (b) => b.length)).to.equal(FILE_WINDOW_BYTES + 4096);
      // A file open for writing only cannot be mapped for reading.
      const writeOnly = fs.openSync(file, fs.constants.O_WRONLY);
      try {
        expect(() => withFileWindow(writeOnly, 0, 4096, (b) => b.length)).to.throw().with.property('code', 'EACCES');
      } finally {
        fs.closeSync(writeOnly);
      }
      expect(() => withFileWindow(-1, 0, 4096, (b) => b.length)).to.throw().with.property('code', 'EBADF');
      expect(withFileWindow(fd, 0, 4096, (b) => Buffer.from(b)).equals(bytes.subarray(0, 4096))).to.equal(true);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('a region of cptrst\'s memory that parts of a file are mapped into (MemoryRegion)', () => {
  let dir: string;
  let file: string;
  let bytes: Buffer;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-region-'));
    file = path.join(dir, 'data');
    bytes = Buffer.alloc(6 * 4096);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    fs.writeFileSync(file, bytes);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('maps pages of a file at a place of it, seen through its one view, until cleared; a failed mapping leaves writable zeros', () => {
    const r = MemoryRegion.reserve(8 * 4096)!;
    try {
      expect(r.size).to.equal(8 * 4096);
      expect(r.address(4096) - r.base).to.equal(4096n);
      const fd = fs.openSync(file, 'r');
      try {
        const b = r.mapFile(2 * 4096, 3 * 4096, fd, 4096);
        expect(b.equals(bytes.subarray(4096, 4 * 4096))).to.equal(true);
        expect(r.view.subarray(2 * 4096, 5 * 4096).equals(b)).to.equal(true);
        // Off a page, or past its end: refused before anything is mapped.
        expect(() => r.mapFile(100, 4096, fd, 0)).to.throw(/offset 100/);
        expect(() => r.mapFile(7 * 4096, 2 * 4096, fd, 0)).to.throw(/region of/);
        r.clear(2 * 4096, 3 * 4096);
        expect(r.view.subarray(2 * 4096, 5 * 4096).every((x) => x === 0)).to.equal(true);
      } finally {
        fs.closeSync(fd);
      }
      // A file open for writing only cannot be mapped: EACCES, and the place is zero, writable memory.
      const wfd = fs.openSync(file, 'r+');
      const wo = fs.openSync(file, fs.constants.O_WRONLY);
      try {
        r.mapFile(0, 4096, wfd, 0);
        expect(() => r.mapFile(0, 4096, wo, 0)).to.throw(/EACCES|mmap/);
        expect(r.view.subarray(0, 4096).every((x) => x === 0)).to.equal(true);
        r.view[0] = 7;
        expect(r.view[0]).to.equal(7);
      } finally {
        fs.closeSync(wfd);
        fs.closeSync(wo);
      }
    } finally {
      r.release();
    }
  });
});
