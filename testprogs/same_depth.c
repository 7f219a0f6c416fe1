/* same_depth: one allocation site reached from two callers at the same
 * stack depth, in turn. The allocating frame has the same address and
 * stack pointer every time: only the words above it on the stack tell the
 * two callers apart, and a stack walk must tell them apart too.
 *
 *   via_a leaks 1,000 blocks of 16 bytes
 *   via_b leaks 1,000 blocks of 48 bytes
 *
 * prints: a_blocks=1000 b_blocks=1000
 */
#include <stdio.h>
#include <stdlib.h>

static void use(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

/* Not a tail call: the asm after malloc keeps this frame on the stack. */
__attribute__((noinline)) static void *site(size_t n)
{
	void *p = malloc(n);
	use(p);
	return p;
}

__attribute__((noinline)) static void via_a(void)
{
	use(site(16));
}

__attribute__((noinline)) static void via_b(void)
{
	use(site(48));
}

int main(void)
{
	int n = 1000;
	for (int i = 0; i < n; i++) {
		via_a();
		via_b();
	}
	printf("a_blocks=%d b_blocks=%d\n", n, n);
	return 0;
}
