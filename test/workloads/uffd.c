/*
 * uffd <trigger> MODE: memory of a process (the target) registered with a userfaultfd that another
 * process (the holder) holds, which a checkpoint of the target must refuse, leaving both as they
 * were. The process started is the holder: it forks the target, gets the userfaultfd from it and
 * monitors it (reads every event). The target fills 16 pages with a pattern, makes the userfaultfd,
 * registers the area and gives the fd away, keeping only fds 0, 1 and 2; it then only reads its
 * memory. The holder writes "<target pid> <area start, hex>" to <trigger>.target before READY.
 *
 * MODE (what the target's area is registered for, and how the fd leaves it):
 *   wp          write protection, sent over SCM_RIGHTS
 *   wp-async    write protection with UFFD_FEATURE_WP_ASYNC (as cptrst's own tracker makes it)
 *   missing     missing pages
 *   minor       minor faults on a shared memfd area (UFFD_FEATURE_MINOR_SHMEM)
 *   fork        missing pages, with UFFD_FEATURE_EVENT_FORK (a fork of the target posts an event)
 *   getfd       write protection, taken by the holder with pidfd_getfd
 *   late-fork   the fd (with EVENT_FORK) sent unregistered; the holder registers the area for
 *               missing pages on SIGUSR1 and writes <trigger>.registered
 *   made-late   the target makes the fd (with EVENT_FORK) and registers its area for missing pages
 *               only on SIGUSR1, writing <trigger>.made (the fd's number); the holder takes it with
 *               pidfd_getfd on SIGUSR1 and writes <trigger>.held; the target then closes its own.
 *               The holder reads events only after the trigger (a fork event left unread must be
 *               withdrawn: none may be there then)
 *   own         write protection, the target keeps its userfaultfd (the holder holds nothing)
 *   inflight    write protection, the fd sent over a socketpair of the target's own and closed:
 *               it is only in flight in the target's socket queue
 *
 * After the trigger the target checks its pattern and that its area is still registered (VmFlag
 * in its smaps), and exits 0 or the number of the check that failed; the holder waits for it and
 * checks that it read no event from the userfaultfd. CPT_TAMPER=1: the target changes a byte.
 */
#include "common.h"
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define PAGES 16
/* Older headers lack them (Linux 6.4, 6.7). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#define SEED 4242

static const char *mode;
static volatile sig_atomic_t register_now;

static void on_usr1(int sig)
{
    (void)sig;
    register_now = 1;
}

static int is(const char *m)
{
    return strcmp(mode, m) == 0;
}

static void die(const char *what)
{
    char b[256];
    int n = snprintf(b, sizeof b, "uffd %s: %s: %s\n", mode, what, strerror(errno));
    wl_write_all(2, b, (size_t)n);
    _exit(2);
}

static void send_fd(int sock, int fd, const void *data, size_t len)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        m.msg_control = cbuf;
        m.msg_controllen = sizeof cbuf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    if (sendmsg(sock, &m, 0) != (ssize_t)len)
        die("sendmsg");
}

/* The message of the target: its area and the number of its userfaultfd; the fd when sent with it. */
struct hello {
    uint64_t addr;
    int fd;
};

static int recv_hello(int sock, struct hello *h)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = h, .iov_len = sizeof *h};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof *h)
        die("recvmsg");
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    int fd = -1;
    if (c != NULL && c->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

/* Whether /proc/self/smaps shows `flag` among the VmFlags of the area starting at `addr`. */
static int area_has_flag(uint64_t addr, const char *flag)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL)
        return -1;
    char line[512];
    int in = 0, found = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2) {
            in = s == addr;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            char want[8];
            snprintf(want, sizeof want, " %s", flag);
            for (char *p = line + 8; (p = strstr(p, want)) != NULL; p++)
                if (p[3] == ' ' || p[3] == '\n')
                    found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

/* Whether <trigger><suffix> exists. */
static int exists(const char *suffix)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s%s", wl_trigger_path, suffix);
    return stat(path, &st) == 0;
}

