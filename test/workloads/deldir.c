/*
 * deldir <trigger>: a directory removed while the process has it as its working directory and
 * open as an fd. Before READY it makes <trigger>.d/a (mode 0751, mtime set to a fixed past
 * time), opens it (O_DIRECTORY), chdirs into it and removes it.
 * After the trigger: /proc/self/cwd reads as before ("... (deleted)"), the fd and "." are one
 * directory (same device and inode), with link count 0, mode 0751 and the mtime set; nothing can
 * be made in it (ENOENT), getcwd fails (ENOENT), and <trigger>.d has no entry "a" (the restart
 * left nothing behind). CPT_TAMPER=1 moves the working directory to "/" before the check.
 */
#define _GNU_SOURCE
#include "common.h"

#define MTIME 1234567890L

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    char top[4096], dir[4200], cwd_before[4400], cwd_after[4400];
    snprintf(top, sizeof top, "%s.d", wl_trigger_path);
    snprintf(dir, sizeof dir, "%s/a", top);
    if ((mkdir(top, 0755) != 0 && errno != EEXIST) || mkdir(dir, 0700) != 0 || chmod(dir, 0751) != 0) {
        printf("FAIL deldir: mkdir %s: %s\n", dir, strerror(errno));
        return 1;
    }
    struct timespec times[2] = {{MTIME - 100, 0}, {MTIME, 0}};
    int fd = open(dir, O_DIRECTORY | O_RDONLY);
    if (fd < 0 || utimensat(AT_FDCWD, dir, times, 0) != 0 || chdir(dir) != 0 || rmdir(dir) != 0) {
        printf("FAIL deldir: setting up %s: %s\n", dir, strerror(errno));
        return 1;
    }
    ssize_t n = readlink("/proc/self/cwd", cwd_before, sizeof cwd_before - 1);
    cwd_before[n > 0 ? n : 0] = '\0';
    wl_ready();

    while (!wl_triggered())
        usleep(2000);
    if (wl_tamper && chdir("/") != 0)
        wl_fail("chdir /");
    n = readlink("/proc/self/cwd", cwd_after, sizeof cwd_after - 1);
    cwd_after[n > 0 ? n : 0] = '\0';
    WL_CHECK(strcmp(cwd_before, cwd_after) == 0, "cwd \"%s\", was \"%s\"", cwd_after, cwd_before);
    struct stat sf, sd;
    if (fstat(fd, &sf) != 0 || stat(".", &sd) != 0) {
        wl_fail("stat: %s", strerror(errno));
    } else {
        WL_CHECK(S_ISDIR(sf.st_mode) && sf.st_nlink == 0, "the fd: mode %o, %lu links", (unsigned)sf.st_mode, (unsigned long)sf.st_nlink);
        WL_CHECK(sf.st_dev == sd.st_dev && sf.st_ino == sd.st_ino, "the fd and the working directory differ");
        WL_CHECK((sf.st_mode & 07777) == 0751, "mode %o", (unsigned)(sf.st_mode & 07777));
        WL_CHECK(sf.st_mtim.tv_sec == MTIME, "mtime %ld", (long)sf.st_mtim.tv_sec);
    }
    int made = openat(fd, "x", O_CREAT | O_WRONLY, 0600);
    WL_CHECK(made < 0 && errno == ENOENT, "a file could be made in the removed directory (%s)", made < 0 ? strerror(errno) : "made");
    char buf[4096];
    WL_CHECK(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "getcwd: %s", getcwd(buf, sizeof buf) ? buf : strerror(errno));
    struct stat left;
    WL_CHECK(lstat(dir, &left) != 0 && errno == ENOENT, "%s exists", dir);
    rmdir(top);
    wl_finish("deldir", NULL);
}
