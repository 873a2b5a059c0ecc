/** @cptrst/cli as a library: the command table and main(argv) (the bin is dist/src/main.js). */
export { main, generalHelp, COMMANDS } from './main';
export type { Command } from './command';
