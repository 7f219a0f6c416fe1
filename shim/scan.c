// The exit-time reachability scan: valgrind memcheck's leak kinds without
// valgrind. Roots are the writable segments of loaded objects, the
// exiting thread's stack from its stack pointer (registers spilled onto
// it), the whole stacks of other live threads, and writable mappings that
// are neither malloc's arenas, the program's traced blocks nor the
// tracer's own memory. Marking follows valgrind's rules:
//   reachable  a start pointer reaches the block from the roots;
//   possible   only interior pointers reach it;
//   indirect   unreached, but pointed to from a lost block;
//   definite   unreached, and no lost block points to it.
// Only blocks that are not reachable get a record; the analyzer takes
// every other live block of a scanned trace as reachable.
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "live.h"

enum { UNREACHED, POSSIBLE, REACHABLE, INDIRECT, DEFINITE };

struct blk {
	uintptr_t addr, end;
};

static struct blk *blks;
static uint8_t *state;
static uint8_t *scannable; // 0: do not read its content (read-only or shared mapping)
static uint64_t *indirect;
static uint32_t *work;
static size_t nblk, nwork;
static uintptr_t lo_all, hi_all;

// Page index: for each 4 KiB page of a populated 1 GiB window, the index
// of the first block that ends after the page starts.
#define MAX_WINDOWS 256
static struct {
	uintptr_t gib;
	uint32_t *first;
} windows[MAX_WINDOWS];
static int nwindows;

static uint32_t *window(uintptr_t gib, int create) {
	for (int i = 0; i < nwindows; i++)
		if (windows[i].gib == gib)
			return windows[i].first;
	if (!create || nwindows == MAX_WINDOWS)
		return NULL;
	uint32_t *f = live_map((1u << 18) * sizeof(uint32_t));
	if (!f)
		return NULL;
	memset(f, 0xff, (1u << 18) * sizeof(uint32_t));
	windows[nwindows].gib = gib;
	windows[nwindows].first = f;
	nwindows++;
	return f;
}

static void index_blocks(void) {
	for (size_t i = 0; i < nblk; i++) {
		uintptr_t a = blks[i].addr & ~(uintptr_t)4095;
		uintptr_t e = blks[i].end ? blks[i].end - 1 : blks[i].addr;
		for (; a <= e; a += 4096) {
			uint32_t *f = window(a >> 30, 1);
			if (!f)
				break;
			uint32_t *slot = &f[(a >> 12) & ((1u << 18) - 1)];
			if (*slot == UINT32_MAX)
				*slot = (uint32_t)i;
		}
	}
}

// find returns the block holding address w, or -1.
static inline long find(uintptr_t w) {
	if (w < lo_all || w >= hi_all)
		return -1;
	uint32_t *f = window(w >> 30, 0);
	if (!f)
		return -1;
	uint32_t i = f[(w >> 12) & ((1u << 18) - 1)];
	if (i == UINT32_MAX)
		return -1;
	for (; i < nblk && blks[i].addr <= w; i++)
		if (w < blks[i].end || (w == blks[i].addr))
			return (long)i;
	return -1;
}

static size_t radix_count[65536 + 1];

// radix_sort orders blocks by address in four passes of 16 bits: linear in
// the number of blocks, which can be tens of millions.
static void radix_sort(struct blk *a, struct blk *tmp, size_t n) {
	for (int shift = 0; shift < 64; shift += 16) {
		memset(radix_count, 0, sizeof radix_count);
		for (size_t i = 0; i < n; i++)
			radix_count[((a[i].addr >> shift) & 0xffff) + 1]++;
		if (radix_count[((a[0].addr >> shift) & 0xffff) + 1] == n)
			continue; // every block shares these bits
		for (size_t k = 0; k < 65536; k++)
			radix_count[k + 1] += radix_count[k];
		for (size_t i = 0; i < n; i++)
			tmp[radix_count[(a[i].addr >> shift) & 0xffff]++] = a[i];
		memcpy(a, tmp, n * sizeof *a);
	}
}

