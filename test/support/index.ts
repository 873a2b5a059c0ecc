/** The integration-test harness: real workloads, the cptrst CLI, and /proc helpers. */
export { BIN_DIR, CLI_MAIN, REPO_ROOT, TMP_DIR, USER_DIR_PREFIX, WORK_DIR, WORKLOADS_SRC } from './paths';
export { isWorldReachable, makeTempDir, makeUserDir, makeWorldDir, removeTempDir, removeUserDir } from './tmp';
export { WORKLOADS, SYSCALL_VARIANTS, passLines, verdictName, workloadSpec } from './catalogue';
export type { SyscallVariant, WorkloadKind, WorkloadSpec } from './catalogue';
export { BASE_CFLAGS, binaryPath, buildWorkloads } from './build';
export {
  isOurWorkload,
  killByPid,
  killStartedWorkloads,
  procState,
  readMaps,
  sleep,
  startedWorkloadPids,
  waitGone,
} from './processes';
export type { MapEntry, ProcState, WaitGoneOptions } from './processes';
export { parseResult, startWorkload, trigger, waitResult, workloadVerdictName } from './workloads';
export type { ExitInfo, ParsedResult, StartOptions, Workload } from './workloads';
export { cptrst } from './cptrst';
export type { CptrstOptions, CptrstResult } from './cptrst';
