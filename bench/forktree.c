/*
 * forktree <MiB> <trigger>: 16 processes in three levels (the root, 3 children, 4 grandchildren
 * each), each with MiB of private anonymous memory. The root writes all of it (a different value
 * in every 8-byte word) before forking; every other process writes the second half with values
 * of its own after its fork, so that the first half is still shared copy-on-write with the root.
 * Each process marks <trigger>.ready.<pid> when set up; the root prints READY <pid> once all 16
 * have. After <trigger> exists each process checks every word; a child exits 0 or 1, the root
 * reaps its children (who reap theirs) and prints PASS or FAIL.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 3
#define GRANDCHILDREN 4
#define TOTAL (1 + CHILDREN + CHILDREN * GRANDCHILDREN)

static uint64_t *mem;
static size_t words;
static const char *trigger;

static uint64_t value(uint64_t who, size_t i)
{
    uint64_t x = (who + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)i * 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 31);
}

/* who: 0 the root, 1.. the others (the order they were made in). */
static void write_half(uint64_t who, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        mem[i] = value(who, i);
}

static int check(uint64_t who)
{
    for (size_t i = 0; i < words; i++)
        if (mem[i] != value(i < words / 2 ? 0 : who, i))
            return 1;
    return 0;
}

static void mark_ready(void)
{
    char p[4200];
    snprintf(p, sizeof p, "%s.ready.%d", trigger, (int)getpid());
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

static void wait_trigger(void)
{
    struct stat st;
    while (stat(trigger, &st) != 0)
        usleep(20000);
}

/* The marks of the members in the trigger's directory. */
static int count_marks(void)
{
    char dir[4096], pre[4200];
    snprintf(dir, sizeof dir, "%s", trigger);
    char *slash = strrchr(dir, '/');
    snprintf(pre, sizeof pre, "%s.ready.", slash ? slash + 1 : trigger);
    if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, pre, strlen(pre)) == 0)
            n++;
    closedir(d);
    return n;
}

static int reap_all(pid_t *pids, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad = 1;
    }
    return bad;
}

/* A process of the tree other than the root: its own half, its children, the check. */
static __attribute__((noreturn)) void member(uint64_t who, int children)
{
    write_half(who, words / 2, words);
    pid_t pids[GRANDCHILDREN];
    for (int i = 0; i < children; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            member(who * 10 + (uint64_t)i + 1, 0);
    }
    mark_ready();
    wait_trigger();
    int bad = check(who);
    bad |= reap_all(pids, children);
    _exit(bad);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: forktree <MiB> <trigger>\n");
        return 2;
    }
    size_t bytes = (size_t)strtoull(argv[1], 0, 10) << 20;
    trigger = argv[2];
    words = bytes / 8;
    mem = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 2;
    write_half(0, 0, words);
    pid_t pids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            member((uint64_t)i + 1, GRANDCHILDREN);
    }
    mark_ready();
    while (count_marks() < TOTAL)
        usleep(20000);
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    wait_trigger();
    int bad = check(0);
    bad |= reap_all(pids, CHILDREN);
    printf(bad ? "FAIL forktree\n" : "PASS forktree\n");
    fflush(stdout);
    return bad;
}
