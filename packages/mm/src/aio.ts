/**
 * The ring of an aio context (io_setup): an area named `/[aio]` on the kernel's internal aio
 * mount, whose address is the context's id. Its first page starts with the ring's header (the
 * number of events it holds, head, tail); the completed events follow.
 *
 * Checkpoint records the ring's size, head and tail and the events completed and not read yet
 * (from head to tail), read through the area itself; its pages are not stored (the header's `id`
 * is the kernel's index of the context in the process, which a new context chooses itself).
 *
 * Restart makes a context of the same size (io_setup with the number of events that the kernel
 * turns into the recorded ring size), moves its ring to the recorded address with mremap (the
 * kernel follows the move: the context's id is the new address), then brings the kernel's tail
 * to the recorded one. The kernel keeps its own copy of the tail and counts the slots in use, so
 * the tail is only ever moved by completing requests: zero-length writes to a memfd made in the
 * task (they complete at once, at submission). Up to the recorded head they are read back with
 * io_getevents (head and tail advance together); from head to tail they are left unread, so the
 * kernel counts those slots as used, as it did; the recorded events are then written over them.
 *
 * Not restored, since no interface shows them: requests still in flight at checkpoint (a
 * request completes at submission for most files; an IOCB_CMD_POLL, O_DIRECT I/O or an fsync
 * may stay in flight). Their completions would be lost: the kernel does not say they exist, so
 * this limit is documented rather than refused. The context's nominal size (io_setup's argument,
 * counted in /proc/sys/fs/aio-nr) becomes the one matching the ring.
 */
import {
  CheckpointContext, CheckpointTask, CptError, KindRecordWriter, KindRecords, ObjectType, RestartContext, RestartTask, bytes,
  decodeStruct, encodeStruct, linux, objectType, refuse, sizeOfStruct, u32,
} from '@cptrst/core';
import { VmaEntry, VmaImage, VmaKindHandler, describeVma } from './vma';

const { AIO, PROT, SYS } = linux;
const PAGE = 4096;
const HEADER = sizeOfStruct(linux.AioRing);
/** The largest ring io_setup makes (the kernel refuses more than 0x10000000 bytes of events). */
const MAX_RING_BYTES = 0x10000000 + PAGE;
/** Requests submitted at once while the tail is brought into place. */
const BATCH = 32;

@objectType(ObjectType.VMA_AIO_RING, 'vma-aio-ring', { parents: [ObjectType.VMA] })
export class AioRingImage {
  /** Events the ring holds (its header's nr). */
  @u32() nr = 0;
  @u32() head = 0;
  @u32() tail = 0;
  /** The events from head to tail (completed, not read), 32 bytes each, in order. */
  @bytes() events: Buffer = Buffer.alloc(0);
}

/** The number of events a ring of `len` bytes holds (the kernel fills whole pages with events). */
const eventsIn = (len: bigint): number => Math.floor((Number(len) - HEADER) / AIO.EVENT_SIZE);
const unread = (r: { nr: number; head: number; tail: number }): number => (r.tail - r.head + r.nr) % r.nr;

interface Ring {
  nr: number;
  head: number;
  tail: number;
  events: Buffer;
}

/** Reads the ring through the area (the task is stopped; the kernel writes it only when a request completes). */
function readRing(task: CheckpointTask, v: VmaEntry): Ring {
  const object = describeVma(v);
  const len = v.end - v.start;
  if (len > BigInt(MAX_RING_BYTES)) refuse(task.pid, object, `an aio ring of ${len} bytes is larger than io_setup makes`);
  const h = decodeStruct(linux.AioRing, task.tracee.readMemory(v.start, HEADER));
  const why = h.magic !== AIO.RING_MAGIC ? `magic 0x${h.magic.toString(16)}`
    : h.compatFeatures !== AIO.COMPAT_FEATURES || h.incompatFeatures !== AIO.INCOMPAT_FEATURES ? `features ${h.compatFeatures}/${h.incompatFeatures}`
      : h.headerLength !== HEADER ? `header length ${h.headerLength}`
        : h.nr !== eventsIn(len) ? `${h.nr} events in ${len} bytes (a part of the ring unmapped?)`
          : h.head >= h.nr || h.tail >= h.nr ? `head ${h.head} or tail ${h.tail} beyond its ${h.nr} events`
            : undefined;
  if (why) refuse(task.pid, object, `the aio ring at 0x${v.start.toString(16)} is not one cptrst knows: ${why}`);
  const ring = { nr: h.nr, head: h.head, tail: h.tail, events: Buffer.alloc(0) };
  const n = unread(ring);
  const parts: Buffer[] = [];
  const first = Math.min(n, h.nr - h.head);
  parts.push(task.tracee.readMemory(v.start + BigInt(HEADER + h.head * AIO.EVENT_SIZE), first * AIO.EVENT_SIZE));
  if (n > first) parts.push(task.tracee.readMemory(v.start + BigInt(HEADER), (n - first) * AIO.EVENT_SIZE));
  ring.events = Buffer.concat(parts);
  return ring;
}

