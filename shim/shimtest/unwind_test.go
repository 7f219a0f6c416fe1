package shimtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/analyzer/symbolize"
	"libleak/internal/testutil"
)

// The CFI unwinder (the default) must find the same stacks as libunwind.

// buildNoFP compiles a C program the way distributions build: -O2,
// without frame pointers, so only the CFI can unwind it. src is a file of
// testprogs/ or, with code, the name to give code.
func buildNoFP(t *testing.T, src, code string) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(testutil.Root(), "testprogs", src)
	if code != "" {
		in = filepath.Join(dir, src)
		if err := os.WriteFile(in, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), filepath.Ext(src)))
	args := []string{"-O2", "-g", "-fomit-frame-pointer", "-o", out, in, "-pthread"}
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// edgeC allocates where unwinding is hard: in functions that realign the
// stack (gcc describes their frames with DWARF expressions), in signal
// handlers on the thread's stack and on an alternate stack, in coroutines
// on mmap'ed and malloc'ed stacks, deep in recursion, and on threads with
// default and 200 MiB stacks.
const edgeC = `#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

static void *keep(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); return p; }

__attribute__((noinline)) void *realigned(int n) {
	char buf[64] __attribute__((aligned(64)));
	char vla[n];
	memset(buf, n, sizeof buf);
	memset(vla, n, n);
	__asm__ volatile("" : : "r"(buf), "r"(vla) : "memory");
	return keep(malloc(16 + buf[3] + vla[1]));
}
__attribute__((noinline)) void *above_realigned(int n) { return keep(realigned(n)); }
__attribute__((noinline)) void *recurse(int d) { return d ? keep(recurse(d - 1)) : keep(malloc(8)); }

static volatile int signals;
static void handler(int sig) { (void)sig; free(keep(recurse(3))); signals++; }

static ucontext_t uc_main, uc_co;
static void co_fn(void) { for (int i = 0; i < 5; i++) free(keep(recurse(20))); }
static void in_coroutine(char *stack, size_t size) {
	getcontext(&uc_co);
	uc_co.uc_stack.ss_sp = stack;
	uc_co.uc_stack.ss_size = size;
	uc_co.uc_link = &uc_main;
	makecontext(&uc_co, co_fn, 0);
	swapcontext(&uc_main, &uc_co);
}

static void *thread(void *a) { for (int i = 0; i < 200; i++) free(above_realigned(10 + i % 50)); return a; }

int main(void) {
	for (int i = 0; i < 100; i++) {
		free(above_realigned(5 + i));
		free(recurse(i));
	}
	signal(SIGUSR1, handler);
	for (int i = 0; i < 10; i++)
		raise(SIGUSR1);
	stack_t ss = {.ss_sp = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), .ss_size = 65536};
	sigaltstack(&ss, NULL);
	struct sigaction sa = {.sa_handler = handler, .sa_flags = SA_ONSTACK};
	sigaction(SIGUSR2, &sa, NULL);
	for (int i = 0; i < 10; i++)
		raise(SIGUSR2);
	size_t size = 64 << 10;
	in_coroutine(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), size);
	char *heap_stack = malloc(size);
	in_coroutine(heap_stack, size);
	free(heap_stack);
	pthread_t t[4];
	pthread_attr_t big;
	pthread_attr_init(&big);
	pthread_attr_setstacksize(&big, 200 << 20);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], i & 1 ? &big : NULL, thread, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	printf("signals=%d\n", signals);
	return 0;
}
`

// traceWith runs argv under the shim with the given unwinder ("" for the
// default) and returns its first trace, checking that the trace names the
// unwinder that was asked for.
func traceWith(t *testing.T, unwinder string, env []string, argv ...string) *replay.Replay {
	t.Helper()
	// No exit-time freeres: whether it runs depends on whether threads
	// are gone yet, and its allocations would differ between the runs.
	r := same(t, t.TempDir(), append([]string{"LEAK_UNWIND=" + unwinder, "LEAK_FREERES=0"}, env...), "", argv...)
	in := load(t, r.traces[0])
	want := unwinder
	if want == "" {
		want = "cfi"
	}
	got := in.Replay.Hdr.Unwinder
	if want == "libunwind" && got == "fp" {
		t.Skip("libunwind.so.8 is not installed (apt-get install libunwind8)")
	}
	if got != want {
		t.Fatalf("LEAK_UNWIND=%q: trace says unwinder %q, want %q", unwinder, got, want)
	}
	return in.Replay
}

