/**
 * `cptrst check`: can C/R work on this machine? Runs every MachineProbe registered by the loaded
 * modules, and shows the capability vector an image written here would carry.
 */
import type { ProbeResult } from '@cptrst/core';
import { Command, Invocation } from './command';
import { core } from './core';
import { cliVersion, common, loadModules } from './common';
import { hex, json, oneLine, out, table } from './output';

export const checkCommand: Command = {
  name: 'check',
  summary: 'check that this machine can checkpoint and restart',
  usage: '[--json] [-v]',
  description: [
    'Runs the machine probes of the loaded modules (ptrace, clone3 with set_tid, xsave, vDSO...)',
    'and prints one line per check, then the capability vector an image written on this machine',
    'would record in its head. Exits 0 when every essential check passes, 1 otherwise.',
  ].join(' '),
  declare(): void {
    /* only the global options */
  },
  run: runCheck,
};

interface Row extends ProbeResult {
  probe: string;
}

function runCheck(p: Invocation): number {
  const { CptError, ImageHead, buildImageHead, layoutOf, machineProbes, moduleContainer } = core();
  const c = common(p.options);
  const modules = loadModules(c);
  const container = moduleContainer();
  if (!container) throw new CptError('ENOSYS', 'no module is loaded');
  const probes = machineProbes(container);

  const rows: Row[] = [];
  for (const probe of probes) {
    try {
      for (const r of probe.probe()) rows.push({ probe: probe.name, name: r.name, ok: r.ok, essential: r.essential, detail: r.detail });
    } catch (e) {
      rows.push({ probe: probe.name, name: probe.name, ok: false, essential: true, detail: `the probe failed: ${oneLine((e as Error)?.message ?? String(e))}` });
    }
  }

  // The head a checkpoint would write, a failing probe reported as a row rather than thrown.
  const headProblems: string[] = [];
  const head = buildImageHead(container, cliVersion(), {
    onProbeError: (probe, e) => headProblems.push(`${probe.name}: ${oneLine((e as Error)?.message ?? String(e))}`),
  });
  for (const problem of headProblems) rows.push({ probe: 'head', name: 'capability vector', ok: false, essential: true, detail: problem });

  const ok = rows.every((r) => r.ok || !r.essential);
  if (c.json) {
    const fields = layoutOf(ImageHead)?.fields ?? [];
    const h = head as unknown as Record<string, unknown>;
    out(json({
      ok,
      modules,
      probes: rows,
      head: Object.fromEntries(fields.map((f) => [f.name, h[f.name]])),
    }));
    return ok ? 0 : 1;
  }

  const lines: string[] = [`modules: ${modules.join(', ')}`, ''];
  if (rows.length === 0) lines.push('no machine probes are registered by the loaded modules');
  else {
    lines.push(table([
      ['STATUS', 'PROBE', 'CHECK', 'DETAIL'],
      ...rows.map((r) => [r.ok ? 'ok' : r.essential ? 'FAIL' : 'missing', r.probe, r.name, r.detail]),
    ]));
  }
  lines.push('');
  lines.push('capability vector of an image written here:');
  lines.push(table([
    ['arch', head.arch],
    ['kernel', head.kernelRelease],
    ['page size', String(head.pageSize)],
    ['xsave', `features ${hex(head.xsaveFeatures)}, ${head.xsaveSize} bytes`],
    ['cpu flags', `${head.cpuFlags.length}${head.cpuFlags.length ? ': ' + head.cpuFlags.join(' ') : ''}`],
    ['vdso', `${head.vdsoSize} bytes, sha256 ${head.vdsoHash || '(none)'}`],
    ['tool', `cptrst ${head.toolVersion}`],
    ['hostname', head.hostname],
  ], '  '));
  lines.push('');
  const failed = rows.filter((r) => !r.ok && r.essential);
  lines.push(ok ? 'result: every essential check passed' : `result: ${failed.length} essential check(s) failed: ${failed.map((r) => r.name).join(', ')}`);
  out(lines.join('\n'));
  return ok ? 0 : 1;
}
