/**
 * Unix connections made through listeners (the sklisten workload checks names, peers, SO_PEERCRED
 * on both ends, the data that waited and new data both ways, its backlog, and its child's end
 * itself): in one process and between a parent and its child, through names that lead nowhere
 * any more; as root and in an image of nobody's (the credentials the kernel records at connect
 * and listen are the process's own, not the restart's); a refused checkpoint leaves both
 * processes as they were.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, buildWorkloads, cptrst, killStartedWorkloads, makeTempDir, makeUserDir, parseResult, passLines, procState, removeUserDir, startWorkload, trigger,
  waitResult,
} from '../support';

const NOBODY = { uid: 65534, gid: 65534 };

describe('unix connections through listeners', function () {
  this.timeout(120000);
  const dirs: string[] = [];
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());
  after(() => dirs.forEach(removeUserDir));

  itRestoresWorkload('sklisten', `names, peers, credentials, data both ways, the backlog, the child's end`, { args: () => [makeTempDir('sklisten')] });

  it("an image of nobody's: connected as nobody (SO_PEERCRED), and it passes", async () => {
    const dir = makeUserDir('sklisten');
    dirs.push(dir);
    fs.chownSync(dir, NOBODY.uid, NOBODY.gid);
    const w = await startWorkload('sklisten', [dir, '--as', `${NOBODY.uid}:${NOBODY.gid}`], { dir, asUser: NOBODY });
    const img = path.join(dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
    expect(ck.code, ck.stderr).to.equal(0);
    await w.exited;
    fs.chownSync(img, NOBODY.uid, NOBODY.gid);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(passLines('sklisten')).to.include(parseResult(await waitResult(w, 20000)).verdict);
  });

  it('SO_PASSCRED on a connection between two processes: refused, and both go on as before', async () => {
    const dir = makeTempDir('sklisten');
    const w = await startWorkload('sklisten', [dir, '--passcred']);
    const before = fs.readdirSync(path.join(dir, 'conn')).sort();
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(dir, 'i.cpt'), '--kill']);
    expect(ck.code).to.equal(1);
    expect(ck.stderr).to.match(/^cptrst: EOPNOTSUPP: pid \d+, fd (31|32) \(socket:\[\d+\]\): SO_PASSCRED, or descriptors or credentials queued, on a connection through a listener between two processes; not supported yet\n$/);
    expect((await procState(w.pid))?.state).to.match(/^[RS]$/);
    expect(fs.readdirSync(path.join(dir, 'conn')).sort()).to.deep.equal(before);
    await trigger(w);
    expect(passLines('sklisten')).to.include(parseResult(await waitResult(w, 20000)).verdict);
  });
});
