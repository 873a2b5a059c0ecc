/*
 * tree <trigger> [parts [--as UID:GID]]: a process tree of three levels that checks itself (made
 * after becoming UID:GID, no groups, when asked).
 *
 *   R (the root, session and group leader; a file description at offset 10 on fd 10, shared by all)
 *   +- A   leader of a new process group A
 *   |  +- A1  in group A, running
 *   |  +- A2  exited with code 7, not reaped (a zombie)                       [part z]
 *   +- B   in group A (a group led by its sibling)                           [part g]
 *   +- C   a new session C, child subreaper                                  [part g]
 *   |  +- C1  in session C, group C
 *   |  +- C3  in group C2, whose leader C2 exited and was reaped: C3 was C2's child, reparented to C
 *   +- D   killed by SIGTERM, not reaped (a zombie)                          [part z]
 *   +- S   stopped by SIGSTOP                                                [part s]
 *
 * parts: letters z g s f c (default "zgsf"); f: the shared file description on fd 10 (the child A
 * moves the shared offset after the trigger, the root sees it); c: A1 forks short-lived children
 * and reaps them without pause (a checkpoint races with its forks and exits).
 *
 * Every member loops stat()ing the trigger; once it exists each checks its pid, parent, group,
 * session and memory (a pattern written by R before the forks, copy-on-write shared, and one of
 * its own) and exits 0, or 100 + the number of the first failed check. Parents reap their
 * children and check their statuses (zombies: the exact status); R prints the verdict. Each
 * member says it is set up by creating <trigger>.ready.<name>; R prints READY when all have.
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define SHARED_LEN (256 * 1024)
#define OWN_LEN (64 * 1024)

static uint8_t shared_pattern[SHARED_LEN]; /* written by R before any fork */
static uint8_t *own;
static char readydir_prefix[4096];
static int part_z = 1, part_g = 1, part_s = 1, part_f = 1, part_c = 0;

struct expect {
    pid_t pid, ppid, pgid, sid;
};

static void mark_ready(const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s.ready.%s", readydir_prefix, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

static int is_ready(const char *name)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s.ready.%s", readydir_prefix, name);
    return stat(p, &st) == 0;
}

static void nap(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void wait_trigger(void)
{
    while (!wl_triggered())
        nap();
}

/* The member's own checks: 0, or the number of the first one that failed. */
static int check_self(const struct expect *e, uint64_t seed)
{
    if (getpid() != e->pid)
        return 1;
    if (e->ppid >= 0 && getppid() != e->ppid)
        return 2;
    if (getpgrp() != e->pgid)
        return 3;
    if (getsid(0) != e->sid)
        return 4;
    if (wl_check_pattern(shared_pattern, SHARED_LEN, 42) >= 0)
        return 5;
    if (wl_check_pattern(own, OWN_LEN, seed) >= 0)
        return 6;
    return 0;
}

static void setup_own(uint64_t seed)
{
    own = malloc(OWN_LEN);
    wl_fill_pattern(own, OWN_LEN, seed);
}

/* A member that only runs and checks itself. */
static __attribute__((noreturn)) void leaf(const char *name, struct expect e, uint64_t seed)
{
    setup_own(seed);
    mark_ready(name);
    wait_trigger();
    int f = check_self(&e, seed);
    _exit(f ? 100 + f : 0);
}

/* A1 with part c: forks children that exit at once, reaps each with its status, until the trigger. */
static __attribute__((noreturn)) void churner(const char *name, struct expect e, uint64_t seed)
{
    setup_own(seed);
    mark_ready(name);
    long rounds = 0;
    int f = 0;
    while (!f && !wl_triggered()) {
        pid_t c = fork();
        if (c == 0)
            _exit(rounds % 200);
        int st = 0;
        pid_t r;
        do
            r = waitpid(c, &st, 0);
        while (r < 0 && errno == EINTR);
        if (c < 0 || r != c || !WIFEXITED(st) || WEXITSTATUS(st) != rounds % 200)
            f = 40;
        rounds++;
    }
    if (!f)
        f = check_self(&e, seed);
    _exit(f ? 100 + f : 0);
}

/* Reaps `pid` and compares its wait status; returns 0 or a failure number. */
static int reap(pid_t pid, int want_status, int failno)
{
    int st = 0;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    if (r != pid)
        return failno;
    return st == want_status ? 0 : failno + 1;
}

static pid_t fork_or_die(void)
{
    pid_t p = fork();
    if (p < 0) {
        printf("FAIL tree: fork: %s\n", strerror(errno));
        exit(1);
    }
    return p;
}

/* The memory of a process the kernel has made a zombie or stopped: its state letter. */
static char state_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return '?';
    buf[n] = 0;
    char *c = strrchr(buf, ')');
    return c && c[1] == ' ' ? c[2] : '?';
}

