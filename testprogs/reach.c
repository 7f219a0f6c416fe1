/* reach: one leak of each of valgrind memcheck's reachability classes,
 * each made in its own function so every allocation site is distinct.
 *
 *   definitely lost  lost_tree's 40-byte root (its pointer dropped);
 *                    leak_realloc's 200 bytes (malloc(10) grown by realloc);
 *                    leak_memalign's 300 bytes (posix_memalign, 64-aligned);
 *                    leak_strdup's 30 bytes (strdup)
 *                    = 570 bytes in 4 blocks
 *   indirectly lost  lost_tree's two 56-byte children, reached only from
 *                    the lost root = 112 bytes in 2 blocks
 *   possibly lost    possible's 64 bytes, whose only pointer (a global)
 *                    points 16 bytes inside
 *   still reachable  reachable's 48 bytes, held by a global
 *
 * prints: done
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
	struct node *left, *right;
	char payload[24];
};

struct leaf {
	char data[56];
};

/* volatile: stores to globals nobody reads are not optimized away. */
static char *volatile interior; /* the only pointer into possible's block */
static void *volatile held;     /* keeps reachable's block reachable */

/* The asm makes the compiler treat the block as used, so the allocation
 * survives any optimization level. */
static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void lost_tree(void)
{
	struct node *root = malloc(sizeof(*root));
	root->left = (struct node *)malloc(sizeof(struct leaf));
	root->right = (struct node *)malloc(sizeof(struct leaf));
	memset(root->payload, 0, sizeof(root->payload));
	use(root);
}

__attribute__((noinline)) static void possible(void)
{
	interior = (char *)malloc(64) + 16;
}

__attribute__((noinline)) static void reachable(void)
{
	held = malloc(48);
}

__attribute__((noinline)) static void leak_realloc(void)
{
	char *p = malloc(10);
	p = realloc(p, 200);
	use(p);
}

__attribute__((noinline)) static void leak_memalign(void)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, 300) == 0)
		use(p);
}

__attribute__((noinline)) static void leak_strdup(void)
{
	use(strdup("twenty-nine characters long.."));
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
	possible();
	reachable();
	leak_realloc();
	leak_memalign();
	leak_strdup();
	scrub();
	printf("done\n");
	return 0;
}
