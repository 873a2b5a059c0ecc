/*
 * Target with children: one that sleeps (childpid=N) and one that has exited and is left a
 * zombie, never waited for (zombiepid=N). Prints both, then READY, and sleeps.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  syscall(SYS_close_range, 3, ~0U, 0);
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    for (;;) pause();
  }
  pid_t zombie = fork();
  if (zombie < 0) return 1;
  if (zombie == 0) _exit(0);
  siginfo_t si;
  /* Wait until it has exited, without reaping it. */
  if (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) != 0) return 1;
  printf("childpid=%d\nzombiepid=%d\nREADY\n", (int)child, (int)zombie);
  fflush(stdout);
  for (;;) pause();
}
