// Stack capture. Three unwinders, chosen with LEAK_UNWIND:
//
//   cfi        the default: our own CFI unwinder with a per-thread rule
//              cache (cfi.c). Whole stacks from code built without frame
//              pointers, at little more than the cost of a frame-pointer
//              walk. Needs _dl_find_object (glibc 2.35).
//   libunwind  libunwind's unw_backtrace: also follows the CFI, and steps
//              through signal frames, but costs several times as much.
//   fp         frame pointers: cheapest, but stops after one frame in
//              code built without them (most distro binaries).
//
// When cfi cannot run it falls back to libunwind, and that to fp; the
// trace says so in a note and records the unwinder actually used.
//
// libunwind is loaded with dlopen(RTLD_LOCAL) rather than linked: linked,
// its exported backtrace() and _Unwind_Backtrace would replace the
// program's own (glibc's, libgcc's) and change what the program does.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

enum { UNWIND_CFI, UNWIND_LIBUNWIND, UNWIND_FP };

static int mode = UNWIND_FP;
HIDDEN int unwind_allocates; // the walk calls the allocator itself (libunwind)
HIDDEN uintptr_t unw_text_lo, unw_text_hi;
static int (*unw_backtrace_fn)(void **, int);
static const char *name = "none";

static int load_libunwind(void) {
	static const char *libs[] = {"libunwind.so.8", "libunwind-x86_64.so.8"};
	for (unsigned i = 0; i < sizeof libs / sizeof libs[0] && !unw_backtrace_fn; i++) {
		void *h = real.dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
		if (!h)
			continue;
		unw_backtrace_fn = (int (*)(void **, int))dlsym(h, "unw_backtrace");
		if (unw_backtrace_fn)
			text_of((void *)unw_backtrace_fn, &unw_text_lo, &unw_text_hi);
		// The default global cache takes a lock per step; a
		// per-thread cache lets threads unwind in parallel.
		int (*set_policy)(void *, int) = (int (*)(void *, int))dlsym(h, "_ULx86_64_set_caching_policy");
		void **as = (void **)dlsym(h, "_ULx86_64_local_addr_space");
		if (set_policy && as)
			set_policy(*as, 2 /* UNW_CACHE_PER_THREAD */);
	}
	return unw_backtrace_fn != NULL;
}

HIDDEN void unwind_init(void) {
	// The settings say only whether fp was asked for.
	const char *v = getenv("LEAK_UNWIND");
	if (cfg.unwind_fp)
		mode = UNWIND_FP;
	else if (v && strcmp(v, "libunwind") == 0)
		mode = UNWIND_LIBUNWIND;
	else
		mode = UNWIND_CFI;
	if (mode == UNWIND_CFI && !cfi_init()) {
		mode = UNWIND_LIBUNWIND;
		proc_note("_dl_find_object not found (glibc older than 2.35): "
			  "stacks come from libunwind, which is slower");
	}
	if (mode == UNWIND_LIBUNWIND && !load_libunwind()) {
		mode = UNWIND_FP;
		proc_note("libunwind.so.8 not found: stacks come from frame pointers and are short "
			  "in code built without them (apt-get install libunwind8)");
	}
	name = mode == UNWIND_CFI ? "cfi" : mode == UNWIND_LIBUNWIND ? "libunwind" : "fp";
	unwind_allocates = mode == UNWIND_LIBUNWIND;
}

HIDDEN const char *unwind_name(void) { return name; }

HIDDEN void unwind_forget(void) {
	if (mode == UNWIND_CFI)
		cfi_forget();
}

static inline int ours(uintptr_t pc) { return pc - self_text_lo < self_text_hi - self_text_lo; }

// libunwind_capture: unw_backtrace, minus our own frames. Its own
// function, so that its big array is not set up on the default path.
static __attribute__((noinline)) int libunwind_capture(uintptr_t *pcs, int max) {
	uintptr_t tmp[160];
	int want = max + 8; // room for our own frames, dropped below
	if (want > 160)
		want = 160;
	int n = unw_backtrace_fn((void **)tmp, want);
	int skip = 0;
	// Frame 0 of unw_backtrace is in our own code: drop every leading
	// frame in our own text.
	while (skip < n && ours(tmp[skip]))
		skip++;
	n -= skip;
	if (n > max)
		n = max;
	if (n < 0)
		n = 0;
	memcpy(pcs, tmp + skip, (size_t)n * sizeof *pcs);
	return n;
}

// unwind_capture returns the caller's stack, innermost first, starting at
// the return address into the code that called the hook.
HIDDEN int unwind_capture(uintptr_t *pcs, int max, struct stack_memo *m, uint32_t *known, const void *frame) {
	m->slot = NULL;
	*known = 0;
	if (LIKELY(mode == UNWIND_CFI))
		return cfi_capture(pcs, max, m, known, frame);
	if (mode == UNWIND_FP)
		return fp_capture(pcs, max, frame);
	return libunwind_capture(pcs, max);
}
