/* mtrace_leaks: allocates, reallocates and frees under glibc's mtrace()
 * and leaks a known set of blocks, each of a size no other block has, so a
 * test can find them in the trace by size.
 *
 * Run with LD_PRELOAD=libc_malloc_debug.so MALLOC_TRACE=FILE. Prints, after
 * muntrace(), the program's own counts:
 *   leaked_blocks=N leaked_bytes=N leaked_sizes=S1,S2,...
 */
#define _GNU_SOURCE
#include <mcheck.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t leaked_sizes[16];
static int nleaked;
static void *keep[16]; /* leaked blocks stay referenced: no compiler games */

static void leak(void *p, size_t size)
{
	keep[nleaked] = p;
	leaked_sizes[nleaked++] = size;
}

__attribute__((noinline)) static void leak_malloc(void)
{
	leak(malloc(1001), 1001);
}

__attribute__((noinline)) static void leak_calloc(void)
{
	leak(calloc(2, 1001), 2002);
}

__attribute__((noinline)) static void leak_realloc(void)
{
	char *p = malloc(10);
	p = realloc(p, 3003); /* grows: "<" and ">" */
	leak(p, 3003);
}

__attribute__((noinline)) static void leak_memalign(void)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, 4004) == 0)
		leak(p, 4004);
}

__attribute__((noinline)) static void leak_strdup(void)
{
	const char *s = "forty-one bytes with the terminating nul";
	leak(strdup(s), strlen(s) + 1);
}

__attribute__((noinline)) static void *thread_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < 50; i++)
		free(malloc(16 + i));
	leak(malloc(5005), 5005);
	return NULL;
}

__attribute__((noinline)) static void balanced(void)
{
	/* Everything here is freed: malloc, calloc, realloc (grow, shrink,
	 * of NULL, to zero), aligned_alloc, strdup. */
	void *a = malloc(100);
	void *b = calloc(10, 10);
	a = realloc(a, 5000);
	a = realloc(a, 50);
	void *c = realloc(NULL, 77);
	void *d = aligned_alloc(256, 512);
	char *s = strdup("freed");
	free(a);
	free(b);
	c = realloc(c, 0); /* frees: glibc prints "-" */
	free(c);
	free(d);
	free(s);
	free(NULL);

	/* Failures: "+ (nil)" and "!"; the old block survives a failed
	 * realloc and is then freed. */
	volatile size_t huge = SIZE_MAX - 4096;
	void *f = malloc(huge);
	char *g = malloc(33);
	char *h = realloc(g, huge);
	if (h == NULL)
		free(g);
	else
		free(h);
	free(f);
}

int main(void)
{
	mtrace();
	balanced();
	leak_malloc();
	leak_calloc();
	leak_realloc();
	leak_memalign();
	leak_strdup();
	pthread_t t;
	pthread_create(&t, NULL, thread_main, NULL);
	pthread_join(t, NULL);
	muntrace();

	size_t bytes = 0;
	for (int i = 0; i < nleaked; i++)
		bytes += leaked_sizes[i];
	printf("leaked_blocks=%d leaked_bytes=%zu leaked_sizes=", nleaked, bytes);
	for (int i = 0; i < nleaked; i++)
		printf("%s%zu", i ? "," : "", leaked_sizes[i]);
	printf("\n");
	return keep[0] == NULL;
}
