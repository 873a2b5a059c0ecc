/*
 * scm <trigger> <dir>: a parent and its child. The child sends the parent, over a datagram
 * socketpair (parent fd 10, SO_PASSCRED; child fd 11), files in flight, and closes its own copies:
 *   1 "pipe"    both ends of a pipe holding 9 bytes
 *   2 "text"    no descriptor
 *   3 "file"    <dir>/file opened read-write, its offset at 5
 *   4 "memfd"   a memfd "cpt-scm" with 4000 bytes of pattern, its offset at 100
 *   5 "shared"  the read end of a pipe the parent holds too (fd 20; its write end is fd 21)
 *   6 "sock"    one end of a datagram socketpair with "inner" waiting on it; the child keeps the
 *               other end (fd 31)
 *   7 "two"     the file of 3 and the memfd of 4 again, in one message
 * Each message carries the child's credentials. After the trigger the parent checks that its fd
 * table holds no more than before (no descriptor left behind by a checkpoint), then receives the
 * messages in order: their bytes and boundaries, credentials (the child's pid, uid, gid), the
 * number of descriptors, and each file: its kind, access mode, offset, contents, inode or name,
 * and the descriptions shared (kcmp: 5 is fd 20's, 7 are 3's and 4's), a pipe still a pipe (writes
 * come out of the read end), the socket's queue, and "pong" sent back through that socket reaches
 * the child, which exits 0. CPT_TAMPER=1 makes the parent drop the first message.
 */
#include "common.h"
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/kcmp.h>

#define MEMFD_BYTES 4000

static void send_msg(int sk, const char *text, const int *fds, int nfds)
{
    char control[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
    struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1 };
    memset(control, 0, sizeof control);
    if (nfds > 0) {
        h.msg_control = control;
        h.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    if (sendmsg(sk, &h, 0) != (ssize_t)iov.iov_len)
        _exit(20);
}

/* The child: sends, closes its copies, says so on `sync`, waits for the trigger, then for "pong". */
static __attribute__((noreturn)) void child(const char *dir, int sync)
{
    char path[2300], buf[64];
    int p[2], q[2];
    if (pipe(p) != 0 || write(p[1], "pipe-data", 9) != 9)
        _exit(21);
    send_msg(11, "pipe", p, 2);
    close(p[0]);
    close(p[1]);
    send_msg(11, "text", NULL, 0);
    snprintf(path, sizeof path, "%s/file", dir);
    int f = open(path, O_RDWR);
    if (f < 0 || lseek(f, 5, SEEK_SET) != 5)
        _exit(22);
    send_msg(11, "file", &f, 1);
    int m = memfd_create("cpt-scm", 0);
    uint8_t pat[MEMFD_BYTES];
    wl_fill_pattern(pat, sizeof pat, 41);
    if (m < 0 || write(m, pat, sizeof pat) != (ssize_t)sizeof pat || lseek(m, 100, SEEK_SET) != 100)
        _exit(23);
    send_msg(11, "memfd", &m, 1);
    int shared = 20;
    send_msg(11, "shared", &shared, 1);
    close(20);
    close(21);
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, q) != 0 || dup2(q[1], 31) != 31 || send(31, "inner", 5, 0) != 5)
        _exit(24);
    close(q[1]);
    send_msg(11, "sock", &q[0], 1);
    close(q[0]);
    int two[2] = { f, m };
    send_msg(11, "two", two, 2);
    close(f);
    close(m);
    if (write(sync, "s", 1) != 1)
        _exit(25);
    close(sync);
    while (!wl_triggered())
        usleep(10000);
    struct pollfd pf = { .fd = 31, .events = POLLIN };
    if (poll(&pf, 1, 20000) != 1)
        _exit(26);
    ssize_t n = recv(31, buf, sizeof buf, MSG_DONTWAIT);
    _exit(n == 4 && memcmp(buf, "pong", 4) == 0 ? 0 : 27);
}

struct got {
    char text[64];
    ssize_t len;
    int flags;
    int fds[8];
    int nfds;
    int creds;
    struct ucred cred;
};

static int recv_msg(int sk, struct got *g)
{
    char control[CMSG_SPACE(8 * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = { .iov_base = g->text, .iov_len = sizeof g->text - 1 };
    struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    memset(g, 0, sizeof *g);
    g->len = recvmsg(sk, &h, MSG_DONTWAIT);
    if (g->len < 0)
        return -1;
    g->text[g->len] = '\0';
    g->flags = h.msg_flags;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c != NULL; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < n && g->nfds < 8; i++)
                memcpy(&g->fds[g->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            memcpy(&g->cred, CMSG_DATA(c), sizeof g->cred);
            g->creds = 1;
        }
    }
    return 0;
}

static int same_file(int a, int b)
{
    return syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b) == 0;
}

