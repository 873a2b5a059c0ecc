/** Running the built `cptrst` as a separate process, and making small images for it to read. */
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ImageHead, ImageWriter, MemorySink, ObjectType, layoutForType, loadModule } from '@cptrst/core';

export const MAIN = path.resolve(__dirname, '..', 'src', 'main.js');

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Non-empty stderr lines. */
  errLines: string[];
}

export function cptrst(args: string[], opts: { input?: Buffer | string; cwd?: string; timeoutMs?: number } = {}): Run {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    input: opts.input,
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 60000,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, CPTRST_DEBUG: '' },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, errLines: r.stderr.split('\n').filter((l) => l.trim() !== '') };
}

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-cli-test-'));
}

/** Whether the real module loads here (it registers the object layouts of task, mm, ...). */
function haveModule(): boolean {
  try {
    loadModule('@cptrst/cpt-module', __dirname);
    return true;
  } catch {
    return false;
  }
}

type Ctor = new () => object;

/** An instance of the layout of `type` with the given fields, each set only when its type matches the default's. */
function make(type: number, fields: Record<string, unknown>): object | undefined {
  const layout = layoutForType(type);
  if (!layout) return undefined;
  const o = new (layout.ctor as unknown as Ctor)() as Record<string, unknown>;
  for (const [k, v] of Object.entries(fields)) {
    if (k in o && typeof o[k] === typeof v) o[k] = v;
  }
  return o;
}

export const PAGE_FILL = 0xcc;

export interface SmallImage {
  buf: Buffer;
  /** Objects between head and terminator. */
  objects: number;
  /** Whether they are the real module's types (task, vma, pages) or raw unknown types. */
  real: boolean;
}

/**
 * A valid image: with the module's layouts a TASK, a VMA with one page, its PAGES and another
 * VMA; without them, raw objects of a type no one knows (a reader skips those).
 */
export function smallImage(): SmallImage {
  const sink = new MemorySink();
  const w = new ImageWriter(sink);
  w.writeHead(new ImageHead({
    arch: 'x86_64', kernelRelease: '6.0.0-test', createdNs: 1700000000000000000n, toolVersion: 'test', hostname: 'testhost',
    cpuFlags: ['fpu', 'sse', 'sse2', 'avx'], xsaveFeatures: 0x7n, xsaveSize: 832, vdsoSize: 8192, vdsoHash: 'ab'.repeat(32),
  }));
  const task = haveModule() ? make(ObjectType.TASK, { pid: 4242, tgid: 4242, comm: 'fake', cmdline: 'fake --arg' }) : undefined;
  const vma = make(ObjectType.VMA, { start: 0x400000n, end: 0x402000n, prot: 5, path: '/bin/fake', kind: 'file', pageCount: 1n });
  const pages = make(ObjectType.PAGES, { vaddr: 0x400000n, count: 1 });
  const heap = make(ObjectType.VMA, { start: 0x7f0000000000n, end: 0x7f0000010000n, prot: 3, path: '', kind: 'anon' });
  if (task && vma && pages && heap) {
    try {
      const t = w.write(task);
      const v = w.write(vma, { ptag: t });
      w.writeWithPages(pages, Buffer.alloc(4096, PAGE_FILL), { ptag: v });
      w.write(heap, { ptag: t });
      w.writeTerminator();
      return { buf: sink.toBuffer(), objects: 4, real: true };
    } catch {
      /* a layout changed under us: fall back to raw objects below */
    }
  }
  const sink2 = new MemorySink();
  const w2 = new ImageWriter(sink2);
  w2.writeHead(new ImageHead({ kernelRelease: '6.0.0-test', toolVersion: 'test', hostname: 'testhost' }));
  const a = w2.writeRaw(0x7f01, Buffer.from('first unknown object'));
  w2.writeRaw(0x7f02, Buffer.alloc(64, 1), { ptag: a, pages: [Buffer.alloc(4096, PAGE_FILL)] });
  w2.writeRaw(0x7f01, Buffer.from('another one'));
  w2.writeTerminator();
  return { buf: sink2.toBuffer(), objects: 3, real: false };
}

const READY_PREFIX = path.join(os.tmpdir(), 'cptrst-cli-holder-ready-');

/**
 * Starts a python3 process that cptrst can checkpoint: a session leader with fds 0-2 on
 * /dev/null and nothing else open (the test runner may have leaked descriptors cptrst would
 * refuse), orphaned so init reaps it. It fills `mib` MiB with non-zero bytes (pages an image must
 * store), then sleeps. Returns its pid once the memory is in place.
 */
export function startMemoryHolder(mib: number): number {
  const py = [
    'import os, time',
    'pid = os.fork()',
    'if pid == 0:',
    '    os.closerange(3, 65536)',
    '    os.setsid()',
    "    fd = os.open('/dev/null', os.O_RDWR)",
    '    for i in (0, 1, 2): os.dup2(fd, i)',
    `    data = bytearray(b'\\x5a') * (${mib} << 20)`,
    `    open(f'${READY_PREFIX}{os.getpid()}', 'w').close()`,
    '    while True: time.sleep(1000)',
    'print(pid, flush=True)',
  ].join('\n');
  const r = spawnSync('python3', ['-c', py], { encoding: 'utf8' });
  const pid = Number(r.stdout.trim());
  if (!(pid > 0)) throw new Error(`could not start the memory holder: ${r.stderr}`);
  const ready = `${READY_PREFIX}${pid}`;
  for (let i = 0; i < 3000; i++) {
    if (fs.existsSync(ready)) {
      fs.rmSync(ready, { force: true });
      return pid;
    }
    spawnSync('sleep', ['0.01']);
  }
  throw new Error(`memory holder ${pid} did not get ready`);
}
