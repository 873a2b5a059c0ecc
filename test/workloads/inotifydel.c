/*
 * inotify: a watch on a file deleted while the process holds it open.
 *   fd 30  <dir>/watched/file, written, then unlinked (nlink 0), still open for writing
 *   fd 40  inotify (IN_NONBLOCK), watch 1 on <dir>/watched (IN_CREATE | IN_DELETE), watch 2 on the file
 *          through its fd (IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF); the events of the unlink
 *          read off before READY
 * After the trigger: nothing queued; a write to fd 30 gives IN_MODIFY on watch 2, its close
 * IN_CLOSE_WRITE on watch 2, then (the inode gone) IN_DELETE_SELF and IN_IGNORED on watch 2; a new
 * file in <dir>/watched gives IN_CREATE on watch 1; the file's contents were kept.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/inotify.h>

static int drain(int fd, uint32_t *masks, int *wds, int max)
{
    char buf[4096] __attribute__((aligned(8)));
    int n = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            return n;
        for (char *p = buf; p < buf + r;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (n < max) {
                masks[n] = e->mask;
                wds[n] = e->wd;
            }
            n++;
            p += sizeof *e + e->len;
        }
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> <dir>");
    char dir[4000], path[4096];
    snprintf(dir, sizeof dir, "%s/watched", argv[2]);
    if (mkdir(dir, 0700) != 0) {
        printf("FAIL inotifydel: mkdir %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/file", dir);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
    int in = inotify_init1(IN_NONBLOCK);
    if (f < 0 || in < 0 || dup2(f, 30) != 30 || dup2(in, 40) != 40) {
        printf("FAIL inotifydel: setup: %s\n", strerror(errno));
        return 1;
    }
    close(f);
    close(in);
    (void)!write(30, "kept bytes", 10);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/30");
    int w1 = inotify_add_watch(40, dir, IN_CREATE | IN_DELETE);
    int w2 = inotify_add_watch(40, self, IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF);
    if (w1 != 1 || w2 != 2 || unlink(path) != 0) {
        printf("FAIL inotifydel: watches %d %d, unlink: %s\n", w1, w2, strerror(errno));
        return 1;
    }
    uint32_t m[16];
    int wd[16];
    int n = drain(40, m, wd, 16);
    if (n != 1 || !(m[0] & IN_DELETE) || wd[0] != 1) {
        printf("FAIL inotifydel: %d events after the unlink (first 0x%x on %d)\n", n, n ? m[0] : 0, n ? wd[0] : 0);
        return 1;
    }
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    if (wl_tamper)
        inotify_rm_watch(40, 2);

    n = drain(40, m, wd, 16);
    WL_CHECK(n == 0, "%d events queued before anything happened (first 0x%x on %d)", n, n ? m[0] : 0, n ? wd[0] : 0);
    struct stat st;
    WL_CHECK(fstat(30, &st) == 0 && st.st_nlink == 0 && st.st_size == 10 && (st.st_mode & 0777) == 0640, "fd 30: nlink %lu size %ld mode %o", (unsigned long)st.st_nlink,
             (long)st.st_size, st.st_mode & 0777);
    char got[11] = {0};
    WL_CHECK(pread(30, got, 10, 0) == 10 && memcmp(got, "kept bytes", 10) == 0, "fd 30 holds '%s'", got);
    (void)!write(30, "x", 1);
    n = drain(40, m, wd, 16);
    WL_CHECK(n == 1 && m[0] == IN_MODIFY && wd[0] == 2, "after a write: %d events (first 0x%x on %d), expected IN_MODIFY on 2", n, n ? m[0] : 0, n ? wd[0] : 0);
    close(30);
    n = drain(40, m, wd, 16);
    WL_CHECK(n == 3 && m[0] == IN_CLOSE_WRITE && wd[0] == 2 && m[1] == IN_DELETE_SELF && wd[1] == 2 && m[2] == IN_IGNORED && wd[2] == 2,
             "after the close: %d events (0x%x on %d, 0x%x on %d, 0x%x on %d), expected IN_CLOSE_WRITE, IN_DELETE_SELF, IN_IGNORED on 2", n, m[0], wd[0], m[1], wd[1],
             m[2], wd[2]);
    snprintf(path, sizeof path, "%s/new-file", dir);
    int g = open(path, O_WRONLY | O_CREAT, 0600);
    close(g);
    unlink(path);
    n = drain(40, m, wd, 16);
    WL_CHECK(n == 2 && m[0] == IN_CREATE && wd[0] == 1 && m[1] == IN_DELETE && wd[1] == 1, "a new file: %d events (0x%x on %d)", n, m[0], wd[0]);
    rmdir(dir);
    wl_finish("inotifydel", NULL);
}
