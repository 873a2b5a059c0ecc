/*
 * inotify <dir>: watches, their descriptors and masks, in <dir>/watched (called W below).
 *   fd 40  inotify (IN_NONBLOCK):
 *          wd 1  W                IN_CREATE | IN_DELETE
 *          wd 2  W/a              IN_MODIFY | IN_ONESHOT
 *          wd 3  W/b              added, then removed (its IN_IGNORED read)
 *          wd 4  W/c              IN_CLOSE_WRITE | IN_EXCL_UNLINK
 *          wd 5  W/e              IN_ATTRIB (e is a hard link of d)
 *   fd 41  inotify (IN_CLOEXEC), no watch
 * After the trigger: flags; fd 40's fdinfo lists wds 1, 2, 4, 5 with those masks on those inodes
 * (stat), nothing queued; then: a file created in W is reported by wd 1 with its name, a write
 * to a by wd 2 (then IN_IGNORED: one-shot), a chmod of d by wd 5, a closed write of c by wd 4; a
 * new watch gets wd 6.
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>

static char dir[512];

static const char *in_dir(const char *name)
{
    static char p[4][600];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void touch(const char *name)
{
    int fd = open(in_dir(name), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0)
        wl_fail("create %s: %s", name, strerror(errno));
    else
        close(fd);
}

struct want {
    int wd;
    unsigned mask;
    const char *name;
};
static const struct want WANT[] = {
    {1, IN_CREATE | IN_DELETE, "."},
    {2, IN_MODIFY | IN_ONESHOT, "a"},
    {4, IN_CLOSE_WRITE | IN_EXCL_UNLINK, "c"},
    {5, IN_ATTRIB, "e"},
};
#define NWANT (sizeof WANT / sizeof WANT[0])

static void check_fdinfo(void)
{
    char buf[4096];
    int f = open("/proc/self/fdinfo/40", O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    int lines = 0;
    for (char *p = strstr(buf, "inotify wd:"); p; p = strstr(p + 1, "inotify wd:")) {
        unsigned wd, mask;
        unsigned long ino;
        if (sscanf(p, "inotify wd:%x ino:%lx sdev:%*x mask:%x", &wd, &ino, &mask) != 3) {
            wl_fail("fd 40: cannot read its fdinfo");
            return;
        }
        lines++;
        size_t i;
        for (i = 0; i < NWANT && WANT[i].wd != (int)wd; i++)
            ;
        if (i == NWANT) {
            wl_fail("fd 40: unexpected watch %u", wd);
            continue;
        }
        struct stat st;
        stat(strcmp(WANT[i].name, ".") ? in_dir(WANT[i].name) : dir, &st);
        WL_CHECK(mask == WANT[i].mask, "watch %u: mask %x, expected %x", wd, mask, WANT[i].mask);
        WL_CHECK(ino == st.st_ino, "watch %u: inode %lu, expected %lu (%s)", wd, ino, (unsigned long)st.st_ino, WANT[i].name);
    }
    WL_CHECK(lines == (int)NWANT, "fd 40: %d watches, expected %zu", lines, NWANT);
}

/* Events read so far from fd 40 (wd, mask, name), so that one read may bring several. */
static struct {
    int wd;
    unsigned mask;
    char name[32];
} seen[64];
static int nseen;

static int find_event(int wd, unsigned mask, const char *name)
{
    for (int i = 0; i < nseen; i++)
        if (seen[i].wd == wd && (seen[i].mask & mask) && (!name || strcmp(seen[i].name, name) == 0))
            return 1;
    return 0;
}

