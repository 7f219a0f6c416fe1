/* sparse_bss: a 64 MiB .bss the program writes in one place only, where
 * it keeps the only pointer to a 4 KiB heap block. That block is still
 * reachable at exit; a 100-byte block whose pointer is dropped is
 * definitely lost. A leak checker must find the pointer far into the
 * .bss, and need not read (fault in) the pages the program never used.
 *
 * prints: done
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char big[64 << 20];

static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

__attribute__((noinline)) static void keep(void)
{
	void *p = malloc(4096);
	memcpy(big + (40 << 20) + 8, &p, sizeof p);
}

__attribute__((noinline)) static void lose(void)
{
	use(malloc(100));
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
	keep();
	lose();
	scrub();
	printf("done\n");
	return 0;
}
