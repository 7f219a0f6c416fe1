/* grow_heap: leaks heap memory slowly. Every ~50 ms it mallocs 8 KiB,
 * touches it and keeps the pointer only in a local variable it overwrites,
 * so [heap] grows by 160 KiB a second. Runs until killed, or for the
 * seconds given as argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (8 * 1024)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double limit = argc > 1 ? atof(argv[1]) : 0;
	double start = now();
	struct timespec step = {0, 50 * 1000 * 1000};

	printf("ready %d\n", getpid());
	fflush(stdout);
	while (limit <= 0 || now() - start < limit) {
		char *p = malloc(BLOCK);
		if (p == NULL) {
			perror("malloc");
			return 1;
		}
		memset(p, 0x5a, BLOCK);
		nanosleep(&step, NULL);
	}
	return 0;
}
