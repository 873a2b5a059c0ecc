/**
 * Numbers that are part of the image format. Changing any of them changes the format:
 * see snapshot.ts for the version rule.
 */

/** Bumped for changes old readers cannot read. A reader refuses any other major. */
export const FORMAT_MAJOR = 1;
/** Bumped for compatible changes (new object types, fields appended with `since`). */
export const FORMAT_MINOR = 8;

/** First 8 bytes of every image; followed by major u16, minor u16, reserved u32 (the preamble). */
export const MAGIC = Buffer.from('CPTRST\0\x01', 'latin1');
export const PREAMBLE_SIZE = 16;

/**
 * Object type numbers of cptrst's own packages (u16 in the object header; 1-999 are reserved for
 * them). Subsystems own the layouts of their types. A third party's module declares its own
 * numbers, from 1000 up, with registerObjectType (object-types.ts) and never edits this list.
 */
export enum ObjectType {
  HEAD = 1,
  TERMINATOR = 2,
  TASK = 10,
  TASK_CREDS = 11,
  TASK_SIGNALS = 12,
  SIGHAND = 13,
  SIGPENDING = 14,
  ITIMERS = 15,
  RLIMITS = 16,
  /** CPU affinity, oom_score_adj, parent-death signal, timer slack, child subreaper. */
  TASK_MISC = 17,
  /** One per cgroup hierarchy the process is in. */
  TASK_CGROUP = 18,
  MM = 20,
  VMA = 21,
  PAGES = 22,
  /** A mapped file that was deleted: its identity, and (in the first area of the inode) its attributes (under VMA). */
  VMA_DELETED_FILE = 23,
  /** A data run of a deleted mapped file (under VMA). */
  VMA_DELETED_DATA = 24,
  /** An aio context's ring (io_setup): its size, head and tail, and the events completed and not read (under VMA). */
  VMA_AIO_RING = 25,
  /** An image's own identity (a random id), written in images that may be the parent of an incremental one (under HEAD). */
  IMAGE_ID = 50,
  /** The parent of an incremental image: its path, id and size (under HEAD). */
  IMAGE_PARENT = 51,
  /** How a process's pages were found changed (write tracking, hashes), its identity and its tracker (under TASK). */
  TASK_TRACKING = 52,
  /** The 64-bit hash of every page an area has, in this image or its parents (under VMA). */
  VMA_HASHES = 53,
  /** The pages of an area that are the parent image's (under VMA). */
  VMA_PARENT_PAGES = 54,
  /** Pages of an area in several runs, one payload (under VMA): the scattered pages of an incremental image. */
  VMA_PAGE_RUNS = 55,
  REGS = 30,
  XSTATE = 31,
  DEBUGREGS = 32,
  FS = 40,
  FILE = 41,
  FD = 42,
  FILE_DATA = 43,
  /** A thread of the task other than its main thread (its tid, name, mask, ...; children: its registers, ...). */
  THREAD = 120,
  /** A thread's seccomp mode and its filters, oldest first (under TASK for the main thread, else under its THREAD). */
  SECCOMP = 121,
  /** One seccomp filter program of a process, written once however many of its threads hold it (under TASK). */
  SECCOMP_FILTER = 122,
  /** Event files: the records of the eventfd, epoll, signalfd, timerfd and inotify kinds, under their FILE. */
  EVENTFD = 140,
  EPOLL_TARGET = 141,
  SIGNALFD = 142,
  TIMERFD = 143,
  INOTIFY_WATCH = 144,
  /** A pidfd's target and flags (under FILE). */
  PIDFD = 145,
  /** A fanotify group's fanotify_init arguments (under FILE). */
  FANOTIFY_GROUP = 146,
  /** One mark of a fanotify group: on an inode, a mount or a filesystem, its masks and flags (under FILE). */
  FANOTIFY_MARK = 147,
  /** A pipe or FIFO: its identity, capacity and buffered data (under FILE). */
  PIPE = 170,
  /** A unix socket: type, state, name, peer, options (under FILE). */
  UNIX_SOCKET = 171,
  /** One message or run of bytes queued on a unix socket (under FILE). */
  SOCKET_QUEUE = 172,
  /** A memfd open as an fd: name, size, seals, mode (under FILE). */
  MEMFD = 173,
  /** A data run of a memfd (under FILE). */
  MEMFD_DATA = 174,
  /** A mapped memfd: MEMFD's fields, under VMA. */
  VMA_MEMFD = 175,
  /** A data run of a mapped memfd (under VMA). */
  VMA_MEMFD_DATA = 176,
  /** Under a FILE that no fd of the task holds: the task makes the object for its descendants (carried). */
  FILE_CARRY = 177,
  /** The control data of a message queued on a unix socket: descriptors in flight (SCM_RIGHTS) and credentials (under FILE). */
  UNIX_SCM = 178,
  /** Private anonymous memory kept copy-on-write from the parent at restart (under VMA). */
  VMA_KEPT = 100,
  /** The guard regions of a memory area (madvise MADV_GUARD_INSTALL): runs of pages (under VMA). */
  VMA_GUARDS = 480,
  /** A file of the /proc directory of a process of the tree, opened again once every process exists (under FILE). */
  PROC_FILE = 101,
  /** A deleted file open in several processes of the tree: the common ancestor that makes it (under FILE). */
  GHOST_SHARED = 102,
  /** An area of shared anonymous memory made once for the processes of the tree that share it (under VMA). */
  VMA_SHARED_ANON = 103,
  /** A data run of such memory, under the area that makes it (under VMA). */
  VMA_SHARED_ANON_DATA = 104,
  /** A terminal open as an fd: a pty master or slave, /dev/tty, or the caller's terminal (under FILE). */
  TTY = 190,
  /** A process's controlling terminal and its terminal's foreground group (under TASK). */
  TASK_CTTY = 191,
  /** The file of shared anonymous memory open as an fd ("/dev/zero (deleted)"): MEMFD's fields, under FILE. */
  SHMEM_FILE = 192,
  /** A data run of that file (under FILE). */
  SHMEM_FILE_DATA = 193,
  /** An area of such a file, where the process holds it as an fd too or maps it privately: MEMFD's fields, under VMA. */
  VMA_SHMEM_FILE = 194,
  /** A data run of that file (under VMA). */
  VMA_SHMEM_FILE_DATA = 195,
  /** A POSIX timer (timer_create). */
  POSIX_TIMER = 220,
  /** A file lock or lease held through an fd. */
  FILE_LOCK = 221,
  /** The signal-driven I/O owner and signal of an open file description (F_SETOWN, F_SETSIG). */
  FD_OWNER = 222,
  /** The SysV shared memory segment of an attached area (its contents are the area's pages). */
  SYSV_SHM = 223,
  /** A SysV semaphore set used by the process tree (under its first TASK). */
  SYSV_SEM = 224,
  /** A SysV message queue used by the process tree (under its first TASK); its messages follow. */
  SYSV_MSG = 225,
  /** One message of a SysV message queue, in queue order (under SYSV_MSG). */
  SYSV_MSG_TEXT = 226,
  /**
   * Top level, once, after every other record and before the objects it lists: only page
   * objects follow it, to the terminator (a lazy restart lets the processes run there). Since 1.6.
   */
  PAGES_FOLLOW = 60,
}

