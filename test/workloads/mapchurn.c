/*
 * mapchurn <trigger> [signals]: memory areas that change while a checkpoint gets ready.
 *
 * Default: 8 slots of 16 pages, 32 pages apart (nothing is ever mapped between them, so no two
 * areas merge), go round and round through 7 steps, one system call each, with 0-30 ms pauses:
 *   0 mmap read-write and fill every page with a pattern of the step number,
 *   1 mprotect read-only, 2 madvise WIPEONFORK, 3 madvise DONTDUMP, 4 mprotect read-write,
 *   5 madvise DONTNEED (every page gone: zeros), 6 munmap.
 * Step k works on slot k % 8, in phase (k / 8) % 7, and `done` counts the steps made. After the
 * trigger the loop stops between steps, and every slot must be as `done` says: mapped or not,
 * exactly its 16 pages, its protection, VmFlags wf and dd, Rss (every page, or none after
 * DONTNEED), and its data (the pattern of the step that mapped it, or zeros).
 *
 * "signals": area A (16 pages, pattern) and nothing else changes, but SIGUSR1 maps area B (16
 * pages, pattern) and SIGUSR2 makes A MADV_DONTDUMP (its VmFlags change, its maps line does
 * not). After the trigger: A's data, its "dd" exactly when SIGUSR2 came, B mapped with its data
 * exactly when SIGUSR1 came.
 *
 * CPT_TAMPER=1 changes a byte of the first slot that holds data (of A with "signals").
 */
#define _GNU_SOURCE
#include "common.h"
#include <signal.h>
#include <sys/mman.h>

#define PG 4096L
#define SLOTS 8
#define SLOT_PAGES 16
#define SLOT_BYTES (SLOT_PAGES * PG)
#define PHASES 7

struct area_info {
    int found;
    unsigned long start, end;
    char perms[8];
    long rss_kb;
    char flags[512];
};

/* The area that starts at addr, from /proc/self/smaps (found 0 if none overlaps [addr, addr+len)). */
static void area_at(unsigned long addr, unsigned long len, struct area_info *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) {
        wl_fail("/proc/self/smaps: %s", strerror(errno));
        return;
    }
    char line[512];
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long x, y;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s ", &x, &y, perms) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            in = x < addr + len && addr < y;
            if (in) {
                if (out->found)
                    wl_fail("two areas in %lx-%lx", addr, addr + len);
                out->found = 1;
                out->start = x;
                out->end = y;
                snprintf(out->perms, sizeof out->perms, "%s", perms);
            }
        } else if (in && strncmp(line, "Rss:", 4) == 0) {
            out->rss_kb = strtol(line + 4, NULL, 10);
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out->flags, sizeof out->flags, " %s", line + 8);
            char *nl = strchr(out->flags, '\n');
            if (nl)
                *nl = ' ';
        }
    }
    fclose(f);
}

static int has_flag(const struct area_info *a, const char *flag)
{
    char want[8];
    snprintf(want, sizeof want, " %s ", flag);
    return strstr(a->flags, want) != NULL;
}

/* ---- default: the churn ---- */

static unsigned long base;
static volatile uint64_t done;

static unsigned long slot_addr(int i)
{
    return base + (unsigned long)i * 2 * SLOT_BYTES;
}

static void fill(unsigned long at, uint64_t seed)
{
    volatile uint64_t *w = (volatile uint64_t *)at;
    for (long i = 0; i < SLOT_BYTES / 8; i++)
        w[i] = wl_pat64(seed, (uint64_t)i);
}

/* Step k; 0 when it worked. */
static int step(uint64_t k)
{
    unsigned long at = slot_addr((int)(k % SLOTS));
    switch ((k / SLOTS) % PHASES) {
    case 0: {
        void *p = mmap((void *)at, SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p != (void *)at)
            return -1;
        fill(at, k);
        return 0;
    }
    case 1: return mprotect((void *)at, SLOT_BYTES, PROT_READ);
    case 2: return madvise((void *)at, SLOT_BYTES, MADV_WIPEONFORK);
    case 3: return madvise((void *)at, SLOT_BYTES, MADV_DONTDUMP);
    case 4: return mprotect((void *)at, SLOT_BYTES, PROT_READ | PROT_WRITE);
    case 5: return madvise((void *)at, SLOT_BYTES, MADV_DONTNEED);
    default: return munmap((void *)at, SLOT_BYTES);
    }
}

