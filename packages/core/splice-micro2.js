require('reflect-metadata');
require('../arch-x86/dist/src/syscalls');
const fs = require('fs');
const L = require('./dist/src/linux');
const { crc32 } = require('./dist/src/image/framing');
const koffi = require('koffi');
const lib = koffi.load('libc.so.6');
const mmap = lib.func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'int64_t']);
const munmap = lib.func('munmap', 'int', ['void *', 'size_t']);
const N = 128, SZ = 2 << 20;
const p = '/dev/shm/splice-micro'; try { fs.unlinkSync(p); } catch {}
const fd = fs.openSync(p, 'w+', 0o600);
const buf = Buffer.alloc(SZ, 7); const big = Buffer.alloc(N * SZ, 3);
for (let i = 0; i < 20; i++) crc32(Buffer.alloc(1 << 20));
for (let i = 0; i < N; i++) fs.writeSync(fd, buf, 0, SZ, i * SZ);
function withMap(off, len, flags, use) {
  const a = mmap(null, len, 1, 1 | flags, fd, BigInt(off));
  try { return use(Buffer.from(koffi.view(a, len))); } finally { munmap(a, len); }
}
const T = (name, f) => { const t = process.hrtime.bigint(); f(); console.log(name.padEnd(28), (Number(process.hrtime.bigint() - t) / 1e6).toFixed(1), 'ms / 256 MiB'); };
for (let round = 0; round < 2; round++) {
let c = 0;
T('populate 2M + crc', () => { for (let i = 0; i < N; i++) c = withMap(i * SZ, SZ, 0x8000, (b) => crc32(b, c)); });
T('nopopulate 2M + crc', () => { for (let i = 0; i < N; i++) c = withMap(i * SZ, SZ, 0, (b) => crc32(b, c)); });
T('populate 32M + crc', () => { for (let i = 0; i < N / 16; i++) c = withMap(i * SZ * 16, SZ * 16, 0x8000, (b) => crc32(b, c)); });
T('pread 2M + crc', () => { const rb = Buffer.allocUnsafe(SZ); for (let i = 0; i < N; i++) { fs.readSync(fd, rb, 0, SZ, i * SZ); c = crc32(rb, c); } });
T('crc only (2M buffer, hot)', () => { for (let i = 0; i < N; i++) c = crc32(buf, c); });
T('crc of 256M buffer (cold)', () => { for (let i = 0; i < N; i++) c = crc32(big.subarray(i * SZ, (i + 1) * SZ), c); });
T('populate 128M + crc', () => { for (let i = 0; i < N / 64; i++) c = withMap(i * SZ * 64, SZ * 64, 0x8000, (b) => crc32(b, c)); });
T('populate 32M, no crc', () => { for (let i = 0; i < N / 16; i++) c = withMap(i * SZ * 16, SZ * 16, 0x8000, (b) => 0); });
T('write 2M', () => { for (let i = 0; i < N; i++) fs.writeSync(fd, buf, 0, SZ, i * SZ); });
}
fs.unlinkSync(p);
