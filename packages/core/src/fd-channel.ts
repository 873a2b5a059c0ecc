/**
 * Descriptors of cptrst's given to a stopped task as a receive of its own would bring them: a
 * socketpair made inside the task, cptrst sends its fds over one end (SCM_RIGHTS, through its copy
 * of that end), and the task takes them from the other with an injected recvmsg(MSG_CMSG_CLOEXEC).
 * The task's own fd limit (RLIMIT_NOFILE) and security module decide as for any receive, and the
 * fds land close-on-exec at its lowest free numbers. Used for files in flight at checkpoint, for
 * the image file lent to a restored process, and for the file of a private socket name.
 */
import type { Tracee } from './contract';
import { CptError } from './errors';
import { decodeStruct, encodeStruct, sizeOfStruct } from './image/cstruct';
import * as linux from './linux';

/** Room for the control message of the most fds one message carries (SCM_MAX_FD), and its header. */
const CONTROL_ROOM = 1280;
const HDR = sizeOfStruct(linux.Msghdr);
const IOV = sizeOfStruct(linux.Iovec);

/** What one receive inside the task brought: its msg_flags (MSG_CTRUNC: fds did not fit) and the fds it installed. */
export interface FdsReceived {
  flags: number;
  fds: number[];
}

/**
 * Runs `use` with `give(fds)`, which sends cptrst's `fds` in one message and has the task receive
 * it; the socketpair is closed inside the task afterwards. Errors name `object`, and the fds as `what`.
 */
export function withFdChannel<T>(tracee: Tracee, object: string, what: string, use: (give: (fds: readonly number[]) => FdsReceived) => T): T {
  const t = tracee;
  const pairAt = t.stage(Buffer.alloc(8));
  t.syscallOk(linux.syscallNumber('socketpair'), [linux.AF_UNIX, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0, pairAt], `socketpair for ${what}`);
  const pair = t.readMemory(pairAt, 8);
  const [mineEnd, theirs] = [pair.readInt32LE(0), pair.readInt32LE(4)];
  try {
    return linux.withFdCopy(t.pid, mineEnd, (mine) =>
      use((fds) => {
        linux.sendRights(mine, fds);
        return receive(t, theirs, object, what);
      }),
    );
  } finally {
    t.syscalls([mineEnd, theirs].map((fd) => ({ nr: linux.SYS.close, args: [fd] })));
  }
}

/** recvmsg(MSG_CMSG_CLOEXEC) of one byte inside the task. */
function receive(t: Tracee, fd: number, object: string, what: string): FdsReceived {
  const ctlAt = HDR + IOV + 8;
  const size = ctlAt + CONTROL_ROOM;
  const base = t.stage(Buffer.alloc(size));
  const buf = Buffer.alloc(size);
  encodeStruct(linux.Msghdr, { name: 0n, namelen: 0, iov: base + BigInt(HDR), iovlen: 1n, control: base + BigInt(ctlAt), controllen: BigInt(CONTROL_ROOM), flags: 0 }, buf, 0);
  encodeStruct(linux.Iovec, { base: base + BigInt(HDR + IOV), len: 1n }, buf, HDR);
  t.writeMemory(base, buf);
  const r = t.syscall(linux.syscallNumber('recvmsg'), [fd, base, linux.MSG.DONTWAIT | linux.MSG.CMSG_CLOEXEC]);
  if (r < 0n) throw new CptError(linux.errnoName(Number(-r)), `recvmsg of ${what}, inside the process: ${linux.errnoName(Number(-r))}`, { pid: t.pid, object });
  const back = t.readMemory(base, size);
  const h = decodeStruct(linux.Msghdr, back, 0);
  return { flags: h.flags, fds: linux.parseControl(back.subarray(ctlAt), Math.min(Number(h.controllen), CONTROL_ROOM)).fds };
}
