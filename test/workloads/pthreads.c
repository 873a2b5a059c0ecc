/*
 * A multi-threaded process whose every thread has state of its own, for checkpoint and restart
 * of threads.
 *
 *   pthreads <trigger> [--creds | --keepcaps | --seccomp | --unshare | --pidns | --as UID:GID]
 *
 * Threads (each named with PR_SET_NAME, each with its own __thread value and blocked mask):
 * - "spin":    an assembly loop holding magic values in r12-r15 and xmm8-xmm9 until a flag is set;
 *              then compares them (its registers and FPU state are its own);
 * - "cond":    waits on a condition variable (futex_wait), counts its wake-ups;
 * - "sleep":   clock_nanosleep of 20 ms in a loop, never returning early without EINTR;
 * - "barrier-a", "barrier-b": meet at a barrier, round after round;
 * - "alt":     has its own sigaltstack, SCHED_BATCH, nice 7 and timer slack 123457 ns; SIGUSR1
 *              was sent to it alone (pthread_kill) and is pending, blocked; after the trigger it
 *              unblocks it: the handler runs in this thread, on the alternate stack;
 * - "robust":  holds a robust mutex; after the trigger it exits holding it: the main thread's
 *              lock then returns EOWNERDEAD (the robust futex list);
 * - "join":    waits to be told to exit; the main thread joins it (clear_child_tid woken);
 * - "idle":    SCHED_IDLE, nice 3, CPU affinity of one CPU (the first it may run on);
 * - "creds" (--creds, as root only): setresgid/setresuid(65534) with raw system calls, for this
 *              thread alone; the main thread keeps uid 0. (--seccomp: an allow-all seccomp filter
 *              of this thread alone, restored to it alone.) --keepcaps (as root): as
 *              --creds with uid 99, and the main thread too leaves root (uid 12, gid 8) keeping its
 *              capabilities (PR_SET_KEEPCAPS, then every permitted one made effective again).
 *              --as UID:GID: the whole process becomes that user before any thread is made.
 *              --unshare: that thread has its own cwd and umask (unshare(CLONE_FS), umask 077),
 *              which a checkpoint must refuse; checked after the trigger. --pidns (as root): that
 *              thread's children would go into a PID namespace of its own (unshare(CLONE_NEWPID)),
 *              which a checkpoint must refuse.
 * SIGUSR2 is pending for the whole process (kill), blocked by every thread until the trigger; then "cond" unblocks it and takes it, once.
 * After the trigger every thread checks itself: its name (/proc/self/task/TID/comm), mask,
 * thread-local value, rseq registration (registering its area again is EBUSY), and the
 * main thread checks scheduling, affinity, credentials and that no thread is traced.
 */
#include "common.h"

#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

enum { SPIN, COND, SLEEP, BAR_A, BAR_B, ALT, ROBUST, JOIN, IDLE, CREDS, NTHREADS };
static const char *names[NTHREADS] = {"spin", "cond", "sleep", "barrier-a", "barrier-b", "alt", "robust", "join", "idle", "creds"};

static __thread long tls_value;
static pid_t tids[NTHREADS];
static pthread_t handles[NTHREADS];
static atomic_int started, checked, with_creds, with_seccomp, with_keepcaps, with_unshare, with_pidns;
static int thread_uid = 65534;
static atomic_int go; /* the trigger was seen: threads check themselves */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long posted, cond_woken;
static atomic_ulong slept, meetings;
static pthread_barrier_t barrier;
static pthread_mutex_t robust_lock;
static atomic_int join_exit, robust_exit;
static volatile int spin_stop;
static atomic_int usr1_tid, usr1_onstack, usr2_count, usr2_tid;
static char altstack[65536];
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    char b[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&fail_lock);
    wl_fail("%s", b);
    pthread_mutex_unlock(&fail_lock);
}

static void on_usr1(int sig)
{
    (void)sig;
    int here;
    atomic_store(&usr1_tid, (int)syscall(SYS_gettid));
    atomic_store(&usr1_onstack, (char *)&here >= altstack && (char *)&here < altstack + sizeof altstack);
}

static void on_usr2(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr2_count, 1);
    atomic_store(&usr2_tid, (int)syscall(SYS_gettid));
}

static void block_only(int sig_a, int sig_b, int sig_c)
{
    sigset_t set;
    sigemptyset(&set);
    if (sig_a)
        sigaddset(&set, sig_a);
    if (sig_b)
        sigaddset(&set, sig_b);
    if (sig_c)
        sigaddset(&set, sig_c);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
}

