/**
 * register(c) and the arch dump handlers on a real frozen /bin/sleep: REGS, XSTATE and DEBUGREGS
 * objects are written to an in-memory image and read back.
 */
import * as fs from 'fs';
import { expect } from 'chai';
import { container } from 'tsyringe';
import {
  CheckpointContext, CheckpointTask, DumpHandler, ImageHead, ImageReader, ImageRecord, ImageWriter, MemorySink, ObjectType,
  RestartContext, RestartTask, RestoreHandler, Tokens, TraceeFactory, bufferSource, linux, TaskState,
} from '@cptrst/core';
import { USER_REGS_FIELDS, UserRegs, debugRegOffset, dr7SlotBits, x86ptrace, xsaveInfo } from '../src';
import {
  DebugRegsImage, DebugRegsRestore, RegsImage, RegsRestore, X86Tracee, X86TraceeFactory, XstateImage, fromImage, register, toImage,
} from '../src';
import { killStarted, letGo, pollSync, seizeAndStop, startSleeping } from './support';

const { SYS } = linux;
const ptrace = x86ptrace;

describe('arch-x86 registration and dump handlers', function () {
  this.timeout(20000);
  afterEach(() => killStarted());

  it('register() binds the tracee factory, three dump and three restore handlers in order, and the probe', () => {
    const c = container.createChildContainer();
    register(c);
    expect(c.resolve(Tokens.TraceeFactory)).to.be.instanceOf(X86TraceeFactory);
    const dumps = c.resolveAll<DumpHandler>(Tokens.DumpHandler);
    expect(dumps.map((d) => [d.name, d.order])).to.deep.equal([['arch-x86.regs', 800], ['arch-x86.xstate', 801], ['arch-x86.debugregs', 802]]);
    const restores = c.resolveAll<RestoreHandler>(Tokens.RestoreHandler);
    expect(restores.map((r) => [r.name, r.order, r.types])).to.deep.equal([
      ['arch-x86.regs', 800, [ObjectType.REGS]],
      ['arch-x86.xstate', 801, [ObjectType.XSTATE]],
      ['arch-x86.debugregs', 802, [ObjectType.DEBUGREGS]],
    ]);
    expect(c.isRegistered(Tokens.Freezer, true)).to.equal(false);
  });

  it('toImage / fromImage round-trip every register', () => {
    const r = {} as UserRegs;
    USER_REGS_FIELDS.forEach((f, i) => {
      r[f] = 0x1111n * BigInt(i + 1);
    });
    const img = toImage(r);
    expect(img).to.be.instanceOf(RegsImage);
    expect(fromImage(img)).to.deep.equal(r);
  });

  it('dumps the registers, the XSAVE area and the debug registers of a frozen process', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const c = container.createChildContainer();
    register(c);
    const sink = new MemorySink();
    const writer = new ImageWriter(sink);
    writer.writeHead(new ImageHead());
    const ctx = new CheckpointContext(c, writer, 0);
    const taskTag = writer.writeRaw(ObjectType.TASK, Buffer.alloc(0));

    // ---- synchronous ----
    seizeAndStop(pid);
    const tracee = c.resolve<TraceeFactory>(Tokens.TraceeFactory).fromStopped(pid, pid) as X86Tracee;
    const task: CheckpointTask = { pid, tid: pid, tracee, tag: taskTag, state: new TaskState() };
    const dr0 = tracee.frozenRegs.rip;
    ptrace.pokeUser(pid, debugRegOffset(0), dr0); // an address, not enabled in DR7
    const xsLive = ptrace.getXstate(pid, 65536);
    for (const h of c.resolveAll<DumpHandler>(Tokens.DumpHandler)) await h.dump(ctx, task);
    ptrace.pokeUser(pid, debugRegOffset(0), 0n);

    // The restore side of REGS: a restored process gets EINTR where the original would restart.
    const rtask: RestartTask = { pid, tid: pid, tag: 1, tracee, state: new TaskState() };
    const rctx = new RestartContext(c, new ImageReader(bufferSource(Buffer.alloc(0))), fs.openSync('/dev/null', 'r'), 0);
    const rr = new RegsRestore();
    rr.restore(rctx, rtask, { type: ObjectType.REGS, tag: 3, ptag: 1, offset: 0, obj: toImage(tracee.frozenRegs) });
    rr.finish(rctx, rtask);
    expect(rtask.resumeRegs!.rip).to.equal(tracee.frozenRegs.rip);
    expect(BigInt.asIntN(64, rtask.resumeRegs!.rax)).to.equal(-4n);
    expect(rtask.resumeRegs!.orig_rax).to.equal(0xffffffffffffffffn);
    letGo(tracee, 'run'); // this is the original process: let it restart its sleep
    // ---- end ----
    expect(pollSync(() => linux.readStatus(pid).state === 'S' && linux.readStatus(pid).tracerPid === 0)).to.equal(true);

    writer.writeTerminator();
    const reader = new ImageReader(bufferSource(sink.toBuffer()));
    reader.readHead();
    const recs: ImageRecord[] = [];
    for (let r = reader.next(); r; r = reader.next()) recs.push(r);
    expect(recs.map((r) => r.type)).to.deep.equal([ObjectType.TASK, ObjectType.REGS, ObjectType.XSTATE, ObjectType.DEBUGREGS]);
    for (const r of recs.slice(1)) expect(r.ptag).to.equal(taskTag);

    const regs = recs[1].obj as RegsImage;
    expect(fromImage(regs)).to.deep.equal(tracee.frozenRegs);
    expect(Number(regs.orig_rax)).to.equal(SYS.clock_nanosleep);
    expect(regs.cs).to.equal(0x33n);

    const xs = recs[2].obj as XstateImage;
    expect(xs.size).to.equal(xsaveInfo().size);
    expect(xs.area).to.deep.equal(xsLive);
    expect(xs.features).to.equal(xsLive.readBigUInt64LE(512));
    expect(xs.features & ~xsaveInfo().features).to.equal(0n);

    const dr = recs[3].obj as DebugRegsImage;
    expect(dr.regs).to.have.length(6);
    expect(dr.regs[0]).to.equal(dr0);
    expect(dr.regs.slice(1, 4)).to.deep.equal([0n, 0n, 0n]);
    expect(dr.regs[5]).to.equal(0n); // DR7: nothing enabled
  });
});

