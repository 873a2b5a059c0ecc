/*
 * sockets <trigger> <dir> [--as UID:GID]: unix sockets held by this process only.
 *   fds 10/11  stream socketpair: 3000 bytes wait on 10 (sent by 11), 50 on 11; fd 10 O_NONBLOCK
 *              and SO_PASSCRED (the bytes carry the sender's credentials); fd 11 SO_SNDBUF 65536
 *   fds 20/21  datagram socketpair: datagrams of 5, 0 and 1000 bytes wait on 20, one of 7 on 21;
 *              fd 21 SO_PEEK_OFF 2
 *   fds 30/31  seqpacket socketpair: records of 10 and 20 bytes wait on 30, then 31 shut down
 *              for writing (30 reads the records, then end of file)
 *   fd 40      stream socket listening on <dir>/sock, backlog 7
 *   fd 41      datagram socket bound to an abstract name, not connected
 *   fd 42      stream socket bound to <dir>/gone, that name unlinked
 *   fd 43      stream socket, unbound
 *   fd 44      stream socket whose peer sent 33 bytes and closed: the bytes, then end of file
 *   fds 46/47  a connection through the listener: 46 connected, 47 accepted; 20 bytes wait on 47,
 *              30 on 46
 *   fd 48      connected to the listener, not accepted yet (in its backlog)
 *   fd 49      datagram socket connected one way to the abstract name; a 9-byte datagram it sent
 *              waits on fd 41
 * After the trigger: types, flags, options, every queue in order with its message boundaries and
 * credentials, the shutdown, names (getsockname), a new connection to the listener accepted, a
 * datagram to the abstract name received, each pair still connected both ways.
 * CPT_TAMPER=1 reads one byte from fd 10 first.
 */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static char dir[2048];
static char abstract_name[64];

static int pair_at(int type, int a, int b)
{
    int sv[2];
    if (socketpair(AF_UNIX, type, 0, sv) != 0 || dup2(sv[0], a) != a || dup2(sv[1], b) != b)
        return -1;
    close(sv[0]);
    close(sv[1]);
    return 0;
}

static int sock_at(int type, int at)
{
    int s = socket(AF_UNIX, type, 0);
    if (s < 0 || dup2(s, at) != at)
        return -1;
    close(s);
    return at;
}

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (abstract) {
        size_t n = strlen(name);
        memcpy(a->sun_path + 1, name, n);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    }
    snprintf(a->sun_path, sizeof a->sun_path, "%.80s/%.20s", dir, name);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path));
}

static int opt(int fd, int o)
{
    int v = -12345;
    socklen_t l = sizeof v;
    getsockopt(fd, SOL_SOCKET, o, &v, &l);
    return v;
}

static void send_pat(int fd, size_t n, uint64_t seed)
{
    uint8_t b[4096];
    wl_fill_pattern(b, n, seed);
    if (send(fd, b, n, 0) != (ssize_t)n)
        wl_fail("send %zu bytes on fd %d: %s", n, fd, strerror(errno));
}

/* Receives one message into b; returns its length, or -1. */
static ssize_t recv_one(int fd, uint8_t *b, size_t cap)
{
    return recv(fd, b, cap, MSG_DONTWAIT);
}