// ---- marking ------------------------------------------------------------------

static inline void reach(uintptr_t w) {
	long i = find(w);
	if (i < 0)
		return;
	uint8_t want = w == blks[i].addr ? REACHABLE : POSSIBLE;
	if (state[i] == UNREACHED) {
		state[i] = want;
		work[nwork++] = (uint32_t)i;
	} else if (state[i] == POSSIBLE && want == REACHABLE) {
		state[i] = REACHABLE;
	}
}

static void scan_range(uintptr_t from, uintptr_t to, void (*fn)(uintptr_t)) {
	from = (from + 7) & ~(uintptr_t)7;
	for (const uintptr_t *p = (const uintptr_t *)from; (uintptr_t)(p + 1) <= to; p++)
		fn(*p);
}

static void flood_roots(void) {
	while (nwork) {
		uint32_t i = work[--nwork];
		if (scannable[i])
			scan_range(blks[i].addr, blks[i].end, reach);
	}
}

static uint32_t leader;

static inline void reach_clique(uintptr_t w) {
	long i = find(w);
	if (i < 0 || (uint32_t)i == leader)
		return;
	if (state[i] == UNREACHED) {
		state[i] = INDIRECT;
		indirect[leader] += blks[i].end - blks[i].addr;
		work[nwork++] = (uint32_t)i;
	} else if (state[i] == DEFINITE) {
		// An earlier leader is pointed to by this one: it joins the clique.
		state[i] = INDIRECT;
		indirect[leader] += blks[i].end - blks[i].addr + indirect[i];
		indirect[i] = 0;
	}
}

static void cliques(void) {
	for (size_t k = 0; k < nblk; k++) {
		if (state[k] != UNREACHED)
			continue;
		leader = (uint32_t)k;
		state[k] = DEFINITE;
		if (scannable[k])
			scan_range(blks[k].addr, blks[k].end, reach_clique);
		while (nwork) {
			uint32_t i = work[--nwork];
			if (scannable[i])
				scan_range(blks[i].addr, blks[i].end, reach_clique);
		}
	}
}

// ---- roots --------------------------------------------------------------------

static uintptr_t skip_lo[8], skip_hi[8];
static int nskip;

// The tracer's own objects (libleak.so, with the Go runtime, and the
// libunwind it loads) hold addresses of every block: never roots.
static int is_tracer_object(struct dl_phdr_info *info) {
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t s = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD && self_text_lo >= s && self_text_lo < s + ph->p_memsz)
			return 1;
	}
	return info->dlpi_name && strstr(info->dlpi_name, "/libunwind") != NULL;
}

static int root_segments(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	(void)data;
	int tracer = is_tracer_object(info);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
			continue;
		uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
		if (!tracer)
			scan_range(s, e, reach);
		if (nskip < 8 && tracer) {
			skip_lo[nskip] = s & ~(uintptr_t)4095;
			skip_hi[nskip++] = (e + 4095) & ~(uintptr_t)4095;
		}
	}
	return 0;
}

// Mappings, read from /proc/self/maps without allocating.
struct mapping {
	uintptr_t start, end;
	int r, w, shared, named;
	char name[64];
};

