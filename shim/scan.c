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
static uint8_t *heapblk;   // 1: a malloc block, 0: a mapping
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

static long find_raw(uintptr_t w);

// find returns the block holding address w, or -1. glibc's malloc keeps
// pointers to chunk headers (its bins, the top chunk); the header of the
// chunk after a block lies in the block's last 8 bytes, and such a
// pointer is malloc's, not the program's.
static inline long find(uintptr_t w) {
	long i = find_raw(w);
	if (i >= 0 && heapblk[i]) {
		uintptr_t size = blks[i].end - blks[i].addr;
		uintptr_t chunk = (size + 8 + 15) & ~(uintptr_t)15;
		if (chunk < 32)
			chunk = 32;
		if (w == blks[i].addr - 16 + chunk)
			return -1;
	}
	return i;
}

static long find_raw(uintptr_t w) {
	if (w < lo_all || w >= hi_all)
		return -1;
	uint32_t *f = window(w >> 30, 0);
	if (!f)
		return -1;
	uint32_t i = f[(w >> 12) & ((1u << 18) - 1)];
	if (i == UINT32_MAX)
		return -1;
	// Blocks are at least 16 bytes apart: at most 257 start in a page
	// (one more reaches into it). Binary search for the last block at or
	// below w.
	size_t lo = i, hi = i + 258 < nblk ? i + 258 : nblk;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (blks[mid].addr <= w)
			lo = mid;
		else
			hi = mid;
	}
	if (blks[lo].addr <= w && (w < blks[lo].end || w == blks[lo].addr))
		return (long)lo;
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

