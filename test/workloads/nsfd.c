/*
 * nsfd <trigger>: fds of the process's own namespace files: fd 20 /proc/self/ns/net (O_RDONLY),
 * fd 21 /proc/self/ns/pid_for_children (O_RDONLY, close-on-exec), fd 22 /proc/self/ns/uts
 * (O_PATH). Checks after the trigger: each fd is still a file of the same namespace as the
 * entry it was opened from (the links match, the inode matches a new open of the entry), with
 * its flags and close-on-exec; setns(fd 20, CLONE_NEWNET) into its own namespace works.
 */
#include "common.h"

#include <fcntl.h>
#include <sched.h>

static const struct {
    int fd;
    const char *entry;
    int flags;
    int cloexec;
} NS[] = {
    { 20, "net", O_RDONLY, 0 },
    { 21, "pid_for_children", O_RDONLY, 1 },
    { 22, "uts", O_PATH, 0 },
};
#define N (sizeof NS / sizeof NS[0])

static void link_of(const char *p, char *out, size_t len)
{
    ssize_t l = readlink(p, out, len - 1);
    out[l > 0 ? l : 0] = 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    char before[N][128];
    for (size_t i = 0; i < N; i++) {
        char p[128];
        snprintf(p, sizeof p, "/proc/self/ns/%s", NS[i].entry);
        int fd = open(p, NS[i].flags | (NS[i].cloexec ? O_CLOEXEC : 0));
        if (fd < 0 || dup3(fd, NS[i].fd, NS[i].cloexec ? O_CLOEXEC : 0) != NS[i].fd)
            wl_fail("open %s: %s", p, strerror(errno));
        close(fd);
        snprintf(p, sizeof p, "/proc/self/fd/%d", NS[i].fd);
        link_of(p, before[i], sizeof before[i]);
    }
    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);
    if (wl_tamper) {
        close(22);
        open("/proc/self/ns/net", O_PATH);
    }
    for (size_t i = 0; i < N; i++) {
        char p[128], now[128], entry[128];
        snprintf(p, sizeof p, "/proc/self/fd/%d", NS[i].fd);
        link_of(p, now, sizeof now);
        snprintf(p, sizeof p, "/proc/self/ns/%s", NS[i].entry);
        link_of(p, entry, sizeof entry);
        WL_CHECK(strcmp(now, before[i]) == 0 && strcmp(now, entry) == 0, "fd %d -> '%s', was '%s', /proc/self/ns/%s is '%s'", NS[i].fd, now,
                 before[i], NS[i].entry, entry);
        struct stat a, b;
        WL_CHECK(fstat(NS[i].fd, &a) == 0 && stat(p, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev,
                 "fd %d is not the namespace of /proc/self/ns/%s", NS[i].fd, NS[i].entry);
        int fl = fcntl(NS[i].fd, F_GETFL), fdfl = fcntl(NS[i].fd, F_GETFD);
        WL_CHECK((fl & (O_ACCMODE | O_PATH)) == (NS[i].flags & (O_ACCMODE | O_PATH)), "fd %d: flags %#o", NS[i].fd, fl);
        WL_CHECK(!!(fdfl & FD_CLOEXEC) == NS[i].cloexec, "fd %d: close-on-exec %d", NS[i].fd, !!(fdfl & FD_CLOEXEC));
    }
    WL_CHECK(setns(20, CLONE_NEWNET) == 0, "setns(fd 20): %s", strerror(errno));
    wl_finish("nsfd", NULL);
}
