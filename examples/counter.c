/*
 * counter: the example process of examples/demo.sh. Counts, and prints one line per tick:
 * its PID, the count, and a checksum over a megabyte of heap that it rewrites as it goes, so a
 * restored copy shows that its registers (the count), its heap and its open log file all came
 * back. Usage: counter [interval-ms]   (default 250)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEAP_BYTES (1u << 20)

static uint64_t fnv1a(const unsigned char *p, size_t n) {
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

int main(int argc, char **argv) {
	long interval_ms = argc > 1 ? atol(argv[1]) : 250;
	if (interval_ms <= 0) interval_ms = 250;
	/*
	 * Like a daemon, drop whatever descriptors the caller leaked to us (a pipe of the shell, say):
	 * cptrst refuses kinds of files it has no handler for, and a stray pipe would be one.
	 */
	syscall(SYS_close_range, 3u, ~0u, 0u);
	/* stdout is usually a log file: one line per write, so the log is current when we are frozen. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	unsigned char *heap = malloc(HEAP_BYTES);
	if (!heap) return 1;
	memset(heap, 0, HEAP_BYTES);

	struct timespec tick = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
	for (uint64_t n = 1;; n++) {
		/* Each tick changes one 4 KiB page of the heap: the checksum depends on the whole history. */
		size_t page = (size_t)(n % (HEAP_BYTES / 4096)) * 4096;
		memset(heap + page, (int)(n & 0xff), 4096);
		printf("counter pid %d: %llu (heap checksum %016llx)\n", (int)getpid(), (unsigned long long)n,
		       (unsigned long long)fnv1a(heap, HEAP_BYTES));
		nanosleep(&tick, NULL);
	}
}
