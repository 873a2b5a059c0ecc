/*
 * fanotifymarks <trigger> <dir>: a fanotify group with marks (as root).
 *   fd 40  fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE), with marks on
 *          <dir>/w/file (FAN_MODIFY | FAN_CLOSE_WRITE), on the directory <dir>/w (FAN_OPEN |
 *          FAN_EVENT_ON_CHILD | FAN_ONDIR), on <dir>/w/quiet (FAN_MODIFY, and FAN_MODIFY in its
 *          ignore mask, surviving modification: FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY)
 *          and on <dir>/w/other (FAN_CLOSE_WRITE, FAN_MARK_IGNORE of FAN_OPEN)
 * After the trigger: the group's fdinfo lines as before (flags, each mark's inode, mflags and masks),
 * F_GETFL, nothing queued; then a write to <dir>/w/file gives FAN_OPEN (through the directory)
 * and FAN_MODIFY and FAN_CLOSE_WRITE on it, each with an fd of that inode; a write to quiet gives
 * only FAN_OPEN (its FAN_MODIFY ignored), one to other only FAN_CLOSE_WRITE (its FAN_OPEN ignored).
 * CPT_TAMPER=1 removes the mark on file first.
 */
#include "common.h"

#include <fcntl.h>
#include <sys/fanotify.h>

static char before[4096];

static void fdinfo_marks(int fd, char *out, size_t len)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "fanotify flags:");
    snprintf(out, len, "%s", p ? p : "(none)");
    /* One line, for the verdict. */
    for (char *q = out; *q; q++)
        if (*q == '\n')
            *q = '|';
}

/* The events now queued: for each, its mask and the inode of its fd (or 0). */
static int events(uint64_t *masks, ino_t *inos, int max)
{
    char buf[8192] __attribute__((aligned(8)));
    int n = 0;
    for (;;) {
        ssize_t r = read(40, buf, sizeof buf);
        if (r <= 0)
            return n;
        struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(m, r); m = FAN_EVENT_NEXT(m, r)) {
            struct stat st = {0};
            if (m->fd >= 0) {
                fstat(m->fd, &st);
                close(m->fd);
            }
            if (n < max) {
                masks[n] = m->mask;
                inos[n] = st.st_ino;
            }
            n++;
        }
    }
}

static ino_t touch_file(const char *path)
{
    int f = open(path, O_WRONLY | O_CREAT, 0600);
    struct stat st = {0};
    fstat(f, &st);
    close(f);
    return st.st_ino;
}

static void write_once(const char *path)
{
    int f = open(path, O_WRONLY);
    (void)!write(f, "x", 1);
    close(f);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> <dir>");
    char w[4000], file[4096], quiet[4096], other[4096];
    snprintf(w, sizeof w, "%s/w", argv[2]);
    snprintf(file, sizeof file, "%s/file", w);
    snprintf(quiet, sizeof quiet, "%s/quiet", w);
    snprintf(other, sizeof other, "%s/other", w);
    if (mkdir(w, 0700) != 0) {
        printf("FAIL fanotifymarks: mkdir: %s\n", strerror(errno));
        return 1;
    }
    ino_t fi = touch_file(file), qi = touch_file(quiet), oi = touch_file(other);
    int g = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
    if (g < 0 || dup2(g, 40) != 40) {
        printf("FAIL fanotifymarks: fanotify_init: %s\n", strerror(errno));
        return 1;
    }
    close(g);
    if (fanotify_mark(40, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file) != 0 ||
        fanotify_mark(40, FAN_MARK_ADD, FAN_OPEN | FAN_EVENT_ON_CHILD | FAN_ONDIR, AT_FDCWD, w) != 0 ||
        fanotify_mark(40, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, quiet) != 0 ||
        fanotify_mark(40, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY, AT_FDCWD, quiet) != 0 ||
        fanotify_mark(40, FAN_MARK_ADD | FAN_MARK_IGNORE, FAN_OPEN, AT_FDCWD, other) != 0 ||
        fanotify_mark(40, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, other) != 0) {
        printf("FAIL fanotifymarks: fanotify_mark: %s\n", strerror(errno));
        return 1;
    }
    fdinfo_marks(40, before, sizeof before);
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    if (wl_tamper)
        fanotify_mark(40, FAN_MARK_REMOVE, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file);

    char now[4096];
    fdinfo_marks(40, now, sizeof now);
    WL_CHECK(strcmp(before, now) == 0, "fdinfo was [%s], is [%s]", before, now);
    WL_CHECK(fcntl(40, F_GETFL) == (O_RDWR | O_NONBLOCK), "F_GETFL 0%o", fcntl(40, F_GETFL));
    uint64_t m[16];
    ino_t in[16];
    int n = events(m, in, 16);
    WL_CHECK(n == 0, "%d events queued before anything happened", n);
    write_once(file);
    n = events(m, in, 16);
    /* One open (through the directory's mark), then the write and the close (merged or not). */
    uint64_t all = 0;
    for (int i = 0; i < n && i < 16; i++) {
        all |= m[i];
        WL_CHECK(in[i] == fi, "an event 0x%llx on inode %lu, not file's %lu", (unsigned long long)m[i], (unsigned long)in[i], (unsigned long)fi);
    }
    WL_CHECK(all == (FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE), "file: events 0x%llx (%d), expected FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE", (unsigned long long)all, n);
    write_once(quiet);
    n = events(m, in, 16);
    all = 0;
    for (int i = 0; i < n && i < 16; i++)
        all |= m[i];
    WL_CHECK(all == FAN_OPEN && n == 1 && in[0] == qi, "quiet: events 0x%llx (%d), expected only FAN_OPEN (its FAN_MODIFY ignored)", (unsigned long long)all, n);
    write_once(other);
    n = events(m, in, 16);
    all = 0;
    for (int i = 0; i < n && i < 16; i++)
        all |= m[i];
    WL_CHECK(all == FAN_CLOSE_WRITE && n == 1 && in[0] == oi, "other: events 0x%llx (%d), expected only FAN_CLOSE_WRITE (its FAN_OPEN ignored)", (unsigned long long)all, n);
    unlink(file);
    unlink(quiet);
    unlink(other);
    rmdir(w);
    wl_finish("fanotifymarks", NULL);
}
