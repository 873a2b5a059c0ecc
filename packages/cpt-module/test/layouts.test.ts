/**
 * The image layouts of every subsystem, checked in so none changes unnoticed: a layout that changes
 * without a format version change fails here. To change a layout on purpose, bump FORMAT_MINOR
 * (fields appended with `since`) or FORMAT_MAJOR, then regenerate the snapshot with
 * `CPTRST_UPDATE_LAYOUTS=1 npm test` in this package and commit it.
 */
import 'reflect-metadata';
import * as fs from 'fs';
import * as path from 'path';
import { expect } from 'chai';
import { checkLayoutSnapshot, checkReachability, layoutSnapshot, objectLayouts, ObjectType } from '@cptrst/core';
import '../src';

const SNAPSHOT = path.join(__dirname, '..', '..', 'layouts.snapshot.json');

describe('image layouts', () => {
  it('match the committed snapshot for this format version', () => {
    const now = layoutSnapshot();
    if (process.env.CPTRST_UPDATE_LAYOUTS) fs.writeFileSync(SNAPSHOT, JSON.stringify(now, null, 2) + '\n');
    const committed = JSON.parse(fs.readFileSync(SNAPSHOT, 'utf8'));
    expect(checkLayoutSnapshot(committed, now)).to.deep.equal([]);
  });

  it('every object type is reachable from the head', () => {
    expect(checkReachability()).to.deep.equal([]);
  });

  it('every object type number has a layout once all subsystems are loaded', () => {
    const have = new Set(objectLayouts().map((l) => l.type));
    const missing = Object.entries(ObjectType).filter(([, v]) => typeof v === 'number' && !have.has(v as number)).map(([k]) => k);
    expect(missing).to.deep.equal([]);
  });
});
