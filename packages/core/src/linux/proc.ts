/**
 * /proc parsers. Each takes a pid (and a tid where the file is per-thread) and returns a typed
 * result; 64-bit addresses and masks are bigint. Failures (process gone, no permission) throw
 * CptError with the errno name as code and the path in the message.
 *
 * Robustness: comm may hold spaces and parentheses (stat is split at the LAST ')'); map paths may
 * hold spaces, a leading space, an escaped newline ("\012") and a " (deleted)" suffix (maps lines
 * are cut at the column the kernel pads to, not at whitespace).
 */
import * as fs from 'fs';
import { CptError } from '../errors';
import { AUXV, PAGEMAP, RLIM_INFINITY } from './constants';
import { errnoMessage, errnoNumber } from './errno';
import { decodeStruct, sizeOfStruct } from '../image/cstruct';
import { AuxvEntry, makeDev } from './structs';

// ---------------------------------------------------------------------------------------------
// helpers

function procError(e: unknown, op: string, path: string, pid?: number): CptError {
  const code = (e as { code?: unknown })?.code;
  const name = typeof code === 'string' ? code : 'EIO';
  const n = errnoNumber(name);
  return new CptError(name, `${op}(${path}): ${n ? errnoMessage(n) : String((e as Error)?.message ?? e)}`, { pid, cause: e });
}

function base(pid: number, tid?: number): string {
  return tid === undefined ? `/proc/${pid}` : `/proc/${pid}/task/${tid}`;
}

/** Reads a whole /proc file as a Buffer (their st_size is 0, so read until EOF). */
function readProcBuffer(path: string, pid?: number): Buffer {
  try {
    return fs.readFileSync(path);
  } catch (e) {
    throw procError(e, 'read', path, pid);
  }
}
/** Reads a whole /proc file as text. */
export function readProcText(path: string, pid?: number): string {
  return readProcBuffer(path, pid).toString('utf8');
}
/**
 * Reads a whole /proc file as text, its first read in libuv's pool: for a file whose read the
 * kernel makes wait (/proc/locks waits for an RCU grace period), so that the caller's work goes
 * on meanwhile. Opened now; one read runs in the background (a promise's later steps would each
 * wait for the busy main thread); what did not fit that read is read once the promise is awaited.
 */
export function readProcTextInBackground(path: string, pid?: number): Promise<string> {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    return Promise.reject(procError(e, 'open', path, pid));
  }
  const first = Buffer.allocUnsafe(BACKGROUND_READ);
  return new Promise<string>((resolve, reject) => {
    fs.read(fd, first, 0, first.length, null, (err, n) => {
      try {
        if (err) throw err;
        const parts = [first.subarray(0, n)];
        for (let m = n; m > 0; ) {
          const more = Buffer.allocUnsafe(BACKGROUND_READ);
          m = fs.readSync(fd, more, 0, more.length, null);
          parts.push(more.subarray(0, m));
        }
        resolve(Buffer.concat(parts).toString('utf8'));
      } catch (e) {
        reject(procError(e, 'read', path, pid));
      } finally {
        fs.closeSync(fd);
      }
    });
  });
}
const BACKGROUND_READ = 64 * 1024;
function readLink(path: string, pid?: number): string {
  try {
    return fs.readlinkSync(path);
  } catch (e) {
    throw procError(e, 'readlink', path, pid);
  }
}
function readDir(path: string, pid?: number): string[] {
  try {
    return fs.readdirSync(path);
  } catch (e) {
    throw procError(e, 'readdir', path, pid);
  }
}
function numericEntries(names: string[]): number[] {
  return names.filter((n) => /^\d+$/.test(n)).map(Number).sort((a, b) => a - b);
}

/** Undoes the kernel's octal escapes in /proc text (seq_file_path escapes "\n" as "\012"). */
function unescapeOctal(s: string): string {
  return s.indexOf('\\') < 0 ? s : s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

// ---------------------------------------------------------------------------------------------
// maps / smaps

export interface MapEntry {
  start: bigint;
  end: bigint;
  prot: { read: boolean; write: boolean; exec: boolean };
  /** 's' (MAP_SHARED) vs 'p' (private). */
  shared: boolean;
  offset: bigint;
  major: number;
  minor: number;
  inode: bigint;
  /** The file path, or '' (anonymous), '[heap]', '[stack]', '[vdso]', '[vvar]', '[vvar_vclock]', '[vsyscall]', '[anon:name]'. */
  path: string;
  /** The path carried a " (deleted)" suffix (stripped from `path`). Shared anonymous memory shows as "/dev/zero (deleted)". */
  deleted: boolean;
}

const MAPS_HEAD = /^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([sp]) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+) /;
/** Column at which the kernel starts the path (seq_setwidth(25 + 6 * sizeof(void *) - 1) + ' '). */
const MAPS_PATH_COLUMN = 73;
const DELETED = ' (deleted)';

