// Stack walks for unwind_capture: the CFI unwinder, the default, and the
// frame-pointer walk, which shares its bounds on stack reads.
//
// The CFI unwinder follows the call frame information in .eh_frame, which
// distro binaries keep even when they are built without frame pointers.
// Interpreting CFI is slow (find the object, search its FDE table, parse
// the CIE and FDE, run the CFA program up to the address), but a program
// allocates from few distinct call sites. So each thread caches, per
// return address, the rule that unwinds that frame, packed into 16 bytes:
// where the CFA is, where the return address and the caller's rbp were
// saved. On x86-64 that is all an unwinder has to track: the caller's rsp
// is the CFA, and rbp is the only other register CFA rules use. Signal
// frames are recognised by the restorer's code, as libunwind does, and
// walked through.
//
// Everything here runs inside the allocation hooks, possibly in a signal
// handler that interrupted the allocator: no malloc, no locks, no stdio.
// _dl_find_object (glibc 2.35) is lock-free and async-signal-safe; it is
// what libgcc's unwinder uses too. Stack reads are bounds-checked: a frame
// whose rule is wrong ends the walk instead of faulting.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "shim.h"

// glibc's struct dl_find_object, declared here so that the library builds
// against older headers; the function is looked up at run time.
struct find_object {
	unsigned long long flags;
	void *map_start, *map_end;
	void *link_map;
	void *eh_frame; // the PT_GNU_EH_FRAME segment: .eh_frame_hdr
	unsigned long long reserved[9];
};
static int (*find_object)(void *, struct find_object *);

extern void *__libc_stack_end;

// ---- the rule cache -----------------------------------------------------------

enum {
	CFA_RSP = 0,    // CFA = rsp + cfa_off
	CFA_RBP = 1,    // CFA = rbp + cfa_off
	CFA_DEREF = 2,  // CFA = *(rbp + cfa_off): gcc's stack realignment
	CFA_SIGNAL = 3, // the kernel's signal frame: registers in a ucontext at rsp
	CFA_STOP = 4,   // outermost frame, or a rule we cannot follow
	CFA_MASK = 7,
	RBP_SAME = 0 << 3,   // rbp unchanged
	RBP_AT_CFA = 1 << 3, // saved at CFA + rbp_off
	RBP_AT_RBP = 2 << 3, // saved at rbp + rbp_off (realigned frames)
	RBP_LOST = 3 << 3,   // recoverable only by rules we do not follow
	RBP_MASK = 3 << 3,
};

// Cache keys are return addresses, or for the frame a signal interrupted
// (whose ip is not after a call) the ip with this bit set.
#define EXACT ((uintptr_t)1 << 63)

struct rule {
	uintptr_t key; // 0: empty slot
	int32_t cfa_off;
	int16_t rbp_off;
	uint8_t kind;
	int8_t ra_off8; // the return address is at CFA + 8 * ra_off8
};

#define CACHE_BITS 12
#define CACHE_SIZE (1u << CACHE_BITS)

// The walk is a chain of dependent loads: return address, then the rule
// it selects, then the next return address. To keep the rule lookup off
// that chain, each slot remembers the slot of the caller's rule seen last
// (callers repeat): the walk loads that rule while the return address is
// still on its way, and only checks the guess against it.
//
// Whole walks are cached too. A program allocates from few call paths, and
// from each at the same stack depth every time: the first frame's address
// and stack pointer repeat. A walk is a function of the registers it
// starts from and the stack words it reads, so a thread keeps its last
// walks from a few (ip, sp) pairs with the address and value of every
// word they read. When those words still hold those values, walking again
// would read the same words and give the same stack: it is copied
// instead, for a compare per word rather than a rule per frame. An rbp
// counts only when a rule uses it: the one the walk started with, or a
// saved one it loaded, which is noted when used, not when loaded (code
// built without frame pointers keeps any value in rbp, and a caller's
// loop counter there must not spoil the walk). Walks through signal
// frames, on stacks of unknown bounds, or that ended at an address
// without a rule are not kept.
//
// A kept walk also holds the memo (shim.h): the recorder's stack id for
// its stack, tagged with the walk's own tag, which changes whenever the
// walk is redone. A memo stored late, after a signal handler's allocation
// redid the walk, carries the old tag and is never used.
//
// The walks are kept in WALK_SETS sets of WALK_WAYS, replaced in turn: a
// slot per (ip, sp) pair thrashed whenever two of a program's few hot
// pairs hashed alike, which depended on where ASLR put the stack.
#define WALK_SETS 4
#define WALK_WAYS 8
#define SC_PCS 32
#define SC_READS 64
struct walk {
	uint64_t memo;
	uint32_t tag;
	uintptr_t rbp;
	int16_t n, nread, max;
	uint8_t need_rbp, ok;
	uintptr_t pcs[SC_PCS];
	uintptr_t addr[SC_READS], val[SC_READS];
};

