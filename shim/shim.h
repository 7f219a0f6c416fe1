// Shared declarations of the libleak shim's C side.
//
// Data flows: hooks.c (entry points) -> record.c (per-thread buffers,
// compact encoding) -> drain (record.c, called by the Go writer or, in a
// forked child, by C) -> writer.go (zstd and Huffman) or rawwrite in process.c.
#ifndef LIBLEAK_SHIM_H
#define LIBLEAK_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TLS __thread __attribute__((tls_model("initial-exec")))
#define HIDDEN __attribute__((visibility("hidden")))

// Trace format constants; docs/trace-format.md is the specification.
#define TRACE_MAGIC "LIBLEAK\n"
#define TRACE_VERSION 4
#define TIME_SHIFT 0 // event times are in ns (record.c, "the clock")

enum { ENC_RAW = 0, ENC_ZSTD = 1, ENC_SPLIT = 2 };

enum {
	REC_RESET = 0x01,
	REC_STACK = 0x02,
	REC_DROPPED = 0x03,
	REC_HEADER = 0x40,
	REC_MODULE = 0x41,
	REC_UNLOAD = 0x42,
	REC_END = 0x43,
	REC_EXEC = 0x44,
	REC_EXEC_FAILED = 0x45,
	REC_NOTE = 0x47,
	REC_FRAME = 0x48,
	REC_SCAN = 0x49,
	REC_COMPLETE = 0x4a,
	REC_EVENT = 0x20, // + op
};

// Ops: the values of analyzer/event.Op.
enum {
	OP_MALLOC = 1, OP_CALLOC, OP_REALLOC, OP_REALLOCARRAY, OP_FREE,
	OP_POSIX_MEMALIGN, OP_ALIGNED_ALLOC, OP_MEMALIGN, OP_VALLOC, OP_PVALLOC,
	OP_NEW, OP_NEW_ARRAY, OP_DELETE, OP_DELETE_ARRAY,
	OP_MMAP, OP_MUNMAP, OP_MREMAP,
};

// End reasons.
enum { END_EXIT = 1, END__EXIT = 2, END_SIGNAL = 3, END_EXEC = 4 };

// mmap flags recorded with an event.
enum { MF_ANON = 1, MF_SHARED = 2, MF_FILE = 4 };

// Settings read once at start.
struct settings {
	int off;
	int scan;    // keep the live table and scan at exit
	int content; // bytes of each lost block to record (LEAK_CONTENT)
	int freeres; // call __libc_freeres before the exit scan (LEAK_FREERES)
	int scan_signal;            // LEAK_SCAN_SIGNAL: scan when it arrives
	uint64_t scan_interval_ms;  // LEAK_SCAN_INTERVAL: scan this often
	int verbose;
	int depth;
	int unwind_fp;
	char out[4096];
};
HIDDEN extern struct settings cfg;

// Process state.
HIDDEN extern int leak_active;  // recording events
HIDDEN extern pid_t leak_pid;   // pid the trace file belongs to
HIDDEN extern int leak_c_writer; // 1 after fork: C writes raw frames itself
HIDDEN extern uintptr_t self_text_lo, self_text_hi;
HIDDEN extern uintptr_t ldso_text_lo, ldso_text_hi;

// Per-thread flags, one byte each in one word: a hook tests them all with
// one load. guard > 0 while the tracer itself runs on this thread; tracer
// is set for threads the tracer created (Go's); cxx inside a C++ operator,
// whose malloc is not recorded again (hooks.c). busy > 0 while the thread
// holds one of the tracer's locks, walks a stack or writes a record into
// its buffer: a hook entered then comes from a signal handler that
// interrupted the tracer (allocating there is not async-signal-safe, but
// programs do). It must not wait for that lock, held by the code it
// interrupted, nor write into that buffer: its call goes straight to the
// allocator and counts as a dropped event (rec_reentered). guard and busy
// nest a few levels at most.
union thread_flags {
	struct {
		uint8_t guard, tracer, cxx, busy;
	} f;
	uint32_t any;
};
HIDDEN extern TLS union thread_flags t_flags;
#define t_guard t_flags.f.guard
#define t_tracer t_flags.f.tracer
#define t_cxx t_flags.f.cxx
#define t_busy t_flags.f.busy

// hooks.c: real functions.
struct real_fns {
	void *(*malloc)(size_t);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void (*free)(void *);
	void *(*mmap)(void *, size_t, int, int, int, off_t);
	int (*munmap)(void *, size_t);
	void *(*mremap)(void *, size_t, size_t, int, ...);
	void *(*dlopen)(const char *, int);
	int (*dlclose)(void *);
	int (*pthread_create)(void *, const void *, void *(*)(void *), void *);
	pid_t (*fork)(void);
	void (*_exit)(int) __attribute__((noreturn));
	int (*sigaction)(int, const void *, void *);
	int (*execve)(const char *, char *const[], char *const[]);
};
HIDDEN extern struct real_fns real;
HIDDEN void hooks_init(void);
HIDDEN int program_threads_gone(void);

// record.c
// frame is the hook's frame (its __builtin_frame_address), where the
// stack walk starts; NULL records the block without a stack.
HIDDEN void rec_alloc(int op, void *p, size_t size, const void *frame);
HIDDEN void rec_free(int op, void *p); // before the allocator's call
// rec_time_before takes the time of an event whose record follows the
// allocator's call (munmap, mremap) and marks the thread's event in
// flight; rec_cancel clears that mark when no record follows.
// rec_release does the same for a heap block's release, and takes the
// block out of the live table (record.c).
HIDDEN uint64_t rec_time_before(void);
HIDDEN long rec_release(void *p, uint64_t *t);
HIDDEN void rec_cancel(void);
HIDDEN void rec_reentered(void);
HIDDEN void rec_realloc(int op, void *old, void *p, size_t size, uint64_t t_before, const void *frame);
HIDDEN void rec_mmap(void *p, size_t len, int prot, int flags);
HIDDEN void rec_munmap(void *p, size_t len, uint64_t t_before);
HIDDEN void rec_mremap(void *old, size_t oldlen, void *p, size_t len, uint64_t t_before);
HIDDEN uint64_t barrier_time(void); // for process records and mappings (record.c, "the clock")
HIDDEN extern uint64_t t_start_ns;

