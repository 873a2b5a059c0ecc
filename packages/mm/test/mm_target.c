/*
 * Target for the mm tests. Maps, each in a VMA of its own (PROT_NONE guard pages around the
 * private anonymous ones keep the kernel from merging them with neighbours):
 *   shared: 4 pages MAP_SHARED|MAP_ANONYMOUS, page 0 written;
 *   anon:   16 pages private anonymous, pages 0, 1, 5 and 15 written, the others never touched;
 *   big:    4100 pages private anonymous, all written;
 *   file:   8 pages of argv[1] (created here) mapped MAP_PRIVATE, every page read, pages 2 and 6 written;
 *   named:  1 page private anonymous named "cptrst-test" with PR_SET_VMA_ANON_NAME (0 if unsupported);
 *   locked: with argv[2] == "lock", 1 page locked with mlock (VmFlags "lo");
 *   uffd:   with argv[2] == "lock", 1 page registered with userfaultfd (VmFlags "um");
 *   memfd, memfdp: with argv[2] == "memfd", 2 pages of a memfd mapped MAP_SHARED and 1 MAP_PRIVATE;
 *   sfile:  with argv[2] == "memfd", 2 pages of argv[1] mapped MAP_SHARED, page 0 written.
 * A malloc makes a [heap]. Prints name=address lines then READY to stdout (a file), then sleeps.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PG 4096L

static char *guarded(long pages) {
  char *g = mmap(NULL, (pages + 2) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g == MAP_FAILED) { perror("mmap guard"); exit(1); }
  char *p = mmap(g + PG, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) { perror("mmap fixed"); exit(1); }
  madvise(p, pages * PG, MADV_NOHUGEPAGE);
  return p;
}

int main(int argc, char **argv) {
  syscall(SYS_close_range, 3, ~0U, 0);
  if (argc < 2) return 2;

  char *shared = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) { perror("mmap shared"); return 1; }
  shared[0] = 1;

  char *anon = guarded(16);
  anon[0] = 1;
  anon[1 * PG] = 2;
  anon[5 * PG + 17] = 3;
  anon[15 * PG + PG - 1] = 4;

  char *big = guarded(4100);
  memset(big, 0x5a, 4100 * PG);

  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { perror("open"); return 1; }
  char page[PG];
  for (int i = 0; i < 8; i++) {
    memset(page, 'a' + i, PG);
    if (write(fd, page, PG) != PG) { perror("write"); return 1; }
  }
  char *file = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (file == MAP_FAILED) { perror("mmap file"); return 1; }
  close(fd);
  volatile char sum = 0;
  for (int i = 0; i < 8; i++) sum += file[i * PG];
  file[2 * PG] = 'X';
  file[6 * PG + 100] = 'Y';

  char *named = guarded(1);
  named[0] = 1;
  if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)named, PG, (unsigned long)"cptrst-test") != 0) named = NULL;

  char *locked = NULL;
  if (argc > 2 && strcmp(argv[2], "lock") == 0) {
    locked = guarded(1);
    if (mlock(locked, PG) != 0) { perror("mlock"); return 1; }
  }

  char *uffd = NULL;
  if (argc > 2 && strcmp(argv[2], "lock") == 0) {
    uffd = guarded(1);
    int u = syscall(SYS_userfaultfd, O_CLOEXEC);
    struct uffdio_api api = { .api = UFFD_API };
    struct uffdio_register reg = { .range = { (unsigned long)uffd, PG }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (u < 0 || ioctl(u, UFFDIO_API, &api) || ioctl(u, UFFDIO_REGISTER, &reg)) { perror("userfaultfd"); return 1; }
  }

  char *memfd = NULL, *memfdp = NULL, *sfile = NULL;
  if (argc > 2 && strcmp(argv[2], "memfd") == 0) {
    int m = memfd_create("innocent", MFD_CLOEXEC);
    if (m < 0 || ftruncate(m, 2 * PG)) { perror("memfd"); return 1; }
    memfd = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    memfdp = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, m, 0);
    if (memfd == MAP_FAILED || memfdp == MAP_FAILED) { perror("mmap memfd"); return 1; }
    memfd[0] = memfdp[0] = 1;
    close(m);
    int f = open(argv[1], O_RDWR);
    sfile = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (f < 0 || sfile == MAP_FAILED) { perror("mmap shared file"); return 1; }
    sfile[0] = 'S';
    close(f);
  }

  char *heap = malloc(1000);
  heap[0] = 1;

  printf("shared=%p\nanon=%p\nbig=%p\nfile=%p\nnamed=%p\nlocked=%p\nuffd=%p\nmemfd=%p\nmemfdp=%p\nsfile=%p\nheap=%p\nREADY\n",
         shared, anon, big, file, named, locked, uffd, memfd, memfdp, sfile, heap);
  fflush(stdout);
  for (;;) pause();
}
