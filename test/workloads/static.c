/*
 * static: a statically linked process (no ld.so, no shared libraries).
 * State: a counter with running sums (closed-form invariants), a pattern in
 * .data (initialised), in .bss (filled at start) and on the stack.
 * Checks after the trigger: sum == n(n+1)/2, sum of squares, xor of 1..n,
 * the three memory patterns, and that the counter advanced after READY.
 */
#include "common.h"

#define BSS_WORDS (256 * 1024) /* 2 MiB */
#define DATA_WORDS 1024
#define SEED_BSS 0x5717C
#define SEED_STACK 0x57ACC

static uint64_t bss_words[BSS_WORDS];
static uint64_t data_words[DATA_WORDS] = {[0] = 0x0123456789ABCDEFull, [DATA_WORDS - 1] = 0xFEDCBA9876543210ull};

static volatile uint64_t counter, sum, sumsq, xsum;

static uint64_t xor_upto(uint64_t n)
{
    switch (n & 3) {
    case 0: return n;
    case 1: return 1;
    case 2: return n + 1;
    default: return 0;
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");

    for (size_t i = 0; i < BSS_WORDS; i++)
        bss_words[i] = wl_pat64(SEED_BSS, i);
    for (size_t i = 1; i < DATA_WORDS - 1; i++)
        data_words[i] = data_words[i - 1] ^ (data_words[i - 1] << 7) ^ i;
    uint64_t data_hash = 0;
    for (size_t i = 0; i < DATA_WORDS; i++)
        data_hash = (data_hash ^ data_words[i]) * 0x100000001B3ull;

    volatile uint8_t stack_bytes[8192];
    wl_fill_pattern(stack_bytes, sizeof stack_bytes, SEED_STACK);

    wl_ready();
    uint64_t counter_at_ready = counter;

    do {
        for (int i = 0; i < 100000; i++) {
            uint64_t n = counter + 1;
            counter = n;
            sum = sum + n;
            sumsq = sumsq + n * n;
            xsum = xsum ^ n;
        }
    } while (!wl_triggered());

    if (wl_tamper)
        bss_words[BSS_WORDS / 3] ^= 0x10;

    uint64_t n = counter;
    WL_CHECK(n > counter_at_ready, "counter did not advance (%llu)", (unsigned long long)n);
    WL_CHECK(sum == n * (n + 1) / 2, "sum %llu != n(n+1)/2 for n=%llu", (unsigned long long)sum,
             (unsigned long long)n);
    /* n(n+1)(2n+1)/6 modulo 2^64, computed without overflowing the division */
    unsigned __int128 sq = (unsigned __int128)n * (n + 1) * (2 * n + 1) / 6;
    WL_CHECK(sumsq == (uint64_t)sq, "sum of squares wrong for n=%llu", (unsigned long long)n);
    WL_CHECK(xsum == xor_upto(n), "xor of 1..n wrong for n=%llu", (unsigned long long)n);

    for (size_t i = 0; i < BSS_WORDS; i++)
        if (bss_words[i] != wl_pat64(SEED_BSS, i)) {
            wl_fail(".bss word %zu differs", i);
            break;
        }
    uint64_t h = 0;
    for (size_t i = 0; i < DATA_WORDS; i++)
        h = (h ^ data_words[i]) * 0x100000001B3ull;
    WL_CHECK(h == data_hash, ".data hash differs");
    WL_CHECK(data_words[0] == 0x0123456789ABCDEFull, ".data word 0 differs");
    long bad = wl_check_pattern(stack_bytes, sizeof stack_bytes, SEED_STACK);
    WL_CHECK(bad < 0, "stack byte %ld differs", bad);

    wl_finish("static", NULL);
}