struct cache {
	struct rule rule[CACHE_SIZE];
	uint16_t next[CACHE_SIZE];
	uintptr_t walk_ip[WALK_SETS * WALK_WAYS], walk_sp[WALK_SETS * WALK_WAYS];
	uint8_t walk_next[WALK_SETS];
	uint32_t tick; // the last walk's tag
	struct walk walk[WALK_SETS * WALK_WAYS];
};

static TLS struct cache *t_cache;
static TLS unsigned t_gen;
static unsigned cache_gen = 1;
static pthread_key_t cache_key;
static int cache_key_ok;

HIDDEN void unwind_invalidate(void) { __atomic_fetch_add(&cache_gen, 1, __ATOMIC_RELEASE); }

static void cache_free(void *p) {
	if (p) {
		real.munmap(p, sizeof(struct cache));
		t_cache = NULL;
	}
}

// cache returns this thread's table, empty after a module was unloaded.
static struct cache *cache(void) {
	unsigned gen = __atomic_load_n(&cache_gen, __ATOMIC_ACQUIRE);
	struct cache *c = t_cache;
	if (LIKELY(c && t_gen == gen))
		return c;
	if (!c) {
		void *p = real.mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		c = t_cache = p;
		// Keys below 32 live in the thread descriptor: setting one
		// does not allocate.
		if (cache_key_ok)
			pthread_setspecific(cache_key, p);
	} else {
		// Tags keep counting: a memo a signal handler's walk
		// interrupted may still be stored with an older one.
		uint32_t tick = c->tick;
		memset(c, 0, sizeof *c);
		c->tick = tick;
	}
	t_gen = gen;
	return c;
}

static inline uint32_t slot(uintptr_t key) {
	return (uint32_t)((key * 0x9e3779b97f4a7c15u) >> (64 - CACHE_BITS));
}

// ---- reading CFI ----------------------------------------------------------------

// A cursor over CFI bytes. Running off the end sets bad, and every reader
// then returns 0: callers check once per record instead of per field.
struct cur {
	const uint8_t *p, *end;
	int bad;
};

static inline uint8_t u8(struct cur *c) {
	if (c->p >= c->end) {
		c->bad = 1;
		return 0;
	}
	return *c->p++;
}

static uint64_t uleb(struct cur *c) {
	uint64_t v = 0;
	for (unsigned shift = 0;; shift += 7) {
		uint8_t b = u8(c);
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80) || c->bad)
			return v;
	}
}

