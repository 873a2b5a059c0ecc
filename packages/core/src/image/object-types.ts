/**
 * Who owns which object type number. A module declares its numbers here (registerObjectType)
 * instead of editing a closed list in core, and a number claimed twice is an error naming both
 * owners: two modules writing different things under one number would make images nobody can
 * read safely. The owners also go into the layout snapshot.
 *
 * Ranges: 1-999 are cptrst's own packages' (the ObjectType enum); 1000-65535 are for third
 * parties' modules (pick one at random in the range, and keep it for good: it is in the images).
 */
import { CptError } from '../errors';
import { ObjectType } from './types';

/** The first number of the range open to third parties' modules. */
export const THIRD_PARTY_TYPES_FROM = 1000;
export const MAX_OBJECT_TYPE = 0xffff;
/** The owner given to cptrst's own numbers. */
export const CPTRST_OWNER = 'cptrst';

export interface ObjectTypeEntry {
  readonly type: number;
  readonly name: string;
  /** The module that declared it (a package name). */
  readonly owner: string;
}

const registry = new Map<number, ObjectTypeEntry>();

function bug(message: string): CptError {
  return new CptError('EINVAL', message, { object: 'object types' });
}

/** The package of cptrst's own that owns each of its object types. */
const OWN: Record<string, string> = {
  HEAD: '@cptrst/core', TERMINATOR: '@cptrst/core', PAGES_FOLLOW: '@cptrst/core',
  TASK: '@cptrst/task', TASK_CREDS: '@cptrst/task', TASK_SIGNALS: '@cptrst/task', SIGHAND: '@cptrst/task',
  SIGPENDING: '@cptrst/task', ITIMERS: '@cptrst/task', RLIMITS: '@cptrst/task', TASK_MISC: '@cptrst/task', TASK_CGROUP: '@cptrst/task',
  THREAD: '@cptrst/task', SECCOMP: '@cptrst/task', SECCOMP_FILTER: '@cptrst/task',
  MM: '@cptrst/mm', VMA: '@cptrst/mm', PAGES: '@cptrst/mm',
  REGS: '@cptrst/arch-x86', XSTATE: '@cptrst/arch-x86', DEBUGREGS: '@cptrst/arch-x86',
  FS: '@cptrst/files', FILE: '@cptrst/files', FD: '@cptrst/files', FILE_DATA: '@cptrst/files',
  EVENTFD: '@cptrst/files', EPOLL_TARGET: '@cptrst/files', SIGNALFD: '@cptrst/files', TIMERFD: '@cptrst/files',
  INOTIFY_WATCH: '@cptrst/files', PIDFD: '@cptrst/files', FANOTIFY_GROUP: '@cptrst/files', FANOTIFY_MARK: '@cptrst/files',
  POSIX_TIMER: '@cptrst/task', FILE_LOCK: '@cptrst/files', FD_OWNER: '@cptrst/files',
  SYSV_SHM: '@cptrst/mm',
  SYSV_SEM: '@cptrst/task', SYSV_MSG: '@cptrst/task', SYSV_MSG_TEXT: '@cptrst/task',
  PIPE: '@cptrst/files', UNIX_SOCKET: '@cptrst/files', SOCKET_QUEUE: '@cptrst/files', MEMFD: '@cptrst/files', MEMFD_DATA: '@cptrst/files',
  VMA_MEMFD: '@cptrst/mm', VMA_MEMFD_DATA: '@cptrst/mm', VMA_KEPT: '@cptrst/mm',
  VMA_DELETED_FILE: '@cptrst/mm', VMA_DELETED_DATA: '@cptrst/mm', VMA_AIO_RING: '@cptrst/mm',
  IMAGE_ID: '@cptrst/mm', IMAGE_PARENT: '@cptrst/mm', TASK_TRACKING: '@cptrst/mm', VMA_HASHES: '@cptrst/mm', VMA_PARENT_PAGES: '@cptrst/mm', VMA_PAGE_RUNS: '@cptrst/mm',
  TTY: '@cptrst/files', TASK_CTTY: '@cptrst/task',
  FILE_CARRY: '@cptrst/files', UNIX_SCM: '@cptrst/files', PROC_FILE: '@cptrst/files', GHOST_SHARED: '@cptrst/files',
  SHMEM_FILE: '@cptrst/files', SHMEM_FILE_DATA: '@cptrst/files', VMA_SHMEM_FILE: '@cptrst/mm', VMA_SHMEM_FILE_DATA: '@cptrst/mm',
  VMA_SHARED_ANON: '@cptrst/mm', VMA_SHARED_ANON_DATA: '@cptrst/mm',
};

/**
 * Declares an object type number for `owner` (a package name) and returns it. Declaring the same
 * number again with the same name and owner is a no-op (a module loaded twice); anything else
 * already holding the number is an error naming both owners. Numbers below 1000 are cptrst's own.
 */
export function registerObjectType(type: number, name: string, owner: string): number {
  if (!Number.isInteger(type) || type < 1 || type > MAX_OBJECT_TYPE) throw bug(`object type ${type} (${name}, of ${owner}) is not in 1..${MAX_OBJECT_TYPE}`);
  if (!name || !owner) throw bug(`object type ${type} needs a name and an owner`);
  const had = registry.get(type);
  if (had) {
    if (had.name === name && had.owner === owner) return type;
    throw bug(`object type ${type} is declared twice: as ${had.name} by ${had.owner} and as ${name} by ${owner}`);
  }
  if (type < THIRD_PARTY_TYPES_FROM && !ownOwner(owner)) {
    throw bug(`object type ${type} (${name}) of ${owner}: numbers below ${THIRD_PARTY_TYPES_FROM} are reserved for cptrst's own packages; use ${THIRD_PARTY_TYPES_FROM}..${MAX_OBJECT_TYPE}`);
  }
  registry.set(type, { type, name, owner });
  return type;
}

function ownOwner(owner: string): boolean {
  return owner === CPTRST_OWNER || owner.startsWith('@cptrst/');
}

export function objectTypeEntry(type: number): ObjectTypeEntry | undefined {
  return registry.get(type);
}

/** Every declared object type, by number. */
export function objectTypes(): ObjectTypeEntry[] {
  return [...registry.values()].sort((a, b) => a.type - b.type);
}

for (const [name, n] of Object.entries(ObjectType)) {
  if (typeof n === 'number') registerObjectType(n, name, OWN[name] ?? CPTRST_OWNER);
}
