// What is live right now, for the exit-time reachability scan: heap
// blocks (a sharded open-addressing table: address -> size), the program's
// mappings, the tracer's own mappings (never scanned: they hold every
// address) and the stacks of the threads the program created.
//
// Shards keep threads from contending; a shard's lock is held only for a
// probe, never while unwinding or writing the trace.
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "live.h"

#define SHARD_BITS 6
#define NSHARDS (1u << SHARD_BITS)

struct shard {
	int lock;
	uint32_t cap, live;
	struct lt_ent *tab;
} __attribute__((aligned(64)));

static struct shard shards[NSHARDS];
HIDDEN int live_enabled;

// Set on the thread that froze the bookkeeping: its own mappings (the
// scan's arrays, a growing trace buffer) go on the lists without taking
// the lock it already holds.
static TLS int t_frozen;

static void regions_lock(void) {
	if (!t_frozen)
		pthread_mutex_lock(&regions_mu);
}

static void regions_unlock(void) {
	if (!t_frozen)
		pthread_mutex_unlock(&regions_mu);
}

static inline void spin_lock(int *l) {
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(l, __ATOMIC_RELAXED))
			__builtin_ia32_pause();
}

static inline void spin_unlock(int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

static inline uint64_t mix(uintptr_t a) { return (uint64_t)(a >> 4) * 0x9e3779b97f4a7c15u; }

// A block's shard follows from the 64 MiB region it lies in, not from the
// block itself: glibc gives each thread an arena of its own (64 MiB
// aligned), so a thread's allocations and frees keep to its own shards,
// whose locks stay in its core's cache instead of moving between cores on
// every call. A free from another thread still finds the block.
static inline struct shard *shard_of(uintptr_t a) {
	return &shards[(uint64_t)(a >> 26) * 0x9e3779b97f4a7c15u >> (64 - SHARD_BITS)];
}

static void *raw_map(size_t n) {
	void *p = real.mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	// The scan's arrays for a big heap run to hundreds of MiB: huge pages
	// take a fault per 2 MiB instead of per 4 KiB.
	if (n >= (8u << 20))
		madvise(p, n, MADV_HUGEPAGE);
	tracer_region_add(p, n);
	return p;
}

static void raw_unmap(void *p, size_t n) {
	tracer_region_del(p, n);
	real.munmap(p, n);
}

HIDDEN void *live_map(size_t n) { return raw_map(n); }
HIDDEN void live_unmap(void *p, size_t n) { raw_unmap(p, n); }

// grow rehashes a shard into a table twice its live blocks (at least 64).
static int grow(struct shard *s) {
	uint32_t cap = 64; // small: 64 shards of mostly few blocks must stay in cache
	while (cap < s->live * 2)
		cap *= 2;
	struct lt_ent *t = raw_map((size_t)cap * sizeof *t);
	if (!t)
		return 0;
	for (uint32_t i = 0; i < s->cap; i++) {
		uintptr_t a = s->tab[i].addr;
		if (a) {
			uint32_t j = (uint32_t)(mix(a) >> 20) & (cap - 1);
			while (t[j].addr)
				j = (j + 1) & (cap - 1);
			t[j] = s->tab[i];
		}
	}
	if (s->tab)
		raw_unmap(s->tab, (size_t)s->cap * sizeof *s->tab);
	s->tab = t;
	s->cap = cap;
	return 1;
}

HIDDEN void live_add(void *p, size_t size) {
	uintptr_t a = (uintptr_t)p;
	uint64_t h = mix(a);
	struct shard *s = shard_of(a);
	spin_lock(&s->lock);
	if ((s->live + 1) * 4 > s->cap * 3 && !grow(s)) {
		spin_unlock(&s->lock);
		live_lost++;
		return;
	}
	uint32_t mask = s->cap - 1, j = (uint32_t)(h >> 20) & mask;
	while (s->tab[j].addr)
		j = (j + 1) & mask;
	s->tab[j].addr = a;
	s->tab[j].size = size;
	s->live++;
	spin_unlock(&s->lock);
}

// live_del removes a block and returns its size, or -1 when the block is
// not in the table.
//
// Deletion shifts later entries of the probe run back instead of leaving
// a tombstone: a program that allocates and frees at a steady rate would
// otherwise fill the table with tombstones and rehash it every few dozen
// operations (an mmap and an munmap each time, with the TLB shootdowns
// those cost the other threads).
HIDDEN long live_del(void *p) {
	uintptr_t a = (uintptr_t)p;
	uint64_t h = mix(a);
	struct shard *s = shard_of(a);
	long size = -1;
	spin_lock(&s->lock);
	if (s->cap) {
		uint32_t mask = s->cap - 1, j = (uint32_t)(h >> 20) & mask;
		while (s->tab[j].addr) {
			if (s->tab[j].addr == a) {
				size = (long)s->tab[j].size;
				s->live--;
				// j is the hole; move back every later entry of the
				// run whose home is not in (j, k].
				for (uint32_t k = (j + 1) & mask; s->tab[k].addr; k = (k + 1) & mask) {
					uint32_t home = (uint32_t)(mix(s->tab[k].addr) >> 20) & mask;
					if (((k - home) & mask) >= ((k - j) & mask)) {
						s->tab[j] = s->tab[k];
						j = k;
					}
				}
				s->tab[j].addr = 0;
				break;
			}
			j = (j + 1) & mask;
		}
	}
	spin_unlock(&s->lock);
	return size;
}

HIDDEN uint64_t live_lost;

// live_freeze stops every change to the heap table (a thread that frees
// waits) and returns the number of live blocks; live_thaw resumes.
HIDDEN size_t live_freeze(void) {
	size_t n = 0;
	for (unsigned i = 0; i < NSHARDS; i++) {
		spin_lock(&shards[i].lock);
		n += shards[i].live;
	}
	pthread_mutex_lock(&regions_mu);
	t_frozen = 1;
	return n;
}

HIDDEN void live_thaw(void) {
	t_frozen = 0;
	pthread_mutex_unlock(&regions_mu);
	for (unsigned i = 0; i < NSHARDS; i++)
		spin_unlock(&shards[i].lock);
}

// live_shard gives shard i's table while frozen (cap slots, an addr of 0
// is an empty one), or returns 0 past the last shard: the scan reads the
// entries where they are rather than copying millions of them first.
HIDDEN int live_shard(unsigned i, const struct lt_ent **tab, size_t *cap) {
	if (i >= NSHARDS)
		return 0;
	*tab = shards[i].tab;
	*cap = shards[i].tab ? shards[i].cap : 0;
	return 1;
}

// fork happens with every lock taken (live_freeze in the prepare handler),
// so the child's copy is consistent; its locks are then released. The
// parent's threads' stacks stay listed: they are dead in the child.
HIDDEN void live_after_fork(void) {
	t_frozen = 0;
	for (unsigned i = 0; i < NSHARDS; i++)
		shards[i].lock = 0;
	pthread_mutex_init(&regions_mu, NULL);
}

// ---- mappings ----------------------------------------------------------------
// Small sorted arrays under one mutex: mappings are few and change rarely
// compared with heap blocks.

HIDDEN pthread_mutex_t regions_mu = PTHREAD_MUTEX_INITIALIZER;

struct rlist {
	struct region *r;
	size_t n, cap;
};

static struct rlist prog_maps, tracer_maps;

static void rl_insert(struct rlist *l, struct region x) {
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct region *nr = real.mmap(NULL, cap * sizeof *nr, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (nr == MAP_FAILED)
			return;
		if (l->r) {
			memcpy(nr, l->r, l->n * sizeof *nr);
			real.munmap(l->r, l->cap * sizeof *nr);
		}
		l->r = nr;
		l->cap = cap;
	}
	size_t i = l->n;
	while (i > 0 && l->r[i - 1].start > x.start) {
		l->r[i] = l->r[i - 1];
		i--;
	}
	l->r[i] = x;
	l->n++;
}

// rl_remove cuts [start, end) out of the list, splitting what it crosses.
static void rl_remove(struct rlist *l, uintptr_t start, uintptr_t end) {
	for (size_t i = 0; i < l->n;) {
		struct region *r = &l->r[i];
		if (r->end <= start || r->start >= end) {
			i++;
			continue;
		}
		struct region left = *r, right = *r;
		int has_left = r->start < start, has_right = r->end > end;
		memmove(&l->r[i], &l->r[i + 1], (l->n - i - 1) * sizeof *r);
		l->n--;
		if (has_left) {
			left.end = start;
			rl_insert(l, left);
			i++;
		}
		if (has_right) {
			right.start = end;
			rl_insert(l, right);
			i++;
		}
	}
}

static uintptr_t page_up(uintptr_t n) { return (n + 4095) & ~(uintptr_t)4095; }

HIDDEN void live_map_add(void *p, size_t len, int prot, int flags) {
	regions_lock();
	uintptr_t a = (uintptr_t)p;
	rl_remove(&prog_maps, a, a + page_up(len));
	rl_insert(&prog_maps, (struct region){a, a + page_up(len), prot, flags});
	regions_unlock();
}

HIDDEN void live_map_del(void *p, size_t len) {
	regions_lock();
	rl_remove(&prog_maps, (uintptr_t)p, (uintptr_t)p + page_up(len));
	regions_unlock();
}

HIDDEN void tracer_region_add(void *p, size_t len) {
	regions_lock();
	uintptr_t a = (uintptr_t)p;
	rl_remove(&tracer_maps, a, a + page_up(len));
	rl_insert(&tracer_maps, (struct region){a, a + page_up(len), 0, 0});
	regions_unlock();
}

HIDDEN void tracer_region_del(void *p, size_t len) {
	regions_lock();
	rl_remove(&tracer_maps, (uintptr_t)p, (uintptr_t)p + page_up(len));
	regions_unlock();
}

// live_lists_ranges gives where the region lists themselves are: they
// are full of program addresses, and not roots.
HIDDEN void live_lists_ranges(uintptr_t lo[2], uintptr_t hi[2]) {
	const struct rlist *ls[2] = {&prog_maps, &tracer_maps};
	for (int i = 0; i < 2; i++) {
		lo[i] = (uintptr_t)ls[i]->r;
		hi[i] = lo[i] + ls[i]->cap * sizeof(struct region);
	}
}

// Callers hold regions_mu (live_freeze).
HIDDEN const struct region *live_maps(size_t *n) {
	*n = prog_maps.n;
	return prog_maps.r;
}

HIDDEN const struct region *tracer_maps_get(size_t *n) {
	*n = tracer_maps.n;
	return tracer_maps.r;
}

// ---- threads --------------------------------------------------------------------

HIDDEN struct thread_rec threads_known[MAX_KNOWN_THREADS];
HIDDEN int nthreads_known;

HIDDEN void live_thread_start(uintptr_t lo, uintptr_t hi, uintptr_t tp) {
	pid_t tid = (pid_t)syscall(SYS_gettid);
	pthread_mutex_lock(&regions_mu);
	int slot = -1;
	// Ranges of exited threads are kept: glibc caches their stacks, whose
	// stale words must not count as roots. A slot is reused for a stack
	// glibc hands out again, or, when the list is full, for any thread gone.
	for (int i = 0; i < nthreads_known && slot < 0; i++)
		if (threads_known[i].lo == lo)
			slot = i;
	if (slot < 0 && nthreads_known < MAX_KNOWN_THREADS)
		slot = nthreads_known++;
	for (int i = 0; i < nthreads_known && slot < 0; i++)
		if (syscall(SYS_tgkill, getpid(), threads_known[i].tid, 0) != 0)
			slot = i;
	if (slot >= 0)
		threads_known[slot] = (struct thread_rec){tid, lo, hi, tp};
	pthread_mutex_unlock(&regions_mu);
}

// live_other_threads counts the program's threads still running besides
// the calling one (the tracer's own are not counted).
HIDDEN int live_other_threads(void) {
	pid_t self = (pid_t)syscall(SYS_gettid);
	int n = self != getpid(); // the main thread, when another one exits
	for (int i = 0; i < nthreads_known; i++)
		if (threads_known[i].tid != self && syscall(SYS_tgkill, getpid(), threads_known[i].tid, 0) == 0)
			n++;
	return n;
}
