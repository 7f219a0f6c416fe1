/* mmap_leak: maps 40 KiB anonymous regions in a loop and unmaps only every
 * 4th one, so 3 of 4 mappings are never released.
 *
 * usage: mmap_leak [ITERATIONS]   (default 16: 4 unmapped, 12 leaked)
 * prints: mmaps=N munmaps=N leaked_regions=N leaked_bytes=B region_bytes=40960
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define REGION (40 * 1024)

__attribute__((noinline)) static void *map_region(void)
{
	void *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	((char *)p)[0] = 1; /* touch it so it is really in use */
	return p;
}

int main(int argc, char **argv)
{
	unsigned long n = 16, mmaps = 0, munmaps = 0;
	if (argc > 1)
		n = strtoul(argv[1], NULL, 10);
	for (unsigned long i = 0; i < n; i++) {
		void *p = map_region();
		mmaps++;
		if (i % 4 == 3) {
			if (munmap(p, REGION) != 0) {
				perror("munmap");
				return 1;
			}
			munmaps++;
		}
	}
	printf("mmaps=%lu munmaps=%lu leaked_regions=%lu leaked_bytes=%lu region_bytes=%d\n",
	       mmaps, munmaps, mmaps - munmaps, (mmaps - munmaps) * REGION, REGION);
	return 0;
}
