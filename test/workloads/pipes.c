/*
 * pipes <trigger> [--as UID:GID]: pipes with both ends in this process, with data in flight.
 *   fds 10/11  pipe A: capacity 256 KiB (F_SETPIPE_SZ), 100000 pattern bytes waiting; read end
 *              O_NONBLOCK; the write end also at fds 12 and 13 (dup: one description)
 *   fd 14      a second description of A's read end (opened through /proc/self/fd/10), blocking
 *   fds 20/21  pipe B, packet mode (pipe2 O_DIRECT): packets of 10, 100 and 4096 bytes waiting
 *   fd 30      pipe C's read end, its write end closed: 777 bytes, then end of file
 *   fd 40      pipe D's write end, its read end closed: a write fails with EPIPE
 *   fds 50/51  pipe E: empty, default capacity, fd 51 close-on-exec
 * After the trigger: flags (F_GETFL, F_GETFD), capacities, the bytes of A in order through fd 14
 * and fd 10, B's packet boundaries, C's data then EOF, D's EPIPE, one description behind 11/12/13
 * (a flag set on one shows on the others) and two behind 10/14; every pipe still carries data
 * both ways afterwards. CPT_TAMPER=1 reads one byte of A first.
 */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>

/* The kernel's O_LARGEFILE (glibc defines O_LARGEFILE as 0 for 64-bit builds). */
#define K_O_LARGEFILE 0100000
#define A_BYTES 100000
#define A_SEED 77

static int make_pipe(int rfd, int wfd, int flags)
{
    int p[2];
    if (pipe2(p, flags) != 0)
        return -1;
    if (dup2(p[0], rfd) != rfd || dup2(p[1], wfd) != wfd)
        return -1;
    close(p[0]);
    close(p[1]);
    return 0;
}

static void write_all(int fd, const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w <= 0) {
            wl_fail("write to fd %d: %s", fd, strerror(errno));
            return;
        }
        b += w;
        n -= (size_t)w;
    }
}

