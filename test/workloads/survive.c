/*
 * survive: a process that cptrst lets go of in a hurry (killed or interrupted in the middle of a
 * checkpoint) must carry on exactly as it was.
 *
 *   survive <trigger> <MiB>
 *
 * Sets up: <MiB> of private anonymous memory filled with a known pattern; a blocked mask of
 * SIGUSR1, SIGHUP and SIGRTMIN+3; an alternate signal stack; a SIGUSR2 handler (SIGUSR2 also
 * ends the loop, like the trigger). Then loops on blocking system calls made from assembly
 * (clock_nanosleep and ppoll in turn, 20 ms each) with known values in rbx rbp r12-r15, xmm8
 * (ymm8 with AVX) and xmm15, which are compared after every call: a task put back wrongly after
 * an interrupted call shows up there. A call may end early with EINTR, nothing else. At the
 * end: every byte of memory, the mask, the alternate stack, and the counts of calls.
 */
#include "common.h"

#include <cpuid.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>

struct callblk {
    uint64_t nr;          /* 0 */
    uint64_t a[4];        /* 8: rdi rsi rdx r10 */
    uint64_t gin[6];      /* 40: rbx rbp r12 r13 r14 r15 */
    uint64_t gout[6];     /* 88 */
    uint64_t result;      /* 136 */
    uint64_t avx;         /* 144 */
    uint64_t pad[1];      /* 152 */
    uint8_t vin[32];      /* 160: ymm8 (xmm8 without AVX) */
    uint8_t vout[32];     /* 192 */
    uint8_t xin15[16];    /* 224 */
    uint8_t xout15[16];   /* 240 */
};
_Static_assert(offsetof(struct callblk, gin) == 40, "layout");
_Static_assert(offsetof(struct callblk, result) == 136, "layout");
_Static_assert(offsetof(struct callblk, vin) == 160, "layout");
_Static_assert(offsetof(struct callblk, xout15) == 240, "layout");

__attribute__((aligned(64), used)) struct callblk sv_blk;
void sv_call(void);

/* One system call with known values in the callee-saved registers and two vector registers,
 * stored again right after it: nothing else runs in between. */
__asm__(".text\n"
        ".globl sv_call\n"
        ".type sv_call, @function\n"
        "sv_call:\n"
        "push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
        "mov sv_blk+8(%rip), %rdi\n"
        "mov sv_blk+16(%rip), %rsi\n"
        "mov sv_blk+24(%rip), %rdx\n"
        "mov sv_blk+32(%rip), %r10\n"
        "xor %r8d, %r8d\n"
        "mov $8, %r9d\n"
        "mov sv_blk+40(%rip), %rbx\n"
        "mov sv_blk+48(%rip), %rbp\n"
        "mov sv_blk+56(%rip), %r12\n"
        "mov sv_blk+64(%rip), %r13\n"
        "mov sv_blk+72(%rip), %r14\n"
        "mov sv_blk+80(%rip), %r15\n"
        "cmpq $0, sv_blk+144(%rip)\n"
        "je 1f\n"
        "vmovdqu sv_blk+160(%rip), %ymm8\n"
        "jmp 2f\n"
        "1: movdqu sv_blk+160(%rip), %xmm8\n"
        "2: movdqu sv_blk+224(%rip), %xmm15\n"
        "mov sv_blk+0(%rip), %rax\n"
        "syscall\n"
        "mov %rax, sv_blk+136(%rip)\n"
        "mov %rbx, sv_blk+88(%rip)\n"
        "mov %rbp, sv_blk+96(%rip)\n"
        "mov %r12, sv_blk+104(%rip)\n"
        "mov %r13, sv_blk+112(%rip)\n"
        "mov %r14, sv_blk+120(%rip)\n"
        "mov %r15, sv_blk+128(%rip)\n"
        "movdqu %xmm15, sv_blk+240(%rip)\n"
        "cmpq $0, sv_blk+144(%rip)\n"
        "je 3f\n"
        "vmovdqu %ymm8, sv_blk+192(%rip)\n"
        "vzeroupper\n"
        "jmp 4f\n"
        "3: movdqu %xmm8, sv_blk+192(%rip)\n"
        "4: pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
        "ret\n"
        ".size sv_call, .-sv_call\n");

static volatile sig_atomic_t got_usr2;
static void on_usr2(int sig)
{
    (void)sig;
    got_usr2 = 1;
}

