/* A second tracer: PTRACE_SEIZEs the pid of argv[1] (without stopping it), prints READY, sleeps. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  syscall(SYS_close_range, 3, ~0U, 0);
  if (argc < 2) return 2;
  if (ptrace(PTRACE_SEIZE, atoi(argv[1]), 0, 0) != 0) {
    perror("PTRACE_SEIZE");
    return 1;
  }
  printf("READY\n");
  fflush(stdout);
  for (;;) pause();
}
