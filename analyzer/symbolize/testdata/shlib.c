/* Shared library of the symbolization tests. LIB_ENTRY renames the entry
 * point without moving any code, to build a look-alike library. */
#ifndef LIB_ENTRY
#define LIB_ENTRY lib_entry
#endif

__attribute__((noipa)) void *lib_leaf(void)
{
	return __builtin_return_address(0);
}

__attribute__((noipa)) void *LIB_ENTRY(void) { /* LINE:lib-decl */
	return lib_leaf(); /* LINE:lib-call */
}
