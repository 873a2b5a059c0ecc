/*
 * memory: the kinds of memory a process has, each with a known pattern.
 *  - private anonymous pages: runs of written pages with untouched (zero) pages between them;
 *  - the heap: a region from sbrk(), small malloc()s on the brk heap, a large (mmap'd) malloc;
 *    the program break itself (sbrk(0)) and that it can still grow and shrink;
 *  - a stack array;
 *  - a MAP_PRIVATE mapping of a file it creates next to the trigger (<trigger>.mapped), with
 *    some pages modified in memory only; the file keeps its contents; its fd is closed;
 *  - shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS);
 *  - a PROT_NONE guard page between two readable pages: touching it faults (SEGV_ACCERR);
 *  - a read-only area: reading gives the pattern, writing faults;
 *  - clock_gettime through the vDSO agrees with the system call.
 * The loop does not map, unmap or protect anything: the test may compare /proc/PID/maps.
 */
#include "common.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define ANON_PAGES 256
#define FILE_PAGES 8
#define SHARED_PAGES 4
#define RO_PAGES 2
#define STACK_BYTES 16384
#define SMALL_ALLOCS 64
#define BIG_ALLOC (1u << 20)

enum {
    SEED_ANON = 0xA0000,
    SEED_BRK = 0xB0000,
    SEED_SMALL = 0xC0000,
    SEED_BIG = 0xD0000,
    SEED_STACK = 0xE0000,
    SEED_FILE = 0xF0000,
    SEED_FILE_MOD = 0xF1000,
    SEED_SHARED = 0x50000,
    SEED_GUARD = 0x60000,
    SEED_RO = 0x70000,
};

static size_t ps;
static sigjmp_buf fault_jmp;
static volatile void *fault_addr;
static volatile int fault_code, fault_signo;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    fault_signo = sig;
    fault_addr = si->si_addr;
    fault_code = si->si_code;
    siglongjmp(fault_jmp, 1);
}

static int anon_page_touched(size_t i)
{
    return i % 7 == 0 || i % 7 == 1 || (i >= 100 && i < 140) || i == ANON_PAGES - 1;
}

/* Returns 1 if accessing *p faulted with SIGSEGV/SEGV_ACCERR at p. */
static int faults(volatile uint8_t *p, int write_access, const char *what)
{
    fault_signo = 0;
    fault_addr = NULL;
    fault_code = 0;
    if (sigsetjmp(fault_jmp, 1) == 0) {
        if (write_access)
            *p = 0x5A;
        else
            (void)*p;
        wl_fail("%s: %s did not fault", what, write_access ? "write" : "read");
        return 0;
    }
    WL_CHECK(fault_signo == SIGSEGV, "%s: signal %d, want SIGSEGV", what, (int)fault_signo);
    WL_CHECK(fault_addr == (void *)p, "%s: fault at %p, want %p", what, (void *)fault_addr, (void *)p);
    WL_CHECK(fault_code == SEGV_ACCERR, "%s: si_code %d, want SEGV_ACCERR", what, (int)fault_code);
    return 1;
}

static void check_region(const volatile uint8_t *p, size_t len, uint64_t seed, const char *what)
{
    long bad = wl_check_pattern(p, len, seed);
    WL_CHECK(bad < 0, "%s: byte %ld differs", what, bad);
}

