package shimtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/analyzer/traceformat"
	"libleak/internal/testutil"
)

// counters parses the key=value words a test program prints.
func counters(t *testing.T, line string) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, kv := range regexp.MustCompile(`(\w+)=(\d+)`).FindAllStringSubmatch(line, -1) {
		v, _ := strconv.ParseUint(kv[2], 10, 64)
		m[kv[1]] = v
	}
	return m
}

// moduleOf returns the path of the module holding pc.
func moduleOf(r *replay.Replay, pc uint64) string {
	for i := len(r.Modules) - 1; i >= 0; i-- {
		for _, s := range r.Modules[i].Segments {
			if pc >= s.Start && pc < s.End {
				return r.Modules[i].Path
			}
		}
	}
	return ""
}

// fromModule tells whether a stack's first frame (the allocator's caller)
// lies in the module whose base name is mod.
func fromModule(r *replay.Replay, stack uint64, mod string) bool {
	pcs := r.Stacks[stack]
	return len(pcs) > 0 && filepath.Base(moduleOf(r, pcs[0])) == mod
}

type tally struct {
	blocks, bytes uint64
	ops           map[event.Op]uint64
}

// live sums what is still live at the end of a trace and was allocated
// directly by code in module mod.
func live(r *replay.Replay, mod string) (heap, maps tally) {
	h, m := r.Live()
	heap.ops, maps.ops = map[event.Op]uint64{}, map[event.Op]uint64{}
	for _, b := range h {
		if fromModule(r, b.Stack, mod) {
			heap.blocks++
			heap.bytes += b.Size
			heap.ops[b.Op]++
		}
	}
	for _, b := range m {
		if fromModule(r, b.Stack, mod) {
			maps.blocks++
			maps.bytes += b.Size
			maps.ops[b.Op]++
		}
	}
	return
}