static int next_mapping(int fd, char *buf, size_t cap, size_t *len, size_t *pos, struct mapping *m) {
	for (;;) {
		char *nl = memchr(buf + *pos, '\n', *len - *pos);
		if (!nl) {
			memmove(buf, buf + *pos, *len - *pos);
			*len -= *pos;
			*pos = 0;
			ssize_t r = read(fd, buf + *len, cap - *len);
			if (r <= 0)
				return 0;
			*len += (size_t)r;
			continue;
		}
		char *line = buf + *pos;
		*pos = (size_t)(nl - buf) + 1;
		*nl = 0;
		memset(m, 0, sizeof *m);
		char *p = line;
		while (*p && *p != '-')
			m->start = m->start * 16 + (uintptr_t)(*p <= '9' ? *p - '0' : (*p | 32) - 'a' + 10), p++;
		if (*p == '-')
			p++;
		while (*p && *p != ' ')
			m->end = m->end * 16 + (uintptr_t)(*p <= '9' ? *p - '0' : (*p | 32) - 'a' + 10), p++;
		if (*p == ' ')
			p++;
		m->r = p[0] == 'r';
		m->w = p[1] == 'w';
		m->shared = p[3] == 's';
		// Skip offset, device and inode to the name.
		for (int f = 0; f < 4 && *p; f++) {
			while (*p && *p != ' ')
				p++;
			while (*p == ' ')
				p++;
		}
		if (*p) {
			m->named = 1;
			strncpy(m->name, p, sizeof m->name - 1);
		}
		return 1;
	}
}

static int overlaps(uintptr_t s, uintptr_t e, const struct region *r, size_t n) {
	for (size_t i = 0; i < n; i++)
		if (r[i].start < e && r[i].end > s)
			return 1;
	return 0;
}