static void write_file(const char *suffix, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s", wl_trigger_path, suffix);
    /* No stdio: its buffer would be the process's first malloc, a new area (the heap). */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(path);
    wl_write_all(fd, text, strlen(text));
    close(fd);
}

/* made-late, on SIGUSR1: makes a userfaultfd, registers the area, lets the holder take the fd, closes its own. */
static void make_late(uint8_t *area, size_t len)
{
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_FORK};
    struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)area, .len = len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
        die("userfaultfd on SIGUSR1");
    char b[32];
    snprintf(b, sizeof b, "%d\n", uffd);
    write_file(".made", b);
    for (int i = 0; i < 2000 && !exists(".held"); i++)
        usleep(5000);
    close(uffd);
}

/*
 * The target's loop: reads its memory until the trigger, then checks it and that the area is still
 * registered for `flag` (none: not checked), and exits 0, 1 (memory) or 2 (registration).
 */
static __attribute__((noreturn)) void watch(uint8_t *area, size_t len, const char *flag)
{
    int rc = 0;
    while (!wl_triggered()) {
        if (register_now && is("made-late") && flag == NULL) {
            make_late(area, len);
            flag = "um";
        }
        if (wl_check_pattern(area, len, SEED) >= 0)
            rc = 1;
        usleep(5000);
    }
    if (wl_tamper)
        area[100] ^= 0xff;
    if (wl_check_pattern(area, len, SEED) >= 0)
        rc = 1;
    if (flag != NULL && area_has_flag((uint64_t)(uintptr_t)area, flag) != 1)
        rc = rc ? rc : 2;
    _exit(rc);
}

static __attribute__((noreturn)) void target(int sock)
{
    size_t len = PAGES * 4096;
    uint8_t *area;
    if (is("minor")) {
        int m = (int)syscall(SYS_memfd_create, "uffd-minor", 0);
        if (m < 0 || ftruncate(m, (off_t)len) != 0)
            die("memfd");
        area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
        close(m);
    } else {
        area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (area == MAP_FAILED)
        die("mmap");
    wl_fill_pattern(area, len, SEED);

    if (is("made-late")) {
        struct hello h0 = {.addr = (uint64_t)(uintptr_t)area, .fd = -1};
        send_fd(sock, -1, &h0, sizeof h0);
        close(sock);
        signal(SIGUSR1, on_usr1);
        watch(area, len, NULL);
    }
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0)
        die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (is("wp-async"))
        api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    else if (is("minor"))
        api.features = UFFD_FEATURE_MINOR_SHMEM;
    else if (is("fork") || is("late-fork"))
        api.features = UFFD_FEATURE_EVENT_FORK;
    if (ioctl(uffd, UFFDIO_API, &api) != 0)
        die("UFFDIO_API");
    struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)area, .len = len}};
    reg.mode = is("missing") || is("fork") ? UFFDIO_REGISTER_MODE_MISSING : is("minor") ? UFFDIO_REGISTER_MODE_MINOR : UFFDIO_REGISTER_MODE_WP;
    if (!is("late-fork") && ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
        die("UFFDIO_REGISTER");

    struct hello h = {.addr = (uint64_t)(uintptr_t)area, .fd = uffd};
    if (is("getfd")) {
        send_fd(sock, -1, &h, sizeof h);
        char ack;
        if (read(sock, &ack, 1) != 1)
            die("ack");
    } else if (is("own") || is("inflight")) {
        send_fd(sock, -1, &h, sizeof h);
    } else {
        send_fd(sock, uffd, &h, sizeof h);
    }
    if (is("inflight")) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0)
            die("socketpair");
        send_fd(sv[0], uffd, "u", 1);
    }
    if (!is("own"))
        close(uffd);
    close(sock);

    watch(area, len, is("late-fork") ? NULL : is("missing") || is("fork") ? "um" : is("minor") ? "ui" : "uw");
}

