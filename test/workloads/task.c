/*
 * task <trigger> <dir> [--nobody | --as UID:GID]: the identity and per-process settings of a task.
 * Started detached (its own session): checks it is a session and group leader.
 * Sets: comm (PR_SET_NAME "cpt-task"), umask 027, cwd = <dir>, rlimits (NOFILE soft 777,
 * CORE soft 0, STACK soft lowered), personality PER_LINUX|UNAME26, nice 5, and the
 * credentials: as root, groups {0,10,100} and uid/gid 0/0/0; with --nobody, groups {1,2},
 * gid 65534/65533/65532 and uid 65534/65533/65532 (real/effective/saved), which also
 * drops every capability and the dumpable flag; with --as UID:GID, an ordinary user: every uid
 * UID, every gid GID, groups {GID}, no capability.
 * Checks after the trigger: sid, pgrp, the three uids and gids, fsuid/fsgid, groups,
 * capabilities (capget), PR_GET_DUMPABLE, PR_GET_NO_NEW_PRIVS, comm, umask, cwd, every
 * rlimit, personality (and that uname() reports 2.6.x, i.e. the kernel still applies
 * UNAME26), and the nice value.
 */
#include "common.h"

#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#define NOBODY_R 65534
#define NOBODY_E 65533
#define NOBODY_S 65532

struct creds {
    uid_t ruid, euid, suid, fsuid;
    gid_t rgid, egid, sgid, fsgid;
    int ngroups;
    gid_t groups[64];
    struct __user_cap_data_struct caps[2];
    int dumpable, no_new_privs;
};

static void read_creds(struct creds *c)
{
    memset(c, 0, sizeof *c);
    getresuid(&c->ruid, &c->euid, &c->suid);
    getresgid(&c->rgid, &c->egid, &c->sgid);
    c->fsuid = (uid_t)setfsuid((uid_t)-1);
    c->fsgid = (gid_t)setfsgid((gid_t)-1);
    c->ngroups = getgroups(64, c->groups);
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    if (syscall(SYS_capget, &hdr, c->caps) != 0)
        wl_fail("capget: %s", strerror(errno));
    c->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    c->no_new_privs = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
}

static void compare_creds(const struct creds *a, const struct creds *b)
{
    WL_CHECK(a->ruid == b->ruid && a->euid == b->euid && a->suid == b->suid,
             "uids %u/%u/%u, want %u/%u/%u", a->ruid, a->euid, a->suid, b->ruid, b->euid, b->suid);
    WL_CHECK(a->rgid == b->rgid && a->egid == b->egid && a->sgid == b->sgid,
             "gids %u/%u/%u, want %u/%u/%u", a->rgid, a->egid, a->sgid, b->rgid, b->egid, b->sgid);
    WL_CHECK(a->fsuid == b->fsuid && a->fsgid == b->fsgid, "fsuid/fsgid %u/%u, want %u/%u", a->fsuid, a->fsgid,
             b->fsuid, b->fsgid);
    WL_CHECK(a->ngroups == b->ngroups && memcmp(a->groups, b->groups, sizeof(gid_t) * (size_t)(a->ngroups > 0 ? a->ngroups : 0)) == 0,
             "supplementary groups differ (%d, want %d)", a->ngroups, b->ngroups);
    for (int i = 0; i < 2; i++)
        WL_CHECK(a->caps[i].effective == b->caps[i].effective && a->caps[i].permitted == b->caps[i].permitted &&
                     a->caps[i].inheritable == b->caps[i].inheritable,
                 "capabilities word %d: eff %#x perm %#x inh %#x, want %#x %#x %#x", i, a->caps[i].effective,
                 a->caps[i].permitted, a->caps[i].inheritable, b->caps[i].effective, b->caps[i].permitted,
                 b->caps[i].inheritable);
    WL_CHECK(a->dumpable == b->dumpable, "dumpable %d, want %d", a->dumpable, b->dumpable);
    WL_CHECK(a->no_new_privs == b->no_new_privs, "no_new_privs %d, want %d", a->no_new_privs, b->no_new_privs);
}

