/**
 * The ITIMERS object: one record per timer since format 1.3; an image written before (the three
 * struct itimerval as one 96-byte blob) still reads as the same timers.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { CptError, decodeRecord, encodeRecord, encodeStruct, linux } from '@cptrst/core';
import { ItimerRecord, ItimersImage, imageTimers } from '../src';

const WHICH = [linux.ITIMER.REAL, linux.ITIMER.VIRTUAL, linux.ITIMER.PROF];
const VALUES = [
  { interval: { sec: 0n, usec: 250000n }, value: { sec: 0n, usec: 0n } },
  { interval: { sec: 1n, usec: 0n }, value: { sec: 0n, usec: 999999n } },
  { interval: { sec: 0n, usec: 0n }, value: { sec: 0n, usec: 0n } },
];

function records(): ItimerRecord[] {
  return WHICH.map((which, i) => Object.assign(new ItimerRecord(), { which, interval: { ...VALUES[i].interval }, value: { ...VALUES[i].value } }));
}

describe('itimers image', () => {
  it('records round-trip through the codec and are taken as they are', () => {
    const img = new ItimersImage();
    img.timers = records();
    const back = decodeRecord(ItimersImage, encodeRecord(img), { minor: 3 });
    expect(back.values.length).to.equal(0);
    expect(imageTimers(back, 1).map((r) => ({ which: r.which, interval: { ...r.interval }, value: { ...r.value } })))
      .to.deep.equal(records().map((r) => ({ which: r.which, interval: { ...r.interval }, value: { ...r.value } })));
  });

  it('a format 1.2 record (the 96-byte blob only) reads as the same timers', () => {
    // What a 1.2 writer produced: the bytes field alone, the three itimervals in REAL, VIRTUAL, PROF order.
    const blob = Buffer.concat(VALUES.map((v) => encodeStruct(linux.Itimerval, v)));
    const old = Buffer.alloc(4 + blob.length);
    old.writeUInt32LE(blob.length, 0);
    blob.copy(old, 4);
    const img = decodeRecord(ItimersImage, old, { minor: 2 });
    expect(img.timers).to.deep.equal([]);
    const timers = imageTimers(img, 1);
    expect(timers.map((r) => r.which)).to.deep.equal(WHICH);
    expect(timers.map((r) => ({ interval: { ...r.interval }, value: { ...r.value } }))).to.deep.equal(VALUES);
  });

  it('refuses a short blob, a blob with records, a missing or repeated timer, an unknown one', () => {
    const bad = (f: (img: ItimersImage) => void) => {
      const img = new ItimersImage();
      img.timers = records();
      f(img);
      return () => imageTimers(img, 7);
    };
    expect(bad((i) => { i.timers = []; i.values = Buffer.alloc(95); })).to.throw(CptError, /malformed itimers/);
    expect(bad((i) => { i.values = Buffer.alloc(96); })).to.throw(CptError, /malformed itimers/);
    expect(bad((i) => { i.timers.pop(); })).to.throw(CptError, /malformed itimers/);
    expect(bad((i) => { i.timers[2].which = linux.ITIMER.REAL; })).to.throw(CptError, /malformed itimers/);
    expect(bad((i) => { i.timers[2].which = 3; })).to.throw(CptError, /malformed itimers/);
    expect(bad((i) => { i.timers = []; })).to.throw(CptError, /malformed itimers/);
  });
});
