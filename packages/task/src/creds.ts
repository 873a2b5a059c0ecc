/**
 * Credentials: real/effective/saved/fs uids and gids, supplementary groups, capabilities and
 * no_new_privs. Written right after the TASK object, and applied in two steps at restart:
 *
 * - When the object is read, before any memory or file is restored, the task takes the image's
 *   file-system identity: its groups, fsgid and fsuid. Every recorded file is opened inside the
 *   task, so the kernel checks those opens against the identity the process had, not cptrst's.
 *   Its effective capability set is then what the image had in effect for files, plus (for a
 *   root-owned image) cptrst's own, or (for any other image) only CAP_CHECKPOINT_RESTORE, which
 *   PR_SET_MM_MAP needs to set the executable.
 * - In finish, after every other injected call that needs privilege, the full credentials are
 *   set, then compared with the image: anything the kernel did not give back fails the restart.
 *
 * An image that root does not own is held to its owner's rights: every task must have the
 * owner's uid in all four places, gids and groups the owner has, and no capability; otherwise
 * the restart fails before the process is made.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, StateKey, Tracee, allowRootFileIdentity, bool, frozenStatus, linux, objectType, u32, u32s, u64,
} from '@cptrst/core';
import { heldToOwner, stepsAfterCreds, stepsBeforeDrop } from './deferred';
import { bringUpTask } from './identity';
import { askedAtCheck } from './misc';

const { SYS, PR, CAP } = linux;
/** Right after TASK (100): the identity files are opened with must be known before MM and FILE objects. */
export const CREDS_ORDER = 110;
/** The full credentials: last among the finish hooks that run injected calls. */
export const CREDS_FINAL_ORDER = 900;

@objectType(ObjectType.TASK_CREDS, 'creds', { parents: [ObjectType.TASK, ObjectType.THREAD] })
export class CredsImage {
  /** real, effective, saved, fs */
  @u32s() uids: number[] = [];
  @u32s() gids: number[] = [];
  @u32s() groups: number[] = [];
  @u64() capInh = 0n;
  @u64() capPrm = 0n;
  @u64() capEff = 0n;
  @u64() capBnd = 0n;
  @u64() capAmb = 0n;
  @bool() noNewPrivs = false;
  /** The securebits a restart sets (only SECBIT_KEEP_CAPS: a checkpoint refuses the others). */
  @u32({ since: 4 }) securebits = 0;
}

/** The TASK_CREDS object read at restart, applied in full at the end (CredsFinal). */
export const CREDS_KEY = new StateKey<CredsImage>('task.creds');

/**
 * Credentials of a thread whose differ from its main thread's (setresuid and the like act on the
 * calling thread only): its own TASK_CREDS, a child of its THREAD object.
 */
export const THREAD_CREDS_KEY = new StateKey<CredsImage>('task.thread.creds');

export class CredsDump implements DumpHandler {
  readonly name = 'task.creds';
  readonly order = CREDS_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    ctx.write(credsOf(task.pid, undefined, mainKeepCapsBit(task), frozenStatus(task)), task.tag);
  }
}

/**
 * The main thread's SECBIT_KEEP_CAPS: from the securebits task.misc's check asked (the frozen
 * task cannot change them), else asked inside it here.
 */
export function mainKeepCapsBit(task: CheckpointTask): number {
  const asked = askedAtCheck(task);
  return asked && asked.securebits >= 0n ? Number(asked.securebits) & linux.SECBIT_KEEP_CAPS : keepCapsBit(task.tracee);
}

/** The SECBIT_KEEP_CAPS bit of a thread's securebits, asked inside it. */
function keepCapsBit(t: Tracee): number {
  return Number(t.syscallOk(SYS.prctl, [PR.GET_SECUREBITS, 0, 0, 0, 0], 'prctl(PR_GET_SECUREBITS)')) & linux.SECBIT_KEEP_CAPS;
}

/**
 * The credentials of a process's main thread, or of one of its threads (securebits asked inside
 * the thread), from its status (read here unless given).
 */
