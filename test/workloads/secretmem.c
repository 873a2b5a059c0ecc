/*
 * secretmem <trigger>: memfd_secret fds made and not sized yet, which the example plugin
 * examples/plugin-secretmem restores (cptrst itself refuses them: their filesystem is not mounted
 * where the process could open them again).
 *   fd 40  memfd_secret(0), close-on-exec cleared
 *   fd 41  memfd_secret(O_CLOEXEC)
 *   fd 42  dup of fd 40 (one open file description)
 * After the trigger: F_GETFL / F_GETFD, size 0, the secretmem filesystem (statfs), kcmp of 40 and
 * 42 (one description) and of 40 and 41 (two); then each works: sized with ftruncate and mapped,
 * what is written through fd 40's mapping is read back, and fd 42 sees the size. A machine
 * without memfd_secret says so: PASS secretmem (no memfd_secret).
 * CPT_TAMPER=1 sizes fd 41 first.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#define SECRETMEM_MAGIC 0x5345434d

static int secret_at(unsigned flags, int want)
{
    int fd = (int)syscall(447 /* memfd_secret */, flags);
    if (fd < 0)
        return -1;
    if (dup3(fd, want, (flags & O_CLOEXEC) ? O_CLOEXEC : 0) != want)
        wl_fail("dup3 to %d: %s", want, strerror(errno));
    close(fd);
    return want;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0, "<trigger>");
    const char *note = NULL;
    if (secret_at(0, 40) < 0) {
        note = "no memfd_secret";
        wl_ready();
        while (!wl_triggered())
            usleep(5000);
        if (wl_tamper)
            wl_fail("no memfd_secret to tamper with");
        wl_finish("secretmem", note);
    }
    secret_at(O_CLOEXEC, 41);
    if (dup2(40, 42) != 42)
        wl_fail("dup2: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper)
        (void)!ftruncate(41, 4096);
    WL_CHECK((fcntl(40, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_RDWR && (fcntl(41, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_RDWR, "F_GETFL 0%o / 0%o",
             fcntl(40, F_GETFL), fcntl(41, F_GETFL));
    WL_CHECK(fcntl(40, F_GETFD) == 0 && fcntl(41, F_GETFD) == FD_CLOEXEC, "F_GETFD %d / %d", fcntl(40, F_GETFD), fcntl(41, F_GETFD));
    struct stat st;
    struct statfs sf;
    for (int fd = 40; fd <= 41; fd++) {
        WL_CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0, "fd %d: size %ld", fd, (long)st.st_size);
        WL_CHECK(fstatfs(fd, &sf) == 0 && sf.f_type == SECRETMEM_MAGIC, "fd %d: filesystem 0x%lx, not secretmem", fd, (long)sf.f_type);
    }
    WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 40, 42) == 0, "fds 40 and 42 are no longer one description");
    WL_CHECK(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 40, 41) != 0, "fds 40 and 41 are one description");

    /* They still work: sized, mapped, written and read. */
    for (int fd = 40; fd <= 41; fd++) {
        if (ftruncate(fd, 4096) != 0) {
            wl_fail("ftruncate of fd %d: %s", fd, strerror(errno));
            continue;
        }
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            wl_fail("mmap of fd %d: %s", fd, strerror(errno));
            continue;
        }
        strcpy(p, "secret");
        WL_CHECK(strcmp(p, "secret") == 0, "fd %d: the mapping does not keep what was written", fd);
        munmap(p, 4096);
    }
    WL_CHECK(fstat(42, &st) == 0 && st.st_size == 4096, "fd 42 does not see fd 40's size (%ld)", (long)st.st_size);
    wl_finish("secretmem", note);
}
