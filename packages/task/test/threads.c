/* Target with two threads: main and one more, both asleep. Prints tid=<the second thread> and READY. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile pid_t tid;

static void *run(void *arg) {
  (void)arg;
  tid = (pid_t)syscall(SYS_gettid);
  for (;;) pause();
  return NULL;
}

int main(void) {
  syscall(SYS_close_range, 3, ~0U, 0);
  pthread_t t;
  if (pthread_create(&t, NULL, run, NULL) != 0) return 1;
  while (!tid) usleep(1000);
  printf("tid=%d\nREADY\n", (int)tid);
  fflush(stdout);
  for (;;) pause();
}