/** Parses one line of /proc/PID/maps (or an smaps header line); undefined when it is not one. */
export function parseMapsLine(line: string): MapEntry | undefined {
  const m = MAPS_HEAD.exec(line);
  if (!m) {
    // A line for an unnamed mapping may end right after the inode without the trailing space.
    const m2 = MAPS_HEAD.exec(line + ' ');
    if (!m2 || line.length + 1 !== m2[0].length) return undefined;
    return mapEntryFrom(m2, '');
  }
  const head = m[0].length;
  let path = '';
  if (line.length > head) {
    // The kernel pads the header (which ends in a space) to 72 columns, then writes ' ' + path.
    const startCol = head < MAPS_PATH_COLUMN - 1 ? MAPS_PATH_COLUMN : head + 1;
    path = line.length > startCol ? line.slice(startCol) : line.slice(head).trimStart();
    if (line.slice(head, Math.min(startCol, line.length)).trim() !== '') path = line.slice(head).trimStart();
  }
  return mapEntryFrom(m, path);
}

function mapEntryFrom(m: RegExpExecArray, rawPath: string): MapEntry {
  let path = rawPath;
  let deleted = false;
  if (path.endsWith(DELETED)) {
    deleted = true;
    path = path.slice(0, -DELETED.length);
  }
  return {
    start: BigInt('0x' + m[1]),
    end: BigInt('0x' + m[2]),
    prot: { read: m[3] === 'r', write: m[4] === 'w', exec: m[5] === 'x' },
    shared: m[6] === 's',
    offset: BigInt('0x' + m[7]),
    major: parseInt(m[8], 16),
    minor: parseInt(m[9], 16),
    inode: BigInt(m[10]),
    path: unescapeOctal(path),
    deleted,
  };
}

/** Parses the text of a maps file. */
export function parseMaps(text: string): MapEntry[] {
  const out: MapEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const e = parseMapsLine(line);
    if (!e) throw new CptError('EBADMSG', `maps: cannot parse line ${JSON.stringify(line)}`);
    out.push(e);
  }
  return out;
}

/** /proc/PID/maps. */
export function readMaps(pid: number): MapEntry[] {
  return parseMaps(readProcText(`/proc/${pid}/maps`, pid));
}

export interface SmapsEntry extends MapEntry {
  /** Sizes in kB. */
  size: number;
  rss: number;
  pss: number;
  anonymous: number;
  swap: number;
  /** Two-letter VmFlags ("rd", "wr", "mr", "dc", "dd", "wf", "hg", "nh", "sd", "gu", ...). */
  vmFlags: string[];
  /** Every "Key: value" line of the entry; values in kB for the size fields (THPeligible etc. as numbers). */
  fields: Record<string, number>;
}

/** Parses the text of an smaps file. */
function parseSmaps(text: string): SmapsEntry[] {
  const out: SmapsEntry[] = [];
  let cur: SmapsEntry | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const head = MAPS_HEAD.test(line) || MAPS_HEAD.test(line + ' ') ? parseMapsLine(line) : undefined;
    if (head) {
      cur = { ...head, size: 0, rss: 0, pss: 0, anonymous: 0, swap: 0, vmFlags: [], fields: {} };
      out.push(cur);
      continue;
    }
    if (!cur) throw new CptError('EBADMSG', `smaps: field before the first mapping: ${JSON.stringify(line)}`);
    const colon = line.indexOf(':');
    if (colon < 0) throw new CptError('EBADMSG', `smaps: cannot parse line ${JSON.stringify(line)}`);
    const key = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (key === 'VmFlags') {
      cur.vmFlags = value.split(/\s+/).filter(Boolean);
      continue;
    }
    const num = Number(value.replace(/\s*kB$/, ''));
    if (!Number.isNaN(num)) cur.fields[key] = num;
    switch (key) {
      case 'Size': cur.size = num; break;
      case 'Rss': cur.rss = num; break;
      case 'Pss': cur.pss = num; break;
      case 'Anonymous': cur.anonymous = num; break;
      case 'Swap': cur.swap = num; break;
      default: break;
    }
  }
  return out;
}

/** /proc/PID/smaps. */
export function readSmaps(pid: number): SmapsEntry[] {
  return parseSmaps(readProcText(`/proc/${pid}/smaps`, pid));
}

/** /proc/PID/smaps read in libuv's pool (readProcTextInBackground): the kernel's page walk does not hold up the caller. */
export async function readSmapsInBackground(pid: number): Promise<SmapsEntry[]> {
  return parseSmaps(await readProcTextInBackground(`/proc/${pid}/smaps`, pid));
}

