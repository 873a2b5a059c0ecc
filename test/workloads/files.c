/*
 * files: the fd table. Files are created next to the trigger (<trigger>.*).
 *   fd 10  <trigger>.rw      O_RDWR, 8 KiB pattern, offset 1234
 *   fd 42  <trigger>.append  O_WRONLY|O_APPEND, 100 + 50 bytes written, offset 150
 *   fd 20  <trigger>.ro      O_RDONLY, offset 77, FD_CLOEXEC
 *   fd 30, 31                one open file description of <trigger>.shared (dup), offset 500
 *   fd 32  <trigger>.shared  opened again (its own description), offset 100
 *   fd 13  /dev/null         O_RDWR
 *   fd 50  <trigger>.deleted O_RDWR, 20000 bytes, offset 3000, unlinked while open
 *   fd 60  <trigger>.link    the symlink itself (O_PATH|O_NOFOLLOW), a link to <trigger>.rw
 *   fds 0, 1, 2 as inherited (the harness gives /dev/null and the result file, O_APPEND)
 * Checks after the trigger: the set of open fds; for each fd its flags (F_GETFL, F_GETFD),
 * offset, and identity (fstat dev/ino, or nlink 0 and size for the deleted file); contents read
 * back through the fds (read() moves the offset); an append goes to the end; the read-only fd
 * refuses writes; fds 30/31 still share their offset, fd 32 does not (and kcmp agrees, as it
 * does for fds 1/2); /dev/null behaves as /dev/null; the deleted file's contents.
 */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#define RW_SIZE 8192
#define DEL_SIZE 20000
#define MAXFD 1024

enum { SEED_RW = 0x1000, SEED_APPEND = 0x2000, SEED_RO = 0x3000, SEED_SHARED = 0x4000, SEED_DEL = 0x5000 };

struct fdinfo {
    int open;
    int fl, fd_flags;
    off_t off;
    dev_t dev;
    ino_t ino;
    nlink_t nlink;
    off_t size;
    mode_t mode;
};

static char paths[5][4096];

static int make_file(int idx, const char *suffix, size_t len, uint64_t seed)
{
    snprintf(paths[idx], sizeof paths[idx], "%s.%s", wl_trigger_path, suffix);
    int fd = open(paths[idx], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        wl_fail("create %s: %s", paths[idx], strerror(errno));
        return -1;
    }
    static uint8_t buf[DEL_SIZE];
    wl_fill_pattern(buf, len, seed);
    if (write(fd, buf, len) != (ssize_t)len)
        wl_fail("write %s: %s", paths[idx], strerror(errno));
    return fd;
}

static int open_at(const char *path, int flags, int want_fd)
{
    int fd = open(path, flags);
    if (fd < 0) {
        wl_fail("open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fd != want_fd) {
        if (dup2(fd, want_fd) != want_fd)
            wl_fail("dup2 %d: %s", want_fd, strerror(errno));
        close(fd);
    }
    return want_fd;
}

static void snapshot(struct fdinfo *t)
{
    memset(t, 0, sizeof(struct fdinfo) * MAXFD);
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        wl_fail("opendir /proc/self/fd: %s", strerror(errno));
        return;
    }
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == self)
            continue;
        if (fd >= MAXFD) {
            wl_fail("unexpected fd %d", fd);
            continue;
        }
        struct fdinfo *i = &t[fd];
        i->open = 1;
        i->fl = fcntl(fd, F_GETFL);
        i->fd_flags = fcntl(fd, F_GETFD);
        i->off = lseek(fd, 0, SEEK_CUR);
        struct stat st;
        if (fstat(fd, &st) == 0) {
            i->dev = st.st_dev;
            i->ino = st.st_ino;
            i->nlink = st.st_nlink;
            i->size = st.st_size;
            i->mode = st.st_mode;
        }
    }
    closedir(d);
}

static int kcmp_file(int a, int b)
{
    return (int)syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b);
}