// moduleAt returns the module holding pc.
func moduleAt(r *replay.Replay, pc uint64) *event.Module {
	for i := len(r.Modules) - 1; i >= 0; i-- {
		for _, s := range r.Modules[i].Segments {
			if pc >= s.Start && pc < s.End {
				return r.Modules[i]
			}
		}
	}
	return nil
}

// stackKey spells a stack as module+offset frames, which stay the same
// from run to run whatever the address-space layout.
func stackKey(r *replay.Replay, pcs []uint64) string {
	var b strings.Builder
	for _, pc := range pcs {
		if m := moduleAt(r, pc); m != nil {
			fmt.Fprintf(&b, "%s+%#x ", filepath.Base(m.Path), pc-m.Base)
		} else {
			fmt.Fprintf(&b, "?%#x ", pc)
		}
	}
	return b.String()
}

// stackCounts is the multiset of allocation stacks: key -> allocations.
// Allocations recorded without a stack (the tracer's own) are left out.
func stackCounts(r *replay.Replay) map[string]uint64 {
	m := map[string]uint64{}
	for id, s := range r.Sites {
		if pcs := r.Stacks[id]; len(pcs) > 0 {
			m[stackKey(r, pcs)] += s.Allocs
		}
	}
	return m
}

// depths returns the allocation-weighted mean stack depth and the number
// of allocations with a stack.
func depths(r *replay.Replay) (mean float64, n uint64) {
	var sum uint64
	for id, s := range r.Sites {
		if d := uint64(len(r.Stacks[id])); d > 0 {
			sum += d * s.Allocs
			n += s.Allocs
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(sum) / float64(n), n
}

func diffCounts(t *testing.T, what string, cfi, lu map[string]uint64) {
	t.Helper()
	var keys []string
	for k := range cfi {
		keys = append(keys, k)
	}
	for k := range lu {
		if _, ok := cfi[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	bad := 0
	for _, k := range keys {
		if cfi[k] != lu[k] {
			if bad++; bad <= 10 {
				t.Errorf("%s: stack %s: %d allocations with cfi, %d with libunwind", what, k, cfi[k], lu[k])
			}
		}
	}
	if bad > 10 {
		t.Errorf("%s: %d stacks differ in all", what, bad)
	}
}

func TestUnwindAgreesWithLibunwind(t *testing.T) {
	bench := buildNoFP(t, "alloc_bench.c", "")
	edge := buildNoFP(t, "edge.c", edgeC)
	cases := []struct {
		name string
		env  []string
		argv []string
	}{
		{"alloc_bench", nil, []string{bench, "20000"}},
		{"alloc_bench-threads", nil, []string{bench, "20000", "3"}},
		{"edge", []string{"LEAK_DEPTH=128"}, []string{edge}},
		{"cxx_new", nil, []string{testutil.Program(t, "cxx_new.cc")}},
		{"fib_thread", nil, []string{testutil.Program(t, "fib_thread.c"), "10"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfi := stackCounts(traceWith(t, "cfi", c.env, c.argv...))
			lu := stackCounts(traceWith(t, "libunwind", c.env, c.argv...))
			if len(cfi) == 0 {
				t.Fatal("no stacks recorded")
			}
			diffCounts(t, c.name, cfi, lu)
		})
	}
}

func TestUnwindRealPrograms(t *testing.T) {
	py := `
import json, re, threading
def work(n):
    return [json.dumps({"k": [str(i)] * 3}) for i in range(n)]
ts = [threading.Thread(target=work, args=(3000,)) for _ in range(2)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(re.findall(r"\d+", " ".join(work(2000)))))
`
	progs := []struct {
		name string
		argv []string
	}{
		{"python3", []string{need(t, "/usr/bin/python3"), "-c", py}},
		{"sort", []string{need(t, "sort"), "/etc/services"}},
		{"perl", []string{need(t, "perl"), "-e", `my %h; $h{$_ % 97} .= "x" for 1..20000; print scalar(keys %h), "\n"`}},
	}
	env := []string{"PYTHONHASHSEED=0"}
	for _, p := range progs {
		t.Run(p.name, func(t *testing.T) {
			dc, nc := depths(traceWith(t, "", env, p.argv...))
			dl, nl := depths(traceWith(t, "libunwind", env, p.argv...))
			t.Logf("mean depth: cfi %.2f (%d allocations), libunwind %.2f (%d)", dc, nc, dl, nl)
			if dc < 0.95*dl || dc < 5 {
				t.Errorf("mean depth with cfi %.2f, with libunwind %.2f: want ≥ 95%% and ≥ 5", dc, dl)
			}
		})
	}
}

func TestUnwindFunctionNames(t *testing.T) {
	bench := buildNoFP(t, "alloc_bench.c", "")
	r := traceWith(t, "", nil, bench, "1000")
	var mods []event.Module
	for _, m := range r.Modules {
		mods = append(mods, *m)
	}
	p := symbolize.New(symbolize.Options{Demangle: true}).Process(mods)
	seen := map[int]bool{}
	for id, s := range r.Sites {
		pcs := r.Stacks[id]
		if s.Allocs == 0 || len(pcs) == 0 || moduleAt(r, pcs[0]) == nil || filepath.Base(moduleAt(r, pcs[0]).Path) != "alloc_bench" {
			continue
		}
		var names []string
		for _, pc := range pcs {
			for _, f := range p.Frames(pc, true) {
				// gcc's clones (level3.constprop.0) keep the name before the dot.
				names = append(names, strings.SplitN(f.Function, ".", 2)[0])
			}
		}
		if names[0] != "alloc_site" {
			if names[0] != "resize" {
				t.Errorf("stack starts in %s: %v", names[0], names)
			} else if want := []string{"resize", "run", "main"}; !prefix(names, want) {
				t.Errorf("realloc stack %v, want it to start %v", names, want)
			}
			continue
		}
		depth := 0
		if len(names) > 1 {
			fmt.Sscanf(names[1], "level%d", &depth)
		}
		want := []string{"alloc_site"}
		for k := depth; k >= 1; k-- {
			want = append(want, fmt.Sprintf("level%d", k))
		}
		want = append(want, "run", "main")
		if depth < 9 || depth > 12 || !prefix(names, want) {
			t.Errorf("malloc stack %v, want %v", names, want)
			continue
		}
		seen[depth] = true
		// What comes after main is libc's start code: present, whatever
		// its symbols are called.
		if len(names) < len(want)+2 {
			t.Errorf("stack ends at main: %v", names)
		}
	}
	for d := 9; d <= 12; d++ {
		if !seen[d] {
			t.Errorf("no malloc stack of depth %d", d)
		}
	}
}

func prefix(s, p []string) bool {
	if len(s) < len(p) {
		return false
	}
	for i := range p {
		if s[i] != p[i] {
			return false
		}
	}
	return true
}

// Frame-pointer walks read whatever rbp holds in code built without frame
// pointers: they must end, not fault, when it points off the stack (as it
// did in gas, run by gcc).
func TestUnwindFramePointersSafe(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hello.c")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	same(t, dir, []string{"LEAK_UNWIND=fp"}, "", need(t, "gcc"), "-O2", "-o", filepath.Join(dir, "hello"), src)
	same(t, dir, []string{"LEAK_UNWIND=fp", "LEAK_DEPTH=128"}, "", buildNoFP(t, "edge.c", edgeC))
}