static int waiting(int fd)
{
    int n = -1;
    if (ioctl(fd, FIONREAD, &n) != 0)
        return -1;
    return n;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--as UID:GID]");
    wl_as_user(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    static uint8_t a[A_BYTES], got[A_BYTES + 10];
    wl_fill_pattern(a, A_BYTES, A_SEED);

    if (make_pipe(10, 11, 0) != 0 || fcntl(11, F_SETPIPE_SZ, 256 * 1024) < 0)
        wl_fail("pipe A: %s", strerror(errno));
    write_all(11, a, A_BYTES);
    fcntl(10, F_SETFL, O_NONBLOCK);
    dup2(11, 12);
    dup2(11, 13);
    int r2 = open("/proc/self/fd/10", O_RDONLY);
    if (r2 < 0 || dup2(r2, 14) != 14)
        wl_fail("second description of A: %s", strerror(errno));
    close(r2);

    if (make_pipe(20, 21, O_DIRECT) != 0)
        wl_fail("pipe B: %s", strerror(errno));
    static uint8_t pk[4096];
    wl_fill_pattern(pk, sizeof pk, 5);
    write_all(21, pk, 10);
    write_all(21, pk + 10, 100);
    write_all(21, pk, 4096);

    if (make_pipe(30, 31, 0) != 0)
        wl_fail("pipe C: %s", strerror(errno));
    static uint8_t c[777];
    wl_fill_pattern(c, sizeof c, 9);
    write_all(31, c, sizeof c);
    close(31);

    if (make_pipe(41, 40, 0) != 0)
        wl_fail("pipe D: %s", strerror(errno));
    close(41);

    if (make_pipe(50, 51, 0) != 0)
        wl_fail("pipe E: %s", strerror(errno));
    fcntl(51, F_SETFD, FD_CLOEXEC);

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper) {
        uint8_t x;
        (void)!read(10, &x, 1);
    }

    /* Flags and capacities. */
    WL_CHECK(fcntl(10, F_GETFL) == (O_RDONLY | O_NONBLOCK), "fd 10 flags 0%o", fcntl(10, F_GETFL));
    WL_CHECK(fcntl(11, F_GETFL) == O_WRONLY, "fd 11 flags 0%o", fcntl(11, F_GETFL));
    WL_CHECK(fcntl(14, F_GETFL) == (O_RDONLY | K_O_LARGEFILE), "fd 14 flags 0%o", fcntl(14, F_GETFL));
    WL_CHECK(fcntl(21, F_GETFL) == (O_WRONLY | O_DIRECT), "fd 21 flags 0%o", fcntl(21, F_GETFL));
    WL_CHECK(fcntl(51, F_GETFD) == FD_CLOEXEC && fcntl(50, F_GETFD) == 0, "fd flags of E: %d %d", fcntl(50, F_GETFD), fcntl(51, F_GETFD));
    WL_CHECK(fcntl(10, F_GETPIPE_SZ) == 256 * 1024, "A's capacity %d", fcntl(10, F_GETPIPE_SZ));
    WL_CHECK(fcntl(50, F_GETPIPE_SZ) == 65536, "E's capacity %d", fcntl(50, F_GETPIPE_SZ));
    WL_CHECK(waiting(10) == A_BYTES && waiting(14) == A_BYTES, "A holds %d bytes", waiting(10));
    WL_CHECK(waiting(50) == 0, "E holds %d bytes", waiting(50));

    /* One description behind 11/12/13, two behind 10 and 14. */
    fcntl(12, F_SETFL, O_NONBLOCK);
    WL_CHECK((fcntl(11, F_GETFL) & O_NONBLOCK) && (fcntl(13, F_GETFL) & O_NONBLOCK), "fds 11-13 are not one description");
    fcntl(12, F_SETFL, 0);
    WL_CHECK(!(fcntl(14, F_GETFL) & O_NONBLOCK), "fd 14 shares fd 10's description");
    pid_t me = getpid();
    WL_CHECK(syscall(SYS_kcmp, me, me, 0 /* KCMP_FILE */, 11, 13) == 0, "kcmp: fds 11 and 13 differ");
    WL_CHECK(syscall(SYS_kcmp, me, me, 0, 10, 14) != 0, "kcmp: fds 10 and 14 are one description");

    /* A: half through fd 14, the rest through fd 10, in order. */
    size_t n = 0;
    while (n < A_BYTES / 2) {
        ssize_t r = read(14, got + n, A_BYTES / 2 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    for (;;) {
        ssize_t r = read(10, got + n, sizeof got - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    WL_CHECK(n == A_BYTES, "read %zu bytes from A, not %d", n, A_BYTES);
    long bad = wl_check_pattern(got, n < A_BYTES ? n : A_BYTES, A_SEED);
    WL_CHECK(bad < 0, "A's data differs at byte %ld", bad);
    WL_CHECK(read(10, got, 1) < 0 && errno == EAGAIN, "A not empty, or fd 10 blocking");

    /* B: one packet per read. */
    uint8_t pb[8192];
    ssize_t p1 = read(20, pb, sizeof pb);
    WL_CHECK(p1 == 10 && memcmp(pb, pk, 10) == 0, "B's first packet: %zd bytes", p1);
    ssize_t p2 = read(20, pb, sizeof pb);
    WL_CHECK(p2 == 100 && memcmp(pb, pk + 10, 100) == 0, "B's second packet: %zd bytes", p2);
    ssize_t p3 = read(20, pb, sizeof pb);
    WL_CHECK(p3 == 4096 && memcmp(pb, pk, 4096) == 0, "B's third packet: %zd bytes", p3);

    /* C: the data, then end of file. */
    uint8_t cb[1024];
    size_t cn = 0;
    for (;;) {
        ssize_t r = read(30, cb + cn, sizeof cb - cn);
        if (r <= 0) {
            WL_CHECK(r == 0, "C: read error %s", strerror(errno));
            break;
        }
        cn += (size_t)r;
    }
    WL_CHECK(cn == sizeof c && memcmp(cb, c, sizeof c) == 0, "C held %zu bytes, not 777 as written", cn);

    /* D: nobody reads. */
    WL_CHECK(write(40, "x", 1) < 0 && errno == EPIPE, "D: write did not fail with EPIPE");

    /* Still pipes, both ways. */
    WL_CHECK(write(51, "ping", 4) == 4 && read(50, pb, 4) == 4 && memcmp(pb, "ping", 4) == 0, "E carries no data");
    WL_CHECK(write(13, "pong", 4) == 4 && read(10, pb, 8) == 4 && memcmp(pb, "pong", 4) == 0, "A carries no data");
    WL_CHECK(write(21, "q", 1) == 1 && write(21, "rs", 2) == 2 && read(20, pb, 8) == 1 && read(20, pb, 8) == 2, "B lost packet mode");
    wl_finish("pipes", NULL);
}
