/*
 * A pty slave whose master was closed: the session leader opens the slave of a new pty twice (two
 * descriptions, one of them dup'ed, the other O_NONBLOCK), makes it its controlling terminal, ignores
 * SIGHUP and closes the master, which hangs the slave up (and takes the controlling terminal
 * away). After the trigger: the same name "/dev/pts/N (deleted)" and device, nlink 0, owner and
 * mode; reads give 0, writes and terminal calls fail with EIO, poll says POLLHUP; the flags of each
 * description, the dup one description and the other its own; no controlling terminal.
 * `vhangup`: the master stays open and the slave is hung up by vhangup(2) (root only), which a
 * checkpoint refuses; the name then stays "/dev/pts/N" with its link.
 */
#include "common.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>

static void link_of(int fd, char *buf, size_t len)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, buf, len - 1);
    buf[n < 0 ? 0 : n] = 0;
}

static int by_vhangup;

static void check_hung_up(int fd, const char *what, const char *name, const struct stat *was)
{
    char l[128], want[160];
    struct stat st;
    snprintf(want, sizeof want, by_vhangup ? "%s" : "%s (deleted)", name);
    link_of(fd, l, sizeof l);
    WL_CHECK(strcmp(l, want) == 0, "%s links to '%s', not '%s'", what, l, want);
    WL_CHECK(fstat(fd, &st) == 0 && st.st_rdev == was->st_rdev && st.st_nlink == (by_vhangup ? 1u : 0u) && st.st_uid == was->st_uid && st.st_mode == was->st_mode,
             "%s: rdev %lx nlink %lu uid %u mode 0%o", what, (unsigned long)st.st_rdev, (unsigned long)st.st_nlink, st.st_uid, st.st_mode);
    char b[8];
    errno = 0;
    ssize_t n = read(fd, b, sizeof b);
    WL_CHECK(n == 0, "%s: read gave %zd (%s)", what, n, strerror(errno));
    errno = 0;
    n = write(fd, "x", 1);
    WL_CHECK(n == -1 && errno == EIO, "%s: write gave %zd (%s)", what, n, strerror(errno));
    struct termios t;
    errno = 0;
    WL_CHECK(ioctl(fd, TCGETS, &t) == -1 && errno == EIO, "%s: TCGETS did not fail with EIO (%s)", what, strerror(errno));
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
    WL_CHECK(poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) == (POLLHUP | POLLERR), "%s: poll says 0x%x", what, p.revents);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [vhangup]");
    by_vhangup = argc > 2 && strcmp(argv[2], "vhangup") == 0;
    setsid();
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0)
        return 2;
    char name[64];
    snprintf(name, sizeof name, "%s", ptsname(m));
    int s1 = open(name, O_RDWR);
    int s2 = open(name, O_RDWR | O_NONBLOCK | O_NOCTTY);
    int s3 = dup(s1);
    if (s1 < 0 || s2 < 0 || s3 < 0 || ioctl(s1, TIOCSCTTY, 0) != 0)
        return 2;
    struct stat was;
    fstat(s1, &was);
    signal(SIGHUP, SIG_IGN);
    if (by_vhangup) {
        if (vhangup() != 0)
            return 2;
    } else {
        close(m);
    }

    wl_ready();
    while (!wl_triggered())
        usleep(20000);
    if (wl_tamper) {
        int n = open("/dev/null", O_RDWR);
        dup2(n, s3);
        close(n);
    }

    check_hung_up(s1, "the first slave fd", name, &was);
    check_hung_up(s2, "the second description", name, &was);
    check_hung_up(s3, "the dup of the first", name, &was);
    WL_CHECK((fcntl(s1, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_RDWR, "the first description's flags 0%o", fcntl(s1, F_GETFL));
    WL_CHECK((fcntl(s2, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDWR | O_NONBLOCK), "the second description's flags 0%o", fcntl(s2, F_GETFL));
    /* The dup shares its description with the first (a flag set through one shows through the other), the second has its own. */
    fcntl(s3, F_SETFL, O_APPEND);
    WL_CHECK((fcntl(s1, F_GETFL) & O_APPEND) && !(fcntl(s2, F_GETFL) & O_APPEND), "the descriptions are not shared as they were");
    int tty = open("/dev/tty", O_RDWR);
    WL_CHECK(tty < 0 && errno == ENXIO, "the process has a controlling terminal again (/dev/tty: %s)", tty < 0 ? strerror(errno) : "opened");
    wl_finish("ptyhup", NULL);
}
