/*
 * cowtree <trigger> [MiB]: private memory shared copy-on-write across a tree of three levels.
 *
 *   R  maps MiB of private anonymous memory, writes every page but the last 16, then forks A and B
 *   +- A  writes pages j % 4 == 1 and the last page (which R never had), discards pages
 *   |  |  j % 4 == 2 (MADV_DONTNEED: zeros again), then forks G
 *   |  +- G  writes pages j % 8 == 3
 *   +- B  writes nothing
 *   After the forks R writes pages j % 4 == 3.
 *
 * Every member loops until the trigger exists, then checks every page of the area (what it wrote
 * itself, what it inherited, zeros where it discarded or nobody wrote) and that the pages nobody
 * wrote since the forks (j % 4 == 0) are still the same page frames as its parent's
 * (/proc/PID/pagemap; the frames are shown to root only, which this check needs): memory shared
 * copy-on-write must still be shared after a restart. A child exits 0, or 10 + what failed
 * (1: contents, 2: not shared, 3: pagemap, 4: its own child); R reaps and checks A and B, A
 * checks G, and R prints the verdict. Each member says it is set up by creating
 * <trigger>.ready.<name>. CPT_TAMPER=1 makes G change one inherited page before its check.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096u
#define TAIL 16u

static uint8_t *area;
static uint64_t np;

static uint64_t value(int who, uint64_t j)
{
    return wl_pat64((uint64_t)who * 1000003u + 17u, j);
}

/* What page j holds in member `who` (0 R, 1 A, 2 G, 3 B). */
static uint64_t expected(int who, uint64_t j)
{
    if (who == 1 && j == np - 1)
        return value(1, j);
    if (who == 2 && j == np - 1)
        return value(1, j);
    if (j >= np - TAIL)
        return 0;
    if (who == 0 && j % 4 == 3)
        return value(9, j);
    if (who == 2 && j % 8 == 3)
        return value(2, j);
    if (who == 1 || who == 2) {
        if (j % 4 == 1)
            return value(1, j);
        if (j % 4 == 2)
            return 0;
    }
    return value(0, j);
}

static void write_page(int who, uint64_t j)
{
    uint64_t *p = (uint64_t *)(area + j * PAGE);
    p[0] = value(who, j);
    p[PAGE / 8 - 1] = value(who, j) ^ 1;
}

static void mark_ready(const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s.ready.%s", wl_trigger_path, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

static int is_ready(const char *name)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s.ready.%s", wl_trigger_path, name);
    return stat(p, &st) == 0;
}

static int read_pagemap(pid_t pid, uint64_t *out)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/pagemap", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = np * 8;
    ssize_t n = pread(fd, out, len, (off_t)((uintptr_t)area / PAGE * 8));
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

/* 0, or the first failure: 1 contents, 2 not shared with the parent, 3 pagemap. */
static int check(int who)
{
    for (uint64_t j = 0; j < np; j++) {
        uint64_t *p = (uint64_t *)(area + j * PAGE);
        uint64_t want = expected(who, j);
        if (p[0] != want || p[PAGE / 8 - 1] != (want ? want ^ 1 : 0)) {
            wl_fail("member %d page %llu holds %llx, not %llx", who, (unsigned long long)j, (unsigned long long)p[0], (unsigned long long)want);
            return 1;
        }
    }
    if (who == 0)
        return 0;
    uint64_t *mine = malloc(np * 8), *theirs = malloc(np * 8);
    if (!mine || !theirs || read_pagemap(getpid(), mine) || read_pagemap(getppid(), theirs)) {
        wl_fail("member %d: pagemap unreadable", who);
        return 3;
    }
    const uint64_t pfn = (1ull << 55) - 1;
    for (uint64_t j = 0; j < np - TAIL; j += 4) {
        if (!(mine[j] >> 63) || !(mine[j] & pfn)) {
            wl_fail("member %d page %llu: no page frame shown (pagemap entry %llx; root is needed)", who, (unsigned long long)j, (unsigned long long)mine[j]);
            return 3;
        }
        if ((mine[j] & pfn) != (theirs[j] & pfn)) {
            wl_fail("member %d page %llu is not shared with its parent (frames %llx and %llx)", who, (unsigned long long)j,
                    (unsigned long long)(mine[j] & pfn), (unsigned long long)(theirs[j] & pfn));
            return 2;
        }
    }
    free(mine);
    free(theirs);
    return 0;
}

static void wait_trigger(void)
{
    while (!wl_triggered())
        usleep(10000);
}

/* Reaps a child and checks it exited 0. */
static int reap(pid_t pid, const char *name)
{
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        wl_fail("waitpid(%s) failed: %s", name, strerror(errno));
        return 0;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        wl_fail("%s ended with status 0x%x", name, st);
        return 0;
    }
    return 1;
}

/* A child's verdict is its exit status (its output would mix with R's verdict line). */
static __attribute__((noreturn)) void child_end(int r)
{
    _exit(r ? 10 + r : 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 16;
    np = mib * (1024 * 1024 / PAGE);
    if (np < 4 * TAIL)
        np = 4 * TAIL;
    area = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        wl_fail("mmap failed");
        wl_finish("cowtree", NULL);
    }
    for (uint64_t j = 0; j < np - TAIL; j++)
        write_page(0, j);
    fflush(stdout);

    pid_t a = fork();
    if (a == 0) {
        for (uint64_t j = 1; j < np - TAIL; j += 4)
            write_page(1, j);
        write_page(1, np - 1);
        for (uint64_t j = 2; j < np - TAIL; j += 4)
            madvise(area + j * PAGE, PAGE, MADV_DONTNEED);
        pid_t g = fork();
        if (g == 0) {
            for (uint64_t j = 3; j < np - TAIL; j += 8)
                write_page(2, j);
            mark_ready("G");
            wait_trigger();
            if (wl_tamper)
                ((uint64_t *)area)[0] ^= 1;
            child_end(check(2));
        }
        mark_ready("A");
        wait_trigger();
        int r = check(1);
        if (!reap(g, "G") && !r)
            r = 4;
        child_end(r);
    }
    pid_t b = fork();
    if (b == 0) {
        mark_ready("B");
        wait_trigger();
        child_end(check(3));
    }
    for (uint64_t j = 3; j < np - TAIL; j += 4)
        write_page(9, j);
    while (!is_ready("A") || !is_ready("B") || !is_ready("G"))
        usleep(10000);
    wl_ready();
    wait_trigger();
    check(0);
    reap(a, "A");
    reap(b, "B");
    wl_finish("cowtree", NULL);
}
