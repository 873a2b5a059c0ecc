/**
 * `cptrst checkpoint -o FILE` never destroys FILE: a failed, refused, disk-full or killed
 * checkpoint leaves an earlier FILE byte for byte and no temporary file; a symlink is refused;
 * success replaces FILE by a rename (a new inode, mode 0600). Real processes throughout.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { openImageOutput } from '../src/image-file';
import { MAIN, cptrst, startMemoryHolder, tmpDir } from './helpers';

function hasPython(): boolean {
  return spawnSync('python3', ['-c', 'pass']).status === 0;
}

function killQuietly(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[RS]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]);
  } catch {
    return false;
  }
}

/** An earlier "image": random bytes the test can compare against. */
function earlierFile(file: string, bytes = 64 * 1024, mode = 0o640): Buffer {
  const data = crypto.randomBytes(bytes);
  fs.writeFileSync(file, data, { mode });
  fs.chmodSync(file, mode);
  return data;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('cptrst checkpoint -o FILE: the output file', function () {
  this.timeout(180000);
  let dir: string;
  const started: number[] = [];
  before(function () {
    if (!hasPython()) this.skip();
    dir = tmpDir();
  });
  after(() => {
    for (const pid of started) killQuietly(pid);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a nonexistent pid: FILE stays byte for byte, no temporary file', () => {
    const d = fs.mkdtempSync(path.join(dir, 'esrch-'));
    const img = path.join(d, 'keep.img');
    const before = earlierFile(img);
    const r = cptrst(['checkpoint', '4194000', '-o', img]);
    expect(r.status).to.equal(1);
    expect(r.errLines[0]).to.match(/^cptrst: ESRCH: pid 4194000/);
    expect(fs.readFileSync(img).equals(before)).to.equal(true);
    expect(fs.readdirSync(d)).to.deep.equal(['keep.img']);
  });

  it('a refused process (a pipe on stdout): FILE stays byte for byte, no temporary file, the process runs on', () => {
    const d = fs.mkdtempSync(path.join(dir, 'refused-'));
    const img = path.join(d, 'keep.img');
    const before = earlierFile(img);
    const child = spawn('sleep', ['1000'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const pid = child.pid as number;
    started.push(pid);
    try {
      const r = cptrst(['checkpoint', String(pid), '-o', img]);
      expect(r.status, r.stderr).to.equal(1);
      expect(r.errLines[0]).to.match(new RegExp(`^cptrst: EOPNOTSUPP: pid ${pid}, `));
      expect(fs.readFileSync(img).equals(before)).to.equal(true);
      expect(fs.readdirSync(d)).to.deep.equal(['keep.img']);
      expect(running(pid)).to.equal(true);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a full disk (a 4 MiB tmpfs, a 32 MiB process): ENOSPC naming the image, FILE stays, no temporary file', function () {
    const d = fs.mkdtempSync(path.join(dir, 'full-'));
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'none', d], { encoding: 'utf8' });
    if (m.status !== 0) this.skip(); // not root, or no mount permission in this sandbox
    try {
      const img = path.join(d, 'keep.img');
      const before = earlierFile(img, 1024 * 1024);
      const pid = startMemoryHolder(32);
      started.push(pid);
      const r = cptrst(['checkpoint', String(pid), '-o', img]);
      expect(r.status, r.stderr).to.equal(1);
      expect(r.errLines, r.stderr).to.have.length(1);
      expect(r.errLines[0]).to.match(new RegExp(`^cptrst: ENOSPC: pid ${pid}, image file ${img.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      expect(r.stderr).not.to.include('image fd');
      expect(fs.readFileSync(img).equals(before)).to.equal(true);
      expect(fs.readdirSync(d)).to.deep.equal(['keep.img']);
      // Nothing is held on the file system either: all of its space but FILE's is free again.
      const df = fs.statfsSync(d);
      expect((df.blocks - df.bfree) * df.bsize).to.be.at.most(1024 * 1024 + 64 * 1024);
      expect(running(pid)).to.equal(true);
      killQuietly(pid);
    } finally {
      spawnSync('umount', [d]);
    }
  });

  it('-o a symlink: refused (ELOOP), nothing written, the target untouched, the process runs on', () => {
    const d = fs.mkdtempSync(path.join(dir, 'symlink-'));
    const target = path.join(d, 'target.img');
    const before = earlierFile(target);
    const link = path.join(d, 'link.img');
    fs.symlinkSync(target, link);
    const pid = startMemoryHolder(1);
    started.push(pid);
    const r = cptrst(['checkpoint', String(pid), '-o', link]);
    expect(r.status).to.equal(1);
    expect(r.errLines).to.deep.equal([`cptrst: ELOOP: image file ${link}: refusing to replace the symlink ${link}`]);
    expect(fs.lstatSync(link).isSymbolicLink()).to.equal(true);
    expect(fs.readlinkSync(link)).to.equal(target);
    expect(fs.readFileSync(target).equals(before)).to.equal(true);
    expect(fs.readdirSync(d).sort()).to.deep.equal(['link.img', 'target.img']);
    expect(running(pid)).to.equal(true);
    killQuietly(pid);
  });

  it('-o a directory is refused; -o /dev/null (a character device) or a FIFO is written through and stays what it was', () => {
    const d = fs.mkdtempSync(path.join(dir, 'kinds-'));
    const sub = path.join(d, 'sub');
    fs.mkdirSync(sub);
    const pid = startMemoryHolder(1);
    started.push(pid);
    const r = cptrst(['checkpoint', String(pid), '-o', sub]);
    expect(r.status).to.equal(1);
    expect(r.errLines[0]).to.match(/^cptrst: EISDIR: image file .*sub: .* is a directory/);
    expect(fs.readdirSync(sub)).to.deep.equal([]);
    expect(fs.readdirSync(d)).to.deep.equal(['sub']);
    const n = cptrst(['checkpoint', String(pid), '-o', '/dev/null', '--json']);
    expect(n.status, n.stderr).to.equal(0);
    expect(JSON.parse(n.stdout).bytes).to.be.greaterThan(1024 * 1024);
    const st = fs.statSync('/dev/null');
    expect(st.isCharacterDevice()).to.equal(true);
    expect(st.mode & 0o777).to.equal(0o666);

    // A FIFO: written through to its reader, and still a FIFO afterwards.
    const fifo = path.join(d, 'fifo');
    expect(spawnSync('mkfifo', ['-m', '0600', fifo]).status).to.equal(0);
    const copy = path.join(d, 'copy.img');
    const outFd = fs.openSync(copy, 'w');
    const reader = spawn('cat', [fifo], { stdio: ['ignore', outFd, 'ignore'] });
    fs.closeSync(outFd);
    try {
      const f = cptrst(['checkpoint', String(pid), '-o', fifo, '--json']);
      expect(f.status, f.stderr).to.equal(0);
      const bytes = JSON.parse(f.stdout).bytes as number;
      // cat may still be copying what the pipe holds (its exit is not seen in this synchronous loop).
      for (let i = 0; i < 1000 && fs.statSync(copy).size < bytes; i++) sleepMs(10);
      expect(fs.statSync(copy).size).to.equal(bytes);
      expect(fs.readFileSync(copy).subarray(0, 6).toString('latin1')).to.equal('CPTRST');
      expect(fs.lstatSync(fifo).isFIFO()).to.equal(true);
      expect(fs.readdirSync(d).sort()).to.deep.equal(['copy.img', 'fifo', 'sub']);
    } finally {
      reader.kill('SIGKILL');
    }
    killQuietly(pid);
  });

  it('success replaces FILE by a rename: a reader of the old file keeps the old bytes; the new one is 0600 and complete', () => {
    const d = fs.mkdtempSync(path.join(dir, 'replace-'));
    const img = path.join(d, 'img');
    const before = earlierFile(img, 4096, 0o644);
    const oldFd = fs.openSync(img, 'r');
    const oldIno = fs.fstatSync(oldFd).ino;
    try {
      const pid = startMemoryHolder(2);
      started.push(pid);
      const r = cptrst(['checkpoint', String(pid), '-o', img, '--json']);
      expect(r.status, r.stderr).to.equal(0);
      const st = fs.statSync(img);
      expect(st.ino).not.to.equal(oldIno);
      expect(st.mode & 0o777).to.equal(0o600);
      expect(st.size).to.equal(JSON.parse(r.stdout).bytes);
      const old = Buffer.alloc(before.length + 1);
      expect(fs.readSync(oldFd, old, 0, old.length, 0)).to.equal(before.length);
      expect(old.subarray(0, before.length).equals(before)).to.equal(true);
      const s = cptrst(['show', '--json', img]);
      expect(s.status, s.stderr).to.equal(0);
      expect(JSON.parse(s.stdout).summary.byType.task).to.equal(1);
      expect(fs.readdirSync(d)).to.deep.equal(['img']);
      killQuietly(pid);
    } finally {
      fs.closeSync(oldFd);
    }
  });

  it('SIGKILL of cptrst in the middle of a 320 MiB checkpoint: FILE as it was, no stray file', () => {
    const d = fs.mkdtempSync(path.join(dir, 'sigkill-'));
    const img = path.join(d, 'keep.img');
    const before = earlierFile(img);
    const pid = startMemoryHolder(320);
    started.push(pid);
    const cli = spawn(process.execPath, [MAIN, 'checkpoint', String(pid), '-o', img], { stdio: 'ignore' });
    const cliPid = cli.pid as number;
    // Wait until cptrst has written a good part of the image into its (nameless) file.
    let written = 0;
    for (let i = 0; i < 12000 && written < 32 << 20; i++) {
      try {
        for (const n of fs.readdirSync(`/proc/${cliPid}/fd`)) {
          let target = '';
          try {
            target = fs.readlinkSync(`/proc/${cliPid}/fd/${n}`);
          } catch {
            continue;
          }
          if (!target.startsWith(d + '/')) continue;
          try {
            written = Math.max(written, fs.statSync(`/proc/${cliPid}/fd/${n}`).size);
          } catch {
            /* closed meanwhile */
          }
        }
      } catch {
        break; // cptrst is gone
      }
      if (written < 32 << 20) sleepMs(5);
    }
    expect(written, 'cptrst never got 32 MiB into its file').to.be.at.least(32 << 20);
    process.kill(cliPid, 'SIGKILL');
    for (let i = 0; i < 2000 && fs.existsSync(`/proc/${cliPid}/fd`); i++) sleepMs(5);
    expect(fs.readFileSync(img).equals(before)).to.equal(true);
    expect(fs.readdirSync(d)).to.deep.equal(['keep.img']);
    killQuietly(pid);
  });
});

describe('openImageOutput', () => {
  let dir: string;
  before(() => {
    dir = tmpDir();
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const tmpfile of [true, false]) {
    const how = tmpfile ? 'O_TMPFILE' : 'a named temporary file';
    it(`${how}: discard leaves FILE and nothing else; commit puts exactly what was written in place, 0600`, () => {
      const d = fs.mkdtempSync(path.join(dir, tmpfile ? 'tmpfile-' : 'named-'));
      const file = path.join(d, 'f.img');
      const before = earlierFile(file, 1000, 0o644);
      const a = openImageOutput(file, { tmpfile });
      fs.writeSync(a.fd, Buffer.alloc(5000, 1));
      // A named temporary file is visible while it is written; an O_TMPFILE one is not.
      expect(fs.readdirSync(d).length).to.equal(tmpfile ? 1 : 2);
      a.discard();
      a.discard();
      expect(fs.readFileSync(file).equals(before)).to.equal(true);
      expect(fs.readdirSync(d)).to.deep.equal(['f.img']);
      expect(() => a.commit()).to.throw(/discarded/);

      const b = openImageOutput(file, { tmpfile });
      const data = crypto.randomBytes(12345);
      fs.writeSync(b.fd, data);
      b.commit();
      b.commit();
      expect(fs.fstatSync(b.fd).size).to.equal(data.length); // still open after commit
      b.discard(); // after commit: only closes the fd
      expect(b.fd).to.equal(-1);
      expect(fs.readFileSync(file).equals(data)).to.equal(true);
      expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
      expect(fs.readdirSync(d)).to.deep.equal(['f.img']);
    });
  }

  it('a path that became a symlink before the commit is not replaced; a socket path is refused', () => {
    const d = fs.mkdtempSync(path.join(dir, 'race-'));
    const file = path.join(d, 'f.img');
    const o = openImageOutput(file);
    fs.writeSync(o.fd, 'x');
    fs.symlinkSync('/etc/hostname', file);
    expect(() => o.commit()).to.throw(/refusing to replace the symlink/);
    o.discard();
    expect(fs.readlinkSync(file)).to.equal('/etc/hostname');
    expect(fs.readdirSync(d)).to.deep.equal(['f.img']);

    const sock = path.join(d, 's');
    const py = spawnSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`]);
    if (py.status === 0) expect(() => openImageOutput(sock)).to.throw(/is a socket/);
  });
});
