/*
 * sklisten <trigger> <dir> [--as UID:GID | --passcred]: connections made through listeners, in one process and
 * between a parent and its child; all names below are in <dir>/conn, which it makes.
 *   fd 10  stream listener on conn/lst; fd 11 bound to conn/cli and connected to it, fd 12 the
 *          accepted end (both ends named); fd 16 bound to conn/pend, connected and not accepted
 *          (it waits in fd 10's backlog)
 *   fd 13  seqpacket listener on conn/gone, whose name is then unlinked; fd 14 connected to it,
 *          fd 15 the accepted end (its name leads nowhere)
 *   fd 20/21 a datagram socketpair, 20 bound to conn/dp (then unlinked), 21 to an abstract name
 *   fd 32  (parent) accepted from a listener on conn/x, closed and unlinked; fd 31 (child) the
 *          connecting end. Before the checkpoint each side sent to the other, unread. The
 *          child's fd 33 waits in fd 10's backlog, after fd 16, and its fd 34 in fd 13's (whose
 *          name is unlinked after that).
 * Data waits on 11, 12, 14, 15 and 21 at the checkpoint. After the trigger: every name and peer
 * name as bound; SO_PEERCRED on both ends of every connection is the connecting process's (pid,
 * uid, gid) and the listener's; the data that waited, then new data both ways; the connection
 * waiting in fd 10's backlog are accepted now, from fd 16 then the child's 33 (names, credentials,
 * data sent after the restart); the child
 * checks its end the same way and exits 0; nothing is left in <dir>/conn but the listener's name.
 * CPT_TAMPER=1 shuts fd 12 down for writing first, so nothing more goes from 12 to 11.
 * --passcred: SO_PASSCRED on fd 32 (which a checkpoint refuses; it still passes).
 */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static char dir[1024];
static char abstract_name[64];

static const char *in_dir(const char *name)
{
    static char b[4][256];
    static int i;
    char *p = b[i++ & 3];
    snprintf(p, 256, "%.200s/%s", dir, name);
    return p;
}

static socklen_t addr_of(struct sockaddr_un *a, const char *path, int abstract)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(path);
    memcpy(a->sun_path + (abstract ? 1 : 0), path, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (abstract ? 1 : 0) + n);
}

static int sock_at(int type, int at)
{
    int s = socket(AF_UNIX, type, 0);
    if (s < 0 || dup2(s, at) != at)
        return -1;
    close(s);
    return at;
}

static int bind_to(int fd, const char *path, int abstract)
{
    struct sockaddr_un a;
    socklen_t l = addr_of(&a, path, abstract);
    return bind(fd, (struct sockaddr *)&a, l);
}

static int connect_to(int fd, const char *path)
{
    struct sockaddr_un a;
    socklen_t l = addr_of(&a, path, 0);
    return connect(fd, (struct sockaddr *)&a, l);
}

static int accept_at(int l, int at)
{
    int s = accept(l, NULL, NULL);
    if (s < 0 || dup2(s, at) != at)
        return -1;
    close(s);
    return at;
}

/* getsockname (or getpeername) is exactly `path` (abstract: '\0' + path; NULL: unnamed). */
static int named(int fd, const char *path, int abstract, int peer)
{
    struct sockaddr_un a, want;
    socklen_t l = sizeof a, wl = path ? addr_of(&want, path, abstract) : (socklen_t)offsetof(struct sockaddr_un, sun_path);
    memset(&a, 0, sizeof a);
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l);
    if (r != 0)
        return 0;
    if (!path)
        return l == wl;
    if (!abstract && l == wl + 1 && a.sun_path[wl - offsetof(struct sockaddr_un, sun_path)] == '\0')
        l = wl;
    return l == wl && memcmp(&a, &want, wl) == 0;
}

/* SO_PEERCRED of fd is (pid, our uid, our gid). */
static int cred_is(int fd, pid_t pid)
{
    struct ucred c;
    socklen_t l = sizeof c;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &l) == 0 && c.pid == pid && c.uid == getuid() && c.gid == getgid();
}

/* Reads exactly `want` (waiting up to 10 s for it). */
static int got(int fd, const char *want)
{
    char b[64];
    size_t n = strlen(want), have = 0;
    while (have < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) != 1)
            return 0;
        ssize_t r = recv(fd, b + have, n - have, MSG_DONTWAIT);
        if (r <= 0)
            return 0;
        have += (size_t)r;
    }
    return memcmp(b, want, n) == 0;
}

