/**
 * Issue 2's real path: checkpoint a running process and leave it running as before; `show`
 * renders the image (its VMAs are the process's /proc/PID/maps); `check` reports the machine.
 */
import { expect } from 'chai';
import { execFile } from 'child_process';
import { promisify } from 'util';
import * as fs from 'fs';
import * as path from 'path';
import {
  REPO_ROOT, SYSCALL_VARIANTS, buildWorkloads, cptrst, expectRunningUntraced, killStartedWorkloads, parseResult, passLines,
  procState, readMaps, sleep, startWorkload, trigger, waitResult,
} from '../support';

const execFileP = promisify(execFile);

interface ShownObject {
  name: string;
  tag: number;
  ptag: number;
  fields: Record<string, unknown>;
}

const PERMS = (f: Record<string, unknown>) =>
  `${Number(f.prot) & 1 ? 'r' : '-'}${Number(f.prot) & 2 ? 'w' : '-'}${Number(f.prot) & 4 ? 'x' : '-'}${f.shared ? 's' : 'p'}`;

describe('checkpoint of a running process', function () {
  this.timeout(60000);
  before(() => buildWorkloads());
  afterEach(() => killStartedWorkloads());

  it('writes head, identity, registers, FPU state and memory map, and leaves the process running untraced', async () => {
    const w = await startWorkload('memory');
    const maps = await readMaps(w.pid);
    const img = path.join(w.dir, 'image.cpt');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', img]);
    expect(ck.code, ck.stderr).to.equal(0);
    const st = await procState(w.pid);
    expect(st?.state).to.match(/^[RS]$/);
    expect(st?.tracerPid).to.equal(0);

    const shown = await cptrst(['show', img, '--json']);
    expect(shown.code, shown.stderr).to.equal(0);
    const doc = JSON.parse(shown.stdout) as { head: Record<string, unknown>; objects: ShownObject[] };
    expect(doc.head.arch).to.equal('x86_64');
    expect(Number(doc.head.pageSize)).to.equal(4096);
    expect(Number(doc.head.xsaveSize)).to.be.greaterThan(512);
    const names = doc.objects.map((o) => o.name);
    for (const n of ['task', 'mm', 'vma', 'pages', 'regs', 'xstate', 'creds', 'signals', 'fs', 'file', 'fd']) expect(names).to.include(n);
    const task = doc.objects.find((o) => o.name === 'task')!.fields;
    const stat = fs.readFileSync(`/proc/${w.pid}/stat`, 'utf8');
    const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    expect(task).to.include({ pid: w.pid, tgid: w.pid, comm: 'memory' });
    expect(task.ppid).to.equal(process.pid);
    expect(task.pgid).to.equal(Number(after[2]));
    expect(task.sid).to.equal(Number(after[3]));
    const regs = doc.objects.find((o) => o.name === 'regs')!.fields;
    expect(BigInt(regs.rip as string)).to.not.equal(0n);
    expect(BigInt(regs.fs_base as string)).to.not.equal(0n);

    // The VMAs, rendered like /proc/PID/maps, are the process's maps at checkpoint time.
    const vmas = doc.objects.filter((o) => o.name === 'vma').map((o) => {
      const f = o.fields;
      return `${BigInt(f.start as string).toString(16)}-${BigInt(f.end as string).toString(16)} ${PERMS(f)} ${BigInt(f.pgoff as string).toString(16).padStart(8, '0')} ${String(f.path)}`;
    });
    const procMaps = maps
      .filter((m) => m.path !== '[vsyscall]')
      .map((m) => `${m.start.toString(16)}-${m.end.toString(16)} ${m.perms} ${m.offset.toString(16).padStart(8, "0")} ${m.path.replace(/ \(deleted\)$/, "")}`);
    expect(vmas).to.deep.equal(procMaps);
    // The person's rendering has the same lines.
    const text = await cptrst(['show', img]);
    expect(text.code).to.equal(0);
    for (const m of procMaps.slice(0, 5)) expect(text.stdout).to.include(m.split(' ').slice(0, 2).join(' '));

    await trigger(w);
    const r = parseResult(await waitResult(w));
    expect(passLines('memory')).to.include(r.verdict);
  });

  for (const variant of SYSCALL_VARIANTS) {
    it(`a process frozen inside ${variant} carries on after the checkpoint as after a stop signal`, async () => {
      const w = await startWorkload('syscalls', [variant]);
      await sleep(300);
      for (let i = 0; i < 3; i++) {
        const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, `i${i}.cpt`)]);
        expect(ck.code, ck.stderr).to.equal(0);
        await sleep(150);
      }
      await expectRunningUntraced(w.pid);
      await trigger(w);
      if (variant === 'pause') {
        await sleep(100);
        process.kill(w.pid, 'SIGUSR1');
      }
      expect(passLines('syscalls', [variant])).to.include(parseResult(await waitResult(w)).verdict);
    });
  }

  it('--leave-stopped leaves the process stopped and untraced', async () => {
    const w = await startWorkload('dynamic');
    const ck = await cptrst(['checkpoint', String(w.pid), '-o', path.join(w.dir, 'i.cpt'), '--leave-stopped']);
    expect(ck.code, ck.stderr).to.equal(0);
    const st = await procState(w.pid);
    expect(st?.state).to.equal('T');
    expect(st?.tracerPid).to.equal(0);
    process.kill(w.pid, 'SIGCONT');
    await sleep(50);
    await trigger(w);
    expect(passLines('dynamic')).to.include(parseResult(await waitResult(w)).verdict);
  });

  it('node_modules/.bin/cptrst works from the repository root', async () => {
    const bin = path.join(REPO_ROOT, 'node_modules', '.bin', 'cptrst');
    const r = await execFileP(bin, ['check'], { cwd: REPO_ROOT });
    expect(r.stdout).to.match(/clone3/);
    const v = await execFileP(bin, ['--version'], { cwd: REPO_ROOT });
    expect(v.stdout.trim()).to.match(/^cptrst \d+\.\d+\.\d+$/);
  });

  it('check reports ptrace, clone3 with set_tid, process_vm_readv and the capability vector, and exits 0', async () => {
    const r = await cptrst(['check', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const doc = JSON.parse(r.stdout) as { ok: boolean; probes: Array<{ name: string; ok: boolean }> } & Record<string, unknown>;
    expect(doc.ok).to.equal(true);
    const byName = new Map(doc.probes.map((p) => [p.name, p.ok]));
    for (const n of ['ptrace', 'clone3 set_tid', 'process_vm_readv', 'xsave', 'vdso']) expect(byName.get(n), n).to.equal(true);
    expect(JSON.stringify(doc)).to.match(/xsave/);
    const text = await cptrst(['check']);
    expect(text.code).to.equal(0);
    expect(text.stdout).to.match(/clone3/);
  });
});
