/* alloc_bench: the allocation-heavy benchmark workload. Every iteration
 * mallocs one block of 16..527 bytes (deterministic PRNG) at the bottom of
 * a chain of 9 to 12 nested calls (the depth cycles with the iteration),
 * so stack capture has real work to do. Blocks live in a sliding window of
 * 1024: each new block replaces, and frees, the one 1024 iterations older.
 * Every 7th iteration the new block is realloc'd to a new size, and every
 * 1000th block is leaked instead of entering the window. What is left in
 * the window at the end is freed.
 *
 * usage: alloc_bench [ITERATIONS] [THREADS]   (default 2000000 1)
 *   each thread runs ITERATIONS/THREADS iterations with its own window.
 * prints: iterations=N threads=T allocs=N reallocs=N frees=N leaked_blocks=N leaked_bytes=N
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define WINDOW 1024
#define MIN_DEPTH 9

struct ctx {
	uint64_t rng;
	size_t size;
	unsigned long iterations, allocs, reallocs, frees, leaked_blocks, leaked_bytes;
	void *window[WINDOW];
};

static uint64_t next_rand(struct ctx *c)
{
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 2685821657736338717ULL;
}

/* The asm keeps the compiler from merging the chain into tail calls or
 * dropping blocks it can prove unused, at any optimization level. */
static void *keep(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
	return p;
}

__attribute__((noinline)) static void *alloc_site(struct ctx *c)
{
	void *p = malloc(c->size);
	if (p == NULL) {
		perror("malloc");
		exit(1);
	}
	c->allocs++;
	return keep(p);
}

#define LEVEL(n, deeper)                                                                       \
	__attribute__((noinline)) static void *level##n(struct ctx *c, int depth)              \
	{                                                                                      \
		return keep(depth <= n ? alloc_site(c) : deeper(c, depth));                    \
	}

LEVEL(12, level12)
LEVEL(11, level12)
LEVEL(10, level11)
LEVEL(9, level10)
LEVEL(8, level9)
LEVEL(7, level8)
LEVEL(6, level7)
LEVEL(5, level6)
LEVEL(4, level5)
LEVEL(3, level4)
LEVEL(2, level3)
LEVEL(1, level2)

__attribute__((noinline)) static void *resize(struct ctx *c, void *p)
{
	void *n = realloc(p, c->size);
	if (n == NULL) {
		perror("realloc");
		exit(1);
	}
	c->reallocs++;
	return keep(n);
}

static void *run(void *arg)
{
	struct ctx *c = arg;
	for (unsigned long i = 0; i < c->iterations; i++) {
		c->size = 16 + next_rand(c) % 512;
		void *p = level1(c, MIN_DEPTH + (int)(i % 4));
		if (i % 7 == 6) {
			c->size = 16 + next_rand(c) % 512;
			p = resize(c, p);
		}
		if (i % 1000 == 999) {
			c->leaked_blocks++;
			c->leaked_bytes += c->size;
			continue;
		}
		void **slot = &c->window[i % WINDOW];
		if (*slot != NULL) {
			free(*slot);
			c->frees++;
		}
		*slot = p;
	}
	for (int k = 0; k < WINDOW; k++) {
		if (c->window[k] != NULL) {
			free(c->window[k]);
			c->frees++;
			c->window[k] = NULL;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned long iterations = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
	int threads = argc > 2 ? atoi(argv[2]) : 1;
	if (threads < 1 || threads > 1024) {
		fprintf(stderr, "threads must be 1..1024\n");
		return 2;
	}
	/* Static storage: the benchmark's own bookkeeping makes no
	 * allocator calls. */
	static struct ctx ctxs[1024];
	static pthread_t tids[1024];
	for (int t = 0; t < threads; t++) {
		ctxs[t].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1);
		ctxs[t].iterations = iterations / threads;
	}
	if (threads == 1) {
		run(&ctxs[0]);
	} else {
		for (int t = 0; t < threads; t++)
			if (pthread_create(&tids[t], NULL, run, &ctxs[t]) != 0) {
				fprintf(stderr, "pthread_create failed\n");
				return 1;
			}
		for (int t = 0; t < threads; t++)
			pthread_join(tids[t], NULL);
	}
	struct ctx sum = {0};
	for (int t = 0; t < threads; t++) {
		sum.iterations += ctxs[t].iterations;
		sum.allocs += ctxs[t].allocs;
		sum.reallocs += ctxs[t].reallocs;
		sum.frees += ctxs[t].frees;
		sum.leaked_blocks += ctxs[t].leaked_blocks;
		sum.leaked_bytes += ctxs[t].leaked_bytes;
	}
	printf("iterations=%lu threads=%d allocs=%lu reallocs=%lu frees=%lu leaked_blocks=%lu leaked_bytes=%lu\n",
	       sum.iterations, threads, sum.allocs, sum.reallocs, sum.frees, sum.leaked_blocks, sum.leaked_bytes);
	return 0;
}
