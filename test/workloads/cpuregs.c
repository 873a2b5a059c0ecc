/*
 * cpuregs: the CPU state of a process interrupted in the middle of user code.
 *
 * Each round, cpu_round() (assembly, below) loads known values into
 *   rbx rbp rsi rdi rdx r8-r15 (rax/rcx are the loop counters, DF is set),
 *   the x87 stack (8 distinct long doubles) and control word,
 *   MXCSR (non-default rounding, FTZ/DAZ, sticky flags),
 *   xmm0-15 / ymm0-15 / zmm0-31 and k0-k7 (as far as the CPU has them),
 * spins for a fixed number of iterations comparing every general register
 * against memory (touching nothing else), then stores everything, and C
 * compares the stored values with what was loaded. Values change every round.
 * Also checked: fs_base (a __thread variable, ARCH_GET_FS, %fs:0 = TCB),
 * gs_base (ARCH_SET_GS at start; ARCH_GET_GS and a %gs:-relative read),
 * the segment selectors, and rsp inside the loop.
 * Loops load-spin-store-compare until the trigger exists.
 */
#include "common.h"

#include <asm/prctl.h>
#include <stddef.h>
#include <sys/syscall.h>

#define NGPR 13 /* rbx rbp rsi rdi rdx r8 r9 r10 r11 r12 r13 r14 r15 */
static const char *const gpr_names[NGPR] = {"rbx", "rbp", "rsi", "rdi", "rdx", "r8",  "r9",
                                            "r10", "r11", "r12", "r13", "r14", "r15"};

enum { MODE_XMM = 0, MODE_YMM = 1, MODE_ZMM = 2 };

struct regblock {
    uint64_t gin[16];        /* 0 */
    uint64_t gout[16];       /* 128 */
    uint64_t iters;          /* 256 */
    uint64_t mode;           /* 264 */
    uint64_t rflags_out;     /* 272 */
    uint64_t rax_out;        /* 280 */
    uint64_t rcx_out;        /* 288 */
    uint64_t rsp_saved;      /* 296 */
    uint64_t rsp_out;        /* 304 */
    uint32_t mxcsr_in;       /* 312 */
    uint32_t mxcsr_out;      /* 316 */
    uint16_t fcw_in;         /* 320 */
    uint16_t fcw_out;        /* 322 */
    uint16_t fsw_out;        /* 324 */
    uint16_t fcw_default;    /* 326 */
    uint32_t mxcsr_default;  /* 328 */
    uint8_t pad0[384 - 332];
    uint8_t x87_in[8][16];   /* 384 */
    uint8_t x87_out[8][16];  /* 512 */
    uint8_t zin[32][64];     /* 640 */
    uint8_t zout[32][64];    /* 2688 */
    uint64_t kin[8];         /* 4736 */
    uint64_t kout[8];        /* 4800 */
};

#define O_GIN 0
#define O_GOUT 128
#define O_ITERS 256
#define O_MODE 264
#define O_RFLAGS 272
#define O_RAX 280
#define O_RCX 288
#define O_RSPSAVED 296
#define O_RSPOUT 304
#define O_MXIN 312
#define O_MXOUT 316
#define O_FCWIN 320
#define O_FCWOUT 322
#define O_FSWOUT 324
#define O_FCWDEF 326
#define O_MXDEF 328
#define O_X87IN 384
#define O_X87OUT 512
#define O_ZIN 640
#define O_ZOUT 2688
#define O_KIN 4736
#define O_KOUT 4800

