/*
 * timerfd: clocks, intervals, time left, expirations counted and not read.
 *   fd 40  CLOCK_MONOTONIC, every 50 ms from 30 ms: never read while looping, so it sits expired
 *          and unread (the kernel re-arms it only when asked): after restart it must still tick
 *   fd 41  CLOCK_MONOTONIC one-shot 5 ms, expired before READY: one expiration to read, then none
 *   fd 42  CLOCK_MONOTONIC, TFD_NONBLOCK, first in 100 s then every 100 s: time left kept
 *   fd 43  CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, deadline now + 1000 s,
 *          every 7 s, close-on-exec: the same deadline on the clock
 *   fd 44  CLOCK_BOOTTIME, disarmed
 * After the trigger: flags, fdinfo clockid / settime flags, fd 41 reads 1 then EAGAIN, fd 42's time
 * left is at most 100 s and no less than 100 s minus the time it has run, fd 43's deadline is the
 * same (within 50 ms), fd 44 disarmed, and fd 40 reads at least one expiration, then another one
 * within 300 ms (still armed, still periodic).
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/timerfd.h>

static void place(int fd, int want)
{
    if (fd < 0) {
        wl_fail("timerfd_create for fd %d: %s", want, strerror(errno));
        return;
    }
    if (fd != want) {
        if (dup3(fd, want, (fcntl(fd, F_GETFD) & FD_CLOEXEC) ? O_CLOEXEC : 0) != want)
            wl_fail("dup3 to %d: %s", want, strerror(errno));
        close(fd);
    }
}

static void arm(int fd, int flags, int64_t first_ns, int64_t every_ns)
{
    struct itimerspec its = {
        .it_value = {first_ns / 1000000000, first_ns % 1000000000},
        .it_interval = {every_ns / 1000000000, every_ns % 1000000000},
    };
    if (timerfd_settime(fd, flags, &its, NULL) != 0)
        wl_fail("timerfd_settime of fd %d: %s", fd, strerror(errno));
}

static int64_t ns_of(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static const char *fdinfo_field(int fd, const char *key, char *out, size_t len)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    out[0] = 0;
    if (n <= 0)
        return out;
    buf[n] = 0;
    char *p = strstr(buf, key);
    if (p) {
        p += strlen(key);
        size_t i = 0;
        while (*p && *p != '\n' && i + 1 < len)
            out[i++] = *p++;
        out[i] = 0;
    }
    return out;
}

static void expect_flags(int fd, int fl, int fdfl)
{
    int got = fcntl(fd, F_GETFL);
    WL_CHECK(got >= 0 && (got & (O_ACCMODE | O_NONBLOCK)) == fl, "fd %d: F_GETFL 0%o, expected 0%o", fd, got, fl);
    WL_CHECK(fcntl(fd, F_GETFD) == fdfl, "fd %d: F_GETFD %d, expected %d", fd, fcntl(fd, F_GETFD), fdfl);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0, "<trigger>");
    const int64_t MS = 1000000, S = 1000000000;
    place(timerfd_create(CLOCK_MONOTONIC, 0), 40);
    place(timerfd_create(CLOCK_MONOTONIC, 0), 41);
    place(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), 42);
    place(timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC), 43);
    place(timerfd_create(CLOCK_BOOTTIME, 0), 44);
    arm(40, 0, 30 * MS, 50 * MS);
    arm(41, 0, 5 * MS, 0);
    int64_t set42 = (int64_t)wl_now_ns(CLOCK_MONOTONIC);
    arm(42, 0, 100 * S, 100 * S);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t deadline43 = ns_of(rt) + 1000 * S;
    arm(43, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, deadline43, 7 * S);
    wl_busy_ms(100);
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    uint64_t v = 0;
    if (wl_tamper)
        (void)!read(41, &v, sizeof v);

    expect_flags(40, O_RDWR, 0);
    expect_flags(41, O_RDWR, 0);
    expect_flags(42, O_RDWR | O_NONBLOCK, 0);
    expect_flags(43, O_RDWR, FD_CLOEXEC);
    expect_flags(44, O_RDWR, 0);
    char f[64];
    WL_CHECK(strcmp(fdinfo_field(43, "clockid: ", f, sizeof f), "0") == 0, "fd 43: clockid %s, expected 0", f);
    WL_CHECK(strcmp(fdinfo_field(43, "settime flags: ", f, sizeof f), "03") == 0, "fd 43: settime flags %s, expected 03", f);
    WL_CHECK(strcmp(fdinfo_field(44, "clockid: ", f, sizeof f), "7") == 0, "fd 44: clockid %s, expected 7", f);
    WL_CHECK(strcmp(fdinfo_field(42, "clockid: ", f, sizeof f), "1") == 0, "fd 42: clockid %s, expected 1", f);

    /* fd 41: the one expiration counted before READY, then nothing (poll: blocking fd). */
    struct pollfd p = {.fd = 41, .events = POLLIN};
    if (poll(&p, 1, 0) != 1)
        wl_fail("fd 41: its expiration is no longer there to read");
    else if (read(41, &v, sizeof v) != sizeof v || v != 1)
        wl_fail("fd 41: read %llu expirations, expected 1", (unsigned long long)v);
    WL_CHECK(poll(&p, 1, 0) == 0, "fd 41: still readable after its one expiration was read");

    struct itimerspec g;
    int64_t ran = (int64_t)wl_now_ns(CLOCK_MONOTONIC) - set42;
    if (timerfd_gettime(42, &g) != 0)
        wl_fail("timerfd_gettime 42: %s", strerror(errno));
    else {
        int64_t left = ns_of(g.it_value);
        WL_CHECK(left <= 100 * S && left >= 100 * S - ran - 50 * MS, "fd 42: %lld ns left, expected between %lld and %lld", (long long)left,
                 (long long)(100 * S - ran), (long long)(100 * S));
        WL_CHECK(ns_of(g.it_interval) == 100 * S, "fd 42: interval %lld ns", (long long)ns_of(g.it_interval));
    }
    errno = 0;
    WL_CHECK(read(42, &v, sizeof v) < 0 && errno == EAGAIN, "fd 42: read did not fail with EAGAIN (%s)", strerror(errno));

    if (timerfd_gettime(43, &g) != 0)
        wl_fail("timerfd_gettime 43: %s", strerror(errno));
    else {
        clock_gettime(CLOCK_REALTIME, &rt);
        int64_t off = ns_of(rt) + ns_of(g.it_value) - deadline43;
        WL_CHECK(off > -50 * MS && off < 50 * MS, "fd 43: its deadline moved by %lld ns", (long long)off);
        WL_CHECK(ns_of(g.it_interval) == 7 * S, "fd 43: interval %lld ns", (long long)ns_of(g.it_interval));
    }
    if (timerfd_gettime(44, &g) != 0 || ns_of(g.it_value) != 0 || ns_of(g.it_interval) != 0)
        wl_fail("fd 44: armed, expected disarmed");

    /* fd 40: expirations waiting, and still periodic. */
    p.fd = 40;
    if (poll(&p, 1, 300) != 1 || read(40, &v, sizeof v) != sizeof v || v < 1)
        wl_fail("fd 40: no expiration to read");
    if (poll(&p, 1, 300) != 1 || read(40, &v, sizeof v) != sizeof v || v < 1)
        wl_fail("fd 40: it did not expire again within 300 ms: disarmed");
    wl_finish("timerfd", NULL);
}
