/*
 * mmstate <trigger> [refused]: memory areas with VmFlags of their own and mm-wide settings.
 *   - droppable: 4 pages MAP_DROPPABLE|MAP_ANONYMOUS ("dp"), filled with a pattern (a page may be
 *     found dropped, all zero, after the trigger: the kernel and a restore may drop them);
 *   - locked:    2 pages mlock'd ("lo"); onfault: 2 pages mlock2(MLOCK_ONFAULT) ("lo lf");
 *   - seq, rnd, merge: madvise SEQUENTIAL ("sr"), RANDOM ("rr"), MERGEABLE ("mg");
 *   - sealed:    2 pages mseal'd ("sl"): munmap and mprotect fail with EPERM;
 *   - THP disabled with PR_SET_THP_DISABLE (PR_GET_THP_DISABLE 1, status THP_enabled 0);
 *   - KSM for every area (PR_SET_MEMORY_MERGE 1, where the kernel has KSM);
 *   - membarrier registrations: PRIVATE_EXPEDITED, PRIVATE_EXPEDITED_SYNC_CORE (and _RSEQ where
 *     the kernel has it): the expedited commands work, GET_REGISTRATIONS is unchanged;
 *   - mlockall(MCL_FUTURE): an area mapped after the trigger is locked.
 * After the trigger: every area's VmFlags as before (less "ac"), the data, and each setting.
 * With "refused" it also registers 2 pages with userfaultfd (VmFlag "um", its fd kept open), which
 * a checkpoint must refuse; the mode is for refusal tests and checks the same after the trigger.
 * Features the kernel lacks (MAP_DROPPABLE, mseal, GET_REGISTRATIONS...) are left out, with a note.
 */
#define _GNU_SOURCE
#include "common.h"
#include <fcntl.h>
#include <linux/membarrier.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef SYS_mseal
#define SYS_mseal 462
#endif
#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

#define PG 4096L
static int page_is_zero(const uint8_t *p)
{
    for (long k = 0; k < PG; k++)
        if (p[k])
            return 0;
    return 1;
}

enum { DROPPABLE, LOCKED, ONFAULT, SEQ, RND, MERGE, SEALED, NAREAS };
static const char *names[NAREAS] = {"droppable", "locked", "onfault", "seq", "rnd", "merge", "sealed"};
static const int pages[NAREAS] = {4, 2, 2, 2, 2, 2, 2};
static uint8_t *area[NAREAS];
static char flags_before[NAREAS][256];
static char notes[256];

static void note(const char *s)
{
    size_t used = strlen(notes);
    snprintf(notes + used, sizeof notes - used, "%s%s", used ? ", " : "", s);
}

static int has_flag(const char *flags, const char *f)
{
    char buf[256];
    snprintf(buf, sizeof buf, " %s ", flags);
    char want[8];
    snprintf(want, sizeof want, " %s ", f);
    return strstr(buf, want) != NULL;
}

