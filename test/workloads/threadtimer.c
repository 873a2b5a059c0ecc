/*
 * threadtimer <trigger>: POSIX timers aimed at a thread other than the main one. A second thread
 * waits in sigwaitinfo for SIGRTMIN+1, which every thread blocks; a periodic CLOCK_MONOTONIC timer
 * (10 ms) sends it to that thread alone (SIGEV_THREAD_ID), and a second timer runs on that
 * thread's CPU-time clock (SIGEV_NONE, armed far ahead). Checks after the trigger: the thread
 * still receives the timer's signals (and only from that timer), the timers keep their ids, the
 * CPU-clock timer is still armed on the thread's clock. CPT_TAMPER=1 deletes the periodic timer
 * first: it FAILs.
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

static volatile long received;
static volatile int wrong;
static timer_t periodic, cputimer;
static volatile pid_t waiter_tid;

static void *waiter(void *arg)
{
    (void)arg;
    waiter_tid = (pid_t)syscall(SYS_gettid);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    for (;;) {
        siginfo_t si;
        if (sigwaitinfo(&set, &si) < 0)
            continue;
        if (si.si_code == SI_TIMER && si.si_timerid == (int)(long)periodic)
            received++;
        else
            wrong++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        wl_fail("pthread_sigmask");
    pthread_t th;
    if (pthread_create(&th, NULL, waiter, NULL) != 0)
        wl_fail("pthread_create");
    while (waiter_tid == 0)
        wl_busy_ms(1);

    struct sigevent sev = {0};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGRTMIN + 1;
    sev._sigev_un._tid = waiter_tid;
    if (timer_create(CLOCK_MONOTONIC, &sev, &periodic) != 0)
        wl_fail("timer_create(periodic): %s", strerror(errno));
    struct itimerspec every = {{0, 10 * 1000 * 1000}, {0, 10 * 1000 * 1000}};
    if (timer_settime(periodic, 0, &every, NULL) != 0)
        wl_fail("timer_settime(periodic): %s", strerror(errno));

    clockid_t thread_clock;
    if (pthread_getcpuclockid(th, &thread_clock) != 0)
        wl_fail("pthread_getcpuclockid");
    struct sigevent none = {0};
    none.sigev_notify = SIGEV_NONE;
    if (timer_create(thread_clock, &none, &cputimer) != 0)
        wl_fail("timer_create(thread CPU clock): %s", strerror(errno));
    struct itimerspec far = {{0, 0}, {3600, 0}};
    if (timer_settime(cputimer, 0, &far, NULL) != 0)
        wl_fail("timer_settime(cpu): %s", strerror(errno));

    while (received < 3)
        wl_busy_ms(5);
    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        timer_delete(periodic);
    long before = received;
    for (int i = 0; i < 100 && received < before + 5; i++)
        wl_busy_ms(10);
    WL_CHECK(received >= before + 5, "the thread got %ld timer signals after the trigger, want at least 5", received - before);
    WL_CHECK(wrong == 0, "the thread got %d other signals", (int)wrong);
    struct itimerspec left;
    WL_CHECK(timer_gettime(cputimer, &left) == 0, "timer_gettime of the thread CPU-clock timer: %s", strerror(errno));
    WL_CHECK(left.it_value.tv_sec > 3000, "the thread CPU-clock timer has %ld s left", (long)left.it_value.tv_sec);
    wl_finish("threadtimer", NULL);
}
