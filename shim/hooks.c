// The hook table: every allocation entry point libleak interposes, the
// dlsym bootstrap, and the recursion guard. Each hook calls the real
// function and, unless the call comes from the tracer itself, records it.
//
// Three filters keep the tracer out of its own trace (the Go runtime's
// heap maps, the unwinder's and dlsym's allocations): t_guard is held while
// the tracer works on a thread, t_tracer marks threads the tracer created,
// and calls whose return address lies in our own text are passed through.
// A call made while t_busy is up comes from a signal handler that
// interrupted an event's bookkeeping: passed through and counted (shim.h).
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "live.h"

HIDDEN struct real_fns real;
HIDDEN TLS union thread_flags t_flags;

// dlsym can allocate before the real allocator is known (a failed lookup
// always does): serve those requests from a static arena whose blocks
// free and realloc recognise.
static char boot_arena[64 << 10] __attribute__((aligned(64)));
static size_t boot_used;

static int is_boot(const void *p) {
	return (const char *)p >= boot_arena && (const char *)p < boot_arena + sizeof boot_arena;
}

static void *boot_alloc(size_t n, size_t align) {
	if (align < 16)
		align = 16;
	size_t off = (__atomic_load_n(&boot_used, __ATOMIC_RELAXED) + 16 + align - 1) & ~(align - 1);
	if (off + n > sizeof boot_arena)
		return NULL;
	__atomic_store_n(&boot_used, off + n, __ATOMIC_RELAXED);
	((size_t *)(boot_arena + off))[-1] = n;
	return boot_arena + off;
}

static size_t boot_size(const void *p) { return ((const size_t *)p)[-1]; }

static void *(*real_reallocarray)(void *, size_t, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);
static size_t (*real_malloc_usable_size)(void *);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);
static int (*real_execv)(const char *, char *const[]);
static int (*real_execvp)(const char *, char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);
static int (*real_execveat)(int, const char *, char *const[], char *const[], int);
static void (*real__Exit)(int) __attribute__((noreturn));
static __sighandler_t (*real_signal)(int, __sighandler_t);
static int (*real_close)(int);
static int (*real_close_range)(unsigned, unsigned, int);
static void (*real_closefrom)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);

static void *next(const char *name) { return dlsym(RTLD_NEXT, name); }

// glibc ends the process when its last thread ends (main calls
// pthread_exit, then the last other thread returns): it counts the
// threads in __nptl_nthreads, which libthread_db reads too. Our own
// threads (the Go runtime's, the clock's ticker) never end, and would keep
// a finished program alive forever. They are taken off that count once
// created and put back if one ends, so the program's last thread ends the
// process as it does untraced. NULL where glibc does not export it.
static int *nptl_nthreads;

// Our count lags glibc's while one of our threads is being created: the
// program's last thread can end in between, see one still there, and not
// end the process. Taking our thread off then leaves none: program_gone
// is set, and the ticker ends the process (record.c), once no thread of
// the program is left running: the same count also reaches zero when the
// last thread is calling exit itself, still running its exit handlers.
static int program_gone;
#define MAX_TRACER_TIDS 256
static pid_t tracer_tids[MAX_TRACER_TIDS];
static int ntracer_tids;

static int is_tracer_tid(pid_t tid) {
	int n = __atomic_load_n(&ntracer_tids, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n && i < MAX_TRACER_TIDS; i++)
		if (__atomic_load_n(&tracer_tids[i], __ATOMIC_RELAXED) == tid)
			return 1;
	return 0;
}

HIDDEN int program_threads_gone(void) {
	if (!__atomic_load_n(&program_gone, __ATOMIC_ACQUIRE))
		return 0;
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return 0;
	int alive = 0;
	for (struct dirent *e; !alive && (e = readdir(d)) != NULL;) {
		pid_t tid = (pid_t)atoi(e->d_name);
		if (tid > 0 && !is_tracer_tid(tid) && thread_runs(tid))
			alive = 1;
	}
	closedir(d);
	return !alive;
}