_Static_assert(offsetof(struct regblock, gout) == O_GOUT, "layout");
_Static_assert(offsetof(struct regblock, iters) == O_ITERS, "layout");
_Static_assert(offsetof(struct regblock, mode) == O_MODE, "layout");
_Static_assert(offsetof(struct regblock, rflags_out) == O_RFLAGS, "layout");
_Static_assert(offsetof(struct regblock, rax_out) == O_RAX, "layout");
_Static_assert(offsetof(struct regblock, rcx_out) == O_RCX, "layout");
_Static_assert(offsetof(struct regblock, rsp_saved) == O_RSPSAVED, "layout");
_Static_assert(offsetof(struct regblock, rsp_out) == O_RSPOUT, "layout");
_Static_assert(offsetof(struct regblock, mxcsr_in) == O_MXIN, "layout");
_Static_assert(offsetof(struct regblock, mxcsr_out) == O_MXOUT, "layout");
_Static_assert(offsetof(struct regblock, fcw_in) == O_FCWIN, "layout");
_Static_assert(offsetof(struct regblock, fcw_out) == O_FCWOUT, "layout");
_Static_assert(offsetof(struct regblock, fsw_out) == O_FSWOUT, "layout");
_Static_assert(offsetof(struct regblock, fcw_default) == O_FCWDEF, "layout");
_Static_assert(offsetof(struct regblock, mxcsr_default) == O_MXDEF, "layout");
_Static_assert(offsetof(struct regblock, x87_in) == O_X87IN, "layout");
_Static_assert(offsetof(struct regblock, x87_out) == O_X87OUT, "layout");
_Static_assert(offsetof(struct regblock, zin) == O_ZIN, "layout");
_Static_assert(offsetof(struct regblock, zout) == O_ZOUT, "layout");
_Static_assert(offsetof(struct regblock, kin) == O_KIN, "layout");
_Static_assert(offsetof(struct regblock, kout) == O_KOUT, "layout");

__attribute__((aligned(64), used)) struct regblock cpu_blk;

void cpu_round(void);

#define S_(x) #x
#define S(x) S_(x)
#define B(off) "cpu_blk+" S(off)
/* general registers, in gin/gout order */
#define GREG(i, r) "mov " B(O_GIN) "+" #i "*8(%rip), %" #r "\n"
#define GCMP(i, r) "cmp " B(O_GIN) "+" #i "*8(%rip), %" #r "\n jne 9f\n"
#define GSTO(i, r) "mov %" #r ", " B(O_GOUT) "+" #i "*8(%rip)\n"
#define GALL(M) M(0, rbx) M(1, rbp) M(2, rsi) M(3, rdi) M(4, rdx) M(5, r8) M(6, r9) M(7, r10) \
    M(8, r11) M(9, r12) M(10, r13) M(11, r14) M(12, r15)
/* vector registers */
#define LX(n) "movdqu " B(O_ZIN) "+" #n "*64(%rip), %xmm" #n "\n"
#define SX(n) "movdqu %xmm" #n ", " B(O_ZOUT) "+" #n "*64(%rip)\n"
#define LY(n) "vmovdqu " B(O_ZIN) "+" #n "*64(%rip), %ymm" #n "\n"
#define SY(n) "vmovdqu %ymm" #n ", " B(O_ZOUT) "+" #n "*64(%rip)\n"
#define LZ(n) "vmovdqu64 " B(O_ZIN) "+" #n "*64(%rip), %zmm" #n "\n"
#define SZ(n) "vmovdqu64 %zmm" #n ", " B(O_ZOUT) "+" #n "*64(%rip)\n"
#define LK(n) "kmovq " B(O_KIN) "+" #n "*8(%rip), %k" #n "\n"
#define SK(n) "kmovq %k" #n ", " B(O_KOUT) "+" #n "*8(%rip)\n"
#define R16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define R32(M) R16(M) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23) \
    M(24) M(25) M(26) M(27) M(28) M(29) M(30) M(31)
#define R8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define X87L(n) "fldt " B(O_X87IN) "+" #n "*16(%rip)\n"
#define X87S(n) "fstpt " B(O_X87OUT) "+" #n "*16(%rip)\n"

