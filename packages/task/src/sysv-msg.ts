/**
 * SysV message queues used by the process tree (which ones, and the id and collision policy: see
 * sysv-ipc.ts): each queue with its id, key, owner, mode, size limit (qbytes), and every message
 * in order with its type. cptrst reads the messages itself without taking them (msgrcv with
 * MSG_COPY, which leaves the queue, its times and its last receiver as they were), twice over
 * until the queue reads the same before and after: a process outside the tree may be using it.
 * A kernel without MSG_COPY (no CONFIG_CHECKPOINT_RESTORE) makes the checkpoint refuse the queue.
 *
 * A made-again queue gets its messages from the tree's first process (msgsnd, in order), so its
 * last sender reads that process afterwards, and so does its last receiver if it had one (an
 * empty message is sent and taken first); its times are those of the restart, its creator (cuid,
 * cgid) the restoring root.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler, RestoreObject,
  StateKey, bytes, decodeStruct, i32, i64, linux, objectType, refuse, sizeOfStruct, u32, u64,
} from '@cptrst/core';
import {
  SysvIpcFields, ipcCall, makeWithId, readConsistently, recordsForTree, removeMade, requireFreeKey, requireTrustedIpc, setOwner, withTaskBuffer,
} from './sysv-ipc';

/** Right after the semaphore sets (180). */
export const SYSV_MSG_ORDER = 181;
/** Bounds what one queue may put into the image (its messages are records of their own, each at most this). */
const MAX_QUEUE_BYTES = 16 * 1024 * 1024;
const MAX_MESSAGES = 1 << 20;
const MAX_ID = 0x7fffffff;

@objectType(ObjectType.SYSV_MSG, 'sysv-msg', { parents: [ObjectType.TASK] })
export class SysvMsgImage extends SysvIpcFields {
  /** The most bytes of text the queue holds (msgctl IPC_SET's msg_qbytes). */
  @u64() qbytes = 0n;
  @i32() lspid = 0;
  @i32() lrpid = 0;
  @i64() stime = 0n;
  @i64() rtime = 0n;
  @i64() ctime = 0n;
  /** How many SYSV_MSG_TEXT objects follow (the queue's messages, first first). */
  @u32() count = 0;
}

@objectType(ObjectType.SYSV_MSG_TEXT, 'sysv-msg-text', { parents: [ObjectType.SYSV_MSG] })
export class SysvMsgTextImage {
  /** The message's type (positive). */
  @i64() type = 0n;
  @bytes() text: Buffer = Buffer.alloc(0);
}

const queueObject = (id: number, key: number): string => `SysV message queue ${id} (key ${key})`;

interface Message {
  type: bigint;
  text: Buffer;
}
interface QueueState {
  q: linux.SysvMsg;
  qbytes: bigint;
  messages: Message[];
}

/** One read of a queue: its /proc/sysvipc/msg line, its qbytes and its messages. Undefined: it is gone. */
function readOnce(id: number, pid: number): QueueState | undefined {
  const q = linux.readSysvMsg().find((m) => m.id === id);
  if (!q) return undefined;
  const object = queueObject(id, q.key);
  if (q.cbytes > MAX_QUEUE_BYTES || q.qnum > MAX_MESSAGES) refuse(pid, object, `the queue holds ${q.qnum} messages, ${q.cbytes} bytes: more than cptrst records (${MAX_QUEUE_BYTES} bytes)`);
  const ds = Buffer.alloc(sizeOfStruct(linux.MsqidDs));
  ipcCall('msgctl', [id, linux.IPC.STAT, ds], `msgctl(${id}, IPC_STAT)`, pid, object);
  const qbytes = decodeStruct(linux.MsqidDs, ds).qbytes;
  const messages: Message[] = [];
  // Every message is at most the queue's bytes; the kernel copies the whole buffer in first.
  const size = Math.max(q.cbytes, 1);
  const buf = Buffer.alloc(8 + size);
  for (let i = 0; i < q.qnum; i++) {
    const r = linux.rawSyscall(linux.syscallNumber('msgrcv'), id, buf, size, i, linux.MSGRCV.COPY | linux.MSGRCV.NOWAIT);
    if (r === -BigInt(linux.ERRNO.ENOSYS)) refuse(pid, object, 'this kernel cannot read a message without taking it (msgrcv MSG_COPY needs CONFIG_CHECKPOINT_RESTORE)');
    // Fewer messages than the line said: it changed meanwhile, the caller reads again.
    if (r === -BigInt(linux.ERRNO.ENOMSG)) break;
    if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `msgrcv(${id}, MSG_COPY, message ${i}): ${linux.errnoName(Number(-r))}`, { pid, object });
    messages.push({ type: buf.readBigInt64LE(0), text: Buffer.from(buf.subarray(8, 8 + Number(r))) });
  }
  return { q, qbytes, messages };
}