// ---------------------------------------------------------------------------------------------
// stat

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  ttyNr: number;
  tpgid: number;
  flags: number;
  minflt: number;
  cminflt: number;
  majflt: number;
  cmajflt: number;
  utime: number;
  stime: number;
  cutime: number;
  cstime: number;
  priority: number;
  nice: number;
  numThreads: number;
  itrealvalue: number;
  /** Clock ticks after boot. */
  startTime: number;
  vsize: bigint;
  /** Pages. */
  rss: number;
  rsslim: bigint;
  startcode: bigint;
  endcode: bigint;
  startstack: bigint;
  kstkesp: bigint;
  kstkeip: bigint;
  /** Obsolete 64-bit signal masks (use status for these). */
  signal: bigint;
  blocked: bigint;
  sigignore: bigint;
  sigcatch: bigint;
  wchan: bigint;
  nswap: number;
  cnswap: number;
  exitSignal: number;
  processor: number;
  rtPriority: number;
  policy: number;
  delayacctBlkioTicks: number;
  guestTime: number;
  cguestTime: number;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  exitCode: number;
}

/** Parses the text of a stat file (comm is everything between the first '(' and the last ')'). */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new CptError('EBADMSG', `stat: cannot find comm in ${JSON.stringify(text.slice(0, 80))}`);
  const pid = Number(text.slice(0, open));
  const comm = text.slice(open + 2, close);
  const f = text.slice(close + 2).trim().split(' ');
  // f[0] is field 3 (state); field k (1-based, man proc_pid_stat) is f[k - 3].
  if (f.length < 50) throw new CptError('EBADMSG', `stat: only ${f.length + 2} fields`);
  const n = (k: number): number => Number(f[k - 3]);
  const b = (k: number): bigint => BigInt(f[k - 3]);
  return {
    pid, comm, state: f[0], ppid: n(4), pgrp: n(5), session: n(6), ttyNr: n(7), tpgid: n(8), flags: n(9),
    minflt: n(10), cminflt: n(11), majflt: n(12), cmajflt: n(13), utime: n(14), stime: n(15), cutime: n(16),
    cstime: n(17), priority: n(18), nice: n(19), numThreads: n(20), itrealvalue: n(21), startTime: n(22),
    vsize: b(23), rss: n(24), rsslim: b(25), startcode: b(26), endcode: b(27), startstack: b(28), kstkesp: b(29),
    kstkeip: b(30), signal: b(31), blocked: b(32), sigignore: b(33), sigcatch: b(34), wchan: b(35), nswap: n(36),
    cnswap: n(37), exitSignal: n(38), processor: n(39), rtPriority: n(40), policy: n(41),
    delayacctBlkioTicks: n(42), guestTime: n(43), cguestTime: n(44), startData: b(45), endData: b(46),
    startBrk: b(47), argStart: b(48), argEnd: b(49), envStart: b(50), envEnd: b(51), exitCode: n(52),
  };
}

/** /proc/PID/stat, or /proc/PID/task/TID/stat. */
export function readStat(pid: number, tid?: number): ProcStat {
  return parseStat(readProcText(`${base(pid, tid)}/stat`, pid));
}

// ---------------------------------------------------------------------------------------------
// status

export interface ProcStatus {
  name: string;
  /** Octal in the file; undefined on kernels without the Umask line. */
  umask?: number;
  /** Single letter (R, S, D, T, t, X, Z, P, I). */
  state: string;
  stateName: string;
  tgid: number;
  ngid: number;
  pid: number;
  ppid: number;
  tracerPid: number;
  /** real, effective, saved, filesystem. */
  uid: [number, number, number, number];
  gid: [number, number, number, number];
  fdSize: number;
  groups: number[];
  /** Ids in each nested pid namespace, outermost first. */
  nstgid: number[];
  nspid: number[];
  nspgid: number[];
  nssid: number[];
  threads: number;
  sigQ: { queued: number; limit: number };
  sigPnd: bigint;
  shdPnd: bigint;
  sigBlk: bigint;
  sigIgn: bigint;
  sigCgt: bigint;
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: number;
  /** 0 disabled, 1 strict, 2 filter. */
  seccomp: number;
  seccompFilters: number;
  speculationStoreBypass?: string;
  /** Vm* and Rss* lines in kB. */
  vm: Record<string, number>;
  /** Every line, key -> value (trimmed). */
  raw: Record<string, string>;
}

function unescapeStatusName(s: string): string {
  // proc_task_name escapes with ESCAPE_SPACE|ESCAPE_SPECIAL for "\n" and "\\".
  return s.replace(/\\(n|t|\\|[0-7]{3})/g, (_, c: string) =>
    c === 'n' ? '\n' : c === 't' ? '\t' : c === '\\' ? '\\' : String.fromCharCode(parseInt(c, 8)),
  );
}

