/*
 * The protocol every C workload follows (see test/support/workloads.ts):
 *
 *   <workload> <trigger-path> [args]
 *
 * Set up state, write exactly one line "READY <pid>", loop doing work and
 * stat()ing <trigger-path>; once it exists, verify the whole state and write
 * "PASS <name>" (exit 0) or "FAIL <name>: <what differed>" (exit 1).
 * No child processes and no threads while looping; nothing else is printed.
 *
 * CPT_TAMPER=1 in the environment asks a workload to corrupt one piece of its
 * own state just before the final check (read once at start, kept in memory),
 * so tests can show that the checks are able to fail.
 */
#ifndef CPT_WORKLOAD_COMMON_H
#define CPT_WORKLOAD_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *wl_trigger_path;
static pid_t wl_ready_pid;
static int wl_tamper;
static int wl_failures;
static char wl_failbuf[2048];

static void wl_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Parses the common arguments; exits with a usage line when they are missing. */
static void wl_init(int argc, char **argv, int min_args, const char *usage)
{
    if (argc < min_args + 1 || argc < 2) {
        char b[256];
        int n = snprintf(b, sizeof b, "usage: %s %s\n", argv[0], usage);
        wl_write_all(2, b, (size_t)n);
        exit(2);
    }
    wl_trigger_path = argv[1];
    /* Start from fds 0, 1 and 2 only: whatever else the starter leaked (a shell, a test runner)
     * is not part of the state this workload sets up, and a checkpoint need not support it. */
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
    const char *t = getenv("CPT_TAMPER");
    wl_tamper = t != NULL && t[0] == '1';
}

/*
 * "--as UID:GID" anywhere in argv: become that user (groups {GID}, every uid and gid), before the
 * state is set up; a workload that takes it says so in its usage. Returns 1 when it did.
 */
__attribute__((unused)) static int wl_as_user(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++) {
        unsigned uid, gid;
        if (strcmp(argv[i], "--as") != 0 || sscanf(argv[i + 1], "%u:%u", &uid, &gid) != 2)
            continue;
        gid_t g = (gid_t)gid;
        if (syscall(SYS_setgroups, 1, &g) != 0 || syscall(SYS_setresgid, gid, gid, gid) != 0 || syscall(SYS_setresuid, uid, uid, uid) != 0) {
            char b[128];
            int n = snprintf(b, sizeof b, "cannot become %u:%u: %s\n", uid, gid, strerror(errno));
            wl_write_all(2, b, (size_t)n);
            exit(2);
        }
        return 1;
    }
    return 0;
}

