/*
 * lazyfill: private memory a lazy restart fills while the process runs, and the ways a running
 * process can meet memory that is not in yet.
 *
 *   lazyfill <trigger> [MiB]      (default 32)
 *
 * A private anonymous area of MiB: every page holds a pattern of its own (three words checked),
 * except every fifth page, never touched (zero). A table (malloc'd, so lazily filled too) says
 * what each page must hold: its pattern, zero, or a value written since. Each round of the loop
 * checks one page, sends another through a pipe (the kernel reads it: write(2)) and receives a
 * value into a third (the kernel writes it: read(2)).
 *
 * Once <trigger>.go exists (a test makes it after the checkpoint, before the restart, so that
 * the restored process does this at once, while its memory comes in), each round also drops a
 * page (MADV_DONTNEED: it must read zero from then on, never the image's data), moves four pages
 * away and back (mremap: their contents move with them) and, every 16 rounds, forks a child that
 * checks 256 pages against the table and exits with the verdict.
 *
 * After the trigger every page is checked against the table. CPT_TAMPER=1 changes one word first.
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096u
#define W (PAGE / 8)
#define SEED 0x1a2f0000ull
#define ZERO 1ull
#define MOVE_PAGES 4u

static volatile uint64_t *area;
static uint64_t *table;
static uint64_t np;

static uint64_t word(uint64_t j, uint64_t w)
{
    return wl_pat64(SEED + j, w) | 2; /* never 0 or 1 */
}

/* 0 when page j holds what the table says, else the first word that differs + 1. */
static uint64_t page_bad(uint64_t j)
{
    static const uint64_t ws[3] = { 0, W / 2, W - 1 };
    volatile uint64_t *p = area + j * W;
    for (int k = 0; k < 3; k++) {
        uint64_t w = ws[k], want;
        if (table[j] == 0)
            want = word(j, w);
        else if (table[j] == ZERO)
            want = 0;
        else
            want = w == 0 ? table[j] : 0;
        if (p[w] != want)
            return w + 1;
    }
    return 0;
}

static void check(uint64_t j, const char *when)
{
    uint64_t b = page_bad(j);
    if (b)
        wl_fail("page %llu word %llu: %llx (%s, table %llx)", (unsigned long long)j, (unsigned long long)(b - 1),
                (unsigned long long)area[j * W + b - 1], when, (unsigned long long)table[j]);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 32;
    np = mib * (1024 * 1024 / PAGE);
    char go[4096];
    snprintf(go, sizeof go, "%s.go", argv[1]);
    area = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    table = malloc(np * sizeof *table);
    int pp[2];
    if (area == MAP_FAILED || !table || pipe(pp) != 0) {
        wl_fail("setup failed");
        wl_finish("lazyfill", NULL);
    }
    for (uint64_t j = 0; j < np; j++) {
        table[j] = j % 5 == 3 ? ZERO : 0;
        if (table[j] == 0)
            for (uint64_t w = 0; w < W; w++)
                area[j * W + w] = word(j, w);
    }
    wl_ready();
    int going = 0;
    uint64_t r = 0, forks = 0;
    uint64_t buf[W];
    for (;;) {
        r++;
        uint64_t a = (r * 7919) % np, b = (r * 104729 + 17) % np, c = (r * 1299709 + 5) % np;
        check(a, "looping");
        /* The kernel reads page b (write) and writes page c (read). */
        if (write(pp[1], (const void *)(area + b * W), PAGE) != PAGE || read(pp[0], buf, PAGE) != PAGE)
            wl_fail("pipe round trip of page %llu: %s", (unsigned long long)b, strerror(errno));
        else if (memcmp(buf, (const void *)(area + b * W), PAGE) != 0)
            wl_fail("page %llu read by the kernel differs", (unsigned long long)b);
        memset(buf, 0, sizeof buf);
        buf[0] = (r << 8) | 0x80;
        if (write(pp[1], buf, PAGE) != PAGE || read(pp[0], (void *)(area + c * W), PAGE) != PAGE)
            wl_fail("pipe into page %llu: %s", (unsigned long long)c, strerror(errno));
        table[c] = buf[0];
        check(c, "after read(2) into it");
        if (!going && (r & 0xff) == 0)
            going = access(go, F_OK) == 0;
        if (going) {
            uint64_t d = (r * 15485863 + 3) % np;
            if (madvise((void *)(area + d * W), PAGE, MADV_DONTNEED) != 0)
                wl_fail("madvise: %s", strerror(errno));
            table[d] = ZERO;
            check(d, "after MADV_DONTNEED");
            uint64_t m = (r * 32452843 + 11) % (np - MOVE_PAGES);
            void *from = (void *)(area + m * W);
            void *spot = mmap(0, MOVE_PAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            void *away = spot == MAP_FAILED ? spot : mremap(from, MOVE_PAGES * PAGE, MOVE_PAGES * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
            if (away == MAP_FAILED || mremap(away, MOVE_PAGES * PAGE, MOVE_PAGES * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, from) != from)
                wl_fail("mremap of pages %llu..: %s", (unsigned long long)m, strerror(errno));
            for (uint64_t k = 0; k < MOVE_PAGES; k++)
                check(m + k, "after mremap away and back");
            if (r % 16 == 0) {
                pid_t pid = fork();
                if (pid == 0) {
                    for (uint64_t k = 0; k < 256; k++)
                        if (page_bad((r + k * 4099) % np))
                            _exit(1);
                    _exit(0);
                }
                int st = 0;
                if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                    wl_fail("a child forked at round %llu saw pages unlike the table", (unsigned long long)r);
                forks++;
            }
        }
        if (wl_failures)
            break;
        if ((r & 0xff) == 0 && wl_triggered())
            break;
    }
    if (wl_tamper)
        area[(np / 2 + 1) * W + W / 2] ^= 4;
    uint64_t bad = 0;
    for (uint64_t j = 0; j < np; j++)
        if (page_bad(j) && bad++ < 3)
            check(j, "at the end");
    WL_CHECK(bad == 0, "%llu pages differ from the table", (unsigned long long)bad);
    WL_CHECK(!going || forks > 0, "no fork was checked");
    wl_finish("lazyfill", going ? NULL : "no .go file: the loop did not drop, move or fork");
}
