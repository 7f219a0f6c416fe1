// What is live right now, for the exit-time reachability scan: heap
// blocks (a sharded open-addressing table: address -> size), the program's
// mappings, the tracer's own mappings (never scanned: they hold every
// address) and the stacks of the threads the program created.
//
// Shards keep threads from contending; a shard's lock is held only for a
// probe, never while unwinding or writing the trace; on the program's
// threads only inside an event's bookkeeping, with t_busy up (record.c,
// SAVE_ERRNO), or the scan's freeze.
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "live.h"

#define SHARD_BITS 6
#define NSHARDS (1u << SHARD_BITS)

// A slot is one word (live.h): half the memory two words took, so the
// table can be kept at most half full, where the probe runs a free
// shifts back stay short, in less memory than two words a slot three
// quarters full needed. Sizes too large for a slot are in the shard's
// side list: blocks of 512 KiB and more are few (each is a mapping of
// its own in glibc), so a list searched from the end serves.
struct shard {
	int lock;
	uint32_t cap, live;
	uint64_t last; // the latest event time handed out under the lock
	uint32_t nbig, bigcap;
	int bits;
	uint64_t *tab;
	struct lt_big *big;
} __attribute__((aligned(64)));

static struct shard shards[NSHARDS];
HIDDEN int live_enabled;

// Set on the thread that froze the bookkeeping: its own mappings (the
// scan's arrays, a growing trace buffer) go on the lists without taking
// the lock it already holds.
static TLS int t_frozen;

// Locks taken on the program's threads are held with t_busy up (shim.h):
// a signal handler's allocation there must not wait for them.
static void regions_lock(void) {
	t_busy++;
	if (!t_frozen)
		pthread_mutex_lock(&regions_mu);
}

static void regions_unlock(void) {
	if (!t_frozen)
		pthread_mutex_unlock(&regions_mu);
	t_busy--;
}

static inline void spin_lock(int *l) {
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(l, __ATOMIC_RELAXED))
			__builtin_ia32_pause();
}

