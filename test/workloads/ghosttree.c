/*
 * ghosttree <trigger> <dir>: one deleted file open in three processes of a tree, each through an
 * open file description of its own.
 *
 *   R  fd 20: O_RDWR, offset 100 (it wrote the first 100 bytes)
 *   +- C  fd 21: its own O_RDWR description, offset 50
 *      +- G  fd 22: O_RDONLY, opened by C through /proc/self/fd/21 (so, a third description), offset 10
 *
 * The file was made in <dir> and unlinked before the children were forked; each process closed the
 * others' fds. After the trigger each checks its fd's flags, offset, nlink 0 and the first 100
 * bytes; then C writes a marker at offset 8192 through its fd, G waits until it reads that marker
 * through its own (at most 3 s), C reaps G, R reaps C and reads the marker through its fd: one
 * file for the three, not three copies. A child exits 0 or 10 + the failed check; R prints the
 * verdict. CPT_TAMPER=1 makes C write its marker to a new file instead.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/wait.h>

static const char MARK[] = "written by C after the restart";

/* 0, or 1 flags, 2 offset, 3 nlink, 4 contents. */
static int check_fd(int fd, int accmode, off_t pos)
{
    if ((fcntl(fd, F_GETFL) & O_ACCMODE) != accmode)
        return 1;
    if (lseek(fd, 0, SEEK_CUR) != pos)
        return 2;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_nlink != 0)
        return 3;
    char b[100];
    if (pread(fd, b, sizeof b, 0) != sizeof b)
        return 4;
    for (int i = 0; i < 100; i++)
        if (b[i] != (char)('a' + i % 26))
            return 4;
    return 0;
}

static int has_mark(int fd)
{
    char b[sizeof MARK];
    return pread(fd, b, sizeof b, 8192) == (ssize_t)sizeof b && memcmp(b, MARK, sizeof b) == 0;
}

static void wait_trigger(void)
{
    while (!wl_triggered())
        usleep(10000);
}

static void grandchild(void)
{
    wait_trigger();
    int r = check_fd(22, O_RDONLY, 10);
    for (int i = 0; !r && i < 300 && !has_mark(22); i++)
        usleep(10000);
    if (!r && !has_mark(22))
        r = 5;
    _exit(r ? 10 + r : 0);
}

static void child(const char *path, int ready)
{
    close(20);
    int d = open("/proc/self/fd/21", O_RDONLY | O_CLOEXEC);
    if (d < 0 || dup2(d, 22) != 22 || lseek(22, 10, SEEK_SET) != 10)
        _exit(9);
    close(d);
    pid_t g = fork();
    if (g == 0) {
        close(21);
        close(ready);
        grandchild();
    }
    close(22);
    char one = 1;
    if (g < 0 || write(ready, &one, 1) != 1)
        _exit(8);
    close(ready);
    wait_trigger();
    int r = check_fd(21, O_RDWR, 50);
    int w = 21;
    if (wl_tamper) {
        char other[4200];
        snprintf(other, sizeof other, "%s.other", path);
        w = open(other, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    }
    if (!r && pwrite(w, MARK, sizeof MARK, 8192) != (ssize_t)sizeof MARK)
        r = 6;
    int st = 0;
    if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        r = r ? r : 20 + (WIFEXITED(st) ? WEXITSTATUS(st) : 99) % 80;
    _exit(r ? 10 + r : 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir>");
    char path[4200];
    snprintf(path, sizeof path, "%s/ghosttree.data", argv[2]);
    int a = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int b = open(path, O_RDWR | O_CLOEXEC);
    WL_CHECK(a >= 0 && b >= 0 && dup2(a, 20) == 20 && dup2(b, 21) == 21, "cannot open %s: %s", path, strerror(errno));
    close(a);
    close(b);
    char data[100];
    for (int i = 0; i < 100; i++)
        data[i] = (char)('a' + i % 26);
    WL_CHECK(write(20, data, sizeof data) == sizeof data && lseek(21, 50, SEEK_SET) == 50, "cannot write %s", path);
    WL_CHECK(unlink(path) == 0, "unlink: %s", strerror(errno));
    int fds[2];
    WL_CHECK(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    pid_t c = fork();
    if (c == 0) {
        close(fds[0]);
        child(path, fds[1]);
    }
    close(fds[1]);
    close(21);
    char one = 0;
    WL_CHECK(c > 0 && read(fds[0], &one, 1) == 1, "the children were not set up");
    close(fds[0]);
    wl_ready();
    wait_trigger();
    int r = check_fd(20, O_RDWR, 100);
    WL_CHECK(r == 0, "fd 20: check %d failed (1 flags, 2 offset, 3 nlink, 4 contents)", r);
    int st = 0;
    WL_CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the children failed their checks (status 0x%x: 10 + 1 flags, 2 offset, 3 nlink, 4 contents, 5 the grandchild never saw the marker, 6 write; 20 + the grandchild's code)", st);
    WL_CHECK(has_mark(20), "the marker C wrote through its description is not in the file through R's");
    wl_finish("ghosttree", NULL);
}
