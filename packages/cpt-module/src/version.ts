/** The tool version written into image heads. */
export const TOOL_VERSION: string = (require('../../package.json') as { version: string }).version;