/**
 * Bits of the object header's `flags` (u16).
 * - OPTIONAL: the object may be skipped by a reader that does not know its type. A restart meets
 *   an unknown type without it as an image it cannot restore faithfully and refuses it; with it,
 *   the object only adds something a restore can do without (e.g. a hint), and is skipped.
 * The other bits are reserved: written 0, ignored by readers.
 */
export const ObjectFlag = Object.freeze({ OPTIONAL: 0x0001 } as const);

/**
 * What follows an object's header: just the record, the record then a page-aligned payload, or
 * (format 1.5) the record then a compressed page payload (compress.ts; readers before 1.5 refuse
 * it as an unknown content kind), or (1.7) the record then a page-aligned payload whose checksum
 * is XXH3's (framing.ts, payloadSum; readers before 1.7 refuse it as an unknown content kind).
 * A writer takes RECORD_WITH_HASHED_PAGES once it has written HASH_PAGES_AFTER bytes of payloads:
 * readers read both.
 */
export enum ContentKind {
  RECORD = 0,
  RECORD_WITH_PAGES = 1,
  RECORD_WITH_COMPRESSED_PAGES = 2,
  RECORD_WITH_HASHED_PAGES = 3,
}

/** The head is always the first object and has tag 1 (and ptag 0, "no parent"). */
export const HEAD_TAG = 1;

/** Default bound on one object (header + body + padding + payload): 64 MiB of pages plus slack. */
export const DEFAULT_MAX_OBJECT_BYTES = 64 * 1024 * 1024 + 65536;

export const MIN_PAGE_SIZE = 4096;
export const MAX_PAGE_SIZE = 65536;
