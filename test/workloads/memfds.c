/*
 * memfds <trigger> [--as UID:GID]: memfds as fds and as mappings, held by this process only.
 *   fd 10  memfd "cpt-a" (MFD_CLOEXEC | MFD_ALLOW_SEALING): 1 MiB with data at 0 (100000 bytes)
 *          and at 512 KiB (5000 bytes), holes between; mode 0640; seals SHRINK|GROW; offset 1234
 *   fd 11  a second description of it (opened through /proc/self/fd/10, O_RDONLY), offset 77
 *   fd 12  memfd "cpt-b" (no sealing allowed), 3 pages, also mapped shared read-write and
 *          written through the mapping
 *   --     memfd "cpt-c", 4 pages, only mapped (shared; its fd closed)
 *   fd 15  memfd "cpt-d", 2 pages, mapped private: page 0 changed in the mapping (a private copy)
 *   fd 13  memfd "cpt-e": sealed WRITE|SEAL (writes refused)
 *   fd 14  memfd "cpt-f" with MFD_NOEXEC_SEAL where the kernel has it
 *   fd 16  memfd "cpt-x": a "#!/bin/true" script, also mapped shared: executed (execveat) by a
 *          child after the trigger, which a restored fd that counts as a writer would refuse
 * After the trigger: names (/proc/self/fd links and /proc/self/maps), sizes, contents with their
 * holes (SEEK_DATA/SEEK_HOLE), modes, seals, offsets, close-on-exec, one inode behind fds 10/11
 * and behind fd 12 and its mapping, writes through fd 12 seen in the mapping, writes through
 * fd 15 seen in d's unchanged page but not in its private copy. CPT_TAMPER=1 changes a byte of a.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 8U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

#define PG 4096
#define A_SIZE (1 << 20)
#define A_RUN2 (512 * 1024)

static int mfd(const char *name, unsigned flags, int at)
{
    int fd = (int)syscall(SYS_memfd_create, name, flags);
    if (fd < 0)
        return -1;
    if (at >= 0 && fd != at) {
        if (dup3(fd, at, (flags & MFD_CLOEXEC) ? O_CLOEXEC : 0) != at)
            return -1;
        close(fd);
        fd = at;
    }
    return fd;
}

static void fill_at(int fd, off_t off, size_t n, uint64_t seed)
{
    static uint8_t b[100000];
    wl_fill_pattern(b, n, seed);
    if (pwrite(fd, b, n, off) != (ssize_t)n)
        wl_fail("pwrite fd %d: %s", fd, strerror(errno));
}

static long check_at(int fd, off_t off, size_t n, uint64_t seed)
{
    static uint8_t b[100000];
    if (pread(fd, b, n, off) != (ssize_t)n)
        return -2;
    return wl_check_pattern(b, n, seed);
}

static void expect_link(int fd, const char *name)
{
    char p[64], l[256], want[256];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, l, sizeof l - 1);
    l[n > 0 ? n : 0] = 0;
    snprintf(want, sizeof want, "/memfd:%s (deleted)", name);
    WL_CHECK(strcmp(l, want) == 0, "fd %d is %s, not %s", fd, l, want);
}

static int maps_has(void *addr, const char *name, char kind)
{
    char line[512], want[128];
    snprintf(want, sizeof want, "/memfd:%s (deleted)", name);
    FILE *f = fopen("/proc/self/maps", "r");
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s;
        char perms[8];
        if (sscanf(line, "%lx-%*x %7s", &s, perms) == 2 && s == (unsigned long)addr)
            found = strstr(line, want) != NULL && perms[3] == kind;
    }
    if (f)
        fclose(f);
    return found;
}

/* The inode of the file mapped at addr, from /proc/self/maps (map_files needs a capability). */
static ino_t map_ino(void *addr, size_t len)
{
    (void)len;
    char line[512];
    unsigned long ino = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, i;
        if (sscanf(line, "%lx-%*x %*s %*x %*x:%*x %lu", &s, &i) == 2 && s == (unsigned long)addr)
            ino = i;
    }
    if (f)
        fclose(f);
    return (ino_t)ino;
}

