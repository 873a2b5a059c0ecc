/** `cptrst show`: valid images are listed (text and JSON), damaged ones refused in one line. */
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { FORMAT_MAJOR, FORMAT_MINOR, ImageHead, ImageWriter, MAGIC, MemorySink, ObjectFlag, PREAMBLE_SIZE } from '@cptrst/core';
import { PAGE_FILL, cptrst, smallImage, tmpDir } from './helpers';

const NO_STACK = /^\s+at /m;

describe('cptrst show', () => {
  let dir: string;
  let image: ReturnType<typeof smallImage>;
  before(() => {
    dir = tmpDir();
    image = smallImage();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, buf: Buffer): string => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, buf);
    return f;
  };

  /** The checks every refusal must pass: non-zero exit, exactly one stderr line, the code, no stack. */
  function expectRefused(file: string, code = 'EBADIMG'): void {
    const r = cptrst(['show', file]);
    expect(r.status, r.stderr).to.equal(1);
    expect(r.errLines, r.stderr).to.have.length(1);
    expect(r.errLines[0]).to.match(new RegExp(`^cptrst: ${code}: `));
    expect(r.stderr).not.to.match(NO_STACK);
    const j = cptrst(['show', '--json', file]);
    expect(j.status).to.equal(1);
    expect(JSON.parse(j.stdout).error.code).to.equal(code);
  }

  it('shows objects of unknown types with their OPTIONAL flag (text and JSON)', () => {
    const sink = new MemorySink();
    const w = new ImageWriter(sink);
    w.writeHead(new ImageHead({ toolVersion: 'test' }));
    const optionalAt = w.offset;
    w.writeRaw(0x7f11, Buffer.from('a hint'), { flags: ObjectFlag.OPTIONAL });
    const requiredAt = w.offset;
    w.writeRaw(0x7f12, Buffer.from('state'));
    w.writeTerminator();
    const file = write('unknown.img', sink.toBuffer());
    const t = cptrst(['show', file]);
    expect(t.status, t.stderr).to.equal(0);
    const line = (at: number) => t.stdout.split('\n').find((l) => l.trim().startsWith(`${at} `)) ?? '';
    expect(line(optionalAt)).to.include('type 32529').and.include('optional: restart skips it');
    expect(line(requiredAt)).to.include('type 32530').and.include('not optional: restart refuses it');
    expect(t.stdout).to.match(/undecoded +2 objects .*1 not marked optional: restart refuses the image/);
    const j = cptrst(['show', '--json', file]);
    expect(j.status, j.stderr).to.equal(0);
    const objects = (JSON.parse(j.stdout) as { objects: { offset: number; type: number; optional: boolean; fields: unknown }[] }).objects;
    expect(objects.map((o) => [o.offset, o.type, o.optional, o.fields])).to.deep.equal([
      [optionalAt, 0x7f11, true, null], [requiredAt, 0x7f12, false, null],
    ]);
  });

  it('lists a valid image for a person', () => {
    const r = cptrst(['show', write('ok.img', image.buf)]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.match(/^image\s+.*ok\.img, \d+ bytes/m);
    expect(r.stdout).to.match(/^arch\s+x86_64$/m);
    expect(r.stdout).to.match(/^kernel\s+6\.0\.0-test$/m);
    expect(r.stdout).to.match(/^xsave\s+features 0x7, 832 bytes$/m);
    expect(r.stdout).to.match(/^hostname\s+testhost$/m);
    expect(r.stdout).to.match(/^page data\s+1 pages, 4096 bytes/m);
    expect(r.stdout).to.contain('end (terminator checked)');
    if (image.real) {
      expect(r.stdout).to.match(/vma\s+00400000-00402000 r-xp 00000000 \/bin\/fake/);
      expect(r.stdout).to.match(/vma\s+7f0000000000-7f0000010000 rw-p 00000000(\s|$)/);
      expect(r.stdout).to.match(/task\s+pid=4242 /);
    }
  });

  it('show --json of a valid image is one JSON document with head, objects and summary', () => {
    const r = cptrst(['show', '--json', write('ok.img', image.buf)]);
    expect(r.status, r.stderr).to.equal(0);
    const doc = JSON.parse(r.stdout);
    expect(doc.format).to.deep.equal({ major: FORMAT_MAJOR, minor: FORMAT_MINOR });
    expect(doc.head.arch).to.equal('x86_64');
    expect(doc.head.xsaveFeatures).to.equal('0x7');
    expect(doc.head.createdNs).to.equal('0x' + (1700000000000000000n).toString(16));
    expect(doc.head.cpuFlags).to.deep.equal(['fpu', 'sse', 'sse2', 'avx']);
    expect(doc.objects).to.have.length(image.objects);
    expect(doc.summary.objects).to.equal(image.objects);
    expect(doc.summary.pageBytes).to.equal(4096);
    expect(doc.summary.bytes).to.equal(image.buf.length);
    for (const o of doc.objects) expect(o).to.include.keys('offset', 'type', 'name', 'tag', 'ptag', 'fields');
    if (image.real) {
      const vma = doc.objects.find((o: { name: string }) => o.name === 'vma');
      expect(vma.fields.start).to.equal('0x400000');
      expect(vma.fields.end).to.equal('0x402000');
      expect(doc.summary.byType).to.deep.equal({ task: 1, vma: 2, pages: 1 });
    }
    // Page payloads are never printed.
    expect(r.stdout).not.to.contain(Buffer.alloc(16, PAGE_FILL).toString('hex'));
  });

  it('reads the image from stdin with -', () => {
    const r = cptrst(['show', '--json', '-'], { input: image.buf });
    expect(r.status, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout).summary.objects).to.equal(image.objects);
  });

  it('refuses an image with a flipped byte in every object it could hit', () => {
    // A few positions: the head, the middle, the page payload, the terminator.
    const at = [PREAMBLE_SIZE + 40, Math.floor(image.buf.length / 2), image.buf.length - 4096 - 60, image.buf.length - 3];
    for (const pos of at) {
      const b = Buffer.from(image.buf);
      b[pos] ^= 0x40;
      expectRefused(write(`flip-${pos}.img`, b));
    }
  });

  it('refuses a truncated image, wherever it is cut', () => {
    for (const len of [0, 7, PREAMBLE_SIZE, PREAMBLE_SIZE + 10, Math.floor(image.buf.length / 2), image.buf.length - 1]) {
      expectRefused(write(`cut-${len}.img`, image.buf.subarray(0, len)));
    }
  });

  it('refuses garbage, and garbage behind a valid magic', () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 16) & 0xff;
    const garbage = Buffer.from(Array.from({ length: 10000 }, rnd));
    expectRefused(write('garbage.img', garbage));
    const magicThenGarbage = Buffer.concat([MAGIC, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), garbage]);
    expectRefused(write('magic-garbage.img', magicThenGarbage));
    expectRefused(write('text.img', Buffer.from('#!/bin/sh\necho this is not an image\n')));
  });

  it('a person still sees what was read before the damage', () => {
    const b = Buffer.from(image.buf);
    b[b.length - 3] ^= 0x40; // in the terminator
    const r = cptrst(['show', write('late.img', b)]);
    expect(r.status).to.equal(1);
    expect(r.stdout).to.contain('INCOMPLETE');
    expect(r.errLines).to.have.length(1);
  });

  it('a missing file is one line too (ENOENT)', () => {
    const r = cptrst(['show', path.join(dir, 'does-not-exist.img')]);
    expect(r.status).to.equal(1);
    expect(r.errLines).to.have.length(1);
    expect(r.errLines[0]).to.match(/^cptrst: ENOENT: /);
  });
});
