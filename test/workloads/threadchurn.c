/*
 * A process that keeps making and ending threads, for the freeze of every thread: cptrst seizes
 * all of its threads, threads made and ended while it seizes included, and checkpoints the ones
 * it found. Afterwards (or after a restart) every thread must carry on as before.
 *
 *   threadchurn <trigger>
 *
 * Four workers, each with its own name and its own blocked mask, take turns on one mutex and
 * wake a waiter blocked in a condition variable; a churner makes short-lived threads one after
 * the other (each also named). On the trigger: every worker, the waiter and the churner still
 * make progress, each thread's name and mask are its own, and no thread is still traced.
 */
#include "common.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>

#define WORKERS 4

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long counts[WORKERS];
static unsigned long posted, woken;
static atomic_ulong churned;
static atomic_int bad_mask, bad_name;
static pid_t worker_tid[WORKERS];
static atomic_int started;

/* The signal each worker blocks on its own: a different one per thread. */
static int worker_signal(int i) { return SIGRTMIN + 1 + i; }

static void *worker(void *arg)
{
    int i = (int)(intptr_t)arg;
    char name[16];
    snprintf(name, sizeof name, "worker-%d", i);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, worker_signal(i));
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    worker_tid[i] = (pid_t)syscall(SYS_gettid);
    atomic_fetch_add(&started, 1);
    for (;;) {
        pthread_mutex_lock(&lock);
        counts[i]++;
        posted++;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
        sigset_t now;
        pthread_sigmask(SIG_BLOCK, NULL, &now);
        for (int j = 0; j < WORKERS; j++)
            if (sigismember(&now, worker_signal(j)) != (j == i))
                atomic_store(&bad_mask, 1);
        char cur[16] = {0};
        prctl(PR_GET_NAME, cur, 0, 0, 0);
        if (strcmp(cur, name) != 0)
            atomic_store(&bad_name, 1);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "waiter", 0, 0, 0);
    atomic_fetch_add(&started, 1);
    pthread_mutex_lock(&lock);
    for (;;) {
        unsigned long seen = posted;
        while (posted == seen)
            pthread_cond_wait(&cond, &lock);
        woken++;
    }
    return NULL;
}

static void *short_lived(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "short", 0, 0, 0);
    atomic_fetch_add(&churned, 1);
    return NULL;
}

static void *churner(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "churner", 0, 0, 0);
    atomic_fetch_add(&started, 1);
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

static void snapshot(unsigned long *c, unsigned long *w, unsigned long *ch)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < WORKERS; i++)
        c[i] = counts[i];
    *w = woken;
    pthread_mutex_unlock(&lock);
    *ch = atomic_load(&churned);
}

/* No thread of this process may still have a tracer. */
static void check_untraced(void)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) {
        wl_fail("opendir /proc/self/task: %s", strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* a short-lived thread ended */
        while (fgets(buf, sizeof buf, f) != NULL) {
            int tracer;
            if (sscanf(buf, "TracerPid: %d", &tracer) == 1 && tracer != 0)
                wl_fail("thread %s traced by %d", e->d_name, tracer);
        }
        fclose(f);
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    pthread_t t;
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0)
            return 1;
    if (pthread_create(&t, NULL, waiter, NULL) != 0 || pthread_create(&t, NULL, churner, NULL) != 0)
        return 1;
    while (atomic_load(&started) < WORKERS + 2)
        usleep(1000);
    wl_ready();
    while (!wl_triggered())
        usleep(10000);

    check_untraced();
    unsigned long c0[WORKERS], w0, ch0, c1[WORKERS], w1, ch1;
    snapshot(c0, &w0, &ch0);
    usleep(300000);
    snapshot(c1, &w1, &ch1);
    for (int i = 0; i < WORKERS; i++)
        WL_CHECK(c1[i] > c0[i], "worker %d stopped (%lu)", i, c1[i]);
    WL_CHECK(w1 > w0, "the waiter is no longer woken (%lu)", w1);
    WL_CHECK(ch1 > ch0, "no more short-lived threads (%lu)", ch1);
    WL_CHECK(!atomic_load(&bad_mask), "a worker's blocked mask changed");
    WL_CHECK(!atomic_load(&bad_name), "a worker's name changed");
    for (int i = 0; i < WORKERS; i++) {
        char path[64], comm[32] = {0}, want[16];
        snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)worker_tid[i]);
        snprintf(want, sizeof want, "worker-%d", wl_tamper && i == 0 ? 9 : i);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            wl_fail("worker %d (tid %d) is gone", i, (int)worker_tid[i]);
            continue;
        }
        if (fgets(comm, sizeof comm, f) != NULL)
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        WL_CHECK(strcmp(comm, want) == 0, "worker %d comm '%s', not '%s'", i, comm, want);
    }
    wl_finish("threadchurn", NULL);
}
