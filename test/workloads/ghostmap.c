/*
 * ghostmap <trigger> <dir>: files deleted while mapped. In <dir> (writable by whoever runs it):
 *   "shared": 3 pages of pattern, open O_RDWR at fd 10 (offset 777), mapped MAP_SHARED read-write
 *             whole, and its middle page mapped again MAP_SHARED read-only elsewhere; unlinked.
 *             A byte written through the mapping before the checkpoint.
 *   "private": 2 pages of pattern, mapped MAP_PRIVATE read-write, its fd closed, unlinked; the
 *             first page changed in the mapping (a private copy), the second untouched.
 * Checks after the trigger: contents of every mapping; fd 10 and both shared mappings are one
 * inode (a write through the fd is seen in both mappings, a write through the mapping is read
 * through the fd), the private mapping's copy is kept and its untouched page is the file's;
 * every mapped file is still deleted (map_files), fd 10's offset, mode and size.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>

#define PG 4096
enum { SEED_SHARED = 0x7100, SEED_PRIVATE = 0x7200 };

static char dir[3000];

static int make(const char *name, size_t len, uint64_t seed, mode_t mode)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, mode);
    if (fd < 0) {
        wl_fail("create %s: %s", p, strerror(errno));
        exit(1);
    }
    static uint8_t buf[3 * PG];
    wl_fill_pattern(buf, len, seed);
    if (write(fd, buf, len) != (ssize_t)len)
        wl_fail("write %s: %s", p, strerror(errno));
    if (fchmod(fd, mode) != 0)
        wl_fail("fchmod %s: %s", p, strerror(errno));
    if (unlink(p) != 0)
        wl_fail("unlink %s: %s", p, strerror(errno));
    return fd;
}

static void *map(size_t len, int prot, int flags, int fd, off_t off)
{
    void *p = mmap(NULL, len, prot, flags, fd, off);
    if (p == MAP_FAILED) {
        wl_fail("mmap: %s", strerror(errno));
        exit(1);
    }
    return p;
}

static void check_mapped_deleted(const void *at, const char *what)
{
    char p[128], link[4200];
    FILE *f = fopen("/proc/self/maps", "r");
    int found = 0;
    while (f && fgets(link, sizeof link, f)) {
        unsigned long s, e;
        if (sscanf(link, "%lx-%lx", &s, &e) == 2 && (unsigned long)at >= s && (unsigned long)at < e) {
            found = 1;
            WL_CHECK(strstr(link, " (deleted)") != NULL, "%s: mapped '%s', not a deleted file", what, link);
        }
    }
    if (f)
        fclose(f);
    snprintf(p, sizeof p, "%p", at);
    WL_CHECK(found, "%s: nothing mapped at %s", what, p);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir>");
    snprintf(dir, sizeof dir, "%s", argv[2]);

    int sfd = make("shared", 3 * PG, SEED_SHARED, 0640);
    if (dup2(sfd, 10) != 10)
        wl_fail("dup2: %s", strerror(errno));
    close(sfd);
    lseek(10, 777, SEEK_SET);
    uint8_t *sh = map(3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, 10, 0);
    const uint8_t *ro = map(PG, PROT_READ, MAP_SHARED, 10, PG);
    sh[2 * PG + 5] = 0xa5;

    int pfd = make("private", 2 * PG, SEED_PRIVATE, 0600);
    uint8_t *pv = map(2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, pfd, 0);
    close(pfd);
    pv[10] ^= 0xff;
    uint8_t pv10 = pv[10];

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        pv[PG + 1] ^= 1;

    struct stat st;
    WL_CHECK(fstat(10, &st) == 0 && st.st_nlink == 0 && st.st_size == 3 * PG && (st.st_mode & 0777) == 0640,
             "fd 10: nlink %lu size %lld mode %#o", (unsigned long)st.st_nlink, (long long)st.st_size, st.st_mode & 0777);
    WL_CHECK(lseek(10, 0, SEEK_CUR) == 777, "fd 10: offset %lld, want 777", (long long)lseek(10, 0, SEEK_CUR));
    check_mapped_deleted(sh, "the shared mapping");
    check_mapped_deleted(ro, "the read-only shared mapping");
    check_mapped_deleted(pv, "the private mapping");

    uint8_t want[3 * PG];
    wl_fill_pattern(want, sizeof want, SEED_SHARED);
    want[2 * PG + 5] = 0xa5;
    WL_CHECK(memcmp(sh, want, sizeof want) == 0, "the shared mapping's contents differ");
    WL_CHECK(memcmp(ro, want + PG, PG) == 0, "the read-only mapping's contents differ");
    uint8_t x = 0;
    WL_CHECK(pread(10, &x, 1, 2 * PG + 5) == 1 && x == 0xa5, "a write through the mapping is not in the file");
    x = 0x3c;
    WL_CHECK(pwrite(10, &x, 1, PG + 9) == 1, "pwrite: %s", strerror(errno));
    WL_CHECK(sh[PG + 9] == 0x3c && ro[9] == 0x3c, "a write through fd 10 is not seen in both mappings");

    uint8_t pwant[2 * PG];
    wl_fill_pattern(pwant, sizeof pwant, SEED_PRIVATE);
    WL_CHECK(pv[10] == pv10, "the private copy of the first page is lost");
    pwant[10] = pv10;
    WL_CHECK(memcmp(pv, pwant, sizeof pwant) == 0, "the private mapping's contents differ");
    wl_finish("ghostmap", NULL);
}