static int have_avx(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & bit_AVX) || !(c & bit_OSXSAVE))
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <MiB>");
    size_t mib = (size_t)strtoul(argv[2], NULL, 10);
    size_t words = mib * 1024 * 1024 / 8;
    const uint64_t seed = 0x5eed5;

    uint64_t *mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (size_t i = 0; i < words; i++)
        mem[i] = wl_pat64(seed, i);

    sigset_t want;
    sigemptyset(&want);
    sigaddset(&want, SIGUSR1);
    sigaddset(&want, SIGHUP);
    sigaddset(&want, SIGRTMIN + 3);
    sigprocmask(SIG_SETMASK, &want, NULL);
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);

    sv_blk.avx = (uint64_t)have_avx();
    wl_ready();

    struct timespec ts = {0, 20 * 1000 * 1000};
    uint64_t calls = 0, bad_regs = 0;
    for (uint64_t round = 1; !got_usr2; round++) {
        if (round % 16 == 0 && wl_triggered())
            break;
        for (int k = 0; k < 6; k++)
            sv_blk.gin[k] = wl_pat64(round, (uint64_t)k);
        for (int k = 0; k < 32; k++)
            sv_blk.vin[k] = wl_pat8(round, (uint64_t)k + 100);
        for (int k = 0; k < 16; k++)
            sv_blk.xin15[k] = wl_pat8(round, (uint64_t)k + 200);
        if (round & 1) {
            sv_blk.nr = SYS_clock_nanosleep; /* ERESTART_RESTARTBLOCK when cut short */
            sv_blk.a[0] = CLOCK_MONOTONIC;
            sv_blk.a[1] = 0;
            sv_blk.a[2] = (uint64_t)(uintptr_t)&ts;
            sv_blk.a[3] = 0;
        } else {
            sv_blk.nr = SYS_ppoll; /* ERESTARTNOHAND when cut short */
            sv_blk.a[0] = 0;
            sv_blk.a[1] = 0;
            sv_blk.a[2] = (uint64_t)(uintptr_t)&ts;
            sv_blk.a[3] = 0;
        }
        sv_call();
        calls++;
        long r = (long)sv_blk.result;
        if (r != 0 && r != -EINTR)
            wl_fail("round %llu: syscall %llu returned %ld", (unsigned long long)round, (unsigned long long)sv_blk.nr, r);
        int diff = memcmp(sv_blk.gin, sv_blk.gout, sizeof sv_blk.gin) != 0 ||
                   memcmp(sv_blk.vin, sv_blk.vout, sv_blk.avx ? 32 : 16) != 0 ||
                   memcmp(sv_blk.xin15, sv_blk.xout15, 16) != 0;
        if (diff && bad_regs++ == 0) {
            for (int k = 0; k < 6; k++)
                if (sv_blk.gin[k] != sv_blk.gout[k])
                    wl_fail("round %llu: register %d was %#llx, is %#llx", (unsigned long long)round, k,
                            (unsigned long long)sv_blk.gin[k], (unsigned long long)sv_blk.gout[k]);
            if (memcmp(sv_blk.vin, sv_blk.vout, sv_blk.avx ? 32 : 16) != 0)
                wl_fail("round %llu: %s8 changed", (unsigned long long)round, sv_blk.avx ? "ymm" : "xmm");
            if (memcmp(sv_blk.xin15, sv_blk.xout15, 16) != 0)
                wl_fail("round %llu: xmm15 changed", (unsigned long long)round);
        }
        sigset_t now;
        sigprocmask(SIG_SETMASK, NULL, &now);
        for (int s = 1; s < 65; s++)
            if (sigismember(&now, s) != sigismember(&want, s)) {
                wl_fail("round %llu: signal %d %s blocked", (unsigned long long)round, s, sigismember(&now, s) ? "became" : "is no longer");
                sigprocmask(SIG_SETMASK, &want, NULL);
                break;
            }
    }
    if (bad_regs > 1)
        wl_fail("registers differed after %llu calls in all", (unsigned long long)bad_regs);

    if (wl_tamper)
        mem[words / 2] ^= 1;
    for (size_t i = 0; i < words; i++)
        if (mem[i] != wl_pat64(seed, i)) {
            wl_fail("memory word %zu of %zu differs", i, words);
            break;
        }
    stack_t now;
    sigaltstack(NULL, &now);
    WL_CHECK(now.ss_sp == altstack && now.ss_size == sizeof altstack && now.ss_flags == 0,
             "sigaltstack is %p/%zu/%d, not %p/%zu/0", now.ss_sp, now.ss_size, now.ss_flags, (void *)altstack, sizeof altstack);
    WL_CHECK(calls > 0, "no call made");
    wl_finish("survive", NULL);
}
