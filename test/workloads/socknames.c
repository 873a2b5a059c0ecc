/*
 * socknames <trigger> <dir> [--as UID:GID]: unix sockets whose name no longer leads to them; all
 * names below are in <dir>/names, which it makes.
 *   fd 10  stream socket listening on <dir>/srv; that name unlinked and a regular file made there
 *          (contents "not a socket")
 *   fd 20  datagram socket bound to <dir>/dg, the name then replaced by a FIFO; fd 21 datagram
 *          socket bound to an abstract name and connected to <dir>/dg before the replacement
 *   fd 30  datagram socket bound to the relative name "rsock" from <dir>/rel, its file unlinked,
 *          the working directory then <dir>; fd 31 connected to it before the unlink
 *   fd 40  datagram socket bound to <dir>/sub/s, fd 41 connected to it, then s unlinked and
 *          <dir>/sub removed
 * After the trigger: every name as given to bind (getsockname) and every peer's (getpeername);
 * data both ways (21 -> 20 by the connection, 20 -> 21 by 21's abstract name; 31 -> 30; 41 ->
 * 40, with the sender's name seen); the listener still listens; the regular file and the FIFO are
 * still the same files with the same contents, <dir>/sub and <dir>/rel/rsock do not exist, and
 * <dir> holds exactly what it held (nothing made, moved or left behind).
 * CPT_TAMPER=1 disconnects fd 21 first (AF_UNSPEC), so its peer is gone and it cannot send.
 */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static char dir[1024];
static char abstract_name[64];
static struct stat srv_file, fifo_file;

static socklen_t addr_of(struct sockaddr_un *a, const char *path, int abstract)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (abstract) {
        memcpy(a->sun_path + 1, path, n);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    }
    memcpy(a->sun_path, path, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

static const char *in_dir(const char *name)
{
    static char b[4][256];
    static int i;
    char *p = b[i++ & 3];
    snprintf(p, 256, "%.200s/%s", dir, name);
    return p;
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

/* getsockname (or getpeername) is exactly `path` (abstract: '\0' + path). */
static int named(int fd, const char *path, int abstract, int peer)
{
    struct sockaddr_un a, want;
    socklen_t l = sizeof a, wl = addr_of(&want, path, abstract);
    memset(&a, 0, sizeof a);
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l);
    if (r != 0)
        return 0;
    /* A filesystem name may come back with its NUL counted. */
    if (!abstract && l == wl + 1 && a.sun_path[wl - offsetof(struct sockaddr_un, sun_path)] == '\0')
        l = wl;
    return l == wl && memcmp(&a, &want, wl) == 0;
}

static void setup(void)
{
    if (mkdir(in_dir("rel"), 0755) != 0 || mkdir(in_dir("sub"), 0755) != 0)
        exit(3);
    /* fd 10: a listener whose name is now a regular file */
    if (sock_at(SOCK_STREAM, 10) < 0 || bind_to(10, in_dir("srv"), 0) != 0 || listen(10, 4) != 0 || unlink(in_dir("srv")) != 0)
        exit(4);
    int f = open(in_dir("srv"), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (f < 0 || write(f, "not a socket", 12) != 12 || fstat(f, &srv_file) != 0)
        exit(5);
    close(f);
    /* fds 20/21: a datagram socket whose name is now a FIFO, and one connected to it */
    if (sock_at(SOCK_DGRAM, 20) < 0 || bind_to(20, in_dir("dg"), 0) != 0)
        exit(6);
    if (sock_at(SOCK_DGRAM, 21) < 0 || bind_to(21, abstract_name, 1) != 0 || connect_to(21, in_dir("dg")) != 0)
        exit(7);
    if (unlink(in_dir("dg")) != 0 || mkfifo(in_dir("dg"), 0600) != 0 || stat(in_dir("dg"), &fifo_file) != 0)
        exit(8);
    /* fds 30/31: a relative name */
    if (chdir(in_dir("rel")) != 0 || sock_at(SOCK_DGRAM, 30) < 0 || bind_to(30, "rsock", 0) != 0)
        exit(9);
    if (sock_at(SOCK_DGRAM, 31) < 0 || connect_to(31, "rsock") != 0 || unlink("rsock") != 0 || chdir(dir) != 0)
        exit(10);
    /* fds 40/41: a name whose directory is gone */
    if (sock_at(SOCK_DGRAM, 40) < 0 || bind_to(40, in_dir("sub/s"), 0) != 0)
        exit(11);
    if (sock_at(SOCK_DGRAM, 41) < 0 || connect_to(41, in_dir("sub/s")) != 0 || unlink(in_dir("sub/s")) != 0 || rmdir(in_dir("sub")) != 0)
        exit(12);
}

/* The names in <dir>, sorted, joined by spaces. */
static void listing(char *out, size_t size)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(list[i]->d_name, ".") != 0 && strcmp(list[i]->d_name, "..") != 0) {
            strncat(out, list[i]->d_name, size - strlen(out) - 2);
            strncat(out, " ", size - strlen(out) - 1);
        }
        free(list[i]);
    }
    if (n >= 0)
        free(list);
}

