/*
 * epoll: targets, their masks and data, numbers closed or reused since, nesting, readiness.
 * Targets are eventfds (a = fd 40, counter 1; b = 41, 0; c = 42, 1; h = 47, 0; late = 55, 0).
 *   fd 50  epoll E (EPOLL_CLOEXEC):
 *          a   EPOLLIN, data 0x1111
 *          b   EPOLLIN|EPOLLOUT|EPOLLET, data 0x2222 (reported once before READY)
 *          c   EPOLLIN|EPOLLONESHOT, data 0x3333 (fired before READY: disabled)
 *          d   eventfd, counter 5, registered as fd 43, then dup'ed to 44 and 43 closed
 *          f   eventfd, counter 0, registered as fd 45, then dup'ed to 46 and another eventfd g
 *              (counter 0, not registered) put at 45
 *          h   EPOLLIN|EPOLLEXCLUSIVE, data 0x7777
 *          late (fd 55, above E) EPOLLIN, data 0x5555
 *   fd 38  epoll N (O_NONBLOCK) watching E: EPOLLIN, data 0x3838 (a lower number than what it watches)
 * After the trigger: E's fdinfo lists exactly those targets (number, events, data); kcmp
 * KCMP_EPOLL_TFD finds d behind number 43 and f (not g) behind 45; ready at once: a and d (and b,
 * edge-triggered, may be reported once more), not c; N reports E; a write to f (through 46), h
 * and late is reported with their data; EPOLL_CTL_MOD of 44 is ENOENT (d is keyed as 43).
 */
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static int efd_at(unsigned init, int want)
{
    int fd = eventfd(init, EFD_NONBLOCK);
    if (fd < 0 || (fd != want && dup2(fd, want) != want))
        wl_fail("eventfd at %d: %s", want, strerror(errno));
    if (fd != want)
        close(fd);
    return want;
}

static void add(int ep, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        wl_fail("epoll_ctl ADD %d: %s", fd, strerror(errno));
}

struct target {
    int tfd;
    unsigned events;
    unsigned long long data;
};

static const struct target WANT[] = {
    {40, EPOLLIN | EPOLLERR | EPOLLHUP, 0x1111},
    {41, EPOLLIN | EPOLLOUT | EPOLLET | EPOLLERR | EPOLLHUP, 0x2222},
    {42, EPOLLONESHOT, 0x3333},
    {43, EPOLLIN | EPOLLERR | EPOLLHUP, 0x4343},
    {45, EPOLLIN | EPOLLERR | EPOLLHUP, 0x4545},
    {47, EPOLLIN | EPOLLEXCLUSIVE | EPOLLERR | EPOLLHUP, 0x7777},
    {55, EPOLLIN | EPOLLERR | EPOLLHUP, 0x5555},
};
#define NWANT (sizeof WANT / sizeof WANT[0])

