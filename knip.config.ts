// knip: unused files, exports and dependencies across the workspaces (`npm run knip`).
// Entries are what runs: each package's index (its public API) and the CLI's bin shim, which knip
// takes from package.json (main, bin); the mocha test files; and the scripts that tests start as
// separate processes by path. Exports of an entry file are public API and not reported.
import type { KnipConfig } from 'knip';

const tests = ['test/**/*.test.ts'];
const project = ['src/**/*.ts', 'test/**/*.ts'];

const config: KnipConfig = {
  // System tools that tests and the benchmark run (.ci/run installs gcc; the rest come with the system).
  ignoreBinaries: ['gcc', 'mount', 'umount', 'mkfifo', 'setpriv', 'flock', 'ipcrm', 'unshare', 'setsid'],
  workspaces: {
    '.': {
      entry: [...tests, 'bench/bench.ts', 'bench/compare.ts', 'bench/tree.ts', 'bench/lazy.ts', 'bench/incremental.ts', 'bench/calls.ts'],
      project: ['test/**/*.ts', 'bench/**/*.ts'],
    },
    'packages/*': {
      entry: [...tests],
      project,
    },
    'packages/arch-x86': {
      // survival.test.ts starts the tracer as a process of its own.
      entry: [...tests, 'test/fixtures/tracer-loop.ts'],
      project,
    },
    'packages/core': {
      // image.test.ts pipes the image between these two processes.
      entry: [...tests, 'test/fixtures/image-pipe-writer.ts', 'test/fixtures/image-pipe-reader.ts'],
      project,
      // Its tests load the machine's syscall table from the arch package (.mocharc.json), which
      // depends on core: declaring it would make the workspaces a cycle.
      ignoreDependencies: ['@cptrst/arch-x86'],
    },
    'packages/task': {
      // create.test.ts starts this helper process.
      entry: [...tests, 'test/fixtures/create-and-hold.ts'],
      project,
    },
    'packages/cli': {
      // src/bundle.ts: the entry of the single-file CLI (scripts/bundle.js).
      entry: ['src/main.ts', 'src/bundle.ts', ...tests],
      project,
    },
    'examples/plugin-secretmem': {
      entry: [...tests],
      project,
    },
  },
};

export default config;
