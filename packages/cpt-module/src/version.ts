/** The tool version written into image heads. */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the path is relative to the built file in dist/src
export const TOOL_VERSION: string = (require('../../package.json') as { version: string }).version;
