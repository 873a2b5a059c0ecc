/*
 * fdstate <trigger> <dir> flock|posix|ofd|lease|setown|setsig|setown-parent: fd 20 carries state
 * that a checkpoint must keep, or refuse rather than lose:
 *   flock   <dir>/locked with an exclusive flock()
 *   posix   <dir>/locked with a POSIX write lock (F_SETLK) on the whole file
 *   ofd     <dir>/locked with an OFD write lock (F_OFD_SETLK)
 *   lease   <dir>/locked opened O_RDONLY with a read lease (F_SETLEASE)
 *   setown  <dir>/locked with F_SETOWN to itself and O_ASYNC
 *   setsig  <dir>/locked with F_SETSIG SIGUSR1
 *   setown-parent <dir>/locked with F_SETOWN to its parent (another process: refused)
 * Checks after the trigger that the state is still there: the lock in
 * /proc/self/fdinfo/20 and refused to another open file description (F_OFD_GETLK); the lease
 * (F_GETLEASE); the owner (F_GETOWN) or signal (F_GETSIG). CPT_TAMPER=1 drops it first.
 */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>

static const char *mode;
static char path[4096];

static int has_lock_line(void)
{
    char buf[4096];
    int fd = open("/proc/self/fdinfo/20", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return strstr(buf, "lock:") != NULL;
}

/* Whether another open file description would be refused a write lock (someone holds one). */
static int locked_for_others(void)
{
    int other = open(path, O_RDONLY);
    if (other < 0)
        return 0;
    int held;
    if (strcmp(mode, "flock") == 0) {
        held = flock(other, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    } else {
        struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        held = fcntl(other, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    }
    close(other);
    return held;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 3, "<trigger> <dir> flock|posix|ofd|lease|setown|setsig|setown-parent");
    mode = argv[3];
    snprintf(path, sizeof path, "%s/locked", argv[2]);
    int fd;
    struct flock wr = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    fd = open(path, (strcmp(mode, "lease") == 0 ? O_RDONLY : O_RDWR) | O_CREAT, 0644);
    if (fd < 0 || dup2(fd, 20) != 20) {
        wl_fail("set up fd 20 (%s): %s", mode, strerror(errno));
    } else if (fd != 20) {
        close(fd);
    }
    int r = 0;
    if (strcmp(mode, "flock") == 0)
        r = flock(20, LOCK_EX);
    else if (strcmp(mode, "posix") == 0)
        r = fcntl(20, F_SETLK, &wr);
    else if (strcmp(mode, "ofd") == 0)
        r = fcntl(20, F_OFD_SETLK, &wr);
    else if (strcmp(mode, "lease") == 0)
        r = fcntl(20, F_SETLEASE, F_RDLCK);
    else if (strcmp(mode, "setown") == 0)
        r = fcntl(20, F_SETOWN, getpid());
    else if (strcmp(mode, "setsig") == 0)
        r = fcntl(20, F_SETSIG, SIGUSR1);
    else if (strcmp(mode, "setown-parent") == 0)
        r = fcntl(20, F_SETOWN, getppid());
    else
        wl_fail("unknown mode %s", mode);
    if (r != 0)
        wl_fail("%s: %s", mode, strerror(errno));

    wl_ready();
    while (!wl_triggered())
        wl_busy_ms(5);

    if (wl_tamper) {
        if (strcmp(mode, "flock") == 0)
            flock(20, LOCK_UN);
        else if (strcmp(mode, "posix") == 0 || strcmp(mode, "ofd") == 0) {
            struct flock un = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
            fcntl(20, strcmp(mode, "ofd") == 0 ? F_OFD_SETLK : F_SETLK, &un);
        } else if (strcmp(mode, "lease") == 0)
            fcntl(20, F_SETLEASE, F_UNLCK);
        else if (strcmp(mode, "setown") == 0 || strcmp(mode, "setown-parent") == 0)
            fcntl(20, F_SETOWN, 0);
        else if (strcmp(mode, "setsig") == 0)
            fcntl(20, F_SETSIG, 0);
    }

    if (strcmp(mode, "flock") == 0 || strcmp(mode, "posix") == 0 || strcmp(mode, "ofd") == 0) {
        WL_CHECK(has_lock_line(), "no lock in /proc/self/fdinfo/20");
        WL_CHECK(locked_for_others(), "another open file description could lock the file");
    } else if (strcmp(mode, "lease") == 0) {
        WL_CHECK(fcntl(20, F_GETLEASE) == F_RDLCK, "lease is %d, not a read lease", fcntl(20, F_GETLEASE));
    } else if (strcmp(mode, "setown") == 0) {
        WL_CHECK(fcntl(20, F_GETOWN) == getpid(), "owner %d, not %d", fcntl(20, F_GETOWN), (int)getpid());
    } else if (strcmp(mode, "setown-parent") == 0) {
        WL_CHECK(fcntl(20, F_GETOWN) == getppid(), "owner %d, not the parent %d", fcntl(20, F_GETOWN), (int)getppid());
    } else if (strcmp(mode, "setsig") == 0) {
        WL_CHECK(fcntl(20, F_GETSIG) == SIGUSR1, "F_GETSIG %d", fcntl(20, F_GETSIG));
    }
    wl_finish("fdstate", NULL);
}