/** Parses the text of a status file. */
export function parseStatus(text: string): ProcStatus {
  // Each line "Key:<blanks>value<blanks>", cut by index (handlers read status while the tree is frozen).
  const raw: Record<string, string> = {};
  const vm: Record<string, number> = {};
  const blank = (c: number): boolean => c === 0x20 || c === 0x09;
  for (let s = 0; s < text.length; ) {
    let e = text.indexOf('\n', s);
    if (e < 0) e = text.length;
    const i = text.indexOf(':', s);
    if (i > s && i < e) {
      let a = i + 1;
      let b = e;
      while (a < b && blank(text.charCodeAt(a))) a++;
      while (b > a && blank(text.charCodeAt(b - 1))) b--;
      const k = text.slice(s, i);
      const v = text.slice(a, b);
      raw[k] = v;
      if (k.startsWith('Vm') || k.startsWith('Rss') || k.startsWith('Hugetlb')) vm[k] = Number(v.endsWith('kB') ? v.slice(0, -2).trimEnd() : v);
    }
    s = e + 1;
  }
  const num = (k: string, dflt = 0): number => (raw[k] !== undefined && raw[k] !== '' ? Number(raw[k].split(/\s+/)[0]) : dflt);
  const list = (k: string): number[] => (raw[k] ? raw[k].split(/\s+/).filter(Boolean).map(Number) : []);
  const hex = (k: string): bigint => (raw[k] ? BigInt('0x' + raw[k]) : 0n);
  const quad = (k: string): [number, number, number, number] => {
    const l = list(k);
    return [l[0] ?? 0, l[1] ?? 0, l[2] ?? 0, l[3] ?? 0];
  };
  const stateField = raw['State'] ?? '';
  const sm = /^(\S)\s*\(([^)]*)\)/.exec(stateField);
  const sigq = (raw['SigQ'] ?? '0/0').split('/');
  return {
    name: unescapeStatusName(raw['Name'] ?? ''),
    umask: raw['Umask'] !== undefined ? parseInt(raw['Umask'], 8) : undefined,
    state: sm ? sm[1] : stateField.slice(0, 1),
    stateName: sm ? sm[2] : '',
    tgid: num('Tgid'),
    ngid: num('Ngid'),
    pid: num('Pid'),
    ppid: num('PPid'),
    tracerPid: num('TracerPid'),
    uid: quad('Uid'),
    gid: quad('Gid'),
    fdSize: num('FDSize'),
    groups: list('Groups'),
    nstgid: list('NStgid'),
    nspid: list('NSpid'),
    nspgid: list('NSpgid'),
    nssid: list('NSsid'),
    threads: num('Threads'),
    sigQ: { queued: Number(sigq[0]), limit: Number(sigq[1]) },
    sigPnd: hex('SigPnd'),
    shdPnd: hex('ShdPnd'),
    sigBlk: hex('SigBlk'),
    sigIgn: hex('SigIgn'),
    sigCgt: hex('SigCgt'),
    capInh: hex('CapInh'),
    capPrm: hex('CapPrm'),
    capEff: hex('CapEff'),
    capBnd: hex('CapBnd'),
    capAmb: hex('CapAmb'),
    noNewPrivs: num('NoNewPrivs'),
    seccomp: num('Seccomp'),
    seccompFilters: num('Seccomp_filters'),
    speculationStoreBypass: raw['Speculation_Store_Bypass'],
    vm,
    raw,
  };
}

/** /proc/PID/status, or /proc/PID/task/TID/status. */
export function readStatus(pid: number, tid?: number): ProcStatus {
  return parseStatus(readProcText(`${base(pid, tid)}/status`, pid));
}

// ---------------------------------------------------------------------------------------------
// limits

/**
 * Parses /proc/PID/limits: one line per resource in RLIMIT_* order after a header, each the name
 * padded to 25 columns, then the soft and the hard limit ("unlimited": RLIM_INFINITY), then the
 * unit. The kernel reads them all at once under the process's signal lock, like prlimit64.
 */
export function parseLimits(text: string): Array<{ name: string; cur: bigint; max: bigint }> {
  const lines = text.split('\n').filter((l) => l !== '');
  if (!lines[0]?.startsWith('Limit ')) throw new CptError('EBADMSG', `limits: unexpected header ${JSON.stringify(lines[0] ?? '')}`);
  const value = (w: string | undefined, line: string): bigint => {
    if (w === 'unlimited') return RLIM_INFINITY;
    if (w === undefined || !/^\d{1,20}$/.test(w)) throw new CptError('EBADMSG', `limits: cannot parse ${JSON.stringify(line)}`);
    return BigInt(w);
  };
  return lines.slice(1).map((line) => {
    const [cur, max] = line.slice(26).trim().split(/\s+/);
    return { name: line.slice(0, 25).trim(), cur: value(cur, line), max: value(max, line) };
  });
}

