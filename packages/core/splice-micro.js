require('reflect-metadata');
require('../arch-x86/dist/src/syscalls');
const fs = require('fs');
const L = require('./dist/src/linux');
const { crc32 } = require('./dist/src/image/framing');
const N = 64, SZ = 2 << 20;
const p = '/dev/shm/splice-micro'; try { fs.unlinkSync(p); } catch {}
const fd = fs.openSync(p, 'w+', 0o600);
const buf = Buffer.alloc(SZ, 7);
for (let i = 0; i < 20; i++) crc32(Buffer.alloc(1 << 20)); // load fast crc
let t = process.hrtime.bigint();
for (let i = 0; i < N; i++) fs.writeSync(fd, buf, 0, SZ, i * SZ);
console.log('write 128 MiB', Number(process.hrtime.bigint() - t) / 1e6);
const rfd = L.openForMapping(fd);
t = process.hrtime.bigint();
let c = 0;
for (let i = 0; i < N; i++) c = L.withFileMapping(rfd, i * SZ, SZ, (b) => crc32(b, c));
console.log('map+crc 128 MiB', Number(process.hrtime.bigint() - t) / 1e6);
t = process.hrtime.bigint();
for (let i = 0; i < N; i++) L.withFileMapping(rfd, i * SZ, SZ, (b) => 0);
console.log('map only 128 MiB', Number(process.hrtime.bigint() - t) / 1e6);
t = process.hrtime.bigint();
for (let i = 0; i < N; i++) c = crc32(buf, c);
console.log('crc of buffer 128 MiB', Number(process.hrtime.bigint() - t) / 1e6);
fs.unlinkSync(p);