static int64_t sleb(struct cur *c) {
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t b;
	do {
		b = u8(c);
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while ((b & 0x80) && !c->bad);
	if (shift < 64 && (b & 0x40))
		v |= ~(uint64_t)0 << shift;
	return (int64_t)v;
}

static inline uint64_t fixed(struct cur *c, size_t n) {
	if ((size_t)(c->end - c->p) < n) {
		c->bad = 1;
		c->p = c->end;
		return 0;
	}
	uint64_t v = 0;
	memcpy(&v, c->p, n); // little-endian
	c->p += n;
	return v;
}

enum {
	PE_ABSPTR = 0x00, PE_ULEB = 0x01, PE_UDATA2 = 0x02, PE_UDATA4 = 0x03, PE_UDATA8 = 0x04,
	PE_SLEB = 0x09, PE_SDATA2 = 0x0a, PE_SDATA4 = 0x0b, PE_SDATA8 = 0x0c,
	PE_PCREL = 0x10, PE_DATAREL = 0x30, PE_ALIGNED = 0x50, PE_INDIRECT = 0x80, PE_OMIT = 0xff,
};

// encoded reads a DW_EH_PE-encoded pointer. Indirect pointers are not
// followed: only the personality routine uses them, and it is skipped.
static uintptr_t encoded(struct cur *c, uint8_t enc, uintptr_t datarel) {
	const uint8_t *at = c->p;
	uintptr_t base = 0;
	switch (enc & 0x70) {
	case 0:
		break;
	case PE_PCREL:
		base = (uintptr_t)at;
		break;
	case PE_DATAREL:
		base = datarel;
		break;
	case PE_ALIGNED & 0x70:
		c->p = (const uint8_t *)(((uintptr_t)c->p + 7) & ~(uintptr_t)7);
		return (uintptr_t)fixed(c, 8);
	default: // textrel, funcrel: never used on x86-64
		c->bad = 1;
		return 0;
	}
	uintptr_t v;
	switch (enc & 0x0f) {
	case PE_ABSPTR:
	case PE_UDATA8:
	case PE_SDATA8:
		v = (uintptr_t)fixed(c, 8);
		break;
	case PE_ULEB:
		v = (uintptr_t)uleb(c);
		break;
	case PE_SLEB:
		v = (uintptr_t)sleb(c);
		break;
	case PE_UDATA2:
		v = (uintptr_t)fixed(c, 2);
		break;
	case PE_SDATA2:
		v = (uintptr_t)(int16_t)fixed(c, 2);
		break;
	case PE_UDATA4:
		v = (uintptr_t)fixed(c, 4);
		break;
	case PE_SDATA4:
		v = (uintptr_t)(int32_t)fixed(c, 4);
		break;
	default:
		c->bad = 1;
		return 0;
	}
	return v + base;
}

// The row of the CFA table the unwinder needs: how to find the CFA, the
// caller's rbp and the return address.
enum { R_SAME, R_OFF, R_RBP, R_UNDEF, R_BAD };

struct row {
	uint8_t cfa; // CFA_RSP, CFA_RBP, CFA_DEREF or CFA_STOP (unfollowable)
	uint8_t rbp, ra; // R_*
	int64_t cfa_off, rbp_off, ra_off;
};

struct cie {
	uint64_t code_align;
	int64_t data_align;
	uint8_t fde_enc;
	int has_z;
	int signal; // 'S': the FDE of a signal trampoline
	struct cur insns;
};

#define DW_REG_RBP 6
#define DW_REG_RSP 7
#define DW_REG_RA 16

#define ENTRY_MAX (1u << 24) // far longer than any CIE or FDE

// entry opens the CIE or FDE at p: c covers its contents.
static int entry(const uint8_t *p, struct cur *c) {
	uint32_t len32;
	uint64_t len;
	memcpy(&len32, p, 4);
	p += 4;
	len = len32;
	if (len32 == 0xffffffffu) {
		memcpy(&len, p, 8);
		p += 8;
	}
	if (len < 4 || len > ENTRY_MAX)
		return -1;
	c->p = p;
	c->end = p + len;
	c->bad = 0;
	return 0;
}

// parse_cie reads the CIE at p, which must lie in .eh_frame (from eh on).
static int parse_cie(const uint8_t *p, const uint8_t *eh, struct cie *cie) {
	struct cur c;
	if (p < eh || entry(p, &c) != 0)
		return -1;
	if (fixed(&c, 4) != 0) // not a CIE
		return -1;
	uint8_t version = u8(&c);
	if (version != 1 && version != 3 && version != 4)
		return -1;
	const char *aug = (const char *)c.p;
	while (u8(&c) != 0 && !c.bad)
		;
	if (version == 4 && (u8(&c) != 8 || u8(&c) != 0)) // address and segment sizes
		return -1;
	cie->code_align = uleb(&c);
	cie->data_align = sleb(&c);
	uint64_t ra = version == 1 ? u8(&c) : uleb(&c);
	if (ra != DW_REG_RA || c.bad)
		return -1;
	cie->fde_enc = PE_ABSPTR;
	cie->has_z = aug[0] == 'z';
	cie->signal = 0;
	if (cie->has_z) {
		uint64_t alen = uleb(&c);
		if (c.bad || alen > (uint64_t)(c.end - c.p))
			return -1;
		struct cur a = {c.p, c.p + alen, 0};
		for (const char *s = aug + 1; *s && !a.bad; s++) {
			switch (*s) {
			case 'R':
				cie->fde_enc = u8(&a);
				break;
			case 'L':
				u8(&a);
				break;
			case 'P': {
				uint8_t enc = u8(&a);
				encoded(&a, enc & 0x7f, 0);
				break;
			}
			case 'S':
				cie->signal = 1;
				break;
			case 'B':
			case 'G':
				break;
			default:
				// Data of letters we do not know follows those we
				// do: what we need is read.
				goto done;
			}
		}
	done:
		if (a.bad)
			return -1;
		c.p += alen;
	} else if (aug[0] != 0) {
		return -1;
	}
	if (c.bad)
		return -1;
	cie->insns = c;
	return 0;
}

// A DWARF expression we can follow: "DW_OP_breg6 off" alone, or followed
// by DW_OP_deref, as gcc emits for functions that realign the stack.
static int rbp_expr(struct cur *c, uint64_t len, int64_t *off, int *deref) {
	struct cur e = {c->p, c->p + len, 0};
	if (len > (uint64_t)(c->end - c->p)) {
		c->bad = 1;
		return 0;
	}
	c->p += len;
	if (u8(&e) != 0x76) // DW_OP_breg6
		return 0;
	*off = sleb(&e);
	*deref = 0;
	if (e.p < e.end && *e.p == 0x06) { // DW_OP_deref
		e.p++;
		*deref = 1;
	}
	return !e.bad && e.p == e.end;
}

#define STATE_DEPTH 16

// run_cfa executes CFA instructions from loc until the row for pc is
// complete. init is the row after the CIE's instructions (NULL while
// running those). Returns -1 for a malformed program.
static int run_cfa(struct cur c, const struct cie *cie, uintptr_t loc, uintptr_t pc, struct row *r,
		   const struct row *init) {
	struct row saved[STATE_DEPTH];
	int depth = 0;
	while (c.p < c.end) {
		uint8_t op = u8(&c);
		uint64_t reg = 0;
		int64_t off = 0;
		uintptr_t adv = 0;
		switch (op >> 6) {
		case 1: // DW_CFA_advance_loc
			adv = op & 0x3f;
			goto advance;
		case 2: // DW_CFA_offset
			reg = op & 0x3f;
			off = (int64_t)uleb(&c) * cie->data_align;
			goto offset;
		case 3: // DW_CFA_restore
			reg = op & 0x3f;
			goto restore;
		}
		switch (op) {
		case 0x00: // nop
		case 0x2e: // GNU_args_size: matters only to landing pads
			if (op)
				uleb(&c);
			break;
		case 0x01: { // set_loc
			uintptr_t to = encoded(&c, cie->fde_enc, 0);
			if (to > pc)
				return 0;
			loc = to;
			break;
		}
		case 0x02:
			adv = fixed(&c, 1);
			goto advance;
		case 0x03:
			adv = fixed(&c, 2);
			goto advance;
		case 0x04:
			adv = fixed(&c, 4);
			goto advance;
		case 0x05: // offset_extended
			reg = uleb(&c);
			off = (int64_t)uleb(&c) * cie->data_align;
			goto offset;
		case 0x11: // offset_extended_sf
			reg = uleb(&c);
			off = sleb(&c) * cie->data_align;
			goto offset;
		case 0x2f: // GNU_negative_offset_extended
			reg = uleb(&c);
			off = -(int64_t)uleb(&c) * cie->data_align;
			goto offset;
		case 0x06: // restore_extended
			reg = uleb(&c);
			goto restore;
		case 0x07: // undefined
		case 0x08: // same_value
			reg = uleb(&c);
			if (reg == DW_REG_RBP)
				r->rbp = op == 0x07 ? R_UNDEF : R_SAME;
			else if (reg == DW_REG_RA)
				r->ra = op == 0x07 ? R_UNDEF : R_BAD;
			break;
		case 0x09: // register: saved in another register
		case 0x14: // val_offset
		case 0x15: // val_offset_sf
			reg = uleb(&c);
			if (op == 0x15)
				sleb(&c);
			else
				uleb(&c);
			if (reg == DW_REG_RBP)
				r->rbp = R_BAD;
			else if (reg == DW_REG_RA)
				r->ra = R_BAD;
			break;
		case 0x0a: // remember_state
			if (depth == STATE_DEPTH)
				return -1;
			saved[depth++] = *r;
			break;
		case 0x0b: // restore_state: the CFA rule too, as libgcc does
			if (depth == 0)
				return -1;
			*r = saved[--depth];
			break;
		case 0x0c: // def_cfa
		case 0x12: // def_cfa_sf
			reg = uleb(&c);
			off = op == 0x0c ? (int64_t)uleb(&c) : sleb(&c) * cie->data_align;
			r->cfa = reg == DW_REG_RSP ? CFA_RSP : reg == DW_REG_RBP ? CFA_RBP : CFA_STOP;
			r->cfa_off = off;
			break;
		case 0x0d: // def_cfa_register
			reg = uleb(&c);
			r->cfa = reg == DW_REG_RSP ? CFA_RSP : reg == DW_REG_RBP ? CFA_RBP : CFA_STOP;
			break;
		case 0x0e: // def_cfa_offset
			r->cfa_off = (int64_t)uleb(&c);
			break;
		case 0x13: // def_cfa_offset_sf
			r->cfa_off = sleb(&c) * cie->data_align;
			break;
		case 0x0f: { // def_cfa_expression
			int deref;
			uint64_t len = uleb(&c);
			if (rbp_expr(&c, len, &off, &deref) && deref) {
				r->cfa = CFA_DEREF;
				r->cfa_off = off;
			} else {
				r->cfa = CFA_STOP; // signal trampolines, PLT stubs
			}
			break;
		}
		case 0x10: // expression: saved at the address it computes
		case 0x16: { // val_expression: the value it computes
			int deref;
			reg = uleb(&c);
			uint64_t len = uleb(&c);
			int ok = rbp_expr(&c, len, &off, &deref) && !deref && op == 0x10;
			if (reg == DW_REG_RBP) {
				r->rbp = ok ? R_RBP : R_BAD;
				r->rbp_off = off;
			} else if (reg == DW_REG_RA) {
				r->ra = R_BAD;
			}
			break;
		}
		default:
			return -1;
		}
		if (c.bad)
			return -1;
		continue;
	advance:
		loc += adv * cie->code_align;
		if (loc > pc)
			return 0;
		continue;
	offset:
		if (reg == DW_REG_RBP) {
			r->rbp = R_OFF;
			r->rbp_off = off;
		} else if (reg == DW_REG_RA) {
			r->ra = R_OFF;
			r->ra_off = off;
		}
		continue;
	restore:
		if (!init)
			return -1;
		if (reg == DW_REG_RBP) {
			r->rbp = init->rbp;
			r->rbp_off = init->rbp_off;
		} else if (reg == DW_REG_RA) {
			r->ra = init->ra;
			r->ra_off = init->ra_off;
		}
		continue;
	}
	return c.bad ? -1 : 0;
}

// fde_search finds the FDE for pc in the sorted table of .eh_frame_hdr,
// and where .eh_frame starts.
static const uint8_t *fde_search(const uint8_t *hdr, uintptr_t pc, const uint8_t **eh) {
	struct cur c = {hdr, hdr + 4 + 8 + 8, 0};
	if (u8(&c) != 1)
		return NULL;
	uint8_t ptr_enc = u8(&c), count_enc = u8(&c), table_enc = u8(&c);
	// The table is binary-searchable only in this encoding, which every
	// linker emits.
	if (ptr_enc == PE_OMIT || count_enc == PE_OMIT || table_enc != (PE_DATAREL | PE_SDATA4))
		return NULL;
	*eh = (const uint8_t *)encoded(&c, ptr_enc, (uintptr_t)hdr);
	uintptr_t count = encoded(&c, count_enc, (uintptr_t)hdr);
	if (c.bad || count == 0 || count > ENTRY_MAX)
		return NULL;
	const int32_t *tab = (const int32_t *)c.p;
	uintptr_t lo = 0, hi = count;
	while (hi - lo > 1) {
		uintptr_t mid = lo + (hi - lo) / 2;
		if ((uintptr_t)hdr + (intptr_t)tab[2 * mid] <= pc)
			lo = mid;
		else
			hi = mid;
	}
	if ((uintptr_t)hdr + (intptr_t)tab[2 * lo] > pc)
		return NULL;
	return hdr + tab[2 * lo + 1];
}

// The kernel returns from a signal handler to the C library's restorer,
// "mov $15, %rax; syscall" (rt_sigreturn); its stack holds the ucontext.
static const uint8_t sigreturn_code[] = {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};

// compute works out the rule for a cache key. Returns 0 with a cacheable
// rule (possibly CFA_STOP), or -1 when no object holds the address.
static int compute(uintptr_t key, struct rule *out) {
	uintptr_t ip = key & ~EXACT;
	// For a return address, the call before it: a call can be the last
	// instruction of a function (noreturn), or of the FDE.
	uintptr_t pc = key & EXACT ? ip : ip - 1;
	out->key = key;
	out->kind = CFA_STOP;
	out->cfa_off = 0;
	out->rbp_off = 0;
	out->ra_off8 = 0;
	struct find_object fo;
	if (find_object((void *)pc, &fo) != 0)
		return -1;
	// The object's tables are trusted as libgcc trusts them; what is
	// checked keeps a damaged table from sending us far astray. (The
	// mapping bounds _dl_find_object reports cannot help: for the main
	// program they cover only its text.)
	const uint8_t *hdr = fo.eh_frame, *eh = NULL;
	if (!hdr)
		return 0;
	const uint8_t *fde = fde_search(hdr, pc, &eh);
	struct cur c;
	if (!fde || fde < eh || entry(fde, &c) != 0)
		return 0;
	const uint8_t *idp = c.p;
	uint32_t cie_off = (uint32_t)fixed(&c, 4);
	if (cie_off == 0 || (uintptr_t)(idp - eh) < cie_off)
		return 0;
	struct cie cie;
	if (parse_cie(idp - cie_off, eh, &cie) != 0)
		return 0;
	uintptr_t begin = encoded(&c, cie.fde_enc, 0);
	uintptr_t range = encoded(&c, cie.fde_enc & 0x0f, 0);
	if (cie.has_z) {
		uint64_t alen = uleb(&c);
		if (alen > (uint64_t)(c.end - c.p))
			return 0;
		c.p += alen;
	}
	if (c.bad || pc < begin || pc - begin >= range)
		return 0;
	// glibc describes its restorer with CFI expressions; its FDE starts
	// a byte early so that ip - 1 finds it.
	if (cie.signal && ip - begin + sizeof sigreturn_code <= range &&
	    memcmp((const void *)ip, sigreturn_code, sizeof sigreturn_code) == 0) {
		out->kind = CFA_SIGNAL;
		return 0;
	}

	struct row init = {CFA_STOP, R_SAME, R_UNDEF, 0, 0, 0};
	if (run_cfa(cie.insns, &cie, begin, (uintptr_t)-1, &init, NULL) != 0)
		return 0;
	struct row r = init;
	if (run_cfa(c, &cie, begin, pc, &r, &init) != 0)
		return 0;

	if (r.ra != R_OFF || r.cfa == CFA_STOP)
		return 0; // outermost frame, or one we cannot step past
	if ((r.ra_off & 7) || r.ra_off / 8 < -128 || r.ra_off / 8 > 127 ||
	    r.cfa_off < INT32_MIN || r.cfa_off > INT32_MAX)
		return 0;
	uint8_t kind = r.cfa;
	switch (r.rbp) {
	case R_SAME:
		kind |= RBP_SAME;
		break;
	case R_OFF:
	case R_RBP:
		if (r.rbp_off < INT16_MIN || r.rbp_off > INT16_MAX) {
			kind |= RBP_LOST;
			break;
		}
		kind |= r.rbp == R_OFF ? RBP_AT_CFA : RBP_AT_RBP;
		out->rbp_off = (int16_t)r.rbp_off;
		break;
	default:
		kind |= RBP_LOST;
	}
	out->kind = kind;
	out->cfa_off = (int32_t)r.cfa_off;
	out->ra_off8 = (int8_t)(r.ra_off / 8);
	return 0;
}

// ---- the walk ------------------------------------------------------------------

// Where a signal frame keeps the interrupted registers: the ucontext's
// gregs (after uc_flags, uc_link, uc_stack), indexed as in <sys/ucontext.h>.
#define UC_GREGS 40
#define UC_RBP 10
#define UC_RSP 15
#define UC_RIP 16

#define STACK_SPAN (64u << 20) // the most we assume a known stack to hold
#define FRAME_MAX (1u << 20)   // the most one frame may take

// Where the walk may read: [lo, hi). For a stack whose extent is unknown
// (sigaltstack, coroutines) each page is checked with a system call
// before it is read, which is slow but rare.
struct bounds {
	uintptr_t lo, span; // span = hi - lo - 8: one compare per read
	uintptr_t ok_lo, ok_hi; // pages known readable
	int check;
};

static int readable(struct bounds *b, uintptr_t a) {
	uintptr_t page = a & ~(uintptr_t)4095;
	char byte;
	struct iovec local = {&byte, 1}, remote = {(void *)page, 1};
	if (syscall(SYS_process_vm_readv, getpid(), &local, 1UL, &remote, 1UL, 0UL) != 1)
		return 0;
	if (page == b->ok_hi)
		b->ok_hi += 4096;
	else if (page + 4096 == b->ok_lo)
		b->ok_lo = page;
	else
		b->ok_lo = page, b->ok_hi = page + 4096;
	return 1;
}

static inline int load(struct bounds *b, uintptr_t a, uintptr_t *v) {
	if (a - b->lo > b->span)
		return 0;
	// Unaligned reads are harmless within a known stack; on an unknown
	// one they could cross into a page not checked.
	if (UNLIKELY(b->check) && ((a & 7) || ((a < b->ok_lo || a >= b->ok_hi) && !readable(b, a))))
		return 0;
	*v = *(const uintptr_t *)a;
	return 1;
}

// stack_bounds: the main thread's stack ends at __libc_stack_end; glibc
// puts a thread's descriptor (pthread_self) at the top of its stack block,
// whether glibc or the program allocated the stack.
static inline void stack_bounds(struct bounds *b, uintptr_t sp) {
	uintptr_t top = (uintptr_t)__libc_stack_end, hi;
	b->check = 0;
	b->ok_lo = b->ok_hi = 0;
	if (sp < top && top - sp < STACK_SPAN) {
		hi = top + 8;
	} else if (top = (uintptr_t)pthread_self(), sp < top && top - sp < STACK_SPAN) {
		hi = top;
	} else {
		hi = sp + STACK_SPAN;
		b->check = 1;
	}
	b->lo = sp;
	b->span = hi - sp - 8;
}

static inline int ours(uintptr_t pc) { return pc - self_text_lo < self_text_hi - self_text_lo; }

// leave_ours follows our own frames, which have frame pointers, from
// start to the first return address outside our text. The frame holding
// it is the hook the program called: above it is the program's stack
// pointer at the call, and its saved rbp is the program's. The recorder
// passes the hook's frame, where the loop ends at once; from the
// unwinder's own frame it climbs three or four.
static inline int leave_ours(const void *start, uintptr_t *ip, uintptr_t *sp, uintptr_t *rbp) {
	uintptr_t *fp = (uintptr_t *)start, base = (uintptr_t)fp;
	for (int k = 0;; k++) {
		if (k == 32 || (uintptr_t)fp - base > FRAME_MAX || ((uintptr_t)fp & 7))
			return 0;
		if (!ours(fp[1]))
			break;
		uintptr_t *next = (uintptr_t *)fp[0];
		if (next <= fp)
			return 0;
		fp = next;
	}
	*ip = fp[1];
	*sp = (uintptr_t)(fp + 2);
	*rbp = fp[0];
	return 1;
}

// walk_find returns the kept walk from (ip, sp), or NULL with *victim set
// to the slot a new one takes.
static inline struct walk *walk_find(struct cache *c, uintptr_t ip, uintptr_t sp, unsigned *victim) {
	uint64_t h = (ip * 0x9e3779b97f4a7c15u) ^ (sp * 0xc2b2ae3d27d4eb4fu);
	unsigned set = (unsigned)((h ^ (h >> 29)) * 0xff51afd7ed558ccdu >> 62), base = set * WALK_WAYS;
	for (unsigned k = base; k < base + WALK_WAYS; k++)
		if (c->walk_ip[k] == ip && c->walk_sp[k] == sp)
			return &c->walk[k];
	*victim = base + (c->walk_next[set]++ % WALK_WAYS);
	return NULL;
}

// walk_replay gives a kept walk's stack when its reads still hold: its
// memo, or else a copy.
static inline int walk_replay(struct walk *w, uintptr_t rbp, int max, uintptr_t *pcs, struct stack_memo *m, uint32_t *known) {
	if (!w->ok || w->max != max || (w->need_rbp && w->rbp != rbp))
		return 0;
	// Every word is compared, without a branch each: a replay almost
	// always matches. The words lie between sp, the same as the kept
	// walk's, and the stack's top, so all of them can be read.
	uintptr_t diff = 0;
	int k = 0, n = w->nread;
#define W(i) (*(const volatile uintptr_t *)w->addr[i] ^ w->val[i])
	for (; k + 4 <= n; k += 4)
		diff |= W(k) | W(k + 1) | W(k + 2) | W(k + 3);
	for (; k < n; k++)
		diff |= W(k);
#undef W
	if (diff)
		return 0;
	uint64_t memo = w->memo;
	if ((uint32_t)(memo >> 32) == w->tag && (uint32_t)memo != 0) {
		*known = (uint32_t)memo;
		return 1;
	}
	for (int k = 0; k < w->n; k++)
		pcs[k] = w->pcs[k];
	m->slot = &w->memo;
	m->tag = w->tag;
	return 1;
}

// note adds a word read to the walk being kept, if any.
static inline void note(struct walk *w, int *keep, uintptr_t a, uintptr_t v) {
	if (!w)
		return;
	if (w->nread < SC_READS) {
		w->addr[w->nread] = a;
		w->val[w->nread++] = v;
	} else {
		*keep = 0;
	}
}

// rload is load that notes the word read in the walk being kept.
static inline int rload(struct bounds *b, uintptr_t a, uintptr_t *v, struct walk *w, int *keep) {
	if (!load(b, a, v)) {
		*keep = 0;
		return 0;
	}
	note(w, keep, a, *v);
	return 1;
}

// Where the walk's current rbp came from, for the walk being kept: the
// register it started with, or the stack word at rbp_at (noted once used).
enum { RBP_START, RBP_LOADED, RBP_NOTED };

// lookup finds the rule for key, working it out on a miss. NULL when no
// object holds the address (JIT code, or garbage).
static inline struct rule *lookup(struct cache *c, uint32_t i, uintptr_t key, struct rule *tmp) {
	struct rule *r = c ? &c->rule[i] : tmp;
	if (LIKELY(c && r->key == key))
		return r;
	if (compute(key, tmp) != 0)
		return NULL;
	if (c)
		*r = *tmp;
	return r;
}

// cfi_forget_in drops every memo of a thread's walks.
static void cfi_forget_in(struct cache *c) {
	for (unsigned k = 0; k < WALK_SETS * WALK_WAYS; k++)
		c->walk[k].memo = 0;
}

HIDDEN void cfi_forget(void) {
	if (t_cache)
		cfi_forget_in(t_cache);
}

// cfi_capture: see unwind_capture. noinline keeps its frame, which the
// walk over our own frames starts from.
HIDDEN __attribute__((noinline)) int cfi_capture(uintptr_t *pcs, int max, struct stack_memo *m, uint32_t *known,
						 const void *frame) {
	uintptr_t ip, sp, rbp;
	if (max <= 0 || !leave_ours(frame ? frame : __builtin_frame_address(0), &ip, &sp, &rbp))
		return 0;
	int rbp_ok = 1;
	struct cache *c = cache();
	struct bounds b;
	stack_bounds(&b, sp);
	// The walk to keep: its slot is emptied now and filled if it ends
	// as one that can be replayed.
	struct walk *w = NULL;
	int keep = 0, rbp_src = RBP_START;
	uintptr_t rbp_at = 0;
	if (LIKELY(c != NULL) && max <= SC_PCS && !b.check) {
		unsigned v;
		w = walk_find(c, ip, sp, &v);
		if (w && walk_replay(w, rbp, max, pcs, m, known))
			return w->n;
		if (!w) {
			c->walk_ip[v] = ip;
			c->walk_sp[v] = sp;
			w = &c->walk[v];
		}
		if (++c->tick == 0) { // wrapped: no tag may repeat a live memo's
			cfi_forget_in(c);
			c->tick = 1;
		}
		w->tag = c->tick;
		w->memo = 0;
		w->rbp = rbp;
		w->n = w->nread = 0;
		w->max = (int16_t)max;
		w->need_rbp = w->ok = 0;
		keep = 1;
	}
	struct rule tmp;
	uint32_t i = slot(ip);
	const struct rule *r = lookup(c, i, ip, &tmp);
	int n = 0;
	while (n < max) {
		// A frame with no rule (JIT code) is the last one recorded.
		if (w)
			w->pcs[n] = ip;
		pcs[n++] = ip;
		if (!r)
			keep = 0;
		if (n == max || !r)
			break;
		uintptr_t cfa, v, key;
		if ((r->kind & CFA_MASK) == CFA_RBP || (r->kind & CFA_MASK) == CFA_DEREF || (r->kind & RBP_MASK) == RBP_AT_RBP) {
			// This rule uses rbp: the walk depends on where it came from.
			if (w && rbp_src == RBP_START)
				w->need_rbp = 1;
			else if (rbp_src == RBP_LOADED)
				note(w, &keep, rbp_at, rbp);
			rbp_src = RBP_NOTED;
		}
		switch (r->kind & CFA_MASK) {
		case CFA_RSP:
			cfa = sp + (intptr_t)r->cfa_off;
			break;
		case CFA_RBP:
			if (!rbp_ok)
				goto out;
			cfa = rbp + (intptr_t)r->cfa_off;
			break;
		case CFA_DEREF:
			if (!rbp_ok || !rload(&b, rbp + (intptr_t)r->cfa_off, &cfa, w, &keep))
				goto out;
			break;
		case CFA_SIGNAL: {
			// The interrupted code may run on another stack (the
			// handler's may be a sigaltstack): bounds anew. Its ip
			// is exact, not a return address.
			keep = 0;
			uintptr_t g = sp + UC_GREGS;
			if (!load(&b, g + 8 * UC_RIP, &v) || !load(&b, g + 8 * UC_RSP, &cfa) ||
			    !load(&b, g + 8 * UC_RBP, &rbp))
				goto out;
			rbp_ok = 1;
			sp = cfa;
			ip = v;
			stack_bounds(&b, sp);
			if (ip < 4096)
				goto out;
			i = slot(ip | EXACT);
			r = lookup(c, i, ip | EXACT, &tmp);
			continue;
		}
		default:
			goto out;
		}
		if (cfa - sp - 1 >= FRAME_MAX) // not above sp, or too far
			break;
		if (!rload(&b, cfa + 8 * (intptr_t)r->ra_off8, &v, w, &keep))
			break;
		switch (r->kind & RBP_MASK) {
		case RBP_AT_CFA:
			rbp_at = cfa + r->rbp_off;
			rbp_ok = load(&b, rbp_at, &rbp);
			keep = keep && rbp_ok;
			rbp_src = RBP_LOADED;
			break;
		case RBP_AT_RBP:
			rbp_at = rbp + r->rbp_off;
			rbp_ok = rbp_ok && load(&b, rbp_at, &rbp);
			keep = keep && rbp_ok;
			rbp_src = RBP_LOADED;
			break;
		case RBP_LOST:
			rbp_ok = 0;
			break;
		}
		sp = cfa;
		ip = key = v;
		if (ip < 4096)
			break;
		if (LIKELY(c != NULL)) {
			uint32_t g = c->next[i];
			if (LIKELY(c->rule[g].key == key)) {
				i = g;
				r = &c->rule[g];
				continue;
			}
			g = slot(key);
			c->next[i] = (uint16_t)g;
			i = g;
		}
		r = lookup(c, i, key, &tmp);
	}
out:
	if (w) {
		w->n = (int16_t)n;
		w->ok = (uint8_t)keep;
		if (keep) {
			m->slot = &w->memo;
			m->tag = w->tag;
		}
	}
	return n;
}

// fp_capture walks saved frame pointers with the same bounds on reads:
// in code built without frame pointers rbp holds anything, and the walk
// must end, not fault, when it does.
HIDDEN __attribute__((noinline)) int fp_capture(uintptr_t *pcs, int max, const void *frame) {
	uintptr_t ip, sp, fp;
	if (max <= 0 || !leave_ours(frame ? frame : __builtin_frame_address(0), &ip, &sp, &fp))
		return 0;
	struct bounds b;
	stack_bounds(&b, sp);
	int n = 0;
	while (n < max && ip >= 4096) {
		pcs[n++] = ip;
		uintptr_t next;
		// Each frame lies above the one it called.
		if (n == max || fp < sp || !load(&b, fp, &next) || !load(&b, fp + 8, &ip))
			break;
		sp = fp + 16;
		fp = next;
	}
	return n;
}

// cfi_init tells whether the CFI unwinder can run here.
HIDDEN int cfi_init(void) {
	find_object = (int (*)(void *, struct find_object *))dlsym(RTLD_DEFAULT, "_dl_find_object");
	if (!find_object)
		return 0;
	cache_key_ok = pthread_key_create(&cache_key, cache_free) == 0;
	return 1;
}
