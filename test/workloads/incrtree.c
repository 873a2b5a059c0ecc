/*
 * incrtree: incrwrite for a tree. A parent R and its children A and B rewrite a known set of their
 * pages at each step, for incremental checkpoints of a tree.
 *
 *   incrtree <trigger> [MiB]      (default 8)
 *
 * R maps area I (MiB, private anonymous, a pattern per page of its index and generation) and
 * forks A and B: I is shared copy-on-write until a member writes a page of it. Each member
 * (m = 0 for R, 1 for A, 2 for B) maps an area O of MiB of its own. Step K begins for a member
 * when <trigger>.K exists: pages i of O with (i * 2654435761 + 3K + m) % 100 == 0 and pages i of I
 * with (i * 2654435761 + K + 50m) % 200 == 0 get generation K (about 1% and 0.5%); then the member
 * makes <trigger>.K.<m>. After the trigger each member checks every page of O and I against the
 * generations it wrote; a child exits 0, or 10 + the number of bad pages (at most 100), leaving
 * what failed in <trigger>.<m>.fail; R reaps both and prints the verdict. CPT_TAMPER=1 makes A
 * change one word of O before its check.
 */
#include "common.h"

#include <sys/mman.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)

static uint64_t np;
static volatile uint64_t *inh;
static uint32_t *gen_inh; /* generation of each page of I, as this member sees it */

static uint64_t word(uint64_t area, uint64_t m, uint64_t i, uint64_t g, uint64_t j)
{
    return (area << 60) ^ (m << 56) ^ (g << 32) ^ (i << 12) ^ j;
}

static void fill(volatile uint64_t *p, uint64_t area, uint64_t m, uint64_t i, uint64_t g)
{
    for (uint64_t j = 0; j < WORDS; j++)
        p[i * WORDS + j] = word(area, m, i, g, j);
}

/* Pages of p that differ from what their generation says; `owner` of each page: who wrote it last. */
static uint64_t bad_pages(volatile uint64_t *p, uint64_t area, const uint32_t *gens, const uint8_t *owner)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < np; i++)
        for (uint64_t j = 0; j < WORDS; j++)
            if (p[i * WORDS + j] != word(area, owner[i], i, gens[i], j)) {
                bad++;
                break;
            }
    return bad;
}

static int exists(const char *name)
{
    struct stat st;
    return stat(name, &st) == 0;
}

static void make(const char *name)
{
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
}

static const char *fail_path(int m)
{
    static char p[4200];
    snprintf(p, sizeof p, "%s.%d.fail", wl_trigger_path, m);
    return p;
}

/* One member's life: steps until the trigger, then its checks. */
static void run(int m)
{
    volatile uint64_t *own = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *gen_own = calloc(np, sizeof *gen_own);
    uint8_t *own_owner = calloc(np, 1), *inh_owner = calloc(np, 1);
    if (own == MAP_FAILED || !gen_own || !own_owner || !inh_owner) {
        wl_fail("member %d: allocation failed", m);
        return;
    }
    for (uint64_t i = 0; i < np; i++) {
        gen_own[i] = (uint32_t)(1000 + i);
        own_owner[i] = (uint8_t)m;
        fill(own, 1, (uint64_t)m, i, gen_own[i]);
    }
    int k = 0;
    char name[4200];
    while (!wl_triggered()) {
        snprintf(name, sizeof name, "%s.%d", wl_trigger_path, k + 1);
        if (exists(name)) {
            k++;
            for (uint64_t i = 0; i < np; i++) {
                if ((i * 2654435761u + 3u * (uint64_t)k + (uint64_t)m) % 100 == 0) {
                    gen_own[i] = (uint32_t)k;
                    fill(own, 1, (uint64_t)m, i, (uint64_t)k);
                }
                if ((i * 2654435761u + (uint64_t)k + 50u * (uint64_t)m) % 200 == 0) {
                    gen_inh[i] = (uint32_t)k;
                    inh_owner[i] = (uint8_t)m;
                    fill(inh, 2, (uint64_t)m, i, (uint64_t)k);
                }
            }
            snprintf(name, sizeof name, "%s.%d.%d", wl_trigger_path, k, m);
            make(name);
        }
        usleep(2000);
    }
    if (wl_tamper && m == 1)
        own[(np / 2) * WORDS + 3] ^= 1;
    uint64_t bo = bad_pages(own, 1, gen_own, own_owner), bi = bad_pages(inh, 2, gen_inh, inh_owner);
    WL_CHECK(bo == 0 && bi == 0, "member %d: pages that differ from their generation: %llu of its own, %llu inherited (step %d)", m, (unsigned long long)bo,
             (unsigned long long)bi, k);
}

static pid_t child(int m)
{
    pid_t pid = fork();
    if (pid == 0) {
        run(m);
        wl_child_exit(fail_path(m));
    }
    if (pid < 0)
        wl_fail("fork %d: %s", m, strerror(errno));
    return pid;
}

static void reap(pid_t pid, int m)
{
    char who[16];
    snprintf(who, sizeof who, "member %d", m);
    wl_reap_child(pid, who, fail_path(m));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 8;
    np = mib * (1024 * 1024 / PAGE);
    if (np < 64)
        np = 64;
    inh = mmap(0, np * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen_inh = calloc(np, sizeof *gen_inh);
    if (inh == MAP_FAILED || !gen_inh) {
        wl_fail("allocation failed");
        wl_finish("incrtree", NULL);
    }
    for (uint64_t i = 0; i < np; i++) {
        gen_inh[i] = (uint32_t)(5000 + i);
        fill(inh, 2, 0, i, gen_inh[i]);
    }
    fflush(stdout);
    pid_t a = child(1);
    pid_t b = child(2);
    wl_ready();
    run(0);
    reap(a, 1);
    reap(b, 2);
    wl_finish("incrtree", NULL);
}
