/**
 * Linux bindings: ptrace, struct layouts, /proc parsers, machine facts. The one place in cptrst
 * where Linux facts live; those of one architecture only (its syscall numbers, its own ptrace
 * requests and regsets) are its arch package's (@cptrst/arch-x86's linux-x86.ts).
 */
export * from './constants';
export * from './syscalls';
export * from './errno';
export * from './structs';
export { rawSyscall, checkedSyscall, errnoError, sysconf, pagemapScan, withFileMapping, withFileWindow, _SC_PAGESIZE, _SC_CLK_TCK, _SC_NPROCESSORS_ONLN } from './libc';
export { MemoryRegion } from './libc';
export type { PageRegion } from './libc';
export type { SyscallArg } from './libc';
export * from './ptrace';
export * from './wait';
export * from './process';
export * from './files';
export * from './memory';
export * from './userfaultfd';
export * from './proc';
export * from './machine';
export * from './helper-process';
export * from './users';
export * from './taskinfo';
export * from './cgroup';
export * from './sysvipc';
export * from './ipc';
