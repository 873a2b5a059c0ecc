/*
 * Benchmark workload: touches N MiB of private anonymous memory with a pattern that differs in
 * every 8-byte word (page index and word index), says READY, then spins until the trigger file
 * exists. Then it checks every word of every page and writes PASS or FAIL to stdout.
 * usage: touch MIB TRIGGER [TIMEOUT_S [THREADS [HASHED]]]   (it gives up, with "TIMEOUT", after TIMEOUT_S
 * seconds, 600 by default, so a benchmark that died cannot leave it spinning forever)
 * With TOUCH_IDLE=1 in the environment it sleeps (10 ms at a time) instead of spinning while it
 * waits for the trigger: a target that leaves the machine's CPUs to the checkpoint.
 * With THREADS, that many more threads wait on a condition variable, each with its own
 * thread-local value; after the trigger each checks its value and reports, and the PASS line
 * counts them (FAIL if any is missing or wrong).
 * With HASHED (usage: touch MIB TRIGGER TIMEOUT_S THREADS HASHED), only the first HASHED words of
 * each page differ as above and the rest hold the page number: pages that compress (to about
 * HASHED/512 of their size with LZ4); every word is still checked.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t word(size_t page, size_t w) { return ((uint64_t)page << 32 | w) * 0x9e3779b97f4a7c15ull; }
/* The first `hashed` words of a page hold word(); the rest the page number: data that compresses. */
static size_t hashed = 4096 / 8;
static uint64_t value(size_t page, size_t w) { return w < hashed ? word(page, w) : (uint64_t)page; }

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int go, ready, good, bad;
static __thread uint64_t mine;

static void *waiter(void *arg) {
  uint64_t i = (uint64_t)(uintptr_t)arg;
  mine = word(i, 7);
  pthread_mutex_lock(&lock);
  ready++;
  while (!go) pthread_cond_wait(&cond, &lock);
  if (mine == word(i, 7)) good++; else bad++;
  pthread_mutex_unlock(&lock);
  return NULL;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 64, n = mib << 20, words = 4096 / 8;
  const char *trigger = argc > 2 ? argv[2] : "/nonexistent";
  long timeout = argc > 3 ? strtol(argv[3], 0, 10) : 600;
  /* 0 MiB: an idle process with only its own few pages */
  uint64_t *p = n ? mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : 0;
  if (p == MAP_FAILED) return 2;
  long threads = argc > 4 ? strtol(argv[4], 0, 10) : 0;
  if (argc > 5) hashed = strtoul(argv[5], 0, 10);
  for (long t = 0; t < threads; t++) {
    pthread_t h;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 << 10);
    if (pthread_create(&h, &a, waiter, (void *)(uintptr_t)t) != 0) return 2;
  }
  for (;;) {
    pthread_mutex_lock(&lock);
    int r = ready;
    pthread_mutex_unlock(&lock);
    if (r == threads) break;
    usleep(1000);
  }
  for (size_t pg = 0; pg < n / 4096; pg++)
    for (size_t w = 0; w < words; w++) p[pg * words + w] = value(pg, w);
  printf("READY %d\n", getpid());
  fflush(stdout);
  time_t start = time(0);
  /* TOUCH_IDLE=1 in the environment: sleeps between looks at the trigger instead of spinning */
  int idle = getenv("TOUCH_IDLE") != 0;
  for (volatile unsigned long k = 0;; k++) {
    if (idle) usleep(10000);
    else if ((k & 0xffffff) != 0) continue;
    if (access(trigger, F_OK) == 0) break;
    if (time(0) - start > timeout) { printf("TIMEOUT\n"); return 3; }
  }
  for (size_t pg = 0; pg < n / 4096; pg++)
    for (size_t w = 0; w < words; w++)
      if (p[pg * words + w] != value(pg, w)) { printf("FAIL at page %zu word %zu\n", pg, w); return 1; }
  pthread_mutex_lock(&lock);
  go = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  for (int k = 0; k < 20000; k++) {
    pthread_mutex_lock(&lock);
    int done = good + bad;
    pthread_mutex_unlock(&lock);
    if (done == threads) break;
    usleep(1000);
  }
  if (good != threads) { printf("FAIL: %d of %ld threads checked their value (%d wrong)\n", good, threads, bad); return 1; }
  printf("PASS %zu pages, %ld threads\n", n / 4096, threads);
  return 0;
}
