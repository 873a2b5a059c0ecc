/**
 * The address space as a whole (seed 003's cpt_mm.c / rst_mm.c). The MM object carries the mm
 * fields (code, data, brk, stack, arg and env ranges, auxv, exe) and the layout of every area;
 * VMA objects and their PAGES follow. At restart the MM object clears the new process's
 * address space around the scratch area and the vDSO, moves the vDSO into place and sets the
 * mm fields with PR_SET_MM_MAP; each VMA is then mapped and filled.
 */
import {
  CheckpointContext, CheckpointTask, CptError, DumpHandler, ObjectType, RestartContext, RestartTask, RestoreHandler,
  RestoreObject, Tokens, bytes, linux, objectType, records, refuse, str, u64, u64s,
} from '@cptrst/core';
import { VmaImage, VmaKindHandler, describeVma, kindOf, protOf, taskVmas, validateVma } from './vma';
import { dumpPages, restorePages, storedRuns } from './pages';
import { VdsoPiece, moveVdso, vdsoPieces } from './vdso';
import { Range, complement, findFreeRange, overlaps } from './ranges';

const { SYS, PR, PROT, MAP, O } = linux;
export const MM_ORDER = 200;

@objectType(ObjectType.MM, 'mm', { parents: [ObjectType.TASK] })
export class MmImage {
  @u64() startCode = 0n;
  @u64() endCode = 0n;
  @u64() startData = 0n;
  @u64() endData = 0n;
  @u64() startBrk = 0n;
  @u64() brk = 0n;
  @u64() startStack = 0n;
  @u64() argStart = 0n;
  @u64() argEnd = 0n;
  @u64() envStart = 0n;
  @u64() envEnd = 0n;
  @bytes() auxv: Buffer = Buffer.alloc(0);
  @str() exe = '';
  /** Every area's [start, end), so restart can keep clear of them before the VMAs arrive. */
  @u64s() layout: bigint[] = [];
  @records(VdsoPiece) vdso: VdsoPiece[] = [];
}

export class MmDump implements DumpHandler {
  readonly name = 'mm';
  readonly order = MM_ORDER;

  check(ctx: CheckpointContext, task: CheckpointTask): void {
    const vmas = taskVmas(task);
    for (const v of vmas) kindOf(ctx, task, v);
    task.state.set('mm.vmas', vmas); // the task is frozen: dump uses the same list
    const exe = linux.readExe(task.pid);
    if (exe.endsWith(' (deleted)')) refuse(task.pid, `exe ${exe}`, 'the executable has been deleted');
  }

  async dump(ctx: CheckpointContext, task: CheckpointTask): Promise<void> {
    const t = task.tracee;
    const st = linux.readStat(task.pid);
    const mm = new MmImage();
    mm.startCode = st.startcode;
    mm.endCode = st.endcode;
    mm.startData = st.startData;
    mm.endData = st.endData;
    mm.startBrk = st.startBrk;
    mm.brk = t.syscallOk(SYS.brk, [0], 'brk(0)'); // the current break: /proc shows only its start
    mm.startStack = st.startstack;
    mm.argStart = st.argStart;
    mm.argEnd = st.argEnd;
    mm.envStart = st.envStart;
    mm.envEnd = st.envEnd;
    mm.auxv = linux.readAuxv(task.pid);
    mm.exe = linux.readExe(task.pid);
    const vmas = (task.state.get('mm.vmas') as ReturnType<typeof taskVmas> | undefined) ?? taskVmas(task);
    mm.layout = vmas.flatMap((v) => [v.start, v.end]);
    mm.vdso = vdsoPieces(task.pid);
    ctx.write(mm, task.tag);

    for (const v of vmas) {
      const kind = kindOf(ctx, task, v);
      const img = new VmaImage();
      Object.assign(img, { start: v.start, end: v.end, prot: protOf(v), shared: v.shared, kind: kind.kind, path: v.path, pgoff: v.inode ? v.offset : 0n, vmFlags: v.vmFlags });
      kind.describe(task, v, img);
      const runs = ctx.timed('pagemap', () => storedRuns(task, v, kind));
      img.pageCount = BigInt(runs.reduce((a, r) => a + r[1], 0));
      const vmaTag = ctx.write(img, task.tag);
      await dumpPages(ctx, task, v, runs, vmaTag);
    }
  }
}

export class MmRestore implements RestoreHandler {
  readonly name = 'mm';
  readonly order = MM_ORDER;
  readonly types = [ObjectType.MM, ObjectType.VMA, ObjectType.PAGES];

  restore(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    switch (o.type) {
      case ObjectType.MM:
        return ctx.timed('mm', () => this.restoreMm(ctx, task, o.obj as MmImage));
      case ObjectType.VMA:
        return ctx.timed('vmas', () => this.restoreVma(ctx, task, o));
      case ObjectType.PAGES:
        return ctx.timed('pages', () => restorePages(ctx, task, o));
    }
  }

