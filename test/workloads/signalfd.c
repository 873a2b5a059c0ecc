/*
 * signalfd: masks, flags, and the signals it would read still pending.
 *   fd 40  signalfd for SIGUSR1 and SIGRTMIN+3, SFD_NONBLOCK
 *   fd 41  signalfd for SIGUSR2, SFD_CLOEXEC
 * SIGUSR1, SIGUSR2 and SIGRTMIN+3 are blocked; before READY it queues SIGUSR1 and SIGRTMIN+3
 * twice (values 77 and 78). After the trigger: flags, the masks in fdinfo, fd 40 reads SIGUSR1,
 * then SIGRTMIN+3 with 77, then 78, then EAGAIN; fd 41 has nothing, then reads a SIGUSR2 raised now.
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>

static void place(int fd, int want, int cloexec)
{
    if (fd < 0) {
        wl_fail("signalfd for fd %d: %s", want, strerror(errno));
        return;
    }
    if (fd != want) {
        if (dup3(fd, want, cloexec ? O_CLOEXEC : 0) != want)
            wl_fail("dup3 to %d: %s", want, strerror(errno));
        close(fd);
    }
}

static void expect_mask(int fd, unsigned long long want)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "sigmask:");
    unsigned long long got = p ? strtoull(p + 8, NULL, 16) : 0;
    WL_CHECK(p && got == want, "fd %d: sigmask %llx, expected %llx", fd, got, want);
}

static void expect_read(int fd, int sig, int value, const char *what)
{
    struct signalfd_siginfo si;
    ssize_t n = read(fd, &si, sizeof si);
    if (n != (ssize_t)sizeof si) {
        wl_fail("%s: read gave %zd (%s)", what, n, n < 0 ? strerror(errno) : "short");
        return;
    }
    WL_CHECK((int)si.ssi_signo == sig, "%s: signal %u, expected %d", what, si.ssi_signo, sig);
    if (value >= 0)
        WL_CHECK(si.ssi_int == value && si.ssi_code == SI_QUEUE, "%s: value %d code %d, expected %d from sigqueue", what, si.ssi_int, si.ssi_code, value);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0, "<trigger>");
    int rt = SIGRTMIN + 3;
    sigset_t block, m40, m41;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, rt);
    sigprocmask(SIG_BLOCK, &block, NULL);
    sigemptyset(&m40);
    sigaddset(&m40, SIGUSR1);
    sigaddset(&m40, rt);
    sigemptyset(&m41);
    sigaddset(&m41, SIGUSR2);
    place(signalfd(-1, &m40, SFD_NONBLOCK), 40, 0);
    place(signalfd(-1, &m41, SFD_CLOEXEC), 41, 1);
    kill(getpid(), SIGUSR1);
    union sigval sv = {.sival_int = 77};
    sigqueue(getpid(), rt, sv);
    sv.sival_int = 78;
    sigqueue(getpid(), rt, sv);
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    struct signalfd_siginfo si;
    if (wl_tamper)
        (void)!read(40, &si, sizeof si);

    int fl = fcntl(40, F_GETFL);
    WL_CHECK((fl & (O_ACCMODE | O_NONBLOCK)) == (O_RDWR | O_NONBLOCK), "fd 40: F_GETFL 0%o", fl);
    WL_CHECK(fcntl(40, F_GETFD) == 0, "fd 40: close-on-exec");
    fl = fcntl(41, F_GETFL);
    WL_CHECK((fl & (O_ACCMODE | O_NONBLOCK)) == O_RDWR, "fd 41: F_GETFL 0%o", fl);
    WL_CHECK(fcntl(41, F_GETFD) == FD_CLOEXEC, "fd 41: not close-on-exec");
    expect_mask(40, (1ull << (SIGUSR1 - 1)) | (1ull << (rt - 1)));
    expect_mask(41, 1ull << (SIGUSR2 - 1));

    expect_read(40, SIGUSR1, -1, "fd 40, first read");
    expect_read(40, rt, 77, "fd 40, second read");
    expect_read(40, rt, 78, "fd 40, third read");
    errno = 0;
    WL_CHECK(read(40, &si, sizeof si) < 0 && errno == EAGAIN, "fd 40: a fourth read did not fail with EAGAIN (%s)", strerror(errno));
    struct pollfd p = {.fd = 41, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 0) == 0, "fd 41: readable before SIGUSR2 was raised");
    raise(SIGUSR2);
    WL_CHECK(poll(&p, 1, 1000) == 1, "fd 41: not readable after SIGUSR2");
    expect_read(41, SIGUSR2, -1, "fd 41");
    wl_finish("signalfd", NULL);
}
