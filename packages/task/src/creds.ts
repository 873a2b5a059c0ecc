/**
 * Credentials: real/effective/saved/fs uids and gids, supplementary groups, capabilities and
 * no_new_privs. Set last among the injected calls (after them the process may no longer be
 * allowed what restoring needs), then checked: a capability set the kernel did not give back
 * fails the restart rather than leaving a process with other rights than it had.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, bool, linux, objectType, u32s, u64,
} from '@cptrst/core';

const { SYS, PR } = linux;
export const CREDS_ORDER = 900;

@objectType(ObjectType.TASK_CREDS, 'creds', { parents: [ObjectType.TASK] })
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
}

export class CredsDump implements DumpHandler {
  readonly name = 'task.creds';
  readonly order = CREDS_ORDER;
  dump(ctx: CheckpointContext, task: CheckpointTask): void {
    const s = linux.readStatus(task.pid);
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
    ctx.write(img, task.tag);
  }
}

export class CredsRestore implements RestoreHandler {
  readonly name = 'task.creds';
  readonly order = CREDS_ORDER;
  readonly types = [ObjectType.TASK_CREDS];
  restore(_ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = o.obj as CredsImage;
    if (img.uids.length !== 4 || img.gids.length !== 4) throw new CptError('EBADIMG', 'credentials need 4 uids and 4 gids', { pid: task.pid, object: 'creds' });
    task.state.set('task.creds', img);
  }
  finish(_ctx: RestartContext, task: RestartTask): void {
    const img = task.state.get('task.creds') as CredsImage;
    const t = task.tracee!;
    const groups = Buffer.alloc(4 * img.groups.length);
    img.groups.forEach((g, i) => groups.writeUInt32LE(g, 4 * i));
    t.syscallOk(SYS.setgroups, [img.groups.length, img.groups.length ? t.stage(groups) : 0], 'setgroups');
    // Bounding-set bits the image lacks are dropped while we still may.
    const here = linux.readStatus(task.pid);
    for (let cap = 0; cap < 64; cap++) {
      const bit = 1n << BigInt(cap);
      if (here.capBnd & bit && !(img.capBnd & bit)) t.syscallOk(SYS.prctl, [PR.CAPBSET_DROP, cap], `dropping capability ${cap} from the bounding set`);
    }
    const [rg, eg, sg, fg] = img.gids;
    const [ru, eu, su, fu] = img.uids;
    t.syscallOk(SYS.setresgid, [rg, eg, sg], 'setresgid');
    t.syscall(SYS.setfsgid, [fg]); // returns the previous fsgid, never an error code
    t.syscallOk(SYS.setresuid, [ru, eu, su], 'setresuid');
    t.syscall(SYS.setfsuid, [fu]);
    if (img.noNewPrivs) t.syscallOk(SYS.prctl, [PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0], 'prctl(PR_SET_NO_NEW_PRIVS)');
    const after = linux.readStatus(task.pid);
    const diffs: string[] = [];
    const same = (name: string, a: unknown, b: unknown) => { if (String(a) !== String(b)) diffs.push(`${name} ${String(a)} instead of ${String(b)}`); };
    same('uids', after.uid, img.uids);
    same('gids', after.gid, img.gids);
    same('groups', after.groups, img.groups);
    same('CapEff', after.capEff.toString(16), img.capEff.toString(16));
    same('CapPrm', after.capPrm.toString(16), img.capPrm.toString(16));
    same('CapInh', after.capInh.toString(16), img.capInh.toString(16));
    same('CapBnd', after.capBnd.toString(16), img.capBnd.toString(16));
    same('CapAmb', after.capAmb.toString(16), img.capAmb.toString(16));
    if (diffs.length) throw new CptError('EPERM', `credentials could not be restored exactly: ${diffs.join('; ')}`, { pid: task.pid, object: 'creds' });
  }
}
