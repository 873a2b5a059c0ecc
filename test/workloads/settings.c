/*
 * settings <trigger> [--oom N] [--as UID:GID] [--cgroup DIR]: per-process settings that have no object of their
 * own. Sets: CPU affinity to one CPU (the highest it may use, so that on a machine with more than
 * one the default mask differs), oom_score_adj N (default 300), timer slack 123457 ns, the
 * child-subreaper flag, I/O priority best-effort 6, core dump filter 0x2b, machine-check kill
 * policy "early", the audit login uid 4242 (only when it was never set: then anyone may set it
 * once), speculative store bypass and indirect branch speculation disabled where prctl may choose
 * them, and, after becoming UID:GID if asked (a change of credentials resets them), the
 * parent-death signal SIGUSR2 (with a handler that counts: it must never come) and dumpable 0.
 * With --cgroup, it first moves itself into the control group DIR (a directory of a cgroup
 * file system). Its control groups (/proc/self/cgroup) must be the same after the trigger.
 * Checks after the trigger that each reads back as it did before READY.
 */
#include "common.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define IOPRIO_WANT ((2 << 13) | 6) /* best effort, level 6 */
#define LOGINUID_UNSET 4294967295u

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
    int dumpable;
    long ioprio;
    unsigned coredump_filter;
    int mce;
    unsigned loginuid;
    long spec[2];
    char cgroups[4096];
};

/* A /proc/self file's first number, in `base`. */
static unsigned long read_self(const char *name, int base)
{
    char path[64], buf[32] = {0};
    snprintf(path, sizeof path, "/proc/self/%s", name);
    int fd = open(path, O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0)
        wl_fail("read %s: %s", path, strerror(errno));
    close(fd);
    return strtoul(buf, NULL, base);
}

static void write_self(const char *name, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/%s", name);
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        wl_fail("write %s to %s: %s", text, path, strerror(errno));
    close(fd);
}

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
    s->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    s->ioprio = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
    s->coredump_filter = (unsigned)read_self("coredump_filter", 16);
    s->mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
    s->loginuid = (unsigned)read_self("loginuid", 10);
    s->spec[0] = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
    s->spec[1] = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_INDIRECT_BRANCH, 0, 0, 0);
    int fd = open("/proc/self/cgroup", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, s->cgroups, sizeof s->cgroups - 1);
    if (n <= 0)
        wl_fail("read /proc/self/cgroup: %s", strerror(errno));
    close(fd);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--oom N] [--as UID:GID] [--cgroup DIR]");
    int oom = 300;
    unsigned uid = 0, gid = 0;
    int as_user = 0;
    const char *cgroup = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--cgroup") == 0)
            cgroup = argv[i + 1];
        else if (strcmp(argv[i], "--oom") == 0)
            oom = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--as") == 0 && sscanf(argv[i + 1], "%u:%u", &uid, &gid) == 2)
            as_user = 1;
    }

    if (cgroup) {
        char procs[4096];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", cgroup);
        int fd = open(procs, O_WRONLY);
        if (fd < 0 || write(fd, "0\n", 2) != 2)
            wl_fail("joining %s: %s", cgroup, strerror(errno));
        close(fd);
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
    if (syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, IOPRIO_WANT) != 0)
        wl_fail("ioprio_set: %s", strerror(errno));
    write_self("coredump_filter", "0x2b");
    if (prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) != 0)
        wl_fail("PR_MCE_KILL: %s", strerror(errno));
    int set_loginuid = read_self("loginuid", 10) == LOGINUID_UNSET;
    if (set_loginuid)
        write_self("loginuid", "4242");
    /* Only where this machine lets a task choose: the checks below compare with what took. */
    int which[2] = {PR_SPEC_STORE_BYPASS, PR_SPEC_INDIRECT_BRANCH};
    for (int i = 0; i < 2; i++) {
        int v = prctl(PR_GET_SPECULATION_CTRL, which[i], 0, 0, 0);
        if (v > 0 && (v & PR_SPEC_PRCTL) && (v & PR_SPEC_ENABLE))
            prctl(PR_SET_SPECULATION_CTRL, which[i], PR_SPEC_DISABLE, 0, 0);
    }
    if (as_user) {
        gid_t g[1] = {gid};
        if (setgroups(1, g) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
            wl_fail("becoming %u:%u: %s", uid, gid, strerror(errno));
    }
    signal(SIGUSR2, on_usr2);
    if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0) != 0)
        wl_fail("PR_SET_PDEATHSIG: %s", strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        wl_fail("PR_SET_DUMPABLE: %s", strerror(errno));

    struct settings want;
    read_settings(&want);
    WL_CHECK(CPU_COUNT(&want.cpus) == 1 && CPU_ISSET(last, &want.cpus), "affinity did not take");
    WL_CHECK(want.oom == oom, "oom_score_adj %d right after setting %d", want.oom, oom);
    WL_CHECK(want.pdeathsig == SIGUSR2 && want.slack == 123457 && want.subreaper == 1, "prctl settings did not take");
    WL_CHECK(want.dumpable == 0 && want.ioprio == IOPRIO_WANT && want.coredump_filter == 0x2b && want.mce == PR_MCE_KILL_EARLY,
             "dumpable %d, ioprio 0x%lx, coredump_filter 0x%x, mce %d right after setting them", want.dumpable, want.ioprio,
             want.coredump_filter, want.mce);
    WL_CHECK(!set_loginuid || want.loginuid == 4242, "loginuid %u right after setting 4242", want.loginuid);

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
    WL_CHECK(now.dumpable == want.dumpable, "dumpable %d, want %d", now.dumpable, want.dumpable);
    WL_CHECK(now.ioprio == want.ioprio, "I/O priority 0x%lx, want 0x%lx", now.ioprio, want.ioprio);
    WL_CHECK(now.coredump_filter == want.coredump_filter, "coredump_filter 0x%x, want 0x%x", now.coredump_filter, want.coredump_filter);
    WL_CHECK(now.mce == want.mce, "machine-check kill policy %d, want %d", now.mce, want.mce);
    WL_CHECK(now.loginuid == want.loginuid, "loginuid %u, want %u", now.loginuid, want.loginuid);
    for (int i = 0; i < 2; i++)
        WL_CHECK(now.spec[i] == want.spec[i], "speculation control %d: 0x%lx, want 0x%lx", i, now.spec[i], want.spec[i]);
    WL_CHECK(strcmp(now.cgroups, want.cgroups) == 0, "control groups:\n%s\nwant:\n%s", now.cgroups, want.cgroups);
    WL_CHECK(pdeath_count == 0, "the parent-death signal came %d time(s)", (int)pdeath_count);
    wl_finish("settings", NULL);
}
