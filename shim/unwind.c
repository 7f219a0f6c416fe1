// Stack capture. The default is libunwind's unw_backtrace, which follows
// the CFI in .eh_frame and so gets whole stacks from distro binaries built
// without frame pointers; frame-pointer walking (LEAK_UNWIND=fp) is cheaper
// but stops after one frame in such code.
//
// libunwind is loaded with dlopen(RTLD_LOCAL) rather than linked: linked,
// its exported backtrace() and _Unwind_Backtrace would replace the
// program's own (glibc's, libgcc's) and change what the program does.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "shim.h"

static int (*unw_backtrace_fn)(void **, int);
static const char *name = "none";

extern void *__libc_stack_end;

HIDDEN void unwind_init(void) {
	if (!cfg.unwind_fp) {
		static const char *libs[] = {"libunwind.so.8", "libunwind-x86_64.so.8"};
		for (unsigned i = 0; i < sizeof libs / sizeof libs[0] && !unw_backtrace_fn; i++) {
			void *h = real.dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
			if (!h)
				continue;
			unw_backtrace_fn = (int (*)(void **, int))dlsym(h, "unw_backtrace");
			// The default global cache takes a lock per step; a
			// per-thread cache lets threads unwind in parallel.
			int (*set_policy)(void *, int) = (int (*)(void *, int))dlsym(h, "_ULx86_64_set_caching_policy");
			void **as = (void **)dlsym(h, "_ULx86_64_local_addr_space");
			if (set_policy && as)
				set_policy(*as, 2 /* UNW_CACHE_PER_THREAD */);
		}
		if (!unw_backtrace_fn) {
			cfg.unwind_fp = 1;
			proc_note("libunwind.so.8 not found: stacks come from frame pointers and are short "
				  "in code built without them (apt-get install libunwind8)");
		}
	}
	name = cfg.unwind_fp ? "fp" : "libunwind";
}

HIDDEN const char *unwind_name(void) { return name; }

static inline int ours(uintptr_t pc) { return pc - self_text_lo < self_text_hi - self_text_lo; }

// fp_walk follows saved frame pointers. It stays within [sp, sp + 8 MiB)
// and requires frames to move up the stack, so a register that holds no
// frame pointer ends the walk instead of faulting.
static int fp_walk(uintptr_t *pcs, int max) {
	uintptr_t *fp = __builtin_frame_address(0);
	uintptr_t lo = (uintptr_t)fp, hi = lo + (8u << 20);
	int n = 0;
	while (n < max) {
		if ((uintptr_t)fp < lo || (uintptr_t)fp + 16 > hi || ((uintptr_t)fp & 7))
			break;
		uintptr_t ret = fp[1];
		uintptr_t *nfp = (uintptr_t *)fp[0];
		if (ret < 4096)
			break;
		pcs[n++] = ret;
		if (nfp <= fp)
			break;
		fp = nfp;
	}
	return n;
}

// unwind_capture returns the caller's stack, innermost first, starting at
// the return address into the code that called the hook.
HIDDEN int unwind_capture(uintptr_t *pcs, int max) {
	uintptr_t tmp[160];
	int want = max + 8; // room for our own frames, dropped below
	if (want > 160)
		want = 160;
	int n = cfg.unwind_fp ? fp_walk(tmp, want) : unw_backtrace_fn((void **)tmp, want);
	int skip = 0;
	// Frame 0 of unw_backtrace is in unwind_capture itself: drop every
	// leading frame in our own text.
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
