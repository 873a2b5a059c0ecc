import { expect } from 'chai';
import * as fs from 'fs';
import { F, SYS, rawSyscall, spawnSeizedHelper } from '../src/linux';

describe('the seized helper process', () => {
  it('has only stdin, stdout and stderr, every signal at its default and none blocked, and is gone once killed', () => {
    // A descriptor cptrst holds without close-on-exec, as one inherited from whoever started it would be.
    const leaked = fs.openSync('/dev/null', 'r');
    expect(rawSyscall(SYS.fcntl, leaked, F.SETFD, 0)).to.equal(0n);
    try {
      const helper = spawnSeizedHelper(0, 'the test');
      try {
        expect(fs.readdirSync(`/proc/${helper.pid}/fd`).map(Number).sort()).to.deep.equal([0, 1, 2]);
        expect(fs.readlinkSync(`/proc/${helper.pid}/fd/1`)).to.equal('/dev/null');
        const status = fs.readFileSync(`/proc/${helper.pid}/status`, 'utf8');
        expect(status).to.match(/^SigBlk:\s+0+$/m);
        expect(status).to.match(/^SigIgn:\s+0+$/m);
        expect(status).to.match(/^TracerPid:\s+(\d+)$/m);
        expect(Number(/^TracerPid:\s+(\d+)$/m.exec(status)![1])).to.equal(process.pid);
      } finally {
        helper.kill();
      }
      expect(fs.existsSync(`/proc/${helper.pid}`)).to.equal(false);
    } finally {
      fs.closeSync(leaked);
    }
  });
});
