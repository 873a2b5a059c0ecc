/*
 * pidfd: pidfds of the process itself, which the example plugin examples/plugin-pidfd restores.
 *   fd 40  pidfd_open(getpid(), 0), close-on-exec cleared
 *   fd 41  pidfd_open(getpid(), PIDFD_NONBLOCK), close-on-exec
 *   fd 42  dup of fd 40 (one open file description)
 * After the trigger: each refers to this process (fdinfo Pid: and a SIGUSR1 sent through it,
 * blocked, is pending), F_GETFL / F_GETFD, fd 42 shares fd 40's description (kcmp) and fd 41 not,
 * and poll says the process has not exited.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

static int pidfd_at(unsigned flags, int want, int cloexec)
{
    int fd = (int)syscall(SYS_pidfd_open, getpid(), flags);
    if (fd < 0) {
        wl_fail("pidfd_open: %s", strerror(errno));
        return -1;
    }
    if (dup3(fd, want, cloexec ? O_CLOEXEC : 0) != want)
        wl_fail("dup3 to %d: %s", want, strerror(errno));
    close(fd);
    return want;
}

static void expect_self(int fd)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "\nPid:");
    WL_CHECK(p && atoi(p + 5) == getpid(), "fd %d: refers to pid %d, not %d", fd, p ? atoi(p + 5) : 0, (int)getpid());
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
    pidfd_at(0, 40, 0);
    pidfd_at(PIDFD_NONBLOCK, 41, 1);
    if (dup2(40, 42) != 42)
        wl_fail("dup2 to 42: %s", strerror(errno));
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    if (wl_tamper)
        dup2(41, 42);

    expect_self(40);
    expect_self(41);
    expect_flags(40, O_RDWR, 0);
    expect_flags(41, O_RDWR | O_NONBLOCK, FD_CLOEXEC);
    expect_flags(42, O_RDWR, 0);
    pid_t me = getpid();
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_FILE, 40, 42) == 0, "fds 40 and 42 no longer share one open file description");
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_FILE, 40, 41) != 0, "fds 40 and 41 share an open file description");
    struct pollfd p = {.fd = 40, .events = POLLIN};
    WL_CHECK(poll(&p, 1, 0) == 0, "fd 40: poll says the process has exited (revents 0x%x)", p.revents);
    if (syscall(SYS_pidfd_send_signal, 42, SIGUSR1, NULL, 0) != 0)
        wl_fail("pidfd_send_signal through fd 42: %s", strerror(errno));
    sigset_t pend;
    sigpending(&pend);
    WL_CHECK(sigismember(&pend, SIGUSR1), "SIGUSR1 sent through fd 42 is not pending here");
    wl_finish("pidfd", NULL);
}
