/*
 * The file of shared anonymous memory used as a file. Area A: 4 pages of MAP_SHARED|MAP_ANONYMOUS
 * memory with a pattern, opened through /proc/self/map_files twice (fd R read-write, close-on-exec,
 * at offset 5000; fd O read-only at offset 123), grown with ftruncate to 5 pages and 100 bytes (the
 * tail written through R, beyond the area), mapped again privately from page 1 (3 pages, page 1 of
 * it changed: a private copy) and shared from page 2 (2 pages). File B: shared anonymous memory
 * opened through map_files, unmapped, cut to 10 bytes of text, O_APPEND, at offset 3.
 * After the trigger: one inode behind R, O and every area (nlink 0, "/dev/zero (deleted)", its
 * size, F_SEAL_SEAL), flags, offsets, contents, a write through R seen in A and in the private
 * area's unchanged page but not in its changed one, a write through the second shared area seen in
 * A, B's text, size and flags (a write appends).
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>

#define PG 4096
static const char BTEXT[] = "hello12345";

static int map_files_open(void *addr, size_t len, int flags)
{
    char p[128];
    snprintf(p, sizeof p, "/proc/self/map_files/%lx-%lx", (unsigned long)addr, (unsigned long)addr + len);
    return open(p, flags);
}

static void check_link(int fd, const char *what)
{
    char p[64], l[128] = {0};
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    if (readlink(p, l, sizeof l - 1) < 0 || strcmp(l, "/dev/zero (deleted)") != 0)
        wl_fail("%s links to '%s'", what, l);
}

static ino_t area_inode(void *addr, size_t len)
{
    char p[128];
    struct stat st;
    snprintf(p, sizeof p, "/proc/self/map_files/%lx-%lx", (unsigned long)addr, (unsigned long)addr + len);
    return stat(p, &st) == 0 ? st.st_ino : 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    uint8_t *a = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return 2;
    wl_fill_pattern(a, 4 * PG, 7);
    int r = map_files_open(a, 4 * PG, O_RDWR | O_CLOEXEC);
    int o = map_files_open(a, 4 * PG, O_RDONLY);
    if (r < 0 || o < 0)
        return 2;
    if (ftruncate(r, 5 * PG + 100) != 0 || pwrite(r, "tail of the file", 16, 5 * PG + 10) != 16)
        return 2;
    lseek(r, 5000, SEEK_SET);
    lseek(o, 123, SEEK_SET);
    uint8_t *priv = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, r, PG);
    uint8_t *alias = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, r, 2 * PG);
    if (priv == MAP_FAILED || alias == MAP_FAILED)
        return 2;
    memset(priv + PG, 0x5a, PG); /* file page 2, copied */

    uint8_t *bm = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int b = map_files_open(bm, PG, O_RDWR);
    if (b < 0)
        return 2;
    munmap(bm, PG);
    if (ftruncate(b, 0) != 0 || write(b, BTEXT, 10) != 10 || fcntl(b, F_SETFL, O_APPEND) != 0)
        return 2;
    lseek(b, 3, SEEK_SET);

    wl_ready();
    while (!wl_triggered())
        usleep(20000);
    if (wl_tamper)
        a[100] ^= 1;

    struct stat sr, so, sb;
    fstat(r, &sr);
    fstat(o, &so);
    fstat(b, &sb);
    check_link(r, "R");
    check_link(o, "O");
    check_link(b, "B");
    WL_CHECK(sr.st_nlink == 0 && sr.st_size == 5 * PG + 100, "R: nlink %lu size %ld", (unsigned long)sr.st_nlink, (long)sr.st_size);
    WL_CHECK(so.st_ino == sr.st_ino && area_inode(a, 4 * PG) == sr.st_ino && area_inode(priv, 3 * PG) == sr.st_ino && area_inode(alias, 2 * PG) == sr.st_ino,
             "R, O and the areas are not one inode");
    WL_CHECK(sb.st_ino != sr.st_ino && sb.st_size == 10 && sb.st_nlink == 0, "B: inode %lu size %ld", (unsigned long)sb.st_ino, (long)sb.st_size);
    WL_CHECK(fcntl(r, F_GET_SEALS) == F_SEAL_SEAL, "R's seals 0x%x", fcntl(r, F_GET_SEALS));
    WL_CHECK((fcntl(r, F_GETFL) & (O_ACCMODE | O_APPEND)) == O_RDWR && fcntl(r, F_GETFD) == FD_CLOEXEC, "R's flags 0%o/%d", fcntl(r, F_GETFL), fcntl(r, F_GETFD));
    WL_CHECK((fcntl(o, F_GETFL) & O_ACCMODE) == O_RDONLY && fcntl(o, F_GETFD) == 0, "O's flags 0%o/%d", fcntl(o, F_GETFL), fcntl(o, F_GETFD));
    WL_CHECK((fcntl(b, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_RDWR | O_APPEND), "B's flags 0%o", fcntl(b, F_GETFL));
    WL_CHECK(lseek(r, 0, SEEK_CUR) == 5000 && lseek(o, 0, SEEK_CUR) == 123 && lseek(b, 0, SEEK_CUR) == 3, "offsets %ld %ld %ld",
             (long)lseek(r, 0, SEEK_CUR), (long)lseek(o, 0, SEEK_CUR), (long)lseek(b, 0, SEEK_CUR));

    long bad = wl_check_pattern(a, 4 * PG, 7);
    WL_CHECK(bad < 0, "A differs at byte %ld", bad);
    for (size_t i = 0; i < PG; i++) {
        if (priv[i] != a[PG + i]) { wl_fail("the private area's page 0 differs from the file at %zu", i); break; }
        if (priv[PG + i] != 0x5a) { wl_fail("the private area's copied page differs at %zu", i); break; }
        if (priv[2 * PG + i] != a[3 * PG + i]) { wl_fail("the private area's page 2 differs from the file at %zu", i); break; }
        if (alias[i] != a[2 * PG + i]) { wl_fail("the second shared area differs from A at %zu", i); break; }
    }
    char tail[17] = {0};
    WL_CHECK(pread(o, tail, 16, 5 * PG + 10) == 16 && memcmp(tail, "tail of the file", 16) == 0, "the tail beyond A reads '%s'", tail);

    /* One file: writes through R and through the second shared area. */
    WL_CHECK(pwrite(r, "via R", 5, PG + 8) == 5, "pwrite through R");
    WL_CHECK(memcmp(a + PG + 8, "via R", 5) == 0 && memcmp(priv + 8, "via R", 5) == 0, "a write through R is not seen in A and the private area");
    WL_CHECK(pwrite(r, "via R", 5, 2 * PG + 8) == 5 && priv[PG + 8] == 0x5a, "a write through R reached the private copy");
    memcpy(alias + 16, "via alias", 9);
    WL_CHECK(memcmp(a + 2 * PG + 16, "via alias", 9) == 0, "a write through the second shared area is not seen in A");
    char bb[16] = {0};
    WL_CHECK(pread(b, bb, 15, 0) == 10 && memcmp(bb, BTEXT, 10) == 0, "B reads '%s'", bb);
    WL_CHECK(write(b, "!", 1) == 1 && lseek(b, 0, SEEK_CUR) == 11, "B's write did not append");
    wl_finish("shmemfds", NULL);
}
