/*
 * treeshare <trigger> <mode>: a parent and a child that share something a checkpoint of the tree
 * must refuse, naming the process; both go on as before after the refusal.
 *
 *   vfork        the child is a vfork child that has not exec'd (the parent waits in vfork)
 *   clone-vm     the child shares the parent's memory (clone with CLONE_VM)
 *   clone-files  the child shares the parent's fd table (CLONE_FILES)
 *   clone-fs     the child shares cwd, root and umask (CLONE_FS)
 *   shm          MAP_SHARED|MAP_ANONYMOUS memory inherited across fork
 *   traced       the child is traced by its parent (PTRACE_SEIZE)
 *   pidns        the child is in a new pid namespace (CLONE_NEWPID)
 *
 * After the trigger each checks what it shares still works (a write by one seen by the other,
 * an fd opened by one usable by the other, a chdir by one seen by the other...) and the parent's
 * own memory, reaps the child (exit 0) and prints PASS or FAIL.
 */
#include "common.h"
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#define PAT_LEN 65536
static uint8_t pat[PAT_LEN];
static volatile int shared_flag; /* CLONE_VM: written by the child, read by the parent */
static char stack[256 * 1024] __attribute__((aligned(16)));
static const char *mode;

static void nap(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void ready_as(pid_t pid)
{
    char b[64];
    wl_ready_pid = pid;
    int n = snprintf(b, sizeof b, "READY %d\n", (int)pid);
    wl_write_all(1, b, (size_t)n);
}

static int vm_child(void *arg)
{
    (void)arg;
    while (!wl_triggered())
        nap();
    shared_flag = 42;
    return 0;
}

/* fork-like raw clone with extra sharing flags: the child returns 0 on a copy of the stack */
static pid_t clone_sharing(unsigned long flags)
{
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 2, "<trigger> vfork|clone-vm|clone-files|clone-fs|shm|traced|pidns");
    mode = argv[2];
    setvbuf(stdout, NULL, _IONBF, 0);
    wl_fill_pattern(pat, PAT_LEN, 77);
    pid_t me = getpid();
    pid_t child = -1;
    int st = -1;

    if (strcmp(mode, "vfork") == 0) {
        child = vfork();
        if (child == 0) {
            /* only a few calls: the parent's memory and stack are ours until _exit */
            ready_as(me);
            while (!wl_triggered())
                nap();
            _exit(0);
        }
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "vfork child status 0x%x", st);
    } else if (strcmp(mode, "clone-vm") == 0) {
        child = clone(vm_child, stack + sizeof stack, CLONE_VM | SIGCHLD, NULL);
        wl_ready();
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "clone-vm child status 0x%x", st);
        WL_CHECK(shared_flag == 42, "the CLONE_VM child's write is not seen (%d)", shared_flag);
    } else if (strcmp(mode, "clone-files") == 0) {
        child = clone_sharing(CLONE_FILES);
        if (child == 0) {
            while (!wl_triggered())
                nap();
            int fd = open("/dev/null", O_RDONLY); /* seen by the parent: one fd table */
            _exit(fd == 20 ? 0 : dup2(fd, 20) == 20 ? 0 : 3);
        }
        wl_ready();
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "clone-files child status 0x%x", st);
        WL_CHECK(fcntl(20, F_GETFD) >= 0, "fd 20 opened by the CLONE_FILES child is not in the parent's table");
    } else if (strcmp(mode, "clone-fs") == 0) {
        child = clone_sharing(CLONE_FS);
        if (child == 0) {
            while (!wl_triggered())
                nap();
            _exit(umask(0027) == 022 ? 0 : 3);
        }
        umask(022);
        wl_ready();
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "clone-fs child status 0x%x", st);
        mode_t m = umask(022);
        WL_CHECK(m == 0027, "the umask set by the CLONE_FS child is not seen (%o)", (unsigned)m);
    } else if (strcmp(mode, "shm") == 0) {
        volatile int *shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        shm[0] = 1;
        child = fork();
        if (child == 0) {
            while (!wl_triggered())
                nap();
            shm[0] = 2;
            _exit(0);
        }
        wl_ready();
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "shm child status 0x%x", st);
        WL_CHECK(shm[0] == 2, "the child's write to shared memory is not seen (%d)", shm[0]);
    } else if (strcmp(mode, "traced") == 0) {
        child = fork();
        if (child == 0) {
            while (!wl_triggered())
                nap();
            _exit(0);
        }
        WL_CHECK(ptrace(PTRACE_SEIZE, child, 0, 0) == 0, "PTRACE_SEIZE: %s", strerror(errno));
        wl_ready();
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "traced child status 0x%x", st);
    } else if (strcmp(mode, "pidns") == 0) {
        child = clone_sharing(CLONE_NEWPID);
        if (child == 0) {
            int ok = getpid() == 1;
            while (!wl_triggered())
                nap();
            _exit(ok ? 0 : 3);
        }
        if (child < 0) {
            printf("FAIL treeshare: clone(CLONE_NEWPID): %s\n", strerror(errno));
            return 1;
        }
        wl_ready();
        WL_CHECK(waitpid(child, &st, 0) == child && st == 0, "pid namespace child status 0x%x", st);
    } else {
        printf("FAIL treeshare: unknown mode %s\n", mode);
        return 1;
    }
    if (wl_tamper)
        pat[100] ^= 1;
    WL_CHECK(wl_check_pattern(pat, PAT_LEN, 77) < 0, "the parent's memory differs at %ld", wl_check_pattern(pat, PAT_LEN, 77));
    char name[64];
    snprintf(name, sizeof name, "treeshare-%s", mode);
    wl_finish(name, NULL);
}
