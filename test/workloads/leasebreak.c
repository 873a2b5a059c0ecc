/*
 * leasebreak <trigger> <dir>: leases that are being broken, each broken by the process itself with
 * a non-blocking open of the file (EWOULDBLOCK), the lease-break signal F_SETSIG'd to SIGRTMIN+1
 * (a queued signal with si_fd: a second break signal would be counted):
 *   fd 20  <dir>/r   O_RDONLY, a read lease, broken by an open for writing: toward unlocked
 *   fd 21  <dir>/w   O_RDONLY, a write lease, broken by an open for reading: toward read
 *   fd 22  <dir>/rw  O_RDWR, a write lease, broken by an open for writing: toward unlocked
 *   fd 23  <dir>/p   O_WRONLY, a write lease, broken by an open for reading, its signal
 *                    (SIGRTMIN+2) blocked: still pending at the checkpoint
 * The signals of 20-22 are handled before READY, one each. After the trigger: F_GETLEASE gives
 * where each break goes; an open for reading still conflicts with the write leases (21, 22, 23)
 * and not with the read lease (20); F_GETOWN and F_GETSIG as set; no second signal came for any
 * fd; SIGRTMIN+2 is pending, and delivered exactly once (si_fd 23) when unblocked; each break
 * completes when the process lets go (F_SETLEASE F_UNLCK, or F_RDLCK for fd 21's break toward read):
 * then a conflicting open succeeds. CPT_TAMPER=1 lets go of fd 21's lease before the checks.
 * Needs /proc/sys/fs/lease-break-time long enough (10 s or more) that no break times out by itself.
 */
#include "common.h"

#include <fcntl.h>
#include <signal.h>

#define NFD 4
static const int fds[NFD] = { 20, 21, 22, 23 };
static const char *const names[NFD] = { "r", "w", "rw", "p" };
static const int modes[NFD] = { O_RDONLY, O_RDONLY, O_RDWR, O_WRONLY };
static const int leases[NFD] = { F_RDLCK, F_WRLCK, F_WRLCK, F_WRLCK };
static const int breakers[NFD] = { O_WRONLY, O_RDONLY, O_WRONLY, O_RDONLY };
static const int targets[NFD] = { F_UNLCK, F_RDLCK, F_UNLCK, F_RDLCK };
/* How the process lets go: a read lease is kept only where no fd of the file is open for writing. */
static const int lets_go[NFD] = { F_UNLCK, F_RDLCK, F_UNLCK, F_UNLCK };
static char paths[NFD][4096];

static volatile sig_atomic_t got[64];   /* break signals by si_fd */
static volatile sig_atomic_t strays;    /* a signal of another fd or code */

static void on_break(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_fd >= 0 && si->si_fd < 64)
        got[si->si_fd]++;
    else
        strays++;
}

/* An open of the file, non-blocking: 0 if it succeeded, else its errno. */
static int try_open(int i, int mode)
{
    int fd = open(paths[i], mode | O_NONBLOCK);
    if (fd < 0)
        return errno;
    close(fd);
    return 0;
}

