/*
 * sysvipc <trigger> [--as UID:GID]: (as that user, if asked) SysV semaphore sets and message queues the process uses keep their ids,
 * keys, modes and state:
 *   S  a keyed set (key from the pid), 4 semaphores, mode 0640: SETALL 0 7 300 32767, then semop
 *      takes 2 from the second (0 5 300 32767);
 *   T  a private set (IPC_PRIVATE), 1 semaphore, mode 0600, SETVAL 42;
 *   Q  a keyed queue (key from the pid), mode 0620, limit lowered to 8000 bytes: a message sent
 *      and received, then four left in it: type 5 "hello", type 2 empty, type 9 3000 bytes of a
 *      pattern, type 5 "again";
 *   P  a private queue, mode 0600, a message sent and received: empty.
 * After the trigger: IPC_STAT of each (key, mode, owner, counts, limit), the semaphore values,
 * the queue's messages taken by type (9 first, then in order 5, 2, 5) with their texts, then
 * everything is removed. CPT_TAMPER=1 changes a semaphore first.
 */
#include "common.h"

#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>

#define BIG 3000

struct msg {
    long type;
    char text[BIG];
};

static int send(int q, long type, const char *text, size_t len)
{
    struct msg m;
    m.type = type;
    memcpy(m.text, text, len);
    return msgsnd(q, &m, len, IPC_NOWAIT);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger> [--as UID:GID]");
    wl_as_user(argc, argv);
    key_t skey = (key_t)(0x5d000000 | (getpid() & 0xffffff));
    key_t qkey = (key_t)(0x5e000000 | (getpid() & 0xffffff));
    int s = semget(skey, 4, IPC_CREAT | IPC_EXCL | 0640);
    int t = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    int q = msgget(qkey, IPC_CREAT | IPC_EXCL | 0620);
    int p = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (s < 0 || t < 0 || q < 0 || p < 0)
        wl_fail("semget/msgget: %s", strerror(errno));
    unsigned short init[4] = {0, 7, 300, 32767};
    struct sembuf op = {1, -2, 0};
    if (semctl(s, 0, SETALL, init) != 0 || semop(s, &op, 1) != 0 || semctl(t, 0, SETVAL, 42) != 0)
        wl_fail("SETALL/semop/SETVAL: %s", strerror(errno));
    static char big[BIG];
    wl_fill_pattern((uint8_t *)big, BIG, 31);
    struct msg m;
    if (send(q, 1, "first", 5) != 0 || msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT) != 5 || send(q, 5, "hello", 5) != 0 ||
        send(q, 2, "", 0) != 0 || send(q, 9, big, BIG) != 0 || send(q, 5, "again", 5) != 0)
        wl_fail("msgsnd/msgrcv on Q: %s", strerror(errno));
    struct msqid_ds qd;
    if (msgctl(q, IPC_STAT, &qd) != 0)
        wl_fail("IPC_STAT of Q: %s", strerror(errno));
    qd.msg_qbytes = 8000;
    if (msgctl(q, IPC_SET, &qd) != 0)
        wl_fail("IPC_SET of Q: %s", strerror(errno));
    if (send(p, 3, "x", 1) != 0 || msgrcv(p, &m, sizeof m.text, 0, IPC_NOWAIT) != 1)
        wl_fail("msgsnd/msgrcv on P: %s", strerror(errno));

    wl_ready();
    while (!wl_triggered())
        usleep(5000);

    if (wl_tamper) {
        struct sembuf tt = {2, 1, 0};
        semop(s, &tt, 1);
    }
    struct semid_ds sd;
    union {
        int val;
        struct semid_ds *buf;
        unsigned short *array;
    } arg;
    arg.buf = &sd;
    WL_CHECK(semctl(s, 0, IPC_STAT, arg) == 0 && sd.sem_perm.__key == skey && (sd.sem_perm.mode & 0777) == 0640 && sd.sem_nsems == 4 &&
                 sd.sem_perm.uid == getuid(),
             "S: IPC_STAT key %x mode %o nsems %lu: %s", sd.sem_perm.__key, sd.sem_perm.mode, (unsigned long)sd.sem_nsems, strerror(errno));
    unsigned short v[4] = {1, 1, 1, 1};
    WL_CHECK(semctl(s, 0, GETALL, v) == 0 && v[0] == 0 && v[1] == 5 && v[2] == 300 && v[3] == 32767, "S: values %d %d %d %d, want 0 5 300 32767",
             v[0], v[1], v[2], v[3]);
    arg.buf = &sd;
    WL_CHECK(semctl(t, 0, IPC_STAT, arg) == 0 && sd.sem_perm.__key == IPC_PRIVATE && (sd.sem_perm.mode & 0777) == 0600 && sd.sem_nsems == 1,
             "T: IPC_STAT key %x mode %o nsems %lu", sd.sem_perm.__key, sd.sem_perm.mode, (unsigned long)sd.sem_nsems);
    WL_CHECK(semctl(t, 0, GETVAL) == 42, "T: value %d, want 42", semctl(t, 0, GETVAL));
    WL_CHECK(msgctl(q, IPC_STAT, &qd) == 0 && qd.msg_perm.__key == qkey && (qd.msg_perm.mode & 0777) == 0620 && qd.msg_qnum == 4 &&
                 qd.msg_cbytes == 5 + 0 + BIG + 5 && qd.msg_qbytes == 8000,
             "Q: IPC_STAT key %x mode %o qnum %lu cbytes %lu qbytes %lu", qd.msg_perm.__key, qd.msg_perm.mode, (unsigned long)qd.msg_qnum,
             (unsigned long)qd.msg_cbytes, (unsigned long)qd.msg_qbytes);
    ssize_t n = msgrcv(q, &m, sizeof m.text, 9, IPC_NOWAIT);
    long at = -1;
    WL_CHECK(n == BIG && (at = wl_check_pattern((uint8_t *)m.text, BIG, 31)) < 0, "Q: type 9: %zd bytes, differs at %ld", n, at);
    static const struct {
        long type;
        const char *text;
    } rest[3] = {{5, "hello"}, {2, ""}, {5, "again"}};
    for (int i = 0; i < 3; i++) {
        memset(&m, 0, sizeof m);
        n = msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT);
        WL_CHECK(n == (ssize_t)strlen(rest[i].text) && m.type == rest[i].type && memcmp(m.text, rest[i].text, (size_t)n) == 0,
                 "Q: message %d: type %ld, %zd bytes, want type %ld \"%s\"", i, m.type, n, rest[i].type, rest[i].text);
    }
    WL_CHECK(msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT) < 0 && errno == ENOMSG, "Q: more messages than four");
    WL_CHECK(msgctl(p, IPC_STAT, &qd) == 0 && qd.msg_perm.__key == IPC_PRIVATE && (qd.msg_perm.mode & 0777) == 0600 && qd.msg_qnum == 0,
             "P: IPC_STAT key %x mode %o qnum %lu", qd.msg_perm.__key, qd.msg_perm.mode, (unsigned long)qd.msg_qnum);
    semctl(s, 0, IPC_RMID);
    semctl(t, 0, IPC_RMID);
    msgctl(q, IPC_RMID, NULL);
    msgctl(p, IPC_RMID, NULL);
    wl_finish("sysvipc", NULL);
}
