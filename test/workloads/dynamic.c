/*
 * dynamic: a dynamically linked process using libc's malloc and the vDSO.
 * State: a singly linked list of 10000 malloc'd nodes with per-node checksums
 * (random sizes, so both brk and mmap'd chunks may be used), a loop reading
 * CLOCK_MONOTONIC through the vDSO that must never go backwards.
 * Checks after the trigger: every node (index, payload, checksum, count),
 * monotonic time never went backwards, the vDSO clock agrees with the
 * clock_gettime system call, the [vdso] mapping is where AT_SYSINFO_EHDR says,
 * malloc/free still work (more nodes, a large block, realloc), and the main thread's robust
 * futex list and clear_child_tid (which libc registers at start) are the same.
 */
#include "common.h"

#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* The main thread's robust list head and clear_child_tid address. */
static void futex_addresses(void **head, size_t *len, void **tid_addr)
{
    if (syscall(SYS_get_robust_list, 0, head, len) != 0)
        wl_fail("get_robust_list: %s", strerror(errno));
    if (prctl(PR_GET_TID_ADDRESS, tid_addr, 0, 0, 0) != 0)
        wl_fail("PR_GET_TID_ADDRESS: %s", strerror(errno));
}

#define NODES 10000
#define SEED_NODES 0xD1A

struct node {
    struct node *next;
    uint32_t index;
    uint32_t len;
    uint64_t sum;
    uint8_t payload[];
};

static uint64_t node_sum(const struct node *n)
{
    uint64_t h = 0xCBF29CE484222325ull ^ n->index;
    for (uint32_t i = 0; i < n->len; i++)
        h = (h ^ n->payload[i]) * 0x100000001B3ull;
    return h;
}

static struct node *new_node(uint32_t index, uint32_t len)
{
    struct node *n = malloc(sizeof *n + len);
    if (n == NULL)
        return NULL;
    n->next = NULL;
    n->index = index;
    n->len = len;
    for (uint32_t i = 0; i < len; i++)
        n->payload[i] = wl_pat8(SEED_NODES + index, i);
    n->sum = node_sum(n);
    return n;
}

/* Returns the number of nodes, recording the first bad one. */
static long check_list(const struct node *head, uint32_t first_index)
{
    long count = 0;
    for (const struct node *n = head; n != NULL; n = n->next, count++) {
        if (n->index != first_index + (uint32_t)count) {
            wl_fail("node %ld has index %u", count, n->index);
            return count;
        }
        if (node_sum(n) != n->sum) {
            wl_fail("node %u checksum differs", n->index);
            return count;
        }
        long bad = wl_check_pattern(n->payload, n->len, SEED_NODES + n->index);
        if (bad >= 0) {
            wl_fail("node %u payload byte %ld differs", n->index, bad);
            return count;
        }
    }
    return count;
}