export function credsOf(pid: number, tid: number | undefined, securebits: number, s: linux.ProcStatus = linux.readStatus(pid, tid)): CredsImage {
  const img = new CredsImage();
  img.uids = s.uid;
  img.gids = s.gid;
  img.groups = s.groups;
  img.capInh = s.capInh;
  img.capPrm = s.capPrm;
  img.capEff = s.capEff;
  img.capBnd = s.capBnd;
  img.capAmb = s.capAmb;
  img.noNewPrivs = s.noNewPrivs !== 0;
  img.securebits = securebits;
  return img;
}

const hex = (v: bigint) => `0x${v.toString(16)}`;

/**
 * Why the task of an image owned by `owner` may not have these credentials (empty if it may):
 * the owner's uid everywhere, gids and groups among the owner's groups, no capability.
 */
export function credsBeyondOwner(img: CredsImage, owner: linux.UserRights): string[] {
  const who = owner.name ? `${owner.name} (uid ${owner.uid})` : `uid ${owner.uid} (no /etc/passwd entry, so no group)`;
  const out: string[] = [];
  const names = ['real', 'effective', 'saved', 'fs'];
  img.uids.forEach((u, i) => { if (u !== owner.uid) out.push(`${names[i]} uid ${u} is not the owner ${who}`); });
  img.gids.forEach((g, i) => { if (!owner.gids.includes(g)) out.push(`${names[i]} gid ${g} is not a group of ${who}`); });
  for (const g of img.groups) if (!owner.gids.includes(g)) out.push(`supplementary group ${g} is not a group of ${who}`);
  const caps: Array<[string, bigint]> = [['inheritable', img.capInh], ['permitted', img.capPrm], ['effective', img.capEff], ['ambient', img.capAmb]];
  for (const [n, v] of caps) if (v !== 0n) out.push(`${n} capabilities ${hex(v)} (the owner's processes have none)`);
  return out;
}

function validate(task: RestartTask, img: CredsImage): void {
  const bad = (m: string) => new CptError('EBADIMG', m, { pid: task.pid, object: 'creds' });
  if ((img.securebits & ~linux.SECBIT_KEEP_CAPS) !== 0) throw bad(`securebits 0x${img.securebits.toString(16)} (only KEEP_CAPS is restored)`);
  if (img.uids.length !== 4 || img.gids.length !== 4) throw bad('credentials need 4 uids and 4 gids');
  if (img.groups.length > 65536) throw bad(`${img.groups.length} supplementary groups (the kernel allows 65536)`);
  const invalid = 0xffffffff;
  if ([...img.uids, ...img.gids, ...img.groups].includes(invalid)) throw bad('an id of -1 (no id)');
}

function setGroups(t: Tracee, groups: number[]): void {
  const buf = Buffer.alloc(4 * groups.length);
  groups.forEach((g, i) => buf.writeUInt32LE(g, 4 * i));
  t.syscallOk(SYS.setgroups, [groups.length, groups.length ? t.stage(buf) : 0], 'setgroups');
}

function capset(t: Tracee, sets: linux.CapSets, what: string): void {
  const hdr = t.stage(linux.encodeCapHeader(0), 0);
  const data = t.stage(linux.encodeCapData(sets), 64);
  t.syscallOk(SYS.capset, [hdr, data], what);
}

/** What an image held to its owner's rights keeps in effect while its memory and files are restored. */
function restoreCapsForHeldImage(): bigint {
  return linux.capLastCap() >= CAP.CHECKPOINT_RESTORE ? 1n << BigInt(CAP.CHECKPOINT_RESTORE) : 1n << BigInt(CAP.SYS_ADMIN);
}

