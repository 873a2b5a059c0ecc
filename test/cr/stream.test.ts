/**
 * A checkpoint that lets the process run writes its pages while it reads the next ones (the image
 * sink's writes on the thread pool, core/src/image/write-queue.ts): the image still goes out as
 * one stream to a socket or a pipe on stdout (`-o -`) whose reader takes it slowly, plain and
 * compressed, and restarts into a process that passes its checks. Byte equality with synchronous
 * writes is checked in core's unit tests (image-overlap.test.ts); here the stream is whole and
 * right for a real process. To a regular file, with CPTRST_SPLICE_PAGES=1, the same pages go in
 * place (spliced from the snapshot into the file, core/src/image/payload-file.ts): the file holds,
 * after the head, the same bytes as the stream of the same frozen content through a pipe.
 */
import { expect } from 'chai';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { PREAMBLE_SIZE } from '@cptrst/core';
import {
  CLI_MAIN, Workload, buildWorkloads, cptrst, killStartedWorkloads, parseResult, passLines, pinToOneCpu, sleep, startWorkload, trigger, waitGone, waitResult,
} from '../support';

/** Runs `checkpoint PID -o -` and collects stdout, a reader that pauses now and then: through a socket (node's stdio), or a pipe (through cat). */
async function checkpointToStdout(pid: number, via: 'socket' | 'pipe', extra: string[], dir: string): Promise<Buffer> {
  const args = [CLI_MAIN, 'checkpoint', String(pid), '-o', '-', ...extra];
  const quoted = [process.execPath, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  // sh has no pipefail: cptrst's status comes through a file.
  const statusFile = path.join(dir, 'status');
  const ck = via === 'socket'
    ? spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('sh', ['-c', `{ ${quoted}; echo $? > '${statusFile}'; } | cat`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let got = 0;
  ck.stdout.on('data', (c: Buffer) => {
    chunks.push(c);
    // Every 4 MiB or so the reader stops for a moment: the writes wait for room.
    if (Math.floor((got + c.length) / (4 << 20)) > Math.floor(got / (4 << 20))) {
      ck.stdout.pause();
      setTimeout(() => ck.stdout.resume(), 50);
    }
    got += c.length;
  });
  let err = '';
  ck.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => ck.on('close', resolve));
  expect(code, err).to.equal(0);
  if (via === 'pipe') {
    const status = fs.readFileSync(statusFile, 'utf8').trim();
    fs.rmSync(statusFile, { force: true });
    expect(status, err).to.equal('0');
  }
  return Buffer.concat(chunks);
}

/** Where two images first differ from `from` on: the object (walked by its header's totalLength and type), or undefined. */
function firstDifference(a: Buffer, b: Buffer, from: number): string | undefined {
  for (let at = from; at < a.length; ) {
    const total = Number(a.readBigUInt64LE(at));
    if (total < 32 || at + total > a.length) return `a bad object header at ${at}`;
    const end = at + total;
    if (!a.subarray(at, end).equals(b.subarray(at, end))) {
      let i = at;
      while (a[i] === b[i]) i++;
      return `object type ${a.readUInt16LE(at + 10)} tag ${a.readUInt32LE(at + 16)} at ${at} (${total} bytes): byte ${i - at}`;
    }
    at = end;
  }
  return a.length === b.length ? undefined : 'the lengths';
}

async function passes(w: Workload): Promise<void> {
  await trigger(w);
  expect(passLines(w.name, w.args)).to.include(parseResult(await waitResult(w, 60000)).verdict);
}

describe('a checkpoint that lets the process run, to a socket or a pipe (-o -)', function () {
  this.timeout(180000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  for (const via of ['socket', 'pipe'] as const) {
    for (const compress of [false, true]) {
      it(`through a ${via}${compress ? ', compressed' : ''}: one whole stream, restarted into a process that passes its checks`, async () => {
        const w = await startWorkload('cowwrite', ['64']);
        await sleep(200);
        const image = await checkpointToStdout(w.pid, via, compress ? ['--compress'] : [], w.dir);
        // Its 64 MiB whole, or compressed (cowwrite's pages repeat a pattern).
        if (compress) expect(image.length, 'compressed image bytes').to.be.within(1, 32 << 20);
        else expect(image.length, 'image bytes').to.be.greaterThan(64 << 20);
        const img = path.join(w.dir, 'img');
        fs.writeFileSync(img, image, { mode: 0o600 });
        // The original ran on meanwhile; the image holds the instant of the freeze.
        process.kill(w.pid, 'SIGKILL');
        await w.exited;
        expect(await waitGone(w.pid, 5000)).to.equal(true);
        const rr = await cptrst(['restart', img]);
        expect(rr.code, rr.stderr).to.equal(0);
        await sleep(300);
        await passes(w);
      });
    }
  }

  it('to a file, the pages spliced in place: after the head the same bytes as through a pipe, and it restarts', async () => {
    const w = await startWorkload('cowwrite', ['64']);
    await sleep(200);
    // Stopped (job control): the checkpoints see the same memory, and leave it stopped. On one CPU
    // (the first it may use): the calls a checkpoint runs in it make the kernel write the CPU it
    // ran on into its rseq area. The first checkpoint of a stopped process changes its registers
    // (it was stopped in its loop, it is then stopped in the kernel): taken first, to /dev/null.
    pinToOneCpu(w.pid);
    process.kill(w.pid, 'SIGSTOP');
    for (let i = 0; i < 100 && !/^State:\s+T/m.test(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8')); i++) await sleep(20);
    const warm = await cptrst(['checkpoint', String(w.pid), '-o', '/dev/null']);
    expect(warm.code, warm.stderr).to.equal(0);
    const img = path.join(w.dir, 'img');
    const r = await cptrst(['checkpoint', String(w.pid), '-o', img, '--json'], { env: { CPTRST_DEBUG: '1', CPTRST_SPLICE_PAGES: '1' } });
    expect(r.code, r.stderr).to.equal(0);
    const timings = (JSON.parse(r.stdout) as { timings: Record<string, number> }).timings;
    expect(timings, 'pages spliced into the file').to.have.property('splice pages');
    expect(r.stderr).to.match(/\d+ page payloads spliced into the image file/);
    const piped = await checkpointToStdout(w.pid, 'pipe', [], w.dir);
    const file = fs.readFileSync(img);
    expect(file.length, 'image bytes').to.equal(piped.length).and.greaterThan(64 << 20);
    // The head (preamble, then the HEAD object) holds the time of the checkpoint; the rest is the process.
    const afterHead = (b: Buffer) => PREAMBLE_SIZE + Number(b.readBigUInt64LE(PREAMBLE_SIZE));
    expect(afterHead(file)).to.equal(afterHead(piped));
    expect(firstDifference(file, piped, afterHead(file)), 'the first object whose bytes differ after the head').to.equal(undefined);
    process.kill(w.pid, 'SIGKILL');
    await w.exited;
    expect(await waitGone(w.pid, 5000)).to.equal(true);
    const rr = await cptrst(['restart', img]);
    expect(rr.code, rr.stderr).to.equal(0);
    process.kill(w.pid, 'SIGCONT');
    await sleep(300);
    await passes(w);
  });
});