// coarse_units reads the clock event times are made of (record.c, "the
// clock"): the ticker's latest reading while it ticks, else the coarse
// clock. Loads, not an instruction the CPU may run early: read after a
// locked instruction, it is not older than that instruction.
HIDDEN extern uint64_t clock_tick;
HIDDEN extern int clock_ticking;
HIDDEN uint64_t clock_untick(void);
static inline uint64_t coarse_units(void) {
	if (LIKELY(__atomic_load_n(&clock_ticking, __ATOMIC_RELAXED)))
		return __atomic_load_n(&clock_tick, __ATOMIC_RELAXED);
	return clock_untick();
}
HIDDEN void clock_ticker_start(void);
HIDDEN void rec_thread_handoff(void);
HIDDEN void rec_after_fork_child(void);
HIDDEN void rec_atfork_prepare(void);
HIDDEN void rec_atfork_parent(void);

// Process records (header, modules, end...) go to one mutex-protected
// process buffer, written at the start of each frame.
HIDDEN void proc_lock(void);
HIDDEN void proc_unlock(void);
HIDDEN void proc_put(const void *p, size_t n); // caller holds proc_lock
HIDDEN void proc_varint(uint64_t v);
HIDDEN void proc_string(const char *s);
HIDDEN void proc_note(const char *fmt, ...);

// Drain: collect a frame payload; the data stays valid until the next
// drain call. Only one drainer runs at a time. A split drain leaves the
// thread pieces' address and size columns out of `payload`, in `addrs`
// and `sizes` (the pieces' lengths still count them); otherwise those
// two are empty.
struct drained {
	const uint8_t *payload;
	size_t payload_len;
	const uint8_t *addrs;
	size_t addrs_len;
	const uint8_t *sizes;
	size_t sizes_len;
};
HIDDEN void drain_collect(int final, int split, struct drained *d);
HIDDEN uint64_t drain_dropped_total(void);

// unwind.c
//
// A walk the CFI unwinder replays gave the same stack as the last time,
// so it can also remember the stack id the recorder gave that stack: the
// memo. unwind_capture sets *known to a remembered id (and leaves pcs
// unfilled), or sets *m to where the recorder stores the id it gives
// (m->slot NULL: nothing to remember it by). unwind_forget drops the
// calling thread's memos; the recorder calls it whenever it forgets which
// stacks it has defined in the thread's stream.
struct stack_memo {
	uint64_t *slot; // tag << 32 | id
	uint32_t tag;
};
HIDDEN void unwind_init(void);
HIDDEN int unwind_capture(uintptr_t *pcs, int max, struct stack_memo *m, uint32_t *known, const void *frame);
HIDDEN void unwind_forget(void);
HIDDEN extern int unwind_allocates; // libunwind allocates; the CFI and frame-pointer walks never do
// t_unwinding is up while libunwind walks this thread's stack: a call then
// whose return address is not libunwind's (nor ld.so's, for its TLS) is a
// signal handler's, and counts as dropped (hooks.c, recording).
HIDDEN extern TLS uint8_t t_unwinding;
HIDDEN extern uintptr_t unw_text_lo, unw_text_hi;
HIDDEN void text_of(const void *addr, uintptr_t *lo, uintptr_t *hi);
HIDDEN const char *unwind_name(void);

// modules.c
HIDDEN void modules_scan(void);

// process.c
HIDDEN void process_init(void);
HIDDEN int trace_open(void);
HIDDEN int trace_fd(void);
HIDDEN void trace_fd_move(int wanted);
HIDDEN void flush_and_wait(int final, int timeout_ms);
HIDDEN void finish(int reason, int status);
HIDDEN void logmsg(const char *fmt, ...);
HIDDEN void process_crash_handlers(void);
HIDDEN void exec_prepare(const char *path);
HIDDEN void exec_failed(void);
HIDDEN uint32_t crc32_ieee(uint32_t crc, const void *p, size_t n);
HIDDEN uint64_t mono_ms(void); // CLOCK_MONOTONIC, for durations

HIDDEN void modules_scan_if_due(void);

// The Go writer's side of the hand-shake (process.c). The writer loops:
// wait (takes the write lock), drain, compress, write_frame, done.
HIDDEN extern volatile int go_writer_alive;
uint32_t leak_writer_wait(int timeout_ms);
int leak_writer_final(void);
void leak_writer_drain(int final, struct drained *d);
void leak_write_frame(int enc, const void *p, size_t n, size_t raw_len, uint32_t crc);
void leak_writer_done(uint32_t gen);
void *leak_writer_area(size_t n);
int leak_scan_due(void);
HIDDEN void wake_writer_impl(void);

// cfi.c: the CFI and frame-pointer walks behind unwind_capture.
// unwind_invalidate drops every thread's cached unwind rules; call it
// after a module is unloaded.
HIDDEN int cfi_init(void);
HIDDEN int cfi_capture(uintptr_t *pcs, int max, struct stack_memo *m, uint32_t *known, const void *frame);
HIDDEN void cfi_forget(void);
HIDDEN int fp_capture(uintptr_t *pcs, int max, const void *frame);
HIDDEN void unwind_invalidate(void);

#endif
