/** `cptrst check` (needs the real module, @cptrst/cpt-module, to load). */
import * as fs from 'fs';
import * as path from 'path';
import { expect } from 'chai';
import { cptrst, tmpDir } from './helpers';

describe('cptrst check', () => {
  it('--json lists the probes and the capability vector, and its exit status follows the essential ones', () => {
    const r = cptrst(['check', '--json']);
    expect(r.status, r.stderr).to.be.oneOf([0, 1]);
    const doc = JSON.parse(r.stdout);
    expect(doc.modules).to.include('@cptrst/cpt-module');
    expect(doc.probes).to.be.an('array').that.is.not.empty;
    for (const p of doc.probes) {
      expect(p.probe).to.be.a('string');
      expect(p.name).to.be.a('string');
      expect(p.ok).to.be.a('boolean');
      expect(p.essential).to.be.a('boolean');
      expect(p.detail).to.be.a('string');
    }
    const essentialOk = doc.probes.every((p: { ok: boolean; essential: boolean }) => p.ok || !p.essential);
    expect(doc.ok).to.equal(essentialOk);
    expect(r.status).to.equal(essentialOk ? 0 : 1);
    expect(doc.head.arch).to.equal('x86_64');
    expect(doc.head.pageSize).to.be.a('number');
    expect(doc.head.xsaveFeatures).to.match(/^0x[0-9a-f]+$/);
  });

  it('prints a table for a person', () => {
    const r = cptrst(['check']);
    expect(r.status).to.be.oneOf([0, 1]);
    expect(r.stdout).to.match(/^STATUS\s+PROBE\s+CHECK\s+DETAIL$/m);
    expect(r.stdout).to.contain('capability vector of an image written here:');
    expect(r.stdout).to.match(/^result: /m);
  });

  it('a module that cannot be loaded is one error line, exit 1', () => {
    const r = cptrst(['check', '--module', './no/such/module']);
    expect(r.status).to.equal(1);
    expect(r.errLines).to.have.length(1);
    expect(r.errLines[0]).to.match(/^cptrst: ENOENT: .*cannot load module/);
  });

  it('--module is repeatable and replaces the default list', () => {
    // A module that registers nothing: with it alone there is no probe; named with the default, the default's probes run.
    const dir = tmpDir();
    const empty = path.join(dir, 'empty-module.js');
    fs.writeFileSync(empty, 'exports.register = () => {};\n');
    try {
      const alone = cptrst(['check', '--json', '--module', empty]);
      expect(alone.status, alone.stderr).to.equal(0);
      const a = JSON.parse(alone.stdout);
      expect(a.modules).to.deep.equal([empty]);
      expect(a.probes).to.deep.equal([]);
      const both = cptrst(['check', '--json', '-m', '@cptrst/cpt-module', '-m', empty]);
      const b = JSON.parse(both.stdout);
      expect(b.modules).to.deep.equal(['@cptrst/cpt-module', empty]);
      expect(b.probes).to.be.an('array').that.is.not.empty;
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