/* The fds of the process, as a sorted list in `out`; returns how many. */
static int list_fds(int *out, int cap)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0, self = d ? dirfd(d) : -1;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == self || n >= cap)
            continue;
        int i = n++;
        while (i > 0 && out[i - 1] > fd) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = fd;
    }
    if (d)
        closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> <dir>");
    char path[2300];
    snprintf(path, sizeof path, "%s/file", argv[2]);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (f < 0 || write(f, "0123456789abcdef", 16) != 16)
        wl_fail("file: %s", strerror(errno));
    close(f);
    struct stat fst;
    stat(path, &fst);
    int sv[2], p2[2], sync[2], one = 1;
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0 || dup2(sv[0], 10) != 10 || dup2(sv[1], 11) != 11 || pipe(p2) != 0 ||
        dup2(p2[0], 20) != 20 || dup2(p2[1], 21) != 21 || pipe(sync) != 0)
        wl_fail("setup: %s", strerror(errno));
    close(sv[0]);
    close(sv[1]);
    close(p2[0]);
    close(p2[1]);
    setsockopt(10, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    if (wl_failures)
        wl_finish("scm", NULL);
    pid_t c = fork();
    if (c == 0) {
        close(10);
        close(sync[0]);
        child(argv[2], sync[1]);
    }
    close(11);
    close(sync[1]);
    char s;
    if (c < 0 || read(sync[0], &s, 1) != 1)
        wl_fail("the child did not send: %s", strerror(errno));
    close(sync[0]);
    int before[64], nbefore = list_fds(before, 64);
    wl_ready();
    while (!wl_triggered())
        usleep(10000);

    int after[64], nafter = list_fds(after, 64);
    WL_CHECK(nafter == nbefore && memcmp(after, before, nbefore * sizeof(int)) == 0, "the fd table changed: %d fds before, %d after (last %d)", nbefore, nafter,
             nafter ? after[nafter - 1] : -1);
    struct got g[7];
    if (wl_tamper) {
        struct got x;
        recv_msg(10, &x);
    }
    static const char *texts[7] = { "pipe", "text", "file", "memfd", "shared", "sock", "two" };
    static const int counts[7] = { 2, 0, 1, 1, 1, 1, 2 };
    for (int i = 0; i < 7; i++) {
        if (recv_msg(10, &g[i]) != 0) {
            wl_fail("message %d: %s", i + 1, strerror(errno));
            wl_finish("scm", NULL);
        }
        WL_CHECK(strcmp(g[i].text, texts[i]) == 0 && g[i].len == (ssize_t)strlen(texts[i]), "message %d is \"%s\" (%zd bytes), not \"%s\"", i + 1, g[i].text, g[i].len, texts[i]);
        WL_CHECK(g[i].nfds == counts[i] && !(g[i].flags & (MSG_TRUNC | MSG_CTRUNC)), "message %d: %d descriptors (flags 0x%x), not %d", i + 1, g[i].nfds, g[i].flags, counts[i]);
        WL_CHECK(g[i].creds && g[i].cred.pid == c && g[i].cred.uid == getuid() && g[i].cred.gid == getgid(), "message %d: credentials %d pid %d uid %d gid %d, not the child's %d", i + 1,
                 g[i].creds, (int)g[i].cred.pid, (int)g[i].cred.uid, (int)g[i].cred.gid, (int)c);
    }
    struct got x;
    WL_CHECK(recv_msg(10, &x) != 0 && errno == EAGAIN, "a message more: \"%s\"", x.text);
    if (wl_failures)
        wl_finish("scm", NULL);

    /* 1: a pipe with its 9 bytes, still one pipe */
    char b[128];
    int r = g[0].fds[0], w = g[0].fds[1];
    WL_CHECK((fcntl(r, F_GETFL) & O_ACCMODE) == O_RDONLY && (fcntl(w, F_GETFL) & O_ACCMODE) == O_WRONLY, "pipe access modes");
    WL_CHECK(read(r, b, sizeof b) == 9 && memcmp(b, "pipe-data", 9) == 0, "the pipe's bytes in flight");
    WL_CHECK(write(w, "again", 5) == 5 && read(r, b, sizeof b) == 5 && memcmp(b, "again", 5) == 0, "the pipe's ends are not one pipe");
    /* 3: the file, offset 5 */
    int fd = g[2].fds[0];
    struct stat st;
    WL_CHECK(fstat(fd, &st) == 0 && st.st_ino == fst.st_ino && st.st_dev == fst.st_dev, "the file in flight is another file");
    WL_CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR && lseek(fd, 0, SEEK_CUR) == 5, "the file's mode or offset (%ld)", (long)lseek(fd, 0, SEEK_CUR));
    WL_CHECK(read(fd, b, 3) == 3 && memcmp(b, "567", 3) == 0, "the file's contents at its offset");
    /* 4: the memfd */
    int m = g[3].fds[0];
    char link[64], want[] = "/memfd:cpt-scm (deleted)";
    snprintf(b, sizeof b, "/proc/self/fd/%d", m);
    ssize_t n = readlink(b, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    WL_CHECK(strcmp(link, want) == 0, "the memfd is %s", link);
    uint8_t pat[MEMFD_BYTES], mine[MEMFD_BYTES];
    wl_fill_pattern(pat, sizeof pat, 41);
    WL_CHECK(lseek(m, 0, SEEK_CUR) == 100 && pread(m, mine, sizeof mine, 0) == (ssize_t)sizeof mine && memcmp(mine, pat, sizeof pat) == 0, "the memfd's offset or contents");
    /* 5: the parent's own pipe read end: one description */
    WL_CHECK(same_file(20, g[4].fds[0]), "the read end in flight is not fd 20's description");
    WL_CHECK(write(21, "xy", 2) == 2 && read(g[4].fds[0], b, sizeof b) == 2 && memcmp(b, "xy", 2) == 0, "the shared pipe");
    /* 6: a socket with its own queue, connected to the child */
    int q = g[5].fds[0];
    WL_CHECK(recv(q, b, sizeof b, MSG_DONTWAIT) == 5 && memcmp(b, "inner", 5) == 0, "the socket in flight lost its queue");
    WL_CHECK(send(q, "pong", 4, 0) == 4, "send on the socket in flight: %s", strerror(errno));
    /* 7: the file and the memfd again: the same descriptions (the file's offset moved to 8 above) */
    WL_CHECK(same_file(g[6].fds[0], fd) && same_file(g[6].fds[1], m), "message 7 does not carry the descriptions of 3 and 4");
    WL_CHECK(lseek(g[6].fds[0], 0, SEEK_CUR) == 8, "the file's offset through message 7");
    int status = 0;
    WL_CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);
    wl_finish("scm", NULL);
}
