/**
 * The owner's rights (passwd and group parsing) and the rule that holds an image not owned by
 * root to them; the /proc/PID/timers parser the POSIX-timer refusal reads.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { linux } from '@cptrst/core';
import { CredsImage, credsBeyondOwner } from '../src';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  '# a comment',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  'alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash',
  'broken:x:notanumber:1:x:/:/bin/sh',
  'short:x:5',
  '+nis',
  '',
].join('\n');
const GROUP = ['root:x:0:', 'adm:x:4:syslog,alice', 'nogroup:x:65534:', 'alice:x:1000:', 'docker:x:999: bob , alice', 'bad:x::alice'].join('\n');

function creds(over: Partial<CredsImage>): CredsImage {
  return Object.assign(new CredsImage(), { uids: [1000, 1000, 1000, 1000], gids: [1000, 1000, 1000, 1000], groups: [4, 1000] }, over);
}

describe('users: passwd and group', () => {
  it('parses entries and skips comments, NIS and malformed lines', () => {
    expect(linux.parsePasswd(PASSWD).map((p) => p.name)).to.deep.equal(['root', 'nobody', 'alice']);
    expect(linux.parseGroup(GROUP).map((g) => g.name)).to.deep.equal(['root', 'adm', 'nogroup', 'alice', 'docker']);
    expect(linux.parseGroup(GROUP).find((g) => g.name === 'docker')!.members).to.deep.equal(['bob', 'alice']);
  });

  it('a user may hold its primary group and the groups that list it', () => {
    expect(linux.userRights(1000, PASSWD, GROUP)).to.deep.equal({ uid: 1000, name: 'alice', primaryGid: 1000, gids: [4, 999, 1000] });
    expect(linux.userRights(65534, PASSWD, GROUP).gids).to.deep.equal([65534]);
    expect(linux.userRights(4242, PASSWD, GROUP)).to.deep.equal({ uid: 4242, gids: [] });
  });

  it('reads this machine\'s databases: root is uid 0 with group 0', () => {
    const r = linux.userRights(0);
    expect(r.name).to.equal('root');
    expect(r.gids).to.include(0);
  });
});

describe('credsBeyondOwner', () => {
  const alice = linux.userRights(1000, PASSWD, GROUP);
  it('accepts the owner\'s own ids, groups among its own, no capability', () => {
    expect(credsBeyondOwner(creds({}), alice)).to.deep.equal([]);
    expect(credsBeyondOwner(creds({ gids: [4, 999, 1000, 4], groups: [] }), alice)).to.deep.equal([]);
  });
  it('names each uid, gid, group and capability set beyond the owner', () => {
    expect(credsBeyondOwner(creds({ uids: [1000, 0, 1000, 1000] }), alice)).to.deep.equal(['effective uid 0 is not the owner alice (uid 1000)']);
    expect(credsBeyondOwner(creds({ gids: [1000, 1000, 1000, 0] }), alice)).to.deep.equal(['fs gid 0 is not a group of alice (uid 1000)']);
    expect(credsBeyondOwner(creds({ groups: [1000, 27] }), alice)).to.deep.equal(['supplementary group 27 is not a group of alice (uid 1000)']);
    expect(credsBeyondOwner(creds({ capAmb: 1n << 12n }), alice)).to.deep.equal(["ambient capabilities 0x1000 (the owner's processes have none)"]);
    expect(credsBeyondOwner(creds({ capInh: 1n, capPrm: 2n, capEff: 2n }), alice)).to.have.length(3);
  });
  it('a uid with no passwd entry has no group at all', () => {
    const ghost = linux.userRights(4242, PASSWD, GROUP);
    const out = credsBeyondOwner(creds({ uids: [4242, 4242, 4242, 4242], gids: [4242, 4242, 4242, 4242], groups: [] }), ghost);
    expect(out).to.have.length(4);
    expect(out[0]).to.match(/real gid 4242 is not a group of uid 4242 \(no \/etc\/passwd entry, so no group\)/);
  });
});

describe('/proc/PID/timers', () => {
  it('parses one block per timer', () => {
    const text = 'ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.123\nClockID: 1\nID: 1\nsignal: 0/0000000000abc0de\nnotify: none/pid.123\nClockID: 0\n' +
      'ID: 7\nsignal: 12/0000000000000003\nnotify: signal/tid.124\nClockID: -6\n';
    expect(linux.parsePosixTimers(text)).to.deep.equal([
      { id: 0, signal: 14, notify: 'signal/pid.123', notifyKind: 'signal', notifyThread: false, notifyPid: 123, value: 0n, clock: 1 },
      { id: 1, signal: 0, notify: 'none/pid.123', notifyKind: 'none', notifyThread: false, notifyPid: 123, value: 0xabc0den, clock: 0 },
      { id: 7, signal: 12, notify: 'signal/tid.124', notifyKind: 'signal', notifyThread: true, notifyPid: 124, value: 3n, clock: -6 },
    ]);
    expect(linux.cpuClockPid(-6)).to.equal(0); // the calling process's CPU clock
    expect(linux.cpuClockPid(-14)).to.equal(1);
    expect(linux.parsePosixTimers('')).to.deep.equal([]);
  });
  it('this process has none', () => {
    expect(linux.readPosixTimers(process.pid)).to.deep.equal([]);
  });
});