HIDDEN void hooks_init(void) {
	static int busy;
	if (real.free || __atomic_exchange_n(&busy, 1, __ATOMIC_ACQ_REL))
		return;
	t_guard++;
	real.malloc = next("malloc");
	real.calloc = next("calloc");
	real.realloc = next("realloc");
	real_reallocarray = next("reallocarray");
	real_posix_memalign = next("posix_memalign");
	real_aligned_alloc = next("aligned_alloc");
	real_memalign = next("memalign");
	real_valloc = next("valloc");
	real_pvalloc = next("pvalloc");
	real_malloc_usable_size = next("malloc_usable_size");
	real.mmap = next("mmap");
	real_mmap64 = next("mmap64");
	real.munmap = next("munmap");
	real.mremap = next("mremap");
	real.dlopen = next("dlopen");
	real.dlclose = next("dlclose");
	real.pthread_create = next("pthread_create");
	real.fork = next("fork");
	real._exit = next("_exit");
	real__Exit = next("_Exit");
	real.sigaction = next("sigaction");
	real_signal = next("signal");
	real_close = next("close");
	real_close_range = next("close_range");
	real_closefrom = next("closefrom");
	real_dup = next("dup");
	real_dup2 = next("dup2");
	real_dup3 = next("dup3");
	nptl_nthreads = dlvsym(RTLD_DEFAULT, "__nptl_nthreads", "GLIBC_PRIVATE");
	real.execve = next("execve");
	real_execv = next("execv");
	real_execvp = next("execvp");
	real_execvpe = next("execvpe");
	real_fexecve = next("fexecve");
	real_execveat = next("execveat");
	__atomic_store_n(&real.free, (void (*)(void *))next("free"), __ATOMIC_RELEASE);
	t_guard--;
}

// The constructor makes the rest of the tracer ready: settings, the trace
// file, the module map, the Go writer.
__attribute__((constructor(101))) static void libleak_init(void) {
	hooks_init();
	process_init();
}

// recording tells whether this call should be recorded: not from the
// tracer itself, and only while tracing is on.
static inline int recording(void *ra) {
	if (LIKELY(leak_active) && !t_flags.any &&
	    (uintptr_t)ra - self_text_lo >= self_text_hi - self_text_lo)
		return 1;
	if (UNLIKELY(t_busy) && leak_active && !(t_guard | t_tracer | t_cxx))
		rec_reentered(); // a signal handler's call (shim.h, t_busy)
	else if (UNLIKELY(t_unwinding) && leak_active && !t_tracer &&
		 (uintptr_t)ra - unw_text_lo >= unw_text_hi - unw_text_lo &&
		 (uintptr_t)ra - ldso_text_lo >= ldso_text_hi - ldso_text_lo)
		rec_reentered(); // a signal handler's call while libunwind walks
	return 0;
}

#define RA __builtin_return_address(0)

// FRAME is the hook's own frame, where the stack walk starts: above it
// is the program's (record.c, capture).
#define FRAME __builtin_frame_address(0)

// ld.so allocates a thread's block of a dlopen'ed library's TLS on first
// use, and frees it when the thread ends. When that first use is the
// unwinder's, inside our guard, the allocation must still be recorded, or
// the program's later free of it looks invalid. It is recorded without a
// stack, which marks it as the tracer's.
static inline int tracer_tls(void *ra) {
	return UNLIKELY(t_guard == 1) && !t_tracer && leak_active &&
	       (uintptr_t)ra - ldso_text_lo < ldso_text_hi - ldso_text_lo;
}

// ---- the malloc family ----------------------------------------------------

void *malloc(size_t n) {
	if (UNLIKELY(!real.malloc)) {
		hooks_init();
		if (!real.malloc)
			return boot_alloc(n, 16);
	}
	if (!recording(RA)) {
		void *p = real.malloc(n);
		if (tracer_tls(RA) && p)
			rec_alloc(OP_MALLOC, p, n, NULL);
		return p;
	}
	void *p = real.malloc(n);
	if (LIKELY(p != NULL))
		rec_alloc(OP_MALLOC, p, n, FRAME);
	return p;
}

