/*
 * incrwrite: rewrites a known set of its pages between checkpoints, for incremental checkpoints.
 *
 *   incrwrite <trigger> [MiB]      (default 16)
 *
 * Area A (MiB, private anonymous) holds a pattern per page made of the page's index and its
 * generation (the step that last wrote it; 0: never written since the start, all zero). Step K
 * begins when <trigger>.K exists: pages i with (i * 2654435761 + K) % 100 == 0 (about 1%) get
 * generation K; at step 2 the first 16 pages are dropped (MADV_DONTNEED: zero again); at step 1
 * area B (64 KiB) is unmapped and mapped again at the same place with a new pattern; a second
 * thread rewrites a quarter of area C (1 MiB) with generation K. Then <trigger>.K.done is made.
 * <trigger>.sweep: every page of A is written with the value it holds (a write fault per page
 * where writes are tracked); <trigger>.sweep.done then holds the nanoseconds it took.
 * After the trigger: every page of A, B and C holds what its generation says, and the note says
 * the last step done. CPT_TAMPER=1 changes one word of A before that check.
 */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define B_PAGES 16u
#define C_PAGES 256u

static volatile uint64_t *a, *b, *c;
static uint32_t *gen_a; /* generation of each page of A */
static uint32_t gen_b, gen_c[C_PAGES];
static uint64_t np;
static volatile int step_req, step_done;

static uint64_t word(uint64_t area, uint64_t i, uint64_t g, uint64_t j)
{
    return g == 0 ? 0 : (area << 60) ^ (g << 40) ^ (i << 12) ^ j;
}

static void fill(volatile uint64_t *p, uint64_t area, uint64_t i, uint64_t g)
{
    for (uint64_t j = 0; j < WORDS; j++)
        p[i * WORDS + j] = word(area, i, g, j);
}

static uint64_t bad_pages(volatile uint64_t *p, uint64_t area, uint64_t n, const uint32_t *gens, uint32_t one)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t g = gens ? gens[i] : one;
        for (uint64_t j = 0; j < WORDS; j++)
            if (p[i * WORDS + j] != word(area, i, g, j)) {
                bad++;
                break;
            }
    }
    return bad;
}

static void *writer(void *arg)
{
    (void)arg;
    for (;;) {
        int k = step_req;
        if (k > step_done) {
            for (uint64_t i = 0; i < C_PAGES; i++)
                if (i % 4 == (uint64_t)k % 4) {
                    fill(c, 3, i, (uint64_t)k);
                    gen_c[i] = (uint32_t)k;
                }
            __atomic_store_n(&step_done, k, __ATOMIC_RELEASE);
        }
        usleep(1000);
    }
    return NULL;
}

static int exists(const char *suffix, char *name, size_t len)
{
    struct stat st;
    snprintf(name, len, "%s.%s", wl_trigger_path, suffix);
    return stat(name, &st) == 0;
}

static void make(const char *name, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    wl_write_all(fd, text, strlen(text));
    close(fd);
    rename(tmp, name);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 16;
    np = mib * (1024 * 1024 / PAGE);
    a = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    b = mmap(0, B_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    c = mmap(0, C_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen_a = calloc(np, sizeof *gen_a);
    if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED || !gen_a) {
        wl_fail("allocation failed");
        wl_finish("incrwrite", NULL);
    }
    /* Generation 1000000 + i at first: every page present and different. */
    for (uint64_t i = 0; i < np; i++) {
        gen_a[i] = (uint32_t)(1000000 + i);
        fill(a, 1, i, gen_a[i]);
    }
    gen_b = 7;
    for (uint64_t i = 0; i < B_PAGES; i++)
        fill(b, 2, i, gen_b);
    for (uint64_t i = 0; i < C_PAGES; i++) {
        gen_c[i] = 5;
        fill(c, 3, i, 5);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, writer, NULL) != 0) {
        wl_fail("pthread_create failed");
        wl_finish("incrwrite", NULL);
    }
    wl_ready();
    int k = 0;
    char name[4200];
    while (!wl_triggered()) {
        char sfx[64];
        snprintf(sfx, sizeof sfx, "%d", k + 1);
        if (exists(sfx, name, sizeof name)) {
            k++;
            for (uint64_t i = 0; i < np; i++)
                if ((i * 2654435761u + (uint64_t)k) % 100 == 0) {
                    gen_a[i] = (uint32_t)k;
                    fill(a, 1, i, (uint64_t)k);
                }
            if (k == 1) {
                munmap((void *)b, B_PAGES * PAGE);
                if (mmap((void *)b, B_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != (void *)b)
                    wl_fail("mmap of B again failed");
                gen_b = 11;
                for (uint64_t i = 0; i < B_PAGES; i++)
                    fill(b, 2, i, gen_b);
            }
            if (k == 2 && np >= 16) {
                madvise((void *)a, 16 * PAGE, MADV_DONTNEED);
                for (uint64_t i = 0; i < 16; i++)
                    gen_a[i] = 0;
            }
            step_req = k;
            while (__atomic_load_n(&step_done, __ATOMIC_ACQUIRE) < k)
                usleep(1000);
            snprintf(sfx, sizeof sfx, "%d.done", k);
            exists(sfx, name, sizeof name);
            make(name, "done\n");
        }
        if (exists("sweep", name, sizeof name)) {
            uint64_t t0 = wl_now_ns(CLOCK_MONOTONIC);
            for (uint64_t i = 0; i < np; i++)
                a[i * WORDS + 1] = a[i * WORDS + 1];
            uint64_t dt = wl_now_ns(CLOCK_MONOTONIC) - t0;
            unlink(name);
            char text[64];
            snprintf(text, sizeof text, "%llu\n", (unsigned long long)dt);
            exists("sweep.done", name, sizeof name);
            make(name, text);
        }
        usleep(2000);
    }
    if (wl_tamper)
        a[(np / 2) * WORDS + 3] ^= 1;
    uint64_t ba = bad_pages(a, 1, np, gen_a, 0), bb = bad_pages(b, 2, B_PAGES, NULL, gen_b), bc = bad_pages(c, 3, C_PAGES, gen_c, 0);
    WL_CHECK(ba == 0 && bb == 0 && bc == 0, "pages that differ from their generation: %llu of A, %llu of B, %llu of C (step %d)", (unsigned long long)ba,
             (unsigned long long)bb, (unsigned long long)bc, k);
    char note[64];
    snprintf(note, sizeof note, "step %d", k);
    wl_finish("incrwrite", note);
}
