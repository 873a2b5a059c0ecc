/*
 * cowwrite: writes to its memory without pause, so that a checkpoint that lets it run while its
 * pages are written shows whether the image holds one instant: the instant of the freeze.
 *
 *   cowwrite <trigger> [MiB]      (default 64)
 *
 * A private anonymous area of MiB and a 1 MiB MAP_SHARED anonymous area. Step `seq` (1, 2, ...)
 * writes `seq` into the first word of page seq % n of each area, after checking that the page
 * holds what step seq - n wrote (0 before the first round). The counter lives in a register
 * and on the stack. A page from a later instant than the registers (a page read after the
 * process ran on) therefore holds a value the next round does not expect, and a page from an
 * earlier instant the same. After the trigger: every page holds what the last step that wrote it
 * wrote. CPT_TAMPER=1 changes one page's value before that final check.
 */
#include "common.h"

#include <sys/mman.h>

#define PAGE 4096u
#define SHARED_PAGES 256u

static void check_page(const char *what, volatile uint64_t *p, uint64_t n, uint64_t seq)
{
    uint64_t j = seq % n;
    uint64_t want = seq >= n ? seq - n : 0;
    uint64_t got = p[j * (PAGE / 8)];
    if (got != want && wl_failures < 4)
        wl_fail("%s page %llu holds %llu at step %llu, not %llu", what, (unsigned long long)j, (unsigned long long)got,
                (unsigned long long)seq, (unsigned long long)want);
    else if (got != want)
        wl_failures++;
}

/* What page j of an n-page area holds after steps 1 .. last. */
static uint64_t expected(uint64_t j, uint64_t n, uint64_t last)
{
    if (last < 1)
        return 0;
    uint64_t r = last % n;
    uint64_t v = last - ((r + n - j) % n);
    return v >= 1 && v <= last ? v : 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 64;
    uint64_t np = mib * (1024 * 1024 / PAGE), ns = SHARED_PAGES;
    volatile uint64_t *priv = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint64_t *shared = mmap(0, ns * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (priv == MAP_FAILED || shared == MAP_FAILED) {
        wl_fail("mmap failed");
        wl_finish("cowwrite", NULL);
    }
    /* Every page present before READY: the image stores them all. */
    for (uint64_t j = 0; j < np; j++)
        priv[j * (PAGE / 8)] = 0;
    for (uint64_t j = 0; j < ns; j++)
        shared[j * (PAGE / 8)] = 0;
    wl_ready();
    uint64_t seq = 0;
    for (;;) {
        seq++;
        check_page("private", priv, np, seq);
        priv[(seq % np) * (PAGE / 8)] = seq;
        check_page("shared", shared, ns, seq);
        shared[(seq % ns) * (PAGE / 8)] = seq;
        if ((seq & 0xfff) == 0 && wl_triggered())
            break;
    }
    if (wl_tamper)
        priv[((seq / 2) % np) * (PAGE / 8)] ^= 1;
    uint64_t bad = 0;
    for (uint64_t j = 0; j < np; j++)
        if (priv[j * (PAGE / 8)] != expected(j, np, seq))
            bad++;
    for (uint64_t j = 0; j < ns; j++)
        if (shared[j * (PAGE / 8)] != expected(j, ns, seq))
            bad++;
    WL_CHECK(bad == 0, "%llu pages differ from the last step that wrote them (step %llu)", (unsigned long long)bad,
             (unsigned long long)seq);
    wl_finish("cowwrite", NULL);
}
