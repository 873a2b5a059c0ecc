/*
 * jobstop <trigger>: processes stopped by job control signals, and what their parent's wait sees.
 *
 *   R  a session leader
 *   +- J   a job: a process group of its own (its parent R is in another group of the session, so
 *      |   the group is not orphaned and job-control signals stop its members)
 *      +- T   stopped by SIGTSTP
 *      +- I   stopped by SIGTTIN
 *      +- O   stopped by SIGTTOU
 *
 * Each child stops itself with its signal once it has closed the pipe ends it inherited and does
 * not use: stopped by J's kill right after the fork, a child that has not run yet would keep them,
 * and the ready pipe's write end, which J closes, would be held by children only: a description
 * shared in the tree but not through the parent, which a checkpoint refuses. J sees each stop with
 * waitid(WSTOPPED | WNOWAIT), which leaves it to be collected, and says ready only then.
 *
 * After the trigger J checks, for each child: it is stopped (/proc state T), waitpid(WUNTRACED |
 * WNOHANG) reports it stopped by its own signal, then after SIGCONT waitpid(WCONTINUED) reports
 * it continued; the child then checks its parent and group and exits 0; J reaps it and checks the
 * status, and exits 0 or 10 + the failed check; R reaps J and prints the verdict.
 * CPT_TAMPER=1 makes J continue T before its checks.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/wait.h>

static const int SIGS[3] = {SIGTSTP, SIGTTIN, SIGTTOU};

static char proc_state(pid_t pid)
{
    char p[64], b[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return '?';
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n <= 0)
        return '?';
    b[n] = 0;
    char *rp = strrchr(b, ')');
    return rp && rp[1] == ' ' ? rp[2] : '?';
}

/* Written by J, a byte per child, once it has seen the child continued: the child exits only then. */
static int go[2];

/* A child: closes what it does not use, stops itself; once continued, and let go by J, it checks
 * its parent and group. */
static void child(pid_t job, int ready_fd, int sig)
{
    close(ready_fd);
    close(go[1]);
    raise(sig);
    char b;
    while (read(go[0], &b, 1) != 1)
        ;
    _exit(getppid() != job ? 1 : getpgid(0) != job ? 2 : 0);
}

/* 0, or 1 + 10 * index + what failed. */
static int check_child(pid_t c, int sig, int i)
{
    int st = 0;
    if (proc_state(c) != 'T')
        return 1 + 10 * i;
    pid_t r = waitpid(c, &st, WUNTRACED | WNOHANG);
    if (r != c || !WIFSTOPPED(st) || WSTOPSIG(st) != sig)
        return 2 + 10 * i;
    kill(c, SIGCONT);
    r = waitpid(c, &st, WCONTINUED);
    if (r != c || !WIFCONTINUED(st))
        return 3 + 10 * i;
    char one = 1;
    if (write(go[1], &one, 1) != 1)
        return 5 + 10 * i;
    r = waitpid(c, &st, 0);
    if (r != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 4 + 10 * i;
    return 0;
}

static void job(int ready_fd)
{
    setpgid(0, 0);
    pid_t me = getpid();
    if (pipe2(go, O_CLOEXEC) != 0)
        _exit(9);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fork();
        if (kids[i] == 0)
            child(me, ready_fd, SIGS[i]);
        if (kids[i] < 0)
            _exit(9);
    }
    for (int i = 0; i < 3; i++) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, kids[i], &si, WSTOPPED | WNOWAIT) != 0 || si.si_code != CLD_STOPPED || si.si_status != SIGS[i])
            _exit(8);
    }
    char one = 1;
    if (write(ready_fd, &one, 1) != 1)
        _exit(7);
    close(ready_fd);
    while (!wl_triggered())
        usleep(10000);
    close(go[0]);
    if (wl_tamper)
        kill(kids[0], SIGCONT);
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        int r = check_child(kids[i], SIGS[i], i);
        if (r && !bad)
            bad = r;
        if (r) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    }
    _exit(bad ? 10 + bad : 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    setsid();
    int fds[2];
    WL_CHECK(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    pid_t j = fork();
    if (j == 0) {
        close(fds[0]);
        job(fds[1]);
    }
    close(fds[1]);
    char one = 0;
    WL_CHECK(j > 0 && read(fds[0], &one, 1) == 1, "the job was not set up");
    close(fds[0]);
    wl_ready();
    while (!wl_triggered())
        usleep(10000);
    int st = 0;
    WL_CHECK(waitpid(j, &st, 0) == j, "waitpid of the job: %s", strerror(errno));
    WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the job failed its checks (status 0x%x: 10 + 10 * child + 1 not stopped, 2 wrong stop report, 3 no continued report, 4 child's status, 5 go pipe)", st);
    wl_finish("jobstop", NULL);
}
