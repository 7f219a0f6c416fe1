/* grow_mmap: leaks anonymous memory through mmap. Every ~100 ms it maps a
 * 40 KiB anonymous region, touches every page and never unmaps it; the
 * kernel merges the adjacent regions into one mapping that grows by 40 KiB
 * a step. Runs until killed, or for the seconds given as argv[1]. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REGION (40 * 1024)

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
	struct timespec step = {0, 100 * 1000 * 1000};

	printf("ready %d\n", getpid());
	fflush(stdout);
	while (limit <= 0 || now() - start < limit) {
		char *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		memset(p, 0xa5, REGION);
		nanosleep(&step, NULL);
	}
	return 0;
}
