/*
 * signals: signal state of a process.
 *  - blocked mask {SIGUSR1, SIGUSR2, SIGRTMIN+2, SIGTERM, SIGRTMAX};
 *  - handlers: SIGUSR1/SIGUSR2/SIGRTMIN+2 with SA_SIGINFO|SA_RESTART|SA_ONSTACK and a sa_mask each,
 *    SIGHUP with SA_RESETHAND|SA_NODEFER, SIGPIPE ignored; every signal's kernel sigaction
 *    (handler, flags, restorer, mask via SYS_rt_sigaction) must read back unchanged;
 *  - pending: SIGUSR1 via kill() (process-wide), SIGRTMIN+2 queued three times with values
 *    11, 22, 33 (process-wide), SIGUSR2 via tgkill() (thread-directed): sigpending() and
 *    /proc/self/status SigPnd/ShdPnd must show them where they were;
 *  - sigaltstack (ss_sp/ss_size/ss_flags);
 *  - ITIMER_REAL/VIRTUAL/PROF armed with 1000/2000/3000 s: still armed, interval unchanged,
 *    value not greater than when armed.
 * After the trigger the signals are unblocked one kind at a time and each handler must run
 * exactly as many times as sent, in order, with the right siginfo (code, pid, uid, value), on
 * the alternate stack, with its sa_mask blocked; SIGHUP's handler runs once and is reset.
 */
#include "common.h"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>

#define ALTSTACK_SIZE (64 * 1024)
#define MAXREC 8
#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

struct kact {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

struct record {
    int signo, code, value;
    pid_t pid;
    uid_t uid;
    int on_altstack;
    int ss_onstack;
    sigset_t mask;
};

static uint8_t altstack[ALTSTACK_SIZE] __attribute__((aligned(64)));
static struct record recs[MAXREC];
static volatile int nrecs, hup_count, hup_deferred;

static void record(int sig, siginfo_t *si)
{
    int local;
    if (nrecs >= MAXREC) {
        nrecs++;
        return;
    }
    struct record *r = &recs[nrecs];
    r->signo = sig;
    r->code = si->si_code;
    r->pid = si->si_pid;
    r->uid = si->si_uid;
    r->value = si->si_value.sival_int;
    uintptr_t a = (uintptr_t)&local;
    r->on_altstack = a >= (uintptr_t)altstack && a < (uintptr_t)altstack + ALTSTACK_SIZE;
    stack_t ss;
    sigaltstack(NULL, &ss);
    r->ss_onstack = (ss.ss_flags & SS_ONSTACK) != 0;
    sigprocmask(SIG_BLOCK, NULL, &r->mask);
    nrecs++;
}

static void on_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    record(sig, si);
}

static void on_hup(int sig)
{
    (void)sig;
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    hup_deferred = sigismember(&now, SIGHUP); /* SA_NODEFER: must not be blocked */
    hup_count++;
}

static int kget(int sig, struct kact *k)
{
    memset(k, 0, sizeof *k);
    return (int)syscall(SYS_rt_sigaction, sig, NULL, k, 8);
}

/* The Sig* lines of /proc/self/status, concatenated. */
static void proc_sig_lines(char *out, size_t len)
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return;
    char line[256];
    size_t used = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "SigPnd:", 7) == 0 || strncmp(line, "ShdPnd:", 7) == 0 ||
            strncmp(line, "SigBlk:", 7) == 0 || strncmp(line, "SigIgn:", 7) == 0 ||
            strncmp(line, "SigCgt:", 7) == 0) {
            size_t l = strlen(line);
            if (used + l + 1 < len) {
                memcpy(out + used, line, l + 1);
                used += l;
            }
        }
    fclose(f);
}

static uint64_t proc_mask(const char *lines, const char *key)
{
    const char *p = strstr(lines, key);
    return p == NULL ? ~0ull : strtoull(p + strlen(key), NULL, 16);
}

static uint64_t bit(int sig)
{
    return 1ull << (sig - 1);
}

static int set_equal(const sigset_t *a, const sigset_t *b)
{
    for (int s = 1; s < 65; s++)
        if (sigismember(a, s) != sigismember(b, s))
            return 0;
    return 1;
}

static void install(int sig, int flags, const int *mask_sigs)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (; *mask_sigs; mask_sigs++)
        sigaddset(&sa.sa_mask, *mask_sigs);
    sa.sa_flags = flags;
    if (flags & SA_SIGINFO)
        sa.sa_sigaction = on_info;
    else
        sa.sa_handler = on_hup;
    if (sigaction(sig, &sa, NULL) != 0)
        wl_fail("sigaction %d: %s", sig, strerror(errno));
}

static int tv_le(struct timeval a, struct timeval b)
{
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_usec <= b.tv_usec);
}

