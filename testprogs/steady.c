/* steady: a process whose memory stays flat. It allocates 64 blocks of
 * 4 KiB once, then loops freeing one block and allocating it again, so
 * the allocator reuses the same memory. Runs until killed, or for the
 * seconds given as argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCKS 64
#define BLOCK (4 * 1024)

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
	struct timespec step = {0, 20 * 1000 * 1000};
	char *blocks[BLOCKS];
	unsigned i;

	for (i = 0; i < BLOCKS; i++) {
		blocks[i] = malloc(BLOCK);
		memset(blocks[i], 1, BLOCK);
	}
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (i = 0; limit <= 0 || now() - start < limit; i = (i + 1) % BLOCKS) {
		free(blocks[i]);
		blocks[i] = malloc(BLOCK);
		if (blocks[i] == NULL) {
			perror("malloc");
			return 1;
		}
		memset(blocks[i], 2, BLOCK);
		nanosleep(&step, NULL);
	}
	return 0;
}
