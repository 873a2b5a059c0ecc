/*
 * ptimers <trigger>: POSIX timers (timer_create) keep their ids, clocks, notifications and times.
 * Ids have holes (timers made and deleted before). The timers:
 *   per    CLOCK_MONOTONIC, periodic 20 ms, SIGRTMIN+1 with value 0xabc0de: expired before READY
 *          with its signal queued (blocked), overruns piling up;
 *   once   CLOCK_MONOTONIC, one-shot 10 ms, SIGRTMIN+2 with value 77: expired before READY, its
 *          signal queued: delivered exactly once after the trigger;
 *   far    CLOCK_REALTIME, one-shot 1 h, SIGUSR1 with value 5: never fires, its time left goes on;
 *   none   CLOCK_BOOTTIME, SIGEV_NONE, 1 h then every 2 s: only read;
 *   cpu    CLOCK_PROCESS_CPUTIME_ID, periodic 10 ms of CPU, SIGEV_THREAD_ID to this thread, SIGUSR2;
 *   tcpu   CLOCK_THREAD_CPUTIME_ID, one-shot 1 h of CPU, SIGUSR2;
 *   idle   CLOCK_MONOTONIC, made with no sigevent (SIGALRM), never armed.
 * After the trigger: /proc/self/timers lists the same ids, clocks, signals, values and notify
 * targets; each timer's interval is its own and its time left fits; with the signals unblocked,
 * per fires again and again (SI_TIMER, its id, its value), once exactly once, cpu while busy, far
 * and tcpu never, idle never.
 */
#include "common.h"

#include <signal.h>
#include <sys/syscall.h>

enum { PER, ONCE, FAR, NONE, CPU, TCPU, IDLE, N };
static const char *names[N] = {"per", "once", "far", "none", "cpu", "tcpu", "idle"};
static timer_t tid[N];
static int kid[N]; /* the kernel's id of each timer */
static int clk[N], sig[N];
static long val[N];
static volatile sig_atomic_t fired[N], bad_info;

#define SEC 1000000000LL

static long long ns(struct timespec t)
{
    return (long long)t.tv_sec * SEC + t.tv_nsec;
}

static void on_sig(int s, siginfo_t *si, void *uc)
{
    (void)uc;
    for (int i = 0; i < N; i++) {
        if (si->si_code == SI_TIMER && si->si_timerid == kid[i]) {
            if (s != sig[i] || (long)si->si_value.sival_ptr != val[i])
                bad_info++;
            fired[i]++;
            return;
        }
    }
    bad_info++;
}

static void make(int i, clockid_t c, int notify, int signo, long value)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = notify;
    sev.sigev_signo = signo;
    sev.sigev_value.sival_ptr = (void *)value;
    if (notify & SIGEV_THREAD_ID)
        sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(c, i == IDLE ? NULL : &sev, &tid[i]) != 0)
        wl_fail("timer_create %s: %s", names[i], strerror(errno));
    kid[i] = (int)(long)tid[i];
    clk[i] = (int)c;
    sig[i] = signo;
    val[i] = value;
}

static void arm(int i, long long value_ns, long long interval_ns)
{
    struct itimerspec its = {{interval_ns / SEC, interval_ns % SEC}, {value_ns / SEC, value_ns % SEC}};
    if (timer_settime(tid[i], 0, &its, NULL) != 0)
        wl_fail("timer_settime %s: %s", names[i], strerror(errno));
}