  /** Areas mapped writable only to be filled get their own protection back. */
  finish(_ctx: RestartContext, task: RestartTask): void {
    const t = task.tracee!;
    for (const v of (task.state.get('mm.tempWritable') as VmaImage[] | undefined) ?? []) {
      t.syscallOk(SYS.mprotect, [v.start, v.end - v.start, v.prot], `mprotect of ${describeVma(v)}`);
    }
  }

  private restoreMm(ctx: RestartContext, task: RestartTask, mm: MmImage): void {
    const t = task.tracee!;
    if (mm.layout.length % 2) throw new CptError('EBADIMG', 'odd mm layout', { pid: task.pid, object: 'mm' });
    const layout: Range[] = [];
    for (let i = 0; i < mm.layout.length; i += 2) layout.push({ start: mm.layout[i], end: mm.layout[i + 1] });
    task.state.set('mm.vmasByTag', new Map<number, VmaImage>());
    task.state.set('mm.layout', layout);

    // The scratch area must not sit where the image has memory.
    let scratch = t.reservedRanges()[0];
    if (layout.some((r) => overlaps(r, scratch))) {
      const here = linux.readMaps(task.pid);
      const spot = findFreeRange(scratch.end - scratch.start, [...layout, ...here]);
      t.syscallOk(SYS.mmap, [spot.start, spot.end - spot.start, PROT.READ | PROT.WRITE | PROT.EXEC, MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE, -1, 0], 'mmap of a new scratch area');
      const old = scratch;
      t.adoptScratch(spot.start);
      t.syscallOk(SYS.munmap, [old.start, old.end - old.start], 'munmap of the old scratch area');
      scratch = t.reservedRanges()[0];
    }

    // Clear everything of the helper's but the scratch area and the vDSO.
    const keep: Range[] = [scratch, ...vdsoPieces(task.pid)];
    for (const r of complement(keep)) t.syscallOk(SYS.munmap, [r.start, r.end - r.start], `munmap ${r.start.toString(16)}-${r.end.toString(16)}`);
    moveVdso(ctx, task, mm.vdso, [scratch, ...layout]);

    // mm fields and /proc/PID/exe. The helper's executable is unmapped now, so exe_file may change.
    const exeFd = t.syscallOk(SYS.openat, [linux.AT_FDCWD, t.stage(Buffer.from(mm.exe + '\0'), 4096), O.RDONLY | O.CLOEXEC, 0], `open of the executable ${mm.exe}`);
    try {
      if (mm.auxv.length > 4096 || mm.auxv.length % 16) throw new CptError('EBADIMG', `auxv of ${mm.auxv.length} bytes`, { pid: task.pid, object: 'auxv' });
      const auxvAt = t.stage(mm.auxv, 8192);
      const map = linux.encodePrctlMmMap({
        startCode: mm.startCode, endCode: mm.endCode, startData: mm.startData, endData: mm.endData,
        startBrk: mm.startBrk, brk: mm.brk, startStack: mm.startStack, argStart: mm.argStart, argEnd: mm.argEnd,
        envStart: mm.envStart, envEnd: mm.envEnd, auxv: auxvAt, auxvSize: mm.auxv.length, exeFd: Number(exeFd),
      });
      t.syscallOk(SYS.prctl, [PR.SET_MM, linux.PR_SET_MM.MAP, t.stage(map, 0), map.length, 0], 'prctl(PR_SET_MM_MAP)');
    } finally {
      t.syscall(SYS.close, [exeFd]);
    }
  }

  private restoreVma(ctx: RestartContext, task: RestartTask, o: RestoreObject): void {
    const img = validateVma(task, o);
    const kind = ctx.all<VmaKindHandler>(Tokens.VmaKind).find((k) => k.kind === img.kind);
    if (!kind) throw new CptError('EOPNOTSUPP', `no handler for ${img.kind} memory areas is loaded`, { pid: task.pid, object: describeVma(img) });
    const scratch = task.tracee!.reservedRanges();
    if (scratch.some((r) => overlaps(r, img))) throw new CptError('EBADIMG', `${describeVma(img)} is not in the image's layout`, { pid: task.pid, object: describeVma(img) });
    // Shared areas cannot be written through /proc/PID/mem unless writable; private ones can (FOLL_FORCE).
    const tempWritable = img.pageCount > 0n && img.shared && !(img.prot & PROT.WRITE);
    kind.map(ctx, task, img, tempWritable);
    if (tempWritable) {
      const list = (task.state.get('mm.tempWritable') as VmaImage[] | undefined) ?? [];
      list.push(img);
      task.state.set('mm.tempWritable', list);
    }
    (task.state.get('mm.vmasByTag') as Map<number, VmaImage>).set(o.tag, img);
  }
}
