/*
 * pidhold <trigger>: holds a PID. Writes READY, then waits (nanosleep 20 ms at a time) for
 * the trigger; checks only that its PID did not change. Used by tests of "that PID is taken".
 */
#include "common.h"

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    wl_ready();
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (!wl_triggered())
        nanosleep(&ts, NULL);
    wl_finish("pidhold", NULL);
}
