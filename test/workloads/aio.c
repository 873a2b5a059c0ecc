/*
 * aio contexts (io_setup) and their rings.
 *   ctx A  io_setup(1): untouched, empty ring
 *   ctx B  io_setup(100): 300 writes to /dev/null submitted and reaped (so head and tail have
 *          wrapped round the ring), then 3 more left completed and unread (data 1001..1003,
 *          results 7, 8, 9 bytes); its ring moved by mremap to an address of its own (the
 *          kernel follows: the context's id is the ring's new address)
 * After the trigger: each ring's nr, head and tail as before; ctx A has no event; ctx B gives its
 * 3 events in order (data, obj, res) then none; then on ctx B a poll of a pipe that completes
 * only once the pipe is written (POLLIN), and a write to a file (its bytes in the file), each
 * event with its data; ctx A takes a write too; the head and tail move as the kernel moves them.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/mman.h>

struct ring {
    unsigned id, nr, head, tail, magic, compat, incompat, header;
    struct io_event events[];
};

static long io_setup(unsigned n, aio_context_t *c) { return syscall(SYS_io_setup, n, c); }
static long io_submit(aio_context_t c, long n, struct iocb **p) { return syscall(SYS_io_submit, c, n, p); }
static long io_getevents(aio_context_t c, long min, long max, struct io_event *e, struct timespec *t)
{
    return syscall(SYS_io_getevents, c, min, max, e, t);
}

static struct iocb cb(int fd, unsigned op, void *buf, size_t len, uint64_t data)
{
    struct iocb c;
    memset(&c, 0, sizeof c);
    c.aio_fildes = (uint32_t)fd;
    c.aio_lio_opcode = (uint16_t)op;
    c.aio_buf = (uint64_t)(uintptr_t)buf;
    c.aio_nbytes = len;
    c.aio_data = data;
    return c;
}

static int submit(aio_context_t c, struct iocb *one)
{
    return io_submit(c, 1, &one) == 1;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> <dir>");
    aio_context_t a = 0, b = 0;
    if (io_setup(1, &a) != 0 || io_setup(100, &b) != 0) {
        printf("FAIL aio: io_setup: %s\n", strerror(errno));
        return 1;
    }
    int null = open("/dev/null", O_WRONLY);
    static char buf[16] = "0123456789abcdef";
    static struct iocb last[3];
    struct io_event ev[4];
    for (int i = 0; i < 300; i++) {
        struct iocb c = cb(null, IOCB_CMD_PWRITE, buf, 1, (uint64_t)i);
        if (!submit(b, &c) || io_getevents(b, 1, 1, ev, NULL) != 1) {
            printf("FAIL aio: write %d: %s\n", i, strerror(errno));
            return 1;
        }
    }
    for (int i = 0; i < 3; i++) {
        last[i] = cb(null, IOCB_CMD_PWRITE, buf, (size_t)(7 + i), (uint64_t)(1001 + i));
        if (!submit(b, &last[i])) {
            printf("FAIL aio: write %d: %s\n", i, strerror(errno));
            return 1;
        }
    }
    close(null);
    /* Move ctx B's ring to an address of its own (reserved first, so that the place is free). */
    struct ring *rb0 = (struct ring *)(uintptr_t)b;
    size_t len = (sizeof(struct ring) + rb0->nr * sizeof(struct io_event) + 4095) & ~(size_t)4095;
    void *to = mmap(NULL, len + 8 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *moved = to == MAP_FAILED ? MAP_FAILED : mremap(rb0, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (char *)to + 4 * 4096);
    if (moved == MAP_FAILED) {
        printf("FAIL aio: mremap of the ring: %s\n", strerror(errno));
        return 1;
    }
    b = (aio_context_t)(uintptr_t)moved;
    volatile struct ring *ra = (struct ring *)(uintptr_t)a, *rb = (struct ring *)moved;
    unsigned nr[2] = {ra->nr, rb->nr}, head[2] = {ra->head, rb->head}, tail[2] = {ra->tail, rb->tail};
    if (tail[1] != (head[1] + 3) % nr[1] || head[1] != 300 % nr[1]) {
        printf("FAIL aio: ring B before: head %u tail %u nr %u\n", head[1], tail[1], nr[1]);
        return 1;
    }
    const char *dir = argv[2];
    wl_ready();

    while (!wl_triggered())
        wl_busy_ms(20);
    if (wl_tamper)
        rb->head = (rb->head + 1) % rb->nr;

    WL_CHECK(ra->nr == nr[0] && ra->head == head[0] && ra->tail == tail[0], "ring A: nr %u head %u tail %u, expected %u %u %u", ra->nr, ra->head, ra->tail, nr[0],
             head[0], tail[0]);
    WL_CHECK(rb->nr == nr[1] && rb->head == head[1] && rb->tail == tail[1], "ring B: nr %u head %u tail %u, expected %u %u %u", rb->nr, rb->head, rb->tail, nr[1],
             head[1], tail[1]);
    struct timespec zero = {0, 0};
    long n = io_getevents(a, 0, 4, ev, &zero);
    WL_CHECK(n == 0, "ctx A: io_getevents gave %ld (%s), expected 0", n, n < 0 ? strerror(errno) : "events");
    n = io_getevents(b, 0, 4, ev, &zero);
    if (n != 3)
        wl_fail("ctx B: io_getevents gave %ld (%s), expected its 3 events", n, n < 0 ? strerror(errno) : "count");
    for (long i = 0; i < n && i < 3; i++)
        WL_CHECK(ev[i].data == (uint64_t)(1001 + i) && ev[i].obj == (uint64_t)(uintptr_t)&last[i] && ev[i].res == 7 + i && ev[i].res2 == 0,
                 "ctx B: event %ld is data %llu obj %llx res %lld", i, (unsigned long long)ev[i].data, (unsigned long long)ev[i].obj, (long long)ev[i].res);
    WL_CHECK(rb->head == (head[1] + 3) % nr[1], "ring B: head %u after reading, expected %u", rb->head, (head[1] + 3) % nr[1]);

    /* New requests: a poll that completes only when its pipe is written, a write to a file. */
    int p[2];
    char path[4096];
    snprintf(path, sizeof path, "%s/aio.out", dir);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (pipe(p) != 0 || f < 0) {
        wl_fail("pipe or open %s: %s", path, strerror(errno));
        wl_finish("aio", NULL);
    }
    struct iocb pc = cb(p[0], IOCB_CMD_POLL, NULL, 0, 77);
    pc.aio_buf = POLLIN;
    struct iocb wc = cb(f, IOCB_CMD_PWRITE, buf, 16, 78);
    struct iocb ac = cb(f, IOCB_CMD_PWRITE, buf, 4, 79);
    ac.aio_offset = 16;
    WL_CHECK(submit(b, &pc), "ctx B: poll not submitted: %s", strerror(errno));
    n = io_getevents(b, 0, 4, ev, &zero);
    WL_CHECK(n == 0, "ctx B: %ld events before the pipe was written", n);
    WL_CHECK(submit(b, &wc), "ctx B: write not submitted: %s", strerror(errno));
    n = io_getevents(b, 1, 1, ev, NULL);
    WL_CHECK(n == 1 && ev[0].data == 78 && ev[0].res == 16, "ctx B: the write's event: %ld, data %llu res %lld", n, (unsigned long long)ev[0].data,
             (long long)ev[0].res);
    (void)!write(p[1], "x", 1);
    struct timespec sec = {2, 0};
    n = io_getevents(b, 1, 1, ev, &sec);
    WL_CHECK(n == 1 && ev[0].data == 77 && (ev[0].res & POLLIN), "ctx B: the poll's event: %ld, data %llu res %lld", n, (unsigned long long)ev[0].data,
             (long long)ev[0].res);
    WL_CHECK(rb->head == rb->tail && rb->tail == (tail[1] + 2) % nr[1], "ring B: head %u tail %u at the end, expected %u", rb->head, rb->tail,
             (tail[1] + 2) % nr[1]);
    WL_CHECK(submit(a, &ac), "ctx A: write not submitted: %s", strerror(errno));
    n = io_getevents(a, 1, 1, ev, &sec);
    WL_CHECK(n == 1 && ev[0].data == 79 && ev[0].res == 4, "ctx A: the write's event: %ld", n);
    char got[21] = {0};
    WL_CHECK(pread(f, got, 20, 0) == 20 && memcmp(got, "0123456789abcdef0123", 20) == 0, "the file has %s", got);
    unlink(path);
    wl_finish("aio", NULL);
}
