import { expect } from 'chai';
import { ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CptError } from '../src/errors';
import {
  AUXV, MapEntry, O, listChildren, listFds, listThreads, pagemapExclusive, pagemapFileOrSharedAnon, pagemapPfn,
  pagemapPresent, pagemapSwapped, parseAuxv, parseMaps, parseMapsLine, parseStat, parseStatus, readAuxv,
  readCmdline, readComm, readCwd, readExe, readFdLink, readFdinfo, readMaps, readMountinfo, readPagemap,
  readPersonality, readSmaps, readStat, readStatus, rawSyscall, syscallNumber, EFD_SEMAPHORE, CLOCK, EPOLL, parseEventfdInfo,
  parseSignalfdMask, parseTimerfdInfo, parseEpollTargets, parseInotifyWatches, parseFanotifyFdinfo, kcmpEpollTarget, FAN,
  RLIM_NLIMITS, parseLimits, prlimit, readLimits, rlimitName,
} from '../src/linux';
import { Target, cleanupTmp, compileFixture, killPid, spawnSleeping, spawnTarget, tmpDir } from './fixtures/linux-fixtures';

const PS = 4096n;

function containing(maps: MapEntry[], addr: bigint): MapEntry {
  const e = maps.find((m) => m.start <= addr && addr < m.end);
  if (!e) throw new Error(`no mapping contains 0x${addr.toString(16)}`);
  return e;
}

