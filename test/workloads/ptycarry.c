/*
 * A pty whose master is held only by a child: the parent (a session leader) opens a pty, its slave
 * as controlling terminal, sets termios and window size, forks child C (its own process group, the
 * terminal's foreground group), which keeps the master it inherited and a dup of it; the parent
 * closes the master. Buffered at checkpoint: a line C wrote for the parent, and a line the parent
 * wrote for C. After the trigger C checks the pty's index, that its two fds are one description,
 * reads the parent's line and answers with a line of its own (or its failures); the parent checks
 * its controlling terminal, the foreground group, termios, window size, reads both lines, and
 * answers C, which then exits (and the terminal hangs up).
 */
#include "common.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static ssize_t read_wait(int fd, char *buf, size_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        return -2;
    return read(fd, buf, len);
}

static void child(int m, int n)
{
    int m2 = dup(m);
    setpgid(0, 0);
    write(m, "ping\n", 5);
    while (!wl_triggered())
        usleep(20000);
    int idx = -1;
    WL_CHECK(ioctl(m, TIOCGPTN, &idx) == 0 && idx == n, "C: the master is pty %d, not %d", idx, n);
    fcntl(m2, F_SETFL, O_NONBLOCK);
    WL_CHECK(fcntl(m, F_GETFL) & O_NONBLOCK, "C: its two master fds are not one description");
    fcntl(m2, F_SETFL, 0);
    char got[64] = {0};
    ssize_t r = read_wait(m, got, sizeof got - 1);
    WL_CHECK(r == 6 && memcmp(got, "pong\r\n", 6) == 0, "C: the master read %zd bytes (%s)", r, got);
    char line[600];
    int len = wl_failures ? snprintf(line, sizeof line, "%s\n", wl_failbuf) : snprintf(line, sizeof line, "after\n");
    write(m, line, (size_t)len);
    r = read_wait(m, got, sizeof got - 1); /* the parent's answer: then C may close the master */
    _exit(r > 0 ? 0 : 1);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    setsid();
    signal(SIGHUP, SIG_IGN); /* C's exit at the end closes the master: the terminal hangs up */
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0)
        return 2;
    int n = -1;
    ioctl(m, TIOCGPTN, &n);
    char name[64];
    snprintf(name, sizeof name, "%s", ptsname(m));
    int s = open(name, O_RDWR);
    if (s < 0)
        return 2;
    struct termios t;
    tcgetattr(s, &t);
    t.c_lflag &= ~(tcflag_t)ECHO;
    t.c_cc[VERASE] = 0x08;
    tcsetattr(s, TCSANOW, &t);
    struct winsize ws = {.ws_row = 33, .ws_col = 99};
    ioctl(s, TIOCSWINSZ, &ws);
    pid_t c = fork();
    if (c == 0)
        child(m, n);
    setpgid(c, c);
    close(m);
    sigset_t ttou;
    sigemptyset(&ttou);
    sigaddset(&ttou, SIGTTOU);
    sigaddset(&ttou, SIGTTIN);
    sigprocmask(SIG_BLOCK, &ttou, NULL);
    tcsetpgrp(s, c);
    write(s, "pong\n", 5);
    for (int i = 0; i < 2000; i++) {
        int q = 0;
        if (ioctl(s, FIONREAD, &q) == 0 && q >= 5)
            break;
        usleep(1000);
    }

    wl_ready();
    while (!wl_triggered())
        usleep(20000);
    if (wl_tamper) {
        struct winsize w2 = {.ws_row = 24, .ws_col = 80};
        ioctl(s, TIOCSWINSZ, &w2);
    }

    char link[128] = {0}, path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", s);
    readlink(path, link, sizeof link - 1);
    WL_CHECK(strcmp(link, name) == 0, "the slave is %s, not %s", link, name);
    pid_t sid = -1;
    WL_CHECK(ioctl(s, TIOCGSID, &sid) == 0 && sid == getpid(), "TIOCGSID: %d (%s)", (int)sid, strerror(errno));
    int tty = open("/dev/tty", O_RDWR);
    WL_CHECK(tty >= 0, "no controlling terminal (%s)", strerror(errno));
    if (tty >= 0)
        close(tty);
    WL_CHECK(tcgetpgrp(s) == c, "foreground group %d, not %d", (int)tcgetpgrp(s), (int)c);
    struct termios now;
    tcgetattr(s, &now);
    WL_CHECK(!(now.c_lflag & ECHO) && (now.c_lflag & ICANON) && now.c_cc[VERASE] == 0x08, "termios lflag 0%o erase 0x%x", now.c_lflag, now.c_cc[VERASE]);
    struct winsize w;
    ioctl(s, TIOCGWINSZ, &w);
    WL_CHECK(w.ws_row == 33 && w.ws_col == 99, "window %dx%d", w.ws_row, w.ws_col);
    tcsetpgrp(s, getpgrp());
    char got[700] = {0};
    ssize_t r = read_wait(s, got, sizeof got - 1);
    WL_CHECK(r == 5 && memcmp(got, "ping\n", 5) == 0, "the slave read %zd bytes (%s), not C's line", r, got);
    memset(got, 0, sizeof got);
    r = read_wait(s, got, sizeof got - 1);
    WL_CHECK(r == 6 && memcmp(got, "after\n", 6) == 0, "C says: %s", r > 0 ? got : "nothing");
    write(s, "done\n", 5);
    int status = -1;
    waitpid(c, &status, 0);
    WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "C's status 0x%x", status);
    wl_finish("ptycarry", NULL);
}
