/*
 * Target for the files tests. In directory argv[1]:
 *   plain=N, plainDup=N, plain20=20: "plain" opened O_RDWR, 10 bytes written, offset 3; dup'ed, and dup2'ed to 20
 *   plainAgain=N: "plain" opened a second time (same inode, another open file description)
 *   log=N:   "log" opened O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC
 *   null=N:  /dev/null O_RDWR
 *   gone=N:  "gone" opened O_RDWR|O_CREAT|O_TRUNC, 100 bytes written, then unlinked
 *   dir=N:   the directory itself, O_RDONLY|O_DIRECTORY
 * With argv[2] == "pipe": pipeRead=N, pipeWrite=N (a pipe) and uffd=N (a userfaultfd, a kind no handler claims); with "tty": ptmx=N (/dev/ptmx).
 * With "memfd": memfd=N; "flock", "posix", "ofd", "lease": locked=N ("locked", that lock or a read
 * lease on it); "setown": owned=N (F_SETOWN to itself); "setsig": owned=N (F_SETSIG SIGUSR1);
 * "sparse": sparse=N ("sparse", 1 MiB, data only at 64 KiB..68 KiB and 512 KiB..516 KiB, unlinked);
 * "twice": goneAgain=N ("gone" opened a second time before the unlink: another description).
 * Prints name=N lines then READY to stdout (a file), then sleeps.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <signal.h>
#include <unistd.h>

static int must(int fd, const char *what) {
  if (fd < 0) { perror(what); exit(1); }
  return fd;
}

int main(int argc, char **argv) {
  syscall(SYS_close_range, 3, ~0U, 0);
  if (argc < 2 || chdir(argv[1]) != 0) return 2;
  const char *mode = argc > 2 ? argv[2] : "";

  int plain = must(open("plain", O_RDWR | O_CREAT | O_TRUNC, 0644), "plain");
  if (write(plain, "0123456789", 10) != 10) return 1;
  lseek(plain, 3, SEEK_SET);
  int plainDup = must(dup(plain), "dup");
  must(dup2(plain, 20), "dup2");
  int plainAgain = must(open("plain", O_RDONLY), "plain again");
  int log = must(open("log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600), "log");
  int null = must(open("/dev/null", O_RDWR), "/dev/null");
  int gone = must(open("gone", O_RDWR | O_CREAT | O_TRUNC, 0600), "gone");
  char buf[100];
  for (int i = 0; i < 100; i++) buf[i] = (char)('A' + i % 26);
  if (write(gone, buf, 100) != 100) return 1;
  int goneAgain = -1;
  if (strcmp(mode, "twice") == 0) goneAgain = must(open("gone", O_RDONLY), "gone again");
  if (unlink("gone") != 0) return 1;
  int dir = must(open(".", O_RDONLY | O_DIRECTORY), "dir");

  printf("plain=%d\nplainDup=%d\nplain20=20\nplainAgain=%d\nlog=%d\nnull=%d\ngone=%d\ndir=%d\n", plain, plainDup, plainAgain, log, null, gone, dir);
  if (strcmp(mode, "pipe") == 0) {
    int p[2];
    if (pipe(p) != 0) return 1;
    int uffd = must((int)syscall(SYS_userfaultfd, O_CLOEXEC), "userfaultfd");
    printf("pipeRead=%d\npipeWrite=%d\nuffd=%d\n", p[0], p[1], uffd);
  } else if (strcmp(mode, "tty") == 0) {
    printf("ptmx=%d\n", must(open("/dev/ptmx", O_RDWR | O_NOCTTY), "/dev/ptmx"));
  } else if (strcmp(mode, "memfd") == 0) {
    int m = must((int)syscall(SYS_memfd_create, "cptrst-test", 0), "memfd_create");
    if (write(m, "memfd data", 10) != 10) return 1;
    printf("memfd=%d\n", m);
  } else if (strcmp(mode, "flock") == 0 || strcmp(mode, "posix") == 0 || strcmp(mode, "ofd") == 0 || strcmp(mode, "lease") == 0) {
    int l = must(open("locked", strcmp(mode, "lease") == 0 ? O_RDONLY | O_CREAT : O_RDWR | O_CREAT, 0644), "locked");
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    int r = strcmp(mode, "flock") == 0 ? flock(l, LOCK_EX)
          : strcmp(mode, "posix") == 0 ? fcntl(l, F_SETLK, &fl)
          : strcmp(mode, "ofd") == 0 ? fcntl(l, F_OFD_SETLK, &fl)
          : fcntl(l, F_SETLEASE, F_RDLCK);
    if (r != 0) { perror(mode); return 1; }
    printf("locked=%d\n", l);
  } else if (strcmp(mode, "setown") == 0 || strcmp(mode, "setsig") == 0) {
    int o = must(open("owned", O_RDWR | O_CREAT, 0644), "owned");
    if ((strcmp(mode, "setown") == 0 ? fcntl(o, F_SETOWN, getpid()) : fcntl(o, F_SETSIG, SIGUSR1)) != 0) { perror(mode); return 1; }
    printf("owned=%d\n", o);
  } else if (strcmp(mode, "sparse") == 0) {
    int sp = must(open("sparse", O_RDWR | O_CREAT | O_TRUNC, 0640), "sparse");
    char blk[4096];
    memset(blk, 'x', sizeof blk);
    if (pwrite(sp, blk, sizeof blk, 64 * 1024) != sizeof blk || pwrite(sp, blk, sizeof blk, 512 * 1024) != sizeof blk) return 1;
    if (ftruncate(sp, 1024 * 1024) != 0 || unlink("sparse") != 0) return 1;
    printf("sparse=%d\n", sp);
  } else if (strcmp(mode, "twice") == 0) {
    printf("goneAgain=%d\n", goneAgain);
  }
  printf("READY\n");
  fflush(stdout);
  for (;;) pause();
}