/* The signal each thread blocks besides SIGUSR2: its own real-time signal. */
static int own_signal(int i) { return SIGRTMIN + 2 + i; }

/* What every thread checks of itself after the trigger. */
static void self_check(int i)
{
    char cur[16] = {0};
    prctl(PR_GET_NAME, cur, 0, 0, 0);
    if (strcmp(cur, names[i]) != 0)
        fail("thread %s: PR_GET_NAME '%s'", names[i], cur);
    if (tls_value != 1000 + i)
        fail("thread %s: thread-local %ld", names[i], tls_value);
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    if (!sigismember(&now, own_signal(i)) || sigismember(&now, own_signal((i + 1) % NTHREADS)))
        fail("thread %s: blocked mask changed", names[i]);
    /* rseq: registering glibc's area again is refused with EBUSY only while it is registered. */
    if (__rseq_size > 0) {
        void *area = (char *)__builtin_thread_pointer() + __rseq_offset;
        long r = syscall(SYS_rseq, area, 32, 0, 0x53053053);
        if (r != -1 || errno != EBUSY)
            fail("thread %s: rseq no longer registered (%ld, errno %d)", names[i], r, errno);
    }
    atomic_fetch_add(&checked, 1);
}

static void start(int i)
{
    tls_value = 1000 + i;
    prctl(PR_SET_NAME, names[i], 0, 0, 0);
    block_only(own_signal(i), SIGUSR2, i == ALT ? SIGUSR1 : 0);
    tids[i] = (pid_t)syscall(SYS_gettid);
    atomic_fetch_add(&started, 1);
}

static void *spin_thread(void *arg)
{
    (void)arg;
    start(SPIN);
    uint64_t r12 = 0x1212121212121212ull, r13 = 0x1313131313131313ull, r14 = 0x1414141414141414ull, r15 = 0x1515151515151515ull;
    uint64_t x8[2] = {0x8888888811111111ull, 0x8888888822222222ull}, x9[2] = {0x9999999933333333ull, 0x9999999944444444ull};
    uint64_t o12, o13, o14, o15, ox8[2], ox9[2];
    __asm__ volatile(
        "mov %[a], %%r12\n mov %[b], %%r13\n mov %[c], %%r14\n mov %[d], %%r15\n"
        "movdqu (%[x8]), %%xmm8\n movdqu (%[x9]), %%xmm9\n"
        "1: pause\n cmpl $0, (%[stop])\n je 1b\n"
        "mov %%r12, %[o12]\n mov %%r13, %[o13]\n mov %%r14, %[o14]\n mov %%r15, %[o15]\n"
        "movdqu %%xmm8, (%[ox8])\n movdqu %%xmm9, (%[ox9])\n"
        : [o12] "=&m"(o12), [o13] "=&m"(o13), [o14] "=&m"(o14), [o15] "=&m"(o15)
        : [a] "r"(r12), [b] "r"(r13), [c] "r"(r14), [d] "r"(r15), [x8] "r"(x8), [x9] "r"(x9), [stop] "r"(&spin_stop), [ox8] "r"(ox8),
          [ox9] "r"(ox9)
        : "r12", "r13", "r14", "r15", "xmm8", "xmm9", "memory", "cc");
    if (o12 != r12 || o13 != r13 || o14 != r14 || o15 != r15)
        fail("spin: general registers changed (r12 %llx)", (unsigned long long)o12);
    if (memcmp(ox8, x8, 16) != 0 || memcmp(ox9, x9, 16) != 0)
        fail("spin: xmm8/xmm9 changed (%llx)", (unsigned long long)ox8[0]);
    self_check(SPIN);
    return NULL;
}

static void *cond_thread(void *arg)
{
    (void)arg;
    start(COND);
    pthread_mutex_lock(&lock);
    while (!atomic_load(&go)) {
        unsigned long seen = posted;
        while (posted == seen && !atomic_load(&go))
            pthread_cond_wait(&cond, &lock);
        cond_woken++;
    }
    pthread_mutex_unlock(&lock);
    self_check(COND);
    /* The process-wide SIGUSR2, pending since before the checkpoint: taken here, once. */
    block_only(own_signal(COND), 0, 0);
    return NULL;
}