static void check_read(int fd, off_t at, size_t len, uint64_t seed, const char *what)
{
    uint8_t buf[256];
    WL_CHECK(lseek(fd, 0, SEEK_CUR) == at, "%s: offset %lld before read, want %lld", what,
             (long long)lseek(fd, 0, SEEK_CUR), (long long)at);
    ssize_t n = read(fd, buf, len);
    WL_CHECK(n == (ssize_t)len, "%s: read %zd bytes, want %zu", what, n, len);
    for (ssize_t k = 0; k < n; k++)
        if (buf[k] != wl_pat8(seed, (uint64_t)at + (uint64_t)k)) {
            wl_fail("%s: byte %lld differs", what, (long long)at + k);
            break;
        }
    WL_CHECK(lseek(fd, 0, SEEK_CUR) == at + (off_t)len, "%s: read did not move the offset", what);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");

    int fd;
    if ((fd = make_file(0, "rw", RW_SIZE, SEED_RW)) >= 0)
        close(fd);
    if ((fd = make_file(1, "append", 100, SEED_APPEND)) >= 0)
        close(fd);
    if ((fd = make_file(2, "ro", 4096, SEED_RO)) >= 0)
        close(fd);
    if ((fd = make_file(3, "shared", 4096, SEED_SHARED)) >= 0)
        close(fd);

    open_at(paths[0], O_RDWR, 10);
    lseek(10, 1234, SEEK_SET);
    open_at(paths[1], O_WRONLY | O_APPEND, 42);
    {
        static uint8_t more[50];
        for (int k = 0; k < 50; k++)
            more[k] = wl_pat8(SEED_APPEND, 100 + (uint64_t)k);
        lseek(42, 0, SEEK_SET); /* O_APPEND writes go to the end anyway */
        if (write(42, more, 50) != 50)
            wl_fail("append write: %s", strerror(errno));
    }
    open_at(paths[2], O_RDONLY, 20);
    fcntl(20, F_SETFD, FD_CLOEXEC);
    lseek(20, 77, SEEK_SET);
    open_at(paths[3], O_RDWR, 30);
    if (dup2(30, 31) != 31)
        wl_fail("dup2 31: %s", strerror(errno));
    lseek(30, 500, SEEK_SET);
    open_at(paths[3], O_RDWR, 32);
    lseek(32, 100, SEEK_SET);
    open_at("/dev/null", O_RDWR, 13);
    fd = make_file(4, "deleted", DEL_SIZE, SEED_DEL);
    if (fd >= 0) {
        if (dup2(fd, 50) != 50)
            wl_fail("dup2 50: %s", strerror(errno));
        close(fd);
        lseek(50, 3000, SEEK_SET);
        if (unlink(paths[4]) != 0)
            wl_fail("unlink: %s", strerror(errno));
    }

    {
        char lnk[4200];
        snprintf(lnk, sizeof lnk, "%s.link", wl_trigger_path);
        unlink(lnk);
        if (symlink(paths[0], lnk) != 0)
            wl_fail("symlink %s: %s", lnk, strerror(errno));
        int l = open(lnk, O_PATH | O_NOFOLLOW);
        if (l < 0 || dup2(l, 60) != 60)
            wl_fail("open %s O_PATH|O_NOFOLLOW: %s", lnk, strerror(errno));
        close(l);
    }

    int have_kcmp = kcmp_file(30, 31) == 0;
    int stdout_is_stderr = kcmp_file(1, 2) == 0;
    static struct fdinfo before[MAXFD]; /* static: big */
    snapshot(before);
    WL_CHECK(before[31].off == 500, "dup'ed fd does not share the offset");

    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        lseek(10, 1235, SEEK_SET);

    static struct fdinfo after[MAXFD];
    snapshot(after);
    for (int i = 0; i < MAXFD; i++) {
        const struct fdinfo *b = &before[i], *a = &after[i];
        if (a->open != b->open) {
            wl_fail("fd %d is %s", i, a->open ? "open now" : "closed now");
            continue;
        }
        if (!a->open)
            continue;
        WL_CHECK(a->fl == b->fl, "fd %d: F_GETFL %#o, want %#o", i, a->fl, b->fl);
        WL_CHECK(a->fd_flags == b->fd_flags, "fd %d: F_GETFD %d, want %d", i, a->fd_flags, b->fd_flags);
        WL_CHECK(a->mode == b->mode, "fd %d: st_mode %#o, want %#o", i, a->mode, b->mode);
        if (i != 50)
            WL_CHECK(a->dev == b->dev && a->ino == b->ino, "fd %d: another file (dev/ino)", i);
        if (i <= 2) /* the result file grows: only its flags and identity are compared */
            continue;
        WL_CHECK(a->off == b->off, "fd %d: offset %lld, want %lld", i, (long long)a->off, (long long)b->off);
        WL_CHECK(a->nlink == b->nlink, "fd %d: nlink %lu, want %lu", i, (unsigned long)a->nlink,
                 (unsigned long)b->nlink);
        if (S_ISREG(a->mode))
            WL_CHECK(a->size == b->size, "fd %d: size %lld, want %lld", i, (long long)a->size, (long long)b->size);
    }

    /* what each fd was set up to be */
    WL_CHECK(S_ISLNK(after[60].mode) && (after[60].fl & O_PATH), "fd 60: mode %#o flags %#o, not the symlink itself", after[60].mode, after[60].fl);
    WL_CHECK((after[10].fl & O_ACCMODE) == O_RDWR && !(after[10].fl & O_APPEND), "fd 10 flags %#o", after[10].fl);
    WL_CHECK((after[42].fl & O_ACCMODE) == O_WRONLY && (after[42].fl & O_APPEND), "fd 42 flags %#o", after[42].fl);
    WL_CHECK((after[20].fl & O_ACCMODE) == O_RDONLY, "fd 20 flags %#o", after[20].fl);
    WL_CHECK(after[20].fd_flags == FD_CLOEXEC, "fd 20 lost FD_CLOEXEC");
    WL_CHECK(after[10].fd_flags == 0 && after[30].fd_flags == 0 && after[31].fd_flags == 0,
             "FD_CLOEXEC set where it was not");
    WL_CHECK(after[10].off == 1234 && after[20].off == 77 && after[30].off == 500 && after[31].off == 500 &&
                 after[32].off == 100 && after[42].off == 150 && after[50].off == 3000,
             "offsets 10:%lld 20:%lld 30:%lld 31:%lld 32:%lld 42:%lld 50:%lld", (long long)after[10].off,
             (long long)after[20].off, (long long)after[30].off, (long long)after[31].off, (long long)after[32].off,
             (long long)after[42].off, (long long)after[50].off);

    /* contents through the fds */
    check_read(10, 1234, 100, SEED_RW, "fd 10");
    check_read(20, 77, 33, SEED_RO, "fd 20");
    WL_CHECK(write(20, "x", 1) == -1 && errno == EBADF, "write to the O_RDONLY fd 20 did not fail with EBADF");
    check_read(50, 3000, 200, SEED_DEL, "deleted file fd 50");
    {
        static uint8_t buf[DEL_SIZE + 1];
        ssize_t n = pread(50, buf, sizeof buf, 0);
        WL_CHECK(n == DEL_SIZE, "deleted file has %zd bytes", n);
        long bad = n > 0 ? wl_check_pattern(buf, (size_t)n, SEED_DEL) : -1;
        WL_CHECK(bad < 0, "deleted file byte %ld differs", bad);
        struct stat st;
        WL_CHECK(fstat(50, &st) == 0 && st.st_nlink == 0, "deleted file has nlink %lu", (unsigned long)st.st_nlink);
        char link[4200];
        ssize_t l = readlink("/proc/self/fd/50", link, sizeof link - 1);
        link[l > 0 ? l : 0] = 0;
        WL_CHECK(l > 10 && strstr(link, " (deleted)") != NULL, "/proc/self/fd/50 -> '%s'", link);
    }

    /* append goes to the end */
    {
        uint8_t more[10];
        for (int k = 0; k < 10; k++)
            more[k] = wl_pat8(SEED_APPEND, 150 + (uint64_t)k);
        lseek(42, 3, SEEK_SET);
        WL_CHECK(write(42, more, 10) == 10, "append write after trigger failed");
        WL_CHECK(lseek(42, 0, SEEK_CUR) == 160, "append fd offset %lld after write, want 160",
                 (long long)lseek(42, 0, SEEK_CUR));
        uint8_t back[200];
        int rfd = open(paths[1], O_RDONLY);
        ssize_t n = rfd < 0 ? -1 : read(rfd, back, sizeof back);
        WL_CHECK(n == 160, "append file has %zd bytes, want 160", n);
        long bad = n > 0 ? wl_check_pattern(back, (size_t)n, SEED_APPEND) : -1;
        WL_CHECK(bad < 0, "append file byte %ld differs", bad);
        if (rfd >= 0)
            close(rfd);
    }

    /* one description shared by 30 and 31, another one for 32 */
    lseek(30, 600, SEEK_SET);
    WL_CHECK(lseek(31, 0, SEEK_CUR) == 600, "fd 31 does not follow fd 30's offset (%lld)",
             (long long)lseek(31, 0, SEEK_CUR));
    WL_CHECK(lseek(32, 0, SEEK_CUR) == 100, "fd 32 moved with fd 30 (%lld)", (long long)lseek(32, 0, SEEK_CUR));
    check_read(31, 600, 50, SEED_SHARED, "fd 31");
    WL_CHECK(lseek(30, 0, SEEK_CUR) == 650, "fd 30 did not follow a read on fd 31");
    if (have_kcmp) {
        WL_CHECK(kcmp_file(30, 31) == 0, "kcmp: fds 30 and 31 are different files");
        WL_CHECK(kcmp_file(30, 32) != 0, "kcmp: fds 30 and 32 are the same file");
        WL_CHECK((kcmp_file(1, 2) == 0) == stdout_is_stderr,
                 "kcmp: fds 1 and 2 %s share a file now", stdout_is_stderr ? "no longer" : "wrongly");
        WL_CHECK(kcmp_file(10, 20) != 0, "kcmp: fds 10 and 20 are the same file");
    }

    /* /dev/null */
    {
        struct stat st;
        char c;
        WL_CHECK(fstat(13, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "fd 13 is not /dev/null");
        WL_CHECK(write(13, "abc", 3) == 3 && read(13, &c, 1) == 0, "fd 13 does not behave as /dev/null");
    }

    wl_finish("files", have_kcmp ? NULL : "kcmp unavailable: sharing checked through offsets only");
}
