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
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "live.h"

enum { UNREACHED, POSSIBLE, REACHABLE, INDIRECT, DEFINITE };
#define KIND 7       // the verdict bits of a block's state byte
#define MAPPING 0x40 // a mapping, not a malloc block
#define NOSCAN 0x80  // do not read its content (read-only or shared mapping)

// A block is one word, packed as in the live table (live.h): half the 16
// bytes an address and an end would take. For a heap of 16 M small blocks
// that is 128 MiB less memory to fault in at exit, which is most of what
// building the array costs. Sizes too large for the word are kept whole
// with the large blocks.
static uint64_t *blks; // in address order
static uint8_t *state;   // per block: kind | MAPPING | NOSCAN
static uint64_t *indirect;
static uint32_t *work;
static size_t nblk, nwork;
static uintptr_t lo_all, hi_all;

// Block index: a bit per 8 bytes of address space where a block starts,
// kept for each 256 KiB chunk that holds a start, with the number of
// blocks starting below each 512 bytes (the rank). A start's rank is its
// block's position in address order, and the block holding a word is
// found with one popcount instead of a search.
//
// Sorting works with the cache: a first pass over the table counts the
// blocks of each chunk, a second copies each entry to the part of blks
// its group of consecutive chunks (~64 K blocks) will occupy (a few
// hundred write streams), and each group is then put in order by rank
// from a small scratch copy. Random accesses across hundreds of MiB, as
// a radix pass over 16 bits or a placement by rank makes, miss the
// cache and the TLB on every block: seconds for 16 M blocks.
#define CHUNK_SHIFT 18
#define DENT_SHIFT 9
#define NDENT (1u << (CHUNK_SHIFT - DENT_SHIFT))
struct dent {
	uint64_t bits;
	uint32_t rank, pad;
};
struct chunk {
	uintptr_t key; // chunk number + 1; 0: an empty slot
	struct dent *d;
	uint32_t count, group;
};
static struct chunk *ctab; // open addressing, at most half full
static size_t ccap, nchunks;
static int cbits;
static uintptr_t last_cn = UINTPTR_MAX; // find's last chunk
static const struct dent *last_d;

// Directories come from arenas mapped as they fill. The first is small,
// in small pages: most heaps span a few chunks, and a huge page is 2 MiB
// to clear for them (live.c).
#define ARENA_BYTES (32u << 20)
#define FIRST_ARENA_BYTES (1u << 20)
static inline size_t arena_bytes(int i) { return i ? ARENA_BYTES : FIRST_ARENA_BYTES; }
#define MAX_ARENAS 4096
static void *arenas[MAX_ARENAS];
static int narenas;
static size_t arena_used;

// Chunk numbers in address order, and per group its end in blks and its
// first chunk in that order.
static uint64_t *corder;
static size_t *gend, *gchunk, *gnext;
static size_t ngroups, gmem_len;
static uint64_t *scratch;
static struct dent **sdent; // each scratch block's directory entry
static size_t scratch_len;

// Blocks that cross a chunk boundary, by rank in address order: a word
// in a chunk where no block starts can only be inside one of them.
static uint64_t *span;
static size_t nspan, span_cap;
// Blocks of 64 KiB or more, in address order: malloc maps the large
// ones itself, and the sizes that do not fit a block's word are here.
struct range {
	uintptr_t addr, end;
};
static struct range *large;
static size_t nlarge, large_cap;

static int too_high; // a mapping above LT_ADDR_LIMIT: no word holds its address

static inline uintptr_t blk_addr(size_t i) { return lt_addr(blks[i]); }