describe('DebugRegsRestore on a real stopped process', function () {
  this.timeout(20000);
  afterEach(() => killStarted());

  it('sets the slots an image uses (an address, or one DR7 enables) with DR6 and DR7; a thread without breakpoints reads back the same', async () => {
    const { pid } = await startSleeping('/bin/sleep', ['100']);
    const c = container.createChildContainer();
    register(c);
    // ---- synchronous ----
    seizeAndStop(pid);
    const tracee = c.resolve<TraceeFactory>(Tokens.TraceeFactory).fromStopped(pid, pid) as X86Tracee;
    const rctx = new RestartContext(c, new ImageReader(bufferSource(Buffer.alloc(0))), fs.openSync('/dev/null', 'r'), 0);
    const peek = () => [0, 1, 2, 3, 6, 7].map((i) => ptrace.peekUser(pid, debugRegOffset(i)));
    const pristine = peek();
    expect(pristine.slice(0, 4)).to.deep.equal([0n, 0n, 0n, 0n]);
    expect(pristine[5]).to.equal(0n);
    const restore = (regs: bigint[]) => {
      const rtask: RestartTask = { pid, tid: pid, tag: 1, tracee, state: new TaskState() };
      const h = new DebugRegsRestore();
      const img = new DebugRegsImage();
      img.regs = regs;
      h.restore(rctx, rtask, { type: ObjectType.DEBUGREGS, tag: 2, ptag: 1, offset: 0, obj: img });
      h.finish(rctx, rtask);
    };
    try {
      // What a thread without breakpoints reads: nothing but DR6 needs writing, and it reads back the same.
      restore(pristine);
      expect(peek()).to.deep.equal(pristine);
      // A write watchpoint of 8 bytes in slot 1, enabled (L1, RW1 = 01, LEN1 = 10), a mere address in slot 2.
      const addr = tracee.frozenRegs.rsp & ~7n;
      const dr7 = (1n << 2n) | (0b1001n << 20n);
      restore([0n, addr, 0x1000n, 0n, pristine[4], dr7]);
      const got = peek();
      expect(got[1]).to.equal(addr);
      expect(got[2]).to.equal(0x1000n);
      expect([got[0], got[3]]).to.deep.equal([0n, 0n]);
      expect(got[5] & dr7).to.equal(dr7);
      expect(dr7SlotBits(dr7, 1)).to.equal(dr7);
      expect([0, 2, 3].map((n) => dr7SlotBits(dr7, n))).to.deep.equal([0n, 0n, 0n]);
    } finally {
      ptrace.pokeUser(pid, debugRegOffset(7), 0n);
      letGo(tracee, 'kill');
    }
  });
});
