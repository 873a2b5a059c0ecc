import { expect } from 'chai';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { F, SYS, rawSyscall, spawnPipedHelper, spawnSeizedHelper } from '../src/linux';

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

describe('the piped helper process', () => {
  it('gets its arguments, the given descriptors as 3, 4 and nothing else, a session of its own, the line it is dismissed with, and is reaped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-piped-'));
    const leaked = fs.openSync('/dev/null', 'r');
    expect(rawSyscall(SYS.fcntl, leaked, F.SETFD, 0)).to.equal(0n);
    const a = fs.openSync(path.join(dir, 'a'), 'w');
    const b = fs.openSync(path.join(dir, 'b'), 'w');
    try {
      // Given in the order b, a: b becomes 3, a becomes 4.
      const helper = spawnPipedHelper('/bin/sh', ['-c', 'read line; echo "$0 $line" >&3; echo four >&4; exit 0', 'name'], [b, a], 'the test');
      expect(helper.pid).to.be.above(0);
      // Its session is its own (setsid): field 6 of /proc/PID/stat. It may not have exec'd yet: wait for the shell.
      let stat = '';
      for (let i = 0; i < 500 && !/\(sh\)/.test(stat); i++) {
        stat = fs.readFileSync(`/proc/${helper.pid}/stat`, 'utf8');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
      }
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      expect(Number(fields[3])).to.equal(helper.pid);
      expect(fs.readdirSync(`/proc/${helper.pid}/fd`).map(Number).sort()).to.deep.equal([0, 1, 2, 3, 4]);
      expect(fs.readlinkSync(`/proc/${helper.pid}/fd/3`)).to.equal(path.join(dir, 'b'));
      expect(fs.readlinkSync(`/proc/${helper.pid}/fd/4`)).to.equal(path.join(dir, 'a'));
      helper.dismiss('done\n');
      expect(fs.existsSync(`/proc/${helper.pid}`)).to.equal(false);
      expect(fs.readFileSync(path.join(dir, 'b'), 'utf8')).to.equal('name done\n');
      expect(fs.readFileSync(path.join(dir, 'a'), 'utf8')).to.equal('four\n');
      helper.dismiss('again\n');
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
      fs.closeSync(leaked);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