export class CredsRestore implements RestoreHandler {
  readonly name = 'task.creds';
  readonly order = CREDS_ORDER;
  readonly types = [ObjectType.TASK_CREDS];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as CredsImage;
    validate(task, img);
    if (o.ptag !== task.tag) {
      // A thread's own: checked like the task's, set in the thread after the task's (thread.ts).
      const th = task.threads?.find((t) => t.tag === o.ptag);
      if (!th || th.state.has(THREAD_CREDS_KEY)) throw new CptError('EBADIMG', `a credentials object under tag ${o.ptag}, which is not a thread of this task without credentials yet`, { pid: task.pid, object: 'creds' });
      if (heldToOwner(ctx)) {
        const beyond = credsBeyondOwner(img, linux.userRights(ctx.imageOwner.uid));
        if (beyond.length) throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, and thread ${th.tid} of task ${task.pid} asks for more than its owner has: ${beyond.join('; ')}`, { pid: task.pid, object: `thread ${th.tid}` });
      }
      th.state.set(THREAD_CREDS_KEY, img);
      return;
    }
    if (task.state.has(CREDS_KEY)) throw new CptError('EBADIMG', 'a second credentials object for the task', { pid: task.pid, object: 'creds' });
    // Set either way: nothing of an earlier restart of this PID (in the same cptrst) carries over.
    allowRootFileIdentity(task.pid, false);
    task.state.set(CREDS_KEY, img);
    if (heldToOwner(ctx)) {
      const owner = linux.userRights(ctx.imageOwner.uid);
      const beyond = credsBeyondOwner(img, owner);
      if (beyond.length) {
        throw new CptError('EPERM', `the image belongs to uid ${ctx.imageOwner.uid}, and task ${task.pid} asks for more than its owner has: ${beyond.join('; ')}`, { pid: task.pid, object: 'creds' });
      }
      if (!task.tracee) bringUpTask(ctx, task);
    }
    if (!task.tracee) throw new CptError('EBADIMG', 'credentials before the task object', { pid: task.pid, object: 'creds' });
    this.fsIdentity(ctx, task, img);
    // Root's image: a recorded file this identity may not reach is opened as root (recorded-file.ts).
    if (!heldToOwner(ctx)) allowRootFileIdentity(task.pid, true);
  }

  abort(_ctx: RestartContext, task: RestartTask): void {
    allowRootFileIdentity(task.pid, false);
  }

  /** The groups, fsgid and fsuid of the image, and the effective capabilities the rest of the restore may use. */
  private fsIdentity(ctx: RestartContext, task: RestartTask, img: CredsImage): void {
    const t = task.tracee!;
    // A child of the tree is a copy of its parent, whose effective set may be narrowed already:
    // its permitted set (still the helper's) back in effect for setgroups and setfs*id.
    const start = linux.readStatus(task.pid);
    if (start.capEff !== start.capPrm) capset(t, { effective: start.capPrm, permitted: start.capPrm, inheritable: start.capInh }, 'capset (before the file-system identity)');
    setGroups(t, img.groups);
    // Both run (each returns the previous id, never an error code), in one batch.
    t.syscalls([{ nr: SYS.setfsgid, args: [img.gids[3]] }, { nr: SYS.setfsuid, args: [img.uids[3]] }]);
    const here = linux.readStatus(task.pid);
    if (here.uid[3] !== img.uids[3] || here.gid[3] !== img.gids[3] || String(here.groups) !== String(img.groups)) {
      throw new CptError('EPERM', `the file-system identity did not take: fsuid ${here.uid[3]} fsgid ${here.gid[3]} groups [${here.groups}], want ${img.uids[3]} ${img.gids[3]} [${img.groups}]`, { pid: task.pid, object: 'creds' });
    }
    // setfsuid away from 0 cleared CAP_DAC_OVERRIDE and the other file capabilities from the
    // effective set; the process may have had them in effect.
    const keep = heldToOwner(ctx) ? restoreCapsForHeldImage() : here.capEff;
    const effective = (keep | img.capEff) & here.capPrm;
    if (effective !== here.capEff) capset(t, { effective, permitted: here.capPrm, inheritable: here.capInh }, 'capset (effective set while restoring)');
  }
}

/**
 * The full credentials, then the steps that wait for them (see deferred.ts), then the check
 * against the image.
 */
export class CredsFinal implements RestoreHandler {
  readonly name = 'task.creds.final';
  readonly order = CREDS_FINAL_ORDER;
  readonly types: number[] = [];
  restore(): void {
    /* no objects of its own: CredsRestore keeps the image */
  }

  finish(ctx: RestartContext, task: RestartTask): void {
    const img = task.state.get(CREDS_KEY);
    if (!img) throw new CptError('EBADIMG', 'the image gives no credentials for this task', { pid: task.pid, object: 'creds' });
    allowRootFileIdentity(task.pid, false);
    setCredentials(task.tracee!, task.pid, undefined, img, () => {
      for (const s of stepsBeforeDrop(task)) s.run();
    });

    for (const s of stepsAfterCreds(task)) {
      try {
        s.run();
      } catch (e) {
        if (!heldToOwner(ctx) || !(e instanceof CptError) || !['EPERM', 'EACCES'].includes(e.code)) throw e;
        throw new CptError('EPERM', `${s.what} is refused by the kernel with the rights of the image's owner (uid ${ctx.imageOwner.uid}): ${e.message}`, { pid: task.pid, object: s.what, cause: e });
      }
    }
  }
}

