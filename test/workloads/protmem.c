/*
 * protmem <trigger>: large areas full of data that the process cannot read or write itself:
 * 256 KiB read-only private anonymous, 256 KiB PROT_NONE, and a 512 KiB read-write area with a
 * 64 KiB PROT_NONE hole in its middle. Memory transfers of that size take the bulk paths, and
 * these areas are where they must fall back. After the trigger it makes everything readable
 * again and checks every byte (and that the protections are still what they were).
 */
#include "common.h"
#include <stdio.h>
#include <sys/mman.h>

#define RO_LEN (256 * 1024)
#define NONE_LEN (256 * 1024)
#define HOLED_LEN (512 * 1024)
#define HOLE_OFF (224 * 1024)
#define HOLE_LEN (64 * 1024)

static uint8_t *map_filled(size_t len, uint64_t seed)
{
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        wl_fail("mmap: %s", strerror(errno));
        return NULL;
    }
    wl_fill_pattern(p, len, seed);
    return p;
}

/* "r--p" etc. for the mapping that contains addr, from /proc/self/maps */
static void perms_of(const void *addr, char out[5])
{
    strcpy(out, "????");
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && (unsigned long)addr >= lo && (unsigned long)addr < hi) {
            strcpy(out, perms);
            break;
        }
    }
    fclose(f);
}

static void expect_perms(const char *what, const void *addr, const char *want)
{
    char got[5];
    perms_of(addr, got);
    if (strcmp(got, want) != 0)
        wl_fail("%s is %s, want %s", what, got, want);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 1, "<trigger>");
    uint8_t *ro = map_filled(RO_LEN, 101), *none = map_filled(NONE_LEN, 202), *holed = map_filled(HOLED_LEN, 303);
    if (!ro || !none || !holed)
        wl_finish("protmem", NULL);
    mprotect(ro, RO_LEN, PROT_READ);
    mprotect(none, NONE_LEN, PROT_NONE);
    mprotect(holed + HOLE_OFF, HOLE_LEN, PROT_NONE);
    wl_ready();
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (!wl_triggered())
        nanosleep(&ts, NULL);

    expect_perms("the read-only area", ro, "r--p");
    expect_perms("the PROT_NONE area", none, "---p");
    expect_perms("the hole", holed + HOLE_OFF, "---p");
    expect_perms("the area around the hole", holed, "rw-p");
    mprotect(none, NONE_LEN, PROT_READ);
    mprotect(holed + HOLE_OFF, HOLE_LEN, PROT_READ | PROT_WRITE);
    if (wl_tamper)
        holed[HOLE_OFF + 5]++;
    long at;
    if ((at = wl_check_pattern(ro, RO_LEN, 101)) >= 0)
        wl_fail("read-only area differs at byte %ld", at);
    if ((at = wl_check_pattern(none, NONE_LEN, 202)) >= 0)
        wl_fail("PROT_NONE area differs at byte %ld", at);
    if ((at = wl_check_pattern(holed, HOLED_LEN, 303)) >= 0)
        wl_fail("holed area differs at byte %ld", at);
    wl_finish("protmem", NULL);
}
