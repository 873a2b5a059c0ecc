/*
 * locks <trigger> <dir>: file locks and I/O owners that must still be held, by the same owner,
 * after a restart. In <dir>:
 *   fd 10  a    O_RDWR, flock LOCK_EX; fd 11 a dup of it
 *   fd 12  b    O_RDWR, POSIX write lock on bytes 0..99, read lock on 200..299, write lock 1000..EOF
 *   fd 13  b    O_RDONLY (another description of b: the POSIX locks are the process's, seen on both)
 *   fd 14  c    O_RDWR, OFD read lock 10..19 and OFD write lock 50..EOF
 *   fd 15  d    O_RDONLY, flock LOCK_SH
 *   fd 16  e    O_RDONLY, a read lease
 *   fd 17  f    O_RDWR, F_SETOWN_EX to this process, F_SETSIG SIGUSR1
 * After the trigger, a child probes each from other open file descriptions (flock LOCK_NB,
 * F_OFD_GETLK over each range and between them; a child, since the process closing any fd of b
 * would drop its own POSIX locks): the same locks, the same kinds (l_pid: this process for POSIX,
 * -1 for OFD), nothing more; then F_GETLEASE, F_GETOWN_EX, F_GETSIG.
 * CPT_TAMPER=1 drops the POSIX read lock first.
 */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>

static char dir[4096];

static int openat_dir(const char *name, int flags)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return open(p, flags | O_CREAT, 0644);
}

static void place(int fd, int want)
{
    if (fd < 0 || dup2(fd, want) != want)
        wl_fail("set up fd %d: %s", want, strerror(errno));
    else if (fd != want)
        close(fd);
}

static void lk(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl) != 0)
        wl_fail("lock fd %d %lld+%lld: %s", fd, (long long)start, (long long)len, strerror(errno));
}

/* What another description sees over [start, start+len): the conflicting lock's type and l_pid. */
static void probe(const char *name, short want_probe, off_t start, off_t len, short want_type, int want_pid)
{
    int o = openat_dir(name, O_RDWR);
    struct flock fl = {.l_type = want_probe, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (o < 0 || fcntl(o, F_OFD_GETLK, &fl) != 0) {
        wl_fail("probe %s: %s", name, strerror(errno));
    } else if (fl.l_type != want_type || (want_type != F_UNLCK && fl.l_pid != want_pid)) {
        wl_fail("%s %lld+%lld (%s probe): type %d pid %d, want type %d pid %d", name, (long long)start, (long long)len,
                want_probe == F_WRLCK ? "write" : "read", fl.l_type, fl.l_pid, want_type, want_pid);
    }
    if (o >= 0)
        close(o);
}

static int flock_refused(const char *name, int op)
{
    int o = openat_dir(name, O_RDONLY);
    int refused = flock(o, op | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (!refused)
        flock(o, LOCK_UN);
    close(o);
    return refused;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir>");
    snprintf(dir, sizeof dir, "%s", argv[2]);
    place(openat_dir("a", O_RDWR), 10);
    place(dup(10), 11);
    place(openat_dir("b", O_RDWR), 12);
    place(openat_dir("b", O_RDONLY), 13);
    place(openat_dir("c", O_RDWR), 14);
    place(openat_dir("d", O_RDONLY), 15);
    place(openat_dir("e", O_RDONLY), 16);
    place(openat_dir("f", O_RDWR), 17);

    if (flock(10, LOCK_EX | LOCK_NB) != 0)
        wl_fail("flock a: %s", strerror(errno));
    lk(12, F_SETLK, F_WRLCK, 0, 100);
    lk(12, F_SETLK, F_RDLCK, 200, 100);
    lk(12, F_SETLK, F_WRLCK, 1000, 0);
    lk(14, F_OFD_SETLK, F_RDLCK, 10, 10);
    lk(14, F_OFD_SETLK, F_WRLCK, 50, 0);
    if (flock(15, LOCK_SH | LOCK_NB) != 0)
        wl_fail("flock d: %s", strerror(errno));
    if (fcntl(16, F_SETLEASE, F_RDLCK) != 0)
        wl_fail("lease e: %s", strerror(errno));
    struct f_owner_ex own = {F_OWNER_PID, getpid()};
    if (fcntl(17, F_SETOWN_EX, &own) != 0 || fcntl(17, F_SETSIG, SIGUSR1) != 0)
        wl_fail("owner f: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper)
        lk(12, F_SETLK, F_UNLCK, 200, 100);
    pid_t me = getpid();
    int p[2];
    if (pipe(p) != 0)
        wl_fail("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        wl_failbuf[0] = 0;
        wl_failures = 0;
        probe("b", F_WRLCK, 0, 100, F_WRLCK, me);
        probe("b", F_WRLCK, 100, 100, F_UNLCK, 0);
        probe("b", F_RDLCK, 200, 100, F_UNLCK, 0);
        probe("b", F_WRLCK, 200, 100, F_RDLCK, me);
        probe("b", F_WRLCK, 300, 700, F_UNLCK, 0);
        probe("b", F_RDLCK, 1000, 1, F_WRLCK, me);
        probe("b", F_RDLCK, 1 << 30, 1, F_WRLCK, me);
        probe("c", F_WRLCK, 0, 10, F_UNLCK, 0);
        probe("c", F_WRLCK, 10, 10, F_RDLCK, -1);
        probe("c", F_RDLCK, 10, 10, F_UNLCK, 0);
        probe("c", F_WRLCK, 20, 30, F_UNLCK, 0);
        probe("c", F_RDLCK, 50, 1, F_WRLCK, -1);
        WL_CHECK(!flock_refused("d", LOCK_SH) && flock_refused("d", LOCK_EX), "d: flock LOCK_SH not held as shared");
        WL_CHECK(flock_refused("a", LOCK_SH), "a: flock LOCK_EX not held");
        wl_write_all(p[1], wl_failbuf, strlen(wl_failbuf));
        _exit(wl_failures == 0 ? 0 : 1);
    }
    close(p[1]);
    char got_text[sizeof wl_failbuf] = "";
    ssize_t n = 0, r;
    while ((r = read(p[0], got_text + n, sizeof got_text - 1 - (size_t)n)) > 0)
        n += r;
    got_text[n > 0 ? n : 0] = 0;
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        wl_fail("%s", got_text[0] ? got_text : "the probing child failed");
    WL_CHECK(flock(11, LOCK_EX | LOCK_NB) == 0, "a: the dup'ed fd 11 is not the lock's description");
    WL_CHECK(fcntl(16, F_GETLEASE) == F_RDLCK, "e: lease %d, not a read lease", fcntl(16, F_GETLEASE));
    struct f_owner_ex got = {0, 0};
    WL_CHECK(fcntl(17, F_GETOWN_EX, &got) == 0 && got.type == F_OWNER_PID && got.pid == me, "f: owner %d:%d", got.type, got.pid);
    WL_CHECK(fcntl(17, F_GETSIG) == SIGUSR1, "f: F_GETSIG %d", fcntl(17, F_GETSIG));
    wl_finish("locks", NULL);
}
