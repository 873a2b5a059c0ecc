/*
 * fanotify <trigger> <dir>: fanotify groups with no marks. As root:
 *   fd 40  fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_FID,
 *          O_RDONLY | O_LARGEFILE), close-on-exec cleared
 *   fd 41  fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDWR), close-on-exec
 *   fd 42  dup of fd 40 (one open file description)
 * After the trigger: fdinfo (`fanotify flags:` and `event-flags:`, no marks), F_GETFL / F_GETFD,
 * kcmp of 40 and 42; then the groups work: fd 40 marks <dir> for FAN_CREATE and reports a file
 * made there, fd 41 marks a file for FAN_CLOSE_WRITE and hands an O_RDWR fd of it with the event.
 * CPT_TAMPER=1 puts a group of another class at fd 41 first.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/fanotify.h>

/* The kernel opens every file with O_LARGEFILE on x86-64 (0100000), which glibc defines as 0 there. */
#define KERNEL_O_LARGEFILE 0100000

static void group_at(unsigned flags, unsigned event_flags, int want, int cloexec)
{
    int fd = fanotify_init(flags, event_flags);
    if (fd < 0 || dup3(fd, want, cloexec ? O_CLOEXEC : 0) != want)
        wl_fail("fanotify_init(0x%x) at %d: %s", flags, want, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* The `fanotify flags:` and `event-flags:` of an fd, and how many mark lines follow. */
static int fdinfo_of(int fd, unsigned *flags, unsigned *event_flags)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "fanotify flags:");
    *flags = *event_flags = 0xffffffff;
    if (!p || sscanf(p, "fanotify flags:%x event-flags:%x", flags, event_flags) != 2)
        return -1;
    int marks = 0;
    for (char *q = strchr(p, '\n'); q && (q = strstr(q, "\nfanotify ")) != NULL; q++)
        marks++;
    return marks;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> <dir>");
    const char *dir = argv[2];
    const unsigned f40 = FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_FID;
    const unsigned f41 = FAN_CLASS_CONTENT | FAN_CLOEXEC;
    group_at(f40, O_RDONLY | O_LARGEFILE, 40, 0);
    group_at(f41, O_RDWR, 41, 1);
    if (dup2(40, 42) != 42)
        wl_fail("dup2: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper)
        group_at(FAN_CLASS_NOTIF, O_RDONLY, 41, 1);
    unsigned fl, ef;
    int marks = fdinfo_of(40, &fl, &ef);
    WL_CHECK(marks == 0 && fl == f40 && ef == KERNEL_O_LARGEFILE, "fd 40: fanotify flags 0x%x event-flags 0x%x, %d marks", fl, ef, marks);
    marks = fdinfo_of(41, &fl, &ef);
    WL_CHECK(marks == 0 && fl == f41 && ef == (O_RDWR | KERNEL_O_LARGEFILE), "fd 41: fanotify flags 0x%x event-flags 0x%x, %d marks", fl, ef, marks);
    WL_CHECK((fcntl(40, F_GETFL) & O_NONBLOCK) != 0 && (fcntl(41, F_GETFL) & O_NONBLOCK) == 0, "F_GETFL 0%o / 0%o", fcntl(40, F_GETFL), fcntl(41, F_GETFL));
    WL_CHECK(fcntl(40, F_GETFD) == 0 && fcntl(41, F_GETFD) == FD_CLOEXEC, "F_GETFD %d / %d", fcntl(40, F_GETFD), fcntl(41, F_GETFD));
    WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 40, 42) == 0, "fds 40 and 42 are no longer one description");

    /* The groups still work. */
    char path[4096];
    snprintf(path, sizeof path, "%s/made", dir);
    WL_CHECK(fanotify_mark(40, FAN_MARK_ADD, FAN_CREATE, AT_FDCWD, dir) == 0, "fanotify_mark on fd 40: %s", strerror(errno));
    int made = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    char ev[4096];
    ssize_t n = read(40, ev, sizeof ev);
    struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)ev;
    WL_CHECK(n >= (ssize_t)sizeof *m && (m->mask & FAN_CREATE) && m->fd == FAN_NOFD, "fd 40: read %zd, mask 0x%llx", n, n > 0 ? (unsigned long long)m->mask : 0ULL);
    WL_CHECK(fanotify_mark(41, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, path) == 0, "fanotify_mark on fd 41: %s", strerror(errno));
    if (made >= 0) {
        if (write(made, "x", 1) != 1)
            wl_fail("write: %s", strerror(errno));
        close(made);
    }
    n = read(41, ev, sizeof ev);
    WL_CHECK(n >= (ssize_t)sizeof *m && (m->mask & FAN_CLOSE_WRITE) && m->fd >= 0 && (fcntl(m->fd, F_GETFL) & O_ACCMODE) == O_RDWR,
             "fd 41: read %zd, mask 0x%llx, event fd %d", n, n > 0 ? (unsigned long long)m->mask : 0ULL, n > 0 ? m->fd : -1);
    if (n > 0 && m->fd >= 0)
        close(m->fd);
    unlink(path);
    wl_finish("fanotify", NULL);
}
