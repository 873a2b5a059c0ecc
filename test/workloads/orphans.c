/*
 * orphans <trigger>: orphans of sessions whose leaders are gone, adopted by a child subreaper.
 *
 *   R  a session leader and child subreaper
 *   +- Y   made by X, a session leader (session X) that exited and was reaped: Y is in session X,
 *   |  |   group X, and was adopted by R
 *   |  +- Z   Y's child: session X, a group of its own
 *   +- Y2  made by X2 (session X2) that exited too: Y2 is in session X2, a group of its own
 *
 * Each member loops until the trigger exists, then checks its parent, session and group (and Y
 * that Z is still in its session); a child exits 0 or 10 + the failed check, its parent reaps it
 * and checks the status, and R prints the verdict. Each member says it is set up by creating
 * <trigger>.ready.<name>. CPT_TAMPER=1 makes Y move to a group of its own before its check.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static void mark_ready(const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s.ready.%s", wl_trigger_path, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

static int is_ready(const char *name)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s.ready.%s", wl_trigger_path, name);
    return stat(p, &st) == 0;
}

static void wait_trigger(void)
{
    while (!wl_triggered())
        usleep(10000);
}

/* 0, or 1 parent, 2 session, 3 group. */
static int ids(pid_t ppid, pid_t sid, pid_t pgid)
{
    if (getppid() != ppid)
        return 1;
    if (getsid(0) != sid)
        return 2;
    if (getpgid(0) != pgid)
        return 3;
    return 0;
}

static int reaped_ok(pid_t pid)
{
    int st;
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* X: a new session, an orphan made in it, X gone. Returns the orphan's pid (X tells it through a pipe). */
static pid_t orphan(const char *name, int own_group, pid_t root)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t x = fork();
    if (x == 0) {
        setsid();
        pid_t me = getpid();
        pid_t y = fork();
        if (y == 0) {
            close(fds[0]);
            close(fds[1]);
            if (own_group)
                setpgid(0, 0);
            pid_t z = -1;
            if (!own_group) {
                z = fork();
                if (z == 0) {
                    setpgid(0, 0);
                    pid_t y_pid = getppid();
                    mark_ready("Z");
                    wait_trigger();
                    _exit(ids(y_pid, me, getpid()) ? 11 : 0);
                }
            }
            while (getppid() != root) /* adopted by R once X is gone */
                usleep(1000);
            if (z > 0)
                while (!is_ready("Z"))
                    usleep(10000);
            mark_ready(name);
            wait_trigger();
            if (wl_tamper && !own_group)
                setpgid(0, 0);
            int r = ids(root, me, own_group ? getpid() : me);
            if (!r && z > 0 && getsid(z) != me)
                r = 4;
            if (z > 0 && !reaped_ok(z) && !r)
                r = 5;
            _exit(r ? 10 + r : 0);
        }
        write(fds[1], &y, sizeof y);
        _exit(0);
    }
    close(fds[1]);
    pid_t y = -1;
    if (read(fds[0], &y, sizeof y) != sizeof y)
        y = -1;
    close(fds[0]);
    int st;
    waitpid(x, &st, 0); /* X is gone and reaped: its session has no leader */
    return y;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t root = getpid();
    pid_t y = orphan("Y", 0, root);
    pid_t y2 = orphan("Y2", 1, root);
    WL_CHECK(y > 0 && y2 > 0, "the orphans were not made");
    while (!is_ready("Y") || !is_ready("Y2"))
        usleep(10000);
    wl_ready();
    wait_trigger();
    WL_CHECK(getsid(0) == root && getpgid(0) == root, "R is no longer its session's leader");
    WL_CHECK(y <= 0 || reaped_ok(y), "Y failed its checks");
    WL_CHECK(y2 <= 0 || reaped_ok(y2), "Y2 failed its checks");
    wl_finish("orphans", NULL);
}