__asm__(".text\n"
        ".globl cpu_round\n"
        ".type cpu_round, @function\n"
        "cpu_round:\n"
        "push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
        /* x87: empty stack, control word, then 8 pushes so st(i) = x87_in[i] */
        "fninit\n"
        "fldcw " B(O_FCWIN) "(%rip)\n"
        X87L(7) X87L(6) X87L(5) X87L(4) X87L(3) X87L(2) X87L(1) X87L(0)
        "ldmxcsr " B(O_MXIN) "(%rip)\n"
        "mov " B(O_MODE) "(%rip), %rax\n"
        "cmp $2, %rax\n je 2f\n"
        "cmp $1, %rax\n je 1f\n"
        R16(LX) "jmp 3f\n"
        "1:\n" R16(LY) "jmp 3f\n"
        "2:\n" R32(LZ) R8(LK)
        "3:\n"
        GALL(GREG)
        "mov %rsp, " B(O_RSPSAVED) "(%rip)\n"
        "mov " B(O_ITERS) "(%rip), %rcx\n"
        "xor %eax, %eax\n"
        "std\n"
        /* the spin loop: general registers and rsp only */
        ".p2align 5\n"
        "4:\n"
        GALL(GCMP)
        "cmp " B(O_RSPSAVED) "(%rip), %rsp\n jne 9f\n"
        "inc %rax\n"
        "dec %rcx\n"
        "jnz 4b\n"
        "9:\n"
        GALL(GSTO)
        "mov %rax, " B(O_RAX) "(%rip)\n"
        "mov %rcx, " B(O_RCX) "(%rip)\n"
        "mov %rsp, " B(O_RSPOUT) "(%rip)\n"
        "pushfq\n pop %rax\n mov %rax, " B(O_RFLAGS) "(%rip)\n cld\n"
        "mov " B(O_MODE) "(%rip), %rax\n"
        "cmp $2, %rax\n je 6f\n"
        "cmp $1, %rax\n je 5f\n"
        R16(SX) "jmp 7f\n"
        "5:\n" R16(SY) "vzeroupper\n jmp 7f\n"
        "6:\n" R32(SZ) R8(SK) "vzeroupper\n"
        "7:\n"
        "stmxcsr " B(O_MXOUT) "(%rip)\n"
        "fnstcw " B(O_FCWOUT) "(%rip)\n"
        "fnstsw " B(O_FSWOUT) "(%rip)\n"
        X87S(0) X87S(1) X87S(2) X87S(3) X87S(4) X87S(5) X87S(6) X87S(7)
        "ldmxcsr " B(O_MXDEF) "(%rip)\n"
        "fldcw " B(O_FCWDEF) "(%rip)\n"
        "pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
        "ret\n"
        ".size cpu_round, .-cpu_round\n");

static __thread volatile uint64_t tls_word = 0x7157A11CE0FF5E7ull;
static volatile uint64_t gs_area[4] __attribute__((aligned(64)));

static unsigned long arch_get(int code)
{
    unsigned long v = 0;
    if (syscall(SYS_arch_prctl, code, &v) != 0)
        return (unsigned long)-1;
    return v;
}

static uint64_t read_fs0(void)
{
    uint64_t v;
    __asm__ volatile("mov %%fs:0, %0" : "=r"(v));
    return v;
}

static uint64_t read_gs(int idx)
{
    uint64_t v;
    if (idx == 0)
        __asm__ volatile("mov %%gs:0, %0" : "=r"(v));
    else
        __asm__ volatile("mov %%gs:8, %0" : "=r"(v));
    return v;
}

struct selectors {
    uint16_t cs, ss, ds, es, fs, gs;
};

static struct selectors read_selectors(void)
{
    struct selectors s;
    __asm__ volatile("mov %%cs, %0" : "=r"(s.cs));
    __asm__ volatile("mov %%ss, %0" : "=r"(s.ss));
    __asm__ volatile("mov %%ds, %0" : "=r"(s.ds));
    __asm__ volatile("mov %%es, %0" : "=r"(s.es));
    __asm__ volatile("mov %%fs, %0" : "=r"(s.fs));
    __asm__ volatile("mov %%gs, %0" : "=r"(s.gs));
    return s;
}