/**
 * The full credentials of one thread, set inside it (they are per thread: each thread of a
 * process gets its own, the main thread's or those of its own TASK_CREDS), then compared with
 * /proc. `beforeDrop` runs with every permitted capability in effect, before anything changes.
 */
export function setCredentials(t: Tracee, pid: number, tid: number | undefined, img: CredsImage, beforeDrop?: () => void): void {
  const on = tid === undefined ? '' : ` in thread ${tid}`;
  const start = linux.readStatus(pid, tid);
  const keep = (img.securebits & linux.SECBIT_KEEP_CAPS) !== 0 ? 1n : 0n;
  // A thread that has them already (made by a root process whose credentials are the image's) needs nothing.
  if (tid !== undefined && !beforeDrop && differences(start, img).length === 0 && t.syscall(SYS.prctl, [PR.GET_KEEPCAPS, 0, 0, 0, 0]) === keep) return;
  // Still euid 0: every permitted capability back in effect for setgroups, setres*id and the bounding set.
  if (start.capEff !== start.capPrm) capset(t, { effective: start.capPrm, permitted: start.capPrm, inheritable: start.capInh }, `capset (before the credentials)${on}`);
  beforeDrop?.();

  setGroups(t, img.groups);
  // Bounding-set bits the image lacks are dropped while we still may (one batch, up to a failure).
  const drops: number[] = [];
  for (let cap = 0; cap < 64; cap++) {
    const bit = 1n << BigInt(cap);
    if (start.capBnd & bit && !(img.capBnd & bit)) drops.push(cap);
  }
  t.syscalls(drops.map((cap) => ({ nr: SYS.prctl, args: [PR.CAPBSET_DROP, cap] })), { untilError: true })
    .forEach((r, i) => failed(r, pid, `dropping capability ${drops[i]} from the bounding set${on}`));
  // Before the uids change: it decides whether the permitted capabilities survive that.
  if (t.syscallOk(SYS.prctl, [PR.GET_KEEPCAPS, 0, 0, 0, 0], `prctl(PR_GET_KEEPCAPS)${on}`) !== keep) {
    t.syscallOk(SYS.prctl, [PR.SET_KEEPCAPS, keep, 0, 0, 0], `prctl(PR_SET_KEEPCAPS, ${keep})${on}`);
  }
  const [rg, eg, sg, fg] = img.gids;
  const [ru, eu, su, fu] = img.uids;
  // Each set*id with its setfs*id in one batch, which a failed setres*id ends (a setfs*id returns
  // the previous id, which may look like an error code: it is last, and not checked).
  failed(t.syscalls([{ nr: SYS.setresgid, args: [rg, eg, sg] }, { nr: SYS.setfsgid, args: [fg] }], { untilError: true })[0], pid, `setresgid${on}`);
  failed(t.syscalls([{ nr: SYS.setresuid, args: [ru, eu, su] }, { nr: SYS.setfsuid, args: [fu] }], { untilError: true })[0], pid, `setresuid${on}`);
  capabilities(t, pid, tid, img);
  if (img.noNewPrivs) t.syscallOk(SYS.prctl, [PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0], `prctl(PR_SET_NO_NEW_PRIVS)${on}`);
  verify(pid, tid, img);
  if (t.syscallOk(SYS.prctl, [PR.GET_KEEPCAPS, 0, 0, 0, 0], `prctl(PR_GET_KEEPCAPS)${on}`) !== keep) {
    throw new CptError('EPERM', `credentials${on} could not be restored exactly: KEEP_CAPS is not ${keep}`, { pid, object: tid === undefined ? 'creds' : `thread ${tid}` });
  }
}

