/*
 * sockpair <trigger>: a parent and its child talking over two unix socketpairs, each holding one
 * end of each. Over a seqpacket pair the parent sends numbered messages (up to 32 unanswered) and
 * the child answers each (seq * 3 + 1) after a short pause, so messages wait in both directions at
 * any moment. Over a stream pair each side wrote a pattern at the start that the other reads only
 * after the trigger (data in flight both ways). After the trigger the parent sends END; the child
 * checks that every message came once and in order, answers END with its count and exits 0 (or a
 * failure number); the parent checks every answer, the count, the stream data and the child's
 * status. CPT_TAMPER=1 makes the parent miscount the answers.
 */
#include "common.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define WINDOW 32
#define STREAM_BYTES 3000
enum { MSG = 1, END = 2 };
struct msg {
    uint32_t kind;
    uint32_t seq;
};

static int read_pattern(int fd, uint64_t seed)
{
    uint8_t b[STREAM_BYTES];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = read(fd, b + got, sizeof b - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof b; i++)
        if (b[i] != wl_pat8(seed, i))
            return 0;
    return 1;
}

static void write_pattern(int fd, uint64_t seed)
{
    uint8_t b[STREAM_BYTES];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = wl_pat8(seed, i);
    wl_write_all(fd, (const char *)b, sizeof b);
}

static __attribute__((noreturn)) void child(int sp, int st)
{
    uint32_t want = 0;
    write_pattern(st, 2);
    for (;;) {
        struct msg m;
        ssize_t n = recv(sp, &m, sizeof m, 0);
        if (n != (ssize_t)sizeof m)
            _exit(11);
        if (m.kind == END) {
            if (m.seq != want)
                _exit(12);
            struct msg r = { END, want };
            if (send(sp, &r, sizeof r, 0) != (ssize_t)sizeof r)
                _exit(13);
            _exit(read_pattern(st, 1) ? 0 : 14);
        }
        if (m.kind != MSG || m.seq != want)
            _exit(15); /* lost, repeated or out of order */
        want++;
        struct timespec ts = { 0, 200000 };
        nanosleep(&ts, NULL);
        struct msg r = { MSG, m.seq * 3 + 1 };
        if (send(sp, &r, sizeof r, 0) != (ssize_t)sizeof r)
            _exit(16);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    int sp[2], st[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) || socketpair(AF_UNIX, SOCK_STREAM, 0, st)) {
        WL_CHECK(0, "socketpair: %s", strerror(errno));
        wl_finish("sockpair", NULL);
    }
    pid_t c = fork();
    if (c < 0) {
        WL_CHECK(0, "fork: %s", strerror(errno));
        wl_finish("sockpair", NULL);
    }
    if (c == 0) {
        close(sp[0]);
        close(st[0]);
        child(sp[1], st[1]);
    }
    close(sp[1]);
    close(st[1]);
    write_pattern(st[0], 1);
    uint32_t next = 0, answered = 0;
    wl_ready();
    while (!wl_triggered()) {
        if (next - answered < WINDOW) {
            struct msg m = { MSG, next };
            WL_CHECK(send(sp[0], &m, sizeof m, 0) == (ssize_t)sizeof m, "send %u: %s", next, strerror(errno));
            next++;
        }
        struct msg r;
        while (recv(sp[0], &r, sizeof r, MSG_DONTWAIT) == (ssize_t)sizeof r) {
            WL_CHECK(r.kind == MSG && r.seq == answered * 3 + 1, "answer %u is %u/%u", answered, r.kind, r.seq);
            answered++;
        }
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
    struct msg e = { END, next };
    WL_CHECK(send(sp[0], &e, sizeof e, 0) == (ssize_t)sizeof e, "send END: %s", strerror(errno));
    for (;;) {
        struct msg r;
        ssize_t n = recv(sp[0], &r, sizeof r, 0);
        if (n != (ssize_t)sizeof r) {
            WL_CHECK(0, "recv of an answer: %zd (%s)", n, strerror(errno));
            break;
        }
        if (r.kind == END) {
            if (wl_tamper)
                answered++;
            WL_CHECK(r.seq == next && answered == next, "END: the child counted %u, sent %u, answered %u", r.seq, next, answered);
            break;
        }
        WL_CHECK(r.kind == MSG && r.seq == answered * 3 + 1, "answer %u is %u/%u", answered, r.kind, r.seq);
        answered++;
    }
    WL_CHECK(read_pattern(st[0], 2), "the child's stream bytes differ");
    int status = -1;
    WL_CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x (11-16: its checks)", status);
    WL_CHECK(next > 0, "no message was sent");
    wl_finish("sockpair", NULL);
}
