#!/usr/bin/env node
/**
 * Makes the single-file CLI (`npm run build` runs it after tsc): esbuild bundles the compiled
 * JavaScript of dist/src/bundle.js and everything it requires into dist/src/cptrst.js (native
 * addons stay outside: koffi, lz4-napi, @node-rs/crc32), then V8's code cache of that script, compiled and run
 * once here (the top level of every module), goes to dist/src/cptrst.js.cache. bin/cptrst.js
 * hands it to V8, which skips compiling what the cache holds; a cache made by another Node
 * version is rejected by V8 and the script compiles as usual.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const Module = require('module');
const vm = require('vm');
const esbuild = require('esbuild');

const dist = path.join(__dirname, '..', 'dist', 'src');
const out = path.join(dist, 'cptrst.js');
esbuild.buildSync({
  entryPoints: [path.join(dist, 'bundle.js')],
  outfile: out,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['koffi', 'lz4-napi', '@node-rs/crc32'],
  // Whitespace and syntax only: names stay, for stack traces (CPTRST_DEBUG=1).
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  // bin/cptrst.js reads the bundle as latin1, which only ASCII survives unchanged.
  charset: 'ascii',
  logLevel: 'warning',
});

const source = fs.readFileSync(out, 'latin1');
if (!/^[\x00-\x7f]*$/.test(source)) throw new Error(`${out}: not ASCII, which bin/cptrst.js reads as latin1`);
const script = new vm.Script(Module.wrap(source), { filename: out });
const m = new Module(out, module);
m.filename = out;
script.runInThisContext().call(m.exports, m.exports, Module.createRequire(out), m, out, dist);
m.exports.warm();
fs.writeFileSync(`${out}.cache`, script.createCachedData());
