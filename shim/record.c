// Per-thread buffers and the compact record encoding: the hot path.
//
// Each thread appends records to its own buffer and publishes how far it
// got with a release store; nothing is locked while unwinding or encoding.
// A full buffer is handed to a FIFO under a mutex (once per 64 KiB). The
// drainer (the Go writer, or C after fork) takes handed-off buffers and
// also copies the committed tail of every live thread's current buffer, so
// a quiet thread's events still reach the file within one flush interval.
//
// Who writes which bytes of a buffer is settled by one atomic word,
// `drained`: the drainer advances it with a CAS after copying, the owner
// claims the rest with an exchange when it hands the buffer off.
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "live.h"

#define BUF_SIZE (64u << 10)
#define MAX_BUFS 1024 // 64 MiB of trace buffers at the most
#define MAX_THREADS 8192
#define SC_BITS 12
#define SC_SIZE (1u << SC_BITS)
#define MAX_DEPTH 128
#define CLAIMED 0xffffffffu
#define RECORD_MAX (64 + 2 + 20 + MAX_DEPTH * 10)
#define WAKE_QUEUED 16
#define MAX_DRAIN 64
#define BR_RING 4096 // as analyzer/traceformat's backRefs
#define BR_HASH_BITS 13
#define BR_HASH (1u << BR_HASH_BITS)
#define PRECISE_EVENTS 4096

// A back-reference table slot is one word: the latest address noted in
// it, over 16, in the high 44 bits (allocators give 16-byte aligned
// addresses below 2^48; others are not noted), its ordinal mod 2^20 in
// the low 20.
#define BR_ORD_BITS 20
#define BR_ORD_MASK ((1u << BR_ORD_BITS) - 1)

struct backrefs {
	uint64_t n; // addresses written so far
	uint64_t hash[BR_HASH];
};
enum { BR_ALLOCS, BR_FREES };

struct tstate;

struct buf {
	struct buf *next;
	struct tstate *owner;
	uint32_t start, end; // bytes to write once handed off
	uint64_t t_start;    // time of the buffer's first record
	uint32_t committed;  // atomic: end of the records the owner finished
	uint32_t drained;    // atomic: how far the drainer copied, or CLAIMED
	uint8_t data[BUF_SIZE];
};

struct tstate {
	struct buf *cur;   // atomic
	uint64_t handed;   // atomic: buffers handed off
	uint64_t written;  // drainer only: buffers written
	uint32_t slot;     // stream id in the file (1..)
	int in_use;
	pid_t tid;
	uint64_t last_t; // time of the last record (the delta base)
	uint64_t pending;  // atomic: last_t + 1 while an event is between its time and its commit
	uint64_t dropped;  // events lost since the last buffer
	uintptr_t pend;    // the block whose removal from the live table waits (live_free)
	uint32_t precise_left; // events still to read the precise clock (clock_min)
	uint32_t seen_commit; // drainer only: committed at the last check
	int idle_checks;
	uint64_t sc_key[SC_SIZE];
	uint32_t sc_id[SC_SIZE];
	// Drainer only: the back-reference state of the thread's stream
	// (see "columns" below), for its heap allocations and its frees.
	// Never reset while the process lives: the decoder keeps a slot's
	// rings across threads too.
	struct backrefs br[2];
};

static TLS struct tstate *t_state;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct buf *free_bufs;
static struct buf *queue_head, *queue_tail;
static int queued;
static int nbufs;

static struct tstate *states[MAX_THREADS];
static int nstates;

static uint64_t next_stack_id = 1;
static uint64_t dropped_total;

// ---- the clock ------------------------------------------------------------------
// Event times come from the coarse monotonic clock (a few ns to read,
// against 25 for the precise one; it moves once per scheduler tick),
// made into a hybrid logical clock so that the order the decoder needs
// survives the coarse steps:
//   - a heap event takes its time under its block's live-table shard lock
//     and after that shard's previous time: for one address, the
//     allocations and frees of every thread are strictly ordered;
//   - a thread's times never decrease (its delta base);
//   - a process record or mapping event takes a "barrier" time, later
//     than every time handed out before, and no event after it may take
//     an earlier one (clock_floor).
// Times stay within a few ticks of the real clock: each step adds one
// unit (1 ns) at most, and no event costs as little as that.
// Without the live table (LEAK_SCAN=0) there are no shard locks, and
// every event reads the precise clock instead.
//
// Even the coarse clock's read (about 6 ns through the vDSO, twice per
// allocation and free, once inside the shard lock) cost a tenth of the
// benchmark's time under the tracer, so a thread of ours, the ticker, reads
// the precise clock every millisecond into clock_tick, and events load
// that: finer than the coarse clock's 4 ms ticks, and a load. While the
// program records nothing (QUIET_TICKS in a row) the ticker rests,
// looking every 50 ms, and events read the coarse clock themselves
// (clock_untick). clock_tick only grows, and every reading handed out is
// in it first, so readings never go back when the ticker stops or
// starts. Where no ticker runs (a forked child; before it starts) events
// read the coarse clock.

HIDDEN uint64_t t_start_ns;
HIDDEN uint64_t clock_floor; // atomic: the earliest time an event may still take

static uint64_t precise_units(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	return ns > t_start_ns ? (ns - t_start_ns) >> TIME_SHIFT : 0;
}

// clock_min is the earliest time the calling thread's next event may
// take. A thread's first PRECISE_EVENTS events also read the precise
// clock: a short program (a test, a demo) gets times as fine as before,
// and its allocations spread over its run as they happened, not bunched
// into a tick or two; a long one pays for it once per thread.
static inline uint64_t clock_min(struct tstate *s) {
	uint64_t f = __atomic_load_n(&clock_floor, __ATOMIC_RELAXED);
	uint64_t m = s && s->last_t > f ? s->last_t : f;
	if (UNLIKELY(s && s->precise_left)) {
		s->precise_left--;
		uint64_t p = precise_units();
		if (p > m)
			m = p;
	}
	return m;
}

// event_time is the time of an event no shard lock orders; the caller
// fenced after marking the event in flight.
static uint64_t event_time(void) {
	uint64_t t = coarse_units(), m = clock_min(t_state);
	return t > m ? t : m;
}

// clock_now is the clock's reading, the least time an event marked in
// flight after it can take.
static uint64_t clock_now(void) { return coarse_units(); }

