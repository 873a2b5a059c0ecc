/*
 * sysvshm <trigger> [--as UID:GID]: SysV shared memory segments attached by the process keep their ids, keys,
 * sizes, modes and contents:
 *   A  a private segment (IPC_PRIVATE), 3 pages + 100 bytes, mode 0600, attached twice (read-write,
 *      its first page then made read-only with mprotect, and read-only elsewhere): a write
 *      through one shows through the other;
 *   B  a keyed segment (key from the pid), 64 KiB, mode 0640, attached read-write, then removed
 *      (IPC_RMID) while attached: still usable, gone once detached.
 * After the trigger: the areas where they were, IPC_STAT (key, size, mode, owner, attachments,
 * SHM_DEST), the patterns, a write through A's read-write area seen in its read-only one, a
 * write to the read-only area faults. CPT_TAMPER=1 changes a byte of B first.
 */
#include "common.h"

#include <grp.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define A_SIZE (3 * 4096 + 100)
#define B_SIZE (64 * 1024)

static sigjmp_buf jb;
static void on_segv(int s)
{
    (void)s;
    siglongjmp(jb, 1);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--as UID:GID]");
    unsigned uid, gid;
    if (argc > 3 && strcmp(argv[2], "--as") == 0 && sscanf(argv[3], "%u:%u", &uid, &gid) == 2) {
        /* becomes that user first: the segments are the user's */
        gid_t g[1] = {gid};
        if (setgroups(1, g) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
            wl_fail("becoming %u:%u: %s", uid, gid, strerror(errno));
    }
    key_t bkey = (key_t)(0x5c000000 | (getpid() & 0xffffff));
    int a = shmget(IPC_PRIVATE, A_SIZE, IPC_CREAT | 0600);
    int b = shmget(bkey, B_SIZE, IPC_CREAT | IPC_EXCL | 0640);
    if (a < 0 || b < 0)
        wl_fail("shmget: %s", strerror(errno));
    volatile uint8_t *a1 = shmat(a, NULL, 0);
    volatile uint8_t *a2 = shmat(a, NULL, SHM_RDONLY);
    volatile uint8_t *bp = shmat(b, NULL, 0);
    if (a1 == (void *)-1 || a2 == (void *)-1 || bp == (void *)-1)
        wl_fail("shmat: %s", strerror(errno));
    wl_fill_pattern(a1, A_SIZE, 21);
    wl_fill_pattern(bp, B_SIZE, 22);
    if (shmctl(b, IPC_RMID, NULL) != 0)
        wl_fail("IPC_RMID: %s", strerror(errno));
    if (mprotect((void *)a1, 4096, PROT_READ) != 0)
        wl_fail("mprotect: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper)
        bp[B_SIZE / 2] ^= 1;
    struct shmid_ds ds;
    WL_CHECK(shmctl(a, IPC_STAT, &ds) == 0 && ds.shm_perm.__key == IPC_PRIVATE && ds.shm_segsz == A_SIZE &&
                 (ds.shm_perm.mode & 0777) == 0600 && ds.shm_perm.uid == getuid() && ds.shm_nattch == 3,
             "A: IPC_STAT key %d size %zu mode %o nattch %lu", ds.shm_perm.__key, ds.shm_segsz, ds.shm_perm.mode, (unsigned long)ds.shm_nattch);
    WL_CHECK(shmctl(b, IPC_STAT, &ds) == 0 && ds.shm_segsz == B_SIZE && (ds.shm_perm.mode & 0777) == 0640 &&
                 (ds.shm_perm.mode & SHM_DEST) != 0 && ds.shm_nattch == 1,
             "B: IPC_STAT size %zu mode %o nattch %lu (want removed, attached once)", ds.shm_segsz, ds.shm_perm.mode, (unsigned long)ds.shm_nattch);
    long at;
    WL_CHECK((at = wl_check_pattern(a1, A_SIZE, 21)) < 0, "A (read-write area) differs at %ld", at);
    WL_CHECK((at = wl_check_pattern(a2, A_SIZE, 21)) < 0, "A (read-only area) differs at %ld", at);
    WL_CHECK((at = wl_check_pattern(bp, B_SIZE, 22)) < 0, "B differs at %ld", at);
    a1[5000] ^= 0xff;
    WL_CHECK(a2[5000] == (uint8_t)(wl_pat8(21, 5000) ^ 0xff), "A: a write through one area is not seen through the other");
    signal(SIGSEGV, on_segv);
    volatile uint8_t *ro[2] = {a2, a1}; /* the read-only attachment, and the read-only first page of the other */
    for (int i = 0; i < 2; i++) {
        int faulted = 0;
        if (sigsetjmp(jb, 1) == 0)
            ro[i][0] = 1;
        else
            faulted = 1;
        WL_CHECK(faulted, "A's read-only %s took a write", i == 0 ? "attachment" : "first page");
    }
    shmdt((void *)bp);
    WL_CHECK(shmctl(b, IPC_STAT, &ds) != 0, "B still exists after its last detach");
    shmdt((void *)a1);
    shmdt((void *)a2);
    shmctl(a, IPC_RMID, NULL);
    wl_finish("sysvshm", NULL);
}