/* Checks records [from, from+n) came from `sig` with `code`, in order, with values vals (or NULL). */
static void check_records(int from, int n, int sig, int code, const int *vals, const int *mask_sigs,
                          const sigset_t *base)
{
    for (int i = from; i < from + n && i < MAXREC; i++) {
        const struct record *r = &recs[i];
        WL_CHECK(r->signo == sig, "delivery %d: signal %d, want %d", i, r->signo, sig);
        WL_CHECK(r->code == code, "delivery %d (sig %d): si_code %d, want %d", i, sig, r->code, code);
        WL_CHECK(r->pid == wl_ready_pid, "delivery %d (sig %d): si_pid %d, want %d", i, sig, (int)r->pid,
                 (int)wl_ready_pid);
        WL_CHECK(r->uid == getuid(), "delivery %d (sig %d): si_uid %d", i, sig, (int)r->uid);
        if (vals != NULL)
            WL_CHECK(r->value == vals[i - from], "delivery %d (sig %d): value %d, want %d", i, sig, r->value,
                     vals[i - from]);
        WL_CHECK(r->on_altstack && r->ss_onstack, "delivery %d (sig %d): handler not on the alternate stack", i,
                 sig);
        WL_CHECK(sigismember(&r->mask, sig), "delivery %d: signal %d not blocked in its handler", i, sig);
        for (const int *m = mask_sigs; *m; m++)
            WL_CHECK(sigismember(&r->mask, *m), "delivery %d (sig %d): sa_mask signal %d not blocked in handler", i,
                     sig, *m);
        for (int s = 1; s < 65; s++)
            if (sigismember(base, s) && !sigismember(&r->mask, s) && s != SIGKILL && s != SIGSTOP) {
                wl_fail("delivery %d (sig %d): blocked signal %d unblocked in handler", i, sig, s);
                break;
            }
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    const int rt = SIGRTMIN + 2;
    const int usr1_mask[] = {SIGHUP, SIGALRM, 0};
    const int usr2_mask[] = {SIGINT, 0};
    const int rt_mask[] = {SIGQUIT, SIGRTMIN + 5, 0};
    const int none[] = {0};

    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        wl_fail("sigaltstack: %s", strerror(errno));

    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGUSR2);
    sigaddset(&blocked, rt);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGRTMAX);
    if (sigprocmask(SIG_SETMASK, &blocked, NULL) != 0)
        wl_fail("sigprocmask: %s", strerror(errno));

    const int info_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    install(SIGUSR1, info_flags, usr1_mask);
    install(SIGUSR2, info_flags, usr2_mask);
    install(rt, info_flags, rt_mask);
    install(SIGHUP, SA_RESETHAND | SA_NODEFER, none);
    signal(SIGPIPE, SIG_IGN);

    kill(getpid(), SIGUSR1);
    for (int v = 11; v <= 33; v += 11) {
        union sigval sv = {.sival_int = v};
        if (sigqueue(getpid(), rt, sv) != 0)
            wl_fail("sigqueue: %s", strerror(errno));
    }
    if (syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2) != 0)
        wl_fail("tgkill: %s", strerror(errno));

    struct itimerval itv[3];
    const int which[3] = {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF};
    for (int i = 0; i < 3; i++) {
        struct itimerval set = {.it_interval = {1000 * (i + 1), 0}, .it_value = {1000 * (i + 1), 0}};
        if (setitimer(which[i], &set, NULL) != 0)
            wl_fail("setitimer %d: %s", which[i], strerror(errno));
        getitimer(which[i], &itv[i]);
    }

    struct kact kacts[65];
    for (int s = 1; s < 65; s++)
        if (kget(s, &kacts[s]) != 0)
            wl_fail("rt_sigaction(%d) read: %s", s, strerror(errno));
    struct sigaction acts[65];
    for (int s = 1; s < 65; s++)
        sigaction(s, NULL, &acts[s]);
    sigset_t pending0;
    sigpending(&pending0);
    static char status0[1024];
    proc_sig_lines(status0, sizeof status0);
    WL_CHECK(proc_mask(status0, "SigPnd:") == bit(SIGUSR2), "SigPnd before READY: %s", status0);
    WL_CHECK(proc_mask(status0, "ShdPnd:") == (bit(SIGUSR1) | bit(rt)), "ShdPnd before READY: %s", status0);
    WL_CHECK(kacts[SIGUSR1].restorer != NULL && (kacts[SIGUSR1].flags & SA_RESTORER), "libc set no restorer");

    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper) {
        union sigval sv = {.sival_int = 44};
        sigqueue(getpid(), rt, sv);
    }

    /* the static state, before anything is delivered */
    for (int s = 1; s < 65; s++) {
        struct kact k;
        if (kget(s, &k) != 0 || memcmp(&k, &kacts[s], sizeof k) != 0)
            wl_fail("kernel sigaction of %d: handler %p flags %#lx restorer %p mask %#llx, want %p %#lx %p %#llx", s,
                    k.handler, k.flags, k.restorer, (unsigned long long)k.mask, kacts[s].handler, kacts[s].flags,
                    kacts[s].restorer, (unsigned long long)kacts[s].mask);
        struct sigaction a;
        sigaction(s, NULL, &a);
        if (a.sa_handler != acts[s].sa_handler || a.sa_flags != acts[s].sa_flags ||
            !set_equal(&a.sa_mask, &acts[s].sa_mask))
            wl_fail("sigaction of %d differs", s);
    }
    WL_CHECK(kacts[SIGUSR1].handler == (void *)on_info && (kacts[SIGUSR1].flags & info_flags) == (unsigned)info_flags,
             "SIGUSR1 was not set up as asked");
    WL_CHECK(kacts[SIGHUP].handler == (void *)on_hup &&
                 (kacts[SIGHUP].flags & (SA_RESETHAND | SA_NODEFER)) == (SA_RESETHAND | SA_NODEFER),
             "SIGHUP was not set up as asked");
    WL_CHECK(kacts[SIGPIPE].handler == (void *)SIG_IGN, "SIGPIPE not ignored");
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    WL_CHECK(set_equal(&now, &blocked), "blocked mask differs");
    sigset_t pending;
    sigpending(&pending);
    WL_CHECK(set_equal(&pending, &pending0), "sigpending differs");
    WL_CHECK(sigismember(&pending, SIGUSR1) && sigismember(&pending, SIGUSR2) && sigismember(&pending, rt),
             "a pending signal was lost");
    static char status[1024];
    proc_sig_lines(status, sizeof status);
    WL_CHECK(strcmp(status, status0) == 0, "/proc/self/status signal lines differ: now [%s] were [%s]", status,
             status0);
    stack_t ss2;
    sigaltstack(NULL, &ss2);
    WL_CHECK(ss2.ss_sp == (void *)altstack && ss2.ss_size == ALTSTACK_SIZE && ss2.ss_flags == 0,
             "sigaltstack sp %p size %zu flags %d, want %p %d 0", ss2.ss_sp, ss2.ss_size, ss2.ss_flags,
             (void *)altstack, ALTSTACK_SIZE);
    for (int i = 0; i < 3; i++) {
        struct itimerval cur;
        getitimer(which[i], &cur);
        WL_CHECK(cur.it_value.tv_sec > 0 || cur.it_value.tv_usec > 0, "itimer %d disarmed", which[i]);
        WL_CHECK(tv_le(cur.it_value, itv[i].it_value), "itimer %d value %ld.%06ld > %ld.%06ld", which[i],
                 (long)cur.it_value.tv_sec, (long)cur.it_value.tv_usec, (long)itv[i].it_value.tv_sec,
                 (long)itv[i].it_value.tv_usec);
        WL_CHECK(cur.it_interval.tv_sec == itv[i].it_interval.tv_sec &&
                     cur.it_interval.tv_usec == itv[i].it_interval.tv_usec,
                 "itimer %d interval %ld.%06ld, want %ld.%06ld", which[i], (long)cur.it_interval.tv_sec,
                 (long)cur.it_interval.tv_usec, (long)itv[i].it_interval.tv_sec, (long)itv[i].it_interval.tv_usec);
    }

    /* delivery, one kind at a time */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    int n_usr2 = nrecs;
    WL_CHECK(n_usr2 == 1, "SIGUSR2 delivered %d times, want 1", n_usr2);
    check_records(0, n_usr2, SIGUSR2, SI_TKILL, NULL, usr2_mask, &blocked);
    sigdelset(&blocked, SIGUSR2);

    sigemptyset(&one);
    sigaddset(&one, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    int n_usr1 = nrecs - n_usr2;
    WL_CHECK(n_usr1 == 1, "SIGUSR1 delivered %d times, want 1", n_usr1);
    check_records(n_usr2, n_usr1, SIGUSR1, SI_USER, NULL, usr1_mask, &blocked);
    sigdelset(&blocked, SIGUSR1);

    sigemptyset(&one);
    sigaddset(&one, rt);
    sigprocmask(SIG_UNBLOCK, &one, NULL);
    int n_rt = nrecs - n_usr2 - n_usr1;
    const int vals[3] = {11, 22, 33};
    WL_CHECK(n_rt == 3, "SIGRTMIN+2 delivered %d times, want 3", n_rt);
    check_records(n_usr2 + n_usr1, n_rt < 3 ? n_rt : 3, rt, SI_QUEUE, vals, rt_mask, &blocked);

    raise(SIGHUP);
    WL_CHECK(hup_count == 1 && !hup_deferred, "SIGHUP handler ran %d times (blocked inside: %d)", (int)hup_count,
             (int)hup_deferred);
    struct kact k;
    kget(SIGHUP, &k);
    WL_CHECK(k.handler == (void *)SIG_DFL, "SIGHUP not reset to SIG_DFL by SA_RESETHAND");
    kget(SIGPIPE, &k);
    if (k.handler == (void *)SIG_IGN)
        raise(SIGPIPE); /* ignored: nothing happens */
    sigpending(&pending);
    sigset_t empty;
    sigemptyset(&empty);
    WL_CHECK(set_equal(&pending, &empty), "signals still pending at the end");

    wl_finish("signals", NULL);
}