static inline void spin_unlock(int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

// home is a block's first slot: the high bits of its address times the
// golden ratio.
static inline uint32_t home_in(int bits, uint64_t key) {
	return (uint32_t)((key * 0x9e3779b97f4a7c15u) >> (64 - bits));
}

static inline uint32_t home(const struct shard *s, uint64_t key) { return home_in(s->bits, key); }

// A block's shard follows from the 64 MiB region it lies in, not from the
// block itself: glibc gives each thread an arena of its own (64 MiB
// aligned), so a thread's allocations and frees keep to its own shards,
// whose locks stay in its core's cache instead of moving between cores on
// every call. A free from another thread still finds the block.
static inline unsigned shard_index(uintptr_t a) { return (unsigned)((uint64_t)(a >> 26) * 0x9e3779b97f4a7c15u >> (64 - SHARD_BITS)); }

// Huge pages. A fault costs ~10 µs here (a virtual machine's exit); a
// traced program with a writer behind it maps megabytes of trace buffers
// and frame areas, and the scan's arrays for a big heap run to hundreds
// of MiB. Mappings of 2 MiB and more are therefore whole, aligned huge
// pages: a fault per 2 MiB instead of per 4 KiB. What a small process
// may need only the start of is mapped small first (record.c).
#define HUGE_PAGE (2u << 20)

// map_len is how much a mapping of n bytes takes: the same when mapping
// and when unmapping.
static size_t map_len(size_t n) { return n < HUGE_PAGE ? n : (n + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1); }

static void *raw_map(size_t n) {
	size_t len = map_len(n), span = n < HUGE_PAGE ? n : len + HUGE_PAGE; // room to align
	uint8_t *p = real.mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (span != len) {
		uint8_t *a = (uint8_t *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
		if (a > p)
			real.munmap(p, (size_t)(a - p));
		if (p + span > a + len)
			real.munmap(a + len, (size_t)(p + span - (a + len)));
		p = a;
		madvise(p, len, MADV_HUGEPAGE);
	}
	tracer_region_add(p, len);
	return p;
}

static void raw_unmap(void *p, size_t n) {
	n = map_len(n);
	tracer_region_del(p, n);
	real.munmap(p, n);
}

HIDDEN void *live_map(size_t n) { return raw_map(n); }
HIDDEN void live_unmap(void *p, size_t n) { raw_unmap(p, n); }

// grow rehashes a shard into a table at most a quarter full (at least
// 64 slots).
static int grow(struct shard *s) {
	uint32_t cap = 64; // small: 64 shards of mostly few blocks must stay in cache
	int bits = 6;
	while (cap < (s->live + 1) * 4)
		cap *= 2, bits++;
	uint64_t *t = raw_map((size_t)cap * sizeof *t);
	if (!t)
		return 0;
	struct shard n = {.cap = cap, .bits = bits};
	for (uint32_t i = 0; i < s->cap; i++) {
		uint64_t e = s->tab[i];
		if (e) {
			uint32_t j = home(&n, e >> LT_SZ_BITS);
			while (t[j])
				j = (j + 1) & (cap - 1);
			t[j] = e;
		}
	}
	if (s->tab)
		raw_unmap(s->tab, (size_t)s->cap * sizeof *s->tab);
	s->tab = t;
	s->cap = cap;
	s->bits = bits;
	return 1;
}

static int big_add(struct shard *s, uintptr_t a, size_t size) {
	if (s->nbig == s->bigcap) {
		uint32_t cap = s->bigcap ? s->bigcap * 2 : 256;
		struct lt_big *nb = raw_map((size_t)cap * sizeof *nb);
		if (!nb)
			return 0;
		if (s->big) {
			memcpy(nb, s->big, (size_t)s->nbig * sizeof *nb);
			raw_unmap(s->big, (size_t)s->bigcap * sizeof *nb);
		}
		s->big = nb;
		s->bigcap = cap;
	}
	s->big[s->nbig++] = (struct lt_big){a, size};
	return 1;
}

// big_find returns a side-listed block's size, taking it off the list
// when del is set. From the end: the newest blocks go first.
static size_t big_find(struct shard *s, uintptr_t a, int del) {
	for (uint32_t i = s->nbig; i-- > 0;) {
		if (s->big[i].addr == a) {
			size_t n = s->big[i].size;
			if (del)
				s->big[i] = s->big[--s->nbig];
			return n;
		}
	}
	return LT_ESC; // cannot happen: the slot said the size was here
}

// stamp hands out an event time under a shard's lock (record.c, "the
// clock"): not before t_min, after the shard's previous one.
static inline uint64_t stamp(struct shard *s, uint64_t t_min) {
	uint64_t t = coarse_units();
	if (t < t_min)
		t = t_min;
	if (t <= s->last)
		t = s->last + 1;
	s->last = t;
	return t;
}

// live_stamp takes an event's time under its block's shard lock, as
// live_add and live_del do, without the table: they do only this for a
// process that keeps no table (LEAK_SCAN=0), the same order across
// threads for a lock that stays in its core's cache instead of a precise
// clock read.
static uint64_t live_stamp(void *p, uint64_t t_min) {
	struct shard *s = &shards[shard_index((uintptr_t)p)];
	spin_lock(&s->lock);
	uint64_t t = stamp(s, t_min);
	spin_unlock(&s->lock);
	return t;
}

// An address no allocator gives has no shard: a fence orders its time.
static uint64_t stamp_unlocked(uint64_t t_min) {
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint64_t t = coarse_units();
	return t > t_min ? t : t_min;
}

static long del_locked(struct shard *s, uintptr_t a);
static int take_pending(uintptr_t *own, uintptr_t a);

// live_add enters a block and returns the time of its allocation. own is
// the calling thread's deferred release (live_free).
HIDDEN uint64_t live_add(void *p, size_t size, uint64_t t_min, uintptr_t *own) {
	if (!live_enabled)
		return live_stamp(p, t_min);
	uintptr_t a = (uintptr_t)p;
	if (UNLIKELY(a >= LT_ADDR_LIMIT || (a & 7))) { // no allocator gives those
		live_lost++;
		return stamp_unlocked(t_min);
	}
	uint64_t key = (uint64_t)(a >> 3), e = lt_pack(a, size);
	struct shard *s = &shards[shard_index(a)];
	spin_lock(&s->lock);
	uint64_t t = stamp(s, t_min);
	if ((s->live + 1) * 2 > s->cap && !grow(s))
		goto lost;
	uint32_t mask = s->cap - 1, j = home(s, key);
	for (uint64_t o; (o = s->tab[j]) != 0; j = (j + 1) & mask) {
		// The address is in the table already: a block released
		// with its removal deferred, handed out again. The entry
		// becomes the new block's.
		if (UNLIKELY(o >> LT_SZ_BITS == key) && take_pending(own, a)) {
			if ((o & LT_ESC) == LT_ESC)
				big_find(s, a, 1);
			if (size >= LT_ESC && !big_add(s, a, size)) {
				del_locked(s, a);
				goto lost;
			}
			s->tab[j] = e;
			spin_unlock(&s->lock);
			return t;
		}
	}
	if (size >= LT_ESC && !big_add(s, a, size))
		goto lost;
	s->tab[j] = e;
	s->live++;
	spin_unlock(&s->lock);
	return t;
lost:
	spin_unlock(&s->lock);
	live_lost++;
	return t;
}

// live_prefetch starts loading the slot live_add will probe for p. The
// table is read without the lock: a stale one is only a wasted fetch.
HIDDEN void live_prefetch(void *p) {
	uintptr_t a = (uintptr_t)p;
	const struct shard *s = &shards[shard_index(a)];
	uint64_t *tab = __atomic_load_n(&s->tab, __ATOMIC_RELAXED);
	int bits = __atomic_load_n(&s->bits, __ATOMIC_RELAXED);
	if (tab && bits > 0)
		__builtin_prefetch(&tab[home_in(bits, (uint64_t)(a >> 3))], 1);
}

// live_clock_max is the latest time any shard handed out.
HIDDEN uint64_t live_clock_max(void) {
	uint64_t m = 0;
	for (unsigned i = 0; i < NSHARDS; i++) {
		uint64_t l = __atomic_load_n(&shards[i].last, __ATOMIC_RELAXED);
		if (l > m)
			m = l;
	}
	return m;
}

// del_locked removes a block from its shard, whose lock the caller
// holds, and returns its size, or -1 when the block is not there.
//
// Deletion shifts later entries of the probe run back instead of leaving
// a tombstone: a program that allocates and frees at a steady rate would
// otherwise fill the table with tombstones and rehash it every few dozen
// operations (an mmap and an munmap each time, with the TLB shootdowns
// those cost the other threads).
static long del_locked(struct shard *s, uintptr_t a) {
	uint64_t key = (uint64_t)(a >> 3);
	long size = -1;
	if (!s->cap)
		return size;
	uint32_t mask = s->cap - 1, j = home(s, key);
	for (uint64_t e; (e = s->tab[j]) != 0; j = (j + 1) & mask) {
		if (e >> LT_SZ_BITS != key)
			continue;
		size = (long)(e & LT_ESC);
		if (size == LT_ESC)
			size = (long)big_find(s, a, 1);
		s->live--;
		// j is the hole; move back every later entry of the run
		// whose home is not in (j, k].
		for (uint32_t k = (j + 1) & mask; s->tab[k]; k = (k + 1) & mask) {
			uint32_t h = home(s, s->tab[k] >> LT_SZ_BITS);
			if (((k - h) & mask) >= ((k - j) & mask)) {
				s->tab[j] = s->tab[k];
				j = k;
			}
		}
		s->tab[j] = 0;
		break;
	}
	return size;
}

// live_del removes a block and returns its size, or -1 when the block is
// not in the table; *t is the time of its release.
HIDDEN long live_del(void *p, uint64_t t_min, uint64_t *t) {
	if (!live_enabled) {
		*t = live_stamp(p, t_min);
		return -1;
	}
	uintptr_t a = (uintptr_t)p;
	if (UNLIKELY(a >= LT_ADDR_LIMIT || (a & 7))) {
		*t = stamp_unlocked(t_min);
		return -1;
	}
	struct shard *s = &shards[shard_index(a)];
	spin_lock(&s->lock);
	*t = stamp(s, t_min);
	long size = del_locked(s, a);
	spin_unlock(&s->lock);
	return size;
}

// Deferred releases. A free's block is removed from the table at the
// thread's next free, not at its own: its slot, fetched from memory
// while the program runs on, is then in cache, where a removal on the
// spot waited for it. Until then the block stays in the table, which
// only the scan reads, and live_freeze removes every deferred block
// first. A thread's deferred block (*pend, in its record.c state) changes
// only under that block's shard lock. An allocation that finds its
// address still in the table takes the entry over from whichever thread
// deferred its removal (take_pending).

// take_pending clears the deferred release of a, whose shard lock the
// caller holds: the caller's own, or another thread's. Returns 0 when no
// thread deferred it (the table holds a block whose release was never
// seen).
static int take_pending(uintptr_t *own, uintptr_t a) {
	if (own && *own == a) {
		__atomic_store_n(own, 0, __ATOMIC_RELAXED);
		return 1;
	}
	uintptr_t *w;
	for (int i = 0; (w = rec_pending_word(i)) != NULL; i++) {
		if (__atomic_load_n(w, __ATOMIC_RELAXED) == a) {
			__atomic_store_n(w, 0, __ATOMIC_RELAXED);
			return 1;
		}
	}
	return 0;
}

// live_free is live_del for a free: it takes the release's time and
// defers the block's removal (above), carrying out the previous one.
HIDDEN void live_free(void *p, uint64_t t_min, uint64_t *t, uintptr_t *pend) {
	uintptr_t a = (uintptr_t)p;
	if (UNLIKELY(a >= LT_ADDR_LIMIT || (a & 7))) {
		live_del(p, t_min, t);
		return;
	}
	live_prefetch(p);
	unsigned si = shard_index(a);
	uintptr_t q = __atomic_load_n(pend, __ATOMIC_RELAXED);
	if (q && shard_index(q) != si) {
		struct shard *o = &shards[shard_index(q)];
		spin_lock(&o->lock);
		if (__atomic_load_n(pend, __ATOMIC_RELAXED) == q) { // not taken over meanwhile
			del_locked(o, q);
			__atomic_store_n(pend, 0, __ATOMIC_RELAXED);
		}
		spin_unlock(&o->lock);
	}
	struct shard *s = &shards[si];
	spin_lock(&s->lock);
	*t = stamp(s, t_min);
	q = __atomic_load_n(pend, __ATOMIC_RELAXED);
	if (q)
		del_locked(s, q);
	__atomic_store_n(pend, a, __ATOMIC_RELAXED);
	spin_unlock(&s->lock);
}

HIDDEN uint64_t live_lost;

// live_freeze stops every change to the heap table (a thread that frees
// waits), carries out the deferred releases and returns the number of
// live blocks; live_thaw resumes.
HIDDEN size_t live_freeze(void) {
	size_t n = 0;
	for (unsigned i = 0; i < NSHARDS; i++)
		spin_lock(&shards[i].lock);
	uintptr_t *w;
	for (int i = 0; (w = rec_pending_word(i)) != NULL; i++) {
		uintptr_t q = __atomic_load_n(w, __ATOMIC_RELAXED);
		if (q) {
			del_locked(&shards[shard_index(q)], q);
			__atomic_store_n(w, 0, __ATOMIC_RELAXED);
		}
	}
	for (unsigned i = 0; i < NSHARDS; i++)
		n += shards[i].live;
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

// live_shard gives shard i's table while frozen (cap slots, 0 is an empty
// one; lt_size reads a slot's size), or returns 0 past the last shard:
// the scan reads the entries where they are rather than copying millions
// of them first.
HIDDEN int live_shard(unsigned i, const uint64_t **tab, size_t *cap) {
	if (i >= NSHARDS)
		return 0;
	*tab = shards[i].tab;
	*cap = shards[i].tab ? shards[i].cap : 0;
	return 1;
}

HIDDEN size_t live_big_size(unsigned i, uintptr_t a) { return big_find(&shards[i], a, 0); }

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
