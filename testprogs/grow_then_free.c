/* grow_then_free: memory grows steadily while the program runs and is all
 * released just before exit. Nothing leaks at exit, but a growth analysis
 * over time sees one site climbing for the whole run.
 *
 * usage: grow_then_free [COUNT] [INTERVAL_US] [WARMUP]   (default 200 1000 0:
 *        200 blocks of 4 KiB, one per millisecond, about 200 ms in all;
 *        first WARMUP mallocs and frees of 64 bytes, as fast as they go)
 * prints: allocs=N frees=N block_bytes=4096 peak_bytes=N leaked_blocks=0 leaked_bytes=0
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCK 4096

/* Blocks are chained through their own first bytes: keeping them costs
 * no allocation of its own. */
struct block {
	struct block *next;
	char data[BLOCK - sizeof(struct block *)];
};

__attribute__((noinline)) static struct block *grow(struct block *list)
{
	struct block *b = malloc(sizeof(*b));
	if (b == NULL) {
		perror("malloc");
		exit(1);
	}
	memset(b->data, 0x5a, sizeof(b->data));
	b->next = list;
	return b;
}

/* Sleeps until start + us: deadlines, not intervals, so coarse timers
 * cannot stretch the run beyond COUNT*INTERVAL_US plus one late wakeup. */
static void sleep_until(const struct timespec *start, long us)
{
	struct timespec t = *start;
	t.tv_sec += us / 1000000;
	t.tv_nsec += (us % 1000000) * 1000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) != 0)
		;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 200;
	long interval = argc > 2 ? atol(argv[2]) : 1000;
	long warmup = argc > 3 ? atol(argv[3]) : 0;
	struct block *list = NULL;
	unsigned long allocs = 0, frees = 0;
	for (long i = 0; i < warmup; i++) {
		void *p = malloc(64);
		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < count; i++) {
		list = grow(list);
		allocs++;
		if (interval > 0)
			sleep_until(&start, (i + 1) * interval);
	}
	while (list != NULL) {
		struct block *next = list->next;
		free(list);
		frees++;
		list = next;
	}
	printf("allocs=%lu frees=%lu block_bytes=%d peak_bytes=%lu leaked_blocks=0 leaked_bytes=0\n",
	       allocs, frees, BLOCK, allocs * BLOCK);
	return 0;
}