static void *sleep_thread(void *arg)
{
    (void)arg;
    start(SLEEP);
    while (!atomic_load(&go)) {
        struct timespec t0, t1, req = {0, 20000000};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ns = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
        if (r == 0 && ns < 20000000L)
            fail("sleep: clock_nanosleep returned after %ld ns", ns);
        else if (r != 0 && r != EINTR)
            fail("sleep: clock_nanosleep returned %d", r);
        atomic_fetch_add(&slept, 1);
    }
    self_check(SLEEP);
    return NULL;
}

static void *barrier_thread(void *arg)
{
    int i = (int)(intptr_t)arg;
    start(i);
    /* One of the two decides each round whether it is the last; both read it after a second wait. */
    static int last_round;
    for (;;) {
        if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
            atomic_fetch_add(&meetings, 1);
            last_round = atomic_load(&go);
        }
        pthread_barrier_wait(&barrier);
        if (last_round)
            break;
    }
    self_check(i);
    return NULL;
}

static void *alt_thread(void *arg)
{
    (void)arg;
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 7);
    prctl(PR_SET_TIMERSLACK, 123457, 0, 0, 0);
    start(ALT);
    while (!atomic_load(&go))
        usleep(5000);
    stack_t now;
    sigaltstack(NULL, &now);
    if (now.ss_sp != altstack || now.ss_size != sizeof altstack || (now.ss_flags & SS_DISABLE))
        fail("alt: sigaltstack %p/%zu/%d", now.ss_sp, now.ss_size, now.ss_flags);
    long slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (slack != 123457)
        fail("alt: timer slack %ld", slack);
    sigset_t pend;
    sigpending(&pend);
    if (!sigismember(&pend, SIGUSR1))
        fail("alt: SIGUSR1 no longer pending");
    self_check(ALT);
    block_only(own_signal(ALT), SIGUSR2, 0);
    if (atomic_load(&usr1_tid) != tids[ALT])
        fail("alt: SIGUSR1 handled by %d", atomic_load(&usr1_tid));
    if (!atomic_load(&usr1_onstack))
        fail("alt: SIGUSR1 handler not on the alternate stack");
    return NULL;
}

static void *robust_thread(void *arg)
{
    (void)arg;
    start(ROBUST);
    pthread_mutex_lock(&robust_lock);
    while (!atomic_load(&robust_exit))
        usleep(5000);
    self_check(ROBUST);
    return NULL; /* holding robust_lock */
}

static void *join_thread(void *arg)
{
    (void)arg;
    start(JOIN);
    while (!atomic_load(&join_exit))
        usleep(5000);
    self_check(JOIN);
    return (void *)0x5eed;
}

static void *idle_thread(void *arg)
{
    (void)arg;
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 3);
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            CPU_ZERO(&set);
            CPU_SET(c, &set);
            break;
        }
    sched_setaffinity(0, sizeof set, &set);
    start(IDLE);
    while (!atomic_load(&go))
        usleep(5000);
    self_check(IDLE);
    return NULL;
}

static void *creds_thread(void *arg)
{
    (void)arg;
    if (atomic_load(&with_creds)) {
        syscall(SYS_setresgid, thread_uid, thread_uid, thread_uid);
        syscall(SYS_setresuid, thread_uid, thread_uid, thread_uid);
    }
    if (atomic_load(&with_unshare)) {
        if (unshare(CLONE_FS) != 0)
            fail("creds: unshare(CLONE_FS): %s", strerror(errno));
        umask(077);
    }
    if (atomic_load(&with_pidns) && unshare(CLONE_NEWPID) != 0)
        fail("creds: unshare(CLONE_NEWPID): %s", strerror(errno));
    if (atomic_load(&with_seccomp)) {
        struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
        struct sock_fprog prog = {.len = 1, .filter = &allow};
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
            fail("creds: seccomp: %s", strerror(errno));
    }
    start(CREDS);
    while (!atomic_load(&go))
        usleep(5000);
    if (atomic_load(&with_unshare)) {
        mode_t m = umask(077);
        if (m != 077)
            fail("creds: its own umask is %o, not 077", (unsigned)m);
    }
    self_check(CREDS);
    return NULL;
}

