#!/bin/sh
":" //; unset NODE_EXTRA_CA_CERTS; exec node "$0" "$@"
// The installed `cptrst` command: a committed shim, so that npm links it at install time, before
// the build has produced dist/. Run as a command, it is a shell script for one line: Node reads
// the certificates that NODE_EXTRA_CA_CERTS names at start-up, before any JavaScript runs (some
// 40 ms for a system bundle), and cptrst makes no TLS connection, so the line above starts Node
// without it (the shell's `:` ignores `//`, and to JavaScript that line is a string and a
// comment). Run as `node cptrst.js`, it is JavaScript from the start. It runs the single-file CLI
// (dist/src/cptrst.js, made by scripts/bundle.js) with V8's code cache of it, or the compiled
// modules if there is no bundle.
'use strict';
const fs = require('fs');
const path = require('path');

const dist = path.join(__dirname, '..', 'dist', 'src');
const bundle = path.join(dist, 'cptrst.js');
let source;
try {
  // esbuild writes ASCII (non-ASCII characters escaped): read as latin1, V8 takes the bytes as they are.
  source = fs.readFileSync(bundle, 'latin1');
} catch {
  source = undefined;
}
if (source === undefined) {
  require('../dist/src/main.js').run();
} else {
  const Module = require('module');
  const vm = require('vm');
  let cachedData;
  try {
    cachedData = fs.readFileSync(`${bundle}.cache`);
  } catch {
    cachedData = undefined;
  }
  const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData });
  const m = new Module(bundle, module);
  m.filename = bundle;
  m.paths = Module._nodeModulePaths(dist);
  script.runInThisContext().call(m.exports, m.exports, Module.createRequire(bundle), m, bundle, dist);
  if (process.env.CPTRST_DEBUG && script.cachedDataRejected) process.stderr.write('cptrst: the code cache was rejected (another Node version?); compiled instead\n');
  m.exports.run();
}
