/*
 * debugregs: a hardware watchpoint set on the process by a short-lived
 * debugger. A forked child PTRACE_ATTACHes the parent, sets DR0 = &watched and
 * DR7 = 4-byte write watchpoint (POKEUSER), detaches and exits; the parent
 * reaps it, so it has no children at checkpoint time.
 *
 * Checked before READY and again after the trigger:
 *  - the debug registers as the kernel keeps them: another short-lived child
 *    attaches and reads DR0 and DR7 with PEEKUSER (they must still be ours);
 *  - the watchpoint fires: with a SIGTRAP handler (SA_SIGINFO) installed, a
 *    write to `watched` gives exactly one SIGTRAP with si_code TRAP_HWBKPT,
 *    while a write next to it and a read of it give none.
 * Some virtual machines never deliver debug-register traps (the registers are
 * accepted but nothing fires, for gdb as well). If the write does not trap
 * before READY, the trap part is skipped (and said so in the PASS line); the
 * registers are still checked through ptrace.
 * No child exists between READY and the trigger.
 */
#include "common.h"

#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>

#ifndef TRAP_HWBKPT
#define TRAP_HWBKPT 4
#endif

#define DR7_WATCH (1ul /* L0 */ | (1ul << 16) /* RW0 = write */ | (3ul << 18) /* LEN0 = 4 bytes */)
#define DR_OFF(n) ((void *)offsetof(struct user, u_debugreg[n]))

static struct {
    volatile uint32_t before;
    volatile uint32_t watched;
    volatile uint32_t after;
} __attribute__((aligned(64))) area;

static volatile sig_atomic_t traps;
static volatile int last_code;
static volatile int last_signo;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    traps++;
    last_signo = sig;
    last_code = si->si_code;
}

enum op { OP_SET, OP_CLEAR, OP_READ };

/* In the child: attach to the parent, do `op`, detach. Returns the exit code. */
static int debugger(pid_t parent, enum op op, int out_fd)
{
    int st;
    if (ptrace(PTRACE_ATTACH, parent, 0, 0) != 0)
        return 10;
    if (waitpid(parent, &st, __WALL) != parent || !WIFSTOPPED(st))
        return 11;
    if (op == OP_SET && ptrace(PTRACE_POKEUSER, parent, DR_OFF(0), (void *)&area.watched) != 0)
        return 12;
    if (op != OP_READ && ptrace(PTRACE_POKEUSER, parent, DR_OFF(7), (void *)(op == OP_SET ? DR7_WATCH : 0)) != 0)
        return 13;
    unsigned long regs[2];
    errno = 0;
    regs[0] = (unsigned long)ptrace(PTRACE_PEEKUSER, parent, DR_OFF(0), 0);
    regs[1] = (unsigned long)ptrace(PTRACE_PEEKUSER, parent, DR_OFF(7), 0);
    if (errno != 0)
        return 14;
    if (ptrace(PTRACE_DETACH, parent, 0, 0) != 0)
        return 15;
    if (write(out_fd, regs, sizeof regs) != (ssize_t)sizeof regs)
        return 16;
    return 0;
}

/* Runs the debugger child, reaps it; returns 0 and DR0/DR7 as it saw them after `op`. */
static int run_debugger(enum op op, unsigned long *dr0, unsigned long *dr7)
{
    int p[2];
    if (pipe(p) != 0) {
        wl_fail("pipe: %s", strerror(errno));
        return -1;
    }
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0); /* for Yama; fails harmlessly without it */
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        _exit(debugger(parent, op, p[1]));
    }
    close(p[1]);
    int st = 0, rc = -1;
    if (child < 0) {
        wl_fail("fork: %s", strerror(errno));
    } else {
        pid_t r;
        do
            r = waitpid(child, &st, 0);
        while (r < 0 && errno == EINTR);
        unsigned long regs[2];
        if (r != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            wl_fail("debugger child failed (status %#x)", st);
        else if (read(p[0], regs, sizeof regs) != (ssize_t)sizeof regs)
            wl_fail("debugger child sent nothing");
        else {
            *dr0 = regs[0];
            *dr7 = regs[1];
            rc = 0;
        }
    }
    close(p[0]);
    prctl(PR_SET_PTRACER, 0, 0, 0, 0);
    return rc;
}

static void check_registers(const char *when)
{
    unsigned long dr0 = 0, dr7 = 0;
    if (run_debugger(OP_READ, &dr0, &dr7) != 0)
        return;
    WL_CHECK(dr0 == (unsigned long)&area.watched, "%s: DR0 %#lx, want %p", when, dr0, (void *)&area.watched);
    WL_CHECK(dr7 == DR7_WATCH, "%s: DR7 %#lx, want %#lx", when, dr7, DR7_WATCH);
}

/* Writes to the watched word and around it; returns how many traps the watched write gave. */
static int check_traps(const char *when, int must_trap)
{
    int before = traps;
    area.before = area.before + 1;
    area.after = area.after + 1;
    WL_CHECK(traps == before, "%s: a write next to the watched word trapped", when);
    before = traps;
    uint32_t v = area.watched;
    (void)v;
    WL_CHECK(traps == before, "%s: a read of the watched word trapped", when);
    before = traps;
    last_code = -1;
    area.watched = area.watched + 1;
    int got = traps - before;
    if (must_trap) {
        WL_CHECK(got == 1, "%s: a write to the watched word gave %d SIGTRAPs, want 1", when, got);
        WL_CHECK(got != 1 || last_signo == SIGTRAP, "%s: handler got signal %d", when, (int)last_signo);
        WL_CHECK(got != 1 || last_code == TRAP_HWBKPT, "%s: si_code %d, want TRAP_HWBKPT", when, (int)last_code);
    }
    return got;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTRAP, &sa, NULL) != 0)
        wl_fail("sigaction: %s", strerror(errno));

    unsigned long dr0, dr7;
    run_debugger(OP_SET, &dr0, &dr7);
    check_registers("before READY");
    int hw_traps = check_traps("before READY", 0) > 0;
    if (hw_traps) /* it fired once: now it must behave exactly */
        check_traps("before READY", 1);
    int traps_at_ready = traps;

    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(5);

    WL_CHECK(traps == traps_at_ready, "%d SIGTRAPs while looping", (int)(traps - traps_at_ready));
    if (wl_tamper) /* a debugger clears DR7 */
        run_debugger(OP_CLEAR, &dr0, &dr7);
    check_registers("after trigger");
    check_traps("after trigger", hw_traps);

    wl_finish("debugregs", hw_traps ? NULL : "hardware watchpoints do not fire on this machine: DR0/DR7 checked through ptrace only");
}