static ino_t fd_ino(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--as UID:GID]");
    wl_as_user(argc, argv);

    if (mfd("cpt-a", MFD_CLOEXEC | MFD_ALLOW_SEALING, 10) != 10 || ftruncate(10, A_SIZE) != 0)
        wl_fail("memfd a: %s", strerror(errno));
    fill_at(10, 0, 100000, 1);
    fill_at(10, A_RUN2, 5000, 2);
    fchmod(10, 0640);
    if (fcntl(10, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
        wl_fail("seal a: %s", strerror(errno));
    lseek(10, 1234, SEEK_SET);
    int r = open("/proc/self/fd/10", O_RDONLY);
    if (r < 0 || dup2(r, 11) != 11)
        wl_fail("second description of a: %s", strerror(errno));
    close(r);
    lseek(11, 77, SEEK_SET);

    if (mfd("cpt-b", 0, 12) != 12 || ftruncate(12, 3 * PG) != 0)
        wl_fail("memfd b: %s", strerror(errno));
    uint8_t *b = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, 12, 0);
    if (b == MAP_FAILED)
        wl_fail("map b: %s", strerror(errno));
    else
        wl_fill_pattern(b, 3 * PG, 3);

    int c_fd = mfd("cpt-c", 0, -1);
    uint8_t *c = MAP_FAILED;
    if (c_fd < 0 || ftruncate(c_fd, 4 * PG) != 0 || (c = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, c_fd, 0)) == MAP_FAILED)
        wl_fail("memfd c: %s", strerror(errno));
    else
        wl_fill_pattern(c, 4 * PG, 4);
    close(c_fd);

    uint8_t *d = MAP_FAILED;
    if (mfd("cpt-d", 0, 15) != 15 || ftruncate(15, 2 * PG) != 0)
        wl_fail("memfd d: %s", strerror(errno));
    fill_at(15, 0, 2 * PG, 5);
    if ((d = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, 15, 0)) == MAP_FAILED)
        wl_fail("map d: %s", strerror(errno));
    else
        wl_fill_pattern(d, PG, 6); /* page 0 becomes a private copy */

    if (mfd("cpt-e", MFD_ALLOW_SEALING, 13) != 13)
        wl_fail("memfd e: %s", strerror(errno));
    fill_at(13, 0, 300, 7);
    if (fcntl(13, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        wl_fail("seal e: %s", strerror(errno));

    int noexec = mfd("cpt-f", MFD_NOEXEC_SEAL, 14) == 14;
    int f_seals = noexec ? fcntl(14, F_GET_SEALS) : -1;
    mode_t f_mode = 0;
    if (noexec) {
        struct stat st;
        fstat(14, &st);
        f_mode = st.st_mode & 07777;
    }

    static const char script[] = "#!/bin/true\n";
    void *x = MAP_FAILED;
    if (mfd("cpt-x", 0, 16) != 16 || write(16, script, sizeof script - 1) != (ssize_t)sizeof script - 1 ||
        (x = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, 16, 0)) == MAP_FAILED)
        wl_fail("memfd x: %s", strerror(errno));

    ino_t a_ino = fd_ino(10), b_ino = fd_ino(12);

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        (void)!pwrite(10, "\xff", 1, 99);

    /* a */
    expect_link(10, "cpt-a");
    expect_link(11, "cpt-a");
    struct stat st;
    WL_CHECK(lseek(10, 0, SEEK_CUR) == 1234 && lseek(11, 0, SEEK_CUR) == 77, "offsets %ld %ld", (long)lseek(10, 0, SEEK_CUR), (long)lseek(11, 0, SEEK_CUR));
    WL_CHECK(fstat(10, &st) == 0 && st.st_size == A_SIZE && (st.st_mode & 07777) == 0640, "a: size %ld mode 0%o", (long)st.st_size, st.st_mode & 07777);
    WL_CHECK(fd_ino(10) == fd_ino(11), "fds 10 and 11 are not one memfd");
    WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0, 10, 11) != 0, "fds 10 and 11 share a description");
    WL_CHECK(check_at(10, 0, 100000, 1) == -1 && check_at(10, A_RUN2, 5000, 2) == -1, "a's data differs");
    WL_CHECK(lseek(10, 0, SEEK_DATA) == 0 && lseek(10, 0, SEEK_HOLE) >= 100000 && lseek(10, 0, SEEK_HOLE) < A_RUN2, "a's first hole moved (%ld)", (long)lseek(10, 0, SEEK_HOLE));
    WL_CHECK(fcntl(10, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "a's seals 0x%x", fcntl(10, F_GET_SEALS));
    WL_CHECK(fcntl(10, F_GETFD) == FD_CLOEXEC && fcntl(11, F_GETFD) == 0, "fd flags %d %d", fcntl(10, F_GETFD), fcntl(11, F_GETFD));
    WL_CHECK((fcntl(10, F_GETFL) & O_ACCMODE) == O_RDWR && (fcntl(11, F_GETFL) & O_ACCMODE) == O_RDONLY, "access modes");
    WL_CHECK(ftruncate(10, 10) != 0 && errno == EPERM, "a can shrink");
    WL_CHECK(fcntl(10, F_ADD_SEALS, F_SEAL_WRITE) == 0, "a cannot take another seal");

    /* b: fd and mapping, one memfd */
    expect_link(12, "cpt-b");
    WL_CHECK(maps_has(b, "cpt-b", 's'), "b is not mapped shared as /memfd:cpt-b");
    WL_CHECK(map_ino(b, 3 * PG) == fd_ino(12), "b's mapping and fd 12 are not one memfd");
    WL_CHECK(wl_check_pattern(b, 3 * PG, 3) < 0 && check_at(12, 0, 3 * PG, 3) == -1, "b's data differs");
    WL_CHECK(fcntl(12, F_GET_SEALS) == F_SEAL_SEAL, "b's seals 0x%x", fcntl(12, F_GET_SEALS));
    (void)!pwrite(12, "zz", 2, PG + 5);
    WL_CHECK(b[PG + 5] == 'z' && b[PG + 6] == 'z', "a write to fd 12 is not seen in b's mapping");

    /* c: a mapping only */
    WL_CHECK(maps_has(c, "cpt-c", 's') && wl_check_pattern(c, 4 * PG, 4) < 0, "c differs");
    WL_CHECK(map_ino(c, 4 * PG) != 0 && map_ino(c, 4 * PG) != b_ino && map_ino(c, 4 * PG) != a_ino, "c is not a memfd of its own");

    /* d: private mapping */
    WL_CHECK(maps_has(d, "cpt-d", 'p'), "d is not mapped private");
    WL_CHECK(wl_check_pattern(d, PG, 6) < 0, "d's private page differs");
    WL_CHECK(check_at(15, 0, 2 * PG, 5) == -1, "d's file differs");
    (void)!pwrite(15, "yy", 2, 0);
    (void)!pwrite(15, "xx", 2, PG);
    WL_CHECK(d[0] != 'y' && d[PG] == 'x' && d[PG + 1] == 'x', "d's pages: copy %c, shared %c", d[0], d[PG]);

    /* e: sealed */
    expect_link(13, "cpt-e");
    WL_CHECK(fcntl(13, F_GET_SEALS) == (F_SEAL_WRITE | F_SEAL_SEAL), "e's seals 0x%x", fcntl(13, F_GET_SEALS));
    WL_CHECK(pwrite(13, "q", 1, 0) < 0 && errno == EPERM, "e can be written");
    WL_CHECK(check_at(13, 0, 300, 7) == -1, "e's data differs");

    /* f: noexec */
    if (noexec) {
        WL_CHECK(fcntl(14, F_GET_SEALS) == f_seals && (f_seals & F_SEAL_EXEC), "f's seals 0x%x", fcntl(14, F_GET_SEALS));
        WL_CHECK(fstat(14, &st) == 0 && (st.st_mode & 07777) == f_mode, "f's mode 0%o, not 0%o", st.st_mode & 07777, f_mode);
        WL_CHECK(fchmod(14, 0755) != 0, "f can be made executable");
    }
    /* x: executable through its fd (no writer but the mapping) */
    WL_CHECK(map_ino(x, PG) == fd_ino(16), "x's mapping and fd 16 are not one memfd");
    pid_t child = fork();
    if (child == 0) {
        char *const av[] = { "true", NULL }, *const ev[] = { NULL };
        syscall(SYS_execveat, 16, "", av, ev, AT_EMPTY_PATH);
        _exit(errno == ETXTBSY ? 3 : 4);
    }
    int status = -1;
    waitpid(child, &status, 0);
    WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "execveat of memfd x: exit status %d (3: ETXTBSY)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    wl_finish("memfds", noexec ? NULL : "no MFD_NOEXEC_SEAL");
}