static uint64_t sys_now_ns(clockid_t clk)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    ps = (size_t)sysconf(_SC_PAGESIZE);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);

    /* private anonymous: runs of written pages, untouched pages between them */
    uint8_t *anon = mmap(NULL, ANON_PAGES * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED)
        wl_fail("mmap anon: %s", strerror(errno));
    else
        for (size_t i = 0; i < ANON_PAGES; i++)
            if (anon_page_touched(i))
                wl_fill_pattern(anon + i * ps, ps, SEED_ANON + i);

    /* the heap: our own sbrk region first, then malloc on top of it */
    uint8_t *brk_region = sbrk((intptr_t)(3 * ps));
    if (brk_region == (void *)-1) {
        wl_fail("sbrk: %s", strerror(errno));
        brk_region = NULL;
    } else {
        wl_fill_pattern(brk_region, 3 * ps, SEED_BRK);
    }
    uint8_t *small[SMALL_ALLOCS];
    for (int i = 0; i < SMALL_ALLOCS; i++) {
        small[i] = malloc(100 + (size_t)i * 37);
        if (small[i] != NULL)
            wl_fill_pattern(small[i], 100 + (size_t)i * 37, SEED_SMALL + (uint64_t)i);
    }
    uint8_t *big = malloc(BIG_ALLOC);
    if (big != NULL)
        wl_fill_pattern(big, BIG_ALLOC, SEED_BIG);

    volatile uint8_t stack_bytes[STACK_BYTES];
    wl_fill_pattern(stack_bytes, STACK_BYTES, SEED_STACK);

    /* a private file mapping; pages 1 and 5 are modified in memory only */
    char path[4096];
    snprintf(path, sizeof path, "%s.mapped", wl_trigger_path);
    uint8_t *filemap = MAP_FAILED;
    {
        static uint8_t content[FILE_PAGES * 4096 * 4];
        size_t flen = FILE_PAGES * ps;
        wl_fill_pattern(content, flen, SEED_FILE);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || flen > sizeof content || write(fd, content, flen) != (ssize_t)flen)
            wl_fail("creating %s: %s", path, strerror(errno));
        else
            filemap = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (filemap == MAP_FAILED)
            wl_fail("mmap of %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (filemap != MAP_FAILED) {
            wl_fill_pattern(filemap + 1 * ps, ps, SEED_FILE_MOD + 1);
            wl_fill_pattern(filemap + 5 * ps + 100, 200, SEED_FILE_MOD + 5);
        }
    }

    /* shared anonymous */
    uint8_t *shared = mmap(NULL, SHARED_PAGES * ps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        wl_fail("mmap shared: %s", strerror(errno));
        shared = NULL;
    } else {
        wl_fill_pattern(shared, SHARED_PAGES * ps, SEED_SHARED);
    }

    /* guard page: [rw][none][rw] */
    uint8_t *guard = mmap(NULL, 3 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard == MAP_FAILED) {
        wl_fail("mmap guard: %s", strerror(errno));
        guard = NULL;
    } else {
        wl_fill_pattern(guard, 3 * ps, SEED_GUARD);
        if (mprotect(guard + ps, ps, PROT_NONE) != 0)
            wl_fail("mprotect PROT_NONE: %s", strerror(errno));
    }

    /* read-only area */
    uint8_t *ro = mmap(NULL, RO_PAGES * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ro == MAP_FAILED) {
        wl_fail("mmap ro: %s", strerror(errno));
        ro = NULL;
    } else {
        wl_fill_pattern(ro, RO_PAGES * ps, SEED_RO);
        if (mprotect(ro, RO_PAGES * ps, PROT_READ) != 0)
            wl_fail("mprotect PROT_READ: %s", strerror(errno));
    }

    /* the faults work before READY (so that a failure after restart means something) */
    if (guard != NULL)
        faults(guard + ps + 17, 0, "guard page before READY");
    if (ro != NULL)
        faults(ro + ps + 3, 1, "read-only area before READY");

    void *brk_end = sbrk(0);

    wl_ready();

    uint64_t loops = 0;
    do {
        wl_busy_ms(5);
        loops++;
    } while (!wl_triggered());

    void *brk_now = sbrk(0); /* first, before anything can move it */
    if (wl_tamper && anon != MAP_FAILED)
        anon[7 * ps + 1234] ^= 0x01;

    WL_CHECK(brk_now == brk_end, "program break %p, want %p", brk_now, brk_end);
    if (anon != MAP_FAILED)
        for (size_t i = 0; i < ANON_PAGES; i++) {
            const uint8_t *p = anon + i * ps;
            if (anon_page_touched(i)) {
                long bad = wl_check_pattern(p, ps, SEED_ANON + i);
                if (bad >= 0) {
                    wl_fail("anon page %zu byte %ld differs", i, bad);
                    break;
                }
            } else {
                for (size_t k = 0; k < ps; k++)
                    if (p[k] != 0) {
                        wl_fail("untouched anon page %zu byte %zu is %#x", i, k, p[k]);
                        k = ps, i = ANON_PAGES;
                    }
            }
        }
    if (brk_region != NULL)
        check_region(brk_region, 3 * ps, SEED_BRK, "sbrk region");
    for (int i = 0; i < SMALL_ALLOCS; i++) {
        if (small[i] == NULL) {
            wl_fail("malloc %d failed", i);
            break;
        }
        long bad = wl_check_pattern(small[i], 100 + (size_t)i * 37, SEED_SMALL + (uint64_t)i);
        if (bad >= 0) {
            wl_fail("small malloc %d byte %ld differs", i, bad);
            break;
        }
    }
    if (big == NULL)
        wl_fail("big malloc failed");
    else
        check_region(big, BIG_ALLOC, SEED_BIG, "big malloc");
    check_region(stack_bytes, STACK_BYTES, SEED_STACK, "stack array");

    if (filemap != MAP_FAILED) {
        for (size_t i = 0; i < FILE_PAGES; i++) {
            const uint8_t *p = filemap + i * ps;
            char what[64];
            snprintf(what, sizeof what, "file mapping page %zu", i);
            if (i == 1) {
                check_region(p, ps, SEED_FILE_MOD + 1, what);
            } else if (i == 5) {
                check_region(p + 100, 200, SEED_FILE_MOD + 5, what);
                for (size_t k = 0; k < ps; k++)
                    if ((k < 100 || k >= 300) && p[k] != wl_pat8(SEED_FILE, i * ps + k)) {
                        wl_fail("%s: unmodified byte %zu differs", what, k);
                        break;
                    }
            } else {
                for (size_t k = 0; k < ps; k++)
                    if (p[k] != wl_pat8(SEED_FILE, i * ps + k)) {
                        wl_fail("%s: byte %zu differs from the file", what, k);
                        break;
                    }
            }
        }
        static uint8_t back[FILE_PAGES * 4096 * 4];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : pread(fd, back, FILE_PAGES * ps + 1, 0);
        WL_CHECK(n == (ssize_t)(FILE_PAGES * ps), "the mapped file now has %zd bytes, want %zu", n, FILE_PAGES * ps);
        if (n > 0)
            check_region(back, (size_t)n, SEED_FILE, "the mapped file (on disk)");
        if (fd >= 0)
            close(fd);
    }
    if (shared != NULL)
        check_region(shared, SHARED_PAGES * ps, SEED_SHARED, "shared anonymous");
    if (guard != NULL) {
        check_region(guard, ps, SEED_GUARD, "page before the guard");
        for (size_t k = 0; k < ps; k++)
            if (guard[2 * ps + k] != wl_pat8(SEED_GUARD, 2 * ps + k)) {
                wl_fail("page after the guard: byte %zu differs", k);
                break;
            }
        faults(guard + ps + 17, 0, "guard page read");
        faults(guard + ps + 18, 1, "guard page write");
    }
    if (ro != NULL) {
        check_region(ro, RO_PAGES * ps, SEED_RO, "read-only area");
        faults(ro + 5, 1, "read-only area");
    }

    uint64_t a = wl_now_ns(CLOCK_MONOTONIC), k = sys_now_ns(CLOCK_MONOTONIC), b = wl_now_ns(CLOCK_MONOTONIC);
    WL_CHECK(a <= k && k <= b && b - a < 500000000ull, "vDSO CLOCK_MONOTONIC disagrees with the syscall");
    WL_CHECK(loops > 0, "loop did not run");

    /* the heap can still grow and shrink */
    uint8_t *more = sbrk((intptr_t)ps);
    if (more == (void *)-1) {
        wl_fail("sbrk(+page) after trigger: %s", strerror(errno));
    } else {
        WL_CHECK(more == brk_end, "sbrk(+page) returned %p, want %p", (void *)more, brk_end);
        wl_fill_pattern(more, ps, 1);
        check_region(more, ps, 1, "new brk page");
        WL_CHECK(sbrk(-(intptr_t)ps) != (void *)-1 && sbrk(0) == brk_end, "sbrk(-page) did not restore the break");
    }
    void *m = malloc(4 << 20);
    WL_CHECK(m != NULL, "malloc after trigger failed");
    free(m);

    wl_finish("memory", NULL);
}