/* Records one difference; the first ones are kept for the FAIL line. */
__attribute__((format(printf, 1, 2))) static void wl_fail(const char *fmt, ...)
{
    wl_failures++;
    size_t used = strlen(wl_failbuf);
    if (used + 8 >= sizeof wl_failbuf)
        return;
    if (used > 0) {
        memcpy(wl_failbuf + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wl_failbuf + used, sizeof wl_failbuf - used, fmt, ap);
    va_end(ap);
}

#define WL_CHECK(cond, ...)                                                    \
    do {                                                                       \
        if (!(cond))                                                           \
            wl_fail(__VA_ARGS__);                                              \
    } while (0)

static void wl_ready(void)
{
    char b[64];
    wl_ready_pid = getpid();
    int n = snprintf(b, sizeof b, "READY %d\n", (int)wl_ready_pid);
    wl_write_all(1, b, (size_t)n);
}

static int wl_triggered(void)
{
    struct stat st;
    return stat(wl_trigger_path, &st) == 0;
}

/* Prints the verdict line (once) and exits. */
static __attribute__((noreturn)) void wl_finish(const char *name, const char *note)
{
    pid_t now = getpid();
    if (now != wl_ready_pid)
        wl_fail("getpid() %d != READY pid %d", (int)now, (int)wl_ready_pid);
    static char line[sizeof wl_failbuf + 256];
    int n;
    if (wl_failures == 0) {
        if (note != NULL && note[0] != '\0')
            n = snprintf(line, sizeof line, "PASS %s (%s)\n", name, note);
        else
            n = snprintf(line, sizeof line, "PASS %s\n", name);
    } else {
        n = snprintf(line, sizeof line, "FAIL %s: %s\n", name, wl_failbuf);
    }
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    wl_write_all(1, line, (size_t)n);
    _exit(wl_failures == 0 ? 0 : 1);
}

/*
 * A child of a tree workload ends: 0, or 10 + its failures (at most 100), leaving what failed in
 * `fail_path` (its own output would mix with its parent's); wl_reap_child, in the parent, checks.
 */
__attribute__((unused, noreturn)) static void wl_child_exit(const char *fail_path)
{
    if (wl_failures) {
        int fd = open(fail_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            wl_write_all(fd, wl_failbuf, strlen(wl_failbuf));
            close(fd);
        }
    }
    _exit(wl_failures ? 10 + (wl_failures < 100 ? wl_failures : 100) : 0);
}

/* Reaps child `pid` (`who`) and fails with what it left in `fail_path` unless it exited 0. */
__attribute__((unused)) static void wl_reap_child(pid_t pid, const char *who, const char *fail_path)
{
    int st;
    if (pid <= 0)
        return;
    if (waitpid(pid, &st, 0) != pid)
        wl_fail("waitpid(%s): %s", who, strerror(errno));
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char what[1024] = "";
        int fd = open(fail_path, O_RDONLY | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read(fd, what, sizeof what - 1) : 0;
        if (fd >= 0)
            close(fd);
        what[len > 0 ? len : 0] = 0;
        wl_fail("%s ended with status 0x%x: %s", who, st, what);
    }
}

__attribute__((unused)) static uint64_t wl_now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Busy work in user space for about `ms` milliseconds (vDSO clock, no syscall). */
__attribute__((unused)) static void wl_busy_ms(unsigned ms)
{
    uint64_t end = wl_now_ns(CLOCK_MONOTONIC) + (uint64_t)ms * 1000000ull;
    volatile uint64_t x = 1;
    /* bounded too, so that a broken clock (say, a stale vDSO data page) cannot hang the loop */
    for (unsigned rounds = 0; rounds < ms * 2000u && wl_now_ns(CLOCK_MONOTONIC) < end; rounds++)
        for (int i = 0; i < 1000; i++)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
}

/* A deterministic byte pattern: different for every (seed, index). */
static inline uint8_t wl_pat8(uint64_t seed, uint64_t i)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return (uint8_t)(x ^ (x >> 8));
}

static inline uint64_t wl_pat64(uint64_t seed, uint64_t i)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 1;
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

/* Index of the first byte that differs from the pattern, or -1. */
__attribute__((unused)) static long wl_check_pattern(const volatile uint8_t *p, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != wl_pat8(seed, i))
            return (long)i;
    return -1;
}

__attribute__((unused)) static void wl_fill_pattern(volatile uint8_t *p, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = wl_pat8(seed, i);
}

/* The VmFlags of the area holding addr from /proc/self/smaps, less "ac" (whether an anon_vma exists yet). */
__attribute__((unused)) static void wl_vmflags(void *addr, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return;
    char line[512];
    unsigned long s = 0, e = 0, a = (unsigned long)addr;
    while (fgets(line, sizeof line, f)) {
        unsigned long x, y;
        if (sscanf(line, "%lx-%lx ", &x, &y) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            s = x;
            e = y;
        } else if (strncmp(line, "VmFlags:", 8) == 0 && s <= a && a < e) {
            char *tok = strtok(line + 8, " \n");
            for (; tok; tok = strtok(NULL, " \n")) {
                if (strcmp(tok, "ac") == 0)
                    continue;
                size_t used = strlen(out);
                snprintf(out + used, len - used, "%s%s", used ? " " : "", tok);
            }
            break;
        }
    }
    fclose(f);
}

#endif