static void prepare_round(uint64_t round)
{
    for (int i = 0; i < NGPR; i++)
        cpu_blk.gin[i] = wl_pat64(round, (uint64_t)i);
    for (int r = 0; r < 32; r++)
        for (int b = 0; b < 64; b++)
            cpu_blk.zin[r][b] = wl_pat8(round * 77 + 1, (uint64_t)(r * 64 + b));
    for (int k = 0; k < 8; k++)
        cpu_blk.kin[k] = wl_pat64(round + 100000, (uint64_t)k);
    for (int i = 0; i < 8; i++) {
        long double v = (long double)(round * 8 + (uint64_t)i + 1) / 7.0L;
        if (i & 1)
            v = -v;
        memset(cpu_blk.x87_in[i], 0, 16);
        memcpy(cpu_blk.x87_in[i], &v, 10);
    }
    /* FTZ, round toward zero, all exceptions masked, DAZ, some sticky flags */
    cpu_blk.mxcsr_in = 0x8000 | 0x6000 | 0x1F80 | 0x0040 | (uint32_t)(round % 63 + 1);
    /* exceptions masked, precision: double, rounding: down/up/toward zero */
    cpu_blk.fcw_in = (uint16_t)(0x007F | 0x0200 | (uint16_t)((round % 3 + 1) << 10));
    memset(cpu_blk.zout, 0, sizeof cpu_blk.zout);
    memset(cpu_blk.kout, 0, sizeof cpu_blk.kout);
    memset(cpu_blk.x87_out, 0, sizeof cpu_blk.x87_out);
    memset(cpu_blk.gout, 0, sizeof cpu_blk.gout);
}

static uint16_t first_fsw;
static int have_fsw;

