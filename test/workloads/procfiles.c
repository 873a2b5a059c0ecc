/*
 * procfiles <trigger>: files of /proc directories of processes of the tree, held open.
 *
 *   R  holds fd 40 /proc/self/maps (read partway: offset > 0), fd 41 /proc/C/stat, fd 42
 *   |  /proc/C/status (O_NONBLOCK, close-on-exec) and fd 43 a dup of it (one description), fd 44
 *   |  /proc/C/cmdline read to its end
 *   +- C  holds fd 40 /proc/R/status (its parent's)
 *
 * After the trigger each checks, for each of its fds: the link names the same path, flags and
 * close-on-exec, the offset, the file is the one its path names now (device and inode: the /proc
 * file of the process that has the pid now, not a stale one), its contents name the right
 * process, and (R) a read through fd 42 moves fd 43's offset. C exits 0 or 10 + the failed
 * check; R reaps it and prints the verdict. CPT_TAMPER=1 makes R open /proc/self/maps again at
 * offset 0 before its checks.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/wait.h>

struct held {
    int fd;
    char path[64];
    int flags; /* O_ACCMODE and status flags */
    int cloexec;
    off_t pos;
};

/* 0, or 1 + which property of the fd differs. */
static int check_held(const struct held *h)
{
    char p[64], link[128];
    snprintf(p, sizeof p, "/proc/self/fd/%d", h->fd);
    ssize_t n = readlink(p, link, sizeof link - 1);
    if (n < 0)
        return 1;
    link[n] = 0;
    if (strcmp(link, h->path) != 0)
        return 2;
    int fl = fcntl(h->fd, F_GETFL);
    if ((fl & (O_ACCMODE | O_NONBLOCK)) != h->flags)
        return 3;
    if (((fcntl(h->fd, F_GETFD) & FD_CLOEXEC) != 0) != h->cloexec)
        return 4;
    if (lseek(h->fd, 0, SEEK_CUR) != h->pos)
        return 5;
    struct stat a, b;
    if (fstat(h->fd, &a) != 0 || stat(h->path, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return 6;
    return 0;
}

static int hold(struct held *h, int fd, const char *path, int flags, int cloexec, size_t skip)
{
    int f = open(path, flags | (cloexec ? O_CLOEXEC : 0));
    if (f < 0 || dup2(f, fd) != fd)
        return -1;
    if (f != fd)
        close(f);
    fcntl(fd, F_SETFD, cloexec ? FD_CLOEXEC : 0);
    char b[4096];
    size_t done = 0;
    while (done < skip) {
        ssize_t n = read(fd, b, skip - done < sizeof b ? skip - done : sizeof b);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    h->fd = fd;
    snprintf(h->path, sizeof h->path, "%s", path);
    h->flags = flags & (O_ACCMODE | O_NONBLOCK);
    h->cloexec = cloexec;
    h->pos = lseek(fd, 0, SEEK_CUR);
    return 0;
}

/* The first number of the whole contents of fd from offset 0 (pread: the offset stays), or -1. */
static long first_number_after(int fd, const char *key)
{
    char b[8192];
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    if (n <= 0)
        return -1;
    b[n] = 0;
    const char *at = key ? strstr(b, key) : b;
    return at ? strtol(at + (key ? strlen(key) : 0), NULL, 10) : -1;
}

static void child(pid_t root)
{
    char path[64];
    struct held h;
    snprintf(path, sizeof path, "/proc/%d/status", (int)root);
    if (hold(&h, 40, path, O_RDONLY, 0, 10) != 0)
        _exit(9);
    char mark[4200];
    snprintf(mark, sizeof mark, "%s.child", wl_trigger_path);
    int m = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (m >= 0)
        close(m);
    while (!wl_triggered())
        usleep(10000);
    int r = check_held(&h);
    if (!r && first_number_after(40, "\nPid:\t") != root)
        r = 7;
    _exit(r ? 10 + r : 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    pid_t root = getpid();
    pid_t c = fork();
    if (c == 0)
        child(root);
    char mark[4200];
    struct stat st;
    snprintf(mark, sizeof mark, "%s.child", wl_trigger_path);
    while (stat(mark, &st) != 0)
        usleep(10000);

    char p[5][64];
    snprintf(p[0], sizeof p[0], "/proc/%d/maps", (int)root);
    snprintf(p[1], sizeof p[1], "/proc/%d/stat", (int)c);
    snprintf(p[2], sizeof p[2], "/proc/%d/status", (int)c);
    snprintf(p[4], sizeof p[4], "/proc/%d/cmdline", (int)c);
    struct held h[5];
    int ok = hold(&h[0], 40, "/proc/self/maps", O_RDONLY, 0, 100) == 0 && hold(&h[1], 41, p[1], O_RDONLY, 0, 0) == 0 &&
             hold(&h[2], 42, p[2], O_RDONLY | O_NONBLOCK, 1, 5) == 0 && hold(&h[4], 44, p[4], O_RDONLY, 0, 1 << 20) == 0;
    WL_CHECK(ok, "cannot open the /proc files: %s", strerror(errno));
    snprintf(h[0].path, sizeof h[0].path, "%s", p[0]); /* readlink names the process */
    h[3] = h[2];
    h[3].fd = 43;
    h[3].cloexec = 0;
    WL_CHECK(dup2(42, 43) == 43, "dup2: %s", strerror(errno));
    WL_CHECK(h[0].pos > 0 && h[4].pos > 0, "offsets %ld %ld", (long)h[0].pos, (long)h[4].pos);
    wl_ready();
    while (!wl_triggered())
        usleep(10000);
    if (wl_tamper) {
        int f = open("/proc/self/maps", O_RDONLY);
        dup2(f, 40);
        close(f);
    }
    for (int i = 0; i < 5; i++) {
        int r = check_held(&h[i]);
        WL_CHECK(r == 0, "fd %d (%s): check %d failed", h[i].fd, h[i].path, r);
    }
    WL_CHECK(first_number_after(41, NULL) == c, "fd 41 does not show process %d", (int)c);
    WL_CHECK(first_number_after(42, "\nPid:\t") == c, "fd 42 does not show process %d", (int)c);
    char b[4];
    WL_CHECK(read(42, b, sizeof b) == sizeof b && lseek(43, 0, SEEK_CUR) == h[2].pos + (off_t)sizeof b, "fds 42 and 43 do not share an offset");
    int s = 0;
    WL_CHECK(waitpid(c, &s, 0) == c && WIFEXITED(s) && WEXITSTATUS(s) == 0, "the child failed its checks (status 0x%x: 10 + 1 link, 2 path, 3 flags, 4 cloexec, 5 offset, 6 inode, 7 contents)", s);
    wl_finish("procfiles", NULL);
}
