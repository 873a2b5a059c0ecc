/** The workloads in test/workloads and how each is built and run. */
import * as fs from 'fs';

type WorkloadKind = 'c' | 'bash' | 'python' | 'node';

export interface WorkloadSpec {
  /** Name used with startWorkload() (the C binary's name, or the script's file name). */
  name: string;
  kind: WorkloadKind;
  /** Source file in test/workloads. */
  source: string;
  /** Extra gcc flags (C only). */
  cflags?: string[];
  /** One line on what it checks. */
  checks: string;
}

export const WORKLOADS: readonly WorkloadSpec[] = [
  { name: 'static', kind: 'c', source: 'static.c', cflags: ['-static'], checks: 'statically linked: counters with closed-form invariants, .data/.bss/stack patterns' },
  { name: 'dynamic', kind: 'c', source: 'dynamic.c', checks: 'libc malloc (10000-node list with checksums, more malloc after), vDSO CLOCK_MONOTONIC never backwards and agreeing with the syscall, [vdso] where AT_SYSINFO_EHDR says, the main thread\'s robust futex list and clear_child_tid' },
  { name: 'loop.sh', kind: 'bash', source: 'loop.sh', checks: 'bash with builtins only: integers, indexed and associative arrays, $BASHPID' },
  { name: 'loop.py', kind: 'python', source: 'loop.py', checks: 'python3: dicts, lists, sets, a suspended generator, time.sleep, time.monotonic' },
  // No -mavx512f: the AVX-512 code is hand-written assembly chosen at run time, and the flag would
  // let gcc use AVX-512 anywhere in the C code, so the binary could not even run its "skip" path.
  { name: 'cpuregs', kind: 'c', source: 'cpuregs.c', checks: 'rbx rbp rsi rdi rdx r8-r15 rax rcx rsp DF mid-loop, x87 stack/cw/sw, MXCSR, xmm/ymm/zmm0-31, k0-k7, fs_base (%fs:0, ARCH_GET_FS, __thread), gs_base (ARCH_SET_GS, %gs:0), selectors' },
  { name: 'debugregs', kind: 'c', source: 'debugregs.c', checks: 'DR0/DR7 write watchpoint set by a departed debugger: registers (read by ptrace) and, where the machine delivers them, the SIGTRAP (TRAP_HWBKPT)' },
  { name: 'memory', kind: 'c', source: 'memory.c', checks: 'private anon with holes, sbrk/brk and malloc, stack, MAP_PRIVATE file with modified pages, shared anon, PROT_NONE guard and read-only faults, vDSO' },
  { name: 'task', kind: 'c', source: 'task.c', checks: 'sid/pgrp, uids/gids/groups/caps/dumpable (root, --nobody or --as UID:GID), comm, umask, cwd, rlimits, personality, nice' },
  { name: 'settings', kind: 'c', source: 'settings.c', checks: 'CPU affinity, oom_score_adj, parent-death signal, timer slack, child subreaper, dumpable, I/O priority, core dump filter, machine-check kill policy, login uid, speculation mitigations' },
  { name: 'itimers', kind: 'c', source: 'itimers.c', checks: 'ITIMER_REAL checkpointed between expiry and dequeue, ITIMER_VIRTUAL and ITIMER_PROF: each keeps firing at its interval' },
  { name: 'signals', kind: 'c', source: 'signals.c', checks: 'blocked mask, sigactions incl. restorer, pending (shared and per-thread, queued RT values, siginfo), sigaltstack, itimers; delivery order after unblocking' },
  { name: 'files', kind: 'c', source: 'files.c', checks: 'fd numbers, flags, CLOEXEC, offsets, shared and separate open file descriptions, O_APPEND, O_RDONLY, /dev/null, an unlinked open file, a symlink held itself (O_PATH|O_NOFOLLOW)' },
  { name: 'nsfd', kind: 'c', source: 'nsfd.c', checks: 'fds of its own namespace files (net, pid_for_children, uts O_PATH): the same namespaces, flags and close-on-exec; setns into its own net namespace' },
  { name: 'ghostmap', kind: 'c', source: 'ghostmap.c', checks: 'files deleted while mapped: shared mappings and an fd of one inode see each other\'s writes, a private mapping keeps its copied page and the file\'s other page' },
  { name: 'ghost', kind: 'c', source: 'ghost.c', checks: 'files deleted while open: contents, flags, offsets, owner, one inode behind two descriptions, holes (SEEK_DATA/SEEK_HOLE) of a sparse one' },
  { name: 'fdstate', kind: 'c', source: 'fdstate.c', checks: 'fd state a checkpoint must refuse: flock/POSIX/OFD locks, a lease, F_SETOWN, F_SETSIG (still there after the refusal)' },
  { name: 'syscalls', kind: 'c', source: 'syscalls.c', checks: 'results of nanosleep/select/poll/futex/pause interrupted by C/R: only legitimate outcomes' },
  { name: 'pidhold', kind: 'c', source: 'pidhold.c', checks: 'holds a PID until triggered' },
  { name: 'guards', kind: 'c', source: 'guards.c', checks: 'guard regions (MADV_GUARD_INSTALL) in private anonymous, wipe-on-fork, private and shared file areas, a flag left by removed guards, a big area: every guard faults, every other page holds its pattern, VmFlags as before, a forked child\'s guards' },
  { name: 'deldir', kind: 'c', source: 'deldir.c', checks: 'a working directory and an fd of it, removed (rmdir): /proc/self/cwd as before, one inode, no links, mode and mtime; nothing can be made in it, getcwd fails, no entry left' },
  { name: 'mmstate', kind: 'c', source: 'mmstate.c', checks: 'droppable, mlock/mlock2 onfault, madvise sequential/random/mergeable and mseal areas (VmFlags and data); THP disabled, membarrier registrations, mlockall(MCL_FUTURE)' },
  { name: 'mapchurn', kind: 'c', source: 'mapchurn.c', checks: 'areas mapped, protected, madvised (wipeonfork, dontdump, dontneed) and unmapped without pause: each slot\'s range, protection, VmFlags, Rss and data as its step count says; "signals": an area mapped and a VmFlag set on a signal' },
  { name: 'pagesfds', kind: 'c', source: 'pagesfds.c', checks: 'N MiB of private memory, every word, and an fd table with gaps (0, 1, 2, 5, 9): a descriptor the restart left behind shows' },
  { name: 'survive', kind: 'c', source: 'survive.c', checks: 'cptrst killed or interrupted mid-checkpoint: callee-saved registers, xmm8/ymm8, xmm15 across blocking calls (clock_nanosleep, ppoll) at every call, blocked mask, sigaltstack, N MiB of patterned memory' },
  { name: 'eventfd', kind: 'c', source: 'eventfd.c', checks: 'eventfd counters and flags (semaphore, non-blocking, close-on-exec, a shared description, a counter above 2^32)' },
  { name: 'fanotify', kind: 'c', source: 'fanotify.c', checks: 'fanotify groups with no marks (flags, event flags, close-on-exec, a shared description; events reported through each once marked again)' },
  { name: 'secretmem', kind: 'c', source: 'secretmem.c', checks: 'memfd_secret fds not sized yet (flags, close-on-exec, size, filesystem, a shared description; sized, mapped and used after) for the example plugin examples/plugin-secretmem' },
  { name: 'epoll', kind: 'c', source: 'epoll.c', checks: 'epoll targets (events incl. EPOLLET/ONESHOT/EXCLUSIVE, data), numbers closed or reused since registration (kcmp KCMP_EPOLL_TFD), a nested epoll, readiness' },
  { name: 'signalfd', kind: 'c', source: 'signalfd.c', checks: 'signalfd masks and flags; the signals it reads (queued RT values) still pending' },
  { name: 'timerfd', kind: 'c', source: 'timerfd.c', checks: 'timerfd clocks, time left, intervals, TFD_TIMER_ABSTIME deadline, unread expirations, a periodic timer expired unread still armed' },
  { name: 'inotifydel', kind: 'c', source: 'inotifydel.c', checks: 'an inotify watch on a file deleted while held open: no event queued, IN_MODIFY, IN_CLOSE_WRITE, IN_DELETE_SELF and IN_IGNORED on its descriptor, the file\'s contents' },
  { name: 'fanotifymarks', kind: 'c', source: 'fanotifymarks.c', checks: 'a fanotify group with inode marks (masks, FAN_EVENT_ON_CHILD, ignore masks old and new style, surviving modification): fdinfo, nothing queued, the events after restart and the ignored ones not' },
  { name: 'aio', kind: 'c', source: 'aio.c', checks: 'aio contexts: ring nr, head and tail (wrapped), a ring moved by mremap, completed events not read (data, obj, res), new requests after restart (a poll completing later, writes)' },
  { name: 'inotify', kind: 'c', source: 'inotify.c', checks: 'inotify watches: descriptors (a gap), masks, paths (a hard link), events after restart, the next descriptor' },
  { name: 'threadchurn', kind: 'c', source: 'threadchurn.c', cflags: ['-pthread'], checks: 'threads made and ended all the time, four workers with their own names and masks on a mutex, a condition variable waiter: all carry on, untraced, after a refused checkpoint' },
  { name: 'asyncio_loop.py', kind: 'python', source: 'asyncio_loop.py', checks: 'python3 asyncio: the event loop (epoll, its self-pipe socketpair), tasks on a Queue, streams over a socketpair, a ticker' },
  { name: 'eventloop.js', kind: 'node', source: 'eventloop.js', checks: 'Node.js: the event loop (epoll, eventfds, pipes, inotify through fs.watch), V8 helper threads, a worker_threads Worker and a child process over pipes, each with its own state, timers, the heap' },
  { name: 'threads.py', kind: 'python', source: 'threads.py', checks: 'python3 with N threads (default 100) on a condition variable: each alive and still woken, its name, thread-local value and comm its own, none traced' },
  { name: 'pthreads', kind: 'c', source: 'pthreads.c', cflags: ['-pthread'], checks: 'ten threads each with its own state: registers and xmm in an asm loop, names, masks, __thread values, rseq; a condition variable, clock_nanosleep and a barrier across C/R; sigaltstack, SCHED_BATCH/IDLE, nice, affinity, timer slack per thread; a signal pending for one thread and one for the process (delivered once); a robust mutex (EOWNERDEAD), pthread_join; with --creds one thread with its own uids' },
  { name: 'seccomp', kind: 'c', source: 'seccomp.c', cflags: ['-pthread'], checks: 'threads under seccomp filters of their own (a shared one with SECCOMP_FILTER_FLAG_LOG, one more each): forbidden calls fail with each filter\'s errno, others work, Seccomp/Seccomp_filters; --tsync: a TSYNC filter after restart reaches every thread; --strict: a thread in strict mode' },
  { name: 'threadtimer', kind: 'c', source: 'threadtimer.c', cflags: ['-pthread'], checks: 'POSIX timers aimed at another thread: a periodic timer signalling it alone (SIGEV_THREAD_ID), a timer on its CPU-time clock' },
  { name: 'ptimers', kind: 'c', source: 'ptimers.c', checks: 'POSIX timers: ids with holes, clocks (monotonic, realtime, boottime, process and thread CPU), notifications (signal with value, thread, none), intervals, time left, signals queued at checkpoint delivered once' },
  { name: 'locks', kind: 'c', source: 'locks.c', checks: 'flock (exclusive through a dup, shared), POSIX record locks (write and read ranges, to EOF) seen from two descriptions, OFD locks, a read lease, F_SETOWN_EX and F_SETSIG: probed from other descriptions by a child after the trigger' },
  { name: 'leasebreak', kind: 'c', source: 'leasebreak.c', checks: 'leases being broken (read and write leases, toward read and toward unlocked, one break signal still pending): F_GETLEASE, the conflicts of the lease held, F_GETOWN/F_GETSIG, exactly one break signal each, the break completing once let go' },
  { name: 'sysvshm', kind: 'c', source: 'sysvshm.c', checks: 'SysV shared memory: a private segment attached twice (read-write and read-only) and a keyed one removed while attached: ids, keys, sizes, modes, owner, attachments, contents, sharing between the two areas, the read-only fault' },
  { name: 'semundo', kind: 'c', source: 'semundo.c', checks: 'a SysV semaphore set changed by semop (with `undo`: with SEM_UNDO, which a checkpoint refuses): its values' },
  { name: 'sysvipc', kind: 'c', source: 'sysvipc.c', checks: 'SysV semaphore sets (keyed and private: values, modes) and message queues (a keyed one with a lowered limit and four messages of three types, one of 3000 bytes; an empty private one): ids, keys, modes, owner, counts, the messages taken by type in order' },
  { name: 'pidfds', kind: 'c', source: 'pidfds.c', cflags: ['-pthread'], checks: 'pidfds of the process, of a child (PIDFD_NONBLOCK, dup), of a thread (PIDFD_THREAD), and dead ones (two of one process that exited 7, one of a process killed by SIGTERM): targets, flags, sharing, inodes, exit statuses (PIDFD_GET_INFO), a signal to the child and its exit waited for through its pidfd' },
  { name: 'pipes', kind: 'c', source: 'pipes.c', checks: 'pipes with both ends in the process: data in flight in order, capacity, O_NONBLOCK, packet mode (O_DIRECT) boundaries, dup\'ed and separate descriptions of one end, a pipe with its write or read end closed' },
  { name: 'fifos', kind: 'c', source: 'fifos.c', checks: 'FIFOs opened for reading, writing and both: data in flight, flags, capacity, the same inode as the name, a write-only one read later by name, an unlinked one' },
  { name: 'memfds', kind: 'c', source: 'memfds.c', checks: 'memfds as fds and mappings (shared, private, mapping only): names, sizes, contents with holes, modes, seals, offsets, one inode behind fds and mappings, writes seen through the mapping' },
  { name: 'shmemfds', kind: 'c', source: 'shmemfds.c', checks: 'the file of shared anonymous memory opened through map_files: two descriptions, grown beyond the area, mapped again privately (a copied page) and shared at an offset, one unmapped and cut to a few bytes; one inode, contents, flags, offsets, writes seen where they should be' },
  { name: 'sockets', kind: 'c', source: 'sockets.c', checks: 'unix sockets: stream, datagram and seqpacket socketpairs with queued data both ways (boundaries, credentials), shutdown, SO_PASSCRED/SNDBUF/PEEK_OFF, a listener by path, an abstract name, an unlinked name, an unbound socket' },
  { name: 'socknames', kind: 'c', source: 'socknames.c', checks: 'unix socket names that no longer lead to the socket (replaced by a regular file or a FIFO, relative to a directory left, in a removed directory): getsockname, peers, data both ways, the directory unchanged' },
  { name: 'incrwrite', kind: 'c', source: 'incrwrite.c', cflags: ['-pthread'], checks: 'rewrites about 1% of its pages at each step (a known set), drops some (MADV_DONTNEED), maps an area again at the same place, and a second thread rewrites another area: every page holds what its generation says (incremental checkpoints)' },
  { name: 'incrlive', kind: 'c', source: 'incrlive.c', checks: 'writes its memory without pause (a hot page per step, then a counter): every page holds what the counter says, i.e. the image is of one instant (incremental checkpoints of a running process)' },
  { name: 'precopychurn', kind: 'c', source: 'precopychurn.c', checks: 'writes, MADV_DONTNEEDs 2 MiB blocks of, reads back and (area B) unmaps, maps again and mremaps its memory, some thousand changes a second, checking each page against a table of what it holds: the image holds one instant (checkpoint --pre-copy)' },
  { name: 'cowwrite', kind: 'c', source: 'cowwrite.c', checks: 'writes its private and shared memory without pause, each step checking what the step one round earlier wrote: the image holds one instant (a checkpoint that lets it run while a copy-on-write snapshot is written)' },
  { name: 'tree', kind: 'c', source: 'tree.c', checks: 'a tree of three levels: pids, parents, groups (one led by a sibling, one whose leader is gone), sessions, zombies (exit code, signal), a stopped child, a file description shared by all, copy-on-write memory: each member checks itself, the parents reap and check' },
  { name: 'tree.sh', kind: 'bash', source: 'tree.sh', checks: 'bash with job control: background jobs in their own process groups, a subshell in a subshell; each member checks its ids and arrays, the parents wait and check statuses' },
  { name: 'pipeline.sh', kind: 'bash', source: 'pipeline.sh', checks: 'a bash pipeline of three processes (producer | relay | consumer) counting lines: none lost, repeated or out of order across the pipes, the data in flight included; the consumer checks the count at the end' },
  { name: 'sklisten', kind: 'c', source: 'sklisten.c', checks: 'unix connections made through listeners: both ends named, a listener whose name is unlinked, a connection waiting in a backlog, a named datagram socketpair, a parent and its child connected through a closed and unlinked listener, the child\'s connections waiting in the parent\'s backlogs: names, peers, SO_PEERCRED on both ends, the data that waited and new data both ways, the backlog accepted after restart' },
  { name: 'sockpair', kind: 'c', source: 'sockpair.c', checks: 'a parent and its child on two unix socketpairs (one end each): numbered seqpacket messages and answers in flight both ways, stream bytes waiting both ways; every message once and in order, the counts, the child\'s status' },
  { name: 'scm', kind: 'c', source: 'scm.c', checks: 'a parent and its child: files in flight over a datagram socketpair (both ends of a pipe, a regular file, a memfd, a pipe end the parent holds too, a socket with its own queue, one message with two fds), each closed by the sender, with its credentials: boundaries, credentials, each file\'s kind, mode, offset, contents and identity, descriptions shared, no fd left behind' },
  { name: 'memfdshare', kind: 'c', source: 'memfdshare.c', checks: 'a memfd held by a parent and its child through different descriptions: a write by the parent seen by the child (one memfd), contents with a hole, each description\'s offset and flags, the name' },
  { name: 'tree.py', kind: 'python', source: 'tree.py', checks: 'python3 forking three levels: a new group, a new session, zombies (exit code, SIGKILL); each member checks its ids, a dict and a live generator, the parents reap and check statuses' },
  { name: 'cowwritetree', kind: 'c', source: 'cowwritetree.c', checks: 'a parent and two children writing their own memory and memory shared copy-on-write with the parent without pause, each step checking what the step one round earlier wrote: the image holds one instant for every process (a checkpoint that lets a tree run while its copy-on-write snapshots are written)' },
  { name: 'incrtree', kind: 'c', source: 'incrtree.c', checks: 'a parent and two children rewriting a known set of their own pages and of pages shared copy-on-write with the parent at each step: every page of every member holds what its generation says (incremental checkpoints of a tree)' },
  { name: 'cowtree', kind: 'c', source: 'cowtree.c', checks: 'private memory shared copy-on-write by a tree of three levels, each member having written or discarded some pages of its own: every page holds what it should, and the pages nobody wrote since the forks are still the same page frames as the parent\'s' },
  { name: 'jobstop', kind: 'c', source: 'jobstop.c', checks: 'a job (a process group under the root) whose three children are stopped by SIGTSTP, SIGTTIN and SIGTTOU: each is stopped, its parent\'s waitpid(WUNTRACED) reports its own signal, WCONTINUED after SIGCONT, then it checks its parent and group' },
  { name: 'procfiles', kind: 'c', source: 'procfiles.c', checks: 'files of /proc directories of the tree held open (its own maps, its child\'s stat, status and cmdline, the child its parent\'s status): path, flags, close-on-exec, offset, the inode its path names now, contents naming the right process, a shared offset' },
  { name: 'ghosttree', kind: 'c', source: 'ghosttree.c', checks: 'a deleted file open in three processes of a tree through three descriptions: flags, offsets, nlink 0, contents, and a write through one description read through the two others' },
  { name: 'shmtree', kind: 'c', source: 'shmtree.c', checks: 'shared anonymous memory one memory in a tree beyond a child keeping its parent\'s mapping: parts the parent unmapped after the fork, siblings sharing what the parent no longer maps, a part mapped twice through map_files; writes through one mapping read through the others' },
  { name: 'orphans', kind: 'c', source: 'orphans.c', checks: 'orphans of two sessions whose leaders exited, adopted by the root (a child subreaper), one with a child of its own: each checks its parent, session and group, the parents reap and check' },
  { name: 'ptys', kind: 'c', source: 'ptys.c', checks: 'ptys held by the tree: master and slave of the controlling terminal (index, termios, window size, packet mode, lock, exclusive mode, lines, an end-of-file line and an unfinished line buffered for the slave, echo and output buffered for the master), a child\'s group in the foreground, a child in its own session on a second pty it opened by path' },
  { name: 'ptycarry', kind: 'c', source: 'ptycarry.c', checks: 'a pty whose master only a child holds (the parent, on its slave as controlling terminal, closed it): index, the child\'s two master fds one description, controlling terminal, foreground group, termios, window size, a line buffered each way, lines exchanged after the restart' },
  { name: 'ptyhup', kind: 'c', source: 'ptyhup.c', checks: 'a pty slave whose master was closed (hung up): its name and device, two descriptions and a dup, reads 0, writes and terminal calls EIO, POLLHUP, no controlling terminal' },
  { name: 'shelljob', kind: 'c', source: 'shelljob.c', checks: 'a job of a shell on a terminal outside the tree (support/ptyrun.py): fd 0 and /dev/tty on its controlling terminal, not a session leader, in the foreground as it was' },
  { name: 'treeshare', kind: 'c', source: 'treeshare.c', checks: 'a parent and a child sharing what a tree checkpoint refuses (vfork, CLONE_VM/FILES/FS, shared anonymous memory, a tracer in the tree, a pid namespace): the sharing still works after the refusal' },
  { name: 'lazyfill', kind: 'c', source: 'lazyfill.c', checks: 'private memory with a pattern per page and untouched pages, met while a lazy restart fills it: pages read and written by the kernel (pipes), and once <trigger>.go exists pages dropped (MADV_DONTNEED), moved away and back (mremap), checked by forked children' },
  { name: 'uffd', kind: 'c', source: 'uffd.c', checks: 'a child whose memory is registered with a userfaultfd its parent holds (sent over SCM_RIGHTS, taken by pidfd_getfd, registered later) or it holds itself (in its fd table, in flight): its pattern and registration unchanged, no event read by the holder' },
  { name: 'protmem', kind: 'c', source: 'protmem.c', checks: 'large read-only, PROT_NONE and holed areas full of data: every byte and the protections' },
];

