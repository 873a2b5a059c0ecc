/*
 * Pseudo-terminals held by the tree: a session leader holds the master and the slave of pty A,
 * which is its controlling terminal (opened by path, no O_NOCTTY), with a termios, window size,
 * packet mode, lock and exclusive mode of its own, and data buffered in both directions: complete
 * lines, a line ended by end-of-file and an unfinished line for the slave's reader (in canonical
 * mode), their echo and a line of output for the master's reader. Child C is in its own process
 * group, which is the terminal's foreground group. Child D makes its own session and opens the
 * slave of pty B by path, which becomes its controlling terminal, makes it raw and writes a line
 * to it; bytes typed ahead for it (control characters included) wait in its raw input.
 * After the trigger everything is checked: the pty names (indexes), every setting, every byte,
 * the controlling terminals (and TIOCGSID), the foreground group.
 */
#include "common.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>

static const char LINES[] = "first line\nsecond\neofline\004";
static const char PART[] = "part";
static const char OUT[] = "out1\n";
static const char FROM_D[] = "from D\n";
/* Typed ahead for D, whose terminal is raw: every byte as it is (no signal, no erase, no CR translation). */
static const char RAWIN[] = "raw\003by\177tes\r\n\000\377";

/* Reads everything the master has now (packet mode: one header byte per read). */
static size_t drain_master(int m, int packet, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = m, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN))
            break;
        char b[4200];
        ssize_t n = read(m, b, sizeof b);
        if (n <= 0)
            break;
        if (packet && b[0] != 0)
            wl_fail("a packet-mode status byte 0x%x on the master", (unsigned char)b[0]);
        size_t skip = packet ? 1 : 0;
        if (got + (size_t)n - skip > cap)
            break;
        memcpy(buf + got, b + skip, (size_t)n - skip);
        got += (size_t)n - skip;
    }
    return got;
}