static int is_name(int fd, const char *name, int abstract)
{
    struct sockaddr_un want, got;
    socklen_t wl = addr_of(&want, name, abstract), gl = sizeof got;
    memset(&got, 0, sizeof got);
    if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0)
        return 0;
    if (!abstract) /* the kernel counts the path's NUL too */
        return got.sun_family == AF_UNIX && strcmp(got.sun_path, want.sun_path) == 0;
    return gl == wl && memcmp(&got, &want, wl) == 0;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir> [--as UID:GID]");
    wl_as_user(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "%s", argv[2]);
    snprintf(abstract_name, sizeof abstract_name, "cptrst-sockets-%d", (int)getpid());
    int one = 1;

    if (pair_at(SOCK_STREAM, 10, 11) != 0)
        wl_fail("stream pair: %s", strerror(errno));
    setsockopt(10, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    int sb = 65536;
    setsockopt(11, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
    send_pat(11, 1000, 1);
    send_pat(11, 2000, 2);
    send_pat(10, 50, 3);
    fcntl(10, F_SETFL, O_NONBLOCK);

    if (pair_at(SOCK_DGRAM, 20, 21) != 0)
        wl_fail("dgram pair: %s", strerror(errno));
    send_pat(21, 5, 4);
    send_pat(21, 0, 5);
    send_pat(21, 1000, 6);
    send_pat(20, 7, 7);
    int peek = 2;
    if (setsockopt(21, SOL_SOCKET, SO_PEEK_OFF, &peek, sizeof peek) != 0)
        wl_fail("SO_PEEK_OFF: %s", strerror(errno));

    if (pair_at(SOCK_SEQPACKET, 30, 31) != 0)
        wl_fail("seqpacket pair: %s", strerror(errno));
    send_pat(31, 10, 8);
    send_pat(31, 20, 9);
    shutdown(31, SHUT_WR);

    struct sockaddr_un a;
    socklen_t al = addr_of(&a, "sock", 0);
    unlink(a.sun_path);
    if (sock_at(SOCK_STREAM, 40) != 40 || bind(40, (struct sockaddr *)&a, al) != 0 || listen(40, 7) != 0)
        wl_fail("listener: %s", strerror(errno));
    al = addr_of(&a, abstract_name, 1);
    if (sock_at(SOCK_DGRAM, 41) != 41 || bind(41, (struct sockaddr *)&a, al) != 0)
        wl_fail("abstract: %s", strerror(errno));
    al = addr_of(&a, "gone", 0);
    unlink(a.sun_path);
    if (sock_at(SOCK_STREAM, 42) != 42 || bind(42, (struct sockaddr *)&a, al) != 0 || unlink(a.sun_path) != 0)
        wl_fail("unlinked name: %s", strerror(errno));
    if (sock_at(SOCK_STREAM, 43) != 43)
        wl_fail("unbound: %s", strerror(errno));
    if (pair_at(SOCK_STREAM, 44, 45) != 0)
        wl_fail("closed pair: %s", strerror(errno));
    send_pat(45, 33, 10);
    close(45);
    al = addr_of(&a, "sock", 0);
    if (sock_at(SOCK_STREAM, 46) != 46 || connect(46, (struct sockaddr *)&a, al) != 0)
        wl_fail("client 46: %s", strerror(errno));
    int acc47 = accept(40, NULL, NULL);
    if (acc47 < 0 || dup2(acc47, 47) != 47)
        wl_fail("accept 47: %s", strerror(errno));
    close(acc47);
    send_pat(46, 20, 11);
    send_pat(47, 30, 12);
    if (sock_at(SOCK_STREAM, 48) != 48 || connect(48, (struct sockaddr *)&a, al) != 0)
        wl_fail("client 48: %s", strerror(errno));
    al = addr_of(&a, abstract_name, 1);
    if (sock_at(SOCK_DGRAM, 49) != 49 || connect(49, (struct sockaddr *)&a, al) != 0)
        wl_fail("dgram 49: %s", strerror(errno));
    send_pat(49, 9, 13);

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    uint8_t b[8192], want[4096];
    if (wl_tamper)
        (void)!recv(10, b, 1, MSG_DONTWAIT);

    /* types and flags */
    WL_CHECK(opt(10, SO_TYPE) == SOCK_STREAM && opt(20, SO_TYPE) == SOCK_DGRAM && opt(30, SO_TYPE) == SOCK_SEQPACKET && opt(40, SO_TYPE) == SOCK_STREAM && opt(41, SO_TYPE) == SOCK_DGRAM,
             "socket types");
    WL_CHECK(fcntl(10, F_GETFL) == (O_RDWR | O_NONBLOCK) && fcntl(11, F_GETFL) == O_RDWR, "flags 0%o 0%o", fcntl(10, F_GETFL), fcntl(11, F_GETFL));
    WL_CHECK(opt(10, SO_PASSCRED) == 1 && opt(11, SO_PASSCRED) == 0, "SO_PASSCRED %d %d", opt(10, SO_PASSCRED), opt(11, SO_PASSCRED));
    WL_CHECK(opt(11, SO_SNDBUF) == 2 * 65536, "fd 11 SO_SNDBUF %d", opt(11, SO_SNDBUF));
    WL_CHECK(opt(21, SO_PEEK_OFF) == 2 && opt(20, SO_PEEK_OFF) == -1, "SO_PEEK_OFF %d %d", opt(20, SO_PEEK_OFF), opt(21, SO_PEEK_OFF));
    WL_CHECK(opt(40, SO_ACCEPTCONN) == 1 && opt(43, SO_ACCEPTCONN) == 0, "listening state");

    /* stream: 3000 bytes with the sender's credentials, in order */
    size_t n = 0;
    int creds_ok = 0;
    for (int i = 0; i < 100 && n < 3001; i++) {
        char cbuf[CMSG_SPACE(sizeof(struct ucred))];
        struct iovec iov = { b + n, sizeof b - n };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
        ssize_t r = recvmsg(10, &m, 0);
        if (r <= 0)
            break;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (c && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(c), sizeof u);
            creds_ok = u.pid == getpid() && u.uid == getuid();
        }
        n += (size_t)r;
    }
    wl_fill_pattern(want, 1000, 1);
    WL_CHECK(n == 3000 && memcmp(b, want, 1000) == 0, "stream 10: %zu bytes or the first 1000 differ", n);
    wl_fill_pattern(want, 2000, 2);
    WL_CHECK(n == 3000 && memcmp(b + 1000, want, 2000) == 0, "stream 10: the last 2000 bytes differ");
    WL_CHECK(creds_ok, "stream 10: no credentials of this process with the bytes");
    wl_fill_pattern(want, 50, 3);
    WL_CHECK(recv_one(11, b, sizeof b) == 50 && memcmp(b, want, 50) == 0, "stream 11 differs");

    /* datagrams: boundaries, an empty one, and SO_PEEK_OFF on 21 */
    ssize_t d1 = recv_one(20, b, sizeof b);
    wl_fill_pattern(want, 5, 4);
    WL_CHECK(d1 == 5 && memcmp(b, want, 5) == 0, "dgram 1: %zd bytes", d1);
    WL_CHECK(recv_one(20, b, sizeof b) == 0, "dgram 2 is not empty");
    ssize_t d3 = recv_one(20, b, sizeof b);
    wl_fill_pattern(want, 1000, 6);
    WL_CHECK(d3 == 1000 && memcmp(b, want, 1000) == 0, "dgram 3: %zd bytes", d3);
    WL_CHECK(recv_one(20, b, sizeof b) < 0 && errno == EAGAIN, "more datagrams on 20");
    wl_fill_pattern(want, 7, 7);
    ssize_t pk = recv(21, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
    WL_CHECK(pk == 5 && memcmp(b, want + 2, 5) == 0, "peek at offset 2 on 21: %zd bytes", pk);
    WL_CHECK(recv_one(21, b, sizeof b) == 7 && memcmp(b, want, 7) == 0, "dgram on 21 differs");

    /* seqpacket: two records, then end of file; its peer cannot send */
    ssize_t s1 = recv_one(30, b, sizeof b), s2 = recv_one(30, b + 100, sizeof b - 100);
    wl_fill_pattern(want, 10, 8);
    WL_CHECK(s1 == 10 && memcmp(b, want, 10) == 0, "seqpacket record 1: %zd", s1);
    wl_fill_pattern(want, 20, 9);
    WL_CHECK(s2 == 20 && memcmp(b + 100, want, 20) == 0, "seqpacket record 2: %zd", s2);
    WL_CHECK(recv_one(30, b, sizeof b) == 0, "seqpacket 30: no end of file");
    WL_CHECK(send(31, "x", 1, 0) < 0 && errno == EPIPE, "seqpacket 31 can still send");

    /* a closed peer: its bytes, then end of file */
    ssize_t cl = recv(44, b, sizeof b, MSG_DONTWAIT);
    wl_fill_pattern(want, 33, 10);
    WL_CHECK(cl == 33 && memcmp(b, want, 33) == 0, "fd 44: %zd bytes", cl);
    WL_CHECK(recv(44, b, sizeof b, MSG_DONTWAIT) == 0, "fd 44: no end of file");

    /* the accepted connection */
    WL_CHECK(is_name(47, "sock", 0), "fd 47 does not have the listener's name");
    struct sockaddr_un pn;
    socklen_t pl = sizeof pn;
    memset(&pn, 0, sizeof pn);
    al = addr_of(&a, "sock", 0);
    WL_CHECK(getpeername(46, (struct sockaddr *)&pn, &pl) == 0 && strcmp(pn.sun_path, a.sun_path) == 0, "fd 46's peer is not the listener's name");
    ssize_t r47 = recv(47, b, sizeof b, MSG_DONTWAIT), r46 = recv(46, b + 100, sizeof b - 100, MSG_DONTWAIT);
    wl_fill_pattern(want, 20, 11);
    WL_CHECK(r47 == 20 && memcmp(b, want, 20) == 0, "fd 47: %zd bytes", r47);
    wl_fill_pattern(want, 30, 12);
    WL_CHECK(r46 == 30 && memcmp(b + 100, want, 30) == 0, "fd 46: %zd bytes", r46);
    WL_CHECK(send(46, "k", 1, 0) == 1 && recv(47, b, 8, 0) == 1, "46 -> 47 carries nothing");

    /* the connection waiting in the backlog comes first */
    int acc48 = accept(40, NULL, NULL);
    WL_CHECK(acc48 >= 0 && send(48, "w8", 2, 0) == 2 && recv(acc48, b, 8, 0) == 2 && memcmp(b, "w8", 2) == 0, "the waiting connection of fd 48 is not the first accepted");

    /* the datagram waiting on 41, from 49 */
    ssize_t r41 = recv_one(41, b, sizeof b);
    wl_fill_pattern(want, 9, 13);
    WL_CHECK(r41 == 9 && memcmp(b, want, 9) == 0, "fd 41: %zd bytes", r41);
    WL_CHECK(send(49, "z", 1, 0) == 1 && recv_one(41, b, 8) == 1, "fd 49 is not connected to fd 41");

    /* names */
    WL_CHECK(is_name(40, "sock", 0), "listener's name");
    WL_CHECK(is_name(41, abstract_name, 1), "abstract name");
    WL_CHECK(is_name(42, "gone", 0), "the unlinked name");
    struct stat st;
    al = addr_of(&a, "gone", 0);
    WL_CHECK(stat(a.sun_path, &st) != 0, "%s exists again", a.sun_path);
    al = addr_of(&a, "sock", 0);
    WL_CHECK(stat(a.sun_path, &st) == 0 && S_ISSOCK(st.st_mode), "%s is not a socket file", a.sun_path);

    /* they still work */
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    WL_CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, al) == 0, "connect to the listener: %s", strerror(errno));
    int acc = accept(40, NULL, NULL);
    WL_CHECK(acc >= 0 && send(c, "hi", 2, 0) == 2 && recv(acc, b, 8, 0) == 2, "a connection through the listener carries nothing");
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    al = addr_of(&a, abstract_name, 1);
    WL_CHECK(sendto(u, "dg", 2, 0, (struct sockaddr *)&a, al) == 2 && recv_one(41, b, 8) == 2, "the abstract name receives nothing");
    WL_CHECK(send(11, "pq", 2, 0) == 2 && recv(10, b, 8, 0) == 2 && send(20, "r", 1, 0) == 1 && recv_one(21, b, 8) == 1, "the pairs carry nothing");
    wl_finish("sockets", NULL);
}