static mode_t read_umask(void)
{
    mode_t m = umask(0);
    umask(m);
    return m;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir> [--nobody | --as UID:GID]");
    int nobody = argc > 3 && strcmp(argv[3], "--nobody") == 0;
    unsigned as_uid = 0, as_gid = 0;
    int as_user = argc > 4 && strcmp(argv[3], "--as") == 0 && sscanf(argv[4], "%u:%u", &as_uid, &as_gid) == 2;
    if (as_user)
        nobody = 1; /* the same path tricks apply: the process is not root */
    pid_t self = getpid();

    WL_CHECK(getsid(0) == self, "not a session leader at start (sid %d)", (int)getsid(0));
    WL_CHECK(getpgrp() == self, "not a group leader at start (pgrp %d)", (int)getpgrp());

    if (prctl(PR_SET_NAME, "cpt-task", 0, 0, 0) != 0)
        wl_fail("PR_SET_NAME: %s", strerror(errno));
    umask(027);
    if (chdir(argv[2]) != 0)
        wl_fail("chdir %s: %s", argv[2], strerror(errno));
    static char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL)
        wl_fail("getcwd: %s", strerror(errno));

    /* As nobody, the absolute trigger path may cross directories only root can search (the
     * harness's are 0755, their parents are whatever the checkout has): when the trigger sits in
     * the parent of <dir>, look it up as ../<name>, from the cwd, which is also restored. */
    static char rel_trigger[PATH_MAX];
    const char *slash = strrchr(wl_trigger_path, '/');
    const char *cwd_slash = strrchr(cwd, '/');
    if (nobody && slash != NULL && cwd_slash != NULL && slash - wl_trigger_path == cwd_slash - cwd &&
        strncmp(wl_trigger_path, cwd, (size_t)(slash - wl_trigger_path)) == 0) {
        snprintf(rel_trigger, sizeof rel_trigger, "..%s", slash);
        wl_trigger_path = rel_trigger;
    }

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 777;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        wl_fail("setrlimit NOFILE: %s", strerror(errno));
    getrlimit(RLIMIT_CORE, &rl);
    rl.rlim_cur = 0;
    if (setrlimit(RLIMIT_CORE, &rl) != 0)
        wl_fail("setrlimit CORE: %s", strerror(errno));
    getrlimit(RLIMIT_STACK, &rl);
    rlim_t top = rl.rlim_cur < rl.rlim_max ? rl.rlim_cur : rl.rlim_max;
    rl.rlim_cur = top == RLIM_INFINITY ? 6u << 20 : top / 2 + 4096;
    if (setrlimit(RLIMIT_STACK, &rl) != 0)
        wl_fail("setrlimit STACK: %s", strerror(errno));
    struct rlimit limits[RLIM_NLIMITS];
    for (int r = 0; r < RLIM_NLIMITS; r++)
        getrlimit((__rlimit_resource_t)r, &limits[r]);

    const unsigned long pers = PER_LINUX | UNAME26;
    if (personality(pers) == -1)
        wl_fail("personality: %s", strerror(errno));
    int pers_now = personality(0xffffffff);
    WL_CHECK((unsigned long)pers_now == pers, "personality %#x right after setting %#lx", pers_now, pers);

    errno = 0;
    if (setpriority(PRIO_PROCESS, 0, 5) != 0)
        wl_fail("setpriority: %s", strerror(errno));

    if (as_user) {
        gid_t g[1] = {as_gid};
        if (setgroups(1, g) != 0)
            wl_fail("setgroups: %s", strerror(errno));
        if (setresgid(as_gid, as_gid, as_gid) != 0)
            wl_fail("setresgid: %s", strerror(errno));
        if (setresuid(as_uid, as_uid, as_uid) != 0)
            wl_fail("setresuid: %s", strerror(errno));
    } else if (nobody) {
        gid_t g[2] = {1, 2};
        if (setgroups(2, g) != 0)
            wl_fail("setgroups: %s", strerror(errno));
        if (setresgid(NOBODY_R, NOBODY_E, NOBODY_S) != 0)
            wl_fail("setresgid: %s", strerror(errno));
        if (setresuid(NOBODY_R, NOBODY_E, NOBODY_S) != 0)
            wl_fail("setresuid: %s", strerror(errno));
    } else {
        gid_t g[3] = {0, 10, 100};
        if (setgroups(3, g) != 0)
            wl_fail("setgroups: %s", strerror(errno));
        if (setresgid(0, 0, 0) != 0)
            wl_fail("setresgid: %s", strerror(errno));
        if (setresuid(0, 0, 0) != 0)
            wl_fail("setresuid: %s", strerror(errno));
    }
    struct creds want;
    read_creds(&want);
    if (as_user) {
        WL_CHECK(want.ruid == as_uid && want.euid == as_uid && want.suid == as_uid && want.fsuid == as_uid, "setresuid did not take");
        WL_CHECK(want.rgid == as_gid && want.egid == as_gid && want.sgid == as_gid && want.fsgid == as_gid, "setresgid did not take");
        WL_CHECK(want.caps[0].effective == 0 && want.caps[0].permitted == 0, "capabilities kept as uid %u", as_uid);
    } else if (nobody) {
        WL_CHECK(want.ruid == NOBODY_R && want.euid == NOBODY_E && want.suid == NOBODY_S, "setresuid did not take");
        WL_CHECK(want.rgid == NOBODY_R && want.egid == NOBODY_E && want.sgid == NOBODY_S, "setresgid did not take");
        WL_CHECK(want.caps[0].effective == 0 && want.caps[0].permitted == 0, "capabilities kept as nobody");
    } else {
        WL_CHECK(want.ruid == 0 && want.euid == 0 && want.suid == 0 && want.rgid == 0, "not root");
    }

    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        umask(022);

    WL_CHECK(getsid(0) == self, "sid %d, want %d", (int)getsid(0), (int)self);
    WL_CHECK(getpgrp() == self, "pgrp %d, want %d", (int)getpgrp(), (int)self);
    struct creds now;
    read_creds(&now);
    compare_creds(&now, &want);

    char name[17] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    WL_CHECK(strcmp(name, "cpt-task") == 0, "comm '%s', want 'cpt-task'", name);
    mode_t m = read_umask();
    WL_CHECK(m == 027, "umask %03o, want 027", (unsigned)m);
    static char cwd_now[PATH_MAX];
    if (getcwd(cwd_now, sizeof cwd_now) == NULL)
        wl_fail("getcwd after trigger: %s", strerror(errno));
    else
        WL_CHECK(strcmp(cwd_now, cwd) == 0, "cwd '%s', want '%s'", cwd_now, cwd);
    for (int r = 0; r < RLIM_NLIMITS; r++) {
        getrlimit((__rlimit_resource_t)r, &rl);
        WL_CHECK(rl.rlim_cur == limits[r].rlim_cur && rl.rlim_max == limits[r].rlim_max,
                 "rlimit %d is %llu/%llu, want %llu/%llu", r, (unsigned long long)rl.rlim_cur,
                 (unsigned long long)rl.rlim_max, (unsigned long long)limits[r].rlim_cur,
                 (unsigned long long)limits[r].rlim_max);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    WL_CHECK(rl.rlim_cur == 777, "RLIMIT_NOFILE soft %llu", (unsigned long long)rl.rlim_cur);
    getrlimit(RLIMIT_CORE, &rl);
    WL_CHECK(rl.rlim_cur == 0, "RLIMIT_CORE soft %llu", (unsigned long long)rl.rlim_cur);
    pers_now = personality(0xffffffff);
    WL_CHECK((unsigned long)pers_now == pers, "personality %#x, want %#lx", pers_now, pers);
    struct utsname u;
    uname(&u);
    WL_CHECK(strncmp(u.release, "2.6.", 4) == 0, "uname release '%s' with UNAME26", u.release);
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    WL_CHECK(errno == 0 && nice_now == 5, "nice %d, want 5", nice_now);

    wl_finish(as_user ? "task-user" : nobody ? "task-nobody" : "task", NULL);
}