/* Checks /proc/self/timers against what was made. */
static void check_proc(void)
{
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) {
        wl_fail("/proc/self/timers: %s", strerror(errno));
        return;
    }
    int seen[N] = {0}, count = 0;
    char line[256];
    int id = -1, s = 0, c = 0;
    unsigned long v = 0;
    char kind[32] = "", who[8] = "";
    int target = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "ID: %d", &id) == 1)
            count++;
        else if (sscanf(line, "signal: %d/%lx", &s, &v) == 2)
            ;
        else if (sscanf(line, "notify: %31[a-z]/%7[a-z].%d", kind, who, &target) == 3)
            ;
        else if (sscanf(line, "ClockID: %d", &c) == 1) {
            for (int i = 0; i < N; i++) {
                if (kid[i] != id)
                    continue;
                seen[i]++;
                int want_clock = i == CPU ? -6 : i == TCPU ? -2 : clk[i]; /* the kernel's ids of the calling process's/thread's CPU clocks */
                const char *want_kind = i == NONE ? "none" : "signal";
                const char *want_who = i == CPU ? "tid" : "pid";
                if (c != want_clock || s != sig[i] || (i != IDLE && (long)v != val[i]) || strcmp(kind, want_kind) != 0 ||
                    strcmp(who, want_who) != 0 || target != getpid())
                    wl_fail("/proc timer %d (%s): clock %d signal %d/%lx notify %s/%s.%d", id, names[i], c, s, v, kind, who, target);
            }
        }
    }
    fclose(f);
    WL_CHECK(count == N + 2, "%d timers in /proc/self/timers, want %d", count, N + 2); /* and the two kept fillers */
    for (int i = 0; i < N; i++)
        WL_CHECK(seen[i] == 1, "timer %s (id %d) listed %d times", names[i], kid[i], seen[i]);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    int rt1 = SIGRTMIN + 1, rt2 = SIGRTMIN + 2;
    sigset_t all;
    sigemptyset(&all);
    int sigs[] = {rt1, rt2, SIGUSR1, SIGUSR2, SIGALRM};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sig;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(&all, sigs[i]);
        sigaction(sigs[i], &sa, NULL);
    }
    sigprocmask(SIG_BLOCK, &all, NULL);

    /* holes in the ids */
    for (int i = 0; i < 5; i++) {
        timer_t t;
        timer_create(CLOCK_MONOTONIC, NULL, &t);
        if (i % 2 == 0)
            timer_delete(t);
    }
    make(PER, CLOCK_MONOTONIC, SIGEV_SIGNAL, rt1, 0xabc0de);
    make(ONCE, CLOCK_MONOTONIC, SIGEV_SIGNAL, rt2, 77);
    make(FAR, CLOCK_REALTIME, SIGEV_SIGNAL, SIGUSR1, 5);
    make(NONE, CLOCK_BOOTTIME, SIGEV_NONE, 0, 9);
    make(CPU, CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL | SIGEV_THREAD_ID, SIGUSR2, 3);
    make(TCPU, CLOCK_THREAD_CPUTIME_ID, SIGEV_SIGNAL, SIGUSR2, 4);
    make(IDLE, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGALRM, kid[IDLE]);
    val[IDLE] = 0; /* not checked: the kernel's value for a timer made with no sigevent */

    uint64_t t0 = wl_now_ns(CLOCK_MONOTONIC);
    arm(PER, 20 * 1000000LL, 20 * 1000000LL);
    arm(ONCE, 10 * 1000000LL, 0);
    arm(FAR, 3600 * SEC, 0);
    arm(NONE, 3600 * SEC, 2 * SEC);
    arm(CPU, 10 * 1000000LL, 10 * 1000000LL);
    arm(TCPU, 3600 * SEC, 0);
    usleep(100 * 1000); /* per and once expire, their signals queued */
    sigset_t pend;
    sigpending(&pend);
    WL_CHECK(sigismember(&pend, rt1) && sigismember(&pend, rt2), "per/once signals not queued before READY");

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        timer_settime(tid[PER], 0, &off, NULL);
    }
    check_proc();
    uint64_t elapsed = wl_now_ns(CLOCK_MONOTONIC) - t0;
    struct itimerspec g[N];
    for (int i = 0; i < N; i++)
        if (timer_gettime(tid[i], &g[i]) != 0)
            wl_fail("timer_gettime %s: %s", names[i], strerror(errno));
    WL_CHECK(ns(g[PER].it_interval) == 20 * 1000000LL && ns(g[PER].it_value) > 0, "per: interval %lld value %lld", ns(g[PER].it_interval), ns(g[PER].it_value));
    WL_CHECK(ns(g[ONCE].it_interval) == 0 && ns(g[ONCE].it_value) == 0, "once: interval %lld value %lld (expired: want 0/0)", ns(g[ONCE].it_interval), ns(g[ONCE].it_value));
    WL_CHECK(ns(g[FAR].it_interval) == 0 && ns(g[FAR].it_value) <= 3600 * SEC && ns(g[FAR].it_value) >= 3600 * SEC - (long long)elapsed - SEC,
             "far: interval %lld value %lld (elapsed %llu)", ns(g[FAR].it_interval), ns(g[FAR].it_value), (unsigned long long)elapsed);
    WL_CHECK(ns(g[NONE].it_interval) == 2 * SEC && ns(g[NONE].it_value) <= 3600 * SEC && ns(g[NONE].it_value) >= 3600 * SEC - (long long)elapsed - SEC,
             "none: interval %lld value %lld", ns(g[NONE].it_interval), ns(g[NONE].it_value));
    WL_CHECK(ns(g[CPU].it_interval) == 10 * 1000000LL && ns(g[CPU].it_value) > 0, "cpu: interval %lld value %lld", ns(g[CPU].it_interval), ns(g[CPU].it_value));
    WL_CHECK(ns(g[TCPU].it_interval) == 0 && ns(g[TCPU].it_value) > 3500 * SEC, "tcpu: interval %lld value %lld", ns(g[TCPU].it_interval), ns(g[TCPU].it_value));
    WL_CHECK(ns(g[IDLE].it_interval) == 0 && ns(g[IDLE].it_value) == 0, "idle: armed (%lld)", ns(g[IDLE].it_value));

    sigprocmask(SIG_UNBLOCK, &all, NULL);
    for (int i = 0; i < 400 && (fired[PER] < 5 || fired[CPU] < 3); i++)
        wl_busy_ms(5);
    sigprocmask(SIG_BLOCK, &all, NULL);
    WL_CHECK(fired[PER] >= 5, "per fired %d time(s) in 2 s (every 20 ms)", (int)fired[PER]);
    WL_CHECK(fired[ONCE] == 1, "once fired %d time(s), want exactly 1", (int)fired[ONCE]);
    WL_CHECK(fired[CPU] >= 3, "cpu fired %d time(s) in 2 s of CPU (every 10 ms)", (int)fired[CPU]);
    WL_CHECK(fired[FAR] == 0 && fired[TCPU] == 0 && fired[IDLE] == 0, "far/tcpu/idle fired %d/%d/%d", (int)fired[FAR], (int)fired[TCPU], (int)fired[IDLE]);
    WL_CHECK(bad_info == 0, "%d signal(s) with a wrong signal number, value or si_code", (int)bad_info);
    int o = timer_getoverrun(tid[PER]);
    WL_CHECK(o >= 0, "timer_getoverrun(per): %s", strerror(errno));
    wl_finish("ptimers", NULL);
}
