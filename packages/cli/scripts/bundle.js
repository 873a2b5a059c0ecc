#!/usr/bin/env node
/**
 * Makes the single-file CLI (`npm run build` runs it after tsc): esbuild bundles the compiled
 * JavaScript of dist/src/bundle.js and everything it requires into dist/src/cptrst.js (native
 * addons stay outside: koffi, lz4-napi, @node-rs/crc32, @node-rs/xxhash), then V8's code cache of that script goes
 * to dist/src/cptrst.js.cache. bin/cptrst.js hands it to V8, which skips compiling what the cache
 * holds; a cache made by another Node version is rejected by V8 and the script compiles as usual.
 * The script is compiled eagerly here (every function, not only those a run of the top level
 * reaches): a checkpoint or a restart calls hundreds of functions that V8 would otherwise compile
 * on their first call. That makes the cache 2.4 MB instead of 0.9 MB; reading it costs `--version`
 * a few ms and saves an idle checkpoint about 10 ms of CPU (bench/README.md, "Start-up: the
 * launcher, core on first use, an eager code cache").
 */
'use strict';
const fs = require('fs');
const path = require('path');
const Module = require('module');
const v8 = require('v8');
const vm = require('vm');
const esbuild = require('esbuild');

const dist = path.join(__dirname, '..', 'dist', 'src');
const out = path.join(dist, 'cptrst.js');

/**
 * commander requires child_process at its top level, for subcommands that are separate programs
 * (cptrst has none); child_process loads net, dgram and the streams, some 2 ms of every run. Its
 * require in commander becomes one made on first use of the module's properties.
 */
const lazyChildProcessInCommander = {
  name: 'lazy-child-process-in-commander',
  setup(build) {
    build.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
      /[\\/]node_modules[\\/]commander[\\/]/.test(args.importer) ? { path: 'child_process', namespace: 'cptrst-lazy' } : undefined);
    build.onLoad({ filter: /.*/, namespace: 'cptrst-lazy' }, () => ({
      contents: "'use strict';\nmodule.exports = new Proxy({}, { get: (_, key) => require('child_process')[key] });\n",
      loader: 'js',
    }));
  },
};

/**
 * TypeScript records each decorated field's declared type (`design:type`, emitDecoratorMetadata)
 * through reflect-metadata: 644 entries, a map of maps each, made at every start. Only core's
 * layout decorators read them, to catch a field whose declared type contradicts its decorator,
 * a check of the code and not of any input: the tests run it on the compiled modules. In the
 * bundle, TypeScript's helper for it returns a decorator that does nothing.
 */
const TS_METADATA_HELPER = 'var __metadata = (this && this.__metadata) || function (k, v) {\n' +
  '    if (typeof Reflect === "object" && typeof Reflect.metadata === "function") return Reflect.metadata(k, v);\n};';
const noDesignMetadata = {
  name: 'no-design-metadata',
  setup(build) {
    build.onLoad({ filter: /[\\/]packages[\\/][^\\/]+[\\/]dist[\\/]src[\\/].*\.js$/ }, (args) => {
      const source = fs.readFileSync(args.path, 'utf8');
      if (!source.includes('__metadata(')) return undefined;
      if (!source.includes(TS_METADATA_HELPER)) throw new Error(`${args.path}: TypeScript's __metadata helper is not the one scripts/bundle.js replaces`);
      return { contents: source.replace(TS_METADATA_HELPER, 'var __metadata = (function () { var none = function () {}; return function () { return none; }; })();'), loader: 'js' };
    });
  },
};

async function main() {
  await esbuild.build({
    entryPoints: [path.join(dist, 'bundle.js')],
    outfile: out,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external: ['koffi', 'lz4-napi', '@node-rs/crc32', '@node-rs/xxhash'],
    // Whitespace and syntax only: names stay, for stack traces (CPTRST_DEBUG=1).
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    // bin/cptrst.js reads the bundle as latin1, which only ASCII survives unchanged.
    charset: 'ascii',
    logLevel: 'warning',
    plugins: [lazyChildProcessInCommander, noDesignMetadata],
  });

  const source = fs.readFileSync(out, 'latin1');
  if (!/^[\x00-\x7f]*$/.test(source)) throw new Error(`${out}: not ASCII, which bin/cptrst.js reads as latin1`);
  // Eager for this compilation only: the flag is set back before the cache is made, so that the
  // cache carries the default flags and V8 accepts it in a process started without the flag.
  v8.setFlagsFromString('--no-lazy');
  const script = new vm.Script(Module.wrap(source), { filename: out });
  v8.setFlagsFromString('--lazy');
  const m = new Module(out, module);
  m.filename = out;
  script.runInThisContext().call(m.exports, m.exports, Module.createRequire(out), m, out, dist);
  m.exports.warm();
  fs.writeFileSync(`${out}.cache`, script.createCachedData());
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