void *calloc(size_t n, size_t size) {
	if (UNLIKELY(!real.calloc)) {
		hooks_init();
		if (!real.calloc) {
			size_t total;
			if (__builtin_mul_overflow(n, size, &total))
				return NULL;
			return boot_alloc(total, 16); // the arena is zeroed
		}
	}
	if (!recording(RA)) {
		void *p = real.calloc(n, size);
		if (tracer_tls(RA) && p)
			rec_alloc(OP_CALLOC, p, n * size, NULL);
		return p;
	}
	void *p = real.calloc(n, size);
	if (LIKELY(p != NULL))
		rec_alloc(OP_CALLOC, p, n * size, FRAME);
	return p;
}

static void *boot_realloc(void *old, size_t n) {
	size_t have = boot_size(old);
	void *p = real.malloc ? real.malloc(n) : boot_alloc(n, 16);
	if (p)
		memcpy(p, old, have < n ? have : n);
	return p;
}

// rec_failed undoes a failed realloc's bookkeeping: the old block lives on.
static void rec_failed(void *old, long oldsize) {
	rec_cancel();
	if (oldsize >= 0)
		live_add(old, (size_t)oldsize, 0, NULL);
}

void *realloc(void *old, size_t n) {
	if (UNLIKELY(!real.realloc)) {
		hooks_init();
		if (!real.realloc)
			return old ? boot_realloc(old, n) : boot_alloc(n, 16);
	}
	if (UNLIKELY(old && is_boot(old)))
		return boot_realloc(old, n);
	if (!recording(RA)) {
		if (!tracer_tls(RA))
			return real.realloc(old, n);
		uint64_t t0;
		long oldsize = rec_release(old, &t0);
		void *p = real.realloc(old, n);
		if (p != NULL || (old != NULL && n == 0))
			rec_realloc(OP_REALLOC, old, p, n, t0, NULL);
		else
			rec_failed(old, oldsize);
		return p;
	}
	uint64_t t0;
	long oldsize = rec_release(old, &t0);
	void *p = real.realloc(old, n);
	// realloc(p, 0) frees p and returns NULL; a failed realloc keeps p.
	if (p != NULL || (old != NULL && n == 0))
		rec_realloc(OP_REALLOC, old, p, n, t0, FRAME);
	else
		rec_failed(old, oldsize);
	return p;
}

void *reallocarray(void *old, size_t n, size_t size) {
	size_t total;
	if (UNLIKELY(!real_reallocarray || (old && is_boot(old)))) {
		if (__builtin_mul_overflow(n, size, &total)) {
			errno = ENOMEM;
			return NULL;
		}
		return realloc(old, total);
	}
	if (!recording(RA))
		return real_reallocarray(old, n, size);
	uint64_t t0;
	long oldsize = rec_release(old, &t0);
	void *p = real_reallocarray(old, n, size);
	if (p != NULL || (old != NULL && n * size == 0))
		rec_realloc(OP_REALLOCARRAY, old, p, n * size, t0, FRAME);
	else
		rec_failed(old, oldsize);
	return p;
}

void free(void *p) {
	if (UNLIKELY(p == NULL || is_boot(p)))
		return;
	if (UNLIKELY(!real.free)) // a block from the arena's era that is not ours: leak it
		return;
	if (!recording(RA)) {
		real.free(p);
		return;
	}
	rec_free(OP_FREE, p);
	real.free(p);
}

int posix_memalign(void **out, size_t align, size_t n) {
	if (UNLIKELY(!real_posix_memalign)) {
		hooks_init();
		if (!real_posix_memalign) {
			*out = boot_alloc(n, align);
			return *out ? 0 : ENOMEM;
		}
	}
	if (!recording(RA))
		return real_posix_memalign(out, align, n);
	int rc = real_posix_memalign(out, align, n);
	if (rc == 0 && *out)
		rec_alloc(OP_POSIX_MEMALIGN, *out, n, FRAME);
	return rc;
}

