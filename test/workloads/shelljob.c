/*
 * A job of a shell: run (by test/support/ptyrun.py, the "shell") on a terminal outside the
 * checkpointed tree, in its own process group in the terminal's foreground, with stdin on the
 * terminal (stdout is the result file). After the trigger it checks that it is still on a
 * terminal that is its controlling one (fd 0 and /dev/tty are the same device),
 * not a session leader, and in the foreground again; its own state (a counter) came through.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <termios.h>

/* tty_nr of /proc/self/stat: the controlling terminal's device, in the kernel's encoding. */
static int ctty_nr(void)
{
    char st[1024];
    int fd = open("/proc/self/stat", O_RDONLY), nr = -1;
    ssize_t n = fd >= 0 ? read(fd, st, sizeof st - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n > 0) {
        st[n] = 0;
        sscanf(strrchr(st, ')') + 2, "%*c %*d %*d %*d %d", &nr);
    }
    return nr;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger-path>");
    int fg = tcgetpgrp(0) == getpgrp();
    int leader = getsid(0) == getpid();
    unsigned long counter = 0;
    wl_ready();
    while (!wl_triggered()) {
        counter++;
        usleep(5000);
    }
    if (wl_tamper)
        fg = !fg;
    struct stat s0;
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    WL_CHECK(t >= 0, "no controlling terminal: open /dev/tty: %s", strerror(errno));
    WL_CHECK(isatty(0), "fd 0 is not a terminal");
    if (fstat(0, &s0) == 0) {
        int enc = (int)((minor(s0.st_rdev) & 0xff) | (major(s0.st_rdev) << 8) | ((minor(s0.st_rdev) & ~0xffu) << 12));
        WL_CHECK(enc == ctty_nr(), "fd 0 (%d) is not on the controlling terminal (%d)", enc, ctty_nr());
    }
    WL_CHECK(leader == 0 && getsid(0) != getpid(), "the job is a session leader");
    WL_CHECK((tcgetpgrp(0) == getpgrp()) == fg, "foreground: %d, was %d", tcgetpgrp(0) == getpgrp(), fg);
    WL_CHECK(counter > 0, "counter %lu", counter);
    wl_finish("shelljob", NULL);
}
