/*
 * seccomp <trigger> [--strict | --tsync] [--as UID:GID]
 *
 * Threads under seccomp filters of their own. The process sets no_new_privs, installs filter A
 * (getppid fails with errno 77, with SECCOMP_FILTER_FLAG_LOG) and then makes two threads, which
 * inherit A: thread "sc-one" adds B (uname: errno 78), thread "sc-two" adds C (getpgid: errno 79).
 * After the trigger each thread checks that its own filters still answer with their errno, that
 * the calls only the others' filters forbid still work, and its Seccomp and Seccomp_filters in
 * /proc.
 *
 * --tsync: the two threads add nothing; after the checks the main thread installs D (getsid:
 * errno 80) with SECCOMP_FILTER_FLAG_TSYNC, which works only while A is the very filter every
 * thread holds (shared, not a copy), and each thread checks that D reaches it.
 *
 * --strict: a third thread, made before A, enters strict mode (read, write, exit only) and waits
 * in read() on a pipe; after the trigger it is asked, through that pipe, to echo a byte back, and
 * its Seccomp must be 1.
 *
 * CPT_TAMPER=1: the main thread adds a filter on uname before the final check.
 */
#include "common.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

static int install(int nr, int err, unsigned flags)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = 4, .filter = f };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

/* A raw call's errno (0 when it worked). */
static int err_of(long r)
{
    return r < 0 ? errno : 0;
}

static int e_getppid(void) { return err_of(syscall(SYS_getppid)); }
static int e_uname(void) { struct utsname u; return err_of(syscall(SYS_uname, &u)); }
static int e_getpgid(void) { return err_of(syscall(SYS_getpgid, 0)); }
static int e_getsid(void) { return err_of(syscall(SYS_getsid, 0)); }

/* /proc/self/task/TID/status: "Seccomp:" and "Seccomp_filters:". */
static void mode_of(pid_t tid, int *mode, int *filters)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    *mode = *filters = -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "Seccomp: %d", mode);
        sscanf(line, "Seccomp_filters: %d", filters);
    }
    fclose(f);
}

enum { WAITING, CHECK, CHECKED, CHECK_D, DONE };
static atomic_int phase[2], stage;
static pid_t tids[3];
static int strict_pipe_in[2], strict_pipe_out[2];
static int tsync;

/* What each thread expects from each call, before D (index: 0 main, 1 sc-one, 2 sc-two). */
static void check_calls(int who, const char *name)
{
    WL_CHECK(e_getppid() == 77, "%s: getppid errno %d, want 77 (filter A)", name, e_getppid());
    int want_uname = who == 1 && !tsync ? 78 : 0, want_pgid = who == 2 && !tsync ? 79 : 0;
    WL_CHECK(e_uname() == want_uname, "%s: uname errno %d, want %d", name, e_uname(), want_uname);
    WL_CHECK(e_getpgid() == want_pgid, "%s: getpgid errno %d, want %d", name, e_getpgid(), want_pgid);
    WL_CHECK(e_getsid() == 0, "%s: getsid errno %d before filter D", name, e_getsid());
    int mode, n;
    mode_of((pid_t)syscall(SYS_gettid), &mode, &n);
    int want_n = who == 0 || tsync ? 1 : 2;
    WL_CHECK(mode == 2 && n == want_n, "%s: Seccomp %d with %d filters, want 2 with %d", name, mode, n, want_n);
}

static void *worker(void *arg)
{
    int who = (int)(long)arg;
    const char *name = who == 1 ? "sc-one" : "sc-two";
    prctl(PR_SET_NAME, name);
    tids[who] = (pid_t)syscall(SYS_gettid);
    if (!tsync && install(who == 1 ? SYS_uname : SYS_getpgid, who == 1 ? 78 : 79, 0) != 0)
        wl_fail("%s: seccomp: %s", name, strerror(errno));
    atomic_store(&phase[who - 1], CHECK);
    while (atomic_load(&stage) < CHECK)
        usleep(2000);
    check_calls(who, name);
    atomic_store(&phase[who - 1], CHECKED);
    while (atomic_load(&stage) < CHECK_D)
        usleep(2000);
    if (atomic_load(&stage) == CHECK_D)
        WL_CHECK(e_getsid() == 80, "%s: getsid errno %d, want 80 (filter D, by TSYNC)", name, e_getsid());
    atomic_store(&phase[who - 1], DONE);
    return NULL;
}

/* Strict mode: read, write and exit only. */
static void *strict_thread(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "sc-strict");
    tids[0] = (pid_t)syscall(SYS_gettid);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) {
        wl_fail("strict: %s", strerror(errno));
        return NULL;
    }
    char c;
    while (syscall(SYS_read, strict_pipe_in[0], &c, 1) != 1)
        ;
    c++;
    syscall(SYS_write, strict_pipe_out[1], &c, 1);
    syscall(SYS_exit, 0);
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--strict | --tsync] [--as UID:GID]");
    wl_as_user(argc, argv);
    int strict = argc > 2 && strcmp(argv[2], "--strict") == 0;
    tsync = argc > 2 && strcmp(argv[2], "--tsync") == 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        wl_fail("no_new_privs: %s", strerror(errno));
    pthread_t st = 0, th[2];
    if (strict) {
        if (pipe(strict_pipe_in) != 0 || pipe(strict_pipe_out) != 0 || pthread_create(&st, NULL, strict_thread, NULL) != 0)
            wl_fail("strict thread: %s", strerror(errno));
        while (tids[0] == 0)
            usleep(1000);
        for (int mode = 0, n; mode != 1;) {
            mode_of(tids[0], &mode, &n);
            usleep(1000);
        }
    }
    if (install(SYS_getppid, 77, SECCOMP_FILTER_FLAG_LOG) != 0)
        wl_fail("filter A: %s", strerror(errno));
    for (long i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(i + 1)) != 0)
            wl_fail("pthread_create: %s", strerror(errno));
    while (atomic_load(&phase[0]) < CHECK || atomic_load(&phase[1]) < CHECK)
        usleep(1000);
    wl_ready();
    while (!wl_triggered())
        usleep(20000);

    if (wl_tamper)
        install(SYS_uname, 1, 0);
    check_calls(0, "main");
    atomic_store(&stage, CHECK);
    while (atomic_load(&phase[0]) < CHECKED || atomic_load(&phase[1]) < CHECKED)
        usleep(1000);
    if (strict) {
        int mode, n;
        mode_of(tids[0], &mode, &n);
        WL_CHECK(mode == 1, "strict thread: Seccomp %d, want 1", mode);
        char c = 'a', back = 0;
        if (write(strict_pipe_in[1], &c, 1) != 1 || read(strict_pipe_out[0], &back, 1) != 1 || back != 'b')
            wl_fail("strict thread did not echo (got %d)", back);
        pthread_join(st, NULL);
        atomic_store(&stage, DONE);
    } else if (!tsync) {
        atomic_store(&stage, DONE);
    } else {
        /* D with TSYNC: every other thread's filters must be an ancestor of the main thread's. */
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getsid, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 80),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = 4, .filter = f };
        long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
        WL_CHECK(r == 0, "filter D with TSYNC: %ld (%s): filter A is not shared by every thread", r, r < 0 ? strerror(errno) : "the thread that could not take it");
        atomic_store(&stage, r == 0 ? CHECK_D : DONE);
        WL_CHECK(e_getsid() == 80 || r != 0, "main: getsid errno %d, want 80", e_getsid());
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    wl_finish("seccomp", NULL);
}