export class AioRingVma implements VmaKindHandler {
  readonly kind = 'aio-ring';
  /** Above the file kind, which would refuse the area for its flags. */
  readonly priority = 1;
  readonly records = [AioRingImage];

  claims(v: VmaEntry): boolean {
    return v.shared && v.path === '/[aio]';
  }

  describe(task: CheckpointTask, v: VmaEntry): void {
    const object = describeVma(v);
    if (v.offset !== 0n) refuse(task.pid, object, 'only a part of an aio ring is mapped here (split by munmap or mremap); not supported');
    if (!v.prot.read || !v.prot.write || v.prot.exec) refuse(task.pid, object, 'an aio ring whose protection was changed (mprotect) is not supported');
    readRing(task, v);
  }

  /** VM_DONTEXPAND, which the kernel sets on every ring. */
  acceptsVmFlag(flag: string): boolean {
    return flag === 'de';
  }
  /** The ring is written by the kernel into the context's own pages: its events go in the kind's record. */
  storesPages(): boolean {
    return false;
  }
  storesPage(): boolean {
    return false;
  }

  dumpRecords(_ctx: CheckpointContext, task: CheckpointTask, v: VmaEntry, _img: VmaImage, out: KindRecordWriter): void {
    const ring = readRing(task, v);
    const r = new AioRingImage();
    r.nr = ring.nr;
    r.head = ring.head;
    r.tail = ring.tail;
    r.events = ring.events;
    out.write(r);
  }

