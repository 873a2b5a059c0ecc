/*
 * The kernel's share of a checkpoint's page path, without cptrst: N MiB of a process's pages,
 * copy-on-write shared with a fork of it (as with cptrst's snapshot), moved into a fresh file the
 * ways cptrst could move them. Each line: wall time, and CPU time of this process and of the fork
 * (which runs the vmsplice loop where there is one), so that the floor of each way can be compared
 * with what cptrst spends (bench/README.md "The page path after the release, call by call").
 * usage: pagepath [MIB [DIR [CHUNK_KIB]]]   (1024, /dev/shm, 1024: the pipe size, at most
 * /proc/sys/fs/pipe-max-size; the buffer that pages are read into is one chunk)
 * Ways:
 *   read+write      the fork vmsplices into a pipe; read(2) into a buffer, write(2) into the file
 *                   (cptrst's default path, whose checksum runs over the buffer in between)
 *   splice          the same pipe splice(2)d into the file: one copy, nowhere to checksum (CRIU's)
 *   splice+pread    splice, then the chunk read back from the file into the buffer (to checksum it)
 *   tee+splice+read the pipe tee(2)d into a second one, spliced into the file, the copy read
 *   read only       the pipe read into the buffer, no file
 *   mem file        /proc/PID/mem of the fork read into the buffer, no file
 *   process_vm_readv  the fork's pages read with process_vm_readv, no file (it pins the pages,
 *                   which makes the kernel unshare every page it reads: a copy more)
 *   write only      write(2) of the buffer into the file N MiB / CHUNK times; with fallocate first
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long total, chunk;
static char *mem, *buf, path[4096];

static double ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static double cpu_ms(struct rusage *r) {
  return (r->ru_utime.tv_sec + r->ru_stime.tv_sec) * 1e3 + (r->ru_utime.tv_usec + r->ru_stime.tv_usec) / 1e3;
}
static void die(const char *what) {
  perror(what);
  exit(1);
}
static void full(long n, long want, const char *what) {
  if (n != want) die(what);
}

/* The fork: vmsplices every page into the pipe (blocking when it is full), or just waits. */
static pid_t fork_source(int pipe_w) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid) return pid;
  if (pipe_w >= 0)
    for (long at = 0; at < total;) {
      struct iovec v = {mem + at, total - at < chunk ? total - at : chunk};
      long n = vmsplice(pipe_w, &v, 1, 0);
      if (n <= 0) _exit(1);
      at += n;
    }
  pause();
  _exit(0);
}

static int fresh_file(void) {
  unlink(path);
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) die(path);
  return fd;
}

/* Reads exactly n bytes of the pipe into b. */
static void read_pipe(int fd, char *b, long n) {
  for (long got = 0; got < n;) {
    long r = read(fd, b + got, n - got);
    if (r <= 0) die("read of the pipe");
    got += r;
  }
}

/* Splices exactly n bytes of the pipe into the file at its position. */
static void splice_pipe(int from, int fd, long n) {
  for (long done = 0; done < n;) {
    long r = splice(from, NULL, fd, NULL, n - done, 0);
    if (r <= 0) die("splice");
    done += r;
  }
}

static void run(const char *name, int mode) {
  int p[2] = {-1, -1}, q[2] = {-1, -1};
  int piped = mode <= 4;
  if (piped) {
    if (pipe(p) || fcntl(p[0], F_SETPIPE_SZ, chunk) < chunk) die("pipe of CHUNK bytes");
    if (mode == 3 && (pipe(q) || fcntl(q[0], F_SETPIPE_SZ, chunk) < chunk)) die("second pipe");
  }
  int fd = mode <= 3 || mode >= 7 ? fresh_file() : -1;
  pid_t pid = fork_source(piped ? p[1] : -1);
  int memfd = -1;
  if (mode == 5) {
    char m[64];
    snprintf(m, sizeof m, "/proc/%d/mem", pid);
    if ((memfd = open(m, O_RDONLY)) < 0) die(m);
  }
  struct rusage before, after, child;
  getrusage(RUSAGE_SELF, &before);
  double t0 = ms();
  if (mode == 8 && fallocate(fd, 0, 0, total)) die("fallocate");
  for (long at = 0; at < total; at += chunk) {
    long n = total - at < chunk ? total - at : chunk;
    switch (mode) {
    case 0: read_pipe(p[0], buf, n); full(write(fd, buf, n), n, "write"); break;
    case 1: splice_pipe(p[0], fd, n); break;
    case 2: splice_pipe(p[0], fd, n); full(pread(fd, buf, n, at), n, "pread"); break;
    case 3:
      for (long t = 0; t < n;) {
        long r = tee(p[0], q[1], n - t, 0);
        if (r <= 0) die("tee");
        splice_pipe(p[0], fd, r);
        read_pipe(q[0], buf + t, r);
        t += r;
      }
      break;
    case 4: read_pipe(p[0], buf, n); break;
    case 5: full(pread(memfd, buf, n, (long)(mem + at)), n, "read of /proc/PID/mem"); break;
    case 6: {
      struct iovec l = {buf, n}, r = {mem + at, n};
      full(process_vm_readv(pid, &l, 1, &r, 1, 0), n, "process_vm_readv");
      break;
    }
    default: full(write(fd, buf, n), n, "write"); break;
    }
  }
  double wall = ms() - t0;
  getrusage(RUSAGE_SELF, &after);
  kill(pid, SIGKILL);
  if (wait4(pid, NULL, 0, &child) != pid) die("wait4");
  printf("%-18s %6.0f ms wall, CPU %4.0f ms + fork %4.0f ms\n", name, wall, cpu_ms(&after) - cpu_ms(&before), cpu_ms(&child));
  fflush(stdout);
  for (int *e = p; e < p + 2; e++) if (*e >= 0) close(*e);
  for (int *e = q; e < q + 2; e++) if (*e >= 0) close(*e);
  if (memfd >= 0) close(memfd);
  if (fd >= 0) {
    close(fd);
    unlink(path);
  }
}

int main(int argc, char **argv) {
  total = (argc > 1 ? atol(argv[1]) : 1024) << 20;
  snprintf(path, sizeof path, "%s/pagepath-%d", argc > 2 ? argv[2] : "/dev/shm", getpid());
  chunk = (argc > 3 ? atol(argv[3]) : 1024) << 10;
  if (total <= 0 || chunk <= 0 || chunk % 4096) {
    fprintf(stderr, "usage: pagepath [MIB [DIR [CHUNK_KIB]]]\n");
    return 2;
  }
  mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED || posix_memalign((void **)&buf, 4096, chunk)) die("memory");
  for (long i = 0; i < total; i += 8) *(long *)(mem + i) = i * 0x9e3779b97f4a7c15L;
  memset(buf, 1, chunk);
  const char *names[] = {"read+write", "splice", "splice+pread", "tee+splice+read", "read only", "mem file", "process_vm_readv", "write only", "fallocate+write"};
  for (int mode = 0; mode < 9; mode++) run(names[mode], mode);
  return 0;
}