static long status_field(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [refused]");
    const char *mode = argc > 2 ? argv[2] : "";

    for (int i = 0; i < NAREAS; i++) {
        int type = i == DROPPABLE ? MAP_DROPPABLE : MAP_PRIVATE;
        /* a PROT_NONE page on each side keeps neighbours from merging with it */
        uint8_t *g = mmap(NULL, (pages[i] + 2) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        area[i] = g == MAP_FAILED ? MAP_FAILED : mmap(g + PG, pages[i] * PG, PROT_READ | PROT_WRITE, type | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (area[i] == MAP_FAILED && i == DROPPABLE && errno == EINVAL) {
            note("no MAP_DROPPABLE");
            area[i] = NULL;
            continue;
        }
        if (area[i] == MAP_FAILED)
            wl_fail("mmap %s: %s", names[i], strerror(errno));
    }
    for (int i = 0; i < NAREAS; i++)
        if (area[i] && area[i] != MAP_FAILED)
            for (long j = 0; j < pages[i] * PG; j++)
                area[i][j] = wl_pat8(100 + i, j);
    if (mlock(area[LOCKED], pages[LOCKED] * PG))
        wl_fail("mlock: %s", strerror(errno));
    if (syscall(SYS_mlock2, area[ONFAULT], pages[ONFAULT] * PG, MLOCK_ONFAULT))
        wl_fail("mlock2: %s", strerror(errno));
    if (madvise(area[SEQ], pages[SEQ] * PG, MADV_SEQUENTIAL) || madvise(area[RND], pages[RND] * PG, MADV_RANDOM))
        wl_fail("madvise: %s", strerror(errno));
    if (madvise(area[MERGE], pages[MERGE] * PG, MADV_MERGEABLE))
        note("no KSM"); /* an area without "mg": checked all the same */
    int sealed = syscall(SYS_mseal, area[SEALED], pages[SEALED] * PG, 0) == 0;
    if (!sealed)
        note("no mseal");

    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
        wl_fail("PR_SET_THP_DISABLE: %s", strerror(errno));
    int merge_any = prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0;
    if (!merge_any)
        note("no PR_SET_MEMORY_MERGE");
    int regs = MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) ||
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0))
        wl_fail("membarrier registration: %s", strerror(errno));
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0)
        regs |= MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ;
    else
        note("no membarrier rseq");
    long regs_before = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
    if (mlockall(MCL_FUTURE))
        wl_fail("mlockall(MCL_FUTURE): %s", strerror(errno));

    if (strcmp(mode, "refused") == 0) {
        /* userfaultfd areas are refused by every VMA kind; the fd stays, or the registration goes */
        int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
        struct uffdio_api api = {.api = UFFD_API};
        void *at = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct uffdio_register reg = {.range = {.start = (unsigned long)at, .len = 2 * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || at == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &reg))
            wl_fail("userfaultfd: %s", strerror(errno));
    }

    for (int i = 0; i < NAREAS; i++)
        if (area[i] && area[i] != MAP_FAILED)
            wl_vmflags(area[i], flags_before[i], sizeof flags_before[i]);
    const char *want[NAREAS] = {"dp", "lo", "lf", "sr", "rr", "mg", "sl"};
    for (int i = 0; i < NAREAS; i++) {
        if (!area[i] || area[i] == MAP_FAILED || (i == SEALED && !sealed) || (i == MERGE && strstr(notes, "KSM")))
            continue;
        WL_CHECK(has_flag(flags_before[i], want[i]), "%s: VmFlags '%s' lack %s before any C/R", names[i], flags_before[i], want[i]);
    }

    wl_ready();
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (!wl_triggered())
        nanosleep(&ts, NULL);

    if (wl_tamper)
        prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);

    for (int i = 0; i < NAREAS; i++) {
        if (!area[i] || area[i] == MAP_FAILED)
            continue;
        char now[256];
        wl_vmflags(area[i], now, sizeof now);
        WL_CHECK(strcmp(now, flags_before[i]) == 0, "%s: VmFlags '%s', were '%s'", names[i], now, flags_before[i]);
        long bad = -1;
        for (long j = 0; j < pages[i] * PG && bad < 0; j++) {
            /* A droppable page may have been dropped (by the kernel, or by a restore): all zero. */
            if (i == DROPPABLE && j % PG == 0 && page_is_zero(area[i] + j)) {
                j += PG - 1;
                continue;
            }
            if (area[i][j] != wl_pat8(100 + i, j))
                bad = j;
        }
        WL_CHECK(bad < 0, "%s: byte %ld differs", names[i], bad);
    }
    if (sealed) {
        WL_CHECK(munmap(area[SEALED], PG) != 0 && errno == EPERM, "sealed area: munmap was not refused with EPERM");
        WL_CHECK(mprotect(area[SEALED], PG, PROT_READ) != 0 && errno == EPERM, "sealed area: mprotect was not refused with EPERM");
    }
    if (merge_any)
        WL_CHECK(prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == 1, "PR_GET_MEMORY_MERGE is not 1");
    long thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
    WL_CHECK(thp == 1, "PR_GET_THP_DISABLE %ld, not 1", thp);
    long thp_status = status_field("THP_enabled");
    WL_CHECK(thp_status == 0 || thp_status == -1, "status THP_enabled %ld, not 0", thp_status);
    WL_CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0, "membarrier(PRIVATE_EXPEDITED): %s", strerror(errno));
    WL_CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) == 0, "membarrier(PRIVATE_EXPEDITED_SYNC_CORE): %s", strerror(errno));
    if (regs & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ)
        WL_CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0, "membarrier(PRIVATE_EXPEDITED_RSEQ): %s", strerror(errno));
    long regs_now = syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
    WL_CHECK(regs_now == regs_before, "membarrier registrations 0x%lx, were 0x%lx", regs_now, regs_before);
    if (regs_before < 0)
        note("no membarrier GET_REGISTRATIONS");
    uint8_t *later = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char lf[256] = "";
    if (later != MAP_FAILED)
        wl_vmflags(later, lf, sizeof lf);
    WL_CHECK(has_flag(lf, "lo"), "an area mapped after mlockall(MCL_FUTURE) is not locked: '%s'", lf);
    wl_finish("mmstate", notes);
}