static void check_slot(int i, uint64_t n)
{
    unsigned long at = slot_addr(i);
    struct area_info a;
    area_at(at, SLOT_BYTES, &a);
    /* The steps of slot i so far: i, i + 8, ...; the last one's phase says its state. */
    uint64_t count = n > (uint64_t)i ? (n - 1 - (uint64_t)i) / SLOTS + 1 : 0;
    int phase = count ? (int)((count - 1) % PHASES) : PHASES - 1;
    if (phase == PHASES - 1) {
        WL_CHECK(!a.found, "slot %d (after %llu steps): mapped at %lx-%lx, expected none", i, (unsigned long long)n, a.start, a.end);
        return;
    }
    if (!a.found) {
        wl_fail("slot %d (after %llu steps, phase %d): not mapped", i, (unsigned long long)n, phase);
        return;
    }
    WL_CHECK(a.start == at && a.end == at + SLOT_BYTES, "slot %d: area %lx-%lx, expected %lx-%lx", i, a.start, a.end, at, at + SLOT_BYTES);
    int writable = phase == 0 || phase >= 4;
    WL_CHECK(a.perms[0] == 'r' && (a.perms[1] == 'w') == writable && a.perms[3] == 'p', "slot %d phase %d: perms %s", i, phase, a.perms);
    WL_CHECK(has_flag(&a, "wf") == (phase >= 2), "slot %d phase %d: VmFlags%s (wf)", i, phase, a.flags);
    WL_CHECK(has_flag(&a, "dd") == (phase >= 3), "slot %d phase %d: VmFlags%s (dd)", i, phase, a.flags);
    WL_CHECK(a.rss_kb == (phase == 5 ? 0 : SLOT_BYTES / 1024), "slot %d phase %d: Rss %ld kB", i, phase, a.rss_kb);
    /* The step that mapped it: the phase-0 step of this round. */
    uint64_t seed = (uint64_t)i + (count - 1 - (uint64_t)phase) * SLOTS;
    const volatile uint64_t *w = (const volatile uint64_t *)at;
    for (long k = 0; k < SLOT_BYTES / 8; k++) {
        uint64_t want = phase == 5 ? 0 : wl_pat64(seed, (uint64_t)k);
        if (w[k] != want) {
            wl_fail("slot %d phase %d: word %ld is %llx, expected %llx", i, phase, k, (unsigned long long)w[k], (unsigned long long)want);
            break;
        }
    }
}

static void churn(void)
{
    /* A free stretch for the slots and their gaps. */
    void *p = mmap(NULL, 2 * SLOTS * SLOT_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        wl_fail("mmap: %s", strerror(errno));
        wl_finish("mapchurn", NULL);
    }
    munmap(p, 2 * SLOTS * SLOT_BYTES);
    base = (unsigned long)p;
    uint64_t rnd = (uint64_t)getpid();
    wl_ready();
    while (!wl_triggered()) {
        if (step(done) != 0) {
            wl_fail("step %llu: %s", (unsigned long long)done, strerror(errno));
            break;
        }
        done = done + 1;
        rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
        struct timespec ts = {0, (long)((rnd >> 33) % 30000000)};
        nanosleep(&ts, NULL);
    }
    if (wl_tamper) {
        for (int i = 0; i < SLOTS; i++) {
            struct area_info a;
            area_at(slot_addr(i), SLOT_BYTES, &a);
            if (a.found && a.rss_kb > 0) {
                mprotect((void *)slot_addr(i), SLOT_BYTES, PROT_READ | PROT_WRITE);
                *(volatile uint8_t *)slot_addr(i) ^= 1;
                if (a.perms[1] != 'w')
                    mprotect((void *)slot_addr(i), SLOT_BYTES, PROT_READ);
                break;
            }
        }
    }
    for (int i = 0; i < SLOTS; i++)
        check_slot(i, done);
    wl_finish("mapchurn", NULL);
}

/* ---- signals ---- */

static uint8_t *area_a;
static uint8_t *volatile area_b;
static volatile sig_atomic_t got_usr1, got_usr2;
static uint8_t *b_spot;

static void on_usr1(int sig)
{
    (void)sig;
    if (got_usr1)
        return;
    void *p = mmap(b_spot, SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != b_spot)
        return;
    wl_fill_pattern(p, SLOT_BYTES, 2);
    area_b = p;
    got_usr1 = 1;
}

static void on_usr2(int sig)
{
    (void)sig;
    if (madvise(area_a, SLOT_BYTES, MADV_DONTDUMP) == 0)
        got_usr2 = 1;
}

static void signals(void)
{
    /* A and B's spot, a page apart from everything (a gap after each). */
    uint8_t *p = mmap(NULL, 4 * SLOT_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        wl_fail("mmap: %s", strerror(errno));
        wl_finish("mapchurn", NULL);
    }
    munmap(p, 4 * SLOT_BYTES);
    area_a = mmap(p, SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (area_a != p) {
        wl_fail("mmap A: %s", strerror(errno));
        wl_finish("mapchurn", NULL);
    }
    wl_fill_pattern(area_a, SLOT_BYTES, 1);
    b_spot = p + 2 * SLOT_BYTES;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    wl_ready();
    while (!wl_triggered())
        usleep(2000);
    if (wl_tamper)
        area_a[100] ^= 1;
    struct area_info a, b;
    area_at((unsigned long)area_a, SLOT_BYTES, &a);
    WL_CHECK(a.found && a.start == (unsigned long)area_a && a.end == (unsigned long)area_a + SLOT_BYTES, "A: area %lx-%lx", a.start, a.end);
    WL_CHECK(has_flag(&a, "dd") == (got_usr2 != 0), "A: VmFlags%s, SIGUSR2 %s", a.flags, got_usr2 ? "came" : "did not come");
    long bad = wl_check_pattern(area_a, SLOT_BYTES, 1);
    WL_CHECK(bad < 0, "A: byte %ld differs", bad);
    area_at((unsigned long)b_spot, SLOT_BYTES, &b);
    WL_CHECK(b.found == (got_usr1 != 0), "B: %s, SIGUSR1 %s", b.found ? "mapped" : "not mapped", got_usr1 ? "came" : "did not come");
    if (got_usr1 && b.found) {
        bad = wl_check_pattern(area_b, SLOT_BYTES, 2);
        WL_CHECK(bad < 0, "B: byte %ld differs", bad);
    }
    wl_finish("mapchurn", NULL);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [signals]");
    if (argc > 2 && strcmp(argv[2], "signals") == 0)
        signals();
    churn();
    return 0;
}
