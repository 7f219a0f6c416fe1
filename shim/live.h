// The live-memory bookkeeping the reachability scan works from (live.c)
// and the scan itself (scan.c).
#ifndef LIBLEAK_LIVE_H
#define LIBLEAK_LIVE_H

#include <pthread.h>

#include "shim.h"

#define MAX_KNOWN_THREADS 4096

// A live heap block is one word in the table: its address over 8 in the
// high 45 bits (user addresses have at most 48) and its size in the low
// 19. LT_ESC there means the size is kept whole on the side.
#define LT_SZ_BITS 19
#define LT_ESC ((1u << LT_SZ_BITS) - 1)
#define LT_ADDR_LIMIT ((uintptr_t)1 << 48)

struct lt_big {
	uintptr_t addr;
	size_t size;
};

struct region {
	uintptr_t start, end;
	int prot, flags; // as passed to mmap
};

struct thread_rec {
	pid_t tid;
	uintptr_t lo, hi; // the stack, as pthread_getattr_np tells it
	uintptr_t tp;     // the thread descriptor (pthread_self), at the stack's top
};

HIDDEN extern int live_enabled;
HIDDEN extern uint64_t live_lost;
HIDDEN extern pthread_mutex_t regions_mu;
HIDDEN extern struct thread_rec threads_known[MAX_KNOWN_THREADS];
HIDDEN extern int nthreads_known;

// live_add, live_del and live_free take the event's time under the
// block's shard lock (record.c, "the clock"), not before t_min; without
// the table (LEAK_SCAN=0) live_add and live_del do only that. live_free
// defers the block's removal to the thread's next free; *pend is the
// thread's deferred block (live.c, "Deferred releases").
HIDDEN uint64_t live_add(void *p, size_t size, uint64_t t_min, uintptr_t *pend);
HIDDEN long live_del(void *p, uint64_t t_min, uint64_t *t);
HIDDEN void live_free(void *p, uint64_t t_min, uint64_t *t, uintptr_t *pend);
// rec_pending_word gives thread state i's deferred block (record.c), or
// NULL past the last state.
HIDDEN uintptr_t *rec_pending_word(int i);
HIDDEN uint64_t live_clock_max(void);
HIDDEN void live_prefetch(void *p);
HIDDEN extern int in_freeres;
HIDDEN void live_map_add(void *p, size_t len, int prot, int flags);
HIDDEN void live_map_del(void *p, size_t len);
HIDDEN void tracer_region_add(void *p, size_t len);
HIDDEN void tracer_region_del(void *p, size_t len);
HIDDEN void live_thread_start(uintptr_t lo, uintptr_t hi, uintptr_t tp);
HIDDEN int live_other_threads(void);
HIDDEN void live_after_fork(void);
HIDDEN size_t read_task_file(pid_t tid, const char *name, char *buf, size_t cap);
HIDDEN int thread_runs(pid_t tid);
// Memory of the tracer's own, never scanned; in huge pages from 2 MiB.
HIDDEN void *live_map(size_t n);
HIDDEN void live_unmap(void *p, size_t n);

HIDDEN size_t live_freeze(void);
HIDDEN void live_thaw(void);
HIDDEN int live_shard(unsigned i, const uint64_t **tab, size_t *cap);
HIDDEN size_t live_big_size(unsigned i, uintptr_t a);

static inline uint64_t lt_pack(uintptr_t a, size_t n) {
	return (uint64_t)(a >> 3) << LT_SZ_BITS | (n < LT_ESC ? n : LT_ESC);
}

static inline uintptr_t lt_addr(uint64_t e) { return (uintptr_t)(e >> LT_SZ_BITS) << 3; }

// lt_size is the size of a block in shard i's table slot e (while frozen).
static inline size_t lt_size(unsigned i, uint64_t e) {
	size_t n = e & LT_ESC;
	return n != LT_ESC ? n : live_big_size(i, lt_addr(e));
}
HIDDEN const struct region *live_maps(size_t *n);
HIDDEN const struct region *tracer_maps_get(size_t *n);
HIDDEN void live_lists_ranges(uintptr_t lo[2], uintptr_t hi[2]);
HIDDEN extern int scan_content_bytes;
// Where the exiting thread's stack scan starts: the frame of the hook or
// handler the program's exit went through, so the tracer's own deeper
// frames (stale words included) are not roots. The register save area
// just below that frame is included: the program's registers are there.
HIDDEN extern uintptr_t exit_scan_sp;
HIDDEN extern uintptr_t main_return_sp; // set once main has returned
#define EXIT_SCAN_HERE()                                                      \
	do {                                                                  \
		__builtin_unwind_init();                                      \
		exit_scan_sp = (uintptr_t)__builtin_frame_address(0) - 64;    \
	} while (0)

// scan.c: scan memory for pointers and record a verdict per unreachable
// block in the trace. Returns 0 when it could not run. last: the process
// ends after this scan (its arrays are left to the kernel).
HIDDEN int scan_run(int last);

#endif