// barrier_time is after every event time handed out so far, and before
// every one handed out later.
HIDDEN uint64_t barrier_time(void) {
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint64_t t = coarse_units(), m = live_clock_max() + 1;
	if (m > t)
		t = m;
	int n = __atomic_load_n(&nstates, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		uint64_t l = __atomic_load_n(&states[i]->last_t, __ATOMIC_RELAXED) + 1;
		if (l > t)
			t = l;
	}
	uint64_t f = __atomic_load_n(&clock_floor, __ATOMIC_RELAXED);
	do {
		if (f > t)
			t = f;
	} while (!__atomic_compare_exchange_n(&clock_floor, &f, t + 1, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
	return t;
}

HIDDEN uint64_t clock_tick;
HIDDEN int clock_ticking;

#define TICK_NS 1000000
#define REST_NS 50000000
#define QUIET_TICKS 64

// raise_tick makes clock_tick at least t and returns it.
static uint64_t raise_tick(uint64_t t) {
	uint64_t c = __atomic_load_n(&clock_tick, __ATOMIC_RELAXED);
	while (c < t && !__atomic_compare_exchange_n(&clock_tick, &c, t, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	return c > t ? c : t;
}

// clock_untick reads the coarse clock where the ticker does not tick.
HIDDEN uint64_t clock_untick(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	uint64_t t = ns > t_start_ns ? (ns - t_start_ns) >> TIME_SHIFT : 0; // it lags the start by up to a tick
	return raise_tick(t);
}

// activity changes whenever a thread records an event that moves its
// time (almost every one does: the shard locks order them).
static uint64_t activity(void) {
	uint64_t a = __atomic_load_n(&clock_floor, __ATOMIC_RELAXED);
	int n = __atomic_load_n(&nstates, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++)
		a += __atomic_load_n(&states[i]->last_t, __ATOMIC_RELAXED);
	return a;
}

// The ticker also ends the process when the program's last thread ended
// without doing so, as one of our threads was being created (hooks.c,
// program_threads_gone): with exit(0), as glibc would have.
static void *ticker(void *arg) {
	(void)arg;
	uint64_t seen = activity();
	int quiet = 0;
	for (;;) {
		if (UNLIKELY(program_threads_gone()))
			exit(0);
		uint64_t a = activity();
		quiet = a != seen ? 0 : quiet < QUIET_TICKS ? quiet + 1 : quiet;
		seen = a;
		int on = quiet < QUIET_TICKS;
		if (on) {
			raise_tick(precise_units());
			__atomic_store_n(&clock_ticking, 1, __ATOMIC_RELAXED);
		} else {
			__atomic_store_n(&clock_ticking, 0, __ATOMIC_RELAXED);
		}
		struct timespec d = {0, on ? TICK_NS : REST_NS};
		nanosleep(&d, NULL);
	}
	return NULL;
}

// clock_ticker_start starts the ticker: a thread of ours (the
// pthread_create hook marks it so), with the program's signals blocked.
// It runs with or without the live table.
HIDDEN void clock_ticker_start(void) {
	pthread_t th;
	if (pthread_create(&th, NULL, ticker, NULL) == 0)
		pthread_detach(th);
}

// PREFETCHW is in every x86-64 CPU of the last decade, but not the first
// ones: where cpuid does not list it, a read prefetch does what it can.
static int have_prefetchw;

static inline void prefetch_write(const void *p) {
	if (LIKELY(have_prefetchw))
		__asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
	else
		__builtin_prefetch(p, 1, 3);
}

#define PREFETCH_AHEAD 256 // bytes: about four lines, 25 records

HIDDEN void rec_start(void) {
	unsigned a, b, c, d;
	have_prefetchw = __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & bit_PRFCHW);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t_start_ns = (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void *map(size_t n) { return live_map(n); }

// ---- encoding ---------------------------------------------------------------

static inline uint8_t *put_varint(uint8_t *p, uint64_t v) {
	while (v >= 0x80) {
		*p++ = (uint8_t)v | 0x80;
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static inline uint8_t *put_zigzag(uint8_t *p, int64_t v) {
	return put_varint(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

// ---- buffers ----------------------------------------------------------------

static void wake_writer(void);

static void put_free(struct buf *b);

// The first SMALL_BUFS buffers are mapped one by one: most processes never
// need more (a thread holds one, the writer's queue a few). Past them the
// pool grows by huge pages of buffers, a fault each instead of one per
// 4 KiB page of every buffer (16 a buffer, ~10 µs each here).
#define SMALL_BUFS 8
#define BUF_CHUNK (2u << 20)
#define BUF_STRIDE ((sizeof(struct buf) + 63) & ~(size_t)63)

// get_buf returns an empty buffer or NULL when the pool is exhausted.
static struct buf *get_buf(void) {
	pthread_mutex_lock(&pool_mu);
	if (!free_bufs && nbufs < MAX_BUFS) {
		int chunk = nbufs >= SMALL_BUFS;
		pthread_mutex_unlock(&pool_mu);
		uint8_t *m = chunk ? map(BUF_CHUNK) : map(sizeof(struct buf));
		pthread_mutex_lock(&pool_mu);
		for (size_t off = 0; m && off + sizeof(struct buf) <= (chunk ? BUF_CHUNK : sizeof(struct buf)) && nbufs < MAX_BUFS;
		     off += BUF_STRIDE) {
			put_free((struct buf *)(m + off));
			nbufs++;
		}
	}
	struct buf *b = free_bufs;
	if (b)
		free_bufs = b->next;
	pthread_mutex_unlock(&pool_mu);
	return b;
}

static void put_free(struct buf *b) {
	b->next = free_bufs;
	free_bufs = b;
}

// start_buf writes the record that opens every buffer: who writes and the
// absolute time, so a buffer decodes without the ones before it. That time
// is the thread's last record's, not the clock's: the event that needed
// this buffer may have taken its time before, and a record's time must
// never be moved later (a free would land after the next allocation of
// its address on another thread).
static void start_buf(struct tstate *s, struct buf *b) {
	uint8_t *p = b->data;
	b->next = NULL;
	b->owner = s;
	b->t_start = s->last_t;
	*p++ = REC_RESET;
	p = put_varint(p, (uint64_t)s->tid);
	p = put_varint(p, s->last_t);
	if (s->dropped) {
		*p++ = REC_DROPPED;
		p = put_varint(p, s->dropped);
		s->dropped = 0;
	}
	__atomic_store_n(&b->drained, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&b->committed, (uint32_t)(p - b->data), __ATOMIC_RELEASE);
}

// hand_off queues the current buffer for writing and installs a new one.
// Returns 0 when no buffer could be had: the thread then drops events.
// queue_cur claims the rest of the thread's current buffer and queues it
// for writing. Returns whether the writer should be woken.
static int queue_cur(struct tstate *s) {
	struct buf *b = __atomic_load_n(&s->cur, __ATOMIC_RELAXED);
	if (!b)
		return 0;
	uint32_t d = __atomic_exchange_n(&b->drained, CLAIMED, __ATOMIC_ACQ_REL);
	b->start = d;
	b->end = __atomic_load_n(&b->committed, __ATOMIC_RELAXED);
	pthread_mutex_lock(&pool_mu);
	b->next = NULL;
	if (queue_tail)
		queue_tail->next = b;
	else
		queue_head = b;
	queue_tail = b;
	queued++;
	int wake = queued >= WAKE_QUEUED;
	pthread_mutex_unlock(&pool_mu);
	// Order matters to the drainer: it must see `handed` move before it
	// can see the new buffer.
	__atomic_store_n(&s->handed, s->handed + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&s->cur, NULL, __ATOMIC_RELEASE);
	return wake;
}

static int hand_off(struct tstate *s) {
	if (s->cur) {
		int wake = queue_cur(s);
		if (leak_c_writer)
			flush_and_wait(0, 0);
		else if (wake)
			wake_writer();
	}
	struct buf *b = get_buf();
	for (int tries = 0; !b && tries < 20 && go_writer_alive && !leak_c_writer; tries++) {
		// Overloaded: give the writer a moment before dropping.
		wake_writer();
		struct timespec ts = {0, 500000};
		nanosleep(&ts, NULL);
		b = get_buf();
	}
	if (!b)
		return 0;
	start_buf(s, b);
	__atomic_store_n(&s->cur, b, __ATOMIC_RELEASE);
	return 1;
}

static void forget_stacks(struct tstate *s);

static struct tstate *new_state(void) {
	struct tstate *s = NULL;
	t_busy++;
	pthread_mutex_lock(&pool_mu);
	for (int i = 0; i < nstates; i++) {
		if (!states[i]->in_use) {
			s = states[i];
			break;
		}
	}
	if (!s && nstates < MAX_THREADS) {
		s = map(sizeof *s);
		if (s) {
			s->slot = (uint32_t)nstates + 1;
			states[nstates] = s;
			__atomic_store_n(&nstates, nstates + 1, __ATOMIC_RELEASE);
		}
	}
	if (s) {
		forget_stacks(s);
		s->in_use = 1;
		s->cur = NULL;
		s->handed = s->written = 0;
		s->dropped = 0;
		s->seen_commit = 0;
		s->idle_checks = 0;
		s->pending = 0;
		s->precise_left = PRECISE_EVENTS;
		uint64_t t = event_time(); // a reused slot's stream goes on: never back
		if (t > s->last_t)
			s->last_t = t;
		s->tid = (pid_t)syscall(SYS_gettid);
	}
	pthread_mutex_unlock(&pool_mu);
	t_busy--;
	return s;
}

// reserve returns where a record of up to n bytes can be written, or NULL
// when the event must be dropped (and has been counted).
static inline uint8_t *reserve(struct tstate **sp, size_t n) {
	struct tstate *s = t_state;
	if (UNLIKELY(!s)) {
		s = t_state = new_state();
		if (!s) {
			__atomic_fetch_add(&dropped_total, 1, __ATOMIC_RELAXED);
			return NULL;
		}
	}
	*sp = s;
	struct buf *b = s->cur;
	if (UNLIKELY(!b || b->committed + n > BUF_SIZE)) {
		if (!hand_off(s)) {
			s->dropped++;
			__atomic_fetch_add(&dropped_total, 1, __ATOMIC_RELAXED);
			// Stack definitions may be lost with the events: define anew.
			forget_stacks(s);
			return NULL;
		}
		b = s->cur;
	}
	return b->data + b->committed;
}

static inline void commit(struct tstate *s, uint8_t *end) {
	struct buf *b = s->cur;
	// A buffer comes back from the writer with its lines in the writer's
	// core's cache: the first store to each waited for the line to move,
	// and held up the next locked instruction (a shard lock) behind it.
	// Asking for the line a few records ahead moves it meanwhile: a
	// tenth less CPU time, a fifth less at one thread's wall clock.
	prefetch_write(end + PREFETCH_AHEAD);
	__atomic_store_n(&b->committed, (uint32_t)(end - b->data), __ATOMIC_RELEASE);
}

// ---- stacks -------------------------------------------------------------------

// hash_pcs mixes even and odd frames in two independent chains: one chain
// is a multiply's latency per frame, the hot path's longest dependency.
static inline uint64_t hash_pcs(const uintptr_t *pcs, int n) {
	uint64_t h0 = 0x9e3779b97f4a7c15u ^ (uint64_t)n, h1 = 0xc2b2ae3d27d4eb4fu;
	int i = 0;
	for (; i + 1 < n; i += 2) {
		h0 ^= pcs[i];
		h0 *= 0xff51afd7ed558ccdu;
		h0 ^= h0 >> 32;
		h1 ^= pcs[i + 1];
		h1 *= 0xc4ceb9fe1a85ec53u;
		h1 ^= h1 >> 32;
	}
	if (i < n) {
		h0 ^= pcs[i];
		h0 *= 0xff51afd7ed558ccdu;
		h0 ^= h0 >> 32;
	}
	uint64_t h = (h0 ^ (h1 * 0x9e3779b97f4a7c15u));
	h ^= h >> 31;
	return h | 1; // 0 marks an empty cache slot
}

// put_stack writes the stack's definition the first time this thread
// sees it (since its cache was last reset) and returns its id.
static inline uint8_t *put_stack(struct tstate *s, uint8_t *p, const uintptr_t *pcs, int n, uint64_t *id) {
	uint64_t h = hash_pcs(pcs, n);
	uint32_t i = (uint32_t)(h >> (64 - SC_BITS));
	if (LIKELY(s->sc_key[i] == h)) {
		*id = s->sc_id[i];
		return p;
	}
	uint64_t nid = __atomic_fetch_add(&next_stack_id, 1, __ATOMIC_RELAXED);
	s->sc_key[i] = h;
	s->sc_id[i] = (uint32_t)nid;
	*id = nid;
	*p++ = REC_STACK;
	p = put_varint(p, nid);
	p = put_varint(p, (uint64_t)n);
	uintptr_t prev = 0;
	for (int k = 0; k < n; k++) {
		p = put_zigzag(p, (int64_t)(pcs[k] - prev));
		prev = pcs[k];
	}
	return p;
}

// ---- events in flight ----------------------------------------------------------
// An event's time is taken before its record is committed, sometimes long
// before (a free takes it before calling the allocator; a thread can be
// preempted in between). A drain that does not see the record yet must
// not let the decoder hand on events newer than it: the thread says
// "pending" before it takes a time, and the drain lowers the frame's
// COMPLETE time to the thread's last record's time, a lower bound of the
// pending one's (a thread's times never decrease).
//
// The mark must be visible before the thread reads the clock, so a
// locked instruction or a fence goes between the two: on the hot paths
// the live table's shard lock, which they take anyway, elsewhere a fence
// (rec_time_before). The drain reads the clock, then fences, then the
// marks: a thread whose time can be older than the drain's mark has its
// mark seen.

static inline struct tstate *announce(void) {
	struct tstate *s = t_state;
	if (UNLIKELY(!s)) {
		int saved = errno;
		s = t_state = new_state();
		errno = saved;
		if (!s)
			return NULL;
	}
	__atomic_store_n(&s->pending, s->last_t + 1, __ATOMIC_RELAXED);
	return s;
}

// rec_release starts the record of a block's release (free, delete, the
// old block of a realloc): marks the event in flight, takes the block out
// of the live table and returns its size (-1: not there, or no table),
// and in *t the release's time, taken before the allocator is called.
// The shard's lock, or a fence without one, orders the mark before the
// time.
HIDDEN long rec_release(void *p, uint64_t *t) {
	struct tstate *s = announce();
	if (p) {
		t_busy++; // the shard lock (shim.h, t_busy)
		long size = live_del(p, clock_min(s), t);
		t_busy--;
		return size;
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*t = event_time();
	return -1;
}

HIDDEN uintptr_t *rec_pending_word(int i) {
	return i < __atomic_load_n(&nstates, __ATOMIC_ACQUIRE) ? &states[i]->pend : NULL;
}

HIDDEN uint64_t rec_time_before(void) {
	announce();
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return barrier_time();
}

// rec_reentered counts an event a signal handler made while it
// interrupted the tracer on this thread (shim.h, t_busy): not recorded.
HIDDEN void rec_reentered(void) {
	struct tstate *s = t_state;
	if (s)
		s->dropped++;
	__atomic_fetch_add(&dropped_total, 1, __ATOMIC_RELAXED);
}

HIDDEN void rec_cancel(void) {
	if (t_state)
		__atomic_store_n(&t_state->pending, 0, __ATOMIC_RELEASE);
}

// ---- events -------------------------------------------------------------------

// A captured stack: its frames, or the id the unwinder remembered for it.
struct stack {
	int n;
	uint32_t known;
	struct stack_memo memo;
	uintptr_t pcs[MAX_DEPTH];
};

// capture unwinds the calling thread's stack from the hook's frame (NULL:
// the unwinder finds it). The CFI and frame-pointer walks make no
// allocator call of their own: one entered meanwhile is a signal
// handler's, passed through and counted (t_busy). libunwind's own
// allocations are not the program's (t_guard), but for ld.so's TLS blocks
// (hooks.c, tracer_tls); a handler's among them is told apart by its
// return address (t_unwinding).
HIDDEN TLS uint8_t t_unwinding;
static inline void capture(struct stack *st, const void *frame) {
	// In this order, a handler's call finds t_busy without t_guard, or
	// t_unwinding, at every instruction: counted either way.
	if (UNLIKELY(unwind_allocates)) {
		t_unwinding++;
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		t_guard++;
	}
	st->n = unwind_capture(st->pcs, cfg.depth, &st->memo, &st->known, frame);
	if (UNLIKELY(unwind_allocates)) {
		t_guard--;
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		t_unwinding--;
	}
}

// forget_stacks empties a thread's record of the stacks defined in its
// stream, and the unwinder's memos of them.
static void forget_stacks(struct tstate *s) {
	memset(s->sc_key, 0, sizeof s->sc_key);
	unwind_forget();
}

// put_captured writes what a captured stack needs (a definition, or
// nothing) and returns its id.
static inline uint8_t *put_captured(struct tstate *s, uint8_t *p, struct stack *st, uint64_t *id) {
	if (st->known) {
		*id = st->known;
		return p;
	}
	p = put_stack(s, p, st->pcs, st->n, id);
	if (st->memo.slot && *id <= UINT32_MAX)
		*st->memo.slot = (uint64_t)st->memo.tag << 32 | *id;
	return p;
}

// An event's bookkeeping (the live table, the unwinder, a new buffer)
// must not change the program's errno: SAVE_ERRNO first thing, and
// END_EVENT puts it back. The thread's errno is found once and kept in
// our own TLS: a load instead of a call into libc per event. In between
// the thread is busy (shim.h, t_busy): its stack walk, live-table locks
// and record are not for a signal handler to enter.
static TLS int *t_errno;

static inline int *errno_ptr(void) {
	int *e = t_errno;
	if (UNLIKELY(!e))
		e = t_errno = &errno;
	return e;
}

#define SAVE_ERRNO()                                                          \
	int *errno_p_ = errno_ptr();                                          \
	int saved_errno_ = *errno_p_;                                         \
	t_busy++

#define BEGIN_EVENT(size)                                                     \
	struct tstate *s = NULL;                                              \
	uint8_t *p = reserve(&s, (size));                                     \
	if (UNLIKELY(!p))                                                     \
		goto out_;

#define END_EVENT()                                                           \
	commit(s, p);                                                         \
	out_:                                                                 \
	if (s)                                                                \
		__atomic_store_n(&s->pending, 0, __ATOMIC_RELEASE);           \
	t_busy--;                                                             \
	*errno_p_ = saved_errno_;

static inline uint8_t *put_time(struct tstate *s, uint8_t *p, uint64_t t) {
	// Times of frees are taken before the call, so they can precede the
	// previous record of this thread by a little; clamp, the order of a
	// thread's own records is their order in the stream.
	uint64_t d = t > s->last_t ? t - s->last_t : 0;
	s->last_t += d;
	return put_varint(p, d);
}

// Addresses go into the buffer as they are, 8 bytes: one store here, one
// load in the drain, which writes them in the file's form (addr_form) or
// as back-references.
static inline uint8_t *put_addr(uint8_t *p, uint64_t a) {
	memcpy(p, &a, 8);
	return p + 8;
}

HIDDEN void rec_alloc(int op, void *ptr, size_t size, const void *frame) {
	SAVE_ERRNO();
	struct stack st;
	uint64_t t;
	announce();
	// The block's table slot is fetched from memory while the stack is
	// walked, not after.
	if (live_enabled)
		live_prefetch(ptr);
	if (frame)
		capture(&st, frame);
	// The shard's lock orders the mark before the time.
	t = live_add(ptr, size, clock_min(t_state), t_state ? &t_state->pend : NULL);
	BEGIN_EVENT(RECORD_MAX);
	uint64_t id = 0;
	if (frame)
		p = put_captured(s, p, &st, &id);
	*p++ = (uint8_t)(REC_EVENT + op);
	p = put_time(s, p, t);
	p = put_addr(p, (uint64_t)ptr);
	p = put_varint(p, size);
	p = put_varint(p, id);
	END_EVENT();
}

// rec_free records a heap block's release (free, delete) whole before
// the allocator is called: its time, its removal from the live table
// (deferred to the thread's next free: live_free) and its record. The
// record is committed before the block can be handed out again. A free
// of a block glibc or libstdc++ made before the tracer started, during
// their exit-time release (in_freeres), is not the program's, nor an
// invalid free: it is not recorded.
HIDDEN void rec_free(int op, void *ptr) {
	SAVE_ERRNO();
	uint64_t t;
	long size = 0;
	struct tstate *s0;
	if (LIKELY(ptr && live_enabled && !in_freeres) && (s0 = announce()) != NULL)
		live_free(ptr, clock_min(s0), &t, &s0->pend);
	else
		size = rec_release(ptr, &t);
	if (UNLIKELY(size < 0 && op == OP_FREE && live_enabled && in_freeres)) {
		rec_cancel();
		t_busy--;
		*errno_p_ = saved_errno_;
		return;
	}
	BEGIN_EVENT(32);
	*p++ = (uint8_t)(REC_EVENT + op);
	p = put_time(s, p, t);
	p = put_addr(p, (uint64_t)ptr);
	END_EVENT();
}

HIDDEN void rec_realloc(int op, void *old, void *ptr, size_t size, uint64_t t_before, const void *frame) {
	SAVE_ERRNO();
	struct stack st; // the hooks announced this event before taking t_before
	if (!ptr)
		frame = NULL;
	if (frame)
		capture(&st, frame);
	// The new block's time: after the old one's release.
	uint64_t t1 = t_before;
	if (ptr) {
		uint64_t m = clock_min(t_state);
		t1 = live_add(ptr, size, m > t1 ? m : t1, t_state ? &t_state->pend : NULL);
	}
	BEGIN_EVENT(RECORD_MAX);
	uint64_t id = 0;
	if (frame)
		p = put_captured(s, p, &st, &id);
	*p++ = (uint8_t)(REC_EVENT + op);
	p = put_time(s, p, t_before);
	p = put_time(s, p, t1);
	p = put_addr(p, (uint64_t)old);
	p = put_addr(p, (uint64_t)ptr);
	p = put_varint(p, size);
	p = put_varint(p, id);
	END_EVENT();
}

HIDDEN void rec_mmap(void *ptr, size_t len, int prot, int flags) {
	SAVE_ERRNO();
	struct stack st;
	announce();
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	capture(&st, NULL);
	BEGIN_EVENT(RECORD_MAX);
	uint64_t id;
	p = put_captured(s, p, &st, &id);
	*p++ = (uint8_t)(REC_EVENT + OP_MMAP);
	p = put_time(s, p, barrier_time());
	p = put_addr(p, (uint64_t)ptr);
	p = put_varint(p, len);
	int mf = (flags & MAP_ANONYMOUS) ? MF_ANON : MF_FILE;
	if (flags & MAP_SHARED)
		mf |= MF_SHARED;
	p = put_varint(p, (uint64_t)mf | ((uint64_t)prot << 8));
	p = put_varint(p, id);
	END_EVENT();
}

HIDDEN void rec_munmap(void *ptr, size_t len, uint64_t t_before) {
	SAVE_ERRNO();
	BEGIN_EVENT(40);
	*p++ = (uint8_t)(REC_EVENT + OP_MUNMAP);
	p = put_time(s, p, t_before);
	p = put_addr(p, (uint64_t)ptr);
	p = put_varint(p, len);
	END_EVENT();
}

HIDDEN void rec_mremap(void *old, size_t oldlen, void *ptr, size_t len, uint64_t t_before) {
	SAVE_ERRNO();
	struct stack st;
	capture(&st, NULL);
	BEGIN_EVENT(RECORD_MAX);
	uint64_t id;
	p = put_captured(s, p, &st, &id);
	*p++ = (uint8_t)(REC_EVENT + OP_MREMAP);
	uint64_t t1 = barrier_time();
	p = put_time(s, p, t_before);
	p = put_time(s, p, t1);
	p = put_addr(p, (uint64_t)old);
	p = put_varint(p, oldlen);
	p = put_addr(p, (uint64_t)ptr);
	p = put_varint(p, len);
	p = put_varint(p, id);
	END_EVENT();
}

// ---- process records ----------------------------------------------------------

static pthread_mutex_t proc_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *proc_buf;
static size_t proc_len, proc_cap;

HIDDEN void proc_lock(void) { pthread_mutex_lock(&proc_mu); }
HIDDEN void proc_unlock(void) { pthread_mutex_unlock(&proc_mu); }

HIDDEN void proc_put(const void *p, size_t n) {
	if (proc_len + n > proc_cap) {
		size_t cap = proc_cap ? proc_cap * 2 : 16384;
		while (cap < proc_len + n)
			cap *= 2;
		uint8_t *nb = map(cap);
		if (!nb)
			return;
		if (proc_buf) {
			memcpy(nb, proc_buf, proc_len);
			live_unmap(proc_buf, proc_cap);
		}
		proc_buf = nb;
		proc_cap = cap;
	}
	memcpy(proc_buf + proc_len, p, n);
	proc_len += n;
}

HIDDEN void proc_varint(uint64_t v) {
	uint8_t tmp[10];
	proc_put(tmp, (size_t)(put_varint(tmp, v) - tmp));
}

HIDDEN void proc_string(const char *s) {
	size_t n = strlen(s);
	proc_varint(n);
	proc_put(s, n);
}

HIDDEN void proc_note(const char *fmt, ...) {
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	proc_lock();
	uint8_t tag = REC_NOTE;
	proc_put(&tag, 1);
	proc_varint(barrier_time());
	proc_string(msg);
	proc_unlock();
	if (cfg.verbose)
		logmsg("%s", msg);
}

// ---- draining -------------------------------------------------------------------

static pthread_mutex_t drain_mu = PTHREAD_MUTEX_INITIALIZER;

// An output area of the drain, grown as needed. `out` is the frame
// payload. A split drain (the Go writer's) puts the thread pieces'
// address and size columns in side areas of their own instead, for the
// writer to compress apart (docs/trace-format.md, "Split frames").
struct obuf {
	uint8_t *p;
	size_t len, cap;
};
static struct obuf out, side[2];
#define OBUF_SMALL (256u << 10)
enum { SIDE_ADDR, SIDE_SIZE };
static int split;

static void ob_reserve(struct obuf *o, size_t n) {
	if (o->len + n <= o->cap)
		return;
	// First enough for a small process's frames, in small pages; once
	// that is not enough, as much as the largest frame takes (MAX_DRAIN
	// buffers), in huge pages, so that growing again, which copies, is
	// for a final drain of a long queue only.
	size_t cap = o->cap ? (size_t)MAX_DRAIN * BUF_SIZE + (1u << 20) : OBUF_SMALL;
	if (cap <= o->cap)
		cap = o->cap * 2;
	while (cap < o->len + n)
		cap *= 2;
	uint8_t *nb = map(cap);
	if (!nb)
		return; // cannot happen short of exhausting memory; the piece is lost
	if (o->p) {
		memcpy(nb, o->p, o->len);
		live_unmap(o->p, o->cap);
	}
	o->p = nb;
	o->cap = cap;
}

static void ob_put(struct obuf *o, const uint8_t *p, size_t n) {
	ob_reserve(o, n);
	if (o->len + n > o->cap)
		return;
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

static void out_piece_hdr(uint32_t slot, size_t n) {
	ob_reserve(&out, n + 20);
	if (out.len + n + 20 > out.cap)
		return;
	uint8_t *w = out.p + out.len;
	w = put_varint(w, slot);
	w = put_varint(w, n);
	out.len = (size_t)(w - out.p);
}

static void out_append(const uint8_t *p, size_t n) { ob_put(&out, p, n); }

static void out_piece(uint32_t slot, const uint8_t *p, size_t n) {
	out_piece_hdr(slot, n);
	out_append(p, n);
}

// ---- columns -------------------------------------------------------------------
// A thread's records are written to the file split into four columns:
// record tags with everything not listed below, event times, event
// addresses, event sizes. The compressors find the repeats of each kind
// of field among its own kind (a free's address repeats its
// allocation's; sizes and times are small numbers of a few bytes'
// alphabet) far better than
// in the interleaved stream: about a third smaller traces, and less for
// the compressor to chew. The hot path writes records interleaved, as
// they happen; the drain transposes each piece. A split drain (the Go
// writer's) also keeps the pieces' address and size columns apart from
// the rest: the writer Huffman-codes those two, zstd takes the rest.

enum { COL_REC, COL_TIME, COL_ADDR, COL_SIZE, NCOLS };

static uint8_t *col_buf[NCOLS];
static size_t col_cap;

// Columns are mapped this much larger than a piece, so a varint can be
// copied as one 8-byte word whatever its length.
#define COL_SLACK 16

static inline const uint8_t *copy_varint(const uint8_t *p, const uint8_t *end, uint8_t **w) {
	if (LIKELY(end - p >= 8)) {
		uint64_t x;
		memcpy(&x, p, 8);
		// Most fields are one byte. Taken as a guess, the branch lets the
		// next field's position be known before this one is loaded: the
		// transposition is otherwise one long chain of loads, a field's
		// position waiting on the lengths of all before it.
		if (LIKELY(!(x & 0x80))) {
			**w = (uint8_t)x;
			*w += 1;
			return p + 1;
		}
		uint64_t last = ~x & 0x8080808080808080u; // bytes that end a varint
		if (LIKELY(last)) {
			unsigned n = ((unsigned)__builtin_ctzll(last) >> 3) + 1;
			memcpy(*w, &x, 8);
			*w += n;
			return p + n;
		}
	}
	uint8_t *o = *w;
	while (p < end && (*p & 0x80))
		*o++ = *p++;
	if (p < end)
		*o++ = *p++;
	*w = o;
	return p;
}

// Back-references. Most frees release a block the same thread allocated
// shortly before, and most allocations reuse a block the same thread
// freed shortly before (glibc's per-thread caches are last in, first
// out). The drain numbers each thread's heap allocations and its frees,
// and writes a released address as "the block allocated d allocations
// ago", a new block's address as "the block freed d frees ago" (d <=
// BR_RING): a byte or two instead of seven, which compresses better
// still. The decoder keeps the two rings of the latest BR_RING addresses
// per slot; this side needs only a table of where it last saw an address:
// a slot holding the address itself with an ordinal at most BR_RING back
// is exactly the decoder's ring holding it there. (Keeping the ring here
// too, to check a hashed ordinal against, was a dependent load and a
// store more per address.) The table has twice the ring's slots: with as
// many, a fifth of the frees of blocks a thousand allocations old found
// theirs taken by another address.

static inline uint64_t get_varint(const uint8_t **pp, const uint8_t *end) {
	const uint8_t *p = *pp;
	uint64_t v = 0;
	for (int sh = 0; p < end && sh < 64; sh += 7) {
		uint8_t b = *p++;
		v |= (uint64_t)(b & 0x7f) << sh;
		if (!(b & 0x80))
			break;
	}
	*pp = p;
	return v;
}

// addr_form is an address as the file has it: written whole, not as a
// delta (random, deltas compress worse). Allocators return 16-byte
// aligned addresses: those lose their four zero bits. The low bits of
// the value say which form follows.
static inline uint64_t addr_form(uint64_t a) { return (a & 15) ? (a << 1) | 1 : (a >> 4) << 2; }

// get_addr reads an address put_addr wrote (0 past the end: a corrupt
// piece, which cannot happen).
static inline uint64_t get_addr(const uint8_t **pp, const uint8_t *end) {
	uint64_t a = 0;
	if (LIKELY(end - *pp >= 8))
		memcpy(&a, *pp, 8);
	*pp += 8;
	return a;
}
static inline uint32_t br_slot(uint64_t a) { return (uint32_t)((a >> 4) * 0x9e3779b97f4a7c15u >> (64 - BR_HASH_BITS)); }

// br_ref returns the value to write for address a: a reference into
// `from` when it holds the address, else its form. Then a is noted in
// `to`.
static inline uint64_t br_ref(struct backrefs *from, struct backrefs *to, uint64_t a) {
	uint64_t out = addr_form(a);
	if (!a)
		return out;
	if (LIKELY(!(a & 15) && !(a >> 48))) {
		uint32_t h = br_slot(a);
		uint64_t e = from->hash[h];
		uint32_t d = (uint32_t)(from->n - e) & BR_ORD_MASK;
		if (e >> BR_ORD_BITS == a >> 4 && d - 1 < BR_RING && d <= from->n)
			out = ((uint64_t)d << 2) | 2;
		to->hash[h] = (a >> 4) << BR_ORD_BITS | (to->n & BR_ORD_MASK);
	}
	// Cleared every 2^20 addresses, no slot is that old: its ordinal's
	// low bits tell its distance.
	if (UNLIKELY(!(++to->n & BR_ORD_MASK)))
		memset(to->hash, 0, sizeof to->hash);
	return out;
}

// out_columns writes one thread piece as columns: uvarint lengths of the
// first three, then the four columns. It leaves the thread's
// back-reference counts from before the piece in undo, for br_undo.
static void out_columns(struct tstate *s, const uint8_t *p, size_t n, uint64_t undo[2]) {
	undo[0] = s->br[0].n;
	undo[1] = s->br[1].n;
	// A column takes at most the piece's bytes, but for addresses: 8 in
	// the buffer can take 10 as varints.
	size_t need = n + n / 4;
	if (col_cap < need) {
		size_t cap = BUF_SIZE;
		while (cap < need)
			cap *= 2;
		for (int c = 0; c < NCOLS; c++) {
			if (col_buf[c])
				live_unmap(col_buf[c], col_cap + COL_SLACK);
			col_buf[c] = map(cap + COL_SLACK);
			if (!col_buf[c]) {
				for (int k = 0; k < c; k++)
					live_unmap(col_buf[k], cap + COL_SLACK);
				for (int k = 0; k < NCOLS; k++)
					col_buf[k] = NULL;
				col_cap = 0;
				return; // out of memory: the piece is lost
			}
		}
		col_cap = cap;
	}
	// The column pointers are locals, not an array: a byte stored
	// through one may alias anything in memory, and would make the
	// compiler reload an array of them after every store.
	uint8_t *wr = col_buf[COL_REC], *wt = col_buf[COL_TIME], *wa = col_buf[COL_ADDR], *ws = col_buf[COL_SIZE];
	const uint8_t *end = p + n;
	while (p < end) {
		uint8_t tag = *p++;
		*wr++ = tag;
		if (tag == REC_RESET) {
			p = copy_varint(p, end, &wr);
			p = copy_varint(p, end, &wr);
		} else if (tag == REC_STACK) {
			p = copy_varint(p, end, &wr);
			const uint8_t *q = p;
			uint64_t depth = get_varint(&p, end);
			memcpy(wr, q, (size_t)(p - q));
			wr += p - q;
			for (uint64_t k = 0; k < depth && p < end; k++)
				p = copy_varint(p, end, &wr);
		} else if (tag == REC_DROPPED) {
			p = copy_varint(p, end, &wr);
		} else {
			// Each op's fields in record order: T time, A address of a
			// new heap block, F address of a released one, a any other
			// address, S size, R record column (stack id, mmap flags).
#define T p = copy_varint(p, end, &wt);
#define a wa = put_varint(wa, addr_form(get_addr(&p, end)));
#define S p = copy_varint(p, end, &ws);
#define R p = copy_varint(p, end, &wr);
#define A wa = put_varint(wa, br_ref(&s->br[BR_FREES], &s->br[BR_ALLOCS], get_addr(&p, end)));
#define F wa = put_varint(wa, br_ref(&s->br[BR_ALLOCS], &s->br[BR_FREES], get_addr(&p, end)));
			switch (tag - REC_EVENT) {
			case OP_FREE:
			case OP_DELETE:
			case OP_DELETE_ARRAY:
				T F break;
			case OP_REALLOC:
			case OP_REALLOCARRAY:
				T T F A S R break;
			case OP_MMAP:
				T a S R R break;
			case OP_MUNMAP:
				T a S break;
			case OP_MREMAP:
				T T a S a S R break;
			default:
				T A S R break;
			}
#undef T
#undef a
#undef S
#undef R
#undef A
#undef F
		}
	}
	size_t len[NCOLS] = {(size_t)(wr - col_buf[COL_REC]), (size_t)(wt - col_buf[COL_TIME]), (size_t)(wa - col_buf[COL_ADDR]),
			     (size_t)(ws - col_buf[COL_SIZE])};
	size_t total = 0;
	uint8_t hdr[3 * 10], *h = hdr;
	for (int c = 0; c < NCOLS; c++) {
		total += len[c];
		if (c < NCOLS - 1)
			h = put_varint(h, len[c]);
	}
	out_piece_hdr(s->slot, (size_t)(h - hdr) + total);
	out_append(hdr, (size_t)(h - hdr));
	out_append(col_buf[COL_REC], len[COL_REC]);
	out_append(col_buf[COL_TIME], len[COL_TIME]);
	ob_put(split ? &side[SIDE_ADDR] : &out, col_buf[COL_ADDR], len[COL_ADDR]);
	ob_put(split ? &side[SIDE_SIZE] : &out, col_buf[COL_SIZE], len[COL_SIZE]);
}

// br_undo forgets what a piece taken back added to the tables: the next
// frame transposes it again from its start. The slots it wrote stand for
// ordinals the decoder has not seen; cleared, they can match no address
// until rewritten.
static void br_undo(struct tstate *s, const uint64_t undo[2]) {
	for (int k = 0; k < 2; k++) {
		struct backrefs *b = &s->br[k];
		uint32_t from = (uint32_t)undo[k], n = (uint32_t)(b->n - undo[k]);
		for (unsigned i = 0; i < BR_HASH; i++)
			if ((((uint32_t)b->hash[i] - from) & BR_ORD_MASK) < n)
				b->hash[i] = 0;
		b->n = undo[k];
	}
}

static int thread_gone(pid_t tid) {
	return syscall(SYS_tgkill, leak_pid, tid, 0) != 0 && errno == ESRCH;
}

HIDDEN void drain_collect(int final, int split_cols, struct drained *res) {
	pthread_mutex_lock(&drain_mu);
	split = split_cols;
	out.len = side[SIDE_ADDR].len = side[SIDE_SIZE].len = 0;

	// Every event committed before this moment is in this frame or an
	// earlier one (or held back with its thread's queued buffers, which the
	// next frame writes first): the decoder orders events across threads
	// with these marks. The mark is the clock's reading: an event not yet
	// marked in flight reads the clock later, and its time is at least
	// that reading. (Not a barrier time: one ahead of the clock could pass
	// an event whose lower bound, read before its lock, is older.) The
	// marks are read after the clock (rdtsc, behind the precise clock, is
	// not ordered by a plain load; lfence completes it first).
	uint64_t mark_time = clock_now();
	__builtin_ia32_lfence();
	uint64_t complete = mark_time;

	// At most MAX_DRAIN buffers a frame keeps frames, and the decoder's
	// window, small; the rest waits in the queue, in order.
	pthread_mutex_lock(&pool_mu);
	struct buf *full = queue_head, *last = NULL;
	int taken = 0;
	for (struct buf *b = queue_head; b && (taken < MAX_DRAIN || final); b = b->next) {
		last = b;
		taken++;
	}
	if (last) {
		queue_head = last->next;
		if (!queue_head)
			queue_tail = NULL;
		last->next = NULL;
		queued -= taken;
	} else {
		full = NULL;
	}
	int more = queue_head != NULL;
	pthread_mutex_unlock(&pool_mu);
	if (more && !leak_c_writer)
		wake_writer();

	proc_lock();
	uint8_t mark[12];
	mark[0] = REC_FRAME;
	size_t ml = (size_t)(put_varint(mark + 1, mark_time) - mark);
	out_piece_hdr(0, proc_len + ml);
	out_append(mark, ml);
	out_append(proc_buf, proc_len);
	proc_len = 0;
	proc_unlock();

	while (full) {
		struct buf *b = full;
		full = b->next;
		uint64_t undo[2];
		if (b->end > b->start)
			out_columns(b->owner, b->data + b->start, b->end - b->start, undo);
		b->owner->written++;
		pthread_mutex_lock(&pool_mu);
		put_free(b);
		pthread_mutex_unlock(&pool_mu);
	}

	int n = __atomic_load_n(&nstates, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		struct tstate *s = states[i];
		if (!__atomic_load_n(&s->in_use, __ATOMIC_ACQUIRE))
			continue;
		// Before `committed`: a pending flag seen cleared means its
		// record is committed and copied below.
		uint64_t pend = __atomic_load_n(&s->pending, __ATOMIC_ACQUIRE);
		if (pend && pend - 1 < complete)
			complete = pend - 1;
		struct buf *b = __atomic_load_n(&s->cur, __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->handed, __ATOMIC_ACQUIRE) != s->written)
			continue; // its queued buffers go first, next time
		if (!b)
			continue;
		uint32_t d = __atomic_load_n(&b->drained, __ATOMIC_ACQUIRE);
		uint32_t c = __atomic_load_n(&b->committed, __ATOMIC_ACQUIRE);
		int claimed = d == CLAIMED;
		if (!claimed && c > d) {
			size_t mark[3] = {out.len, side[SIDE_ADDR].len, side[SIDE_SIZE].len};
			uint64_t undo[2];
			out_columns(s, b->data + d, c - d, undo);
			if (!__atomic_compare_exchange_n(&b->drained, &d, c, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
				// The owner claimed it meanwhile: it hands those bytes
				// off, and the next frame transposes them again.
				out.len = mark[0];
				side[SIDE_ADDR].len = mark[1];
				side[SIDE_SIZE].len = mark[2];
				br_undo(s, undo);
				claimed = 1;
			}
		}
		// A claimed buffer is on its way to the queue, maybe not there
		// yet when the queue is looked at below: its events come later.
		if (claimed && b->t_start < complete)
			complete = b->t_start;
		// A thread that stays quiet may have exited: free its slot once
		// the kernel says it is gone and everything it wrote is out.
		if (c == s->seen_commit && !final && !leak_c_writer) {
			if (++s->idle_checks >= 10 && s->tid != (pid_t)syscall(SYS_gettid) && thread_gone(s->tid)) {
				uint32_t d2 = __atomic_load_n(&b->drained, __ATOMIC_ACQUIRE);
				if (d2 == c) {
					pthread_mutex_lock(&pool_mu);
					s->cur = NULL;
					put_free(b);
					__atomic_store_n(&s->in_use, 0, __ATOMIC_RELEASE);
					pthread_mutex_unlock(&pool_mu);
				}
			}
		} else {
			s->idle_checks = 0;
		}
		s->seen_commit = c;
	}
	// Buffers still queued hold events the next frames bring: the decoder
	// may only hand on events older than the oldest of them.
	pthread_mutex_lock(&pool_mu);
	for (struct buf *b = queue_head; b; b = b->next)
		if (b->t_start < complete)
			complete = b->t_start;
	pthread_mutex_unlock(&pool_mu);
	uint8_t rec[12];
	rec[0] = REC_COMPLETE;
	size_t rl = (size_t)(put_varint(rec + 1, complete) - rec);
	out_piece(0, rec, rl);

	*res = (struct drained){out.p, out.len, side[SIDE_ADDR].p, side[SIDE_ADDR].len, side[SIDE_SIZE].p, side[SIDE_SIZE].len};
	pthread_mutex_unlock(&drain_mu);
}

HIDDEN uint64_t drain_dropped_total(void) { return __atomic_load_n(&dropped_total, __ATOMIC_RELAXED); }

// ---- fork -------------------------------------------------------------------------

HIDDEN void rec_atfork_prepare(void) {
	pthread_mutex_lock(&drain_mu);
	pthread_mutex_lock(&pool_mu);
	pthread_mutex_lock(&proc_mu);
}

HIDDEN void rec_atfork_parent(void) {
	pthread_mutex_unlock(&proc_mu);
	pthread_mutex_unlock(&pool_mu);
	pthread_mutex_unlock(&drain_mu);
}

// In the child only the forking thread exists, and everything buffered
// belongs to the parent's trace, which the parent writes: start empty.
HIDDEN void rec_after_fork_child(void) {
	__atomic_store_n(&clock_ticking, 0, __ATOMIC_RELAXED); // the ticker stayed in the parent
	pthread_mutex_init(&proc_mu, NULL);
	pthread_mutex_init(&pool_mu, NULL);
	pthread_mutex_init(&drain_mu, NULL);
	proc_len = 0;
	queue_head = queue_tail = NULL;
	queued = 0;
	struct tstate *self = t_state;
	for (int i = 0; i < nstates; i++) {
		struct tstate *s = states[i];
		if (s->cur)
			put_free(s->cur);
		s->cur = NULL;
		s->in_use = 0;
		// The child's trace starts afresh, its decoder's rings empty.
		memset(s->br, 0, sizeof s->br);
	}
	t_state = NULL;
	if (self) {
		// Keep this thread's slot but forget the parent's stack ids.
		self->in_use = 1;
		forget_stacks(self);
		self->tid = (pid_t)syscall(SYS_gettid);
		self->handed = self->written = 0;
		self->dropped = 0;
		t_state = self;
	}
	dropped_total = 0;
}

// rec_thread_handoff hands the calling thread's buffer off, so that it is
// written before an exec or exit.
HIDDEN void rec_thread_handoff(void) {
	if (t_state)
		queue_cur(t_state);
}

HIDDEN void wake_writer_impl(void);
static void wake_writer(void) { wake_writer_impl(); }