/* Events the holder read from the userfaultfd, and a mask of their types. */
static int events;
static unsigned types;

/* Reads every event waiting on the (non-blocking) userfaultfd; a fork event's new fd is closed. */
static void drain(int uffd)
{
    struct uffd_msg msg;
    while (read(uffd, &msg, sizeof msg) == (ssize_t)sizeof msg) {
        events++;
        types |= 1u << (msg.event & 31);
        if (msg.event == UFFD_EVENT_FORK)
            close((int)msg.arg.fork.ufd);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> wp|wp-async|missing|minor|fork|getfd|late-fork|made-late|own|inflight");
    mode = argv[2];
    const char *modes[] = {"wp", "wp-async", "missing", "minor", "fork", "getfd", "late-fork", "made-late", "own", "inflight"};
    int known = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        known |= is(modes[i]);
    if (!known)
        die("unknown mode");
    signal(SIGUSR1, on_usr1);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(sv[0]);
        signal(SIGUSR1, SIG_DFL);
        target(sv[1]);
    }
    close(sv[1]);
    struct hello h;
    int uffd = recv_hello(sv[0], &h);
    if (is("getfd")) {
        int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
        uffd = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, h.fd, 0);
        if (uffd < 0)
            die("pidfd_getfd");
        close(pidfd);
        if (write(sv[0], "k", 1) != 1)
            die("ack");
    }
    close(sv[0]);
    if (uffd >= 0)
        fcntl(uffd, F_SETFL, O_NONBLOCK);

    char path[4096];
    snprintf(path, sizeof path, "%s.target", wl_trigger_path);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        die("target file");
    fprintf(f, "%d %llx\n", (int)child, (unsigned long long)h.addr);
    fclose(f);
    wl_ready();

    while (!wl_triggered()) {
        if (register_now && is("made-late") && uffd < 0 && exists(".made")) {
            register_now = 0;
            char p2[4096];
            snprintf(p2, sizeof p2, "%s.made", wl_trigger_path);
            FILE *m = fopen(p2, "r");
            int n = -1;
            if (m == NULL || fscanf(m, "%d", &n) != 1)
                die(".made");
            fclose(m);
            int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
            uffd = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, n, 0);
            if (uffd < 0)
                die("pidfd_getfd");
            close(pidfd);
            fcntl(uffd, F_SETFL, O_NONBLOCK);
            write_file(".held", "");
        }
        if (register_now && uffd >= 0 && is("late-fork")) {
            register_now = 0;
            struct uffdio_register reg = {.range = {.start = h.addr, .len = PAGES * 4096}, .mode = UFFDIO_REGISTER_MODE_MISSING};
            if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
                wl_fail("UFFDIO_REGISTER by the holder: %s", strerror(errno));
            snprintf(path, sizeof path, "%s.registered", wl_trigger_path);
            close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        }
        struct pollfd p = {.fd = uffd, .events = POLLIN};
        if (is("made-late")) {
            usleep(5000); /* its events are read after the trigger */
        } else if (uffd >= 0 && poll(&p, 1, 5) > 0) {
            drain(uffd);
        } else if (uffd < 0) {
            usleep(5000);
        }
    }
    if (is("made-late") && uffd >= 0) {
        drain(uffd);
    }
    int st;
    if (waitpid(child, &st, 0) != child)
        wl_fail("waitpid: %s", strerror(errno));
    else if (!WIFEXITED(st))
        wl_fail("the target did not exit (status 0x%x)", st);
    else if (WEXITSTATUS(st) == 1)
        wl_fail("the target's memory differs from its pattern");
    else if (WEXITSTATUS(st) == 2)
        wl_fail("the target's area is no longer registered");
    else if (WEXITSTATUS(st) != 0)
        wl_fail("the target exited %d", WEXITSTATUS(st));
    WL_CHECK(events == 0, "the holder read %d events from the userfaultfd (types mask 0x%x)", events, types);
    wl_finish("uffd", NULL);
}
