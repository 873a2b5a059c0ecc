/*
 * pidfds <trigger>: pidfds that cptrst restores itself (a process tree and a thread on purpose):
 *   fd 40  pidfd_open(getpid(), 0)                     the process itself
 *   fd 41  pidfd_open(child, PIDFD_NONBLOCK)           a child, which waits for SIGUSR1 and then exits 42
 *   fd 42  dup of fd 41 (one open file description)
 *   fd 43  pidfd_open(tid, PIDFD_THREAD)               a thread of the process
 *   fd 44, 45  two pidfd_open of a child that exited 7 and was reaped (dead: one pidfs inode)
 *   fd 46  a pidfd of a child killed by SIGTERM and reaped (dead, another inode)
 * After the trigger: fdinfo Pid (the process, the child, the thread, -1 for the dead ones),
 * flags (PIDFD_NONBLOCK, PIDFD_THREAD), kcmp of 41 and 42, inodes of 44 = 45 != 46, the exit
 * status PIDFD_GET_INFO reports for 44 and 46 (where the kernel reports it), then SIGUSR1 sent to
 * the child through fd 41 and its exit (42) waited for through it (waitid P_PIDFD).
 * CPT_TAMPER=1 puts a pidfd of the process itself at fd 45 first.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#define PIDFD_THREAD_FLAG O_EXCL
#define PIDFD_GET_INFO_REQ 0xc048ff0bUL
#define PIDFD_INFO_EXIT_BIT 0x8ULL

struct pidfd_info_v1 {
    uint64_t mask;
    uint64_t cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
    uint32_t coredump_mask, spare;
};

static volatile pid_t thread_tid;

static void *thread_main(void *arg)
{
    (void)arg;
    thread_tid = (pid_t)syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

static void on_usr1(int s)
{
    (void)s;
    _exit(42);
}

static int pidfd_at(pid_t pid, unsigned flags, int want)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, flags);
    if (fd < 0 || dup2(fd, want) != want)
        wl_fail("pidfd_open(%d) at %d: %s", (int)pid, want, strerror(errno));
    if (fd >= 0)
        close(fd);
    return want;
}

/* A child that ends at once (exit 7, or killed by SIGTERM), its pidfds at `fds`, then reaped. */
static void dead_child(int sigterm, const int *fds, int n)
{
    int p[2];
    if (pipe(p) != 0)
        wl_fail("pipe: %s", strerror(errno));
    pid_t c = fork();
    if (c == 0) {
        char x;
        close(p[1]);
        if (read(p[0], &x, 1) < 0)
            _exit(1);
        if (sigterm)
            for (;;)
                pause();
        _exit(7);
    }
    for (int i = 0; i < n; i++)
        pidfd_at(c, 0, fds[i]);
    if (sigterm)
        kill(c, SIGTERM);
    close(p[0]);
    close(p[1]);
    int st;
    if (waitpid(c, &st, 0) != c)
        wl_fail("waitpid: %s", strerror(errno));
}

static int fdinfo_pid(int fd)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY);
    ssize_t n = f < 0 ? -1 : read(f, buf, sizeof buf - 1);
    if (f >= 0)
        close(f);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "\nPid:");
    return p ? atoi(p + 5) : -1000;
}

static ino_t ino(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* The wait status PIDFD_GET_INFO reports, or -1000 when the kernel does not report it. */
static int exit_status(int fd)
{
    struct pidfd_info_v1 info;
    memset(&info, 0, sizeof info);
    info.mask = PIDFD_INFO_EXIT_BIT;
    if (ioctl(fd, PIDFD_GET_INFO_REQ, &info) != 0 || !(info.mask & PIDFD_INFO_EXIT_BIT))
        return -1000;
    return info.exit_code;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0, "<trigger>");
    signal(SIGUSR1, on_usr1);
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    signal(SIGUSR1, SIG_DFL);
    pthread_t th;
    if (pthread_create(&th, NULL, thread_main, NULL) != 0)
        wl_fail("pthread_create");
    while (!thread_tid)
        usleep(1000);
    pidfd_at(getpid(), 0, 40);
    pidfd_at(child, PIDFD_NONBLOCK, 41);
    if (dup2(41, 42) != 42)
        wl_fail("dup2: %s", strerror(errno));
    pidfd_at(thread_tid, PIDFD_THREAD_FLAG, 43);
    int exited[2] = {44, 45}, killed[1] = {46};
    dead_child(0, exited, 2);
    dead_child(1, killed, 1);
    int st44 = exit_status(44), st46 = exit_status(46);

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper)
        pidfd_at(getpid(), 0, 45);
    WL_CHECK(fdinfo_pid(40) == getpid(), "fd 40 refers to %d, not the process %d", fdinfo_pid(40), (int)getpid());
    WL_CHECK(fdinfo_pid(41) == child && fdinfo_pid(42) == child, "fds 41/42 refer to %d/%d, not the child %d", fdinfo_pid(41), fdinfo_pid(42), (int)child);
    WL_CHECK(fdinfo_pid(43) == thread_tid, "fd 43 refers to %d, not the thread %d", fdinfo_pid(43), (int)thread_tid);
    for (int fd = 44; fd <= 46; fd++)
        WL_CHECK(fdinfo_pid(fd) == -1, "fd %d refers to %d, not to a process that has ended", fd, fdinfo_pid(fd));
    WL_CHECK((fcntl(41, F_GETFL) & O_NONBLOCK) != 0 && (fcntl(40, F_GETFL) & O_NONBLOCK) == 0, "PIDFD_NONBLOCK: F_GETFL 0%o / 0%o", fcntl(41, F_GETFL), fcntl(40, F_GETFL));
    WL_CHECK((fcntl(43, F_GETFL) & PIDFD_THREAD_FLAG) != 0, "fd 43: no PIDFD_THREAD (F_GETFL 0%o)", fcntl(43, F_GETFL));
    WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 41, 42) == 0, "fds 41 and 42 are no longer one description");
    WL_CHECK(ino(44) != 0 && ino(44) == ino(45), "fds 44 and 45 (one dead process) have inodes %lu and %lu", (unsigned long)ino(44), (unsigned long)ino(45));
    WL_CHECK(ino(44) != ino(46), "fds 44 and 46 (two dead processes) share inode %lu", (unsigned long)ino(44));
    WL_CHECK(exit_status(44) == st44 && exit_status(46) == st46, "exit statuses 0x%x 0x%x, were 0x%x 0x%x", exit_status(44), exit_status(46), st44, st46);
    WL_CHECK(st44 == -1000 || (st44 == (7 << 8) && st46 == SIGTERM), "before the checkpoint: exit statuses 0x%x 0x%x", st44, st46);
    WL_CHECK(syscall(SYS_pidfd_send_signal, 41, SIGUSR1, NULL, 0) == 0, "pidfd_send_signal to the child: %s", strerror(errno));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int w;
    /* fd 41 is PIDFD_NONBLOCK: EAGAIN until the child has exited */
    for (int i = 0; (w = waitid((idtype_t)3 /* P_PIDFD */, 41, &si, WEXITED)) != 0 && errno == EAGAIN && i < 2000; i++)
        usleep(1000);
    WL_CHECK(w == 0 && si.si_pid == child && si.si_code == CLD_EXITED && si.si_status == 42, "waitid(P_PIDFD): %d (%s), pid %d code %d status %d", w, w ? strerror(errno) : "ok",
             (int)si.si_pid, si.si_code, si.si_status);
    wl_finish("pidfds", st44 == -1000 ? "no PIDFD_INFO_EXIT" : NULL);
}
