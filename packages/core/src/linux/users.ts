/**
 * The user and group databases (/etc/passwd, /etc/group): who a uid is and which groups it may
 * act as. Used to hold a restored process to the rights of the image's owner.
 */
import * as fs from 'fs';
import { CptError } from '../errors';

export interface PasswdEntry {
  name: string;
  uid: number;
  /** Primary group. */
  gid: number;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const id = (s: string): number | undefined => (/^\d+$/.test(s) && Number(s) <= 0xffffffff ? Number(s) : undefined);

/** Parses passwd(5) text: name:password:uid:gid:gecos:home:shell. Malformed lines (and NIS "+" lines) are skipped. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const f = line.split(':');
    if (f.length < 7) continue;
    const uid = id(f[2]);
    const gid = id(f[3]);
    if (uid === undefined || gid === undefined || f[0] === '') continue;
    out.push({ name: f[0], uid, gid, home: f[5], shell: f[6] });
  }
  return out;
}

/** Parses group(5) text: name:password:gid:member,member. Malformed lines are skipped. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    const f = line.split(':');
    if (f.length < 4) continue;
    const gid = id(f[2]);
    if (gid === undefined || f[0] === '') continue;
    out.push({ name: f[0], gid, members: f[3].split(',').map((m) => m.trim()).filter(Boolean) });
  }
  return out;
}

export interface UserRights {
  uid: number;
  /** Undefined when the uid has no passwd entry: it then has no group at all. */
  name?: string;
  primaryGid?: number;
  /** Every gid the user may hold: the primary group and each group that lists the user as a member. */
  gids: number[];
}

/** What `uid` may be, from the passwd and group texts given (the files by default). */
export function userRights(uid: number, passwd?: string, group?: string): UserRights {
  const pw = parsePasswd(passwd ?? readDb('/etc/passwd')).find((p) => p.uid === uid);
  if (!pw) return { uid, gids: [] };
  const gids = new Set<number>([pw.gid]);
  for (const g of parseGroup(group ?? readDb('/etc/group'))) if (g.members.includes(pw.name)) gids.add(g.gid);
  return { uid, name: pw.name, primaryGid: pw.gid, gids: [...gids].sort((a, b) => a - b) };
}

function readDb(path: string): string {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new CptError(code, `cannot read ${path}: ${(e as Error).message}`, { object: path });
  }
}
