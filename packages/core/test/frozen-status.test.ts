/** One status read per frozen task, shared by the handlers (frozen-status.ts). */
import 'reflect-metadata';
import { expect } from 'chai';
import { CheckpointTask, TaskState, Tracee, frozenStatus, linux, setFrozenStatus } from '../src';
import { unusedTracee } from './support/real-processes';

const taskOf = (pid: number): CheckpointTask => ({ pid, tid: pid, tracee: unusedTracee<Tracee>(), tag: 0, state: new TaskState() });

describe('frozenStatus', () => {
  it('reads the task\'s status on first use, then answers that same read', () => {
    const task = taskOf(process.pid);
    const s = frozenStatus(task);
    expect(s.pid).to.equal(process.pid);
    expect(s.uid[0]).to.equal(process.getuid!());
    expect(frozenStatus(task)).to.equal(s);
  });

  it('answers the read the freezer handed over, not a new one', () => {
    const task = taskOf(process.pid);
    const given = linux.parseStatus('Name:\tgiven\nUmask:\t0077\nSeccomp:\t2\n');
    setFrozenStatus(task, given);
    expect(frozenStatus(task)).to.equal(given);
    expect(frozenStatus(task).umask).to.equal(0o77);
  });
});
