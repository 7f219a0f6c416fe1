/* dlopen_main: dlopens the library named by argv[1] (dlopen_lib.c built as
 * a shared object), calls its dl_leak3, dlcloses it and exits.
 *
 * usage: dlopen_main /path/to/libdlopen_lib.so
 * prints: lib_calls=1 dlclose=0 leaked_blocks=3 leaked_bytes=300
 */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s LIBRARY\n", argv[0]);
		return 2;
	}
	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	int (*leak3)(void);
	*(void **)&leak3 = dlsym(h, "dl_leak3");
	if (leak3 == NULL) {
		fprintf(stderr, "dlsym: %s\n", dlerror());
		return 1;
	}
	int n = leak3();
	int rc = dlclose(h);
	printf("lib_calls=1 dlclose=%d leaked_blocks=%d leaked_bytes=%d\n", rc, n, n * 100);
	return rc != 0;
}
