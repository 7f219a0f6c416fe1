/* big_heap: a large live heap of small blocks for timing the exit scan.
 * Allocates MIB mebibytes (default 1024) of 64-byte blocks, each pointing
 * to the previous one, with the newest held by a global: everything is
 * reachable, so the scan follows every block.
 *
 * usage: big_heap [MIB]
 * prints: blocks=N bytes=B
 */
#include <stdio.h>
#include <stdlib.h>

struct node {
	struct node *prev;
	char pad[56];
};

static struct node *head;

int main(int argc, char **argv)
{
	long mib = argc > 1 ? atol(argv[1]) : 1024;
	long n = mib * 1024 * 1024 / (long)sizeof(struct node);
	for (long i = 0; i < n; i++) {
		struct node *x = malloc(sizeof *x);
		if (x == NULL) {
			perror("malloc");
			return 1;
		}
		x->prev = head;
		head = x;
	}
	printf("blocks=%ld bytes=%ld\n", n, n * (long)sizeof(struct node));
	return 0;
}
