/*
 * ghost <trigger> <dir> [sparse]: files deleted while open. In <dir> (writable by whoever runs it):
 *   fd 10  <dir>/data    O_RDONLY, 4096 pattern bytes, offset 100 (kept: a file with a name)
 *   fd 11  <dir>/prog    O_RDWR, 5000 pattern bytes, mode 04755 (setuid), offset 1234, unlinked
 *   fd 12  <dir>/prog    opened again O_RDONLY before the unlink (another description, same inode), offset 10
 *   with "sparse":
 *   fd 13  <dir>/holes   O_RDWR, 2 MiB: data only at 64 KiB (8 KiB) and 600 KiB (4 KiB), offset 7, unlinked
 * Checks after the trigger: flags, offsets, nlink, sizes, owner (its own uid), permission bits
 * rwx (the setuid bit is not checked: restart may drop it), contents; fds 11 and 12 are one inode
 * (a write through 11 is read through 12) with their own offsets; the holes where they were
 * (SEEK_DATA / SEEK_HOLE as before the checkpoint), zeros in them; the deleted files have no name
 * ("(deleted)" links).
 */
#include "common.h"

#include <fcntl.h>

#define DATA_SIZE 4096
#define PROG_SIZE 5000
#define HOLES_SIZE (2 * 1024 * 1024)
#define MAXRUNS 16

enum { SEED_DATA = 0x6100, SEED_PROG = 0x6200, SEED_HOLES = 0x6300 };

struct snap {
    int fl;
    off_t off;
    struct stat st;
};

static char dir[3000];
static int sparse;
static off_t runs_before[MAXRUNS * 2];
static int nruns_before;

static int make(const char *name, int flags, mode_t mode, size_t len, uint64_t seed, int want_fd)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, flags | O_CREAT | O_TRUNC, mode);
    if (fd < 0) {
        wl_fail("create %s: %s", p, strerror(errno));
        return -1;
    }
    static uint8_t buf[PROG_SIZE];
    if (len > 0) {
        wl_fill_pattern(buf, len, seed);
        if (write(fd, buf, len) != (ssize_t)len)
            wl_fail("write %s: %s", p, strerror(errno));
    }
    if (dup2(fd, want_fd) != want_fd)
        wl_fail("dup2 %d: %s", want_fd, strerror(errno));
    close(fd);
    return want_fd;
}

/* Offsets of SEEK_DATA / SEEK_HOLE from 0 up to the end: data start, hole start, ... */
static int seek_map(int fd, off_t *out)
{
    int n = 0;
    off_t at = 0;
    while (n < MAXRUNS * 2) {
        off_t d = lseek(fd, at, SEEK_DATA);
        if (d < 0)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        out[n++] = d;
        out[n++] = h;
        if (h <= d)
            break;
        at = h;
    }
    return n;
}

static void snapshot(struct snap *s, int fd)
{
    s->fl = fcntl(fd, F_GETFL);
    s->off = lseek(fd, 0, SEEK_CUR);
    if (fstat(fd, &s->st) != 0)
        wl_fail("fstat %d: %s", fd, strerror(errno));
}

static void check_contents(int fd, size_t len, uint64_t seed, const char *what)
{
    static uint8_t buf[PROG_SIZE + 1];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    WL_CHECK(n == (ssize_t)len, "%s: %zd bytes, want %zu", what, n, len);
    long bad = n > 0 ? wl_check_pattern(buf, (size_t)n, seed) : -1;
    WL_CHECK(bad < 0, "%s: byte %ld differs", what, bad);
}

