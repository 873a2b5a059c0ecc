/*
 * syscalls <trigger> <which>: a process that spends its time blocked in one system call,
 * which ∈ nanosleep | select | poll | pause | futex (raw syscalls, not the libc variants):
 *   nanosleep  2 s                       → 0, or -1/EINTR with 0 <= rem <= request
 *   select     nfds 0, timeout 2 s       → 0 with the timeout zeroed, or -1/EINTR with 0 <= rest <= 2 s
 *   poll       no fds, timeout 2000 ms   → 0, or -1/EINTR
 *   futex      FUTEX_WAIT on a word that never changes, relative timeout 2 s
 *                                        → -1/ETIMEDOUT, or -1/EINTR, -1/EAGAIN, 0 (a wakeup)
 *   pause      a SIGUSR1 handler         → -1/EINTR, and only after the handler ran
 * A timeout result must come no earlier than the requested time (CLOCK_MONOTONIC).
 * Never legitimate: any other result, a kernel-internal errno (512..516: ERESTARTSYS,
 * ERESTARTNOINTR, ERESTARTNOHAND, ENOIOCTLCMD, ERESTART_RESTARTBLOCK) or any errno not
 * listed. The trigger is checked after every return. PASS if every return was legitimate.
 */
#include "common.h"

#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/syscall.h>

#define TIMEOUT_NS 2000000000ull

static volatile sig_atomic_t usr1_count;
static uint32_t futex_word;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_count++;
}

static int64_t ts_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

/* One call; returns 0 if its outcome is legitimate, else describes it. */
static int one_call(const char *which, long *calls)
{
    (*calls)++;
    uint64_t start = wl_now_ns(CLOCK_MONOTONIC);
    long r;
    int err;
    if (strcmp(which, "nanosleep") == 0) {
        struct timespec req = {2, 0}, rem = {-1, -1};
        r = syscall(SYS_nanosleep, &req, &rem);
        err = errno;
        uint64_t took = wl_now_ns(CLOCK_MONOTONIC) - start;
        if (r == 0 && took + 1000000 >= TIMEOUT_NS) /* 1 ms: CLOCK_MONOTONIC sampling slack */
            return 0;
        if (r == -1 && err == EINTR && rem.tv_nsec >= 0 && rem.tv_nsec < 1000000000 && ts_ns(rem) >= 0 &&
            ts_ns(rem) <= ts_ns(req))
            return 0;
        wl_fail("nanosleep returned %ld errno %d after %llu ms (rem %ld.%09ld)", r, r == -1 ? err : 0,
                (unsigned long long)(took / 1000000), (long)rem.tv_sec, rem.tv_nsec);
        return -1;
    }
    if (strcmp(which, "select") == 0) {
        struct timeval tv = {2, 0};
        r = syscall(SYS_select, 0, NULL, NULL, NULL, &tv);
        err = errno;
        uint64_t took = wl_now_ns(CLOCK_MONOTONIC) - start;
        int tv_ok = tv.tv_sec >= 0 && tv.tv_usec >= 0 && tv.tv_usec < 1000000 &&
                    (tv.tv_sec < 2 || (tv.tv_sec == 2 && tv.tv_usec == 0));
        if (r == 0 && tv.tv_sec == 0 && tv.tv_usec == 0 && took + 1000000 >= TIMEOUT_NS)
            return 0;
        if (r == -1 && err == EINTR && tv_ok)
            return 0;
        wl_fail("select returned %ld errno %d after %llu ms (timeout left %ld.%06ld)", r, r == -1 ? err : 0,
                (unsigned long long)(took / 1000000), (long)tv.tv_sec, (long)tv.tv_usec);
        return -1;
    }
    if (strcmp(which, "poll") == 0) {
        r = syscall(SYS_poll, NULL, 0, 2000);
        err = errno;
        uint64_t took = wl_now_ns(CLOCK_MONOTONIC) - start;
        if (r == 0 && took + 1000000 >= TIMEOUT_NS)
            return 0;
        if (r == -1 && err == EINTR)
            return 0;
        wl_fail("poll returned %ld errno %d after %llu ms", r, r == -1 ? err : 0,
                (unsigned long long)(took / 1000000));
        return -1;
    }
    if (strcmp(which, "futex") == 0) {
        struct timespec rel = {2, 0};
        r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &rel, NULL, 0);
        err = errno;
        uint64_t took = wl_now_ns(CLOCK_MONOTONIC) - start;
        if (r == -1 && err == ETIMEDOUT && took + 1000000 >= TIMEOUT_NS)
            return 0;
        if (r == 0 || (r == -1 && (err == EINTR || err == EAGAIN)))
            return 0;
        wl_fail("futex returned %ld errno %d after %llu ms", r, r == -1 ? err : 0,
                (unsigned long long)(took / 1000000));
        return -1;
    }
    if (strcmp(which, "pause") == 0) {
        int before = usr1_count;
        r = syscall(SYS_pause);
        err = errno;
        if (r == -1 && err == EINTR && usr1_count > before)
            return 0;
        wl_fail("pause returned %ld errno %d, handler ran %d times", r, r == -1 ? err : 0,
                (int)(usr1_count - before));
        return -1;
    }
    wl_fail("unknown call '%s'", which);
    return -1;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> nanosleep|select|poll|pause|futex");
    const char *which = argv[2];
    static char name[64];
    snprintf(name, sizeof name, "syscalls-%s", which);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);

    long calls = 0, bad = 0;
    wl_ready();
    if (strcmp(which, "nanosleep") && strcmp(which, "select") && strcmp(which, "poll") && strcmp(which, "pause") &&
        strcmp(which, "futex")) {
        wl_fail("unknown call '%s'", which);
        wl_finish(name, NULL);
    }
    do {
        if (one_call(which, &calls) != 0 && ++bad >= 3)
            break;
    } while (!wl_triggered());

    WL_CHECK(calls > 0, "no call made");
    WL_CHECK(futex_word == 0, "futex word changed");

    wl_finish(name, NULL);
}
