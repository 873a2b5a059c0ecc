/** Usage errors exit 2 with a short usage text; help and version exit 0. */
import { expect } from 'chai';
import { cptrst } from './helpers';

const NO_STACK = /^\s+at /m;

describe('cptrst: usage', () => {
  const bad: Array<[string, string[], RegExp]> = [
    ['no command', [], /no command given/],
    ['an unknown command', ['frobnicate'], /unknown command "frobnicate"/],
    ['checkpoint without a pid', ['checkpoint', '-o', 'x.img'], /missing pid/],
    ['checkpoint with a pid that is not a number', ['checkpoint', '12abc', '-o', 'x.img'], /pid must be a positive integer/],
    ['checkpoint with pid 0', ['checkpoint', '0', '-o', 'x.img'], /pid must be a positive integer/],
    ['checkpoint without -o', ['checkpoint', '123'], /missing -o <file>/],
    ['checkpoint with -o and no value', ['checkpoint', '123', '-o'], /-o needs a value/],
    ['checkpoint --kill --leave-stopped', ['checkpoint', '123', '-o', 'x.img', '--kill', '--leave-stopped'], /exclude each other/],
    ['checkpoint --leave-stopped --kill', ['checkpoint', '123', '-o', 'x.img', '--leave-stopped', '--kill'], /exclude each other/],
    ['checkpoint with -o twice', ['checkpoint', '123', '-o', 'x.img', '-o', 'y.img'], /--output given twice/],
    ['restart --kill (a checkpoint option)', ['restart', 'x.img', '--kill'], /unknown option --kill/],
    ['--module without a value', ['check', '--module'], /--module needs a value/],
    ['help for an unknown command', ['help', 'frobnicate'], /unknown command "frobnicate"/],
    ['checkpoint with two pids', ['checkpoint', '123', '456', '-o', 'x.img'], /unexpected argument "456"/],
    ['restart without a file', ['restart'], /missing the image file/],
    ['restart with --pidfile and no value', ['restart', 'x.img', '--pidfile'], /--pidfile needs a value/],
    ['show without a file', ['show'], /missing the image file/],
    ['show with an unknown option', ['show', 'x.img', '--bogus'], /unknown option --bogus/],
    ['an unknown short option', ['show', '-q', 'x.img'], /unknown option -q/],
    ['check with an argument', ['check', 'extra'], /unexpected argument "extra"/],
    ['a flag given a value', ['show', '--json=yes', 'x.img'], /--json takes no value/],
  ];
  for (const [what, args, message] of bad) {
    it(`${what}: exit 2, the reason and a usage line on stderr`, () => {
      const r = cptrst(args);
      expect(r.status, r.stderr).to.equal(2);
      expect(r.errLines[0]).to.match(/^cptrst: /);
      expect(r.stderr).to.match(message);
      expect(r.stderr).to.match(/usage: cptrst/);
      expect(r.stderr).not.to.match(NO_STACK);
      expect(r.stdout).to.equal('');
    });
  }

  it('with --json a usage error is {"error": {code: "EUSAGE"}} on stdout, still exit 2', () => {
    const r = cptrst(['checkpoint', '--json', '-o', 'x.img']);
    expect(r.status).to.equal(2);
    const doc = JSON.parse(r.stdout);
    expect(doc.error.code).to.equal('EUSAGE');
    expect(doc.error.message).to.match(/missing pid/);
  });

  it('--help and help print the commands and exit 0', () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = cptrst(args);
      expect(r.status).to.equal(0);
      for (const c of ['checkpoint', 'restart', 'show', 'check']) expect(r.stdout).to.contain(c);
    }
  });

  it('<command> --help prints that command\'s usage and options and exits 0', () => {
    const r = cptrst(['checkpoint', '--help']);
    expect(r.status).to.equal(0);
    expect(r.stdout).to.match(/^usage: cptrst checkpoint <pid> -o <file>/);
    expect(r.stdout).to.contain('--leave-stopped');
    expect(r.stdout).to.contain('--module');
    expect(cptrst(['help', 'show']).stdout).to.match(/^usage: cptrst show <file>/);
    expect(cptrst(['restart', '-h']).stdout).to.contain('--pidfile');
  });

  it('--version prints the version', () => {
    const r = cptrst(['--version']);
    expect(r.status).to.equal(0);
    expect(r.stdout).to.match(/^cptrst \d+\.\d+\.\d+/);
  });

  it('the general help lists every command with its summary and the exit status', () => {
    const r = cptrst(['--help']);
    expect(r.stdout).to.match(/^usage: cptrst <command> \[options\]/);
    expect(r.stdout).to.match(/^\s+checkpoint .*write an image of a running process$/m);
    expect(r.stdout).to.match(/^\s+check .*check that this machine can checkpoint and restart$/m);
    expect(r.stdout).to.contain('-m, --module <name|path>');
    expect(r.stdout).to.match(/^exit status: 0 success, 1 .* 2 usage error/m);
    expect(r.stderr).to.equal('');
  });

  it('global options may come before the command', () => {
    const r = cptrst(['--json', '--module', '@cptrst/cpt-module', 'show']);
    expect(r.status).to.equal(2);
    expect(JSON.parse(r.stdout).error.code).to.equal('EUSAGE');
  });
});