static uintptr_t large_end(uintptr_t a) {
	size_t lo = 0, hi = nlarge;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (large[mid].addr < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nlarge && large[lo].addr == a ? large[lo].end : a + LT_ESC;
}

static inline uintptr_t blk_end(size_t i) {
	uint64_t v = blks[i];
	uintptr_t a = lt_addr(v), n = v & LT_ESC;
	return n != LT_ESC ? a + n : large_end(a);
}

static inline unsigned pop64(uint64_t x) {
	x -= (x >> 1) & 0x5555555555555555u;
	x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fu;
	return (unsigned)((x * 0x0101010101010101u) >> 56);
}

static inline size_t chash(uintptr_t c) { return (size_t)((c * 0x9e3779b97f4a7c15u) >> (64 - cbits)); }

static inline struct chunk *chunk_find(uintptr_t c) {
	for (size_t m = ccap - 1, j = chash(c);; j = (j + 1) & m) {
		if (ctab[j].key == c + 1)
			return &ctab[j];
		if (!ctab[j].key)
			return NULL;
	}
}

static int ctab_resize(int bits) {
	struct chunk *old = ctab;
	size_t oldcap = ccap;
	struct chunk *t = live_map(((size_t)1 << bits) * sizeof *t);
	if (!t)
		return 0;
	ctab = t;
	ccap = (size_t)1 << bits;
	cbits = bits;
	for (size_t i = 0; i < oldcap; i++) {
		if (!old[i].key)
			continue;
		size_t j = chash(old[i].key - 1);
		while (ctab[j].key)
			j = (j + 1) & (ccap - 1);
		ctab[j] = old[i];
	}
	if (old)
		live_unmap(old, oldcap * sizeof *old);
	return 1;
}

static struct chunk *chunk_get(uintptr_t c) {
	size_t j = chash(c);
	while (ctab[j].key) {
		if (ctab[j].key == c + 1)
			return &ctab[j];
		j = (j + 1) & (ccap - 1);
	}
	if ((nchunks + 1) * 2 > ccap) {
		if (!ctab_resize(cbits + 1))
			return NULL;
		j = chash(c);
		while (ctab[j].key)
			j = (j + 1) & (ccap - 1);
	}
	ctab[j].key = c + 1;
	nchunks++;
	return &ctab[j];
}

static struct dent *dir_alloc(void) {
	size_t need = NDENT * sizeof(struct dent);
	if (!narenas || arena_used + need > arena_bytes(narenas - 1)) {
		void *a = narenas < MAX_ARENAS ? live_map(arena_bytes(narenas)) : NULL;
		if (!a)
			return NULL;
		arenas[narenas++] = a;
		arena_used = 0;
	}
	struct dent *d = (struct dent *)((char *)arenas[narenas - 1] + arena_used);
	arena_used += need;
	return d;
}

static inline int spans(uintptr_t a, uintptr_t e) { return e > a && ((e - 1) >> CHUNK_SHIFT) != (a >> CHUNK_SHIFT); }

// index_note counts a block in its chunk, as it is copied from the table.
static inline int index_note(uintptr_t a, uintptr_t e) {
	if (e > LT_ADDR_LIMIT) {
		too_high = 1;
		return 0;
	}
	struct chunk *c = chunk_get(a >> CHUNK_SHIFT);
	if (!c)
		return 0;
	c->count++;
	if (a < lo_all)
		lo_all = a;
	if (e >= hi_all)
		hi_all = e + 1;
	span_cap += spans(a, e);
	large_cap += e - a >= (64u << 10);
	return 1;
}

static inline size_t rank_of(uintptr_t a) {
	const struct dent *x = &chunk_find(a >> CHUNK_SHIFT)->d[(a >> DENT_SHIFT) & (NDENT - 1)];
	return x->rank + pop64(x->bits & ((1ull << ((a >> 3) & 63)) - 1));
}

// sort_words is a heapsort of n elements of w words each, by their first
// word: it needs no memory, and nothing here may call malloc.
static void sift_words(uint64_t *a, size_t w, size_t k, size_t n) {
	uint64_t v[2];
	memcpy(v, a + k * w, w * 8);
	for (;;) {
		size_t c = 2 * k + 1;
		if (c >= n)
			break;
		if (c + 1 < n && a[(c + 1) * w] > a[c * w])
			c++;
		if (a[c * w] <= v[0])
			break;
		memcpy(a + k * w, a + c * w, w * 8);
		k = c;
	}
	memcpy(a + k * w, v, w * 8);
}

static void sort_words(uint64_t *a, size_t w, size_t n) {
	for (size_t k = n / 2; k-- > 0;)
		sift_words(a, w, k, n);
	for (size_t m = n; m-- > 1;) {
		uint64_t t[2];
		memcpy(t, a, w * 8);
		memcpy(a, a + m * w, w * 8);
		memcpy(a + m * w, t, w * 8);
		sift_words(a, w, 0, m);
	}
}

// index_groups forms groups of the n blocks counted and maps the
// directories; returns -1 when out of memory.
static int index_groups(size_t n) {
	gmem_len = (nchunks + 1) * (sizeof *corder + 3 * sizeof(size_t));
	corder = live_map(gmem_len);
	if (!corder)
		return -1;
	gend = (size_t *)(corder + nchunks + 1);
	gchunk = gend + nchunks + 1;
	gnext = gchunk + nchunks + 1;
	size_t nc = 0;
	for (size_t i = 0; i < ccap; i++)
		if (ctab[i].key)
			corder[nc++] = ctab[i].key - 1;
	sort_words(corder, 1, nc);

	// Groups of consecutive chunks; directories in address order.
	size_t target = n / 512 > 65536 ? n / 512 : 65536;
	size_t pos = 0, gsize = 0, maxg = 0;
	ngroups = 0;
	for (size_t i = 0; i < nc; i++) {
		struct chunk *c = chunk_find(corder[i]);
		if (!(c->d = dir_alloc()))
			return -1;
		if (!ngroups || (gsize && gsize + c->count > target)) {
			gnext[ngroups] = pos;
			gchunk[ngroups] = i;
			ngroups++;
			gsize = 0;
		}
		c->group = (uint32_t)(ngroups - 1);
		gsize += c->count;
		pos += c->count;
		gend[ngroups - 1] = pos;
		if (gsize > maxg)
			maxg = gsize;
	}
	gchunk[ngroups] = nc;
	scratch_len = (maxg + 1) * (sizeof *scratch + sizeof *sdent);
	if (!(scratch = live_map(scratch_len)))
		return -1;
	sdent = (struct dent **)(scratch + maxg + 1);

	return 0;
}

static inline void index_scatter(uintptr_t a, uintptr_t e) {
	size_t g = chunk_find(a >> CHUNK_SHIFT)->group;
	blks[gnext[g]++] = lt_pack(a, e - a);
	if (e - a >= (64u << 10) && nlarge < large_cap)
		large[nlarge++] = (struct range){a, e};
}

// index_place puts each group in address order, by rank; returns how
// many blocks there are (blocks starting in the same 8 bytes count once).
static size_t index_place(void) {
	// Blocks starting in the same 8 bytes (none, with malloc) share a
	// rank: a group's blocks land at or below where its copies were,
	// never on a later group's.
	size_t rank = 0;
	for (size_t g = 0; g < ngroups; g++) {
		size_t s = g ? gend[g - 1] : 0, m = gend[g] - s;
		memcpy(scratch, blks + s, m * sizeof *scratch);
		for (size_t k = 0; k < m; k++) {
			uintptr_t a = lt_addr(scratch[k]);
			struct dent *x = &chunk_find(a >> CHUNK_SHIFT)->d[(a >> DENT_SHIFT) & (NDENT - 1)];
			x->bits |= 1ull << ((a >> 3) & 63);
			sdent[k] = x;
		}
		for (size_t i = gchunk[g]; i < gchunk[g + 1]; i++) {
			struct dent *d = chunk_find(corder[i])->d;
			for (unsigned j = 0; j < NDENT; j++) {
				d[j].rank = (uint32_t)rank;
				rank += pop64(d[j].bits);
			}
		}
		for (size_t k = 0; k < m; k++) {
			uint64_t b = scratch[k];
			uintptr_t a = lt_addr(b), n = b & LT_ESC;
			const struct dent *x = sdent[k];
			size_t r = x->rank + pop64(x->bits & ((1ull << ((a >> 3) & 63)) - 1));
			blks[r] = b;
			if ((n == LT_ESC || spans(a, a + n)) && nspan < span_cap)
				span[nspan++] = r;
		}
	}
	return rank;
}

static void index_free(void) {
	for (int i = 0; i < narenas; i++)
		live_unmap(arenas[i], arena_bytes(i));
	narenas = 0;
	if (ctab)
		live_unmap(ctab, ccap * sizeof *ctab);
	ctab = NULL;
	ccap = nchunks = 0;
	last_cn = UINTPTR_MAX;
	cbits = 0;
	if (corder)
		live_unmap(corder, gmem_len);
	corder = NULL;
	if (scratch)
		live_unmap(scratch, scratch_len);
	scratch = NULL;
}

static long find_raw(uintptr_t w);

// find returns the block holding address w, or -1. glibc's malloc keeps
// pointers to chunk headers (its bins, the top chunk); the header of the
// chunk after a block lies in the block's last 8 bytes, and such a
// pointer is malloc's, not the program's.
static long find_in(uintptr_t w) {
	long i = find_raw(w);
	if (i >= 0 && !(state[i] & MAPPING)) {
		uintptr_t a = blk_addr((size_t)i), size = blk_end((size_t)i) - a;
		uintptr_t chunk = (size + 8 + 15) & ~(uintptr_t)15;
		if (chunk < 32)
			chunk = 32;
		if (w == a - 16 + chunk)
			return -1;
	}
	return i;
}

// Most words a scan reads are not addresses of blocks at all: they are
// turned away here, without a call.
static inline __attribute__((always_inline)) long find(uintptr_t w) {
	if (w - lo_all >= hi_all - lo_all)
		return -1;
	return find_in(w);
}

// span_find returns the last block crossing a chunk boundary that starts
// at or below w, or -1.
static long span_find(uintptr_t w) {
	size_t lo = 0, hi = nspan;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (blk_addr(span[mid]) <= w)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? (long)span[lo - 1] : -1;
}

static inline long find_raw(uintptr_t w) {
	if (w < lo_all || w >= hi_all)
		return -1;
	// Consecutive words mostly point into the same chunk.
	uintptr_t cn = w >> CHUNK_SHIFT;
	if (cn != last_cn) {
		const struct chunk *c = chunk_find(cn);
		last_cn = cn;
		last_d = c ? c->d : NULL;
	}
	const struct dent *d = last_d;
	long i;
	if (d) {
		// The last block starting at or below w, wherever it starts.
		const struct dent *x = &d[(w >> DENT_SHIFT) & (NDENT - 1)];
		i = (long)x->rank + (long)pop64(x->bits & ((2ull << ((w >> 3) & 63)) - 1)) - 1;
		if (i >= 0 && blk_addr((size_t)i) > w)
			i--; // it starts in w's 8 bytes, above w
	} else {
		i = span_find(w);
	}
	if (i >= 0 && (w < blk_end((size_t)i) || w == blk_addr((size_t)i)))
		return i;
	return -1;
}

// ---- marking ------------------------------------------------------------------

static inline void set_kind(size_t i, uint8_t k) { state[i] = (uint8_t)((state[i] & ~KIND) | k); }

static inline void reach(uintptr_t w) {
	long i = find(w);
	if (i < 0)
		return;
	uint8_t want = w == blk_addr((size_t)i) ? REACHABLE : POSSIBLE;
	uint8_t k = state[i] & KIND;
	if (k == UNREACHED) {
		set_kind((size_t)i, want);
		work[nwork++] = (uint32_t)i;
	} else if (k == POSSIBLE && want == REACHABLE) {
		set_kind((size_t)i, REACHABLE);
	}
}

// What glibc's __libc_freeres would release (a dead thread's cached
// descriptor and what it points to) counts as reachable, as under
// valgrind, which runs __libc_freeres before its scan.
static inline void reach_any(uintptr_t w) {
	long i = find(w);
	if (i < 0)
		return;
	if ((state[i] & KIND) == UNREACHED)
		work[nwork++] = (uint32_t)i;
	set_kind((size_t)i, REACHABLE);
}

static void scan_range(uintptr_t from, uintptr_t to, void (*fn)(uintptr_t)) {
	from = (from + 7) & ~(uintptr_t)7;
	for (const uintptr_t *p = (const uintptr_t *)from; (uintptr_t)(p + 1) <= to; p++)
		fn(*p);
}

// Pages of a private mapping that were never written hold zeros, or
// their file's contents as linked: neither can hold a heap address. A
// root range's pages that are neither present nor swapped out are not
// read, so a large .bss or anonymous mapping the program never used is
// not faulted in (/proc/self/pagemap gives both bits without privileges;
// without it, every page is read).
#define PM_CHUNK 512 // pages per read of the page map
static int pagemap_fd = -1;

static void scan_root(uintptr_t from, uintptr_t to) {
	if (pagemap_fd < 0 || to - from < 16 * 4096) {
		scan_range(from, to, reach);
		return;
	}
	uint64_t ent[PM_CHUNK];
	uintptr_t run = 0; // start of the pages to read, or 0 in a gap
	for (uintptr_t page = from & ~(uintptr_t)4095; page < to; page += PM_CHUNK * (uintptr_t)4096) {
		size_t n = PM_CHUNK;
		if ((to - page + 4095) / 4096 < n)
			n = (to - page + 4095) / 4096;
		ssize_t got = pread(pagemap_fd, ent, n * sizeof *ent, (off_t)(page / 4096 * sizeof *ent));
		for (size_t k = 0; k < n; k++) {
			uintptr_t pg = page + k * 4096;
			int used = got < (ssize_t)((k + 1) * sizeof *ent) || (ent[k] >> 62) != 0;
			if (used && !run)
				run = pg > from ? pg : from;
			else if (!used && run) {
				scan_range(run, pg, reach);
				run = 0;
			}
		}
	}
	if (run)
		scan_range(run, to, reach);
}

static void flood_roots(void) {
	while (nwork) {
		uint32_t i = work[--nwork];
		if (!(state[i] & NOSCAN))
			scan_range(blk_addr(i), blk_end(i), reach);
	}
}

static uint32_t leader;

static inline void reach_clique(uintptr_t w) {
	long i = find(w);
	if (i < 0 || (uint32_t)i == leader)
		return;
	uint8_t k = state[i] & KIND;
	if (k == UNREACHED) {
		set_kind((size_t)i, INDIRECT);
		indirect[leader] += blk_end((size_t)i) - blk_addr((size_t)i);
		work[nwork++] = (uint32_t)i;
	} else if (k == DEFINITE) {
		// An earlier leader is pointed to by this one: it joins the clique.
		set_kind((size_t)i, INDIRECT);
		indirect[leader] += blk_end((size_t)i) - blk_addr((size_t)i) + indirect[i];
		indirect[i] = 0;
	}
}

static void cliques(void) {
	for (size_t k = 0; k < nblk; k++) {
		if ((state[k] & KIND) != UNREACHED)
			continue;
		leader = (uint32_t)k;
		set_kind(k, DEFINITE);
		if (!(state[k] & NOSCAN))
			scan_range(blk_addr(k), blk_end(k), reach_clique);
		while (nwork) {
			uint32_t i = work[--nwork];
			if (!(state[i] & NOSCAN))
				scan_range(blk_addr(i), blk_end(i), reach_clique);
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

// read_task_file reads /proc/self/task/TID/NAME into buf (cap bytes, NUL
// terminated) and returns its length, or 0. Only async-signal-safe calls:
// signal handlers use it too.
HIDDEN size_t read_task_file(pid_t tid, const char *name, char *buf, size_t cap) {
	char path[96];
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
	path[n++] = '/';
	for (int i = 0; name[i] && n < (int)sizeof path - 1; i++)
		path[n++] = name[i];
	path[n] = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t r = read(fd, buf, cap - 1);
	close(fd);
	if (r <= 0)
		return 0;
	buf[r] = 0;
	return (size_t)r;
}

// thread_runs tells whether thread tid of this process is alive and not
// a zombie (its state in /proc).
HIDDEN int thread_runs(pid_t tid) {
	char buf[256];
	if (!read_task_file(tid, "stat", buf, sizeof buf))
		return 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

// task_sp returns the stack pointer of a thread blocked in a system call
// (the seventh number of /proc/self/task/TID/syscall), or 0 when it runs.
// Only the live part of its stack is a root then, as valgrind scans it.
static uintptr_t task_sp(pid_t tid) {
	char buf[256];
	if (!read_task_file(tid, "syscall", buf, sizeof buf))
		return 0;
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
			scan_root(s, cuts[i].lo);
		if (cuts[i].hi > s)
			s = cuts[i].hi;
	}
	if (s < e)
		scan_root(s, e);
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
	// Objects' writable segments were scanned from their headers; the
	// part of a .bss past its file's last page shows here as an anonymous
	// mapping of its own, and would be read twice.
	for (int i = 0; i < nsegs; i++)
		add_cut(seg_lo[i] & ~(uintptr_t)4095, (seg_hi[i] + 4095) & ~(uintptr_t)4095);
	uintptr_t llo[2], lhi[2];
	live_lists_ranges(llo, lhi);
	for (int i = 0; i < 2; i++)
		add_cut(llo[i] & ~(uintptr_t)4095, (lhi[i] + 4095) & ~(uintptr_t)4095);
	for (int i = 0; i < nthreads_known; i++)
		add_cut(threads_known[i].lo & ~(uintptr_t)4095, threads_known[i].hi);
	for (size_t k = 0; k < nlarge; k++) { // malloc's own mappings of large blocks
		const struct range *b = &large[k];
		if (state[rank_of(b->addr)] & MAPPING)
			continue;
		add_cut((b->addr - 16) & ~(uintptr_t)4095, (b->end + 4095) & ~(uintptr_t)4095);
	}
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

// ---- faulting the arrays in ahead ------------------------------------------------

// The block array of a big heap is hundreds of MiB of fresh memory, and
// faulting it in costs as much as filling it. A thread of our own does
// that on the other core while this one counts and copies the blocks. It
// is a bare clone: it shares the exiting thread's TLS and calls nothing,
// it only touches memory, with all signals blocked, so the program never
// sees it; the kernel clears toucher_tid when it is gone.
#define TOUCH_MIN (16u << 20)
#define TOUCH_STACK (64u << 10)
static char *touch_p;
static size_t touch_n;
static volatile int touch_stop;
static volatile pid_t toucher_tid;
static void *touch_stack;

static int toucher(void *arg) {
	(void)arg;
	// An atomic add of nothing faults a page in for writing without
	// changing a word the copying thread may have written already.
	for (size_t o = 0; o < touch_n && !touch_stop; o += 4096)
		__atomic_fetch_add((uint64_t *)(touch_p + o), 0, __ATOMIC_RELAXED);
	return 0;
}

static void touch_start(void *p, size_t n) {
	if (n < TOUCH_MIN || !(touch_stack = live_map(TOUCH_STACK)))
		return;
	touch_p = p;
	touch_n = n;
	touch_stop = 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
		    CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	if (clone(toucher, (char *)touch_stack + TOUCH_STACK, flags, NULL, &toucher_tid, NULL, &toucher_tid) < 0)
		toucher_tid = 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!toucher_tid) {
		live_unmap(touch_stack, TOUCH_STACK);
		touch_stack = NULL;
	}
}

static void touch_end(void) {
	if (!touch_stack)
		return;
	touch_stop = 1;
	for (pid_t t; (t = toucher_tid) != 0;)
		syscall(SYS_futex, &toucher_tid, FUTEX_WAIT, t, NULL, NULL, 0);
	live_unmap(touch_stack, TOUCH_STACK);
	touch_stack = NULL;
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
		nv += (state[i] & KIND) != REACHABLE;
	vlen = 0;
	uint8_t tag = REC_SCAN;
	vput(&tag, 1);
	vvarint(t0);
	vvarint(nblk);
	vvarint((uint64_t)scan_content_bytes);
	vvarint(nv);
	uintptr_t prev = 0;
	for (size_t i = 0; i < nblk; i++) {
		uint8_t kind = state[i] & KIND;
		if (kind == REACHABLE)
			continue;
		uintptr_t a = blk_addr(i);
		int64_t d = (int64_t)(a - prev);
		prev = a;
		vvarint(((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
		uint8_t k = kind == DEFINITE ? 1 : kind == INDIRECT ? 2 : 3;
		vput(&k, 1);
		if (k == 1)
			vvarint(indirect[i]);
		if (scan_content_bytes > 0) {
			size_t n = blk_end(i) - a;
			if (n > (size_t)scan_content_bytes)
				n = (size_t)scan_content_bytes;
			if (state[i] & NOSCAN)
				n = 0;
			vvarint(n);
			vput((const void *)a, n);
		}
	}
}

static void *unmap_if(void *p, size_t n) {
	if (p)
		live_unmap(p, n);
	return NULL;
}

static void scan_free(size_t cap) {
	index_free();
	blks = unmap_if(blks, cap * sizeof *blks);
	state = unmap_if(state, cap);
	indirect = unmap_if(indirect, cap * sizeof *indirect);
	work = unmap_if(work, cap * sizeof *work);
	span = unmap_if(span, (span_cap + 1) * sizeof *span);
	large = unmap_if(large, (large_cap + 1) * sizeof *large);
}

HIDDEN int scan_run(int last) {
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
	uint64_t t0 = barrier_time();
	uint64_t began = mono_ms();

	nskip = 0;
	nsegs = 0;
	dl_iterate_phdr(root_segments, NULL);

	size_t nheap = live_freeze();
	size_t nmaps;
	const struct region *maps = live_maps(&nmaps);
	size_t cap = nheap + nmaps + 1;

	blks = live_map(cap * sizeof *blks);
	state = live_map(cap);
	indirect = live_map(cap * sizeof *indirect);
	work = live_map(cap * sizeof *work);
	int ok = blks && state && indirect && work && ctab_resize(10);
	if (ok)
		touch_start(blks, cap * sizeof *blks);
	lo_all = UINTPTR_MAX;
	hi_all = 0;
	too_high = 0;
	span_cap = large_cap = nspan = nlarge = 0;
	uint64_t bytes = 0;
	// The table is read where it lies, twice: once to count each chunk's
	// blocks, once to copy them to their groups.
	size_t n = 0;
	const uint64_t *tab;
	size_t tcap;
	for (unsigned s = 0; ok && live_shard(s, &tab, &tcap); s++)
		for (size_t j = 0; j < tcap && ok; j++)
			if (tab[j] && n < cap) {
				uintptr_t a = lt_addr(tab[j]);
				size_t size = lt_size(s, tab[j]);
				ok = index_note(a, a + size);
				bytes += size;
				n++;
			}
	for (size_t i = 0; i < nmaps && ok && n < cap; i++) {
		ok = index_note(maps[i].start, maps[i].end);
		bytes += maps[i].end - maps[i].start;
		n++;
	}
	if (ok) {
		span = live_map((span_cap + 1) * sizeof *span);
		large = live_map((large_cap + 1) * sizeof *large);
		ok = span && large && index_groups(n) == 0;
	}
	if (!ok) {
		touch_end();
		live_thaw();
		if (too_high)
			proc_note("no reachability scan: memory mapped above the 48-bit address space");
		else
			proc_note("not enough memory for the reachability scan of %zu blocks", nheap);
		scan_free(cap);
		return 0;
	}
	size_t k = 0;
	for (unsigned s = 0; live_shard(s, &tab, &tcap); s++)
		for (size_t j = 0; j < tcap; j++)
			if (tab[j] && k < n) {
				uintptr_t a = lt_addr(tab[j]);
				index_scatter(a, a + lt_size(s, tab[j]));
				k++;
			}
	for (size_t i = 0; i < nmaps && k < n; i++, k++)
		index_scatter(maps[i].start, maps[i].end);
	touch_end();
	nblk = index_place();
	for (size_t i = 0; i < nmaps; i++) {
		// Read-only or shared mappings hold no pointers of ours worth
		// the cost of reading them.
		int scannable = (maps[i].prot & PROT_READ) && (maps[i].prot & PROT_WRITE) && !(maps[i].flags & MAP_SHARED);
		state[rank_of(maps[i].start)] = MAPPING | (scannable ? 0 : NOSCAN);
	}
	sort_words(span, 1, nspan);
	sort_words((uint64_t *)large, 2, nlarge);

	nwork = 0;
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	for (int i = 0; i < nsegs; i++)
		scan_root(seg_lo[i], seg_hi[i]);
	root_mappings(sp);
	if (pagemap_fd >= 0)
		close(pagemap_fd);
	pagemap_fd = -1;
	flood_roots();
	cliques();
	encode_verdicts(t0);
	live_thaw();

	proc_lock();
	proc_put(vbuf, vlen);
	proc_unlock();
	if (cfg.verbose)
		logmsg("scanned %zu blocks (%llu MiB) in %llu ms", nblk, (unsigned long long)(bytes >> 20),
		       (unsigned long long)(mono_ms() - began));
	// After the last scan the process ends: unmapping its arrays would
	// only cost page-table work and, with the writer's threads alive, a
	// TLB shootdown each (~0.5 ms of a small process's exit here).
	if (last)
		return 1;
	if (vbuf)
		live_unmap(vbuf, vcap);
	vbuf = NULL;
	vcap = vlen = 0;
	scan_free(cap);
	return 1;
}
