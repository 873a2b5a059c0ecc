/**
 * memfds as fds and as mappings: the memfds workload checks names, contents, holes, seals, modes,
 * offsets and the sharing between fds and mappings itself after a restart (and fails when
 * tampered with); a memfd another process holds is refused, naming it.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import * as fs from 'fs';
import * as path from 'path';
import { loadModule } from '@cptrst/core';
import {
  itRestoresWorkload, buildWorkloads, cptrst, failAfterDump, killStartedWorkloads, parseResult, passLines, procState, recodeImage, startWorkload, trigger,
  waitGone, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;

describe('memfds', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  itRestoresWorkload('memfds', 'memfds as fds, shared and private mappings, sealed, executable');

  it('a checkpoint that fails after the contents were read changes nothing', async () => {
    const w = await startWorkload('memfds');
    await failAfterDump(w);
    await trigger(w);
    expect(passLines('memfds')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('a memfd another process holds is refused, naming that process; the process runs on', async () => {
    const w = await startWorkload('memfds');
    const held = fs.openSync(`/proc/${w.pid}/fd/12`, 'r'); // this test process now holds memfd b too
    try {
      const img = path.join(w.dir, 'i.cpt');
      const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, (vma [0-9a-f-]+ /memfd:cpt-b|fd 12 \\(/memfd:cpt-b \\(deleted\\)\\)): the memfd is also open or mapped in process ${process.pid} \\(fd ${held}\\)`));
      expect(fs.existsSync(img)).to.equal(false);
      expect((await procState(w.pid))?.tracerPid).to.equal(0);
    } finally {
      fs.closeSync(held);
    }
    await trigger(w);
    expect(passLines('memfds')).to.include(parseResult(await waitResult(w)).verdict);
  });

  describe('the file of shared anonymous memory (/dev/zero (deleted)) as a file', () => {
    itRestoresWorkload('shmemfds', 'fds, a private mapping with a copied page, a shared mapping at an offset, a file cut below its area', { tamperFailure: /^FAIL shmemfds: A differs at byte 100/ });

    it('a crafted image giving the file a name is refused (EBADIMG), leaving no process; the good image restores', async () => {
      const w = await startWorkload('shmemfds');
      const img = path.join(w.dir, 'good.cpt');
      const ck = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
      expect(ck.code, ck.stderr).to.equal(0);
      await w.exited;
      const bad = path.join(w.dir, 'crafted.cpt');
      let edited = 0;
      recodeImage(img, bad, {
        records: (recs) => {
          for (const { name, obj } of recs) if (name === 'vma-shmem-file' && obj.carrier && edited++ === 0) obj.name = 'named';
          return recs;
        },
      });
      expect(edited, 'no carrier record of the file').to.equal(1);
      const r = await cptrst(['restart', bad]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE).and.match(/^cptrst: EBADIMG: pid \d+, vma [0-9a-f]+-[0-9a-f]+ \/dev\/zero: memfd: the file of shared anonymous memory has a name or seals of its own/);
      expect(await waitGone(w.pid, 5000), 'half-made process left').to.equal(true);
      const ok = await cptrst(['restart', img]);
      expect(ok.code, ok.stderr).to.equal(0);
      await trigger(w);
      expect(passLines('shmemfds')).to.include(parseResult(await waitResult(w)).verdict);
    });

    it('one another process holds too is refused, naming that process; the process runs on', async () => {
      const w = await startWorkload('shmemfds');
      const fd = fs.readdirSync(`/proc/${w.pid}/fd`).find((n) => fs.readlinkSync(`/proc/${w.pid}/fd/${n}`) === '/dev/zero (deleted)');
      expect(fd, 'no fd of the file').to.not.equal(undefined);
      const held = fs.openSync(`/proc/${w.pid}/fd/${fd}`, 'r');
      try {
        const img = path.join(w.dir, 'i.cpt');
        const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--kill']);
        expect(r.code).to.equal(1);
        expect(r.stderr).to.match(ONE_LINE).and.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${w.pid}, (vma [0-9a-f-]+ /dev/zero|fd \\d+ \\(/dev/zero \\(deleted\\)\\)): .*also open or mapped in process ${process.pid} \\(fd ${held}\\)`));
        expect(fs.existsSync(img)).to.equal(false);
        expect((await procState(w.pid))?.tracerPid).to.equal(0);
      } finally {
        fs.closeSync(held);
      }
      await trigger(w);
      expect(passLines('shmemfds')).to.include(parseResult(await waitResult(w)).verdict);
    });
  });
});
