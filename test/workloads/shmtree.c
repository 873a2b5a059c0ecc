/*
 * shmtree <trigger>: shared anonymous memory that is one memory in a tree in ways a child keeping
 * its parent's mapping cannot make again.
 *
 *   R  maps A (16 pages) and B (8 pages), MAP_SHARED|MAP_ANONYMOUS, and forks C and D; then it
 *   |  unmaps A's pages 0-1 and B's first half, and maps A's page 5 a second time elsewhere
 *   |  (through /proc/self/map_files: one part of A mapped twice)
 *   +- C  maps all of A and B (from the fork); wrote A's page 3 (which R never touched) and B's
 *   |     page 0 (which R no longer maps)
 *   +- D  maps all of B (from the fork); unmapped A
 *
 * After the trigger: R sees C's page 3 of A, and its alias of page 5 is page 5 (a write through
 * one is read through the other); C writes A's page 12, which R waits to see; D sees C's page 0
 * of B, then writes B's page 1, which C waits to see (siblings: the memory is neither one's
 * parent's mapping). Waits last at most 3 s. A child exits 0 or 10 + the failed check; R reaps
 * both and prints the verdict. CPT_TAMPER=1 makes C write its page 12 of A to a private copy.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096UL

static volatile unsigned long *word(char *base, int page)
{
    return (volatile unsigned long *)(base + page * PG);
}

static int wait_for(char *base, int page, unsigned long value)
{
    for (int i = 0; i < 300; i++) {
        if (*word(base, page) == value)
            return 1;
        usleep(10000);
    }
    return 0;
}

static void wait_trigger(void)
{
    while (!wl_triggered())
        usleep(10000);
}

static void child_c(char *a, char *b, int ready)
{
    *word(a, 3) = 0xc3;
    *word(b, 0) = 0xc0;
    char one = 1;
    if (write(ready, &one, 1) != 1)
        _exit(9);
    close(ready);
    wait_trigger();
    int r = 0;
    if (*word(a, 2) != 0xa2)
        r = 1;
    else if (*word(a, 0) != 0xa0)
        r = 2;
    if (!r) {
        if (wl_tamper) {
            char *copy = mmap(a + 12 * PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (copy == MAP_FAILED)
                r = 3;
        }
        *word(a, 12) = 0xc12;
        if (!wait_for(b, 1, 0xd1))
            r = 4;
    }
    _exit(r ? 10 + r : 0);
}

static void child_d(char *a, char *b, int ready)
{
    munmap(a, 16 * PG);
    char one = 1;
    if (write(ready, &one, 1) != 1)
        _exit(9);
    close(ready);
    wait_trigger();
    int r = 0;
    if (!wait_for(b, 0, 0xc0))
        r = 1;
    else if (*word(b, 4) != 0xb4)
        r = 2;
    *word(b, 1) = 0xd1;
    _exit(r ? 10 + r : 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    char *a = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char *b = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    WL_CHECK(a != MAP_FAILED && b != MAP_FAILED, "mmap: %s", strerror(errno));
    *word(a, 0) = 0xa0;
    *word(a, 2) = 0xa2;
    *word(a, 5) = 0xa5;
    *word(b, 4) = 0xb4;
    int fds[2];
    WL_CHECK(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    pid_t c = fork();
    if (c == 0) {
        close(fds[0]);
        child_c(a, b, fds[1]);
    }
    pid_t d = fork();
    if (d == 0) {
        close(fds[0]);
        child_d(a, b, fds[1]);
    }
    close(fds[1]);
    char x[2];
    WL_CHECK(c > 0 && d > 0 && read(fds[0], x, 1) == 1 && read(fds[0], x + 1, 1) == 1, "the children were not set up");
    close(fds[0]);
    WL_CHECK(munmap(a, 2 * PG) == 0 && munmap(b, 4 * PG) == 0, "munmap: %s", strerror(errno));
    char path[128];
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)(a + 2 * PG), (unsigned long)(a + 16 * PG));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    WL_CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    char *alias = fd >= 0 ? mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 5 * PG) : MAP_FAILED;
    WL_CHECK(alias != MAP_FAILED, "mmap of the alias: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    wl_ready();
    wait_trigger();
    if (alias != MAP_FAILED) {
        WL_CHECK(*word(alias, 0) == 0xa5, "the alias of A's page 5 holds %lx", *word(alias, 0));
        *word(alias, 0) = 0xa55;
        WL_CHECK(*word(a, 5) == 0xa55, "a write through the alias of A's page 5 is not seen in A");
    }
    WL_CHECK(*word(a, 3) == 0xc3, "A's page 3, written by C, holds %lx", *word(a, 3));
    WL_CHECK(wait_for(a, 12, 0xc12), "C's write to A's page 12 is not seen by R");
    WL_CHECK(*word(b, 4) == 0xb4, "B's page 4 holds %lx", *word(b, 4));
    int st = 0;
    WL_CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "C failed its checks (status 0x%x: 10 + 1 page 2, 2 page 0 of A, 3 tamper, 4 D's write not seen)", st);
    WL_CHECK(waitpid(d, &st, 0) == d && WIFEXITED(st) && WEXITSTATUS(st) == 0, "D failed its checks (status 0x%x: 10 + 1 C's page 0 of B not seen, 2 page 4 of B)", st);
    wl_finish("shmtree", NULL);
}
