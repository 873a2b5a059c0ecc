/*
 * pagesfds: megabytes of private memory, and an fd table with gaps.
 *
 *   pagesfds <trigger> <MiB>
 *
 * Sets up <MiB> of private anonymous memory with a value in every 8-byte word that differs from
 * every other, and /dev/null at fds 5 (read-only) and 9 (write-only), so that 3, 4, 6, 7 and 8 are
 * free below its highest fd. After the trigger it checks every word, and that its fds are exactly
 * 0, 1, 2, 5 and 9, each what it was: a descriptor that a restart used and left behind (the lowest
 * free number is 3) shows up here. CPT_TAMPER=1 changes one word before the check.
 */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const int WANT[] = {0, 1, 2, 5, 9};
#define NWANT (int)(sizeof WANT / sizeof WANT[0])

static void check_fds(dev_t null_rdev)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        wl_fail("opendir /proc/self/fd: %s", strerror(errno));
        return;
    }
    int seen[NWANT] = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        int k = 0;
        while (k < NWANT && WANT[k] != fd)
            k++;
        if (k == NWANT)
            wl_fail("fd %d is open, and was not", fd);
        else
            seen[k] = 1;
    }
    closedir(d);
    for (int k = 0; k < NWANT; k++)
        WL_CHECK(seen[k], "fd %d is gone", WANT[k]);
    struct stat st;
    for (int k = 3; k < NWANT; k++) {
        int fd = WANT[k];
        if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != null_rdev)
            wl_fail("fd %d is not /dev/null", fd);
    }
    WL_CHECK((fcntl(5, F_GETFL) & O_ACCMODE) == O_RDONLY, "fd 5 is not read-only");
    WL_CHECK((fcntl(9, F_GETFL) & O_ACCMODE) == O_WRONLY, "fd 9 is not write-only");
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <MiB>");
    size_t words = (size_t)strtoul(argv[2], NULL, 10) * 1024 * 1024 / 8;
    const uint64_t seed = 0xfd5eed;
    uint64_t *mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || words == 0) {
        perror("mmap");
        return 2;
    }
    for (size_t i = 0; i < words; i++)
        mem[i] = wl_pat64(seed, i);
    for (int fd = 3; fd < 16; fd++)
        close(fd);
    int r = open("/dev/null", O_RDONLY), w = open("/dev/null", O_WRONLY);
    if (r < 0 || w < 0 || dup2(r, 5) != 5 || dup2(w, 9) != 9) {
        perror("/dev/null");
        return 2;
    }
    close(r);
    close(w);
    struct stat nst;
    if (stat("/dev/null", &nst) != 0) {
        perror("stat /dev/null");
        return 2;
    }

    wl_ready();
    while (!wl_triggered())
        usleep(20000);

    if (wl_tamper)
        mem[words / 2] ^= 1;
    size_t bad = 0;
    for (size_t i = 0; i < words; i++)
        if (mem[i] != wl_pat64(seed, i) && bad++ == 0)
            wl_fail("word %zu of the memory is wrong", i);
    if (bad > 1)
        wl_fail("%zu words wrong in all", bad);
    check_fds(nst.st_rdev);
    wl_finish("pagesfds", NULL);
}