#define ALIGNED_HOOK(name, op, realfn, params, args, size)                    \
	void *name params {                                                   \
		if (UNLIKELY(!realfn)) {                                      \
			hooks_init();                                         \
			if (!realfn)                                          \
				return NULL;                                  \
		}                                                             \
		if (!recording(RA))                                           \
			return realfn args;                                   \
		void *p = realfn args;                                        \
		if (p)                                                        \
			rec_alloc(op, p, size, FRAME);                         \
		return p;                                                     \
	}

ALIGNED_HOOK(aligned_alloc, OP_ALIGNED_ALLOC, real_aligned_alloc, (size_t a, size_t n), (a, n), n)
ALIGNED_HOOK(memalign, OP_MEMALIGN, real_memalign, (size_t a, size_t n), (a, n), n)
ALIGNED_HOOK(valloc, OP_VALLOC, real_valloc, (size_t n), (n), n)
ALIGNED_HOOK(pvalloc, OP_PVALLOC, real_pvalloc, (size_t n), (n), n)

size_t malloc_usable_size(void *p) {
	if (p && is_boot(p))
		return boot_size(p);
	if (UNLIKELY(!real_malloc_usable_size))
		hooks_init();
	return real_malloc_usable_size ? real_malloc_usable_size(p) : 0;
}

// ---- C++ operators --------------------------------------------------------
// The real operators (libstdc++'s) keep their semantics: new_handler loops,
// std::bad_alloc. They call malloc/free, which must not be recorded again,
// and nothrow/sized/aligned variants call the plain ones: only the
// outermost operator records.

// cxx_next finds the real operator. A C++ library dlopen'ed with
// RTLD_LOCAL (a plugin that brings libstdc++) is not in the global scope
// that RTLD_NEXT searches: look in libstdc++ by name. Failing both, a
// plain malloc/free stands in, which only loses new_handler and
// std::bad_alloc on exhausted memory.
static void *cxx_next(const char *name, void *fallback) {
	void *p = next(name);
	if (!p) {
		t_guard++;
		void *h = real.dlopen ? real.dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD) : NULL;
		if (h)
			p = dlsym(h, name);
		t_guard--;
	}
	return p ? p : fallback;
}

