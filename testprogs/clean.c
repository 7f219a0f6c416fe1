/* clean: uses every allocation entry point, from main and from threads,
 * and frees everything it allocates. A leak checker must report nothing
 * from this program's own code.
 *
 * usage: clean [THREADS]   (default 4)
 * prints: allocs=N reallocs=N frees=N null_frees=N leaked_blocks=0 leaked_bytes=0
 *   allocs: malloc, calloc, posix_memalign, aligned_alloc and strdup calls;
 *   reallocs: realloc calls (one of NULL each round); frees: free calls,
 *   null_frees of them free(NULL).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_ulong allocs, frees, reallocs, null_frees;

__attribute__((noinline)) static void round_trip(int seed)
{
	void *a = malloc(32 + seed);
	void *b = calloc(4, 16 + seed);
	void *c = NULL;
	int rc = posix_memalign(&c, 64, 100 + seed);
	void *d = aligned_alloc(128, 256);
	char *e = strdup("a string to duplicate");
	if (!a || !b || rc != 0 || !d || !e) {
		fprintf(stderr, "allocation failed\n");
		exit(1);
	}
	atomic_fetch_add(&allocs, 5);

	a = realloc(a, 4000 + seed); /* grows, likely moves */
	b = realloc(b, 8);          /* shrinks in place */
	void *f = realloc(NULL, 24); /* realloc of NULL allocates */
	if (!a || !b || !f) {
		fprintf(stderr, "realloc failed\n");
		exit(1);
	}
	atomic_fetch_add(&reallocs, 3);

	free(a);
	free(b);
	free(c);
	free(d);
	free(e);
	free(f);
	free(NULL); /* a no-op, but a call all the same */
	atomic_fetch_add(&frees, 7);
	atomic_fetch_add(&null_frees, 1);
}

static void *worker(void *arg)
{
	int id = (int)(long)arg;
	for (int i = 0; i < 20; i++)
		round_trip(id * 100 + i);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4;
	pthread_t *t = malloc(sizeof(*t) * (n > 0 ? n : 1));
	atomic_fetch_add(&allocs, 1);
	round_trip(0);
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, worker, (void *)(long)(i + 1));
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	free(t);
	atomic_fetch_add(&frees, 1);
	printf("allocs=%lu reallocs=%lu frees=%lu null_frees=%lu leaked_blocks=0 leaked_bytes=0\n",
	       (unsigned long)allocs, (unsigned long)reallocs, (unsigned long)frees,
	       (unsigned long)null_frees);
	return 0;
}