describe('linux /proc parsers', () => {
  after(() => cleanupTmp());

  describe('of this process', () => {
    it('readLimits agrees with prlimit64, limit by limit, and refuses a malformed file', () => {
      const all = readLimits(process.pid);
      expect(all.length).to.be.at.least(RLIM_NLIMITS);
      for (let r = 0; r < RLIM_NLIMITS; r++) expect(all[r], rlimitName(r)).to.deep.include(prlimit(0, r));
      expect(all[7].name).to.equal('Max open files'); // RLIMIT_NOFILE
      expect(() => parseLimits('Limit  Soft Limit\nMax cpu time              12x                  unlimited            seconds\n')).to.throw(CptError, /cannot parse/);
      expect(() => parseLimits('garbage\n')).to.throw(CptError, /header/);
    });

    it('readStat / readStatus agree with what node knows', () => {
      const st = readStat(process.pid);
      expect(st.pid).to.equal(process.pid);
      expect(st.ppid).to.equal(process.ppid);
      expect(st.comm).to.equal(fs.readFileSync('/proc/self/comm', 'utf8').trim());
      expect(st.state).to.equal('R');
      expect(st.numThreads).to.be.greaterThan(1);
      expect(st.vsize > 0n).to.equal(true);
      expect(st.startstack > 0n).to.equal(true);
      expect(st.argStart > 0n && st.argEnd > st.argStart).to.equal(true);
      expect(st.envEnd > st.envStart).to.equal(true);
      expect(st.startBrk > 0n).to.equal(true);
      expect(st.exitSignal).to.equal(17);

      const s = readStatus(process.pid);
      expect(s.pid).to.equal(process.pid);
      expect(s.tgid).to.equal(process.pid);
      expect(s.ppid).to.equal(process.ppid);
      expect(s.name).to.equal(st.comm);
      expect(s.uid[0]).to.equal(process.getuid!());
      expect(s.gid[1]).to.equal(process.getegid!());
      expect(s.threads).to.equal(st.numThreads);
      expect(s.nspid[s.nspid.length - 1]).to.be.a('number');
      expect(s.umask).to.equal(process.umask());
      // node ignores SIGPIPE (bit 12) and catches SIGINT? at least SIGPIPE ignored
      expect(s.sigIgn & (1n << 12n)).to.equal(1n << 12n);
      expect(s.capEff).to.be.a('bigint');
      expect(s.raw['Name']).to.equal(s.name);
      expect(s.vm['VmRSS']).to.be.greaterThan(0);
    });

    it('per-thread stat/status and listThreads', () => {
      const tids = listThreads(process.pid);
      expect(tids).to.include(process.pid);
      expect(tids.length).to.equal(readStatus(process.pid).threads);
      const other = tids.find((t) => t !== process.pid)!;
      expect(readStat(process.pid, other).pid).to.equal(other);
      expect(readStatus(process.pid, other).pid).to.equal(other);
      expect(readStatus(process.pid, other).tgid).to.equal(process.pid);
      expect(readComm(process.pid, other)).to.be.a('string');
    });

    it('fds, fdinfo and fd links', () => {
      const p = path.join(tmpDir(), 'fdinfo-test');
      fs.writeFileSync(p, 'hello world');
      const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_APPEND);
      try {
        fs.readSync(fd, Buffer.alloc(5), 0, 5, null);
        expect(listFds(process.pid)).to.include(fd);
        expect(readFdLink(process.pid, fd)).to.equal(p);
        const info = readFdinfo(process.pid, fd);
        expect(info.pos).to.equal(5n);
        expect(info.flags & O.ACCMODE).to.equal(O.RDWR);
        expect(info.flags & O.APPEND).to.equal(O.APPEND);
        expect(info.ino).to.equal(fs.statSync(p, { bigint: true }).ino);
        expect(info.mntId).to.be.greaterThan(0);
        const mounts = readMountinfo(process.pid);
        expect(mounts.some((m) => m.mountId === info.mntId)).to.equal(true);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('event files: eventfd, epoll, signalfd, timerfd and inotify lines of fdinfo', () => {
      const opened: number[] = [];
      const call = (name: string, ...args: (number | bigint | Buffer)[]): number => {
        const r = rawSyscall(syscallNumber(name), ...args);
        if (r < 0n) throw new Error(`${name}: ${-r}`);
        return Number(r);
      };
      try {
        const efd = call('eventfd2', 7, EFD_SEMAPHORE | O.CLOEXEC);
        opened.push(efd);
        expect(parseEventfdInfo(readFdinfo(process.pid, efd))).to.deep.equal({ count: 7n, semaphore: true });
        const sfd = call('signalfd4', -1, Buffer.from([0x00, 0x02, 0, 0, 0, 0, 0, 0]), 8, O.CLOEXEC | O.NONBLOCK);
        opened.push(sfd);
        expect(parseSignalfdMask(readFdinfo(process.pid, sfd))).to.equal(0x200n); // SIGUSR1 (10)
        const tfd = call('timerfd_create', CLOCK.BOOTTIME, O.CLOEXEC);
        opened.push(tfd);
        const spec = Buffer.alloc(32);
        spec.writeBigInt64LE(3n, 0); // interval 3 s
        spec.writeBigInt64LE(100n, 16); // first in 100 s
        call('timerfd_settime', tfd, 0, spec, 0);
        const t = parseTimerfdInfo(readFdinfo(process.pid, tfd))!;
        expect(t).to.include({ clockid: CLOCK.BOOTTIME, ticks: 0n, settimeFlags: 0 });
        expect(t.interval).to.deep.equal({ sec: 3n, nsec: 0n });
        expect(Number(t.value.sec)).to.be.within(98, 99);
        const ep = call('epoll_create1', O.CLOEXEC);
        opened.push(ep);
        const ev = Buffer.alloc(12);
        ev.writeUInt32LE((EPOLL.IN | EPOLL.ET) >>> 0, 0);
        ev.writeBigUInt64LE(0x1122334455667788n, 4);
        call('epoll_ctl', ep, 1, efd, ev);
        const st = fs.fstatSync(efd, { bigint: true });
        expect(parseEpollTargets(readFdinfo(process.pid, ep))).to.deep.equal([
          { tfd: efd, events: (EPOLL.IN | EPOLL.ET | EPOLL.ERR | EPOLL.HUP) >>> 0, data: 0x1122334455667788n, pos: 0n, ino: st.ino, dev: st.dev },
        ]);
        expect(kcmpEpollTarget(process.pid, efd, ep, efd, 0)).to.equal(true);
        expect(kcmpEpollTarget(process.pid, sfd, ep, efd, 0)).to.equal(false);
        const ifd = call('inotify_init1', O.CLOEXEC);
        opened.push(ifd);
        const dir = tmpDir();
        const wd = call('inotify_add_watch', ifd, Buffer.from(dir + '\0'), 0x100 /* IN_CREATE */);
        const w = parseInotifyWatches(readFdinfo(process.pid, ifd))!;
        const ds = fs.statSync(dir, { bigint: true });
        expect(w).to.have.length(1);
        expect(w[0]).to.include({ wd, mask: 0x100, ignoredMask: 0, ino: ds.ino, dev: ds.dev });
        expect(parseEpollTargets(readFdinfo(process.pid, ifd))).to.deep.equal([]);
      } finally {
        for (const fd of opened) fs.closeSync(fd);
      }
    });

    it('fanotify fdinfo: the group\'s flags and its inode, mount and filesystem marks (root)', function () {
      const call = (name: string, ...args: (number | bigint | Buffer)[]) => Number(rawSyscall(syscallNumber(name), ...args));
      const g = call('fanotify_init', 0x2 /* FAN_NONBLOCK */, O.RDONLY);
      if (g < 0) this.skip();
      try {
        const dir = tmpDir();
        const ds = fs.statSync(dir, { bigint: true });
        const mark = (flags: number, mask: number, p: string) => expect(call('fanotify_mark', g, flags, BigInt(mask), -100, Buffer.from(p + '\0'))).to.equal(0);
        mark(FAN.MARK_ADD, 0x2 /* FAN_MODIFY */, dir);
        mark(FAN.MARK_ADD | FAN.MARK_IGNORE | FAN.MARK_IGNORED_SURV_MODIFY, 0x1 /* FAN_ACCESS */, dir);
        mark(FAN.MARK_ADD | FAN.MARK_MOUNT, 0x20 /* FAN_OPEN */, '/');
        mark(FAN.MARK_ADD | FAN.MARK_FILESYSTEM, 0x8 /* FAN_CLOSE_WRITE */, '/');
        const info = parseFanotifyFdinfo(readFdinfo(process.pid, g))!;
        expect(info).to.include({ flags: 0x2, eventFlags: O.LARGEFILE });
        // Newest first.
        expect(info.marks.map((m) => m.on)).to.deep.equal(['filesystem', 'mount', 'inode']);
        const [sb, mnt, ino] = info.marks;
        const root = fs.statSync('/', { bigint: true });
        expect(sb).to.include({ on: 'filesystem', dev: root.dev, mask: 0x8, ignoredMask: 0, mflags: 0 });
        const rootMount = readMountinfo(process.pid).filter((m) => m.mountPoint === '/').pop()!;
        expect(mnt).to.include({ on: 'mount', mountId: rootMount.mountId, mask: 0x20, ignoredMask: 0 });
        expect(ino).to.include({ on: 'inode', ino: ds.ino, dev: ds.dev, mask: 0x2, ignoredMask: 0x1, mflags: FAN.MARK_IGNORE | FAN.MARK_IGNORED_SURV_MODIFY });
        expect(parseFanotifyFdinfo({ ...readFdinfo(process.pid, g), extra: ['fanotify flags:0 event-flags:0', 'fanotify mnt_ns:1 mflags:0 mask:1 ignored_mask:0'] })).to.equal(undefined);
      } finally {
        fs.closeSync(g);
      }
    });

    it('auxv, personality, cwd, exe, cmdline', () => {
      const auxv = parseAuxv(readAuxv(process.pid));
      const pagesz = auxv.find((e) => e.type === BigInt(AUXV.PAGESZ));
      expect(pagesz?.value).to.equal(4096n);
      expect(auxv.some((e) => e.type === BigInt(AUXV.SYSINFO_EHDR))).to.equal(true);
      expect(readPersonality(process.pid)).to.equal(0);
      expect(readCwd(process.pid)).to.equal(process.cwd());
      expect(readExe(process.pid)).to.equal(fs.realpathSync(process.execPath));
      expect(readCmdline(process.pid)).to.deep.equal(fs.readFileSync('/proc/self/cmdline', 'utf8').split('\0').slice(0, -1));
    });

    it('maps has the special areas of this kernel', () => {
      const maps = readMaps(process.pid);
      const names = new Set(maps.map((m) => m.path));
      for (const n of ['[heap]', '[stack]', '[vdso]', '[vvar]']) expect(names.has(n), n).to.equal(true);
      const exe = maps.find((m) => m.path === fs.realpathSync(process.execPath));
      expect(exe?.inode).to.equal(fs.statSync(process.execPath, { bigint: true }).ino);
      for (const m of maps) expect(m.end > m.start).to.equal(true);
    });

    it('throws CptError ENOENT for a missing process', () => {
      try {
        readStat(0x3ffffff0);
        expect.fail('no error');
      } catch (e) {
        expect(e).to.be.instanceOf(CptError);
        expect((e as CptError).code).to.equal('ENOENT');
      }
    });
  });

  describe('parsers on odd text', () => {
    it('stat with spaces and parentheses in comm', () => {
      const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
      fields[0] = 'S';
      const st = parseStat(`42 (a) b (c)) ${fields.join(' ')}\n`);
      expect(st.pid).to.equal(42);
      expect(st.comm).to.equal('a) b (c)');
      expect(st.state).to.equal('S');
      expect(st.ppid).to.equal(4);
      expect(st.exitCode).to.equal(52);
      expect(st.envEnd).to.equal(51n);
    });

    it('maps lines: padding, spaces, leading space, deleted, no name, long header', () => {
      const pad = (h: string): string => h.padEnd(72, ' ') + ' ';
      const a = parseMapsLine(pad('7f0000000000-7f0000001000 r-xp 00001000 fe:01 123 ') + '/tmp/a b (deleted)')!;
      expect(a.path).to.equal('/tmp/a b');
      expect(a.deleted).to.equal(true);
      expect(a.prot).to.deep.equal({ read: true, write: false, exec: true });
      expect(a.offset).to.equal(0x1000n);
      expect(a.major).to.equal(0xfe);
      expect(a.inode).to.equal(123n);
      const b = parseMapsLine(pad('7f0000000000-7f0000001000 rw-s 00000000 00:01 4 ') + ' lead')!;
      expect(b.path).to.equal(' lead');
      expect(b.shared).to.equal(true);
      const c = parseMapsLine('7f0000000000-7f0000001000 ---p 00000000 00:00 0 ')!;
      expect(c.path).to.equal('');
      expect(c.prot).to.deep.equal({ read: false, write: false, exec: false });
      const longHead = 'ffffffffff600000-ffffffffff601000 --xp 00000000 103:1ff 123456789012345678 ';
      const d = parseMapsLine(longHead + ' /x\\012y')!;
      expect(d.path).to.equal('/x\ny');
      expect(d.minor).to.equal(0x1ff);
      expect(d.start).to.equal(0xffffffffff600000n);
      expect(() => parseMaps('garbage\n')).to.throw(CptError, /cannot parse/);
    });

    it('status keeps raw lines and parses masks', () => {
      const s = parseStatus('Name:\tx\\ny\nState:\tt (tracing stop)\nSigBlk:\t8000000000000001\nUid:\t1\t2\t3\t4\nNSpid:\t7\t1\n');
      expect(s.name).to.equal('x\ny');
      expect(s.state).to.equal('t');
      expect(s.stateName).to.equal('tracing stop');
      expect(s.sigBlk).to.equal(0x8000000000000001n);
      expect(s.uid).to.deep.equal([1, 2, 3, 4]);
      expect(s.nspid).to.deep.equal([7, 1]);
    });

    it('status lines are cut at the first colon, blanks around the value dropped; memory figures in kB are numbers', () => {
      const s = parseStatus('Name:\ta: b \t\n:no key\nno colon\nUmask:\t0027\nVmRSS:\t   1234 kB  \nRssAnon:\t7 kB\nHugetlbPages:\t0 kB\nVmFlag:\t5\nSeccomp:\t2');
      expect(s.name).to.equal('a: b');
      expect(s.umask).to.equal(0o27);
      expect(s.raw).to.deep.equal({ Name: 'a: b', Umask: '0027', VmRSS: '1234 kB', RssAnon: '7 kB', HugetlbPages: '0 kB', VmFlag: '5', Seccomp: '2' });
      expect(s.vm).to.deep.equal({ VmRSS: 1234, RssAnon: 7, HugetlbPages: 0, VmFlag: 5 });
      expect(s.seccomp).to.equal(2); // the last line, with no newline after it
    });

    it('status of this process: every line of the file is a raw entry, and the parsed ids match process.getuid()', () => {
      const text = fs.readFileSync('/proc/self/status', 'utf8');
      const s = parseStatus(text);
      const lines = text.split('\n').filter((l) => l.indexOf(':') > 0);
      expect(Object.keys(s.raw)).to.have.length(lines.length);
      for (const l of lines) expect(s.raw[l.slice(0, l.indexOf(':'))]).to.equal(l.slice(l.indexOf(':') + 1).trim());
      expect(s.uid[0]).to.equal(process.getuid!());
      expect(s.pid).to.equal(process.pid);
      expect(s.vm.VmRSS).to.be.greaterThan(0);
    });
  });

  describe('of a spawned child', () => {
    let child: ChildProcess | undefined;
    afterEach(() => killPid(child?.pid));

    it('stat/status of a child whose comm has spaces and parentheses', async () => {
      const odd = path.join(tmpDir(), 'sl ee)p (x');
      fs.copyFileSync('/bin/sleep', odd);
      fs.chmodSync(odd, 0o755);
      child = await spawnSleeping(odd, ['60']);
      const pid = child.pid!;
      const st = readStat(pid);
      expect(st.comm).to.equal('sl ee)p (x');
      expect(st.pid).to.equal(pid);
      expect(st.ppid).to.equal(process.pid);
      expect(st.state).to.equal('S');
      expect(st.numThreads).to.equal(1);
      const s = readStatus(pid);
      expect(s.name).to.equal('sl ee)p (x');
      expect(s.ppid).to.equal(process.pid);
      expect(s.tracerPid).to.equal(0);
      expect(s.state).to.equal('S');
      expect(readComm(pid)).to.equal('sl ee)p (x');
      expect(readCmdline(pid)).to.deep.equal([odd, '60']);
      expect(readExe(pid)).to.equal(odd);
      expect(listThreads(pid)).to.deep.equal([pid]);
      expect(listChildren(process.pid)).to.include(pid);
      expect(listFds(pid)).to.include.members([0, 1, 2]);
      expect(readFdLink(pid, 0)).to.equal('/dev/null');
    });
  });

  describe('maps, smaps and pagemap of a C program', () => {
    let t: Target | undefined;
    before(async () => {
      const bin = compileFixture('linux-maps-target');
      const dir = fs.mkdtempSync(path.join(tmpDir(), 'maps-'));
      t = await spawnTarget(bin, [dir]);
    });
    after(() => killPid(t?.pid));

    it('readMaps shows PROT_NONE, shared anon, odd file names and deleted files', () => {
      const maps = readMaps(t!.pid);
      const v = t!.vars;
      const none = containing(maps, v.none);
      expect(none.prot).to.deep.equal({ read: false, write: false, exec: false });
      expect(none.shared).to.equal(false);
      expect(none.path).to.equal('');
      expect(none.inode).to.equal(0n);
      const ro = containing(maps, v.ro);
      expect(ro.prot).to.deep.equal({ read: true, write: false, exec: false });
      const sh = containing(maps, v.shanon);
      expect(sh.shared).to.equal(true);
      expect(sh.path).to.equal('/dev/zero');
      expect(sh.deleted).to.equal(true);
      expect(sh.end - sh.start).to.equal(2n * PS);
      const file = containing(maps, v.file);
      expect(path.basename(file.path)).to.equal('my file (x).dat');
      expect(file.deleted).to.equal(false);
      expect(file.shared).to.equal(true);
      expect(file.inode).to.equal(fs.statSync(file.path, { bigint: true }).ino);
      const gone = containing(maps, v.gone);
      expect(path.basename(gone.path)).to.equal('gone.dat');
      expect(gone.deleted).to.equal(true);
      expect(gone.prot.exec).to.equal(true);
      const nl = containing(maps, v.nl);
      expect(path.basename(nl.path)).to.equal('new\nline.dat');
      expect(fs.existsSync(nl.path)).to.equal(true);
      expect(maps.some((m) => m.path === '[vsyscall]' || m.path === '[vdso]')).to.equal(true);
    });

    it('readPagemap: touched pages present and exclusive, untouched not', () => {
      const e = readPagemap(t!.pid, t!.vars.touch, 4);
      expect(e.length).to.equal(4);
      expect([0, 1, 2, 3].map((i) => pagemapPresent(e[i]))).to.deep.equal([true, false, true, false]);
      expect(pagemapExclusive(e[0])).to.equal(true);
      expect(pagemapFileOrSharedAnon(e[0])).to.equal(false);
      expect(pagemapSwapped(e[1])).to.equal(false);
      expect(pagemapPfn(e[0]) > 0n).to.equal(true); // we are root
      expect(e[1]).to.equal(0n);
      const sh = readPagemap(t!.pid, t!.vars.shanon, 2);
      expect(pagemapPresent(sh[0])).to.equal(true);
      expect(pagemapFileOrSharedAnon(sh[0])).to.equal(true);
      const file = readPagemap(t!.pid, t!.vars.file, 1);
      if (pagemapPresent(file[0])) expect(pagemapFileOrSharedAnon(file[0])).to.equal(true);
    });

    it('readSmaps: rss of the touched region and vmFlags', () => {
      const sm = readSmaps(t!.pid);
      expect(sm.length).to.equal(readMaps(t!.pid).length);
      const touch = sm.find((m) => m.start <= t!.vars.touch && t!.vars.touch < m.end)!;
      expect(touch.vmFlags).to.include.members(['rd', 'wr']);
      if (touch.size === 16) {
        expect(touch.rss).to.equal(8);
        expect(touch.anonymous).to.equal(8);
      } else {
        expect(touch.rss).to.be.at.least(8);
      }
      const sh = sm.find((m) => m.start === t!.vars.shanon)!;
      expect(sh.vmFlags).to.include('sh');
      expect(sh.fields['Shared_Dirty'] + sh.fields['Private_Dirty']).to.be.at.least(4);
      const none = sm.find((m) => m.start <= t!.vars.none && t!.vars.none < m.end)!;
      expect(none.vmFlags).to.not.include('rd');
      expect(none.vmFlags).to.include('mr');
      expect(none.swap).to.equal(0);
    });
  });
});
