/*
 * incrlive: writes its memory without pause, for incremental checkpoints taken while it runs.
 *
 *   incrlive <trigger> [MiB]      (default 16)
 *
 * One private anonymous area: page 0 holds the counter n, every other page i a pattern of its
 * index and its value v (word j: ((v + 1) << 24) ^ (i << 12) ^ j). Every eighth page is hot: step
 * n (n = 1, 2, ...) fills hot page number (n - 1) % H with value n, then sets the counter to n; a
* short pause every 32 steps. Cold pages keep value 0. After the trigger (checked before every
 * step: a process restarted with the trigger there checks before it writes), every page must hold what the counter says: hot page s the last step m <= n with
 * (m - 1) % H == s (the page of step n + 1 may be half written: each word old or new), cold pages
 * 0. So a restart from an image shows whether every page is of one instant, the counter's.
 */
#include "common.h"

#include <sys/mman.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define HOT_EVERY 8u

static volatile uint64_t *area;
static uint64_t np, hot;

static uint64_t word(uint64_t i, uint64_t v, uint64_t j)
{
    return ((v + 1) << 24) ^ (i << 12) ^ j;
}

/* The value page i must hold when the counter is n. */
static uint64_t expected(uint64_t i, uint64_t n)
{
    if (i % HOT_EVERY != 0)
        return 0;
    uint64_t s = i / HOT_EVERY - 1; /* hot pages are 8, 16, ...: page 0 is the counter's */
    if (n < s + 1)
        return 0;
    return n - ((n - 1 - s) % hot);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 16;
    np = mib * (1024 * 1024 / PAGE);
    hot = (np - 1) / HOT_EVERY;
    area = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED || hot == 0) {
        wl_fail("allocation failed");
        wl_finish("incrlive", NULL);
    }
    for (uint64_t i = 1; i < np; i++)
        for (uint64_t j = 0; j < WORDS; j++)
            area[i * WORDS + j] = word(i, 0, j);
    area[0] = 0;
    wl_ready();
    uint64_t n = area[0];
    for (;;) {
        if (wl_triggered())
            break;
        uint64_t next = n + 1;
        uint64_t i = ((next - 1) % hot + 1) * HOT_EVERY;
        for (uint64_t j = 0; j < WORDS; j++)
            area[i * WORDS + j] = word(i, next, j);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        area[0] = next;
        n = next;
        if (n % 32 == 0)
            usleep(200);
    }
    n = area[0];
    uint64_t bad = 0, first = 0;
    uint64_t half = ((n % hot) + 1) * HOT_EVERY; /* the page of step n + 1 */
    for (uint64_t i = 1; i < np; i++) {
        uint64_t v = expected(i, n);
        for (uint64_t j = 0; j < WORDS; j++) {
            uint64_t w = area[i * WORDS + j];
            if (w == word(i, v, j) || (i == half && w == word(i, n + 1, j)))
                continue;
            if (!bad++)
                first = i;
            break;
        }
    }
    WL_CHECK(bad == 0, "%llu pages do not hold what counter %llu says (first: page %llu)", (unsigned long long)bad, (unsigned long long)n,
             (unsigned long long)first);
    wl_finish("incrlive", n > 1000 ? "ran" : "barely ran");
}