const sameState = (a: QueueState, b: QueueState): boolean => {
  const x = a.q;
  const y = b.q;
  return x.key === y.key && x.mode === y.mode && x.uid === y.uid && x.gid === y.gid && x.cbytes === y.cbytes && x.qnum === y.qnum
    && x.lspid === y.lspid && x.lrpid === y.lrpid && x.stime === y.stime && x.rtime === y.rtime && x.ctime === y.ctime && a.qbytes === b.qbytes
    && a.messages.length === x.qnum && sameMessages(a.messages, b.messages);
};

const sameMessages = (a: Message[], b: Message[]): boolean =>
  a.length === b.length && a.every((m, i) => m.type === b[i].type && m.text.equals(b[i].text));

/** A consistent read of queue `id`: see readConsistently. */
const readQueue = (id: number, pid: number): QueueState | undefined =>
  readConsistently(() => readOnce(id, pid), sameState, pid, (last) => queueObject(id, last.q.key), 'queue');

/** The queues a process of `pids` sent to or received from last. */
function queuesUsedBy(pids: ReadonlySet<number>, pid: number): QueueState[] {
  const out: QueueState[] = [];
  for (const q of linux.readSysvMsg()) {
    if (!pids.has(q.lspid) && !pids.has(q.lrpid)) continue;
    const st = readQueue(q.id, pid);
    if (st) out.push(st);
  }
  return out;
}

export class SysvMsgDump implements DumpHandler {
  readonly name = 'task.sysv-msg';
  readonly order = SYSV_MSG_ORDER;
  /** A zombie may have been the last to use a queue: it belongs to the tree too. */
  readonly zombies = true;

  check(_ctx: CheckpointContext, task: CheckpointTask): void {
    // A queue that cannot be read (no MSG_COPY, too big) is refused here, before anything is written.
    queuesUsedBy(new Set([task.pid]), task.pid);
  }

  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    if (!recordsForTree(ctx, task)) return;
    for (const st of queuesUsedBy(new Set(ctx.treePids(task)), task.pid)) {
      const q = st.q;
      const img = new SysvMsgImage();
      img.key = q.key;
      img.id = q.id;
      img.mode = q.mode & 0o777;
      img.uid = q.uid;
      img.gid = q.gid;
      img.cuid = q.cuid;
      img.cgid = q.cgid;
      img.qbytes = st.qbytes;
      img.lspid = q.lspid;
      img.lrpid = q.lrpid;
      img.stime = q.stime;
      img.rtime = q.rtime;
      img.ctime = q.ctime;
      img.count = st.messages.length;
      const tag = ctx.write(img, task.tag);
      for (const m of st.messages) {
        const r = new SysvMsgTextImage();
        r.type = m.type;
        r.text = m.text;
        ctx.write(r, tag);
      }
      ctx.log.debug(`pid ${task.pid}: ${queueObject(img.id, img.key)}: ${img.count} messages`);
    }
  }
}

interface QueueRestore {
  img: SysvMsgImage;
  tag: number;
  messages: Message[];
}
const QUEUES = new StateKey<QueueRestore[]>('task.sysv-msg.restore');

