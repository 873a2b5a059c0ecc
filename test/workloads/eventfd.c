/*
 * eventfd: counters and flags the eventfd file kind (packages/files/src/eventfd.ts) must bring back.
 *   fd 40  eventfd, counter 5, blocking
 *   fd 41  eventfd, EFD_SEMAPHORE | EFD_NONBLOCK, counter 3
 *   fd 42  dup of fd 40 (one open file description)
 *   fd 43  eventfd, EFD_CLOEXEC, counter 0x123456789 (above what eventfd2 takes as initval)
 *   fd 44  eventfd, EFD_NONBLOCK, counter 0
 * While looping, fd 40 gets +1 every round until it has reached 12 (so the checkpoint takes a
 * counter the process itself moved; a trigger that comes sooner waits for the last +1).
 * After the trigger: F_GETFL / F_GETFD of each fd, fd 42
 * still shares fd 40's description (kcmp), fd 40 reads 12 then nothing (poll), fd 41 reads 1
 * three times then EAGAIN (semaphore, non-blocking), fd 43 reads 0x123456789, fd 44 is empty and
 * non-blocking (EAGAIN), and a write to fd 42 shows up on fd 40.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <sys/eventfd.h>

static int at(int fd, int want)
{
    if (fd < 0) {
        wl_fail("eventfd for fd %d: %s", want, strerror(errno));
        return -1;
    }
    if (fd != want) {
        if (dup2(fd, want) != want)
            wl_fail("dup2 to %d: %s", want, strerror(errno));
        close(fd);
    }
    return want;
}

static void expect_read(int fd, uint64_t want, const char *what)
{
    uint64_t v = 0;
    ssize_t n = read(fd, &v, sizeof v);
    if (n != (ssize_t)sizeof v)
        wl_fail("%s: read gave %zd (%s)", what, n, n < 0 ? strerror(errno) : "short");
    else
        WL_CHECK(v == want, "%s: read 0x%llx, expected 0x%llx", what, (unsigned long long)v, (unsigned long long)want);
}

static void expect_empty(int fd, const char *what)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    WL_CHECK(r == 0, "%s: poll says %d (revents 0x%x), expected nothing to read", what, r, p.revents);
}

static void expect_flags(int fd, int fl, int fdfl)
{
    int got = fcntl(fd, F_GETFL);
    WL_CHECK(got >= 0 && (got & (O_ACCMODE | O_NONBLOCK)) == fl, "fd %d: F_GETFL 0%o, expected 0%o", fd, got, fl);
    int gotfd = fcntl(fd, F_GETFD);
    WL_CHECK(gotfd == fdfl, "fd %d: F_GETFD %d, expected %d", fd, gotfd, fdfl);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0, "<trigger>");
    int plain = at(eventfd(5, 0), 40);
    int sem = at(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK), 41);
    if (dup2(plain, 42) != 42)
        wl_fail("dup2 to 42: %s", strerror(errno));
    int big = eventfd(0, EFD_CLOEXEC);
    uint64_t add = 0x123456789ull;
    if (big >= 0 && write(big, &add, sizeof add) != (ssize_t)sizeof add)
        wl_fail("write to the big eventfd: %s", strerror(errno));
    if (big >= 0 && big != 43) {
        if (dup3(big, 43, O_CLOEXEC) != 43)
            wl_fail("dup3 to 43: %s", strerror(errno));
        close(big);
    }
    int empty = at(eventfd(0, EFD_NONBLOCK), 44);
    (void)sem;
    (void)empty;
    wl_ready();

    uint64_t added = 5, one = 1;
    /* Until the trigger, and on until it has added its last +1 (however soon the trigger comes). */
    while (!wl_triggered() || added < 12) {
        if (added < 12) {
            if (write(plain, &one, sizeof one) == (ssize_t)sizeof one)
                added++;
            else if (wl_triggered())
                break; /* the check below says what went wrong */
        }
        wl_busy_ms(20);
    }
    if (wl_tamper)
        write(42, &one, sizeof one);

    WL_CHECK(added == 12, "the loop added up to %llu, expected 12", (unsigned long long)added);
    expect_flags(40, O_RDWR, 0);
    expect_flags(41, O_RDWR | O_NONBLOCK, 0);
    expect_flags(42, O_RDWR, 0);
    expect_flags(43, O_RDWR, FD_CLOEXEC);
    expect_flags(44, O_RDWR | O_NONBLOCK, 0);
    pid_t me = getpid();
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_FILE, 40, 42) == 0, "fds 40 and 42 no longer share one open file description");
    WL_CHECK(syscall(SYS_kcmp, me, me, KCMP_FILE, 40, 44) != 0, "fds 40 and 44 share an open file description");

    expect_read(40, 12, "fd 40");
    expect_empty(40, "fd 40 after its read");
    for (int i = 0; i < 3; i++)
        expect_read(41, 1, "fd 41 (semaphore)");
    uint64_t v;
    errno = 0;
    WL_CHECK(read(41, &v, sizeof v) < 0 && errno == EAGAIN, "fd 41: a fourth read did not fail with EAGAIN (%s)", strerror(errno));
    expect_read(43, 0x123456789ull, "fd 43");
    errno = 0;
    WL_CHECK(read(44, &v, sizeof v) < 0 && errno == EAGAIN, "fd 44: read of an empty non-blocking eventfd did not fail with EAGAIN (%s)", strerror(errno));
    uint64_t seven = 7;
    if (write(42, &seven, sizeof seven) != (ssize_t)sizeof seven)
        wl_fail("write to fd 42: %s", strerror(errno));
    expect_read(40, 7, "fd 40 after a write to fd 42");
    wl_finish("eventfd", NULL);
}