/* Reads fd 40 until an event of watch `wd` with `mask` bits has come (200 ms at most). */
static void expect_event(int wd, unsigned mask, const char *name)
{
    char buf[4096] __attribute__((aligned(8)));
    uint64_t until = wl_now_ns(CLOCK_MONOTONIC) + 200000000ull;
    while (!find_event(wd, mask, name) && wl_now_ns(CLOCK_MONOTONIC) < until) {
        struct pollfd p = {.fd = 40, .events = POLLIN};
        if (poll(&p, 1, 50) != 1)
            continue;
        ssize_t n = read(40, buf, sizeof buf);
        for (ssize_t off = 0; off < n;) {
            struct inotify_event *e = (struct inotify_event *)(buf + off);
            if (nseen < 64) {
                seen[nseen].wd = e->wd;
                seen[nseen].mask = e->mask;
                snprintf(seen[nseen].name, sizeof seen[nseen].name, "%s", e->len ? e->name : "");
                nseen++;
            }
            off += sizeof *e + e->len;
        }
    }
    if (!find_event(wd, mask, name))
        wl_fail("no event %x from watch %d%s%s", mask, wd, name ? " for " : "", name ? name : "");
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> <dir>");
    /* A directory of its own: the harness's files (trigger, result, images) live in <dir>. */
    snprintf(dir, sizeof dir, "%s/watched", argv[2]);
    mkdir(dir, 0755);
    touch("a");
    touch("b");
    touch("c");
    touch("d");
    unlink(in_dir("e"));
    if (link(in_dir("d"), in_dir("e")) != 0)
        wl_fail("link d e: %s", strerror(errno));
    int in = inotify_init1(IN_NONBLOCK);
    if (in < 0 || (in != 40 && dup2(in, 40) != 40))
        wl_fail("inotify at 40: %s", strerror(errno));
    if (in != 40)
        close(in);
    int w[5];
    w[0] = inotify_add_watch(40, dir, IN_CREATE | IN_DELETE | IN_ONLYDIR);
    w[1] = inotify_add_watch(40, in_dir("a"), IN_MODIFY | IN_ONESHOT);
    w[2] = inotify_add_watch(40, in_dir("b"), IN_OPEN);
    w[3] = inotify_add_watch(40, in_dir("c"), IN_CLOSE_WRITE | IN_EXCL_UNLINK);
    w[4] = inotify_add_watch(40, in_dir("e"), IN_ATTRIB);
    for (int i = 0; i < 5; i++)
        WL_CHECK(w[i] == i + 1, "watch %d got wd %d", i + 1, w[i]);
    inotify_rm_watch(40, 3);
    char drain[4096];
    while (read(40, drain, sizeof drain) > 0)
        ;
    int empty = inotify_init1(IN_CLOEXEC);
    if (empty < 0 || (empty != 41 && dup3(empty, 41, O_CLOEXEC) != 41))
        wl_fail("inotify at 41: %s", strerror(errno));
    if (empty != 41)
        close(empty);
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    if (wl_tamper)
        inotify_rm_watch(40, 4);

    int fl = fcntl(40, F_GETFL);
    WL_CHECK((fl & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK), "fd 40: F_GETFL 0%o", fl);
    WL_CHECK(fcntl(41, F_GETFD) == FD_CLOEXEC, "fd 41: not close-on-exec");
    fl = fcntl(41, F_GETFL);
    WL_CHECK((fl & (O_ACCMODE | O_NONBLOCK)) == O_RDONLY, "fd 41: F_GETFL 0%o", fl);
    check_fdinfo();
    int queued = -1;
    ioctl(40, FIONREAD, &queued);
    WL_CHECK(queued == 0 || wl_tamper, "fd 40: %d bytes queued before anything happened", queued);

    touch("new");
    expect_event(1, IN_CREATE, "new");
    int fd = open(in_dir("a"), O_WRONLY);
    (void)!write(fd, "x", 1);
    close(fd);
    expect_event(2, IN_MODIFY, NULL);
    expect_event(2, IN_IGNORED, NULL);
    chmod(in_dir("d"), 0600);
    expect_event(5, IN_ATTRIB, NULL);
    fd = open(in_dir("c"), O_WRONLY);
    close(fd);
    expect_event(4, IN_CLOSE_WRITE, NULL);
    int w6 = inotify_add_watch(40, in_dir("b"), IN_OPEN);
    WL_CHECK(w6 == 6, "a new watch got wd %d, expected 6", w6);
    unlink(in_dir("new"));
    wl_finish("inotify", NULL);
}