func load(t *testing.T, path string) *analyze.Input {
	t.Helper()
	in, err := analyze.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// traceOne runs a test program under the shim and returns its counters
// and its single trace.
func traceOne(t *testing.T, bin string, args ...string) (map[string]uint64, *analyze.Input) {
	t.Helper()
	r := same(t, t.TempDir(), nil, "", append([]string{bin}, args...)...)
	if len(r.traces) != 1 {
		t.Fatalf("%s: want 1 trace, got %v", bin, r.traces)
	}
	return counters(t, r.stdout), load(t, r.traces[0])
}

func TestFibThreadLeaks(t *testing.T) {
	bin := testutil.Program(t, "fib_thread.c")
	c, in := traceOne(t, bin, "20")
	heap, _ := live(in.Replay, "fib_thread")
	if heap.blocks != 20 || heap.bytes != 20*8192 || heap.ops[event.OpCalloc] != 20 || c["leaked_bytes"] != heap.bytes {
		t.Errorf("fib_thread leaks: got %d blocks, %d bytes, ops %v; program says %v", heap.blocks, heap.bytes, heap.ops, c)
	}
	// All 20 come from one site, on the worker thread.
	sites := map[uint64]bool{}
	hb, _ := in.Replay.Live()
	for _, b := range hb {
		if fromModule(in.Replay, b.Stack, "fib_thread") {
			sites[b.Stack] = true
			if b.Tid == uint32(in.Replay.Hdr.Pid) {
				t.Errorf("block 0x%x allocated on the main thread", b.Addr)
			}
		}
	}
	if len(sites) != 1 {
		t.Errorf("want 1 allocation site, got %d", len(sites))
	}
}

func TestMmapLeaks(t *testing.T) {
	bin := testutil.Program(t, "mmap_leak.c")
	c, in := traceOne(t, bin)
	_, maps := live(in.Replay, "mmap_leak")
	if maps.blocks != 12 || maps.bytes != 12*40960 || c["leaked_regions"] != 12 {
		t.Errorf("mmap_leak: got %d regions, %d bytes; program says %v", maps.blocks, maps.bytes, c)
	}
}

func TestCxxNew(t *testing.T) {
	bin := testutil.Program(t, "cxx_new.cc")
	c, in := traceOne(t, bin)
	heap, _ := live(in.Replay, "cxx_new")
	if heap.blocks != 2 || heap.bytes != 4+40 || heap.ops[event.OpNew] != 1 || heap.ops[event.OpNewArray] != 1 {
		t.Errorf("cxx_new: got %d blocks, %d bytes, ops %v; program says %v", heap.blocks, heap.bytes, heap.ops, c)
	}
	for _, a := range in.Replay.Anomalies {
		t.Errorf("unexpected anomaly %+v", a)
	}
}

func TestCleanProgram(t *testing.T) {
	bin := testutil.Program(t, "clean.c")
	c, in := traceOne(t, bin)
	heap, maps := live(in.Replay, "clean")
	if heap.blocks != 0 || maps.blocks != 0 {
		t.Errorf("clean: %d blocks, %d mappings left live", heap.blocks, maps.blocks)
	}
	if len(in.Replay.Anomalies) != 0 {
		t.Errorf("clean: anomalies %+v", in.Replay.Anomalies)
	}
	if c["allocs"] == 0 {
		t.Errorf("clean printed no counters: %v", c)
	}
}

// siteCounts counts, over allocation sites in module mod, what the replay
// matched: allocations and the frees that released them.
func siteCounts(r *replay.Replay, mod string) (allocs, frees uint64) {
	for id, s := range r.Sites {
		if fromModule(r, id, mod) {
			allocs += s.Allocs
			frees += s.Frees
		}
	}
	return
}

// replayEach replays a trace and also hands every event to fn.
type replayEach struct {
	*replay.Replay
	fn func(e *event.Event)
}

// EventBatch and Recs override the embedded Replay's: a decoder hands
// runs of events, or of compact records, to them when it has them, which
// would bypass Event below.
func (r *replayEach) EventBatch(evs []event.Event) {
	for i := range evs {
		r.Event(&evs[i])
	}
}

func (r *replayEach) Recs(tid uint32, recs []event.Rec, evs []event.Event) {
	r.EventBatch(event.AppendEvents(nil, tid, recs, evs))
}

func (r *replayEach) Event(e *event.Event) {
	r.Replay.Event(e)
	r.fn(e)
}

// opCounter counts a trace's events by op, for events whose stack is in mod.
type opCounter struct {
	replayEach
	mod          string
	byOp         map[event.Op]uint64
	reallocFrees uint64 // reallocs that released a block
	frees        uint64
}

func newOpCounter(mod string) *opCounter {
	c := &opCounter{mod: mod, byOp: map[event.Op]uint64{}}
	c.replayEach = replayEach{Replay: replay.New(), fn: c.count}
	return c
}

func (c *opCounter) count(e *event.Event) {
	switch {
	case e.Op == event.OpFree:
		c.frees++
	case e.Stack != 0 && fromModule(c.Replay, e.Stack, c.mod):
		c.byOp[e.Op]++
		if e.Kind == event.Realloc {
			c.reallocFrees++
		}
	}
}

// runOK runs argv traced, with env added to the environment, and fails
// the test unless it exits 0 and leaves n traces.
func runOK(t *testing.T, n int, env []string, argv ...string) result {
	t.Helper()
	r := run(t, true, t.TempDir(), env, "", argv...)
	if r.status != 0 {
		t.Fatalf("%s exited %d: %s", filepath.Base(argv[0]), r.status, r.stderr)
	}
	if len(r.traces) != n {
		t.Fatalf("want %d traces, got %v", n, r.traces)
	}
	return r
}

// TestStressCounts runs with the live table and without it
// (LEAK_SCAN=0): either way the shard locks must order every address's
// events across threads, or cross-thread frees would not match.
func TestStressCounts(t *testing.T) {
	bin := testutil.Program(t, "stress.c")
	for _, env := range [][]string{nil, {"LEAK_SCAN=0"}} {
		name := "live table"
		if env != nil {
			name = strings.Join(env, ",")
		}
		t.Run(name, func(t *testing.T) { stressCounts(t, bin, env) })
	}
}

func stressCounts(t *testing.T, bin string, env []string) {
	// The interleaving of threads, and so the output, differs run to run:
	// the trace is checked against the counters this run printed.
	r := runOK(t, 2, env, bin, "8", "big") // the parent's trace and the child's
	lines := map[string]map[string]uint64{}
	pids := map[uint64]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		role := strings.TrimPrefix(strings.Fields(l)[0], "role=")
		lines[role] = counters(t, l)
		pids[lines[role]["pid"]] = role
	}
	var total uint64
	for _, path := range r.traces {
		oc := newOpCounter("stress")
		st, err := decodeInto(path, oc)
		if err != nil {
			t.Fatal(err)
		}
		oc.Finish()
		role := pids[uint64(oc.Hdr.Pid)]
		want := lines[role]
		if want == nil {
			t.Fatalf("%s: pid %d printed nothing", path, oc.Hdr.Pid)
		}
		if st.Dropped != 0 || st.Truncated {
			t.Errorf("%s: dropped %d, truncated %v", role, st.Dropped, st.Truncated)
		}
		allocs := oc.byOp[event.OpMalloc] + oc.byOp[event.OpCalloc]
		if allocs != want["allocs"] || oc.byOp[event.OpRealloc] != want["reallocs"] {
			t.Errorf("%s: trace has %d malloc/calloc and %d realloc calls, program made %d and %d",
				role, allocs, oc.byOp[event.OpRealloc], want["allocs"], want["reallocs"])
		}
		// Every free the program made released a block the trace knows,
		// except, in the child, blocks inherited from the parent.
		_, matched := siteCounts(oc.Replay, "stress")
		wantFrees := want["frees"] + oc.reallocFrees - want["inherited_frees"] - want["inherited_reallocs"]
		if matched != wantFrees {
			t.Errorf("%s: %d frees matched allocations, want %d", role, matched, wantFrees)
		}
		heap, _ := live(oc.Replay, "stress")
		if heap.blocks != want["live_blocks"] || heap.bytes != want["live_bytes"] {
			t.Errorf("%s: %d blocks, %d bytes live at exit; program says %d, %d",
				role, heap.blocks, heap.bytes, want["live_blocks"], want["live_bytes"])
		}
		for _, a := range oc.Anomalies {
			t.Errorf("%s: anomaly %+v", role, a)
			break
		}
		total += st.Events
	}
	if total < 10_000_000 {
		t.Errorf("only %d events: the stress test wants ≥ 10 M", total)
	}
}

