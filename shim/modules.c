// The module map: path, load bias, segments and GNU build-id of every
// loaded object, recorded at start and whenever dlopen/dlclose (or the
// periodic rescan) finds a change, so the analyzer can symbolize offline —
// also frames in a library that was unloaded before exit.
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

#define MAX_MODULES 4096

struct mod {
	uintptr_t base;
	uintptr_t first; // runtime address of the first PT_LOAD: with base, identifies the object
	uint64_t name_hash;
	int seen;
};

static struct mod mods[MAX_MODULES];
static int nmods;
static pthread_mutex_t mods_mu = PTHREAD_MUTEX_INITIALIZER;
static char exe_path[4096];

static uint64_t hash_str(const char *s) {
	uint64_t h = 1469598103934665603u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211u;
	return h;
}

static const uint8_t *build_id(struct dl_phdr_info *info, size_t *len) {
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_NOTE)
			continue;
		const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
		const uint8_t *end = p + ph->p_memsz;
		while (p + sizeof(ElfW(Nhdr)) <= end) {
			const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
			const uint8_t *name = p + sizeof *nh;
			const uint8_t *desc = name + ((nh->n_namesz + 3) & ~3u);
			if (desc + nh->n_descsz > end)
				break;
			if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
				*len = nh->n_descsz;
				return desc;
			}
			p = desc + ((nh->n_descsz + 3) & ~3u);
		}
	}
	*len = 0;
	return NULL;
}

static int visit(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	(void)data;
	const char *path = info->dlpi_name;
	if (!path || !*path)
		path = exe_path;
	else if (strncmp(path, "linux-vdso", 10) == 0 || strncmp(path, "linux-gate", 10) == 0)
		path = "[vdso]";
	uintptr_t first = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		if (info->dlpi_phdr[i].p_type == PT_LOAD) {
			first = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
			break;
		}
	}
	uint64_t h = hash_str(path);
	for (int i = 0; i < nmods; i++) {
		if (mods[i].base == info->dlpi_addr && mods[i].first == first && mods[i].name_hash == h) {
			mods[i].seen = 1;
			return 0;
		}
	}
	if (nmods == MAX_MODULES)
		return 0;
	mods[nmods++] = (struct mod){info->dlpi_addr, first, h, 1};

	size_t idlen;
	const uint8_t *id = build_id(info, &idlen);
	proc_lock();
	uint8_t tag = REC_MODULE;
	proc_put(&tag, 1);
	proc_varint(barrier_time());
	proc_string(path);
	proc_varint(info->dlpi_addr);
	proc_varint(idlen);
	if (idlen)
		proc_put(id, idlen);
	int nseg = 0;
	for (int i = 0; i < info->dlpi_phnum; i++)
		nseg += info->dlpi_phdr[i].p_type == PT_LOAD;
	proc_varint((uint64_t)nseg);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD)
			continue;
		proc_varint(info->dlpi_addr + ph->p_vaddr);
		proc_varint(ph->p_memsz);
		uint8_t fl = ((ph->p_flags & PF_X) ? 1 : 0) | ((ph->p_flags & PF_W) ? 2 : 0);
		proc_put(&fl, 1);
	}
	proc_unlock();
	return 0;
}

// modules_scan records objects loaded since the last scan and the
// unloading of those no longer there.
HIDDEN void modules_scan(void) {
	t_guard++;
	pthread_mutex_lock(&mods_mu);
	if (!exe_path[0]) {
		ssize_t n = readlink("/proc/self/exe", exe_path, sizeof exe_path - 1);
		if (n <= 0)
			strcpy(exe_path, "[exe]");
		else
			exe_path[n] = 0;
	}
	for (int i = 0; i < nmods; i++)
		mods[i].seen = 0;
	dl_iterate_phdr(visit, NULL);
	for (int i = 0; i < nmods;) {
		if (mods[i].seen) {
			i++;
			continue;
		}
		proc_lock();
		uint8_t tag = REC_UNLOAD;
		proc_put(&tag, 1);
		proc_varint(barrier_time());
		proc_varint(mods[i].base);
		proc_varint(mods[i].first);
		proc_unlock();
		mods[i] = mods[--nmods];
	}
	pthread_mutex_unlock(&mods_mu);
	t_guard--;
}

// After exec the same pid runs a new image whose /proc/self/exe differs;
// after fork the child starts its own trace and must list every module.
HIDDEN void modules_reset(void) {
	pthread_mutex_init(&mods_mu, NULL);
	nmods = 0;
}
