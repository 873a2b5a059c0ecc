/**
 * Numbers that are part of the image format. Changing any of them changes the format:
 * see snapshot.ts for the version rule.
 */

/** Bumped for changes old readers cannot read. A reader refuses any other major. */
export const FORMAT_MAJOR = 1;
/** Bumped for compatible changes (new object types, fields appended with `since`). */
export const FORMAT_MINOR = 4;

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
  MM = 20,
  VMA = 21,
  PAGES = 22,
  REGS = 30,
  XSTATE = 31,
  DEBUGREGS = 32,
  FS = 40,
  FILE = 41,
  FD = 42,
  FILE_DATA = 43,
}

/**
 * Bits of the object header's `flags` (u16).
 * - OPTIONAL: the object may be skipped by a reader that does not know its type. A restart meets
 *   an unknown type without it as an image it cannot restore faithfully and refuses it; with it,
 *   the object only adds something a restore can do without (e.g. a hint), and is skipped.
 * The other bits are reserved: written 0, ignored by readers.
 */
export const ObjectFlag = Object.freeze({ OPTIONAL: 0x0001 } as const);

/** What follows an object's header: just the record, or the record then a page-aligned payload. */
export enum ContentKind {
  RECORD = 0,
  RECORD_WITH_PAGES = 1,
}

/** The head is always the first object and has tag 1 (and ptag 0, "no parent"). */
export const HEAD_TAG = 1;

/** Default bound on one object (header + body + padding + payload): 64 MiB of pages plus slack. */
export const DEFAULT_MAX_OBJECT_BYTES = 64 * 1024 * 1024 + 65536;

export const MIN_PAGE_SIZE = 4096;
export const MAX_PAGE_SIZE = 65536;
