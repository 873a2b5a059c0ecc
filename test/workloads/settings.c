/*
 * settings <trigger> [--oom N] [--as UID:GID]: per-process settings that have no object of their
 * own. Sets: CPU affinity to one CPU (the highest it may use, so that on a machine with more than
 * one the default mask differs), oom_score_adj N (default 300), timer slack 123457 ns, the
 * child-subreaper flag, and, after becoming UID:GID if asked (a change of credentials clears it),
 * the parent-death signal SIGUSR2 (with a handler that counts: it must never come).
 * Checks after the trigger that each reads back as it did before READY.
 */
#include "common.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>

static volatile sig_atomic_t pdeath_count;
static void on_usr2(int sig)
{
    (void)sig;
    pdeath_count++;
}

struct settings {
    cpu_set_t cpus;
    int oom;
    int pdeathsig;
    long slack;
    int subreaper;
};

static int read_oom(void)
{
    char buf[32] = {0};
    int fd = open("/proc/self/oom_score_adj", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0)
        wl_fail("read oom_score_adj: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    return atoi(buf);
}

static void read_settings(struct settings *s)
{
    memset(s, 0, sizeof *s);
    if (sched_getaffinity(0, sizeof s->cpus, &s->cpus) != 0)
        wl_fail("sched_getaffinity: %s", strerror(errno));
    s->oom = read_oom();
    if (prctl(PR_GET_PDEATHSIG, &s->pdeathsig, 0, 0, 0) != 0)
        wl_fail("PR_GET_PDEATHSIG: %s", strerror(errno));
    s->slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (prctl(PR_GET_CHILD_SUBREAPER, &s->subreaper, 0, 0, 0) != 0)
        wl_fail("PR_GET_CHILD_SUBREAPER: %s", strerror(errno));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--oom N] [--as UID:GID]");
    int oom = 300;
    unsigned uid = 0, gid = 0;
    int as_user = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--oom") == 0)
            oom = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--as") == 0 && sscanf(argv[i + 1], "%u:%u", &uid, &gid) == 2)
            as_user = 1;
    }

    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0)
        wl_fail("sched_getaffinity: %s", strerror(errno));
    int last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &cpus))
            last = c;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        wl_fail("sched_setaffinity(%d): %s", last, strerror(errno));

    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", oom);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd < 0 || write(fd, buf, (size_t)n) != n)
        wl_fail("write oom_score_adj %d: %s", oom, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (prctl(PR_SET_TIMERSLACK, 123457ul, 0, 0, 0) != 0)
        wl_fail("PR_SET_TIMERSLACK: %s", strerror(errno));
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        wl_fail("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    if (as_user) {
        gid_t g[1] = {gid};
        if (setgroups(1, g) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
            wl_fail("becoming %u:%u: %s", uid, gid, strerror(errno));
    }
    signal(SIGUSR2, on_usr2);
    if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0) != 0)
        wl_fail("PR_SET_PDEATHSIG: %s", strerror(errno));

    struct settings want;
    read_settings(&want);
    WL_CHECK(CPU_COUNT(&want.cpus) == 1 && CPU_ISSET(last, &want.cpus), "affinity did not take");
    WL_CHECK(want.oom == oom, "oom_score_adj %d right after setting %d", want.oom, oom);
    WL_CHECK(want.pdeathsig == SIGUSR2 && want.slack == 123457 && want.subreaper == 1, "prctl settings did not take");

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        prctl(PR_SET_TIMERSLACK, 99999ul, 0, 0, 0);

    struct settings now;
    read_settings(&now);
    WL_CHECK(CPU_EQUAL(&now.cpus, &want.cpus), "affinity: %d CPU(s), want only CPU %d", CPU_COUNT(&now.cpus), last);
    WL_CHECK(now.oom == want.oom, "oom_score_adj %d, want %d", now.oom, want.oom);
    WL_CHECK(now.pdeathsig == want.pdeathsig, "parent-death signal %d, want %d", now.pdeathsig, want.pdeathsig);
    WL_CHECK(now.slack == want.slack, "timer slack %ld, want %ld", now.slack, want.slack);
    WL_CHECK(now.subreaper == want.subreaper, "child subreaper %d, want %d", now.subreaper, want.subreaper);
    WL_CHECK(pdeath_count == 0, "the parent-death signal came %d time(s)", (int)pdeath_count);
    wl_finish("settings", NULL);
}