static void wait_readable(int fd, size_t want)
{
    for (int i = 0; i < 2000; i++) {
        int n = 0;
        if (ioctl(fd, FIONREAD, &n) == 0 && (size_t)n >= want)
            return;
        usleep(1000);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger-path>");
    if (getsid(0) != getpid())
        setsid();
    /* pty A: master and slave here, the slave our controlling terminal. */
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) {
        printf("FAIL ptys: posix_openpt: %s\n", strerror(errno));
        return 1;
    }
    char name[64];
    snprintf(name, sizeof name, "%s", ptsname(m));
    int s = open(name, O_RDWR);
    if (s < 0) {
        printf("FAIL ptys: open %s: %s\n", name, strerror(errno));
        return 1;
    }
    struct termios t;
    tcgetattr(s, &t);
    t.c_lflag |= ICANON | ECHO | ECHOCTL | IEXTEN;
    t.c_iflag |= IUTF8;
    t.c_cc[VERASE] = 0x08;
    t.c_cc[VKILL] = 0x0b;
    t.c_cc[VINTR] = 0x07;
    cfsetispeed(&t, B19200);
    cfsetospeed(&t, B19200);
    tcsetattr(s, TCSANOW, &t);
    struct termios want_t;
    tcgetattr(s, &want_t);
    struct winsize ws = {.ws_row = 37, .ws_col = 101, .ws_xpixel = 5, .ws_ypixel = 7};
    ioctl(m, TIOCSWINSZ, &ws);
    int one = 1;
    ioctl(m, TIOCPKT, &one);

    /* The echo of LINES, learnt once: the same input typed again echoes the same. */
    write(m, LINES, sizeof LINES - 1);
    char echo[512];
    char tmp[256];
    wait_readable(s, strlen("first line\nsecond\neofline"));
    for (int i = 0; i < 3; i++)
        read(s, tmp, sizeof tmp);
    size_t echo_len = drain_master(m, 1, echo, sizeof echo);

    /* pty B, for child D. */
    int m2 = posix_openpt(O_RDWR | O_NOCTTY);
    if (m2 < 0 || grantpt(m2) != 0 || unlockpt(m2) != 0) {
        printf("FAIL ptys: posix_openpt B: %s\n", strerror(errno));
        return 1;
    }
    char name2[64];
    snprintf(name2, sizeof name2, "%s", ptsname(m2));

    pid_t c = fork();
    if (c == 0) {
        setpgid(0, 0);
        for (;;)
            pause();
    }
    setpgid(c, c);
    pid_t d = fork();
    if (d == 0) {
        setsid();
        int sd = open(name2, O_RDWR);
        if (sd >= 0) {
            struct termios r;
            tcgetattr(sd, &r);
            cfmakeraw(&r);
            tcsetattr(sd, TCSANOW, &r);
            write(sd, FROM_D, sizeof FROM_D - 1);
        }
        for (;;)
            pause();
    }
    /* Now the buffered data: for the slave, LINES and an unfinished line; for the master, their echo and OUT. */
    write(m, LINES, sizeof LINES - 1);
    write(m, PART, sizeof PART - 1);
    wait_readable(m, echo_len + strlen(PART));
    write(s, OUT, sizeof OUT - 1);
    char want_master[600];
    memcpy(want_master, echo, echo_len);
    memcpy(want_master + echo_len, PART, strlen(PART));
    memcpy(want_master + echo_len + strlen(PART), "out1\r\n", 6);
    size_t want_master_len = echo_len + strlen(PART) + 6;
    wait_readable(m, want_master_len);
    wait_readable(m2, strlen(FROM_D));
    write(m2, RAWIN, sizeof RAWIN - 1);
    int sb = open(name2, O_RDWR | O_NOCTTY | O_NONBLOCK);
    wait_readable(sb, sizeof RAWIN - 1);
    ioctl(m, TIOCSPTLCK, &one);
    ioctl(s, TIOCEXCL);
    /* C's group in the foreground (SIGTTOU blocked: we are then in the background). */
    sigset_t ttou;
    sigemptyset(&ttou);
    sigaddset(&ttou, SIGTTOU);
    sigaddset(&ttou, SIGTTIN);
    sigprocmask(SIG_BLOCK, &ttou, NULL);
    tcsetpgrp(s, c);

    wl_ready();
    while (!wl_triggered())
        usleep(20000);

    if (wl_tamper) {
        struct winsize w2 = {.ws_row = 24, .ws_col = 80};
        ioctl(m, TIOCSWINSZ, &w2);
    }
    WL_CHECK(strcmp(ptsname(m), name) == 0, "pty A is %s, not %s", ptsname(m), name);
    WL_CHECK(strcmp(ptsname(m2), name2) == 0, "pty B is %s, not %s", ptsname(m2), name2);
    pid_t sid = -1;
    WL_CHECK(ioctl(s, TIOCGSID, &sid) == 0 && sid == getpid(), "TIOCGSID of pty A: %d (%s)", (int)sid, strerror(errno));
    WL_CHECK(tcgetpgrp(s) == c, "foreground group %d, not %d", (int)tcgetpgrp(s), (int)c);
    WL_CHECK(getpgid(c) == c && getsid(c) == getpid(), "child C: group %d session %d", (int)getpgid(c), (int)getsid(c));
    WL_CHECK(getsid(d) == d, "child D: session %d", (int)getsid(d));
    {
        char path[64], st[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)d);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, st, sizeof st - 1) : -1;
        if (fd >= 0)
            close(fd);
        struct stat sb;
        int ttynr = -1;
        if (n > 0) {
            st[n] = 0;
            char *p = strrchr(st, ')');
            sscanf(p + 2, "%*c %*d %*d %*d %d", &ttynr);
        }
        WL_CHECK(stat(name2, &sb) == 0 && ttynr == (int)((minor(sb.st_rdev) & 0xff) | (major(sb.st_rdev) << 8) | ((minor(sb.st_rdev) & ~0xffu) << 12)),
                 "child D's controlling terminal is %d, not %s", ttynr, name2);
    }
    struct termios now;
    tcgetattr(s, &now);
    WL_CHECK(now.c_iflag == want_t.c_iflag && now.c_oflag == want_t.c_oflag && now.c_cflag == want_t.c_cflag && now.c_lflag == want_t.c_lflag,
             "termios flags %o %o %o %o, not %o %o %o %o", now.c_iflag, now.c_oflag, now.c_cflag, now.c_lflag, want_t.c_iflag, want_t.c_oflag,
             want_t.c_cflag, want_t.c_lflag);
    WL_CHECK(memcmp(now.c_cc, want_t.c_cc, NCCS) == 0, "termios c_cc differ");
    WL_CHECK(cfgetospeed(&now) == B19200, "speed %d", (int)cfgetospeed(&now));
    struct winsize w;
    ioctl(s, TIOCGWINSZ, &w);
    WL_CHECK(w.ws_row == 37 && w.ws_col == 101 && w.ws_xpixel == 5 && w.ws_ypixel == 7, "window %dx%d %dx%d", w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel);
    int v = -1;
    WL_CHECK(ioctl(m, TIOCGPKT, &v) == 0 && v == 1, "packet mode %d", v);
    v = -1;
    WL_CHECK(ioctl(m, TIOCGPTLCK, &v) == 0 && v == 1, "lock %d", v);
    v = -1;
    WL_CHECK(ioctl(s, TIOCGEXCL, &v) == 0 && v == 1, "exclusive %d", v);
    int again = open(name, O_RDWR | O_NOCTTY);
    WL_CHECK(again < 0 && errno == EIO, "a locked pty's slave opened (%d, %s)", again, strerror(errno));
    int zero = 0;
    ioctl(m, TIOCSPTLCK, &zero);
    int dtty = open("/dev/tty", O_RDWR);
    WL_CHECK(dtty >= 0, "open /dev/tty: %s", strerror(errno));
    if (dtty >= 0)
        close(dtty);
    /* Back in the foreground to read from our terminal. */
    tcsetpgrp(s, getpgrp());
    fcntl(m, F_SETFL, O_NONBLOCK);
    char got[4200];
    size_t n = drain_master(m, 1, got, sizeof got);
    WL_CHECK(n == want_master_len && memcmp(got, want_master, n) == 0, "the master read %zu bytes (%.*s), not %zu", n, (int)n, got, want_master_len);
    fcntl(m2, F_SETFL, O_NONBLOCK);
    n = drain_master(m2, 0, got, sizeof got);
    WL_CHECK(n == strlen(FROM_D) && memcmp(got, FROM_D, n) == 0, "pty B's master read %zu bytes (%.*s)", n, (int)n, got);
    struct termios rb;
    WL_CHECK(tcgetattr(sb, &rb) == 0 && !(rb.c_lflag & (ICANON | ECHO | ISIG)) && !(rb.c_iflag & ICRNL) && !(rb.c_oflag & OPOST), "pty B is not raw");
    ssize_t rn = read(sb, got, sizeof got);
    WL_CHECK(rn == (ssize_t)sizeof RAWIN - 1 && memcmp(got, RAWIN, sizeof RAWIN - 1) == 0, "pty B's slave read %zd bytes, not the %zu typed ahead", rn, sizeof RAWIN - 1);
    const char *lines[] = {"first line\n", "second\n", "eofline"};
    for (int i = 0; i < 3; i++) {
        ssize_t r = read(s, tmp, sizeof tmp);
        WL_CHECK(r == (ssize_t)strlen(lines[i]) && memcmp(tmp, lines[i], (size_t)r) == 0, "line %d: %zd bytes (%.*s) %s", i, r, r > 0 ? (int)r : 0, tmp, r < 0 ? strerror(errno) : "");
    }
    write(m, "\n", 1);
    ssize_t r = read(s, tmp, sizeof tmp);
    WL_CHECK(r == 5 && memcmp(tmp, "part\n", 5) == 0, "the unfinished line: %zd bytes (%.*s)", r, r > 0 ? (int)r : 0, tmp);
    kill(c, SIGKILL);
    kill(d, SIGKILL);
    waitpid(c, NULL, 0);
    waitpid(d, NULL, 0);
    wl_finish("ptys", NULL);
}
