/*
 * fifos <trigger> <dir> [--as UID:GID]: FIFOs (named pipes) opened by this process only, with data in flight.
 *   fds 10/11  <dir>/f1 read (O_NONBLOCK) and write: 5000 pattern bytes waiting
 *   fd 20      <dir>/f2 read-write, capacity 8192 (F_SETPIPE_SZ): 300 bytes waiting
 *   fd 30      <dir>/f3 write only (its reader closed after 123 bytes were written): the bytes
 *              wait for the next reader, an open of its name after the trigger
 *   fd 40      a FIFO made in <dir>, mode 0640, opened read-write, 55 bytes written, then its
 *              name unlinked
 * After the trigger: flags, device and inode against the names (f1-f3), capacity, each FIFO's
 * bytes in order, the unlinked one still a FIFO (nlink 0, mode 0640) and no name left for it in
 * <dir>; every FIFO still carries data. CPT_TAMPER=1 reads one byte of f1 first.
 */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>

#define K_O_LARGEFILE 0100000

static char dir[2048];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int open_at(const char *name, int flags, int fd)
{
    char p[4096];
    path_of(p, sizeof p, name);
    int r = open(p, flags);
    if (r < 0 || dup2(r, fd) != fd) {
        wl_fail("open %s: %s", name, strerror(errno));
        return -1;
    }
    close(r);
    return fd;
}

static void put(int fd, uint64_t seed, size_t n)
{
    uint8_t b[8192];
    wl_fill_pattern(b, n, seed);
    if (write(fd, b, n) != (ssize_t)n)
        wl_fail("write %zu bytes to fd %d: %s", n, fd, strerror(errno));
}

/* Reads exactly n bytes (non-blocking) and compares them with the pattern; then expects no more. */
static void expect_data(int fd, uint64_t seed, size_t n, const char *what)
{
    uint8_t b[8192];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, b + got, sizeof b - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    WL_CHECK(got == n, "%s: %zu bytes, not %zu", what, got, n);
    long bad = wl_check_pattern(b, got < n ? got : n, seed);
    WL_CHECK(bad < 0, "%s: data differs at byte %ld", what, bad);
}

static void same_inode(int fd, const char *name)
{
    char p[4096];
    struct stat a, b;
    path_of(p, sizeof p, name);
    WL_CHECK(fstat(fd, &a) == 0 && stat(p, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino && S_ISFIFO(a.st_mode),
             "fd %d is not the FIFO %s", fd, name);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir> [--as UID:GID]");
    wl_as_user(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "%s", argv[2]);
    char p[4096];
    const char *names[] = { "f1", "f2", "f3", "f4" };
    for (int i = 0; i < 4; i++) {
        path_of(p, sizeof p, names[i]);
        unlink(p);
        if (mkfifo(p, 0640) != 0)
            wl_fail("mkfifo %s: %s", p, strerror(errno));
    }
    open_at("f1", O_RDONLY | O_NONBLOCK, 10);
    open_at("f1", O_WRONLY, 11);
    put(11, 1, 5000);
    open_at("f2", O_RDWR, 20);
    if (fcntl(20, F_SETPIPE_SZ, 8192) != 8192)
        wl_fail("F_SETPIPE_SZ on f2: %s", strerror(errno));
    put(20, 2, 300);
    open_at("f3", O_RDWR, 31); /* a reader, so that the write-only open does not wait */
    open_at("f3", O_WRONLY, 30);
    put(30, 3, 123);
    close(31); /* the data stays for the next reader */
    open_at("f4", O_RDWR, 40);
    put(40, 4, 55);
    path_of(p, sizeof p, "f4");
    unlink(p);

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper) {
        uint8_t x;
        (void)!read(10, &x, 1);
    }

    WL_CHECK(fcntl(10, F_GETFL) == (O_RDONLY | O_NONBLOCK | K_O_LARGEFILE), "fd 10 flags 0%o", fcntl(10, F_GETFL));
    WL_CHECK(fcntl(11, F_GETFL) == (O_WRONLY | K_O_LARGEFILE), "fd 11 flags 0%o", fcntl(11, F_GETFL));
    WL_CHECK(fcntl(20, F_GETFL) == (O_RDWR | K_O_LARGEFILE), "fd 20 flags 0%o", fcntl(20, F_GETFL));
    WL_CHECK(fcntl(30, F_GETFL) == (O_WRONLY | K_O_LARGEFILE), "fd 30 flags 0%o", fcntl(30, F_GETFL));
    same_inode(10, "f1");
    same_inode(11, "f1");
    same_inode(20, "f2");
    same_inode(30, "f3");
    WL_CHECK(fcntl(20, F_GETPIPE_SZ) == 8192, "f2's capacity %d", fcntl(20, F_GETPIPE_SZ));

    expect_data(10, 1, 5000, "f1");
    fcntl(20, F_SETFL, O_NONBLOCK);
    expect_data(20, 2, 300, "f2");
    int r3 = open_at("f3", O_RDONLY | O_NONBLOCK, 31);
    if (r3 >= 0)
        expect_data(31, 3, 123, "f3 (opened again by name)");

    struct stat st;
    WL_CHECK(fstat(40, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0640,
             "the unlinked FIFO: mode 0%o nlink %lu", st.st_mode, (unsigned long)st.st_nlink);
    fcntl(40, F_SETFL, O_NONBLOCK);
    expect_data(40, 4, 55, "the unlinked FIFO");
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        WL_CHECK(strcmp(e->d_name, "f4") != 0 && strncmp(e->d_name, ".cptrst", 7) != 0, "a name %s in the directory", e->d_name);
    if (d)
        closedir(d);

    uint8_t b[8];
    WL_CHECK(write(11, "ab", 2) == 2 && read(10, b, 8) == 2, "f1 carries no data");
    WL_CHECK(write(40, "cd", 2) == 2 && read(40, b, 8) == 2, "the unlinked FIFO carries no data");
    wl_finish("fifos", NULL);
}
