/* dlopen_lib: a shared library whose one function leaks three 100-byte
 * blocks. Tests build it themselves, as testutil builds executables only:
 *
 *   gcc -shared -fPIC -g -O0 -fno-omit-frame-pointer -o libdlopen_lib.so dlopen_lib.c
 *
 * and pass its path to dlopen_main. After dlopen_main dlcloses it, the
 * leaks' allocation sites point into a module no longer mapped.
 */
#include <stdlib.h>
#include <string.h>

#define BLOCK 100

/* Forgotten on purpose: nothing keeps the pointers. */
__attribute__((noinline)) static void leak_one(int i)
{
	char *p = malloc(BLOCK);
	if (p != NULL)
		memset(p, 'a' + i, BLOCK);
	__asm__ volatile("" : : "r"(p) : "memory");
}

/* dl_leak3 leaks 3 blocks of 100 bytes and returns how many it leaked. */
int dl_leak3(void)
{
	for (int i = 0; i < 3; i++)
		leak_one(i);
	return 3;
}
