import { expect } from 'chai';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import 'reflect-metadata';
import { CptError } from '../src/errors';
import { LayoutClass } from '../src/image/layout';
import { cfield, cstruct, cstructOf, decodeStruct, encodeStruct, offsetOfField, sizeOfStruct } from '../src/image/cstruct';
import {
  AuxvEntry, CapUserData, CapUserHeader, CloneArgs, EpollEvent, FOwnerEx, FileHandleHead, Flock, Itimerspec, Itimerval, KcmpEpollSlot,
  KernelSigaction, KernelStat, OpenHow, PeeksiginfoArgs, SeccompMetadata, SockFprog, KernelSyscallInfo, PrctlMmMap, Rlimit, RseqConfiguration, SchedParam, Sigevent,
  Siginfo, StackT, Timespec, Timeval, KernelTermios, Winsize,
} from '../src/linux/structs';

@cstruct('test_inner')
class Inner {
  @cfield.u8() a = 0;
  @cfield.u32() b = 0;
}

@cstruct('test_outer')
class Outer {
  @cfield.u16() x = 0;
  @cfield.struct(Inner) inner = new Inner();
  @cfield.i8() y = 0;
  @cfield.i64() z = 0n;
  @cfield.bytes(3) tag: Buffer = Buffer.alloc(3);
  @cfield.array('i16', 3) shorts: number[] = [0, 0, 0];
}

@cstruct('test_union', { size: 16 })
class WithUnion {
  @cfield.i32() kind = 0;
  @cfield.u64({ offset: 8 }) wide = 0n;
  @cfield.i32({ offset: 8 }) narrow = 0;
}