static int holds_block(uintptr_t s, uintptr_t e) {
	// Blocks are sorted: binary search the first block ending after s.
	size_t lo = 0, hi = nblk;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (blks[mid].end <= s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nblk && blks[lo].addr < e;
}

static int thread_stack(uintptr_t s, uintptr_t e) {
	for (int i = 0; i < nthreads_known; i++)
		if (threads_known[i].lo < e && threads_known[i].hi > s)
			return 1;
	return 0;
}

static int thread_alive(pid_t tid) { return syscall(SYS_tgkill, leak_pid, tid, 0) == 0; }

static void root_mappings(uintptr_t sp) {
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	static char buf[65536];
	size_t len = 0, pos = 0;
	struct mapping m;
	size_t ntr;
	const struct region *tr = tracer_maps_get(&ntr);
	while (next_mapping(fd, buf, sizeof buf, &len, &pos, &m)) {
		if (!m.r)
			continue;
		if (sp >= m.start && sp < m.end) {
			scan_range(sp, m.end, reach); // the exiting thread, from its stack pointer
			continue;
		}
		if (!m.w || m.shared)
			continue;
		if (m.named && m.name[0] != '[') // a file: object segments were scanned from their headers
			continue;
		if (m.named && strncmp(m.name, "[stack", 6) != 0 && strncmp(m.name, "[anon", 5) != 0)
			continue; // [heap], [vvar], [vdso]: the heap is scanned block by block
		int skip = 0;
		for (int i = 0; i < nskip; i++)
			skip |= skip_lo[i] < m.end && skip_hi[i] > m.start;
		if (skip || overlaps(m.start, m.end, tr, ntr) || live_lists_overlap(m.start, m.end))
			continue; // the tracer's memory holds every address
		if (thread_stack(m.start, m.end)) {
			for (int i = 0; i < nthreads_known; i++) {
				struct thread_rec *t = &threads_known[i];
				if (t->lo < m.end && t->hi > m.start && thread_alive(t->tid))
					scan_range(m.start, m.end, reach);
			}
			continue; // a dead thread's cached stack holds only stale words
		}
		if ((m.start & ((64u << 20) - 1)) == 0)
			continue; // a malloc arena: free chunks point everywhere
		if (holds_block(m.start, m.end))
			continue; // a large block's own mapping, or a traced mapping
		scan_range(m.start, m.end, reach);
	}
	close(fd);
}

// ---- the scan -------------------------------------------------------------------

HIDDEN int scan_content_bytes;

static void put_verdicts(uint64_t t0) {
	size_t nv = 0;
	for (size_t i = 0; i < nblk; i++)
		nv += state[i] != REACHABLE;
	proc_lock();
	uint8_t tag = REC_SCAN;
	proc_put(&tag, 1);
	proc_varint(t0);
	proc_varint(nblk);
	proc_varint((uint64_t)scan_content_bytes);
	proc_varint(nv);
	uintptr_t prev = 0;
	for (size_t i = 0; i < nblk; i++) {
		if (state[i] == REACHABLE)
			continue;
		int64_t d = (int64_t)(blks[i].addr - prev);
		prev = blks[i].addr;
		proc_varint(((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
		uint8_t k = state[i] == DEFINITE ? 1 : state[i] == INDIRECT ? 2 : 3;
		proc_put(&k, 1);
		if (k == 1)
			proc_varint(indirect[i]);
		if (scan_content_bytes > 0) {
			size_t n = blks[i].end - blks[i].addr;
			if (n > (size_t)scan_content_bytes)
				n = (size_t)scan_content_bytes;
			if (!scannable[i])
				n = 0;
			proc_varint(n);
			proc_put((const void *)blks[i].addr, n);
		}
	}
	proc_unlock();
}

HIDDEN int scan_run(void) {
	if (!live_enabled)
		return 0;
	// Registers that hold pointers are spilled into this frame, which the
	// stack scan covers.
	__builtin_unwind_init();
	volatile uintptr_t here = 0;
	uintptr_t sp = (uintptr_t)&here;
	uint64_t t0 = now_units();

	size_t nheap = live_freeze();
	size_t nmaps;
	const struct region *maps = live_maps(&nmaps);
	size_t cap = nheap + nmaps + 1;
	struct blk *tmp = live_map(cap * sizeof *tmp);
	struct lt_ent *ents = live_map(nheap * sizeof *ents + 1);
	blks = live_map(cap * sizeof *blks);
	state = live_map(cap);
	scannable = live_map(cap);
	indirect = live_map(cap * sizeof *indirect);
	work = live_map(cap * sizeof *work);
	if (!tmp || !ents || !blks || !state || !scannable || !indirect || !work) {
		live_thaw();
		proc_note("not enough memory for the reachability scan of %zu blocks", nheap);
		return 0;
	}
	size_t k = live_collect(ents, nheap);
	nblk = 0;
	for (size_t i = 0; i < k; i++)
		blks[nblk++] = (struct blk){ents[i].addr, ents[i].addr + ents[i].size};
	for (size_t i = 0; i < nmaps; i++)
		blks[nblk++] = (struct blk){maps[i].start, maps[i].end};
	radix_sort(blks, tmp, nblk);
	for (size_t i = 0; i < nblk; i++) {
		scannable[i] = 1;
		for (size_t j = 0; j < nmaps; j++) {
			if (maps[j].start == blks[i].addr) {
				// Read-only or shared mappings hold no pointers of ours
				// worth the cost of reading them.
				scannable[i] = (maps[j].prot & PROT_READ) && (maps[j].prot & PROT_WRITE) &&
					       !(maps[j].flags & MAP_SHARED);
				break;
			}
		}
	}
	lo_all = nblk ? blks[0].addr : 0;
	hi_all = nblk ? blks[nblk - 1].end + 1 : 0;
	nwindows = 0;
	index_blocks();

	nskip = 0;
	nwork = 0;
	dl_iterate_phdr(root_segments, NULL);
	root_mappings(sp);
	flood_roots();
	cliques();
	put_verdicts(t0);
	live_thaw();

	for (int i = 0; i < nwindows; i++)
		live_unmap(windows[i].first, (1u << 18) * sizeof(uint32_t));
	live_unmap(tmp, cap * sizeof *tmp);
	live_unmap(ents, nheap * sizeof *ents + 1);
	live_unmap(blks, cap * sizeof *blks);
	live_unmap(state, cap);
	live_unmap(scannable, cap);
	live_unmap(indirect, cap * sizeof *indirect);
	live_unmap(work, cap * sizeof *work);
	return 1;
}