/** Every resource limit of the process (/proc/PID/limits, readable from outside), in RLIMIT_* order. */
export function readLimits(pid: number): Array<{ name: string; cur: bigint; max: bigint }> {
  return parseLimits(readProcText(`/proc/${pid}/limits`, pid));
}

// ---------------------------------------------------------------------------------------------
// fds

export interface FdInfo {
  pos: bigint;
  /** open flags (the file prints them in octal), O_CLOEXEC included when the fd has FD_CLOEXEC. */
  flags: number;
  mntId: number;
  ino: bigint;
  /** First value of each key ("eventfd-count", "tfd", "inotify wd", ...), trimmed. */
  fields: Record<string, string>;
  /** Lines after pos/flags/mnt_id/ino: kind-specific (epoll "tfd:", inotify, fanotify, timerfd, locks ...). */
  extra: string[];
}

/** Parses the text of an fdinfo file. */
function parseFdinfo(text: string): FdInfo {
  const fields: Record<string, string> = {};
  const extra: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const i = line.indexOf(':');
    const key = i > 0 ? line.slice(0, i) : line;
    const value = i > 0 ? line.slice(i + 1).trim() : '';
    if (!(key in fields)) fields[key] = value;
    if (key !== 'pos' && key !== 'flags' && key !== 'mnt_id' && key !== 'ino') extra.push(line);
  }
  return {
    pos: BigInt(fields['pos'] ?? '0'),
    flags: parseInt(fields['flags'] ?? '0', 8),
    mntId: Number(fields['mnt_id'] ?? 0),
    ino: BigInt(fields['ino'] ?? '0'),
    fields,
    extra,
  };
}

/** /proc/PID/fdinfo/FD. */
export function readFdinfo(pid: number, fd: number): FdInfo {
  return parseFdinfo(readProcText(`/proc/${pid}/fdinfo/${fd}`, pid));
}

/** Open fds of pid, ascending. */
export function listFds(pid: number): number[] {
  return numericEntries(readDir(`/proc/${pid}/fd`, pid));
}

/** Every process as /proc lists it now, in no order; none where /proc cannot be read. */
export function allPids(): number[] {
  try {
    return fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    return [];
  }
}

/**
 * The open fds of `pid` with their links, as a walk of every process's fds needs them: none where
 * the process is gone (or is a kernel thread), and an fd closed meanwhile left out.
 */
