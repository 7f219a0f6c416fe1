/* Symbolization test program: prints return addresses taken inside
 * inlined code and in a shared library, then its module map. Built with
 * -O2 -fno-optimize-sibling-calls so the calls stay calls. REBUILT makes a
 * build of the same code with another build ID. */
#include "modules.h"

#ifdef REBUILT
int rebuilt = 1;
#endif

void *lib_entry(void);

__attribute__((noipa)) void *leaf(void)
{
	return __builtin_return_address(0);
}

static inline __attribute__((always_inline)) void *inner(void)
{
	return leaf(); /* LINE:inner-call */
}

static inline __attribute__((always_inline)) void *outer(void)
{
	return inner(); /* LINE:outer-call */
}

__attribute__((noipa)) void *entry(void) { /* LINE:entry-decl */
	return outer(); /* LINE:entry-call */
}

int main(void)
{
	printf("ra entry %lx\n", (unsigned long)entry());
	printf("ra lib %lx\n", (unsigned long)lib_entry());
	printf("fn entry %lx\n", (unsigned long)&entry);
	print_modules();
	return 0;
}
