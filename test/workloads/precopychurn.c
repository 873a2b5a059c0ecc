/*
 * precopychurn: memory that changes in every way a pre-copy must see (checkpoint --pre-copy), at
 * a pace that leaves most of it unwritten between two rounds.
 *
 *   precopychurn <trigger> [MiB]      (default 64)
 *
 * Area A (MiB, private anonymous, every page touched before READY) and a table `want` (one u64
 * per page of A, in its own area) of what each page of A holds. Every step checks a page of A
 * against the table, then does one of: write a new value to a page (most steps); MADV_DONTNEED a
 * 2 MiB-aligned block of A (its pages read as zeros: a page table the kernel may free); read a
 * dropped page back in (the zero page); unmap area B (16 pages) and map it again with new
 * contents, at the same place or not; mremap B elsewhere. A 1 ms pause every 16 steps keeps the
 * pace at some thousands of changes a second. After the trigger every page of A and of B must
 * hold what the table says: a page of the image that is not of the instant of the freeze (a copy
 * made before and kept though the page changed) fails.
 * CPT_TAMPER=1 changes one page of A before that final check.
 */
#define _GNU_SOURCE
#include "common.h"

#include <sys/mman.h>
#include <time.h>

#define PAGE 4096u
#define BLOCK_PAGES 512u
#define B_PAGES 16u

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void pause_us(long us)
{
    struct timespec t = {0, us * 1000};
    nanosleep(&t, 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 64;
    uint64_t np = mib * (1024 * 1024 / PAGE);
    /* A is 2 MiB aligned, so that a dropped block may free its page table. */
    char *raw = mmap(0, np * PAGE + 2 * 1024 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint64_t *want = mmap(0, np * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint64_t *bwant = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED || want == MAP_FAILED || bwant == MAP_FAILED) {
        wl_fail("mmap failed");
        wl_finish("precopychurn", NULL);
    }
    volatile uint64_t *a = (volatile uint64_t *)(((uintptr_t)raw + 2 * 1024 * 1024 - 1) & ~(uintptr_t)(2 * 1024 * 1024 - 1));
    madvise((void *)a, np * PAGE, MADV_NOHUGEPAGE);
    for (uint64_t j = 0; j < np; j++) {
        a[j * (PAGE / 8)] = j + 1;
        want[j] = j + 1;
    }
    volatile uint64_t *b = mmap(0, B_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (uint64_t j = 0; j < B_PAGES; j++)
        b[j * (PAGE / 8)] = bwant[j] = 7;
    wl_ready();
    uint64_t seed = 88172645463325252ull, seq = 0;
    for (;;) {
        seq++;
        uint64_t r = rnd(&seed);
        uint64_t j = r % np;
        if (a[j * (PAGE / 8)] != want[j] && wl_failures < 4)
            wl_fail("page %llu holds %llu at step %llu, not %llu", (unsigned long long)j, (unsigned long long)a[j * (PAGE / 8)],
                    (unsigned long long)seq, (unsigned long long)want[j]);
        unsigned what = (unsigned)((r >> 32) % 1000);
        if (what < 990) {
            a[j * (PAGE / 8)] = want[j] = seq << 8;
        } else if (what < 993) {
            uint64_t first = j - j % BLOCK_PAGES, n = first + BLOCK_PAGES <= np ? BLOCK_PAGES : np - first;
            madvise((void *)(a + first * (PAGE / 8)), n * PAGE, MADV_DONTNEED);
            for (uint64_t k = first; k < first + n; k++)
                want[k] = 0;
        } else if (what < 996) {
            (void)a[j * (PAGE / 8)]; /* a read: a dropped page comes back as the zero page */
        } else if (what < 998) {
            munmap((void *)b, B_PAGES * PAGE);
            void *hint = (what & 1) ? (void *)b : 0;
            b = mmap(hint, B_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (b == MAP_FAILED) {
                wl_fail("mmap of B failed at step %llu", (unsigned long long)seq);
                break;
            }
            for (uint64_t k = 0; k < B_PAGES; k++)
                b[k * (PAGE / 8)] = bwant[k] = seq + k;
        } else {
            /* Moved onto a fresh placeholder: the pages go with it, to another address. */
            void *spot = mmap(0, B_PAGES * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            void *to = spot == MAP_FAILED ? MAP_FAILED : mremap((void *)b, B_PAGES * PAGE, B_PAGES * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
            if (to != MAP_FAILED)
                b = to;
            else if (spot != MAP_FAILED)
                munmap(spot, B_PAGES * PAGE);
        }
        for (uint64_t k = 0; k < B_PAGES; k++)
            if (b[k * (PAGE / 8)] != bwant[k] && wl_failures < 4)
                wl_fail("B page %llu holds %llu at step %llu, not %llu", (unsigned long long)k, (unsigned long long)b[k * (PAGE / 8)],
                        (unsigned long long)seq, (unsigned long long)bwant[k]);
        if ((seq & 0xf) == 0) {
            pause_us(1000);
            if (wl_triggered())
                break;
        }
    }
    if (wl_tamper)
        a[(seq % np) * (PAGE / 8)] ^= 1;
    uint64_t bad = 0;
    for (uint64_t j = 0; j < np; j++)
        if (a[j * (PAGE / 8)] != want[j])
            bad++;
    for (uint64_t k = 0; k < B_PAGES; k++)
        if (b[k * (PAGE / 8)] != bwant[k])
            bad++;
    WL_CHECK(bad == 0, "%llu pages differ from what the table says (step %llu)", (unsigned long long)bad, (unsigned long long)seq);
    wl_finish("precopychurn", NULL);
}
