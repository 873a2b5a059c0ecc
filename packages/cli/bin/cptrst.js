#!/usr/bin/env node
// The installed `cptrst` command: a committed shim, so that npm links it at install time,
// before the TypeScript build has produced dist/.
require('../dist/src/main.js').run();