static int lease_break_time(void)
{
    FILE *f = fopen("/proc/sys/fs/lease-break-time", "r");
    int t = -1;
    if (f) {
        if (fscanf(f, "%d", &t) != 1)
            t = -1;
        fclose(f);
    }
    return t;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir>");
    int lbt = lease_break_time();
    if (lbt >= 0 && lbt < 10)
        wl_fail("/proc/sys/fs/lease-break-time is %d s: breaks would time out during the test", lbt);

    struct sigaction sa = { 0 };
    sa.sa_sigaction = on_break;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGRTMIN + 1, &sa, NULL) || sigaction(SIGRTMIN + 2, &sa, NULL))
        wl_fail("sigaction: %s", strerror(errno));
    sigset_t blk;
    sigemptyset(&blk);
    sigaddset(&blk, SIGRTMIN + 2);
    sigprocmask(SIG_BLOCK, &blk, NULL);

    for (int i = 0; i < NFD; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", argv[2], names[i]);
        int fd = open(paths[i], modes[i] | O_CREAT, 0644);
        if (fd < 0 || dup2(fd, fds[i]) != fds[i])
            wl_fail("open %s: %s", paths[i], strerror(errno));
        if (fd != fds[i])
            close(fd);
        if (fcntl(fds[i], F_SETLEASE, leases[i]) != 0)
            wl_fail("F_SETLEASE on fd %d: %s", fds[i], strerror(errno));
        if (fcntl(fds[i], F_SETSIG, i == 3 ? SIGRTMIN + 2 : SIGRTMIN + 1) != 0)
            wl_fail("F_SETSIG on fd %d: %s", fds[i], strerror(errno));
        int e = try_open(i, breakers[i]);
        if (e != EWOULDBLOCK)
            wl_fail("the breaking open of %s: %s", paths[i], e ? strerror(e) : "succeeded");
    }
    for (int i = 0; i < NFD; i++) {
        int want = i == 3 ? 0 : 1;
        if (got[fds[i]] != want)
            wl_fail("fd %d: %d break signals before READY, not %d", fds[i], (int)got[fds[i]], want);
    }

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper)
        fcntl(21, F_SETLEASE, F_UNLCK);

    for (int i = 0; i < NFD; i++) {
        int l = fcntl(fds[i], F_GETLEASE);
        WL_CHECK(l == targets[i], "fd %d: F_GETLEASE %d, not %d", fds[i], l, targets[i]);
        WL_CHECK(fcntl(fds[i], F_GETOWN) == getpid(), "fd %d: F_GETOWN %d", fds[i], fcntl(fds[i], F_GETOWN));
        int sig = i == 3 ? SIGRTMIN + 2 : SIGRTMIN + 1;
        WL_CHECK(fcntl(fds[i], F_GETSIG) == sig, "fd %d: F_GETSIG %d", fds[i], fcntl(fds[i], F_GETSIG));
        /* A write lease still conflicts with a reader until it is let go; a read lease does not. */
        int e = try_open(i, O_RDONLY);
        int want = leases[i] == F_WRLCK ? EWOULDBLOCK : 0;
        WL_CHECK(e == want, "fd %d: an open for reading gives %s, not %s", fds[i], e ? strerror(e) : "success", want ? strerror(want) : "success");
    }
    wl_busy_ms(50);
    for (int i = 0; i < 3; i++)
        WL_CHECK(got[fds[i]] == 1, "fd %d: %d break signals, not 1", fds[i], (int)got[fds[i]]);
    WL_CHECK(got[23] == 0, "fd 23: its blocked break signal was delivered");
    sigset_t pend;
    sigpending(&pend);
    WL_CHECK(sigismember(&pend, SIGRTMIN + 2), "SIGRTMIN+2 (fd 23's break) is not pending");
    sigprocmask(SIG_UNBLOCK, &blk, NULL);
    wl_busy_ms(50);
    WL_CHECK(got[23] == 1, "fd 23: %d break signals once unblocked, not 1", (int)got[23]);
    WL_CHECK(strays == 0, "%d signals with no fd", (int)strays);

    /* Each break completes when the process lets go: then the breaking kind of open succeeds. */
    for (int i = 0; i < NFD; i++) {
        WL_CHECK(fcntl(fds[i], F_SETLEASE, lets_go[i]) == 0, "fd %d: F_SETLEASE %d: %s", fds[i], lets_go[i], strerror(errno));
        int l = fcntl(fds[i], F_GETLEASE);
        WL_CHECK(l == lets_go[i], "fd %d: F_GETLEASE %d once let go, not %d", fds[i], l, lets_go[i]);
        int e = try_open(i, breakers[i]);
        WL_CHECK(e == 0, "fd %d: the breaking open after the lease was let go: %s", fds[i], strerror(e));
        fcntl(fds[i], F_SETLEASE, F_UNLCK);
    }
    wl_busy_ms(20);
    int total = 0;
    for (int i = 0; i < NFD; i++)
        total += got[fds[i]];
    WL_CHECK(total == 4, "%d break signals in all, not 4", total);
    wl_finish("leasebreak", NULL);
}