export class SysvMsgRestore implements RestoreHandler {
  readonly name = 'task.sysv-msg';
  readonly order = SYSV_MSG_ORDER;
  readonly types = [ObjectType.SYSV_MSG, ObjectType.SYSV_MSG_TEXT];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const list = task.state.ensure(QUEUES, () => []);
    if (o.type === ObjectType.SYSV_MSG_TEXT) {
      const m = o.obj as SysvMsgTextImage;
      const q = list.find((x) => x.tag === o.ptag);
      const bad = (why: string) => new CptError('EBADIMG', why, { pid: task.pid, object: q ? queueObject(q.img.id, q.img.key) : 'SysV message' });
      if (!q) throw bad(`a SysV message at image offset ${o.offset} belongs to no queue of the task`);
      if (q.messages.length >= q.img.count) throw bad(`more messages than the queue's ${q.img.count}`);
      if (m.type < 1n) throw bad(`a message of type ${m.type}`);
      const total = q.messages.reduce((n, x) => n + x.text.length, 0) + m.text.length;
      if (total > MAX_QUEUE_BYTES) throw bad(`more than ${MAX_QUEUE_BYTES} bytes of messages`);
      q.messages.push({ type: m.type, text: m.text });
      return;
    }
    const img = o.obj as SysvMsgImage;
    const object = queueObject(img.id, img.key);
    const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object });
    if (img.id < 0 || img.id > MAX_ID || list.some((x) => x.img.id === img.id)) throw bad(`queue id ${img.id} is out of range or given twice`);
    if (img.key !== linux.IPC.PRIVATE && list.some((x) => x.img.key === img.key)) throw bad(`key ${img.key} is given twice`);
    if ((img.mode & ~0o777) !== 0) throw bad(`mode 0${img.mode.toString(8)}`);
    if (img.count > MAX_MESSAGES || img.qbytes > BigInt(0x7fffffff)) throw bad(`${img.count} messages, or a limit of ${img.qbytes} bytes`);
    for (const p of [img.lspid, img.lrpid]) if (p < 0 || p > 4194304) throw bad(`a last user pid ${p}`);
    requireTrustedIpc(ctx, task, object);
    list.push({ img, tag: o.tag, messages: [] });
  }

  finish(ctx: RestartContext, task: RestartTask): void {
    for (const q of task.state.get(QUEUES) ?? []) {
      if (q.messages.length !== q.img.count) throw new CptError('EBADIMG', `${q.messages.length} messages, not the queue's ${q.img.count}`, { pid: task.pid, object: queueObject(q.img.id, q.img.key) });
      this.one(ctx, task, q);
    }
  }

  abort(_ctx: RestartContext, task: RestartTask): void {
    removeMade(task, 'msg');
  }

  private one(ctx: RestartContext, task: RestartTask, { img, messages }: QueueRestore): void {
    const object = queueObject(img.id, img.key);
    const here = readQueue(img.id, task.pid);
    if (here) {
      const q = here.q;
      if (q.key !== img.key || q.cuid !== img.cuid || q.cgid !== img.cgid) {
        throw new CptError('EEXIST', `SysV message queue id ${img.id} is taken by another queue (key ${q.key}); it is not taken over`, { pid: task.pid, object });
      }
      const left = (q.mode & 0o777) === img.mode && q.uid === img.uid && q.gid === img.gid && here.qbytes === img.qbytes && q.lspid === img.lspid
        && q.lrpid === img.lrpid && q.stime === img.stime && q.rtime === img.rtime && q.ctime === img.ctime && sameMessages(here.messages, messages);
      if (!left) throw new CptError('EBUSY', `the queue the process left (id ${img.id}) was changed since the checkpoint (${q.qnum} messages now, ${messages.length} in the image); it is not overwritten`, { pid: task.pid, object });
      ctx.log.debug(`pid ${task.pid}: ${object}: taken back as the process left it`);
      return;
    }
    requireFreeKey(task, img.key, linux.readSysvMsg, 'message queue', object);
    const t = task.tracee!;
    makeWithId(task, 'msg', img.id, object, () => t.syscallOk(linux.syscallNumber('msgget'), [img.key, linux.IPC.CREAT | linux.IPC.EXCL | img.mode], `msgget(key ${img.key})`));
    // Room for every message first (a queue whose limit was lowered below what it held), the image's limit last.
    const total = BigInt(messages.reduce((n, m) => n + m.text.length, 0));
    const roomy = img.qbytes > total ? img.qbytes : total;
    setOwner(t, 'msg', img.id, { uid: img.uid, gid: img.gid, mode: img.mode, qbytes: roomy });
    const msgsnd = linux.syscallNumber('msgsnd');
    const send = (m: Message, what: string) => {
      const buf = Buffer.alloc(8 + m.text.length);
      buf.writeBigInt64LE(m.type, 0);
      m.text.copy(buf, 8);
      withTaskBuffer(t, buf, what, (at) => t.syscallOk(msgsnd, [img.id, at, m.text.length, linux.MSGRCV.NOWAIT], what));
    };
    if (img.lrpid !== 0) {
      // Someone received from it: its last receiver becomes the tree's process, as its last sender does.
      send({ type: 1n, text: Buffer.alloc(0) }, `msgsnd(${img.id}) of an empty message`);
      const at = t.stage(Buffer.alloc(8));
      t.syscallOk(linux.syscallNumber('msgrcv'), [img.id, at, 0, 0, linux.MSGRCV.NOWAIT], `msgrcv(${img.id}) of the empty message`);
    }
    messages.forEach((m, i) => send(m, `msgsnd(${img.id}) of message ${i} (type ${m.type}, ${m.text.length} bytes)`));
    if (roomy !== img.qbytes) setOwner(t, 'msg', img.id, { uid: img.uid, gid: img.gid, mode: img.mode, qbytes: img.qbytes });
    ctx.log.debug(`pid ${task.pid}: ${object}: made again with ${messages.length} messages`);
  }
}