export function fdLinks(pid: number): Array<{ fd: number; link: string }> {
  let names: string[];
  try {
    names = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const out: Array<{ fd: number; link: string }> = [];
  for (const name of names) {
    try {
      out.push({ fd: Number(name), link: fs.readlinkSync(`/proc/${pid}/fd/${name}`) });
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** The /proc/PID/fd/FD link: a path, or "pipe:[ino]", "socket:[ino]", "anon_inode:[eventfd]", ... */
export function readFdLink(pid: number, fd: number): string {
  return readLink(`/proc/${pid}/fd/${fd}`, pid);
}

// ---------------------------------------------------------------------------------------------
// threads and children

/** Thread ids of pid (from /proc/PID/task), ascending. */
export function listThreads(pid: number): number[] {
  return numericEntries(readDir(`/proc/${pid}/task`, pid));
}

/** Children of every thread of pid (from /proc/PID/task/TID/children), ascending, no duplicates. */
export function listChildren(pid: number): number[] {
  const set = new Set<number>();
  for (const tid of listThreads(pid)) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT' || (e as { code?: string }).code === 'ESRCH') continue; // thread exited meanwhile
      throw procError(e, 'read', `/proc/${pid}/task/${tid}/children`, pid);
    }
    for (const w of text.split(/\s+/)) if (w) set.add(Number(w));
  }
  return [...set].sort((a, b) => a - b);
}

/**
 * The processes and all their descendants as /proc shows them now, each once, parents before
 * their children; a process gone meanwhile (or whose children cannot be listed) ends its branch.
 */
export function descendants(pids: number | number[]): number[] {
  const out = new Set<number>();
  const walk = (pid: number) => {
    if (out.has(pid)) return;
    out.add(pid);
    let children: number[];
    try {
      children = listChildren(pid);
    } catch {
      return;
    }
    for (const c of children) walk(c);
  };
  for (const p of typeof pids === 'number' ? [pids] : pids) walk(p);
  return [...out];
}

/**
 * Whether a process group is orphaned as the kernel sees it for job-control stop signals: no
 * live member has a parent (other than init) in another group of the same session. Members
 * that vanish while /proc is read are skipped.
 */
export function processGroupOrphaned(pgid: number): boolean {
  for (const pid of numericEntries(fs.readdirSync('/proc'))) {
    let m: ProcStat;
    let p: ProcStat;
    try {
      m = readStat(pid);
      if (m.pgrp !== pgid || m.state === 'Z' || m.state === 'X' || m.ppid <= 1) continue;
      p = readStat(m.ppid);
    } catch {
      continue;
    }
    if (p.pgrp !== pgid && p.session === m.session) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// pagemap

/**
 * Entries of /proc/PID/pagemap for `npages` pages starting at the page of `startAddr`
 * (bit 63 present, 62 swapped, 61 file-page or shared-anon, 56 exclusively mapped, 55 soft-dirty,
 * 0-54 PFN when present (root only) or swap type/offset when swapped).
 */
export function readPagemap(pid: number, startAddr: bigint, npages: number, pageSize = 4096): BigUint64Array {
  const out = new BigUint64Array(npages);
  if (npages === 0) return out;
  const path = `/proc/${pid}/pagemap`;
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    throw procError(e, 'open', path, pid);
  }
  try {
    const buf = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    const pos = (startAddr / BigInt(pageSize)) * 8n;
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, done, buf.length - done, pos + BigInt(done));
      } catch (e) {
        throw procError(e, 'pread', path, pid);
      }
      if (n === 0) break;
      done += n;
    }
    if (done !== buf.length) throw new CptError('EIO', `pread(${path}): short read ${done} of ${buf.length}`, { pid });
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

export const pagemapPresent = (e: bigint): boolean => (e & PAGEMAP.PRESENT) !== 0n;
export const pagemapSwapped = (e: bigint): boolean => (e & PAGEMAP.SWAPPED) !== 0n;
export const pagemapFileOrSharedAnon = (e: bigint): boolean => (e & PAGEMAP.FILE_OR_SHARED_ANON) !== 0n;
export const pagemapExclusive = (e: bigint): boolean => (e & PAGEMAP.EXCLUSIVE) !== 0n;
/** Page frame number (0 without CAP_SYS_ADMIN; meaningful only when present). */
export const pagemapPfn = (e: bigint): bigint => e & PAGEMAP.PFN_MASK;

// ---------------------------------------------------------------------------------------------
// auxv, personality, links, comm, cmdline

/** /proc/PID/auxv, raw (pairs of u64 ending with AT_NULL). */
export function readAuxv(pid: number): Buffer {
  return readProcBuffer(`/proc/${pid}/auxv`, pid);
}

/** Parses an auxv buffer into entries, stopping at (and excluding) AT_NULL. */
export function parseAuxv(buf: Buffer): AuxvEntry[] {
  const out: AuxvEntry[] = [];
  const size = sizeOfStruct(AuxvEntry);
  for (let o = 0; o + size <= buf.length; o += size) {
    const e = decodeStruct(AuxvEntry, buf, o);
    if (e.type === BigInt(AUXV.NULL)) break;
    out.push(e);
  }
  return out;
}

/** /proc/PID/personality (hex in the file). */
export function readPersonality(pid: number): number {
  return parseInt(readProcText(`/proc/${pid}/personality`, pid).trim(), 16);
}

export function readCwd(pid: number): string {
  return readLink(`/proc/${pid}/cwd`, pid);
}
export function readRoot(pid: number): string {
  return readLink(`/proc/${pid}/root`, pid);
}
/** /proc/PID/exe; ends in " (deleted)" when the binary was unlinked. */
export function readExe(pid: number): string {
  return readLink(`/proc/${pid}/exe`, pid);
}
/** /proc/PID/comm (or the thread's), without the trailing newline. */
export function readComm(pid: number, tid?: number): string {
  return readProcText(`${base(pid, tid)}/comm`, pid).replace(/\n$/, '');
}
/** /proc/PID/cmdline split at NULs. */
export function readCmdline(pid: number): string[] {
  const t = readProcText(`/proc/${pid}/cmdline`, pid);
  if (t === '') return [];
  const parts = t.split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** The process's state letter (stat's third field: 'R', 'S', 'Z', ...), or undefined where it is gone. */
export function stateIfAlive(pid: number): string | undefined {
  try {
    return readStat(pid).state;
  } catch {
    return undefined;
  }
}

/** The process's parent, or 0 where it is gone (a check on someone else's process). */
export function ppidIfAlive(pid: number): number {
  try {
    return readStat(pid).ppid;
  } catch {
    return 0;
  }
}

/** /proc/PID/cmdline split at NULs, or none where the process is gone (a check on someone else's process). */
export function cmdlineIfAlive(pid: number): string[] {
  try {
    return readCmdline(pid);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------------------------
// mountinfo (files need mnt_id -> mount point)

export interface MountInfo {
  mountId: number;
  parentId: number;
  major: number;
  minor: number;
  root: string;
  mountPoint: string;
  options: string;
  optionalFields: string[];
  fsType: string;
  source: string;
  superOptions: string;
}

/** /proc/PID/mountinfo. */
export function readMountinfo(pid: number | 'self'): MountInfo[] {
  const out: MountInfo[] = [];
  const owner = pid === 'self' ? undefined : pid;
  for (const line of readProcText(`/proc/${pid}/mountinfo`, owner).split('\n')) {
    if (!line) continue;
    const w = line.split(' ');
    const sep = w.indexOf('-', 6);
    if (sep < 0) throw new CptError('EBADMSG', `mountinfo: cannot parse ${JSON.stringify(line)}`, { pid: owner });
    const [ma, mi] = w[2].split(':').map(Number);
    out.push({
      mountId: Number(w[0]),
      parentId: Number(w[1]),
      major: ma,
      minor: mi,
      root: unescapeOctal(w[3]),
      mountPoint: unescapeOctal(w[4]),
      options: w[5],
      optionalFields: w.slice(6, sep),
      fsType: w[sep + 1],
      source: unescapeOctal(w[sep + 2] ?? ''),
      superOptions: w[sep + 3] ?? '',
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// event files: the kind-specific lines of /proc/PID/fdinfo/N for eventfd, epoll, signalfd,
// timerfd and inotify. Each parser returns undefined when a line it expects is missing or does
// not read as the kernel prints it, so that a caller can refuse instead of guessing.

/** A device number as the kernel prints it from inside (`sdev:` in fdinfo: major << 20 | minor) in st_dev form. */
export function kernelDevToStDev(kdev: number): bigint {
  return makeDev(Math.floor(kdev / 0x100000), kdev & 0xfffff);
}

/** eventfd: `eventfd-count` (hex) and, since Linux 6.5, `eventfd-semaphore` (0 or 1). */
export interface EventfdInfo {
  count: bigint;
  /** Undefined when the kernel does not show it. */
  semaphore?: boolean;
}

export function parseEventfdInfo(fdinfo: FdInfo): EventfdInfo | undefined {
  const count = fdinfo.fields['eventfd-count'];
  if (count === undefined || !/^[0-9a-f]{1,16}$/i.test(count)) return undefined;
  const sem = fdinfo.fields['eventfd-semaphore'];
  return { count: BigInt('0x' + count), ...(sem === '0' || sem === '1' ? { semaphore: sem === '1' } : {}) };
}

/** One target of an epoll: `tfd: N events: X data: X  pos:N ino:X sdev:X`. */
export interface EpollTargetInfo {
  /** The fd number it was registered with (the kernel keys the target by file and this number). */
  tfd: number;
  events: number;
  data: bigint;
  pos: bigint;
  ino: bigint;
  /** st_dev of the target's file. */
  dev: bigint;
}

const TFD_LINE = /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:(\d+)\s+ino:([0-9a-f]+)\s+sdev:([0-9a-f]+)\s*$/;

/** The targets of an epoll fd, in the kernel's order (the order KCMP_EPOLL_TFD counts `toff` in). */
export function parseEpollTargets(fdinfo: FdInfo): EpollTargetInfo[] | undefined {
  const out: EpollTargetInfo[] = [];
  for (const line of fdinfo.extra) {
    if (!line.startsWith('tfd:')) continue;
    const m = TFD_LINE.exec(line);
    if (!m || m[3].length > 16) return undefined;
    out.push({
      tfd: Number(m[1]), events: parseInt(m[2], 16) >>> 0, data: BigInt('0x' + m[3]), pos: BigInt(m[4]), ino: BigInt('0x' + m[5]),
      dev: kernelDevToStDev(parseInt(m[6], 16)),
    });
  }
  return out;
}

/** signalfd: the mask it reads (`sigmask:`, hex: bit n-1 for signal n). */
export function parseSignalfdMask(fdinfo: FdInfo): bigint | undefined {
  const m = fdinfo.fields['sigmask'];
  return m !== undefined && /^[0-9a-f]{1,16}$/i.test(m) ? BigInt('0x' + m) : undefined;
}

export interface TimespecValue {
  sec: bigint;
  nsec: bigint;
}

/** timerfd: its clock, unread expirations, settime flags and the time left / interval. */
export interface TimerfdInfo {
  clockid: number;
  ticks: bigint;
  /** TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET as last given to timerfd_settime. */
  settimeFlags: number;
  /** Time left to the next expiry (relative even for an absolute timer; 0 when disarmed or expired). */
  value: TimespecValue;
  interval: TimespecValue;
}

function parsePair(s: string | undefined): TimespecValue | undefined {
  const m = s === undefined ? null : /^\((\d+), (\d+)\)$/.exec(s);
  return m ? { sec: BigInt(m[1]), nsec: BigInt(m[2]) } : undefined;
}

export function parseTimerfdInfo(fdinfo: FdInfo): TimerfdInfo | undefined {
  const f = fdinfo.fields;
  const value = parsePair(f['it_value']);
  const interval = parsePair(f['it_interval']);
  const clock = f['clockid'];
  const ticks = f['ticks'];
  const flags = f['settime flags'];
  if (!value || !interval || clock === undefined || !/^\d+$/.test(clock) || ticks === undefined || !/^\d+$/.test(ticks)) return undefined;
  if (flags === undefined || !/^[0-7]+$/.test(flags)) return undefined;
  return { clockid: Number(clock), ticks: BigInt(ticks), settimeFlags: parseInt(flags, 8), value, interval };
}

/** One inotify watch: `inotify wd:X ino:X sdev:X mask:X ignored_mask:X [fhandle-bytes:X fhandle-type:X f_handle:HEX]`. */
export interface InotifyWatchInfo {
  wd: number;
  ino: bigint;
  /** st_dev of the watched inode. */
  dev: bigint;
  mask: number;
  ignoredMask: number;
  /** The watched inode's file handle (for open_by_handle_at), when its filesystem gives one. */
  handle?: { type: number; bytes: Buffer };
}

const INOTIFY_LINE = /^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)(?: fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*))?\s*$/;

export function parseInotifyWatches(fdinfo: FdInfo): InotifyWatchInfo[] | undefined {
  const out: InotifyWatchInfo[] = [];
  for (const line of fdinfo.extra) {
    if (!line.startsWith('inotify ')) continue;
    const m = INOTIFY_LINE.exec(line);
    if (!m) return undefined;
    const w: InotifyWatchInfo = {
      wd: parseInt(m[1], 16), ino: BigInt('0x' + m[2]), dev: kernelDevToStDev(parseInt(m[3], 16)), mask: parseInt(m[4], 16) >>> 0,
      ignoredMask: parseInt(m[5], 16) >>> 0,
    };
    if (m[6] !== undefined) {
      const bytes = Buffer.from(m[8], 'hex');
      if (bytes.length !== parseInt(m[6], 16)) return undefined;
      w.handle = { type: parseInt(m[7], 16) | 0, bytes };
    }
    out.push(w);
  }
  return out;
}

/** One fanotify mark from fdinfo: on an inode (with its file handle), a mount (by id) or a filesystem. */
export type FanotifyMarkInfo = { mflags: number; mask: number; ignoredMask: number } & (
  | { on: 'inode'; ino: bigint; dev: bigint; handle?: { type: number; bytes: Buffer } }
  | { on: 'mount'; mountId: number }
  | { on: 'filesystem'; dev: bigint }
);

const FANOTIFY_HEAD = /^fanotify flags:([0-9a-f]+) event-flags:([0-9a-f]+)\s*$/;
const FANOTIFY_INODE = /^fanotify ino:([0-9a-f]+) sdev:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)(?: fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*))?\s*$/;
const FANOTIFY_MOUNT = /^fanotify mnt_id:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)\s*$/;
const FANOTIFY_SB = /^fanotify sdev:([0-9a-f]+) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)\s*$/;

/**
 * A fanotify group's fdinfo: `fanotify flags:X event-flags:Y` (fanotify_init's arguments) and one
 * line per mark. undefined when a line is not one of these (a kind of mark cptrst does not know).
 */
export function parseFanotifyFdinfo(fdinfo: FdInfo): { flags: number; eventFlags: number; marks: FanotifyMarkInfo[] } | undefined {
  let head: { flags: number; eventFlags: number } | undefined;
  const marks: FanotifyMarkInfo[] = [];
  const hex = (s: string) => parseInt(s, 16) >>> 0;
  for (const line of fdinfo.extra) {
    if (!line.startsWith('fanotify ')) continue;
    let m = FANOTIFY_HEAD.exec(line);
    if (m) {
      head = { flags: hex(m[1]), eventFlags: hex(m[2]) };
      continue;
    }
    if ((m = FANOTIFY_INODE.exec(line))) {
      const mark: FanotifyMarkInfo = { on: 'inode', ino: BigInt('0x' + m[1]), dev: kernelDevToStDev(hex(m[2])), mflags: hex(m[3]), mask: hex(m[4]), ignoredMask: hex(m[5]) };
      if (m[6] !== undefined) {
        const bytes = Buffer.from(m[8], 'hex');
        if (bytes.length !== hex(m[6])) return undefined;
        mark.handle = { type: parseInt(m[7], 16) | 0, bytes };
      }
      marks.push(mark);
    } else if ((m = FANOTIFY_MOUNT.exec(line))) {
      marks.push({ on: 'mount', mountId: hex(m[1]), mflags: hex(m[2]), mask: hex(m[3]), ignoredMask: hex(m[4]) });
    } else if ((m = FANOTIFY_SB.exec(line))) {
      marks.push({ on: 'filesystem', dev: kernelDevToStDev(hex(m[1])), mflags: hex(m[2]), mask: hex(m[3]), ignoredMask: hex(m[4]) });
    } else {
      return undefined;
    }
  }
  return head && { ...head, marks };
}
