/*
 * guards <trigger> [MIB]: guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13) in areas of
 * every kind that takes them, each filled with a pattern per page before its guards go in:
 *   - anon:      16 pages of private anonymous memory, guards on pages 2-3 and 9;
 *   - wipe:      4 pages MADV_WIPEONFORK, a guard on page 1 (a forked child has none there);
 *   - private:   4 pages of a private mapping of <trigger>.data, page 0 written (the process's
 *                own copy), a guard on page 2;
 *   - shared:    4 pages of a shared mapping of the same file (its pages 4-7), a guard on page 3;
 *   - removed:   4 pages whose one guard was removed again (VmFlags "gu" stays, no guard);
 *   - big:       MIB MiB (default 8) of private anonymous memory, a guard on every 97th page.
 * After the trigger: every guard page faults (SIGSEGV) on a write and a read, every other page
 * holds its pattern, each area's VmFlags are as before (less "ac"), and a forked child finds the
 * same guards except in "wipe" (zero-filled there). CPT_TAMPER=1 removes the guard on anon page 9.
 * A kernel without guard regions: PASS with a note.
 */
#define _GNU_SOURCE
#include "common.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

#define PG 4096L
enum { ANON, WIPE, PRIV, SHARED, REMOVED, BIG, NAREAS };
static const char *names[NAREAS] = {"anon", "wipe", "private", "shared", "removed", "big"};
static long npages[NAREAS] = {16, 4, 4, 4, 4, 0};
static uint8_t *area[NAREAS];
static char flags_before[NAREAS][256];

static int guarded(int a, long p)
{
    switch (a) {
    case ANON: return p == 2 || p == 3 || p == 9;
    case WIPE: return p == 1;
    case PRIV: return p == 2;
    case SHARED: return p == 3;
    case BIG: return p % 97 == 5;
    default: return 0;
    }
}

/* The byte every word of page p of area a starts with; the file's pages other than the written one are zero. */
static uint8_t pattern(int a, long p) { return (uint8_t)(0x11 * (a + 1) + p * 7 + 1); }
static int holds_pattern(int a, long p) { return !(a == PRIV && p != 0); }

static sigjmp_buf jump;
static volatile sig_atomic_t armed;
static void on_segv(int sig)
{
    (void)sig;
    if (armed)
        siglongjmp(jump, 1);
    _exit(3);
}

/* Whether touching the byte at p (a write, or a read) faults. */
static int faults(volatile uint8_t *p, int write)
{
    armed = 1;
    if (sigsetjmp(jump, 1)) {
        armed = 0;
        return 1;
    }
    if (write)
        *p = 0x5a;
    else
        (void)*p;
    armed = 0;
    return 0;
}

/* Checks every page of every area; in a forked child the wipe area is empty and unguarded. */
static void check(int child)
{
    for (int a = 0; a < NAREAS; a++) {
        for (long p = 0; p < npages[a]; p++) {
            volatile uint8_t *pg = area[a] + p * PG;
            int g = guarded(a, p) && !(child && a == WIPE);
            if (g) {
                WL_CHECK(faults(pg, 0) && faults(pg + PG - 1, 1), "%s%s page %ld: no guard", child ? "child: " : "", names[a], p);
                continue;
            }
            uint8_t want = child && a == WIPE ? 0 : holds_pattern(a, p) ? pattern(a, p) : 0;
            if (faults(pg, 0)) {
                wl_fail("%s%s page %ld: faults", child ? "child: " : "", names[a], p);
                continue;
            }
            WL_CHECK(pg[0] == want && pg[PG - 1] == want, "%s%s page %ld: %#x..%#x, not %#x", child ? "child: " : "", names[a], p, pg[0], pg[PG - 1], want);
        }
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MIB]");
    npages[BIG] = (argc > 2 ? atol(argv[2]) : 8) * 256;
    struct sigaction sa = {.sa_handler = on_segv};
    sigaction(SIGSEGV, &sa, NULL);

    char data[4096];
    snprintf(data, sizeof data, "%s.data", wl_trigger_path);
    int fd = open(data, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 8 * PG) != 0) {
        printf("FAIL guards: %s: %s\n", data, strerror(errno));
        return 1;
    }
    for (int a = 0; a < NAREAS; a++) {
        /* a PROT_NONE page on each side keeps neighbours from merging with it */
        uint8_t *g = mmap(NULL, (npages[a] + 2) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        int shared = a == SHARED, file = a == PRIV || a == SHARED;
        area[a] = g == MAP_FAILED ? MAP_FAILED : mmap(g + PG, npages[a] * PG, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED | (file ? 0 : MAP_ANONYMOUS), file ? fd : -1, shared ? 4 * PG : 0);
        if (area[a] == MAP_FAILED) {
            printf("FAIL guards: mmap of %s: %s\n", names[a], strerror(errno));
            return 1;
        }
        if (a == WIPE)
            madvise(area[a], npages[a] * PG, MADV_WIPEONFORK);
        for (long p = 0; p < npages[a]; p++)
            if (holds_pattern(a, p) && a != SHARED)
                memset(area[a] + p * PG, pattern(a, p), PG);
    }
    /* The shared mapping's pages are the file's: written through it, they are in the file too. */
    for (long p = 0; p < npages[SHARED]; p++)
        memset(area[SHARED] + p * PG, pattern(SHARED, p), PG);
    close(fd);
    const char *note = NULL;
    for (int a = 0; a < NAREAS && !note; a++) {
        for (long p = 0; p < npages[a]; p++) {
            if (!guarded(a, p))
                continue;
            if (madvise(area[a] + p * PG, PG, MADV_GUARD_INSTALL) != 0) {
                if (errno != EINVAL) {
                    printf("FAIL guards: MADV_GUARD_INSTALL in %s: %s\n", names[a], strerror(errno));
                    return 1;
                }
                note = "no guard regions";
                break;
            }
        }
    }
    if (!note && (madvise(area[REMOVED], PG, MADV_GUARD_INSTALL) != 0 || madvise(area[REMOVED], PG, MADV_GUARD_REMOVE) != 0)) {
        printf("FAIL guards: guard installed and removed in %s: %s\n", names[REMOVED], strerror(errno));
        return 1;
    }
    /* Installing a guard dropped the page: its pattern again. */
    memset(area[REMOVED], pattern(REMOVED, 0), PG);
    for (int a = 0; a < NAREAS; a++)
        wl_vmflags(area[a], flags_before[a], sizeof flags_before[a]);
    wl_ready();

    while (!wl_triggered())
        usleep(2000);
    unlink(data);
    if (note)
        wl_finish("guards", note);
    if (wl_tamper)
        madvise(area[ANON] + 9 * PG, PG, MADV_GUARD_REMOVE);
    for (int a = 0; a < NAREAS; a++) {
        char now[256];
        wl_vmflags(area[a], now, sizeof now);
        WL_CHECK(strcmp(now, flags_before[a]) == 0, "%s VmFlags \"%s\", were \"%s\"", names[a], now, flags_before[a]);
    }
    check(0);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        wl_failures = 0;
        wl_failbuf[0] = '\0';
        check(1);
        _exit(wl_failures ? 1 : 0);
    }
    int st = 0;
    WL_CHECK(c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child found other guards (status %#x)", st);
    wl_finish("guards", NULL);
}
