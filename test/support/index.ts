/** The integration-test harness: real workloads, the cptrst CLI, and /proc helpers. */
export { CLI_MAIN, REPO_ROOT } from './paths';
export { makeTempDir, makeUserDir, makeWorldDir, removeTempDir, removeUserDir } from './tmp';
export { SYSCALL_VARIANTS, passLines, verdictName } from './catalogue';
export { binaryPath, buildWorkloads } from './build';
export {
  copiesOf,
  describeStuck,
  hasFileIn,
  isOurWorkload,
  killByPid,
  killStartedWorkloads,
  membersOf,
  procState,
  readMaps,
  sleep,
  startedWorkloadPids,
  tracerOf,
  trackersOf,
  waitGone,
} from './processes';
export { parseResult, startWorkload, trigger, waitResult } from './workloads';
export type { Workload } from './workloads';
export { cptrst } from './cptrst';
export { editedObject, readImage, recodeImage } from './image';
export type { CopiedRecord } from './image';
export { afterPreRead, checkpointKill, expectPass, expectRunningUntraced, failAfterDump, itRestoresWorkload, pinToOneCpu, restartPasses } from './cr';