static ssize_t recv_from(int fd, char *b, size_t n, struct sockaddr_un *from, socklen_t *fl)
{
    *fl = sizeof *from;
    memset(from, 0, sizeof *from);
    return recvfrom(fd, b, n, MSG_DONTWAIT, (struct sockaddr *)from, fl);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir> [--as UID:GID]");
    wl_as_user(argc, argv);
    snprintf(dir, sizeof dir, "%.900s/names", argv[2]);
    snprintf(abstract_name, sizeof abstract_name, "cptrst-socknames-%d", (int)getpid());
    if (mkdir(dir, 0755) != 0 || chdir(dir) != 0)
        exit(2);
    setup();
    char before[1024];
    listing(before, sizeof before);
    wl_ready();
    while (!wl_triggered())
        usleep(20000);

    if (wl_tamper) {
        struct sockaddr un = {.sa_family = AF_UNSPEC};
        connect(21, &un, sizeof un);
    }

    char b[64], after[1024];
    struct sockaddr_un from;
    socklen_t fl;
    WL_CHECK(named(10, in_dir("srv"), 0, 0), "fd 10: not named %s", in_dir("srv"));
    WL_CHECK(named(20, in_dir("dg"), 0, 0), "fd 20: not named %s", in_dir("dg"));
    WL_CHECK(named(21, abstract_name, 1, 0) && named(21, in_dir("dg"), 0, 1), "fd 21: its name or its peer's");
    WL_CHECK(named(30, "rsock", 0, 0) && named(31, "rsock", 0, 1), "fd 30/31: the relative name");
    WL_CHECK(named(40, in_dir("sub/s"), 0, 0) && named(41, in_dir("sub/s"), 0, 1), "fd 40/41: the name in the removed directory");

    fcntl(10, F_SETFL, O_NONBLOCK);
    int acc = accept(10, NULL, NULL);
    WL_CHECK(acc < 0 && errno == EAGAIN, "fd 10 does not listen (accept: %s)", acc < 0 ? strerror(errno) : "a connection");
    WL_CHECK(send(21, "to-dg", 5, 0) == 5, "send on 21: %s", strerror(errno));
    ssize_t r = recv_from(20, b, sizeof b, &from, &fl);
    WL_CHECK(r == 5 && memcmp(b, "to-dg", 5) == 0 && from.sun_path[0] == '\0' && strcmp(from.sun_path + 1, abstract_name) == 0, "fd 20 received %zd bytes, not from 21", r);
    struct sockaddr_un a;
    socklen_t al = addr_of(&a, abstract_name, 1);
    WL_CHECK(sendto(20, "back", 4, 0, (struct sockaddr *)&a, al) == 4 && recv(21, b, sizeof b, MSG_DONTWAIT) == 4 && memcmp(b, "back", 4) == 0, "20 -> 21 carries nothing");
    WL_CHECK(send(31, "rel", 3, 0) == 3 && recv(30, b, sizeof b, MSG_DONTWAIT) == 3 && memcmp(b, "rel", 3) == 0, "31 -> 30 carries nothing");
    WL_CHECK(send(41, "sub", 3, 0) == 3 && recv(40, b, sizeof b, MSG_DONTWAIT) == 3 && memcmp(b, "sub", 3) == 0, "41 -> 40 carries nothing");

    struct stat st;
    int f = open(in_dir("srv"), O_RDONLY);
    ssize_t n = f >= 0 ? read(f, b, sizeof b) : -1;
    WL_CHECK(f >= 0 && fstat(f, &st) == 0 && st.st_ino == srv_file.st_ino && S_ISREG(st.st_mode) && n == 12 && memcmp(b, "not a socket", 12) == 0, "the regular file at %s changed", in_dir("srv"));
    if (f >= 0)
        close(f);
    WL_CHECK(lstat(in_dir("dg"), &st) == 0 && S_ISFIFO(st.st_mode) && st.st_ino == fifo_file.st_ino, "the FIFO at %s changed", in_dir("dg"));
    WL_CHECK(lstat(in_dir("sub"), &st) != 0 && lstat(in_dir("rel/rsock"), &st) != 0, "a removed name exists again");
    listing(after, sizeof after);
    WL_CHECK(strcmp(before, after) == 0, "%s holds \"%s\", not \"%s\"", dir, after, before);
    wl_finish("socknames", NULL);
}
