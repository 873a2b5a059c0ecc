/*
 * itimers <trigger> [--posix-timer]: the three interval timers keep firing after a restart.
 * ITIMER_REAL (interval 50 ms) is left expired with its SIGALRM pending and blocked: the kernel
 * re-arms it only when that signal is taken, so getitimer shows a zero value and the interval
 * (the state every checkpoint of a task with a fast ITIMER_REAL is likely to see, since the
 * frozen task takes no signal). ITIMER_VIRTUAL and ITIMER_PROF (20 ms) run on CPU time while it
 * loops. After the trigger: SIGALRM is unblocked and, within 3 s of busy looping, each timer must
 * fire at least 3 times and still report its interval.
 * --posix-timer also creates a POSIX timer on its parent's CPU clock (another process's, which a
 * restored process could not count), which a checkpoint must refuse.
 */
#include "common.h"

#include <signal.h>
#include <sys/time.h>

static volatile sig_atomic_t n_alrm, n_vtalrm, n_prof;
static void on_sig(int sig)
{
    if (sig == SIGALRM)
        n_alrm++;
    else if (sig == SIGVTALRM)
        n_vtalrm++;
    else if (sig == SIGPROF)
        n_prof++;
}

static long usec(struct timeval tv)
{
    return (long)tv.tv_sec * 1000000 + (long)tv.tv_usec;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--posix-timer]");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGVTALRM, &sa, NULL);
    sigaction(SIGPROF, &sa, NULL);

    if (argc > 2 && strcmp(argv[2], "--posix-timer") == 0) {
        timer_t t;
        struct sigevent sev;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_NONE;
        clockid_t parent;
        if (clock_getcpuclockid(getppid(), &parent) != 0 || timer_create(parent, &sev, &t) != 0)
            wl_fail("timer_create: %s", strerror(errno));
    }

    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_BLOCK, &alrm, NULL);
    struct itimerval real = {.it_interval = {0, 50000}, .it_value = {0, 1000}};
    if (setitimer(ITIMER_REAL, &real, NULL) != 0)
        wl_fail("setitimer REAL: %s", strerror(errno));
    sigset_t pend;
    for (int i = 0; i < 200; i++) {
        sigpending(&pend);
        if (sigismember(&pend, SIGALRM))
            break;
        usleep(1000);
    }
    struct itimerval got;
    getitimer(ITIMER_REAL, &got);
    WL_CHECK(sigismember(&pend, SIGALRM) && usec(got.it_value) == 0 && usec(got.it_interval) == 50000,
             "ITIMER_REAL not expired-and-pending before READY (value %ld, interval %ld)", usec(got.it_value),
             usec(got.it_interval));

    struct itimerval cpu = {.it_interval = {0, 20000}, .it_value = {0, 20000}};
    if (setitimer(ITIMER_VIRTUAL, &cpu, NULL) != 0 || setitimer(ITIMER_PROF, &cpu, NULL) != 0)
        wl_fail("setitimer VIRTUAL/PROF: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_PROF, &off, NULL);
    }
    n_alrm = n_vtalrm = n_prof = 0;
    sigprocmask(SIG_UNBLOCK, &alrm, NULL);
    for (int i = 0; i < 600 && (n_alrm < 3 || n_vtalrm < 3 || n_prof < 3); i++)
        wl_busy_ms(5);

    WL_CHECK(n_alrm >= 3, "ITIMER_REAL fired %d time(s) in 3 s (interval 50 ms)", (int)n_alrm);
    WL_CHECK(n_vtalrm >= 3, "ITIMER_VIRTUAL fired %d time(s) in 3 s (interval 20 ms of CPU)", (int)n_vtalrm);
    WL_CHECK(n_prof >= 3, "ITIMER_PROF fired %d time(s) in 3 s (interval 20 ms of CPU)", (int)n_prof);
    struct itimerval r, v, p;
    getitimer(ITIMER_REAL, &r);
    getitimer(ITIMER_VIRTUAL, &v);
    getitimer(ITIMER_PROF, &p);
    WL_CHECK(usec(r.it_interval) == 50000 && usec(v.it_interval) == 20000 && usec(p.it_interval) == 20000,
             "intervals %ld/%ld/%ld, want 50000/20000/20000", usec(r.it_interval), usec(v.it_interval), usec(p.it_interval));
    wl_finish("itimers", NULL);
}
