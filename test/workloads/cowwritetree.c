/*
 * cowwritetree: cowwrite for a tree. A parent and two children write their memory without pause,
 * so that a checkpoint that lets the tree run while its pages are written shows whether the image
 * holds one instant for every process: the instant of the freeze.
 *
 *   cowwritetree <trigger> [MiB] [subreaper]      (MiB: default 16)
 *
 * R maps a private anonymous area of MiB ("inherited") and writes a pattern into every page, then
 * forks A and B. Then every member maps a private anonymous area of MiB of its own and loops:
 * step `seq` (1, 2, ...) writes `seq` into the first word of page seq % n of its own area and of
 * page seq % (n/2) of the first half of the inherited one, each after checking that it holds what
 * step seq - n (seq - n/2) wrote (0, or the pattern, before the first round). The second half of
 * the inherited area nobody writes after the fork: it stays shared copy-on-write between parent
 * and children (a checkpoint stores it once, in R). The counter lives in a register and on the
 * stack, so a page from another instant than the registers fails a check of the next round.
 * After the trigger each member checks every page (what its last step left, and the pattern);
 * a child exits 0, or 10 + the number of failed checks (at most 100), leaving what failed in
 * <trigger>.<name>.fail; R reaps both, checks their status and prints the verdict. CPT_TAMPER=1
 * makes A change one page before its check.
 *
 * `subreaper`: A is a child subreaper with a child G of its own (looping as the others): a
 * snapshot process adopted by a process of the tree would show there. After the trigger A checks
 * that G is its only child and that it got a SIGCHLD only if G has ended.
 */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define PAGE 4096u
#define W (PAGE / 8)

static uint64_t n;
static volatile uint64_t *inherited;

static uint64_t pattern(uint64_t j)
{
    return wl_pat64(77, j) | 1ull << 63; /* never a step number */
}

/* What page j of an area of `pages` pages holds after steps 1 .. last; `first` before its first write. */
static uint64_t expected(uint64_t j, uint64_t pages, uint64_t last, uint64_t first)
{
    if (last < 1)
        return first;
    uint64_t v = last - ((last % pages + pages - j) % pages);
    return v >= 1 && v <= last ? v : first;
}

static void check_step(const char *who, const char *what, volatile uint64_t *p, uint64_t pages, uint64_t seq, int inh)
{
    uint64_t j = seq % pages;
    uint64_t want = seq > pages ? seq - pages : inh ? pattern(j) : 0; /* step 0 wrote nothing */
    uint64_t got = p[j * W];
    if (got != want && wl_failures < 4)
        wl_fail("%s: %s page %llu holds %llx at step %llu, not %llx", who, what, (unsigned long long)j, (unsigned long long)got,
                (unsigned long long)seq, (unsigned long long)want);
    else if (got != want)
        wl_failures++;
}

/* One member's life after the fork: writes until the trigger, then checks every page. */
static void run(const char *who)
{
    volatile uint64_t *own = mmap(0, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (own == MAP_FAILED) {
        wl_fail("%s: mmap failed", who);
        return;
    }
    uint64_t half = n / 2, seq = 0;
    for (;;) {
        seq++;
        check_step(who, "own", own, n, seq, 0);
        own[(seq % n) * W] = seq;
        check_step(who, "inherited", inherited, half, seq, 1);
        inherited[(seq % half) * W] = seq;
        if ((seq & 0xfff) == 0 && wl_triggered())
            break;
    }
    if (wl_tamper && who[0] == 'A')
        own[((seq / 2) % n) * W] ^= 1;
    uint64_t bad = 0;
    for (uint64_t j = 0; j < n; j++) {
        bad += own[j * W] != expected(j, n, seq, 0);
        bad += inherited[j * W] != (j < half ? expected(j, half, seq, pattern(j)) : pattern(j));
    }
    WL_CHECK(bad == 0, "%s: %llu pages differ from what they should hold after step %llu", who, (unsigned long long)bad,
             (unsigned long long)seq);
}

static int subreaper;
static volatile sig_atomic_t sigchlds;

static void on_sigchld(int sig)
{
    (void)sig;
    sigchlds++;
}

static pid_t child(const char *who);

static const char *fail_path(const char *who)
{
    static char p[4200];
    snprintf(p, sizeof p, "%s.%s.fail", wl_trigger_path, who);
    return p;
}
static void reap(pid_t pid, const char *who);

/* A, a subreaper: G is its only child (a zombie at most), and a SIGCHLD came only if G ended. */
static void check_only_child(pid_t g)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[len > 0 ? len : 0] = 0;
    char want[32];
    snprintf(want, sizeof want, "%d ", (int)g);
    WL_CHECK(strcmp(buf, want) == 0, "A: children \"%s\", not just G (%d)", buf, (int)g);
    siginfo_t si = {0};
    int ended = waitid(P_PID, (id_t)g, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == g;
    WL_CHECK(sigchlds == ended, "A: %d SIGCHLD, G %s", (int)sigchlds, ended ? "ended" : "runs");
}

static pid_t child(const char *who)
{
    pid_t pid = fork();
    if (pid == 0) {
        pid_t g = 0;
        if (subreaper && who[0] == 'A') {
            struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART};
            if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 || sigaction(SIGCHLD, &sa, NULL) != 0)
                wl_fail("A: prctl or sigaction: %s", strerror(errno));
            g = child("G");
        }
        run(who);
        if (g > 0) {
            check_only_child(g);
            reap(g, "G");
        }
        wl_child_exit(fail_path(who));
    }
    if (pid < 0)
        wl_fail("fork %s: %s", who, strerror(errno));
    return pid;
}

static void reap(pid_t pid, const char *who)
{
    wl_reap_child(pid, who, fail_path(who));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [MiB]");
    uint64_t mib = argc > 2 ? strtoull(argv[2], 0, 10) : 16;
    subreaper = argc > 3 && strcmp(argv[3], "subreaper") == 0;
    n = mib * (1024 * 1024 / PAGE);
    if (n < 64)
        n = 64;
    inherited = mmap(0, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (inherited == MAP_FAILED) {
        wl_fail("mmap failed");
        wl_finish("cowwritetree", NULL);
    }
    for (uint64_t j = 0; j < n; j++)
        inherited[j * W] = pattern(j);
    fflush(stdout);
    pid_t a = child("A");
    pid_t b = child("B");
    wl_ready();
    run("R");
    reap(a, "A");
    reap(b, "B");
    wl_finish("cowwritetree", NULL);
}