static void wait_state(pid_t pid, char want)
{
    for (int i = 0; i < 1000 && state_of(pid) != want; i++)
        nap();
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [parts [--as UID:GID]]");
    if (argc > 2) {
        part_z = strchr(argv[2], 'z') != NULL;
        part_g = strchr(argv[2], 'g') != NULL;
        part_s = strchr(argv[2], 's') != NULL;
        part_f = strchr(argv[2], 'f') != NULL;
        part_c = strchr(argv[2], 'c') != NULL;
    }
    unsigned as_uid, as_gid;
    if (argc > 4 && strcmp(argv[3], "--as") == 0 && sscanf(argv[4], "%u:%u", &as_uid, &as_gid) == 2) {
        if (setgroups(0, NULL) != 0 || setresgid(as_gid, as_gid, as_gid) != 0 || setresuid(as_uid, as_uid, as_uid) != 0) {
            printf("FAIL tree: becoming %u:%u: %s\n", as_uid, as_gid, strerror(errno));
            return 1;
        }
    }
    snprintf(readydir_prefix, sizeof readydir_prefix, "%s", wl_trigger_path);
    setvbuf(stdout, NULL, _IONBF, 0);
    wl_fill_pattern(shared_pattern, SHARED_LEN, 42);
    pid_t r = getpid();
    pid_t rsid = getsid(0), rpgid = getpgrp();
    int datafd = -1;
    if (part_f) {
        char p[4200];
        snprintf(p, sizeof p, "%s.data", wl_trigger_path);
        int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        char buf[100];
        memset(buf, 'x', sizeof buf);
        if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || dup3(fd, 10, 0) != 10) {
            printf("FAIL tree: data file: %s\n", strerror(errno));
            return 1;
        }
        close(fd);
        datafd = 10;
        lseek(datafd, 10, SEEK_SET);
    }

    /* A: group leader, with A1 running and A2 a zombie. */
    pid_t a = fork_or_die();
    if (a == 0) {
        setpgid(0, 0);
        pid_t me = getpid();
        pid_t a1 = fork_or_die();
        if (a1 == 0 && part_c)
            churner("A1", (struct expect){getpid(), me, me, rsid}, 11);
        if (a1 == 0)
            leaf("A1", (struct expect){getpid(), me, me, rsid}, 11);
        pid_t a2 = -1;
        if (part_z) {
            a2 = fork_or_die();
            if (a2 == 0)
                _exit(7);
            siginfo_t si;
            waitid(P_PID, (id_t)a2, &si, WEXITED | WNOWAIT);
        }
        struct expect e = {me, r, me, rsid};
        setup_own(10);
        mark_ready("A");
        wait_trigger();
        int f = check_self(&e, 10);
        if (!f && part_z && state_of(a2) != 'Z')
            f = 7;
        if (!f && part_f) {
            /* the description shared with R: offset 10, then moved by this process */
            if (lseek(datafd, 0, SEEK_CUR) != 10)
                f = 8;
            else if (lseek(datafd, 15, SEEK_SET) != 15)
                f = 9;
        }
        if (!f)
            f = reap(a1, 0, 20);
        if (!f && part_z)
            f = reap(a2, 7 << 8, 22);
        _exit(f ? 100 + f : 0);
    }
    setpgid(a, a); /* also done by A itself: whichever runs first */

    /* B: in A's group. */
    pid_t b = -1;
    if (part_g) {
        b = fork_or_die();
        if (b == 0) {
            setpgid(0, a);
            leaf("B", (struct expect){getpid(), r, a, rsid}, 12);
        }
        setpgid(b, a);
    }

    /* C: a session of its own, a subreaper; C1 in its group, C3 in the group of the gone C2. */
    pid_t c = -1;
    if (part_g) {
        c = fork_or_die();
        if (c == 0) {
            setsid();
            prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            pid_t me = getpid();
            pid_t c1 = fork_or_die();
            if (c1 == 0)
                leaf("C1", (struct expect){getpid(), me, me, me}, 14);
            pid_t c2 = fork_or_die();
            if (c2 == 0) {
                setpgid(0, 0);
                pid_t c2pid = getpid();
                pid_t c3 = fork_or_die();
                if (c3 == 0) {
                    /* its parent C2 exits: the subreaper C adopts it */
                    while (getppid() == c2pid)
                        nap();
                    leaf("C3", (struct expect){getpid(), me, c2pid, me}, 16);
                }
                _exit(0);
            }
            int f = reap(c2, 0, 30);
            /* C3 is C's child now; it tells when it is set up */
            while (!is_ready("C3"))
                nap();
            pid_t c3 = -1;
            {
                char path[64], buf[256] = {0};
                snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)me, (int)me);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    if (read(fd, buf, sizeof buf - 1) < 0)
                        buf[0] = 0;
                    close(fd);
                }
                /* two children: C1 and C3 */
                char *s = buf;
                while (*s) {
                    long v = strtol(s, &s, 10);
                    if (v > 0 && v != c1)
                        c3 = (pid_t)v;
                    while (*s == ' ' || *s == '\n')
                        s++;
                }
            }
            struct expect e = {me, r, me, me};
            setup_own(13);
            mark_ready("C");
            wait_trigger();
            if (!f)
                f = check_self(&e, 13);
            if (!f && c3 <= 0)
                f = 31;
            if (!f)
                f = reap(c1, 0, 32);
            if (!f)
                f = reap(c3, 0, 34);
            _exit(f ? 100 + f : 0);
        }
    }

    /* D: killed by SIGTERM, left a zombie. */
    pid_t d = -1;
    if (part_z) {
        d = fork_or_die();
        if (d == 0) {
            for (;;)
                pause();
        }
        kill(d, SIGTERM);
        siginfo_t si;
        waitid(P_PID, (id_t)d, &si, WEXITED | WNOWAIT);
    }

    /* S: stopped by SIGSTOP; continued by R after the trigger. */
    pid_t s = -1;
    if (part_s) {
        s = fork_or_die();
        if (s == 0) {
            struct expect e = {getpid(), r, r, rsid};
            setup_own(15);
            mark_ready("S");
            raise(SIGSTOP);
            wait_trigger();
            int f = check_self(&e, 15);
            _exit(f ? 100 + f : 0);
        }
        int st;
        waitpid(s, &st, WUNTRACED);
    }

    const char *names[] = {"A", "A1", "B", "C", "C1", "C3", "S"};
    int want[] = {1, 1, part_g, part_g, part_g, part_g, part_s};
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        while (want[i] && !is_ready(names[i]))
            nap();
    if (part_s)
        wait_state(s, 'T');
    setup_own(9);
    /* the root's parent is not in the tree: a restored root is init's child */
    struct expect e = {r, -1, rpgid, rsid};
    wl_ready();
    wait_trigger();

    if (wl_tamper)
        e.sid++;
    int f = check_self(&e, 9);
    WL_CHECK(f == 0, "root: check %d failed", f);
    if (part_z) {
        WL_CHECK(state_of(d) == 'Z', "D is %c, not a zombie", state_of(d));
    }
    if (part_s) {
        char st = state_of(s);
        WL_CHECK(st == 'T', "S is %c, not stopped", st);
        kill(s, SIGCONT);
    }
    int st = 0;
    WL_CHECK(waitpid(a, &st, 0) == a && st == 0, "A ended with status 0x%x", st);
    if (part_f) {
        off_t off = lseek(datafd, 0, SEEK_CUR);
        WL_CHECK(off == 15, "the offset A moved to 15 on the shared description is %ld here", (long)off);
    }
    if (part_g) {
        WL_CHECK(waitpid(b, &st, 0) == b && st == 0, "B ended with status 0x%x", st);
        WL_CHECK(waitpid(c, &st, 0) == c && st == 0, "C ended with status 0x%x", st);
    }
    if (part_z) {
        WL_CHECK(waitpid(d, &st, 0) == d && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM && !WCOREDUMP(st), "D ended with status 0x%x, not SIGTERM", st);
    }
    if (part_s) {
        WL_CHECK(waitpid(s, &st, 0) == s && st == 0, "S ended with status 0x%x", st);
    }
    WL_CHECK(waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD, "a child is left");
    wl_finish("tree", NULL);
}
