/*
 * What changing and reading page tables costs on this machine: fork (which copies a process's page
 * table entries and write-protects them), userfaultfd write protection, mprotect, and PAGEMAP_SCAN
 * (reading them: the pages written since they were armed). Each over MIB of touched private
 * anonymous memory. usage: ptecost MIB
 * Declares the PAGEMAP_SCAN structures itself: older C headers lack them (Linux 6.7).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct page_region { uint64_t start, end, categories; };
struct pm_scan_arg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING 1
#define PAGE_IS_WRITTEN 2
#define FEATURE_WP_UNPOPULATED (1 << 13)
#define FEATURE_WP_ASYNC (1 << 15)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int uffd_wp(char *p, size_t len, uint64_t features) {
  int u = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
  struct uffdio_api a = {.api = UFFD_API, .features = features};
  struct uffdio_register r = {.range = {(uintptr_t)p, len}, .mode = UFFDIO_REGISTER_MODE_WP};
  if (u < 0 || ioctl(u, UFFDIO_API, &a) || ioctl(u, UFFDIO_REGISTER, &r)) { perror("userfaultfd"); exit(1); }
  return u;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: ptecost MIB\n"); return 2; }
  size_t len = (size_t)atoi(argv[1]) << 20;
  char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) { perror("mmap"); return 1; }
  for (size_t i = 0; i < len; i += 4096) p[i] = 1;

  double t = now();
  pid_t k = fork();
  if (k == 0) { pause(); _exit(0); }
  printf("fork                         %7.2f ms\n", now() - t);
  kill(k, SIGKILL);
  waitpid(k, 0, 0);

  int u = uffd_wp(p, len, FEATURE_WP_UNPOPULATED);
  struct uffdio_writeprotect w = {.range = {(uintptr_t)p, len}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
  t = now();
  if (ioctl(u, UFFDIO_WRITEPROTECT, &w)) { perror("UFFDIO_WRITEPROTECT"); return 1; }
  printf("UFFDIO_WRITEPROTECT          %7.2f ms\n", now() - t);
  w.mode = 0;
  t = now();
  ioctl(u, UFFDIO_WRITEPROTECT, &w);
  printf("  and its undoing            %7.2f ms\n", now() - t);
  close(u);

  t = now();
  mprotect(p, len, PROT_READ);
  printf("mprotect                     %7.2f ms\n", now() - t);
  mprotect(p, len, PROT_READ | PROT_WRITE);

  u = uffd_wp(p, len, FEATURE_WP_UNPOPULATED | FEATURE_WP_ASYNC);
  int pm = open("/proc/self/pagemap", O_RDONLY);
  struct page_region regs[64];
  struct pm_scan_arg s = {.size = sizeof s, .start = (uintptr_t)p, .end = (uintptr_t)p + len, .vec = (uintptr_t)regs, .vec_len = 64,
                          .flags = PM_SCAN_WP_MATCHING, .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN};
  t = now();
  long n = ioctl(pm, PAGEMAP_SCAN, &s);
  printf("PAGEMAP_SCAN arming (async)  %7.2f ms\n", now() - t);
  for (int i = 0; i < 5; i++) p[(size_t)i * (len / 5)] = 2;
  s.flags = 0;
  t = now();
  n = ioctl(pm, PAGEMAP_SCAN, &s);
  printf("PAGEMAP_SCAN of the written  %7.2f ms (%ld runs)\n", now() - t, n);
  return n == 5 ? 0 : 1;
}