// TestBackReferencesAcrossTableClears has one thread allocate and free
// more than 2^20 blocks each way: the writer clears its back-reference
// tables every 2^20 addresses and keeps only an ordinal's low 20 bits
// (record.c), and every address decoded past that must still be the one
// the program used.
func TestBackReferencesAcrossTableClears(t *testing.T) {
	bin := testutil.Program(t, "alloc_bench.c")
	r := runOK(t, 1, nil, bin, "1100000", "1")
	want := counters(t, r.stdout)
	if want["allocs"] < 1<<20 || want["frees"] < 1<<20 {
		t.Fatalf("alloc_bench made %d allocations and %d frees, fewer than 2^20: %q", want["allocs"], want["frees"], r.stdout)
	}
	oc := newOpCounter("alloc_bench")
	st, err := decodeInto(r.traces[0], oc)
	if err != nil {
		t.Fatal(err)
	}
	oc.Finish()
	if st.Dropped != 0 || st.Truncated {
		t.Errorf("dropped %d, truncated %v", st.Dropped, st.Truncated)
	}
	if oc.byOp[event.OpMalloc] != want["allocs"] || oc.byOp[event.OpRealloc] != want["reallocs"] {
		t.Errorf("trace has %d mallocs and %d reallocs, program made %d and %d",
			oc.byOp[event.OpMalloc], oc.byOp[event.OpRealloc], want["allocs"], want["reallocs"])
	}
	if _, matched := siteCounts(oc.Replay, "alloc_bench"); matched != want["frees"]+oc.reallocFrees {
		t.Errorf("%d frees matched allocations, want %d", matched, want["frees"]+oc.reallocFrees)
	}
	heap, _ := live(oc.Replay, "alloc_bench")
	if heap.blocks != want["leaked_blocks"] || heap.bytes != want["leaked_bytes"] {
		t.Errorf("%d blocks, %d bytes live at exit; program says %d, %d", heap.blocks, heap.bytes, want["leaked_blocks"], want["leaked_bytes"])
	}
	for _, a := range oc.Anomalies {
		t.Errorf("anomaly %+v", a)
		break
	}
}

func decodeInto(path string, h event.Handler) (st statsT, err error) {
	s, err := traceformatDecodeFile(path, h)
	return statsT{Dropped: s.Dropped, Truncated: s.Truncated, Events: s.Events}, err
}

type statsT struct {
	Dropped, Events uint64
	Truncated       bool
}