static void check_deleted(int fd)
{
    char p[64], link[4200];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t l = readlink(p, link, sizeof link - 1);
    link[l > 0 ? l : 0] = 0;
    WL_CHECK(l > 10 && strstr(link, " (deleted)") != NULL, "fd %d -> '%s', not a deleted file", fd, link);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir> [sparse]");
    snprintf(dir, sizeof dir, "%s", argv[2]);
    sparse = argc > 3 && strcmp(argv[3], "sparse") == 0;

    make("data", O_RDWR, 0644, DATA_SIZE, SEED_DATA, 10);
    close(10);
    {
        char p[4096];
        snprintf(p, sizeof p, "%s/data", dir);
        int fd = open(p, O_RDONLY);
        if (fd < 0 || dup2(fd, 10) != 10)
            wl_fail("open %s: %s", p, strerror(errno));
        if (fd != 10)
            close(fd);
        lseek(10, 100, SEEK_SET);
    }
    char prog[4096];
    snprintf(prog, sizeof prog, "%s/prog", dir);
    make("prog", O_RDWR, 0700, PROG_SIZE, SEED_PROG, 11);
    if (fchmod(11, 04755) != 0)
        wl_fail("fchmod 04755: %s", strerror(errno));
    lseek(11, 1234, SEEK_SET);
    {
        int fd = open(prog, O_RDONLY);
        if (fd < 0 || dup2(fd, 12) != 12)
            wl_fail("open %s again: %s", prog, strerror(errno));
        if (fd != 12)
            close(fd);
        lseek(12, 10, SEEK_SET);
    }
    if (unlink(prog) != 0)
        wl_fail("unlink %s: %s", prog, strerror(errno));
    if (sparse) {
        char p[4096];
        snprintf(p, sizeof p, "%s/holes", dir);
        make("holes", O_RDWR, 0640, 0, 0, 13);
        static uint8_t blk[8192];
        wl_fill_pattern(blk, sizeof blk, SEED_HOLES);
        if (pwrite(13, blk, 8192, 65536) != 8192 || pwrite(13, blk, 4096, 600 * 1024) != 4096)
            wl_fail("pwrite holes: %s", strerror(errno));
        if (ftruncate(13, HOLES_SIZE) != 0)
            wl_fail("ftruncate holes: %s", strerror(errno));
        lseek(13, 7, SEEK_SET);
        if (unlink(p) != 0)
            wl_fail("unlink %s: %s", p, strerror(errno));
        nruns_before = seek_map(13, runs_before);
        WL_CHECK(nruns_before >= 2 && runs_before[0] > 0, "the sparse file has no leading hole here (SEEK_DATA %lld)",
                 nruns_before ? (long long)runs_before[0] : -1LL);
    }
    int nfds = sparse ? 4 : 3;
    static struct snap before[4], after[4];
    for (int i = 0; i < nfds; i++)
        snapshot(&before[i], 10 + i);
    uid_t uid = getuid();

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        lseek(11, 1235, SEEK_SET);

    for (int i = 0; i < nfds; i++) {
        int fd = 10 + i;
        snapshot(&after[i], fd);
        const struct snap *b = &before[i], *a = &after[i];
        WL_CHECK(a->fl == b->fl, "fd %d: F_GETFL %#o, want %#o", fd, a->fl, b->fl);
        WL_CHECK(a->off == b->off, "fd %d: offset %lld, want %lld", fd, (long long)a->off, (long long)b->off);
        WL_CHECK(a->st.st_nlink == b->st.st_nlink, "fd %d: nlink %lu, want %lu", fd, (unsigned long)a->st.st_nlink,
                 (unsigned long)b->st.st_nlink);
        WL_CHECK(a->st.st_size == b->st.st_size, "fd %d: size %lld, want %lld", fd, (long long)a->st.st_size,
                 (long long)b->st.st_size);
        WL_CHECK((a->st.st_mode & 0777) == (b->st.st_mode & 0777), "fd %d: mode %#o, want %#o", fd, a->st.st_mode & 0777,
                 b->st.st_mode & 0777);
        WL_CHECK(a->st.st_uid == uid, "fd %d: owned by uid %u, not %u", fd, (unsigned)a->st.st_uid, (unsigned)uid);
    }
    WL_CHECK(after[0].st.st_dev == before[0].st.st_dev && after[0].st.st_ino == before[0].st.st_ino, "fd 10: another file");
    WL_CHECK(after[1].st.st_nlink == 0 && after[2].st.st_nlink == 0, "the deleted file has a name again");
    check_deleted(11);
    check_deleted(12);
    check_contents(10, DATA_SIZE, SEED_DATA, "fd 10");
    check_contents(11, PROG_SIZE, SEED_PROG, "fd 11");
    check_contents(12, PROG_SIZE, SEED_PROG, "fd 12");
    /* one inode behind fds 11 and 12 */
    WL_CHECK(after[1].st.st_ino == after[2].st.st_ino && after[1].st.st_dev == after[2].st.st_dev, "fds 11 and 12: two inodes");
    {
        uint8_t x = 0x5a, y = 0;
        WL_CHECK(pwrite(11, &x, 1, 100) == 1 && pread(12, &y, 1, 100) == 1 && y == 0x5a,
                 "a write through fd 11 is not seen through fd 12");
        WL_CHECK(lseek(12, 0, SEEK_CUR) == 10 && lseek(11, 0, SEEK_CUR) == 1234, "fds 11 and 12 share an offset");
    }
    if (sparse) {
        check_deleted(13);
        static off_t runs[MAXRUNS * 2];
        int n = seek_map(13, runs);
        WL_CHECK(n == nruns_before, "the sparse file has %d data/hole edges, want %d", n, nruns_before);
        for (int i = 0; i < n && i < nruns_before; i++)
            WL_CHECK(runs[i] == runs_before[i], "sparse edge %d at %lld, want %lld", i, (long long)runs[i],
                     (long long)runs_before[i]);
        static uint8_t all[HOLES_SIZE], pat[8192];
        wl_fill_pattern(pat, sizeof pat, SEED_HOLES);
        WL_CHECK(pread(13, all, HOLES_SIZE, 0) == HOLES_SIZE, "sparse file: short read");
        for (size_t i = 0; i < HOLES_SIZE; i++) {
            uint8_t want = i >= 65536 && i < 65536 + 8192 ? pat[i - 65536] : i >= 600 * 1024 && i < 600 * 1024 + 4096 ? pat[i - 600 * 1024] : 0;
            if (all[i] != want) {
                wl_fail("sparse file: byte %zu is %#x, want %#x", i, all[i], want);
                break;
            }
        }
    }
    wl_finish("ghost", NULL);
}