static void *new_fallback(size_t n) {
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

static void delete_fallback(void *p) { free(p); }

#define NEW_HOOK(sym, op, params, args, size)                                 \
	void *sym params {                                                    \
		static void *(*realfn) params;                                \
		if (UNLIKELY(!realfn))                                        \
			realfn = cxx_next(#sym, (void *)new_fallback);        \
		if (!recording(RA))                                           \
			return realfn args;                                   \
		t_cxx++;                                                      \
		void *p = realfn args;                                        \
		t_cxx--;                                                      \
		if (p)                                                        \
			rec_alloc(op, p, size, FRAME);                         \
		return p;                                                     \
	}

#define DELETE_HOOK(sym, op, params, args)                                    \
	void sym params {                                                     \
		static void (*realfn) params;                                 \
		if (UNLIKELY(!realfn))                                        \
			realfn = cxx_next(#sym, (void *)delete_fallback);     \
		if (p == NULL || !recording(RA)) {                            \
			realfn args;                                          \
			return;                                               \
		}                                                             \
		rec_free(op, p);                                              \
		t_cxx++;                                                      \
		realfn args;                                                  \
		t_cxx--;                                                      \
	}

typedef struct nothrow_t nothrow_t;
NEW_HOOK(_Znwm, OP_NEW, (size_t n), (n), n)
NEW_HOOK(_Znam, OP_NEW_ARRAY, (size_t n), (n), n)
NEW_HOOK(_ZnwmRKSt9nothrow_t, OP_NEW, (size_t n, const nothrow_t *t), (n, t), n)
NEW_HOOK(_ZnamRKSt9nothrow_t, OP_NEW_ARRAY, (size_t n, const nothrow_t *t), (n, t), n)
NEW_HOOK(_ZnwmSt11align_val_t, OP_NEW, (size_t n, size_t a), (n, a), n)
NEW_HOOK(_ZnamSt11align_val_t, OP_NEW_ARRAY, (size_t n, size_t a), (n, a), n)
NEW_HOOK(_ZnwmSt11align_val_tRKSt9nothrow_t, OP_NEW, (size_t n, size_t a, const nothrow_t *t), (n, a, t), n)
NEW_HOOK(_ZnamSt11align_val_tRKSt9nothrow_t, OP_NEW_ARRAY, (size_t n, size_t a, const nothrow_t *t), (n, a, t), n)

DELETE_HOOK(_ZdlPv, OP_DELETE, (void *p), (p))
DELETE_HOOK(_ZdaPv, OP_DELETE_ARRAY, (void *p), (p))
DELETE_HOOK(_ZdlPvm, OP_DELETE, (void *p, size_t n), (p, n))
DELETE_HOOK(_ZdaPvm, OP_DELETE_ARRAY, (void *p, size_t n), (p, n))
DELETE_HOOK(_ZdlPvRKSt9nothrow_t, OP_DELETE, (void *p, const nothrow_t *t), (p, t))
DELETE_HOOK(_ZdaPvRKSt9nothrow_t, OP_DELETE_ARRAY, (void *p, const nothrow_t *t), (p, t))
DELETE_HOOK(_ZdlPvSt11align_val_t, OP_DELETE, (void *p, size_t a), (p, a))
DELETE_HOOK(_ZdaPvSt11align_val_t, OP_DELETE_ARRAY, (void *p, size_t a), (p, a))
DELETE_HOOK(_ZdlPvmSt11align_val_t, OP_DELETE, (void *p, size_t n, size_t a), (p, n, a))
DELETE_HOOK(_ZdaPvmSt11align_val_t, OP_DELETE_ARRAY, (void *p, size_t n, size_t a), (p, n, a))
DELETE_HOOK(_ZdlPvSt11align_val_tRKSt9nothrow_t, OP_DELETE, (void *p, size_t a, const nothrow_t *t), (p, a, t))
DELETE_HOOK(_ZdaPvSt11align_val_tRKSt9nothrow_t, OP_DELETE_ARRAY, (void *p, size_t a, const nothrow_t *t), (p, a, t))

// ---- mappings ---------------------------------------------------------------

static void *do_mmap(void *(*fn)(void *, size_t, int, int, int, off_t), void *ra,
		     void *addr, size_t len, int prot, int flags, int fd, off_t off) {
	if (UNLIKELY(!fn)) {
		hooks_init();
		fn = real.mmap;
		if (!fn) // before dlsym answered: the raw system call
			return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
	}
	if (!recording(ra)) {
		void *p = fn(addr, len, prot, flags, fd, off);
		// The Go runtime's heap and the unwinder's caches: memory the
		// scan must never read as roots.
		if (p != MAP_FAILED && live_enabled && (t_tracer || t_guard))
			tracer_region_add(p, len);
		return p;
	}
	void *p = fn(addr, len, prot, flags, fd, off);
	if (p != MAP_FAILED) {
		if (live_enabled)
			live_map_add(p, len, prot, flags);
		rec_mmap(p, len, prot, flags);
	}
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
	return do_mmap(real.mmap, RA, addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
	return do_mmap(real_mmap64 ? real_mmap64 : real.mmap, RA, addr, len, prot, flags, fd, off);
}

int munmap(void *addr, size_t len) {
	if (UNLIKELY(!real.munmap)) {
		hooks_init();
		if (!real.munmap)
			return syscall(SYS_munmap, addr, len);
	}
	if (!recording(RA)) {
		if (live_enabled && (t_tracer || t_guard))
			tracer_region_del(addr, len);
		return real.munmap(addr, len);
	}
	uint64_t t0 = rec_time_before();
	if (live_enabled)
		live_map_del(addr, len);
	int rc = real.munmap(addr, len);
	if (rc == 0)
		rec_munmap(addr, len, t0);
	else
		rec_cancel();
	return rc;
}

void *mremap(void *old, size_t oldlen, size_t len, int flags, ...) {
	void *target = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	if (UNLIKELY(!real.mremap))
		hooks_init();
	if (!recording(RA))
		return real.mremap(old, oldlen, len, flags, target);
	uint64_t t0 = rec_time_before();
	void *p = real.mremap(old, oldlen, len, flags, target);
	if (p != MAP_FAILED) {
		if (live_enabled) {
			live_map_del(old, oldlen);
			live_map_add(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
		}
		rec_mremap(old, oldlen, p, len, t0);
	} else {
		rec_cancel();
	}
	return p;
}

// ---- modules ------------------------------------------------------------------

void *dlopen(const char *file, int mode) {
	if (UNLIKELY(!real.dlopen))
		hooks_init();
	void *h = real.dlopen(file, mode);
	if (h && leak_active && !t_guard) {
		int e = errno;
		modules_scan();
		errno = e;
	}
	return h;
}

int dlclose(void *h) {
	if (UNLIKELY(!real.dlclose))
		hooks_init();
	int rc = real.dlclose(h);
	if (rc == 0)
		unwind_invalidate();
	if (rc == 0 && leak_active && !t_guard) {
		int e = errno;
		modules_scan();
		errno = e;
	}
	return rc;
}

// ---- threads ------------------------------------------------------------------

struct start {
	void *(*fn)(void *);
	void *arg;
	int tracer;
};

static void *thread_start(void *p) {
	struct start s = *(struct start *)p;
	t_guard++;
	real.free(p);
	t_guard--;
	if (s.tracer) {
		t_tracer = 1;
		int i = __atomic_fetch_add(&ntracer_tids, 1, __ATOMIC_ACQ_REL);
		if (i < MAX_TRACER_TIDS)
			__atomic_store_n(&tracer_tids[i], (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
		// The writer runs scans on this stack: never a root. Not only
		// with the live table on: the Go runtime starts its first threads
		// before the settings are read.
		pthread_attr_t a;
		void *lo;
		size_t size;
		if (pthread_getattr_np(pthread_self(), &a) == 0) {
			if (pthread_attr_getstack(&a, &lo, &size) == 0)
				tracer_region_add(lo, size);
			pthread_attr_destroy(&a);
		}
	} else if (live_enabled) {
		// pthread_getattr_np allocates: inside the guard it is not traced.
		pthread_attr_t a;
		void *lo;
		size_t size;
		t_guard++;
		if (pthread_getattr_np(pthread_self(), &a) == 0) {
			if (pthread_attr_getstack(&a, &lo, &size) == 0)
				live_thread_start((uintptr_t)lo, (uintptr_t)lo + size, (uintptr_t)pthread_self());
			pthread_attr_destroy(&a);
		}
		t_guard--;
	}
	void *rv = s.fn(s.arg);
	if (s.tracer && nptl_nthreads) // glibc takes this thread off its count next
		__atomic_fetch_add(nptl_nthreads, 1, __ATOMIC_RELAXED);
	return rv;
}

int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
	if (UNLIKELY(!real.pthread_create))
		hooks_init();
	int ours = t_guard || t_tracer ||
		   (uintptr_t)RA - self_text_lo < self_text_hi - self_text_lo;
	t_guard++;
	struct start *s = real.malloc(sizeof *s);
	t_guard--;
	if (!s) // cannot wrap: the thread runs unmarked, which only costs accuracy
		return real.pthread_create(th, attr, fn, arg);
	s->fn = fn;
	s->arg = arg;
	s->tracer = ours;
	// Our own threads' TLS and stacks are allocated inside pthread_create
	// (ld.so's _dl_allocate_tls calls malloc): keep them out of the trace.
	// They also start with every asynchronous signal blocked (and the Go
	// runtime keeps the mask its first thread started with): a signal
	// the kernel gave one of our threads would run the program's handler
	// there instead of interrupting the program's own system call, and a
	// signal the program blocks everywhere to sigwait for would meet its
	// default action on ours.
	sigset_t async, old;
	if (ours) {
		sigfillset(&async);
		static const int sync_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
		for (unsigned i = 0; i < sizeof sync_sigs / sizeof sync_sigs[0]; i++)
			sigdelset(&async, sync_sigs[i]);
		pthread_sigmask(SIG_BLOCK, &async, &old);
	}
	t_guard += ours;
	int rc = real.pthread_create(th, attr, thread_start, s);
	t_guard -= ours;
	if (ours)
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		t_guard++;
		real.free(s);
		t_guard--;
	} else if (ours && nptl_nthreads && __atomic_sub_fetch(nptl_nthreads, 1, __ATOMIC_ACQ_REL) == 0) {
		__atomic_store_n(&program_gone, 1, __ATOMIC_RELEASE);
	}
	return rc;
}

// ---- main -------------------------------------------------------------------------
// main runs inside a wrapper so the exit scan knows where main's frames
// ended: after main returns, the words below that point are the exit
// machinery's, stale, and no root (valgrind ignores them as undefined).

typedef int (*main_fn)(int, char **, char **);
static main_fn real_main;

__attribute__((noinline)) static int main_wrapper(int argc, char **argv, char **envp) {
	int rc = real_main(argc, argv, envp);
	main_return_sp = (uintptr_t)__builtin_frame_address(0);
	return rc;
}

int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void), void (*fini)(void),
		      void (*rtld_fini)(void), void *stack_end) {
	int (*next_start)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *) =
		next("__libc_start_main");
	real_main = main;
	return next_start(main_wrapper, argc, argv, init, fini, rtld_fini, stack_end);
}

// ---- process end and replacement ------------------------------------------------

void _exit(int status) {
	if (UNLIKELY(!real._exit))
		hooks_init();
	EXIT_SCAN_HERE();
	finish(END__EXIT, status);
	real._exit(status);
}

void _Exit(int status) {
	if (UNLIKELY(!real__Exit))
		hooks_init();
	EXIT_SCAN_HERE();
	finish(END__EXIT, status);
	real__Exit(status);
}

#define EXEC_WRAP(call, path)                                                 \
	do {                                                                  \
		if (UNLIKELY(!real.execve))                                   \
			hooks_init();                                         \
		int e_;                                                       \
		exec_prepare(path);                                           \
		int rc_ = call;                                               \
		e_ = errno;                                                   \
		exec_failed();                                                \
		errno = e_;                                                   \
		return rc_;                                                   \
	} while (0)

int execve(const char *path, char *const argv[], char *const envp[]) {
	EXEC_WRAP(real.execve(path, argv, envp), path);
}
int execv(const char *path, char *const argv[]) { EXEC_WRAP(real_execv(path, argv), path); }
int execvp(const char *file, char *const argv[]) { EXEC_WRAP(real_execvp(file, argv), file); }
int execvpe(const char *file, char *const argv[], char *const envp[]) {
	EXEC_WRAP(real_execvpe(file, argv, envp), file);
}
int fexecve(int fd, char *const argv[], char *const envp[]) {
	EXEC_WRAP(real_fexecve(fd, argv, envp), "(fexecve)");
}
int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
	EXEC_WRAP(real_execveat(dirfd, path, argv, envp, flags), path);
}

// The execl family is variadic: collect the arguments and use the vector
// forms above, so every exec variant flushes the same way.
#define COLLECT_ARGS(first, last_ap, argv, envp_out)                          \
	size_t n_ = 1;                                                        \
	va_list ap_;                                                          \
	va_start(ap_, last_ap);                                               \
	while (va_arg(ap_, char *) != NULL)                                   \
		n_++;                                                         \
	va_end(ap_);                                                          \
	char **argv = __builtin_alloca((n_ + 1) * sizeof(char *));           \
	va_start(ap_, last_ap);                                               \
	argv[0] = (char *)first;                                              \
	for (size_t i_ = 1; i_ <= n_; i_++)                                   \
		argv[i_] = va_arg(ap_, char *);                               \
	envp_out;                                                             \
	va_end(ap_)

int execl(const char *path, const char *arg, ...) {
	COLLECT_ARGS(arg, arg, argv, (void)0);
	return execv(path, argv);
}
int execlp(const char *file, const char *arg, ...) {
	COLLECT_ARGS(arg, arg, argv, (void)0);
	return execvp(file, argv);
}
int execle(const char *path, const char *arg, ...) {
	char **envp;
	COLLECT_ARGS(arg, arg, argv, envp = va_arg(ap_, char **));
	return execve(path, argv, envp);
}

// ---- the trace's descriptor -------------------------------------------------------
// Daemons close every descriptor they did not open (a close loop,
// closefrom, close_range), and programs dup2 onto numbers they expect to
// be free. The trace's (900 or above) is not theirs: closing or dup'ing
// it fails as it would without us, with EBADF; ranges skip it; a dup2
// onto its number moves it out of the way first. A descriptor closed behind
// our back (the raw system call) stops tracing (process.c, fd_ok).

int close(int f) {
	if (UNLIKELY(!real_close))
		hooks_init();
	if (UNLIKELY(f >= 0 && f == trace_fd())) {
		errno = EBADF;
		return -1;
	}
	return real_close ? real_close(f) : (int)syscall(SYS_close, f);
}

static int sys_close_range(unsigned first, unsigned last, int flags) {
	if (real_close_range)
		return real_close_range(first, last, flags);
	return (int)syscall(SYS_close_range, first, last, flags);
}

int close_range(unsigned first, unsigned last, int flags) {
	if (UNLIKELY(!real_close))
		hooks_init();
	int t = trace_fd();
	if (t < 0 || (unsigned)t < first || (unsigned)t > last)
		return sys_close_range(first, last, flags);
	int rc = 0;
	if ((unsigned)t > first) {
		rc = sys_close_range(first, (unsigned)t - 1, flags);
		flags &= ~CLOSE_RANGE_UNSHARE; // done by the first part
	}
	if (rc == 0 && (unsigned)t < last)
		rc = sys_close_range((unsigned)t + 1, last, flags);
	return rc;
}

void closefrom(int low) {
	if (UNLIKELY(!real_close))
		hooks_init();
	int t = trace_fd();
	if (t >= 0 && t >= low && close_range((unsigned)low, ~0U, 0) == 0)
		return;
	if (real_closefrom) // a kernel without close_range: ours goes too
		real_closefrom(low);
}

// dup_target readies f for a dup onto it (-1: none): 0, or -1 when old is
// the trace's descriptor, which the program cannot have (EBADF, as
// without us).
static int dup_target(int old, int f) {
	int t = trace_fd();
	if (UNLIKELY(t >= 0 && old == t)) {
		errno = EBADF;
		return -1;
	}
	if (UNLIKELY(t >= 0 && f == t))
		trace_fd_move(f);
	return 0;
}

int dup(int old) {
	if (UNLIKELY(!real_dup))
		hooks_init();
	if (dup_target(old, -1) != 0)
		return -1;
	return real_dup(old);
}

int dup2(int old, int f) {
	if (UNLIKELY(!real_dup2))
		hooks_init();
	if (dup_target(old, f) != 0)
		return -1;
	return real_dup2(old, f);
}

int dup3(int old, int f, int flags) {
	if (UNLIKELY(!real_dup3))
		hooks_init();
	if (dup_target(old, f) != 0)
		return -1;
	return real_dup3(old, f, flags);
}

// ---- signals ----------------------------------------------------------------------
// sigaction and signal are hooked only for the crash signals, where the
// tracer keeps its own handler first and chains to the program's, and for
// SIGCHLD, SIGPROF and SIGURG, which it passes on from its own threads to
// the program's (process.c). All other signals go straight through.
HIDDEN int app_sigaction(int sig, const struct sigaction *act, struct sigaction *old, int *handled, int from_tracer);

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
	if (UNLIKELY(!real.sigaction))
		hooks_init();
	int handled = 0;
	int rc = app_sigaction(sig, act, old, &handled, (uintptr_t)RA - self_text_lo < self_text_hi - self_text_lo);
	if (handled)
		return rc;
	return real.sigaction(sig, act, old);
}

__sighandler_t signal(int sig, __sighandler_t h) {
	if (UNLIKELY(!real_signal))
		hooks_init();
	struct sigaction act, old;
	int handled = 0;
	memset(&act, 0, sizeof act);
	act.sa_handler = h;
	act.sa_flags = SA_RESTART;
	int rc = app_sigaction(sig, &act, &old, &handled, 0);
	if (handled)
		return rc == 0 ? old.sa_handler : SIG_ERR;
	return real_signal(sig, h);
}