static void compare_round(uint64_t round)
{
    const struct regblock *b = &cpu_blk;
    if (b->rcx_out != 0 || b->rax_out != b->iters)
        wl_fail("round %llu: spin loop stopped early (rax %llu rcx %llu of %llu): a register changed while spinning",
                (unsigned long long)round, (unsigned long long)b->rax_out, (unsigned long long)b->rcx_out,
                (unsigned long long)b->iters);
    for (int i = 0; i < NGPR; i++)
        if (b->gout[i] != b->gin[i])
            wl_fail("round %llu: %s %#llx, want %#llx", (unsigned long long)round, gpr_names[i],
                    (unsigned long long)b->gout[i], (unsigned long long)b->gin[i]);
    if (b->rsp_out != b->rsp_saved)
        wl_fail("round %llu: rsp %#llx, want %#llx", (unsigned long long)round, (unsigned long long)b->rsp_out,
                (unsigned long long)b->rsp_saved);
    if (!(b->rflags_out & 0x400))
        wl_fail("round %llu: DF cleared (rflags %#llx)", (unsigned long long)round, (unsigned long long)b->rflags_out);
    if (b->mxcsr_out != b->mxcsr_in)
        wl_fail("round %llu: MXCSR %#x, want %#x", (unsigned long long)round, b->mxcsr_out, b->mxcsr_in);
    if (b->fcw_out != b->fcw_in)
        wl_fail("round %llu: x87 control word %#x, want %#x", (unsigned long long)round, b->fcw_out, b->fcw_in);
    if (!have_fsw) {
        first_fsw = b->fsw_out;
        have_fsw = 1;
    }
    if (b->fsw_out != first_fsw || ((b->fsw_out >> 11) & 7) != 0)
        wl_fail("round %llu: x87 status word %#x, want %#x (TOP 0)", (unsigned long long)round, b->fsw_out, first_fsw);
    for (int i = 0; i < 8; i++)
        if (memcmp(b->x87_out[i], b->x87_in[i], 10) != 0)
            wl_fail("round %llu: st(%d) differs", (unsigned long long)round, i);
    int nregs = b->mode == MODE_ZMM ? 32 : 16;
    int bytes = b->mode == MODE_ZMM ? 64 : b->mode == MODE_YMM ? 32 : 16;
    const char *kind = b->mode == MODE_ZMM ? "zmm" : b->mode == MODE_YMM ? "ymm" : "xmm";
    for (int r = 0; r < nregs; r++)
        for (int k = 0; k < bytes; k++)
            if (b->zout[r][k] != b->zin[r][k]) {
                wl_fail("round %llu: %s%d byte %d is %#x, want %#x", (unsigned long long)round, kind, r, k,
                        b->zout[r][k], b->zin[r][k]);
                break;
            }
    if (b->mode == MODE_ZMM)
        for (int k = 0; k < 8; k++)
            if (b->kout[k] != b->kin[k])
                wl_fail("round %llu: k%d %#llx, want %#llx", (unsigned long long)round, k,
                        (unsigned long long)b->kout[k], (unsigned long long)b->kin[k]);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [iterations-per-round]");
    cpu_blk.iters = argc > 2 ? strtoull(argv[2], NULL, 0) : 100000000ull;
    cpu_blk.fcw_default = 0x037F;
    cpu_blk.mxcsr_default = 0x1F80;

    const char *note = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
        cpu_blk.mode = MODE_ZMM;
    } else if (__builtin_cpu_supports("avx")) {
        cpu_blk.mode = MODE_YMM;
        note = "no avx512f/bw: zmm16-31, zmm upper halves and k0-k7 not checked";
    } else {
        cpu_blk.mode = MODE_XMM;
        note = "no avx: only xmm0-15 checked";
    }

    gs_area[0] = 0x65A5E0000000001ull;
    gs_area[1] = 0x65A5E0000000002ull;
    if (syscall(SYS_arch_prctl, ARCH_SET_GS, (unsigned long)gs_area) != 0)
        wl_fail("ARCH_SET_GS failed: %s", strerror(errno));
    unsigned long fs_base = arch_get(ARCH_GET_FS);
    volatile uint64_t *tls_addr = &tls_word;
    struct selectors sel = read_selectors();
    WL_CHECK(read_gs(0) == gs_area[0], "%%gs:0 does not read gs_area right after ARCH_SET_GS");
    WL_CHECK(read_fs0() == fs_base, "%%fs:0 is not the TCB address at start");

    wl_ready();

    uint64_t round = 1;
    for (;; round++) {
        prepare_round(round);
        cpu_round();
        int done = wl_triggered();
        if (done && wl_tamper)
            cpu_blk.zout[cpu_blk.mode == MODE_ZMM ? 17 : 3][5] ^= 0x40;
        compare_round(round);
        if (done)
            break;
    }

    WL_CHECK(arch_get(ARCH_GET_FS) == fs_base, "ARCH_GET_FS %#lx, want %#lx", arch_get(ARCH_GET_FS), fs_base);
    WL_CHECK(read_fs0() == fs_base, "%%fs:0 %#llx, want the TCB %#lx", (unsigned long long)read_fs0(), fs_base);
    WL_CHECK(&tls_word == tls_addr, "__thread variable moved");
    WL_CHECK(tls_word == 0x7157A11CE0FF5E7ull, "__thread variable %#llx", (unsigned long long)tls_word);
    unsigned long gs_base = arch_get(ARCH_GET_GS);
    WL_CHECK(gs_base == (unsigned long)gs_area, "ARCH_GET_GS %#lx, want %#lx", gs_base, (unsigned long)gs_area);
    uint64_t g0 = read_gs(0), g1 = read_gs(1);
    WL_CHECK(g0 == gs_area[0] && g1 == gs_area[1], "%%gs:0/%%gs:8 read %#llx/%#llx, want %#llx/%#llx",
             (unsigned long long)g0, (unsigned long long)g1, (unsigned long long)gs_area[0],
             (unsigned long long)gs_area[1]);
    struct selectors now = read_selectors();
    WL_CHECK(memcmp(&now, &sel, sizeof now) == 0,
             "segment selectors cs/ss/ds/es/fs/gs %#x/%#x/%#x/%#x/%#x/%#x, were %#x/%#x/%#x/%#x/%#x/%#x", now.cs,
             now.ss, now.ds, now.es, now.fs, now.gs, sel.cs, sel.ss, sel.ds, sel.es, sel.fs, sel.gs);
    WL_CHECK(round >= 1, "no round ran");

    wl_finish("cpuregs", note);
}