static const char *status_line(pid_t tid, const char *key, char *out, size_t len)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return out;
    while (fgets(buf, sizeof buf, f) != NULL)
        if (strncmp(buf, key, strlen(key)) == 0 && buf[strlen(key)] == ':') {
            snprintf(out, len, "%s", buf + strlen(key) + 1);
            out[strcspn(out, "\n")] = '\0';
        }
    fclose(f);
    return out;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--creds]");
    atomic_store(&with_creds, argc > 2 && strcmp(argv[2], "--creds") == 0 && geteuid() == 0);
    atomic_store(&with_seccomp, argc > 2 && strcmp(argv[2], "--seccomp") == 0);
    atomic_store(&with_unshare, argc > 2 && strcmp(argv[2], "--unshare") == 0);
    atomic_store(&with_pidns, argc > 2 && strcmp(argv[2], "--pidns") == 0 && geteuid() == 0);
    unsigned as_uid, as_gid;
    if (argc > 3 && strcmp(argv[2], "--as") == 0 && sscanf(argv[3], "%u:%u", &as_uid, &as_gid) == 2) {
        gid_t g[1] = {as_gid};
        if (setgroups(1, g) != 0 || setresgid(as_gid, as_gid, as_gid) != 0 || setresuid(as_uid, as_uid, as_uid) != 0)
            fail("becoming %u:%u: %s", as_uid, as_gid, strerror(errno));
    }
    if (argc > 2 && strcmp(argv[2], "--keepcaps") == 0 && geteuid() == 0) {
        atomic_store(&with_keepcaps, 1);
        atomic_store(&with_creds, 1);
        thread_uid = 99;
        prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sa.sa_flags = 0;
    sigaction(SIGUSR2, &sa, NULL);
    block_only(SIGUSR1, SIGUSR2, 0);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust_lock, &ma);
    pthread_barrier_init(&barrier, NULL, 2);
    void *(*fns[NTHREADS])(void *) = {spin_thread, cond_thread, sleep_thread, barrier_thread, barrier_thread, alt_thread,
                                      robust_thread, join_thread, idle_thread, creds_thread};
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&handles[i], NULL, fns[i], (void *)(intptr_t)i) != 0)
            return 1;
    while (atomic_load(&started) < NTHREADS)
        usleep(1000);
    char caps_before[3][64];
    if (atomic_load(&with_keepcaps)) {
        syscall(SYS_setresgid, 8, 8, 8);
        syscall(SYS_setresuid, 12, 12, 12);
        /* The permitted set survived (KEEP_CAPS); the effective one is raised again. */
        struct { uint32_t version; int pid; } hdr = {0x20080522, 0};
        struct { uint32_t eff, prm, inh; } data[2];
        syscall(SYS_capget, &hdr, data);
        data[0].eff = data[0].prm;
        data[1].eff = data[1].prm;
        if (syscall(SYS_capset, &hdr, data) != 0)
            fail("keepcaps: capset: %s", strerror(errno));
    }
    status_line(getpid(), "CapPrm", caps_before[0], sizeof caps_before[0]);
    status_line(getpid(), "CapEff", caps_before[1], sizeof caps_before[1]);
    pthread_kill(handles[ALT], SIGUSR1);
    kill(getpid(), SIGUSR2);
    wl_ready();
    while (!wl_triggered()) {
        pthread_mutex_lock(&lock);
        posted++;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
        usleep(10000);
    }

    /* Progress after the restart, before anything is told to stop. */
    unsigned long c0, s0 = atomic_load(&slept), m0 = atomic_load(&meetings);
    pthread_mutex_lock(&lock);
    c0 = cond_woken;
    pthread_mutex_unlock(&lock);
    for (int k = 0; k < 30; k++) {
        pthread_mutex_lock(&lock);
        posted++;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
        usleep(10000);
    }
    pthread_mutex_lock(&lock);
    WL_CHECK(cond_woken > c0, "cond: no longer woken (%lu)", cond_woken);
    pthread_mutex_unlock(&lock);
    WL_CHECK(atomic_load(&slept) > s0, "sleep: no longer sleeps and wakes (%lu)", (unsigned long)atomic_load(&slept));
    WL_CHECK(atomic_load(&meetings) > m0, "barrier: no more meetings (%lu)", (unsigned long)atomic_load(&meetings));

    char line[256];
    for (int i = 0; i < NTHREADS; i++) {
        char path[64], comm[32] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tids[i]);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            wl_fail("%s (tid %d) is gone", names[i], (int)tids[i]);
            continue;
        }
        if (fgets(comm, sizeof comm, f) != NULL)
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        const char *want = wl_tamper && i == SPIN ? "spun" : names[i];
        WL_CHECK(strcmp(comm, want) == 0, "thread %d comm '%s', not '%s'", (int)tids[i], comm, want);
        status_line(tids[i], "TracerPid", line, sizeof line);
        WL_CHECK(atoi(line) == 0, "%s traced by %s", names[i], line);
    }
    WL_CHECK(sched_getscheduler(tids[ALT]) == SCHED_BATCH, "alt: policy %d", sched_getscheduler(tids[ALT]));
    WL_CHECK(sched_getscheduler(tids[IDLE]) == SCHED_IDLE, "idle: policy %d", sched_getscheduler(tids[IDLE]));
    WL_CHECK(sched_getscheduler(0) == SCHED_OTHER, "main: policy %d", sched_getscheduler(0));
    errno = 0;
    WL_CHECK(getpriority(PRIO_PROCESS, (id_t)tids[ALT]) == 7, "alt: nice %d", getpriority(PRIO_PROCESS, (id_t)tids[ALT]));
    WL_CHECK(getpriority(PRIO_PROCESS, (id_t)tids[IDLE]) == 3, "idle: nice %d", getpriority(PRIO_PROCESS, (id_t)tids[IDLE]));
    WL_CHECK(getpriority(PRIO_PROCESS, 0) == 0, "main: nice %d", getpriority(PRIO_PROCESS, 0));
    cpu_set_t set;
    sched_getaffinity(tids[IDLE], sizeof set, &set);
    WL_CHECK(CPU_COUNT(&set) == 1, "idle: affinity of %d CPUs", CPU_COUNT(&set));
    char uid_main[128], uid_creds[128];
    status_line(getpid(), "Uid", uid_main, sizeof uid_main);
    status_line(tids[CREDS], "Uid", uid_creds, sizeof uid_creds);
    char want_uid[64];
    snprintf(want_uid, sizeof want_uid, "\t%d\t%d\t%d\t%d", thread_uid, thread_uid, thread_uid, thread_uid);
    if (atomic_load(&with_keepcaps)) {
        WL_CHECK(strcmp(uid_main, "\t12\t12\t12\t12") == 0, "keepcaps: main uids '%s'", uid_main);
        WL_CHECK(prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) == 1, "keepcaps: PR_GET_KEEPCAPS %d", prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0));
        status_line(getpid(), "CapPrm", caps_before[2], sizeof caps_before[2]);
        WL_CHECK(strcmp(caps_before[0], caps_before[2]) == 0, "keepcaps: CapPrm '%s', was '%s'", caps_before[2], caps_before[0]);
        status_line(getpid(), "CapEff", caps_before[2], sizeof caps_before[2]);
        WL_CHECK(strcmp(caps_before[1], caps_before[2]) == 0, "keepcaps: CapEff '%s', was '%s'", caps_before[2], caps_before[1]);
    }
    if (atomic_load(&with_creds))
        WL_CHECK(strcmp(uid_creds, want_uid) == 0 && strcmp(uid_main, uid_creds) != 0, "creds: uids '%s', main '%s'", uid_creds, uid_main);
    else
        WL_CHECK(strcmp(uid_main, uid_creds) == 0, "creds: uids '%s', main '%s'", uid_creds, uid_main);

    atomic_store(&go, 1);
    spin_stop = 1;
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    /* The process-wide SIGUSR2 was pending all along: delivered once, to "cond" (the only thread that unblocks it). */
    for (int k = 0; k < 500 && atomic_load(&usr2_count) == 0; k++)
        usleep(2000);
    WL_CHECK(atomic_load(&usr2_count) == 1 && atomic_load(&usr2_tid) == tids[COND], "SIGUSR2 taken %d time(s), by %d", atomic_load(&usr2_count), atomic_load(&usr2_tid));

    atomic_store(&join_exit, 1);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    void *ret = NULL;
    int r = pthread_timedjoin_np(handles[JOIN], &ret, &deadline);
    WL_CHECK(r == 0 && ret == (void *)0x5eed, "join: pthread_timedjoin_np %d, %p", r, ret);
    atomic_store(&robust_exit, 1);
    r = pthread_timedjoin_np(handles[ROBUST], NULL, &deadline);
    WL_CHECK(r == 0, "robust: join %d", r);
    r = pthread_mutex_lock(&robust_lock);
    WL_CHECK(r == EOWNERDEAD, "robust: lock of a mutex its dead owner held returned %d, not EOWNERDEAD", r);
    for (int i = 0; i < NTHREADS; i++)
        if (i != JOIN && i != ROBUST)
            pthread_timedjoin_np(handles[i], NULL, &deadline);
    WL_CHECK(atomic_load(&checked) == NTHREADS, "%d of %d threads checked themselves", atomic_load(&checked), NTHREADS);
    wl_finish("pthreads", NULL);
}
