/**
 * The installed command (bin/cptrst.js) runs the single-file bundle that `npm run build` makes,
 * with its V8 code cache. A plugin that requires @cptrst/core by name gets the bundle's own copy
 * (one set of registries), even from a directory with no node_modules to find it in.
 */
import { expect } from 'chai';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { tmpDir } from './helpers';

const BIN = path.resolve(__dirname, '..', '..', 'bin', 'cptrst.js');
const BUNDLE = path.resolve(__dirname, '..', 'src', 'cptrst.js');

function run(args: string[], how: 'node' | 'exec' = 'node', env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  // Executed, the launcher line starts `node` from PATH: the Node that runs these tests.
  const full = { ...process.env, CPTRST_DEBUG: '1', PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}`, ...env };
  const r = how === 'node' ? spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60000, env: full }) : spawnSync(BIN, args, { encoding: 'utf8', timeout: 60000, env: full });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the bundled command (bin/cptrst.js)', () => {
  it('exists after the build, with a code cache that this Node accepts', () => {
    expect(fs.existsSync(BUNDLE), `${BUNDLE}: run npm run build`).to.equal(true);
    expect(fs.statSync(`${BUNDLE}.cache`).size).to.be.greaterThan(0);
    const r = run(['--version']);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^cptrst \d+\.\d+\.\d+\n$/);
    expect(r.stderr).to.not.match(/code cache was rejected/);
  });

  it('run as a command, starts Node without NODE_EXTRA_CA_CERTS and passes its arguments unchanged', () => {
    // Node warns at start-up when it cannot read the file NODE_EXTRA_CA_CERTS names: run by node
    // (the shell line is then a comment) it does; executed, the launcher has removed the variable.
    const env = { NODE_EXTRA_CA_CERTS: '/nonexistent/cptrst-test-ca.pem' };
    const direct = run(['--version'], 'node', env);
    expect(direct.status, direct.stderr).to.equal(0);
    expect(direct.stderr).to.match(/extra certs/);
    const launched = run(['--version'], 'exec', env);
    expect(launched.status, launched.stderr).to.equal(0);
    expect(launched.stdout).to.equal(direct.stdout);
    expect(launched.stderr).to.equal('');
    const odd = run(['check', "a b 'c' \"$HOME\" *"], 'exec');
    expect(odd.status).to.equal(2);
    expect(odd.stderr).to.contain(`unexpected argument ${JSON.stringify("a b 'c' \"$HOME\" *")}`);
  });

  it('gives a plugin the bundle\'s @cptrst/core, in which the default module is already loaded', () => {
    const dir = tmpDir();
    try {
      const plugin = path.join(dir, 'plugin.js');
      fs.writeFileSync(plugin, [
        "const core = require('@cptrst/core');",
        'exports.register = () => {',
        "  if (!core.loadedModules().includes('@cptrst/cpt-module')) throw new Error('a second copy of @cptrst/core: ' + core.loadedModules().join(','));",
        "  require('fs').writeFileSync(__filename + '.ran', 'yes');",
        '};',
      ].join('\n'));
      const r = run(['--module', '@cptrst/cpt-module', '--module', plugin, 'check']);
      expect(r.status, r.stderr).to.equal(0);
      expect(fs.readFileSync(`${plugin}.ran`, 'utf8')).to.equal('yes');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