static void check_fdinfo(void)
{
    char buf[4096];
    int f = open("/proc/self/fdinfo/50", O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    int seen[NWANT] = {0}, lines = 0;
    for (char *p = strstr(buf, "tfd:"); p; p = strstr(p + 1, "tfd:")) {
        int tfd;
        unsigned ev;
        unsigned long long data;
        if (sscanf(p, "tfd: %d events: %x data: %llx", &tfd, &ev, &data) != 3) {
            wl_fail("fd 50: cannot read its fdinfo line");
            return;
        }
        lines++;
        size_t i;
        for (i = 0; i < NWANT; i++)
            if (WANT[i].tfd == tfd && WANT[i].events == ev && WANT[i].data == data)
                seen[i]++;
        if (i == NWANT && lines > 0) {
            int known = 0;
            for (size_t j = 0; j < NWANT; j++)
                known |= WANT[j].tfd == tfd && WANT[j].events == ev && WANT[j].data == data;
            if (!known)
                wl_fail("fd 50: unexpected target tfd %d events %x data %llx", tfd, ev, data);
        }
    }
    WL_CHECK(lines == (int)NWANT, "fd 50: %d targets, expected %zu", lines, NWANT);
    for (size_t i = 0; i < NWANT; i++)
        WL_CHECK(seen[i] == 1, "fd 50: target tfd %d events %x data %llx missing", WANT[i].tfd, WANT[i].events, WANT[i].data);
}

/* The data values epoll_wait reports now (up to 16), as a bit set over WANT plus 0x3838. */
static unsigned ready(int ep, int timeout)
{
    struct epoll_event out[16];
    int n = epoll_wait(ep, out, 16, timeout);
    unsigned set = 0;
    for (int i = 0; i < n; i++) {
        int known = 0;
        for (size_t j = 0; j < NWANT; j++)
            if (out[i].data.u64 == WANT[j].data) {
                set |= 1u << j;
                known = 1;
            }
        if (out[i].data.u64 == 0x3838) {
            set |= 1u << 31;
            known = 1;
        }
        if (!known)
            wl_fail("epoll %d reported unknown data %llx", ep, (unsigned long long)out[i].data.u64);
    }
    return set;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0, "<trigger>");
    efd_at(1, 40);
    efd_at(0, 41);
    efd_at(1, 42);
    efd_at(0, 47);
    efd_at(0, 55);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || (ep != 50 && dup3(ep, 50, O_CLOEXEC) != 50))
        wl_fail("epoll at 50: %s", strerror(errno));
    if (ep != 50)
        close(ep);
    add(50, 40, EPOLLIN, 0x1111);
    add(50, 41, EPOLLIN | EPOLLOUT | EPOLLET, 0x2222);
    add(50, 42, EPOLLIN | EPOLLONESHOT, 0x3333);
    efd_at(5, 43);
    add(50, 43, EPOLLIN, 0x4343);
    dup2(43, 44);
    close(43);
    efd_at(0, 45);
    add(50, 45, EPOLLIN, 0x4545);
    dup2(45, 46);
    efd_at(0, 45); /* g: another file at the number f was registered with */
    add(50, 47, EPOLLIN | EPOLLEXCLUSIVE, 0x7777);
    add(50, 55, EPOLLIN, 0x5555);
    int n = epoll_create1(0);
    if (n < 0 || (n != 38 && dup2(n, 38) != 38))
        wl_fail("epoll at 38: %s", strerror(errno));
    if (n != 38)
        close(n);
    fcntl(38, F_SETFL, O_NONBLOCK);
    add(38, 50, EPOLLIN, 0x3838);
    unsigned first = ready(50, 0); /* a, b (its edge), c (fires once), d */
    WL_CHECK(first == (1u << 0 | 1u << 1 | 1u << 2 | 1u << 3), "before READY: ready set %x", first);
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    if (wl_tamper)
        epoll_ctl(50, EPOLL_CTL_DEL, 40, NULL);

    WL_CHECK(fcntl(50, F_GETFD) == FD_CLOEXEC, "fd 50: not close-on-exec");
    WL_CHECK((fcntl(38, F_GETFL) & O_NONBLOCK) != 0, "fd 38: not non-blocking");
    check_fdinfo();
    pid_t me = getpid();
    struct kcmp_epoll_slot d = {50, 43, 0}, f = {50, 45, 0};
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_EPOLL_TFD, 44, &d) == 0, "the target registered as 43 is not the file at fd 44");
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_EPOLL_TFD, 46, &f) == 0, "the target registered as 45 is not the file at fd 46");
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_EPOLL_TFD, 45, &f) != 0, "the target registered as 45 is the file now at fd 45");

    WL_CHECK(ready(38, 0) == 1u << 31, "fd 38 does not report fd 50 ready");
    unsigned now = ready(50, 0) & ~(1u << 1);
    WL_CHECK(now == (1u << 0 | 1u << 3), "ready after the trigger: %x, expected a and d (%x)", now, 1u << 0 | 1u << 3);
    uint64_t one = 1;
    (void)!write(46, &one, sizeof one);
    (void)!write(47, &one, sizeof one);
    (void)!write(55, &one, sizeof one);
    now = ready(50, 0) & ~(1u << 1);
    WL_CHECK(now == (1u << 0 | 1u << 3 | 1u << 4 | 1u << 5 | 1u << 6), "ready after writes: %x", now);
    struct epoll_event ev = {.events = EPOLLIN};
    errno = 0;
    WL_CHECK(epoll_ctl(50, EPOLL_CTL_MOD, 44, &ev) < 0 && errno == ENOENT, "EPOLL_CTL_MOD of fd 44 did not fail with ENOENT (%s)", strerror(errno));
    wl_finish("epoll", NULL);
}