/** Throws, as syscallOk does, when an injected call of a batch failed. */
function failed(r: bigint, pid: number, what: string): void {
  if (r < 0n && r > -4096n) throw new CptError(linux.errnoName(Number(-r)), `${what} failed inside the process: ${linux.errnoName(Number(-r))}`, { pid, object: what });
}

/**
 * The kernel clears capabilities as the uids change; what is left is brought to exactly the
 * image's sets (each of which may only shrink here), then the ambient set is raised.
 */
function capabilities(t: Tracee, pid: number, tid: number | undefined, img: CredsImage): void {
  const now = linux.readStatus(pid, tid);
  if (now.capEff !== img.capEff || now.capPrm !== img.capPrm || now.capInh !== img.capInh) {
    // Only what the task holds: a set the kernel refuses to give shows up in verify().
    capset(t, { effective: img.capEff & img.capPrm & now.capPrm, permitted: img.capPrm & now.capPrm, inheritable: img.capInh & (now.capInh | now.capPrm) }, 'capset');
  }
  if (img.capAmb !== now.capAmb) {
    t.syscallOk(SYS.prctl, [PR.CAP_AMBIENT, linux.PR_CAP_AMBIENT.CLEAR_ALL, 0, 0, 0], 'clearing the ambient capabilities');
    for (let cap = 0; cap < 64; cap++) {
      if (img.capAmb & (1n << BigInt(cap))) t.syscallOk(SYS.prctl, [PR.CAP_AMBIENT, linux.PR_CAP_AMBIENT.RAISE, cap, 0, 0], `raising ambient capability ${cap}`);
    }
  }
}

function verify(pid: number, tid: number | undefined, img: CredsImage): void {
  const diffs = differences(linux.readStatus(pid, tid), img);
  if (diffs.length) throw new CptError('EPERM', `credentials${tid === undefined ? '' : ` of thread ${tid}`} could not be restored exactly: ${diffs.join('; ')}`, { pid, object: tid === undefined ? 'creds' : `thread ${tid}` });
}

/** How the credentials /proc shows differ from the image's (empty when they are the same). */
function differences(after: linux.ProcStatus, img: CredsImage): string[] {
  const diffs: string[] = [];
  const same = (name: string, a: unknown, b: unknown) => { if (String(a) !== String(b)) diffs.push(`${name} ${String(a)} instead of ${String(b)}`); };
  same('uids', after.uid, img.uids);
  same('gids', after.gid, img.gids);
  same('groups', after.groups, img.groups);
  same('CapEff', hex(after.capEff), hex(img.capEff));
  same('CapPrm', hex(after.capPrm), hex(img.capPrm));
  same('CapInh', hex(after.capInh), hex(img.capInh));
  same('CapBnd', hex(after.capBnd), hex(img.capBnd));
  same('CapAmb', hex(after.capAmb), hex(img.capAmb));
  same('NoNewPrivs', after.noNewPrivs !== 0, img.noNewPrivs);
  // The seccomp mode and filters are compared by seccomp.ts, once they are installed.
  return diffs;
}
