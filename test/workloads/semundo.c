/*
 * semundo <trigger> [undo]: a SysV semaphore set (3 semaphores, 1 5 9) that the process changed
 * with semop to 1 3 9; with `undo` that change was made with SEM_UNDO, which a checkpoint must
 * refuse (the kernel keeps the adjustment where nothing can read it, and applies it when the
 * process ends). After the trigger: the values, then the set is removed. CPT_TAMPER=1 changes a
 * value first.
 */
#include "common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [undo]");
    int undo = argc > 2 && strcmp(argv[2], "undo") == 0;
    int id = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
    if (id < 0)
        wl_fail("semget: %s", strerror(errno));
    unsigned short init[3] = {1, 5, 9};
    if (semctl(id, 0, SETALL, init) != 0)
        wl_fail("SETALL: %s", strerror(errno));
    struct sembuf op = {1, -2, undo ? SEM_UNDO : 0};
    if (semop(id, &op, 1) != 0)
        wl_fail("semop: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper) {
        struct sembuf t = {2, 1, 0};
        semop(id, &t, 1);
    }
    unsigned short v[3] = {0, 0, 0};
    WL_CHECK(semctl(id, 0, GETALL, v) == 0 && v[0] == 1 && v[1] == 3 && v[2] == 9, "values %d %d %d, want 1 3 9", v[0], v[1], v[2]);
    semctl(id, 0, IPC_RMID);
    wl_finish("semundo", NULL);
}