describe('C struct layouts', () => {
  it('places fields by the C alignment rules and pads the size to the largest alignment', () => {
    expect(sizeOfStruct(Inner)).to.equal(8);
    expect(offsetOfField(Inner, 'b')).to.equal(4);
    expect(offsetOfField(Outer, 'inner')).to.equal(4);
    expect(offsetOfField(Outer, 'y')).to.equal(12);
    expect(offsetOfField(Outer, 'z')).to.equal(16);
    expect(offsetOfField(Outer, 'tag')).to.equal(24);
    expect(offsetOfField(Outer, 'shorts')).to.equal(28);
    expect(sizeOfStruct(Outer)).to.equal(40);
    expect(cstructOf(Outer)?.align).to.equal(8);
  });

  it('round-trips values, nested structs, byte arrays and sign', () => {
    const o = new Outer();
    o.x = 0xbeef;
    o.inner.a = 7;
    o.inner.b = 0xfffffffe;
    o.y = -2;
    o.z = -(1n << 62n);
    o.tag = Buffer.from('abc');
    o.shorts = [1, -1, 300];
    const b = encodeStruct(o);
    expect(b.length).to.equal(40);
    expect(b.readInt16LE(30)).to.equal(-1);
    expect(b.readUInt32LE(8)).to.equal(0xfffffffe);
    expect(b.readInt8(12)).to.equal(-2);
    const d = decodeStruct(Outer, b);
    expect(d).to.be.instanceOf(Outer);
    expect(d).to.deep.equal(o);
  });

  it('encodes from plain values, zero for missing fields, wrapping to the field width', () => {
    const b = encodeStruct(Outer, { z: -1n, inner: { a: 1, b: -1 } });
    expect(b.readBigUInt64LE(16)).to.equal(0xffffffffffffffffn);
    expect(b.readUInt32LE(8)).to.equal(0xffffffff);
    expect(b.readUInt16LE(0)).to.equal(0);
    const into = Buffer.alloc(40, 0xaa);
    encodeStruct(Inner, { a: 1, b: 2 }, into, 8);
    expect(into.readUInt32LE(12)).to.equal(2);
    expect(into[7]).to.equal(0xaa);
  });

  it('union members overlap at their declared offsets; size is as declared', () => {
    expect(sizeOfStruct(WithUnion)).to.equal(16);
    const d = decodeStruct(WithUnion, encodeStruct(WithUnion, { wide: 0x1_0000_0005n }));
    expect(d.narrow).to.equal(5);
    expect(d.wide).to.equal(0x1_0000_0005n);
  });

  it('refuses short buffers, non-integers, misaligned offsets and undersized structs', () => {
    expect(() => decodeStruct(Outer, Buffer.alloc(39))).to.throw(CptError, /test_outer: need 40 bytes, got 39/);
    expect(() => encodeStruct(Outer, { shorts: [1, 2, 3, 4] })).to.throw(CptError, /4 elements do not fit in 3/);
    expect(() => decodeStruct(Inner, Buffer.alloc(8), 1)).to.throw(CptError, /need 8/);
    expect(() => encodeStruct(Inner, { b: 1.5 })).to.throw(CptError, /test_inner\.b: expected an integer/);
    expect(() => encodeStruct(Outer, { tag: Buffer.alloc(4) })).to.throw(CptError, /do not fit/);
    expect(() => {
      @cstruct('bad_offset')
      class Bad { @cfield.u64({ offset: 4 }) v = 0n; }
      return Bad;
    }).to.throw(CptError, /not 8-aligned/);
    expect(() => {
      @cstruct('bad_size', { size: 4 })
      class Bad { @cfield.u64() v = 0n; }
      return Bad;
    }).to.throw(CptError, /smaller than its fields/);
    expect(() => sizeOfStruct(class NotAStruct {})).to.throw(CptError, /not a @cstruct class/);
  });

  // The kernel structs against what gcc says of the same structs in the system headers: each
  // declared field's offset and size, and the struct's size.
  interface CSide { cls: LayoutClass; tu: 'libc' | 'uapi'; ctype: string; fields: Record<string, string> }
  const KERNEL: CSide[] = [
    { cls: KernelSigaction, tu: 'uapi', ctype: 'struct sigaction', fields: { handler: 'sa_handler', flags: 'sa_flags', restorer: 'sa_restorer', mask: 'sa_mask' } },
    { cls: StackT, tu: 'libc', ctype: 'stack_t', fields: { sp: 'ss_sp', flags: 'ss_flags', size: 'ss_size' } },
    { cls: Timespec, tu: 'libc', ctype: 'struct timespec', fields: { sec: 'tv_sec', nsec: 'tv_nsec' } },
    { cls: Timeval, tu: 'libc', ctype: 'struct timeval', fields: { sec: 'tv_sec', usec: 'tv_usec' } },
    { cls: Itimerval, tu: 'libc', ctype: 'struct itimerval', fields: { interval: 'it_interval', value: 'it_value' } },
    { cls: Flock, tu: 'libc', ctype: 'struct flock', fields: { type: 'l_type', whence: 'l_whence', start: 'l_start', len: 'l_len', pid: 'l_pid' } },
    { cls: Itimerspec, tu: 'libc', ctype: 'struct itimerspec', fields: { interval: 'it_interval', value: 'it_value' } },
    { cls: Sigevent, tu: 'libc', ctype: 'struct sigevent', fields: { value: 'sigev_value', signo: 'sigev_signo', notify: 'sigev_notify', tid: '_sigev_un._tid' } },
    {
      cls: Siginfo, tu: 'libc', ctype: 'siginfo_t',
      fields: { signo: 'si_signo', errno: 'si_errno', code: 'si_code', pid: 'si_pid', uid: 'si_uid', status: 'si_status', addr: 'si_addr', value: 'si_value' },
    },
    {
      cls: PrctlMmMap, tu: 'uapi', ctype: 'struct prctl_mm_map',
      fields: {
        startCode: 'start_code', endCode: 'end_code', startData: 'start_data', endData: 'end_data', startBrk: 'start_brk', brk: 'brk',
        startStack: 'start_stack', argStart: 'arg_start', argEnd: 'arg_end', envStart: 'env_start', envEnd: 'env_end', auxv: 'auxv',
        auxvSize: 'auxv_size', exeFd: 'exe_fd',
      },
    },
    {
      cls: CloneArgs, tu: 'uapi', ctype: 'struct clone_args',
      fields: {
        flags: 'flags', pidfd: 'pidfd', childTid: 'child_tid', parentTid: 'parent_tid', exitSignal: 'exit_signal', stack: 'stack',
        stackSize: 'stack_size', tls: 'tls', setTid: 'set_tid', setTidSize: 'set_tid_size', cgroup: 'cgroup',
      },
    },
    {
      cls: RseqConfiguration, tu: 'uapi', ctype: 'struct ptrace_rseq_configuration',
      fields: { rseqAbiPointer: 'rseq_abi_pointer', rseqAbiSize: 'rseq_abi_size', signature: 'signature', flags: 'flags' },
    },
    {
      cls: KernelSyscallInfo, tu: 'uapi', ctype: 'struct ptrace_syscall_info',
      fields: {
        op: 'op', arch: 'arch', instructionPointer: 'instruction_pointer', stackPointer: 'stack_pointer', nr: 'entry.nr', args: 'entry.args',
        retData: 'seccomp.ret_data', rval: 'exit.rval', isError: 'exit.is_error',
      },
    },
    { cls: SockFprog, tu: 'uapi', ctype: 'struct sock_fprog', fields: { len: 'len', filter: 'filter' } },
    { cls: SeccompMetadata, tu: 'uapi', ctype: 'struct seccomp_metadata', fields: { filterOff: 'filter_off', flags: 'flags' } },
    { cls: PeeksiginfoArgs, tu: 'uapi', ctype: 'struct ptrace_peeksiginfo_args', fields: { off: 'off', flags: 'flags', nr: 'nr' } },
    { cls: OpenHow, tu: 'uapi', ctype: 'struct open_how', fields: { flags: 'flags', mode: 'mode', resolve: 'resolve' } },
    { cls: FOwnerEx, tu: 'libc', ctype: 'struct f_owner_ex', fields: { type: 'type', pid: 'pid' } },
    { cls: CapUserHeader, tu: 'uapi', ctype: 'struct __user_cap_header_struct', fields: { version: 'version', pid: 'pid' } },
    { cls: CapUserData, tu: 'uapi', ctype: 'struct __user_cap_data_struct', fields: { effective: 'effective', permitted: 'permitted', inheritable: 'inheritable' } },
    { cls: KernelTermios, tu: 'uapi', ctype: 'struct termios', fields: { iflag: 'c_iflag', oflag: 'c_oflag', cflag: 'c_cflag', lflag: 'c_lflag', line: 'c_line', cc: 'c_cc' } },
    { cls: Winsize, tu: 'uapi', ctype: 'struct winsize', fields: { row: 'ws_row', col: 'ws_col', xpixel: 'ws_xpixel', ypixel: 'ws_ypixel' } },
    { cls: SchedParam, tu: 'libc', ctype: 'struct sched_param', fields: { priority: 'sched_priority' } },
    { cls: AuxvEntry, tu: 'libc', ctype: 'Elf64_auxv_t', fields: { type: 'a_type', value: 'a_un' } },
    { cls: Rlimit, tu: 'libc', ctype: 'struct rlimit64', fields: { cur: 'rlim_cur', max: 'rlim_max' } },
    { cls: Itimerspec, tu: 'libc', ctype: 'struct itimerspec', fields: { interval: 'it_interval', value: 'it_value' } },
    { cls: EpollEvent, tu: 'libc', ctype: 'struct epoll_event', fields: { events: 'events', data: 'data' } },
    { cls: KcmpEpollSlot, tu: 'uapi', ctype: 'struct kcmp_epoll_slot', fields: { efd: 'efd', tfd: 'tfd', toff: 'toff' } },
    { cls: FileHandleHead, tu: 'libc', ctype: 'struct file_handle', fields: { bytes: 'handle_bytes', type: 'handle_type' } },
    {
      cls: KernelStat, tu: 'libc', ctype: 'struct stat',
      fields: {
        dev: 'st_dev', ino: 'st_ino', nlink: 'st_nlink', mode: 'st_mode', uid: 'st_uid', gid: 'st_gid', rdev: 'st_rdev', size: 'st_size',
        blksize: 'st_blksize', blocks: 'st_blocks', atime: 'st_atim', mtime: 'st_mtim', ctime: 'st_ctim',
      },
    },
  ];
  const HEADERS = {
    libc: ['_GNU_SOURCE', 'signal.h', 'time.h', 'sys/time.h', 'sys/resource.h', 'fcntl.h', 'sched.h', 'sys/stat.h', 'elf.h', 'sys/epoll.h'],
    uapi: ['', 'asm/signal.h', 'linux/sched.h', 'linux/openat2.h', 'linux/ptrace.h', 'linux/prctl.h', 'linux/capability.h', 'linux/kcmp.h', 'linux/filter.h', 'asm/termios.h'],
  };

  function gccLayouts(tu: 'libc' | 'uapi'): Map<string, number> {
    const [define, ...headers] = HEADERS[tu];
    const lines = [
      ...(define ? [`#define ${define}`] : []),
      '#include <stddef.h>', '#include <stdio.h>',
      ...headers.map((h) => `#include <${h}>`),
      'int main(void) {',
    ];
    for (const s of KERNEL.filter((k) => k.tu === tu)) {
      const name = cstructOf(s.cls)!.name;
      lines.push(`  printf("${name} %zu\\n", sizeof(${s.ctype}));`);
      for (const [ours, theirs] of Object.entries(s.fields)) {
        lines.push(`  printf("${name}.${ours} %zu %zu\\n", offsetof(${s.ctype}, ${theirs}), sizeof(((${s.ctype} *)0)->${theirs}));`);
      }
    }
    lines.push('  return 0;', '}');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cptrst-cstruct-'));
    try {
      fs.writeFileSync(path.join(dir, 'l.c'), lines.join('\n') + '\n');
      execFileSync('gcc', ['-Wall', '-o', path.join(dir, 'l'), path.join(dir, 'l.c')], { stdio: 'pipe' });
      const out = execFileSync(path.join(dir, 'l'), { encoding: 'utf8' });
      const m = new Map<string, number>();
      for (const line of out.trim().split('\n')) {
        const [key, a, b] = line.split(' ');
        m.set(key, Number(a));
        if (b !== undefined) m.set(`${key}:size`, Number(b));
      }
      return m;
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  for (const tu of ['libc', 'uapi'] as const) {
    it(`kernel structs match gcc's offsetof/sizeof (${tu} headers)`, function () {
      this.timeout(30000);
      const c = gccLayouts(tu);
      let checked = 0;
      for (const s of KERNEL.filter((k) => k.tu === tu)) {
        const l = cstructOf(s.cls)!;
        expect(l.size, `sizeof ${s.ctype}`).to.equal(c.get(l.name));
        for (const f of l.fields) {
          const theirs = s.fields[f.name];
          // Only siginfo's whole-union view is not a C member; it must span the struct.
          if (theirs === undefined) {
            expect([l.name, f.name, f.offset, f.size]).to.deep.equal(['siginfo_t', 'raw', 0, l.size]);
            continue;
          }
          expect(f.offset, `offsetof(${s.ctype}, ${theirs})`).to.equal(c.get(`${l.name}.${f.name}`));
          expect(f.size, `sizeof ${s.ctype}.${theirs}`).to.equal(c.get(`${l.name}.${f.name}:size`));
          checked++;
        }
      }
      expect(checked).to.be.greaterThan(20);
    });
  }
});
