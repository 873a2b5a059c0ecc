/**
 * Objects shared by several processes of a tree: a pipe whose ends are held by different
 * processes (a shell pipeline) is made once at restart by the processes' common ancestor and
 * handed down by clone; its data in flight comes through once. A holder outside the tree is
 * refused, naming it; a tree checkpoint that fails after the data was read takes no byte away.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ImageReader, fileSource, linux, loadModule } from '@cptrst/core';
import {
  buildWorkloads, checkpointKill, cptrst, expectPass, expectRunningUntraced, failAfterDump, killStartedWorkloads, makeTempDir,
  parseResult, passLines, sleep, startWorkload, trigger, waitResult,
} from '../support';

const ONE_LINE = /^cptrst: [A-Z0-9_]+: [^\n]+\n$/;

/** The pipe records of an image: [carrier, bytes in flight] for each, with the pid of the task whose FILE holds it. */
function pipeRecords(img: string): Array<{ pid: number; carrier: boolean; bytes: number; carried: boolean }> {
  const fd = fs.openSync(img, 'r');
  try {
    const r = new ImageReader(fileSource(fd));
    r.readHead();
    const out: Array<{ pid: number; carrier: boolean; bytes: number; carried: boolean }> = [];
    let pid = 0;
    for (let rec = r.next(); rec; rec = r.next()) {
      const o = rec.obj as Record<string, unknown>;
      if (rec.name === 'task') pid = Number(o.pid);
      if (rec.name === 'pipe') out.push({ pid, carrier: o.carrier === true, bytes: (o.data as Buffer).length, carried: false });
      if (rec.name === 'file-carry') out[out.length - 1].carried = true;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

describe('objects shared by processes of a tree', function () {
  this.timeout(120000);
  before(async () => {
    loadModule('@cptrst/cpt-module');
    await buildWorkloads();
  });
  afterEach(() => killStartedWorkloads());

  it('a bash pipeline a | b | c: checkpoint, kill, restart: no line lost, repeated or out of order', async () => {
    const w = await startWorkload('pipeline.sh');
    await sleep(300); // lines in flight in both pipes
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    // Each pipe is carried once, by the shell that made it (it holds neither end itself), and every end of it names it.
    const recs = pipeRecords(img);
    const carriers = recs.filter((r) => r.carrier);
    expect(carriers.length).to.equal(2);
    expect(carriers.every((c) => c.pid === w.pid && c.carried)).to.equal(true);
    expect(recs.filter((r) => !r.carrier).length).to.equal(4);
    expect(recs.filter((r) => !r.carrier).every((r) => r.bytes === 0 && r.pid !== w.pid)).to.equal(true);
    // `cptrst show` names each end and the process and fd that hold the other end.
    const show = await cptrst(['show', img]);
    expect(show.code, show.stderr).to.equal(0);
    const ends = show.stdout.split('\n').filter((l) => / pipe pipe:\[\d+\] \((read|write) end\), shared with pid \d+ fd \d+$/.test(l));
    expect(ends.length, show.stdout.slice(0, 4000)).to.equal(4);
    for (const l of ends) {
      const [, pid, fd, ino, , otherPid, otherFd] = /^\s*(\d+)\s+(\d+)\s+pipe pipe:\[(\d+)\] \((read|write) end\), shared with pid (\d+) fd (\d+)$/.exec(l)!;
      const back = ends.find((m) => new RegExp(`^\\s*${otherPid}\\s+${otherFd}\\s+pipe pipe:\\[${ino}\\] .* shared with pid ${pid} fd ${fd}$`).test(m));
      expect(back, `the other end of ${l}`).to.not.equal(undefined);
    }
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await expectRunningUntraced(w.pid);
    await trigger(w);
    await expectPass(w);
  });

  it('the pipeline tampered with after the restart: it fails', async () => {
    const w = await startWorkload('pipeline.sh', [], { env: { CPT_TAMPER: '1' } });
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(parseResult(await waitResult(w, 30000)).verdict).to.match(/^FAIL pipeline\.sh: /);
  });

  it('a tree checkpoint that fails after the pipes\' data was read takes no byte away', async () => {
    const w = await startWorkload('pipeline.sh');
    await sleep(300);
    await failAfterDump(w); // aborted once the root, which carries both pipes, is dumped
    await trigger(w);
    expect(passLines('pipeline.sh')).to.include(parseResult(await waitResult(w, 30000)).verdict);
  });

  it('a parent and its child on socketpairs (one end each), messages in flight both ways: checkpoint, kill, restart', async () => {
    const w = await startWorkload('sockpair');
    await sleep(300);
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await expectRunningUntraced(w.pid);
    await trigger(w);
    await expectPass(w);
  });

  it('the socketpairs tampered with after the restart: it fails', async () => {
    const w = await startWorkload('sockpair', [], { env: { CPT_TAMPER: '1' } });
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(parseResult(await waitResult(w, 30000)).verdict).to.match(/^FAIL sockpair: /);
  });

  it('a tree checkpoint that fails after the sockets\' queues were read takes no message away', async () => {
    const w = await startWorkload('sockpair');
    await sleep(300);
    await failAfterDump(w);
    await trigger(w);
    expect(passLines('sockpair')).to.include(parseResult(await waitResult(w, 30000)).verdict);
  });

  it('a memfd held by a parent and its child through different descriptions: one memfd after a restart', async () => {
    const w = await startWorkload('memfdshare');
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await expectRunningUntraced(w.pid);
    await trigger(w);
    await expectPass(w);
  });

  it('the shared memfd tampered with after the restart: it fails', async () => {
    const w = await startWorkload('memfdshare', [], { env: { CPT_TAMPER: '1' } });
    const img = path.join(w.dir, 'i.cpt');
    await checkpointKill(w, img);
    const rs = await cptrst(['restart', img]);
    expect(rs.code, rs.stderr).to.equal(0);
    await trigger(w);
    expect(parseResult(await waitResult(w, 30000)).verdict).to.match(/^FAIL memfdshare: /);
  });

  it('a pipe that a process outside the tree holds too is refused, naming that process and its fd; the tree runs on', async () => {
    const dir = makeTempDir('outside');
    const log = fs.openSync(path.join(dir, 'log'), 'a');
    // bash and its child share the pipe of bash's stdin; this test holds the pipe's write end.
    const fds = Buffer.alloc(8);
    expect(linux.rawSyscall(linux.SYS.pipe2, fds, linux.O.CLOEXEC)).to.equal(0n);
    const [rd, wr] = [fds.readInt32LE(0), fds.readInt32LE(4)];
    const parent = spawn('bash', ['-c', 'sleep 60 & wait'], { stdio: [rd, log, log], detached: true });
    fs.closeSync(log);
    fs.closeSync(rd);
    try {
      await sleep(300);
      const r = await cptrst(['checkpoint', String(parent.pid), '-o', path.join(dir, 'i.cpt')]);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(ONE_LINE);
      expect(r.stderr, r.stderr).to.match(new RegExp(`EOPNOTSUPP: pid \\d+, fd 0 \\(pipe:\\[\\d+\\]\\): the pipe is also open in process ${process.pid} \\(fd ${wr}\\), outside the checkpointed process tree; `));
      await expectRunningUntraced(parent.pid!);
      expect(fs.existsSync(path.join(dir, 'i.cpt'))).to.equal(false);
    } finally {
      try {
        process.kill(-parent.pid!, 'SIGKILL'); // its process group: bash and its child, by PID
      } catch {
        /* gone */
      }
      fs.closeSync(wr);
    }
  });
});