static int sent(int fd, const char *s)
{
    return send(fd, s, strlen(s), MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)strlen(s);
}

static void setup(void)
{
    if (sock_at(SOCK_STREAM, 10) < 0 || bind_to(10, in_dir("lst"), 0) != 0 || listen(10, 4) != 0)
        exit(3);
    if (sock_at(SOCK_STREAM, 11) < 0 || bind_to(11, in_dir("cli"), 0) != 0 || connect_to(11, in_dir("lst")) != 0 || accept_at(10, 12) != 12)
        exit(4);
    if (unlink(in_dir("cli")) != 0 || !sent(11, "to-12") || !sent(12, "to-11"))
        exit(5);
    if (sock_at(SOCK_SEQPACKET, 13) < 0 || bind_to(13, in_dir("gone"), 0) != 0 || listen(13, 2) != 0)
        exit(6);
    if (sock_at(SOCK_SEQPACKET, 14) < 0 || connect_to(14, in_dir("gone")) != 0 || accept_at(13, 15) != 15)
        exit(7);
    if (!sent(14, "m1") || !sent(14, "m2") || !sent(15, "back"))
        exit(8);
    if (sock_at(SOCK_STREAM, 16) < 0 || bind_to(16, in_dir("pend"), 0) != 0 || connect_to(16, in_dir("lst")) != 0 || unlink(in_dir("pend")) != 0)
        exit(9);
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) != 0 || dup2(pair[0], 20) != 20 || dup2(pair[1], 21) != 21)
        exit(10);
    close(pair[0]);
    close(pair[1]);
    if (bind_to(20, in_dir("dp"), 0) != 0 || unlink(in_dir("dp")) != 0 || bind_to(21, abstract_name, 1) != 0 || !sent(20, "dgram"))
        exit(11);
    if (sock_at(SOCK_STREAM, 30) < 0 || bind_to(30, in_dir("x"), 0) != 0 || listen(30, 1) != 0)
        exit(12);
}

