/* reach_large: valgrind memcheck's reachability classes for blocks of
 * 64 KiB and more, which malloc maps one by one and whose sizes the exit
 * scan keeps apart from the small blocks'.
 *
 *   definitely lost  lost_tree's 2 MiB root (its pointer dropped);
 *                    lost_edge's block of 512 KiB less one byte, the
 *                    smallest size kept whole beside the live table
 *                    = 2,621,439 bytes in 2 blocks
 *   indirectly lost  lost_tree's child of 70 KiB, reached only from the
 *                    lost root = 71,680 bytes in 1 block
 *   possibly lost    possible's 1.5 MiB, whose only pointer (a global)
 *                    points 100 bytes inside
 *   still reachable  reachable's 3 MiB, held by a global
 *
 * prints: done
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *volatile interior; /* the only pointer into possible's block */
static void *volatile held;     /* keeps reachable's block reachable */

static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void lost_tree(void)
{
	void **root = calloc(1, 2 << 20);
	root[9000] = malloc(70 << 10);
	use(root);
}

__attribute__((noinline)) static void lost_edge(void)
{
	use(malloc((512 << 10) - 1));
}

__attribute__((noinline)) static void possible(void)
{
	interior = (char *)malloc(1536 << 10) + 100;
}

__attribute__((noinline)) static void reachable(void)
{
	held = malloc(3 << 20);
}

/* Overwrites the stack below main's frame, so no stale copy of a pointer
 * made above survives there to be found by a conservative scan. */
__attribute__((noinline)) static void scrub(void)
{
	volatile char buf[4096];
	memset((char *)buf, 0, sizeof(buf));
}

int main(void)
{
	lost_tree();
	lost_edge();
	possible();
	reachable();
	scrub();
	printf("done\n");
	return 0;
}