func TestExitPaths(t *testing.T) {
	bin := testutil.Program(t, "exit_paths.c")
	for _, path := range []string{"return", "exit_thread", "_exit", "_Exit", "abort", "segv", "segv_nohandler", "pthread_exit", "pthread_exit_alone",
		"segv_recover", "sigterm", "sigpipe", "sigint_thread"} {
		t.Run(path, func(t *testing.T) {
			r := same(t, t.TempDir(), nil, "", bin, path)
			if len(r.traces) != 1 {
				t.Fatalf("want 1 trace, got %v", r.traces)
			}
			in := load(t, r.traces[0])
			if !in.Stats.Ended {
				t.Errorf("trace has no end record")
			}
			heap, _ := live(in.Replay, "exit_paths")
			if heap.blocks != 3 || heap.bytes != 666 {
				t.Errorf("%d blocks, %d bytes live; want 3 blocks, 666 bytes", heap.blocks, heap.bytes)
			}
			// The status exit or _exit was given, or the signal the
			// process died of. The program's SIGSEGV handler in "segv"
			// calls _exit(3); the one in "segv_recover" lets main go on.
			want := map[string]int{"return": 0, "exit_thread": 2, "_exit": 4, "_Exit": 5, "abort": 6, "segv": 3,
				"segv_nohandler": 11, "segv_recover": 0, "sigterm": 15, "sigpipe": 13, "sigint_thread": 2}[path]
			reason := traceformat.EndExit
			switch {
			case strings.Contains(r.stdout, "expect=signal:"):
				reason = traceformat.EndSignal
			case path == "_exit" || path == "_Exit" || path == "segv":
				reason = traceformat.EndUnderscoreExit
			}
			if in.Stats.ExitStatus != want || in.Stats.EndReason != reason {
				t.Errorf("end record says %d (reason %d), want %d (reason %d)", in.Stats.ExitStatus, in.Stats.EndReason, want, reason)
			}
			// Memory is scanned but after a crash, which may have left the
			// heap corrupt: signals that end a healthy process are scanned.
			crashed := path == "abort" || path == "segv" || path == "segv_nohandler"
			if scanned := len(in.Replay.Scans) > 0; scanned == crashed {
				t.Errorf("scanned %v, want %v", scanned, !crashed)
			}
		})
	}
}

func TestDlopenLeak(t *testing.T) {
	main := testutil.Program(t, "dlopen_main.c")
	lib := filepath.Join(t.TempDir(), "libdlopen_lib.so")
	src := filepath.Join(testutil.Root(), "testprogs", "dlopen_lib.c")
	if b, err := exec.Command("gcc", "-shared", "-fPIC", "-g", "-O0", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	c, in := traceOne(t, main, lib)
	heap, _ := live(in.Replay, "libdlopen_lib.so")
	if heap.blocks != 3 || heap.bytes != 300 || c["leaked_bytes"] != 300 {
		t.Errorf("got %d blocks, %d bytes from the library; program says %v", heap.blocks, heap.bytes, c)
	}
	var m *event.Module
	for _, mod := range in.Replay.Modules {
		if filepath.Base(mod.Path) == "libdlopen_lib.so" {
			m = mod
		}
	}
	if m == nil || m.Unloaded == 0 || len(m.BuildID) == 0 {
		t.Fatalf("library module record: %+v", m)
	}
	// The symbolizer places a frame in the module loaded at the time of
	// its event: the library's allocations must fall between its load
	// and unload records' times.
	blocks, _ := in.Replay.Live()
	for _, b := range blocks {
		if fromModule(in.Replay, b.Stack, "libdlopen_lib.so") && (b.Time < m.Time || b.Time > m.Unloaded) {
			t.Errorf("block 0x%x made at %d, outside the library's lifetime %d..%d", b.Addr, b.Time, m.Time, m.Unloaded)
		}
	}
}

var _ = fmt.Sprint

// Daemons close every descriptor they did not open, and programs dup2 onto
// numbers they expect free: the trace's descriptor must survive each way,
// unseen by the program, and the trace must hold the leaks made after.
func TestProgramClosesEveryDescriptor(t *testing.T) {
	bin := testutil.Program(t, "close_fds.c")
	for _, mode := range []string{"loop", "closefrom", "close_range", "dup2"} {
		t.Run(mode, func(t *testing.T) {
			c, in := traceOne(t, bin, mode)
			if !in.Stats.Ended || in.Stats.Truncated {
				t.Errorf("trace ended %v, truncated %v", in.Stats.Ended, in.Stats.Truncated)
			}
			heap, _ := live(in.Replay, "close_fds")
			if heap.blocks != c["leaked_blocks"] || heap.bytes != c["leaked_bytes"] {
				t.Errorf("%d blocks, %d bytes left in the trace; the program leaked %v", heap.blocks, heap.bytes, c)
			}
		})
	}
}