  map(_ctx: RestartContext, task: RestartTask, img: VmaImage, _writable: boolean, records: KindRecords): void {
    const object = describeVma(img);
    const list = records.of(AioRingImage);
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object });
    if (list.length !== 1) throw bad(`${list.length} aio ring records for one area`);
    const r = list[0];
    const len = img.end - img.start;
    if (img.pgoff !== 0n || len > BigInt(MAX_RING_BYTES) || len % BigInt(PAGE) || r.nr !== eventsIn(len) || r.nr < 2) throw bad(`an aio ring of ${r.nr} events in ${len} bytes`);
    if (r.head >= r.nr || r.tail >= r.nr || r.events.length !== unread(r) * AIO.EVENT_SIZE) throw bad(`aio ring head ${r.head}, tail ${r.tail} and ${r.events.length} bytes of events do not agree`);
    if (img.prot !== (PROT.READ | PROT.WRITE)) throw bad(`an aio ring with protection ${img.prot}`);
    const t = task.tracee!;
    // The kernel makes nr = pages * 128 - 1 events of max(n, 4 * CPUs) * 2 + 2: this n gives back nr.
    const n = Math.floor((r.nr - 2) / 2);
    const ctxAt = t.stage(Buffer.alloc(8));
    t.syscallOk(linux.syscallNumber('io_setup'), [n, ctxAt], `io_setup(${n}) (the number of aio events the system allows, /proc/sys/fs/aio-max-nr, may be used up)`);
    let ring = t.readMemory(ctxAt, 8).readBigUInt64LE();
    const destroy = () => t.syscall(linux.syscallNumber('io_destroy'), [ring]);
    try {
      const h = decodeStruct(linux.AioRing, t.readMemory(ring, HEADER));
      if (h.nr !== r.nr) throw new CptError('EOPNOTSUPP', `io_setup(${n}) made a ring of ${h.nr} events, not ${r.nr} (this machine has more CPUs than the one checkpointed, and the kernel sizes small rings by them)`, { pid: task.pid, object });
      if (ring !== img.start) {
        const to = t.syscallOk(SYS.mremap, [ring, len, len, linux.MREMAP.MAYMOVE | linux.MREMAP.FIXED, img.start], `mremap of the aio ring to 0x${img.start.toString(16)}`);
        if (to !== img.start) throw new CptError('EFAULT', `mremap of the aio ring landed at 0x${to.toString(16)}`, { pid: task.pid, object });
        ring = to;
      }
      this.moveTail(task, ring, r, object);
    } catch (e) {
      destroy();
      throw e;
    }
  }

  /**
   * Completes requests until the kernel's tail is the recorded one: the first `head` read back,
   * the rest left unread; then writes the recorded events over them.
   */
  private moveTail(task: RestartTask, ring: bigint, r: AioRingImage, object: string): void {
    const t = task.tracee!;
    const left = unread(r);
    if (r.head === 0 && left === 0) return;
    const submitNr = linux.syscallNumber('io_submit');
    const getNr = linux.syscallNumber('io_getevents');
    const fd = t.syscallOk(SYS.memfd_create, [t.stage(Buffer.from('cptrst-aio\0')), linux.MFD.CLOEXEC], 'memfd_create for the aio ring\'s tail');
    try {
      // BATCH iocbs, their pointers, room for BATCH events.
      const iocbSize = sizeOfStruct(linux.Iocb);
      const iocbs = Buffer.alloc(BATCH * iocbSize);
      const base = t.stage(Buffer.alloc(BATCH * (iocbSize + 8 + AIO.EVENT_SIZE)));
      const ptrs = Buffer.alloc(BATCH * 8);
      for (let i = 0; i < BATCH; i++) {
        // A zero-length write of the memfd: it completes at once, at submission.
        encodeStruct(linux.Iocb, { opcode: AIO.IOCB_CMD_PWRITE, fildes: Number(fd), buf: base, nbytes: 0n }, iocbs, i * iocbSize);
        ptrs.writeBigUInt64LE(base + BigInt(i * iocbSize), i * 8);
      }
      t.writeMemory(base, iocbs);
      const ptrsAt = base + BigInt(BATCH * iocbSize);
      t.writeMemory(ptrsAt, ptrs);
      const eventsAt = ptrsAt + BigInt(BATCH * 8);
      const complete = (count: number, reap: boolean) => {
        for (let done = 0; done < count;) {
          const k = Math.min(BATCH, count - done);
          const sent = Number(t.syscallOk(submitNr, [ring, k, ptrsAt], 'io_submit of requests that move the aio ring\'s tail'));
          if (sent < 1) throw new CptError('EAGAIN', `io_submit took ${sent} of ${k} requests`, { pid: task.pid, object });
          if (reap) {
            const got = Number(t.syscallOk(getNr, [ring, sent, sent, eventsAt, 0], 'io_getevents of the requests that move the aio ring\'s head'));
            if (got !== sent) throw new CptError('EIO', `io_getevents read ${got} of ${sent} events`, { pid: task.pid, object });
          }
          done += sent;
        }
      };
      complete(r.head, true);
      complete(left, false);
      const h = decodeStruct(linux.AioRing, t.readMemory(ring, HEADER));
      if (h.head !== r.head || h.tail !== r.tail) throw new CptError('EIO', `the aio ring's head and tail are ${h.head} and ${h.tail}, not ${r.head} and ${r.tail}`, { pid: task.pid, object });
      // The recorded events in the slots of the unread ones, wrapping round the ring's end.
      const first = Math.min(left, r.nr - r.head);
      t.writeMemory(ring + BigInt(HEADER + r.head * AIO.EVENT_SIZE), r.events.subarray(0, first * AIO.EVENT_SIZE));
      if (left > first) t.writeMemory(ring + BigInt(HEADER), r.events.subarray(first * AIO.EVENT_SIZE));
    } finally {
      t.syscall(SYS.close, [fd]);
    }
  }
}
