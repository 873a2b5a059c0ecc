/* Benchmark workload: touches N MiB of private anonymous memory with a pattern, says READY, then spins. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 64, n = mib << 20;
  unsigned char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 2;
  for (size_t i = 0; i < n; i += 4096) memset(p + i, (int)(i >> 12) & 0xff, 4096);
  printf("READY %d\n", getpid());
  fflush(stdout);
  for (volatile unsigned long k = 0;; k++)
    if ((k & 0xffffff) == 0 && access(argc > 2 ? argv[2] : "/nonexistent", F_OK) == 0) break;
  for (size_t i = 0; i < n; i += 4096)
    if (p[i] != ((i >> 12) & 0xff) || p[i + 4095] != ((i >> 12) & 0xff)) { printf("FAIL at %zu\n", i); return 1; }
  printf("PASS\n");
  return 0;
}