export const SYSCALL_VARIANTS = ['nanosleep', 'select', 'poll', 'futex', 'pause'] as const;

export function workloadSpec(name: string): WorkloadSpec {
  const spec = WORKLOADS.find((w) => w.name === name);
  if (spec === undefined) throw new Error(`unknown workload '${name}' (known: ${WORKLOADS.map((w) => w.name).join(', ')})`);
  return spec;
}

/** The name a workload prints in its PASS/FAIL line for these arguments (after the trigger). */
export function verdictName(name: string, args: readonly string[] = []): string {
  if (name === 'syscalls') return `syscalls-${args[0] ?? '?'}`;
  if (name === 'treeshare') return `treeshare-${args[0] ?? '?'}`;
  if (name === 'task' && args.includes('--nobody')) return 'task-nobody';
  if (name === 'task' && args.includes('--as')) return 'task-user';
  return name;
}

function cpuFlags(): Set<string> {
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    return new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

/**
 * Every line that counts as a pass for this workload on this machine. Exact strings: a few
 * workloads add a note when the machine lacks something they would check.
 */
export function passLines(name: string, args: readonly string[] = []): string[] {
  const v = verdictName(name, args);
  if (name === 'cpuregs') {
    const flags = cpuFlags();
    if (flags.has('avx512f') && flags.has('avx512bw')) return [`PASS ${v}`];
    if (flags.has('avx')) return [`PASS ${v} (no avx512f/bw: zmm16-31, zmm upper halves and k0-k7 not checked)`];
    return [`PASS ${v} (no avx: only xmm0-15 checked)`];
  }
  if (name === 'debugregs') {
    // Some virtual machines (this project's, for one) accept debug registers but never fire them.
    return [`PASS ${v}`, `PASS ${v} (hardware watchpoints do not fire on this machine: DR0/DR7 checked through ptrace only)`];
  }
  if (name === 'incrwrite') return [`PASS ${v} (step 0)`];
  if (name === 'incrlive') return [`PASS ${v} (ran)`, `PASS ${v} (barely ran)`];
  if (name === 'lazyfill') return [`PASS ${v}`, `PASS ${v} (no .go file: the loop did not drop, move or fork)`];
  if (name === 'files') return [`PASS ${v}`, `PASS ${v} (kcmp unavailable: sharing checked through offsets only)`];
  if (name === 'pidfds') return [`PASS ${v}`, `PASS ${v} (no PIDFD_INFO_EXIT)`];
  if (name === 'guards') return [`PASS ${v}`, `PASS ${v} (no guard regions)`];
  if (name === 'secretmem') return [`PASS ${v}`, `PASS ${v} (no memfd_secret)`];
  return [`PASS ${v}`];
}