static uint64_t syscall_now_ns(clockid_t clk)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Start address of the [vdso] line of /proc/self/maps, 0 if none. */
static unsigned long vdso_start_from_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return 0;
    char line[512];
    unsigned long start = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, "[vdso]") != NULL) {
            start = strtoul(line, NULL, 16);
            break;
        }
    fclose(f);
    return start;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");

    unsigned long vdso_ehdr = getauxval(AT_SYSINFO_EHDR);
    struct node *head = NULL, **tail = &head;
    uint64_t rng = 12345;
    for (uint32_t i = 0; i < NODES; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        /* mostly small chunks, every 1000th one large enough for mmap */
        uint32_t len = (i % 1000 == 999) ? 200000 + (uint32_t)(rng >> 50) : 1 + (uint32_t)((rng >> 33) % 600);
        struct node *n = new_node(i, len);
        if (n == NULL) {
            wl_fail("malloc failed at node %u", i);
            break;
        }
        *tail = n;
        tail = &n->next;
    }

    void *rl_head, *tid_addr;
    size_t rl_len;
    futex_addresses(&rl_head, &rl_len, &tid_addr);
    WL_CHECK(rl_head != NULL && tid_addr != NULL, "libc registered no robust list or tid address");

    wl_ready();

    uint64_t last = wl_now_ns(CLOCK_MONOTONIC), first = last, backwards = 0, reads = 0;
    do {
        for (int i = 0; i < 10000; i++) {
            uint64_t t = wl_now_ns(CLOCK_MONOTONIC);
            if (t < last)
                backwards++;
            last = t;
            reads++;
        }
    } while (!wl_triggered());

    if (wl_tamper)
        head->next->next->payload[0] ^= 1;

    WL_CHECK(backwards == 0, "CLOCK_MONOTONIC went backwards %llu times", (unsigned long long)backwards);
    WL_CHECK(reads > 0 && last >= first, "clock loop did not run");
    long count = check_list(head, 0);
    WL_CHECK(count == NODES, "list has %ld nodes, want %d", count, NODES);

    /* the vDSO must read the same clocks as the kernel (its data page is live) */
    for (int i = 0; i < 2; i++) {
        clockid_t clk = i == 0 ? CLOCK_MONOTONIC : CLOCK_REALTIME;
        uint64_t a = wl_now_ns(clk), k = syscall_now_ns(clk), b = wl_now_ns(clk);
        WL_CHECK(a <= k && k <= b && b - a < 500000000ull,
                 "vDSO clock %d disagrees with the syscall: vdso %llu, kernel %llu, vdso %llu", (int)clk,
                 (unsigned long long)a, (unsigned long long)k, (unsigned long long)b);
    }
    WL_CHECK(wl_now_ns(CLOCK_MONOTONIC) >= last, "CLOCK_MONOTONIC went backwards after the loop");
    WL_CHECK(vdso_ehdr != 0 && getauxval(AT_SYSINFO_EHDR) == vdso_ehdr, "AT_SYSINFO_EHDR changed");
    unsigned long vdso_now = vdso_start_from_maps();
    WL_CHECK(vdso_now == vdso_ehdr, "[vdso] is at %#lx in /proc/self/maps, AT_SYSINFO_EHDR says %#lx", vdso_now,
             vdso_ehdr);

    /* malloc still works after the trigger: more nodes, a large block, realloc, free */
    struct node *extra = NULL, **etail = &extra;
    for (uint32_t i = 0; i < 1000; i++) {
        struct node *n = new_node(NODES + i, 1 + i % 300);
        if (n == NULL) {
            wl_fail("malloc after trigger failed");
            break;
        }
        *etail = n;
        etail = &n->next;
    }
    WL_CHECK(check_list(extra, NODES) == 1000, "new list after trigger is wrong");
    uint8_t *big = malloc(8 << 20);
    if (big == NULL) {
        wl_fail("8 MiB malloc after trigger failed");
    } else {
        memset(big, 0xA5, 8 << 20);
        big = realloc(big, 16 << 20);
        WL_CHECK(big != NULL && big[(8 << 20) - 1] == 0xA5, "realloc after trigger lost data");
        free(big);
    }
    for (struct node *n = head, *next; n != NULL; n = next) {
        next = n->next;
        free(n);
    }
    for (struct node *n = extra, *next; n != NULL; n = next) {
        next = n->next;
        free(n);
    }
    void *again = malloc(100);
    WL_CHECK(again != NULL, "malloc after free failed");
    free(again);
    void *rl_head2, *tid_addr2;
    size_t rl_len2;
    futex_addresses(&rl_head2, &rl_len2, &tid_addr2);
    WL_CHECK(rl_head2 == rl_head && rl_len2 == rl_len, "robust list %p/%zu, was %p/%zu", rl_head2, rl_len2, rl_head, rl_len);
    WL_CHECK(tid_addr2 == tid_addr, "clear_child_tid %p, was %p", tid_addr2, tid_addr);

    wl_finish("dynamic", NULL);
}