/* The child: fd 31 connected to conn/x, whose accepted end is the parent's fd 32. */
static void child(pid_t parent)
{
    close(30);
    if (sock_at(SOCK_STREAM, 33) < 0 || connect_to(33, in_dir("lst")) != 0 || sock_at(SOCK_SEQPACKET, 34) < 0 || connect_to(34, in_dir("gone")) != 0)
        _exit(20);
    if (sock_at(SOCK_STREAM, 31) < 0 || connect_to(31, in_dir("x")) != 0 || !sent(31, "c2p"))
        _exit(20);
    while (!wl_triggered())
        usleep(20000);
    if (!named(31, NULL, 0, 0) || !named(31, in_dir("x"), 0, 1))
        _exit(21);
    if (!cred_is(31, parent))
        _exit(22);
    if (!named(33, NULL, 0, 0) || !named(33, in_dir("lst"), 0, 1) || !cred_is(33, parent) || !sent(33, "late-c"))
        _exit(24);
    if (!named(34, in_dir("gone"), 0, 1) || !cred_is(34, parent) || !sent(34, "late-s"))
        _exit(25);
    if (!got(31, "p2c") || !sent(31, "ok-c") || !got(31, "ok-p"))
        _exit(23);
    _exit(0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir> [--as UID:GID | --passcred]");
    wl_as_user(argc, argv);
    snprintf(dir, sizeof dir, "%.900s/conn", argv[2]);
    snprintf(abstract_name, sizeof abstract_name, "cptrst-sklisten-%d", (int)getpid());
    if (mkdir(dir, 0755) != 0)
        exit(2);
    setup();
    pid_t me = getpid();
    pid_t c = fork();
    if (c < 0)
        exit(13);
    if (c == 0)
        child(me);
    int passcred = argc > 3 && strcmp(argv[3], "--passcred") == 0;
    if (accept_at(30, 32) != 32 || close(30) != 0 || unlink(in_dir("x")) != 0)
        exit(14);
    if (setsockopt(32, SOL_SOCKET, SO_PASSCRED, &passcred, sizeof passcred) != 0 || !sent(32, "p2c"))
        exit(14);
    /* The child's c2p waits on 32 before the checkpoint. */
    struct pollfd p = {.fd = 32, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1 || unlink(in_dir("gone")) != 0)
        exit(15);
    wl_ready();
    while (!wl_triggered())
        usleep(20000);
    if (wl_tamper)
        shutdown(12, SHUT_WR);

    WL_CHECK(named(10, in_dir("lst"), 0, 0), "fd 10: not named %s", in_dir("lst"));
    WL_CHECK(named(11, in_dir("cli"), 0, 0) && named(11, in_dir("lst"), 0, 1), "fd 11: its name or its peer's");
    WL_CHECK(named(12, in_dir("lst"), 0, 0) && named(12, in_dir("cli"), 0, 1), "fd 12: its name or its peer's");
    WL_CHECK(cred_is(11, me) && cred_is(12, me), "fds 11/12: SO_PEERCRED");
    WL_CHECK(got(11, "to-11") && got(12, "to-12"), "fds 11/12: the data that waited");
    WL_CHECK(sent(11, "more") && got(12, "more") && sent(12, "again") && got(11, "again"), "fds 11/12: new data both ways");

    WL_CHECK(named(14, NULL, 0, 0) && named(14, in_dir("gone"), 0, 1), "fd 14: its name or its peer's");
    WL_CHECK(named(15, in_dir("gone"), 0, 0) && named(15, NULL, 0, 1), "fd 15: its name or its peer's");
    WL_CHECK(cred_is(14, me) && cred_is(15, me), "fds 14/15: SO_PEERCRED");
    WL_CHECK(got(15, "m1") && got(15, "m2") && got(14, "back"), "fds 14/15: the messages that waited");
    WL_CHECK(sent(15, "seq") && got(14, "seq"), "fds 14/15: new data");
    struct pollfd sp = {.fd = 13, .events = POLLIN};
    int acc3 = poll(&sp, 1, 10000) == 1 ? accept(13, NULL, NULL) : -1;
    WL_CHECK(acc3 >= 0 && cred_is(acc3, c) && named(acc3, in_dir("gone"), 0, 0) && got(acc3, "late-s"), "the child's connection waiting on fd 13: %s", acc3 < 0 ? strerror(errno) : "credentials, name or data");

    fcntl(10, F_SETFL, O_NONBLOCK);
    int acc = accept(10, NULL, NULL);
    WL_CHECK(acc >= 0 && named(acc, in_dir("pend"), 0, 1) && named(16, in_dir("lst"), 0, 1) && cred_is(acc, me) && cred_is(16, me), "the connection waiting on fd 10: %s", acc < 0 ? strerror(errno) : "names or credentials");
    WL_CHECK(acc >= 0 && sent(16, "late") && got(acc, "late"), "the connection waiting on fd 10 carries nothing");
    struct pollfd lp = {.fd = 10, .events = POLLIN};
    int acc2 = poll(&lp, 1, 10000) == 1 ? accept(10, NULL, NULL) : -1;
    WL_CHECK(acc2 >= 0 && cred_is(acc2, c) && named(acc2, NULL, 0, 1) && got(acc2, "late-c"), "the child's connection waiting on fd 10: %s", acc2 < 0 ? strerror(errno) : "credentials or data");

    WL_CHECK(named(20, in_dir("dp"), 0, 0) && named(21, abstract_name, 1, 0) && named(20, abstract_name, 1, 1) && named(21, in_dir("dp"), 0, 1), "fds 20/21: names");
    char b[16];
    WL_CHECK(recv(21, b, sizeof b, MSG_DONTWAIT) == 5 && memcmp(b, "dgram", 5) == 0, "fd 21: the datagram that waited");
    WL_CHECK(sent(21, "dg2") && recv(20, b, sizeof b, MSG_DONTWAIT) == 3 && memcmp(b, "dg2", 3) == 0, "fds 21 -> 20 carries nothing");

    WL_CHECK(named(32, in_dir("x"), 0, 0) && named(32, NULL, 0, 1), "fd 32: its name or its peer's");
    WL_CHECK(cred_is(32, c), "fd 32: SO_PEERCRED is not the child's");
    WL_CHECK(got(32, "c2p") && sent(32, "ok-p") && got(32, "ok-c"), "fd 32: data with the child");
    int status = 0;
    WL_CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x (20-25: its checks)", status);

    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort);
    WL_CHECK(n == 3 && strcmp(list[2]->d_name, "lst") == 0, "%s holds %d entries, not only lst", dir, n - 2);
    for (int i = 0; i < n; i++)
        free(list[i]);
    if (n >= 0)
        free(list);
    wl_finish("sklisten", NULL);
}
