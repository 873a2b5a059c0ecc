/**
 * `checkpoint --compress`: page payloads stored LZ4-compressed where they shrink. The image is
 * smaller than a plain one of the same process, it still goes through a pipe as one stream, a
 * restart reads it like any other, and the restarted process passes its own checks. A compressed
 * payload edited so that it no longer decompresses is refused at restart (EBADIMG), with nothing
 * left running.
 */
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { crc32 } from 'zlib';
import { ContentKind, HeaderOffset, PREAMBLE_SIZE } from '@cptrst/core';
import {
  CLI_MAIN, buildWorkloads, checkpointKill, cptrst, expectPass, killStartedWorkloads, startWorkload, trigger, waitGone,
} from '../support';

/** [offset, kind, total length] of every object of an image file, from the headers alone. */
function objects(img: string): Array<[number, number, number]> {
  const buf = fs.readFileSync(img);
  const out: Array<[number, number, number]> = [];
  for (let at = PREAMBLE_SIZE; at < buf.length;) {
    const total = Number(buf.readBigUInt64LE(at + HeaderOffset.totalLength));
    out.push([at, buf.readUInt16LE(at + HeaderOffset.kind), total]);
    at += total;
  }
  return out;
}

describe('compressed images (checkpoint --compress)', function () {
  this.timeout(120000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('is smaller than a plain image, and restarts into a process that passes its checks', async () => {
    const w = await startWorkload('memory');
    const plain = path.join(w.dir, 'plain.cpt');
    const packed = path.join(w.dir, 'packed.cpt');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', plain]);
    expect(r.code, r.stderr).to.equal(0);
    await checkpointKill(w, packed, ['--compress']);
    const kinds = objects(packed).map((o) => o[1]);
    expect(kinds, 'compressed objects in the image').to.include(ContentKind.RECORD_WITH_COMPRESSED_PAGES);
    expect(objects(plain).map((o) => o[1])).to.not.include(ContentKind.RECORD_WITH_COMPRESSED_PAGES);
    expect(fs.statSync(packed).size).to.be.below(fs.statSync(plain).size);
    const rs = await cptrst(['restart', packed]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('goes through a pipe as one stream (checkpoint -o - | restart -), with the copy-on-write snapshot', async () => {
    const w = await startWorkload('cowwrite', ['32']);
    const ck = spawn(process.execPath, [CLI_MAIN, 'checkpoint', String(w.pid), '-o', '-', '--compress', '--kill'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    ck.stdout.on('data', (c: Buffer) => chunks.push(c));
    let err = '';
    ck.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((resolve) => ck.on('close', resolve));
    expect(code, err).to.equal(0);
    await w.exited;
    const rs = spawn(process.execPath, [CLI_MAIN, 'restart', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let rerr = '';
    rs.stderr.on('data', (c: Buffer) => (rerr += c.toString()));
    rs.stdin.end(Buffer.concat(chunks));
    const rcode = await new Promise<number | null>((resolve) => rs.on('close', resolve));
    expect(rcode, rerr).to.equal(0);
    await trigger(w);
    await expectPass(w);
  });

  it('a compressed payload that does not decompress is refused at restart (EBADIMG), nothing left running', async () => {
    const w = await startWorkload('memory');
    const img = path.join(w.dir, 'packed.cpt');
    await checkpointKill(w, img, ['--compress']);
    const [at, , total] = objects(img).find((o) => o[1] === ContentKind.RECORD_WITH_COMPRESSED_PAGES)!;
    const buf = fs.readFileSync(img);
    const bodyEnd = at + buf.readUInt16LE(at + HeaderOffset.headerLength) + buf.readUInt32LE(at + HeaderOffset.bodyLength);
    // Garbage after the codec header, with the checksum made anew: only decompression can tell.
    for (let i = bodyEnd + 8; i < at + total; i++) buf[i] = (i * 131) & 0xff;
    buf.writeUInt32LE(0, at + HeaderOffset.checksum);
    buf.writeUInt32LE(crc32(buf.subarray(at, at + total)), at + HeaderOffset.checksum);
    const bad = path.join(w.dir, 'bad.cpt');
    fs.writeFileSync(bad, buf, { mode: 0o600 });
    const rs = await cptrst(['restart', bad]);
    expect(rs.code, rs.stderr).to.equal(1);
    expect(rs.stderr).to.match(/^cptrst: EBADIMG: .*LZ4/);
    expect(await waitGone(w.pid, 5000), `pid ${w.pid} left behind`).to.equal(true);
  });
});
