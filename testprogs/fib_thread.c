/* fib_thread: a worker thread computes Fibonacci numbers step by step and,
 * at each step, callocs an 8 KiB scratch block it never frees: a steady
 * leak from a thread other than main.
 *
 * usage: fib_thread [STEPS]   (default 20)
 * prints: steps=N fib=F allocs=N frees=0 leaked_blocks=N leaked_bytes=B
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define BLOCK 8192

static unsigned long steps = 20;
static unsigned long long fib_result;
static unsigned long allocs;

__attribute__((noinline)) static unsigned long long *scratch(void)
{
	unsigned long long *p = calloc(1, BLOCK);
	if (p == NULL) {
		perror("calloc");
		exit(1);
	}
	allocs++;
	return p;
}

static void *worker(void *arg)
{
	(void)arg;
	unsigned long long a = 0, b = 1;
	for (unsigned long i = 0; i < steps; i++) {
		unsigned long long *s = scratch();
		s[0] = a + b; /* the block is used, then forgotten */
		a = b;
		b = s[0];
	}
	fib_result = a;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		steps = strtoul(argv[1], NULL, 10);
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL) != 0) {
		fprintf(stderr, "pthread_create failed\n");
		return 1;
	}
	pthread_join(t, NULL);
	printf("steps=%lu fib=%llu allocs=%lu frees=0 leaked_blocks=%lu leaked_bytes=%lu\n",
	       steps, fib_result, allocs, allocs, allocs * BLOCK);
	return 0;
}
