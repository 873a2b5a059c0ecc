/*
 * memfdshare <trigger>: a memfd held by a parent and its child through different open file
 * descriptions: the parent's read-write one from memfd_create (offset 4096), the child's a
 * read-only one it opened through /proc/self/fd (offset 777); 64 KiB of a pattern with a hole.
 * After the trigger the parent writes a byte at offset 100 and tells the child through a pipe;
 * the child checks that it sees the byte (one memfd, not a copy), the pattern, its own offset and
 * flags, and exits 0 or a failure number; the parent checks its own offset, flags, the name and
 * the child's status. CPT_TAMPER=1 makes the parent write another byte.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define SIZE (64 * 1024)

static int pattern_ok(int fd, int skip_at)
{
    static uint8_t b[SIZE];
    if (pread(fd, b, SIZE, 0) != SIZE)
        return 0;
    for (int i = 0; i < SIZE; i++) {
        uint8_t want = (i >= 8192 && i < 16384) ? 0 : wl_pat8(7, (uint64_t)i);
        if (i != skip_at && b[i] != want)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    int fd = (int)syscall(SYS_memfd_create, "cpt-shared", 0);
    int go[2];
    if (fd < 0 || pipe(go)) {
        WL_CHECK(0, "memfd_create or pipe: %s", strerror(errno));
        wl_finish("memfdshare", NULL);
    }
    static uint8_t b[SIZE];
    for (int i = 0; i < SIZE; i++)
        b[i] = (i >= 8192 && i < 16384) ? 0 : wl_pat8(7, (uint64_t)i);
    WL_CHECK(pwrite(fd, b, 8192, 0) == 8192 && pwrite(fd, b + 16384, SIZE - 16384, 16384) == SIZE - 16384, "pwrite");
    lseek(fd, 4096, SEEK_SET);
    pid_t c = fork();
    if (c == 0) {
        close(go[1]);
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int mine = open(path, O_RDONLY);
        close(fd);
        if (mine < 0)
            _exit(10);
        lseek(mine, 777, SEEK_SET);
        char g;
        if (read(go[0], &g, 1) != 1)
            _exit(11);
        uint8_t at100;
        if (pread(mine, &at100, 1, 100) != 1 || at100 != 'Z')
            _exit(12); /* not one memfd with the parent's */
        if (!pattern_ok(mine, 100))
            _exit(13);
        if (lseek(mine, 0, SEEK_CUR) != 777)
            _exit(14);
        if ((fcntl(mine, F_GETFL) & O_ACCMODE) != O_RDONLY || write(mine, "x", 1) != -1)
            _exit(15);
        _exit(0);
    }
    close(go[0]);
    wl_ready();
    while (!wl_triggered()) {
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    }
    WL_CHECK(pwrite(fd, wl_tamper ? "Y" : "Z", 1, 100) == 1, "pwrite at 100: %s", strerror(errno));
    WL_CHECK(write(go[1], "g", 1) == 1, "write to the child: %s", strerror(errno));
    int status = -1;
    WL_CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x (12: the memfd is not shared)", status);
    WL_CHECK(lseek(fd, 0, SEEK_CUR) == 4096, "offset %ld", (long)lseek(fd, 0, SEEK_CUR));
    WL_CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, "flags");
    char link[128] = { 0 }, path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    WL_CHECK(readlink(path, link, sizeof link - 1) > 0 && strncmp(link, "/memfd:cpt-shared", 17) == 0, "name %s", link);
    WL_CHECK(pattern_ok(fd, 100), "the pattern differs");
    wl_finish("memfdshare", NULL);
}
