/* Prints the process's module map the way a trace records it: path, load
 * bias and PT_LOAD segments in runtime addresses. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int print_module(struct dl_phdr_info *info, size_t size, void *data)
{
	char exe[4096];
	const char *name = info->dlpi_name;
	(void)size;
	(void)data;
	if (name == NULL || name[0] == 0) {
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		exe[n > 0 ? n : 0] = 0;
		name = exe;
	} else if (strstr(name, "linux-vdso") != NULL) {
		name = "[vdso]";
	}
	printf("module %lx %s\n", (unsigned long)info->dlpi_addr, name);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD)
			continue;
		printf("seg %lx %lx %c%c\n", (unsigned long)(info->dlpi_addr + ph->p_vaddr),
		       (unsigned long)(info->dlpi_addr + ph->p_vaddr + ph->p_memsz),
		       (ph->p_flags & PF_X) ? 'x' : '-', (ph->p_flags & PF_W) ? 'w' : '-');
	}
	return 0;
}

static void print_modules(void)
{
	dl_iterate_phdr(print_module, NULL);
}
