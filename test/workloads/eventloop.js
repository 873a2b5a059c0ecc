/*
 * eventloop.js <trigger>: a Node.js process as services are: libuv's event loop (epoll, eventfds,
 * its signal pipe), V8's helper threads, a worker_threads Worker answering messages, timers, an
 * fs.watch (inotify) on a file of its own, and a child process (node too) answering over pipes
 * (its stdin and stdout). Checks after the trigger: the interval timer kept ticking, the worker
 * and the child still answer (their state kept: a running sum each), a change to the watched
 * file is reported, a timeout fires, and the heap still holds what it built. CPT_TAMPER=1 ends
 * the worker first: it FAILs.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const { Worker } = require('worker_threads');

const trigger = process.argv[2];
if (!trigger) {
  process.stderr.write('usage: eventloop.js <trigger>\n');
  process.exit(2);
}
// Descriptors inherited from whoever started the harness (not close-on-exec, unlike Node's own):
// closed, as the other workloads close theirs, so that the process holds only what it makes.
for (const fd of fs.readdirSync('/proc/self/fd').map(Number).filter((n) => n > 2)) {
  try {
    const flags = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (flags && (parseInt(flags[1], 8) & 0o2000000) === 0) fs.closeSync(fd);
  } catch {
    /* the listing's own fd, gone already */
  }
}

const fail = (what) => {
  process.stdout.write(`FAIL eventloop.js: ${what}\n`);
  process.exit(1);
};

// The worker keeps a running sum: an answer shows its own state came back too.
const worker = new Worker(
  "const { parentPort } = require('worker_threads'); let sum = 0; parentPort.on('message', (n) => { sum += n; parentPort.postMessage(sum); });",
  { eval: true },
);
const ask = (n) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`the worker did not answer ${n}`)), 5000);
  worker.once('message', (v) => {
    clearTimeout(t);
    resolve(v);
  });
  worker.postMessage(n);
});

// The child keeps a running sum too, one number a line each way; it ends when its stdin does.
const child = spawn(
  process.execPath,
  ['-e', "let sum = 0, buf = ''; process.stdin.on('data', (d) => { buf += d; let i; while ((i = buf.indexOf('\\n')) >= 0) { sum += Number(buf.slice(0, i)); buf = buf.slice(i + 1); process.stdout.write(sum + '\\n'); } }); process.stdin.on('end', () => process.exit(0));"],
  { stdio: ['pipe', 'pipe', 'ignore'] },
);
let childOut = '';
child.stdout.on('data', (d) => (childOut += d));
const askChild = (n) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`the child did not answer ${n}`)), 5000);
  const poll = setInterval(() => {
    const i = childOut.indexOf('\n');
    if (i < 0) return;
    clearInterval(poll);
    clearTimeout(t);
    const v = Number(childOut.slice(0, i));
    childOut = childOut.slice(i + 1);
    resolve(v);
  }, 5);
  child.stdin.write(`${n}\n`);
});

const heap = new Map();
for (let i = 0; i < 20000; i++) heap.set(`k${i}`, { i, sq: i * i, s: String(i).repeat(3) });

const watched = path.join(path.dirname(trigger), `${path.basename(trigger)}.watched`);
fs.writeFileSync(watched, 'before\n');
let changes = 0;
const watcher = fs.watch(watched, () => changes++);

let ticks = 0;
setInterval(() => ticks++, 5);

async function main() {
  if ((await ask(20)) !== 20) fail('the worker does not add');
  if ((await askChild(30)) !== 30) fail('the child does not add');
  process.stdout.write(`READY ${process.pid}\n`);
  await new Promise((resolve) => {
    const poll = setInterval(() => {
      if (fs.existsSync(trigger)) {
        clearInterval(poll);
        resolve();
      }
    }, 20);
  });
  if (process.env.CPT_TAMPER === '1') await worker.terminate();
  const before = ticks;
  const seen = changes;
  let sum;
  try {
    sum = await ask(22);
  } catch (e) {
    fail(e.message);
  }
  if (sum !== 42) fail(`the worker's sum is ${sum}, not 42`);
  let childSum;
  try {
    childSum = await askChild(12);
  } catch (e) {
    fail(e.message);
  }
  if (childSum !== 42) fail(`the child's sum is ${childSum}, not 42`);
  fs.writeFileSync(watched, 'after\n');
  await new Promise((resolve) => setTimeout(resolve, 300));
  if (ticks <= before) fail(`the interval timer did not tick (${ticks})`);
  if (changes <= seen) fail('fs.watch reported no change');
  for (let i = 0; i < 20000; i += 997) {
    const v = heap.get(`k${i}`);
    if (!v || v.i !== i || v.sq !== i * i || v.s !== String(i).repeat(3)) fail(`heap entry k${i} differs`);
  }
  watcher.close();
  child.stdin.end();
  await worker.terminate();
  process.stdout.write('PASS eventloop.js\n');
  process.exit(0);
}
main().catch((e) => fail(String(e)));