// What glibc's __libc_freeres would release (a dead thread's cached
// descriptor and what it points to) counts as reachable, as under
// valgrind, which runs __libc_freeres before its scan.
static inline void reach_any(uintptr_t w) {
	long i = find(w);
	if (i < 0)
		return;
	if (state[i] == UNREACHED)
		work[nwork++] = (uint32_t)i;
	state[i] = REACHABLE;
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

// Segments are listed before the bookkeeping is frozen: dl_iterate_phdr
// takes the loader's lock, which a thread waiting on a frozen table may
// hold (dlopen allocates).
#define MAX_SEGS 4096
static uintptr_t seg_lo[MAX_SEGS], seg_hi[MAX_SEGS];
static int nsegs;

static int root_segments(struct dl_phdr_info *info, size_t size, void *data) {
	(void)size;
	(void)data;
	int tracer = is_tracer_object(info);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
			continue;
		uintptr_t s = info->dlpi_addr + ph->p_vaddr, e = s + ph->p_memsz;
		if (!tracer && nsegs < MAX_SEGS) {
			seg_lo[nsegs] = s;
			seg_hi[nsegs++] = e;
		}
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




static int thread_alive(pid_t tid) { return syscall(SYS_tgkill, leak_pid, tid, 0) == 0; }

// task_sp returns the stack pointer of a thread blocked in a system call
// (the seventh number of /proc/self/task/TID/syscall), or 0 when it runs.
// Only the live part of its stack is a root then, as valgrind scans it.
static uintptr_t task_sp(pid_t tid) {
	char path[64], buf[256];
	int n = 0;
	const char *pre = "/proc/self/task/";
	for (; pre[n]; n++)
		path[n] = pre[n];
	char digits[16];
	int d = 0;
	for (unsigned t = (unsigned)tid; t || !d; t /= 10)
		digits[d++] = (char)('0' + t % 10);
	while (d)
		path[n++] = digits[--d];
	const char *suf = "/syscall";
	for (int i = 0; suf[i]; i++)
		path[n++] = suf[i];
	path[n] = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t r = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (r <= 0)
		return 0;
	buf[r] = 0;
	char *p = buf;
	for (int field = 0; field < 7 && *p; field++) {
		while (*p && *p != ' ')
			p++;
		while (*p == ' ')
			p++;
	}
	if (p[0] != '0' || p[1] != 'x')
		return 0;
	uintptr_t sp = 0;
	for (p += 2; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++)
		sp = sp * 16 + (uintptr_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
	return sp;
}

// scan_stack scans a live thread's stack mapping [s, e): from its stack
// pointer (less the red zone) when the thread is blocked, whole otherwise.
static void scan_stack(pid_t tid, uintptr_t s, uintptr_t e) {
	uintptr_t sp = task_sp(tid);
	if (sp >= s + 128 && sp < e)
		s = sp - 128;
	scan_range(s, e, reach);
}

// Anonymous mappings with equal protections merge: one line of
// /proc/self/maps can hold a thread's stack, the tracer's memory and a
// program mapping side by side. So ranges are cut out of lines, not lines
// skipped: excluded are the tracer's memory, thread stacks (scanned
// below, by their own rules), the region lists, the program's mappings
// and large blocks (scanned as blocks when reached).
#define MAX_MAPS 8192
static struct mapping maps_read[MAX_MAPS];
static int nmaps_read;

struct cut {
	uintptr_t lo, hi;
};
#define MAX_CUTS 16384
static struct cut cuts[MAX_CUTS];
static int ncuts;

static void add_cut(uintptr_t lo, uintptr_t hi) {
	if (ncuts < MAX_CUTS && hi > lo)
		cuts[ncuts++] = (struct cut){lo, hi};
}

static void sort_cuts(void) {
	for (int i = 1; i < ncuts; i++) { // insertion sort: few, mostly sorted
		struct cut c = cuts[i];
		int j = i - 1;
		while (j >= 0 && cuts[j].lo > c.lo) {
			cuts[j + 1] = cuts[j];
			j--;
		}
		cuts[j + 1] = c;
	}
}

// scan_pieces scans [s, e) minus the cuts.
static void scan_pieces(uintptr_t s, uintptr_t e) {
	for (int i = 0; i < ncuts && s < e; i++) {
		if (cuts[i].hi <= s)
			continue;
		if (cuts[i].lo >= e)
			break;
		if (cuts[i].lo > s)
			scan_range(s, cuts[i].lo, reach);
		if (cuts[i].hi > s)
			s = cuts[i].hi;
	}
	if (s < e)
		scan_range(s, e, reach);
}

// mapped tells whether [s, e) lies in readable mappings.
static int mapped(uintptr_t s, uintptr_t e) {
	for (int i = 0; i < nmaps_read && s < e; i++) {
		struct mapping *m = &maps_read[i];
		if (m->r && m->start <= s && m->end > s)
			s = m->end;
	}
	return s >= e;
}

static void root_mappings(uintptr_t sp) {
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	static char buf[65536];
	size_t len = 0, pos = 0;
	nmaps_read = 0;
	while (nmaps_read < MAX_MAPS && next_mapping(fd, buf, sizeof buf, &len, &pos, &maps_read[nmaps_read]))
		nmaps_read++;
	close(fd);

	size_t ntr, nmp;
	const struct region *tr = tracer_maps_get(&ntr);
	const struct region *mp = live_maps(&nmp);
	ncuts = 0;
	for (size_t i = 0; i < ntr; i++)
		add_cut(tr[i].start, tr[i].end);
	for (size_t i = 0; i < nmp; i++)
		add_cut(mp[i].start, mp[i].end);
	for (int i = 0; i < nskip; i++)
		add_cut(skip_lo[i], skip_hi[i]);
	uintptr_t llo[2], lhi[2];
	live_lists_ranges(llo, lhi);
	for (int i = 0; i < 2; i++)
		add_cut(llo[i] & ~(uintptr_t)4095, (lhi[i] + 4095) & ~(uintptr_t)4095);
	for (int i = 0; i < nthreads_known; i++)
		add_cut(threads_known[i].lo & ~(uintptr_t)4095, threads_known[i].hi);
	for (size_t i = 0; i < nblk; i++) // malloc's own mappings of large blocks
		if (heapblk[i] && blks[i].end - blks[i].addr >= (64u << 10))
			add_cut((blks[i].addr - 16) & ~(uintptr_t)4095, (blks[i].end + 4095) & ~(uintptr_t)4095);
	uintptr_t exiting_lo = 0, exiting_hi = 0;
	if (sp) {
		for (int i = 0; i < nmaps_read; i++)
			if (sp >= maps_read[i].start && sp < maps_read[i].end)
				exiting_lo = maps_read[i].start, exiting_hi = maps_read[i].end;
		// The exiting thread's stack, from its stack pointer; a thread
		// the program created ends its stack at its recorded top.
		uintptr_t top = exiting_hi;
		for (int i = 0; i < nthreads_known; i++)
			if (sp >= threads_known[i].lo && sp < threads_known[i].hi)
				top = threads_known[i].hi;
		scan_range(sp, top, reach);
		add_cut(exiting_lo, top);
	}
	sort_cuts();

	// Threads the program created: live ones from their stack pointer,
	// exited ones (their stacks cached by glibc) by their descriptor only.
	for (int i = 0; i < nthreads_known; i++) {
		struct thread_rec *t = &threads_known[i];
		if (sp >= t->lo && sp < t->hi)
			continue;
		if (!mapped(t->lo, t->hi))
			continue;
		if (thread_alive(t->tid))
			scan_stack(t->tid, t->lo, t->hi);
		else if (t->tp >= t->lo && t->tp < t->hi)
			scan_range(t->tp, t->hi, reach_any);
	}

	for (int i = 0; i < nmaps_read; i++) {
		struct mapping *m = &maps_read[i];
		if (!m->r || !m->w || m->shared)
			continue;
		if (m->named && m->name[0] != '[') // a file: object segments were scanned from their headers
			continue;
		if (m->named && strncmp(m->name, "[stack]", 7) == 0) {
			if (!(sp >= m->start && sp < m->end))
				scan_stack(leak_pid, m->start, m->end); // the main thread, while another exits
			continue;
		}
		if (m->named && strncmp(m->name, "[anon", 5) != 0)
			continue; // [heap], [vvar], [vdso]: the heap is scanned block by block
		if ((m->start & ((64u << 20) - 1)) == 0)
			continue; // a malloc arena: free chunks point everywhere
		scan_pieces(m->start, m->end);
	}
}

// ---- the scan -------------------------------------------------------------------

HIDDEN int scan_content_bytes;
HIDDEN uintptr_t exit_scan_sp;
HIDDEN uintptr_t main_return_sp;

// The verdicts are encoded while the table is frozen (block contents are
// read then) into a buffer of our own, and copied into the trace after
// thawing: taking the trace's lock while frozen could deadlock with the
// writer, which maps memory while holding it.
static uint8_t *vbuf;
static size_t vlen, vcap;

static void vput(const void *p, size_t n) {
	if (vlen + n > vcap) {
		size_t cap = vcap ? vcap * 2 : (1u << 20);
		while (cap < vlen + n)
			cap *= 2;
		uint8_t *nb = live_map(cap);
		if (!nb)
			return;
		if (vbuf) {
			memcpy(nb, vbuf, vlen);
			live_unmap(vbuf, vcap);
		}
		vbuf = nb;
		vcap = cap;
	}
	memcpy(vbuf + vlen, p, n);
	vlen += n;
}

static void vvarint(uint64_t v) {
	uint8_t tmp[10];
	int n = 0;
	while (v >= 0x80) {
		tmp[n++] = (uint8_t)v | 0x80;
		v >>= 7;
	}
	tmp[n++] = (uint8_t)v;
	vput(tmp, (size_t)n);
}

static void encode_verdicts(uint64_t t0) {
	size_t nv = 0;
	for (size_t i = 0; i < nblk; i++)
		nv += state[i] != REACHABLE;
	vlen = 0;
	uint8_t tag = REC_SCAN;
	vput(&tag, 1);
	vvarint(t0);
	vvarint(nblk);
	vvarint((uint64_t)scan_content_bytes);
	vvarint(nv);
	uintptr_t prev = 0;
	for (size_t i = 0; i < nblk; i++) {
		if (state[i] == REACHABLE)
			continue;
		int64_t d = (int64_t)(blks[i].addr - prev);
		prev = blks[i].addr;
		vvarint(((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
		uint8_t k = state[i] == DEFINITE ? 1 : state[i] == INDIRECT ? 2 : 3;
		vput(&k, 1);
		if (k == 1)
			vvarint(indirect[i]);
		if (scan_content_bytes > 0) {
			size_t n = blks[i].end - blks[i].addr;
			if (n > (size_t)scan_content_bytes)
				n = (size_t)scan_content_bytes;
			if (!scannable[i])
				n = 0;
			vvarint(n);
			vput((const void *)blks[i].addr, n);
		}
	}
}

HIDDEN int scan_run(void) {
	if (!live_enabled)
		return 0;
	// Registers that hold pointers are spilled into this frame, which the
	// stack scan covers.
	__builtin_unwind_init();
	volatile uintptr_t here = 0;
	// A scan on the writer's thread (on request) has no exiting thread:
	// every program thread is scanned as a live one.
	uintptr_t sp = t_tracer ? 0 : exit_scan_sp ? exit_scan_sp : (uintptr_t)&here;
	if (sp && main_return_sp > sp && syscall(SYS_gettid) == leak_pid)
		sp = main_return_sp; // main returned: nothing below its caller is live
	uint64_t t0 = now_units();

	nskip = 0;
	nsegs = 0;
	dl_iterate_phdr(root_segments, NULL);

	size_t nheap = live_freeze();
	size_t nmaps;
	const struct region *maps = live_maps(&nmaps);
	size_t cap = nheap + nmaps + 1;
	struct blk *tmp = live_map(cap * sizeof *tmp);
	blks = live_map(cap * sizeof *blks);
	state = live_map(cap);
	scannable = live_map(cap);
	heapblk = live_map(cap);
	indirect = live_map(cap * sizeof *indirect);
	work = live_map(cap * sizeof *work);
	if (!tmp || !blks || !state || !scannable || !heapblk || !indirect || !work) {
		live_thaw();
		proc_note("not enough memory for the reachability scan of %zu blocks", nheap);
		return 0; // (a few arrays may stay mapped: the process is ending)
	}
	// The table's entries (address, size) become blocks (address, end) in
	// place: one array less to fault in for a heap of millions of blocks.
	_Static_assert(sizeof(struct lt_ent) == sizeof(struct blk), "entry and block differ in size");
	size_t k = live_collect((struct lt_ent *)blks, nheap);
	for (size_t i = 0; i < k; i++)
		blks[i].end += blks[i].addr;
	nblk = k;
	for (size_t i = 0; i < nmaps; i++)
		blks[nblk++] = (struct blk){maps[i].start, maps[i].end};
	radix_sort(blks, tmp, nblk);
	for (size_t i = 0; i < nblk; i++) {
		scannable[i] = 1;
		heapblk[i] = 1;
		for (size_t j = 0; j < nmaps; j++) {
			if (maps[j].start == blks[i].addr) {
				// Read-only or shared mappings hold no pointers of ours
				// worth the cost of reading them.
				scannable[i] = (maps[j].prot & PROT_READ) && (maps[j].prot & PROT_WRITE) &&
					       !(maps[j].flags & MAP_SHARED);
				heapblk[i] = 0;
				break;
			}
		}
	}
	lo_all = nblk ? blks[0].addr : 0;
	hi_all = nblk ? blks[nblk - 1].end + 1 : 0;
	nwindows = 0;
	index_blocks();

	nwork = 0;
	for (int i = 0; i < nsegs; i++)
		scan_range(seg_lo[i], seg_hi[i], reach);
	root_mappings(sp);
	flood_roots();
	cliques();
	encode_verdicts(t0);
	live_thaw();

	proc_lock();
	proc_put(vbuf, vlen);
	proc_unlock();
	if (cfg.verbose) {
		uint64_t bytes = 0;
		for (size_t i = 0; i < nblk; i++)
			bytes += blks[i].end - blks[i].addr;
		logmsg("scanned %zu blocks (%llu MiB) in %llu ms", nblk, (unsigned long long)(bytes >> 20),
		       (unsigned long long)(((now_units() - t0) << TIME_SHIFT) / 1000000));
	}
	if (vbuf)
		live_unmap(vbuf, vcap);
	vbuf = NULL;
	vcap = vlen = 0;

	for (int i = 0; i < nwindows; i++)
		live_unmap(windows[i].first, (1u << 18) * sizeof(uint32_t));
	live_unmap(tmp, cap * sizeof *tmp);
	live_unmap(blks, cap * sizeof *blks);
	live_unmap(state, cap);
	live_unmap(scannable, cap);
	live_unmap(heapblk, cap);
	live_unmap(indirect, cap * sizeof *indirect);
	live_unmap(work, cap * sizeof *work);
	return 1;
}
