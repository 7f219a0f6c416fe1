package main

// These tests cover the harness's arithmetic and parsing on fixed inputs.
// The benchmark itself never runs under go test: its timings would be
// meaningless next to the other packages' parallel test processes.

import (
	"testing"
	"time"
)

func TestParseCounters(t *testing.T) {
	// heaptrack shares the program's stdout, so the counters line sits
	// among the tool's own lines.
	out := "heaptrack output will be written to \"/tmp/x/ht.zst\"\n" +
		"starting application, this might take some time...\n" +
		"iterations=2000000 threads=2 allocs=2000000 reallocs=285714 frees=1998000 leaked_blocks=2000 leaked_bytes=537488\n" +
		"Heaptrack finished!\n"
	c, err := parseCounters(out)
	if err != nil {
		t.Fatal(err)
	}
	want := counters{Iterations: 2000000, Threads: 2, Allocs: 2000000, Reallocs: 285714, Frees: 1998000,
		LeakedBlocks: 2000, LeakedBytes: 537488}
	if c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if got := c.events(); got != 4283714 {
		t.Fatalf("events = %d, want 4283714", got)
	}

	for _, bad := range []string{
		"",
		"iterations=1 threads=1 allocs=1 reallocs=0 frees=1 leaked_blocks=0",
		"iterations=1 threads=1 allocs=x reallocs=0 frees=1 leaked_blocks=0 leaked_bytes=0",
		"iterations=1 threads=1 allocs=1 reallocs=0 frees=1 leaked_blocks=0 leaked_bytes=0 extra=1",
	} {
		if _, err := parseCounters(bad); err == nil {
			t.Errorf("parseCounters(%q) succeeded", bad)
		}
	}
}

func TestMedianAndRatio(t *testing.T) {
	if got := median([]float64{5, 1, 3}); got != 3 {
		t.Errorf("odd median = %v, want 3", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("even median = %v, want 2.5", got)
	}
	if got := median(nil); got != 0 {
		t.Errorf("empty median = %v, want 0", got)
	}
	in := []float64{9, 1, 5}
	median(in)
	if in[0] != 9 || in[1] != 1 || in[2] != 5 {
		t.Errorf("median reordered its input: %v", in)
	}
	ds := []time.Duration{1400 * time.Millisecond, 1200 * time.Millisecond, 1300 * time.Millisecond, 9 * time.Second, 1250 * time.Millisecond}
	if got := medianDuration(ds); got != 1300*time.Millisecond {
		t.Errorf("medianDuration = %v, want 1.3s", got)
	}
	if lo, hi := minMaxDuration(ds); lo != 1200*time.Millisecond || hi != 9*time.Second {
		t.Errorf("minMaxDuration = %v, %v", lo, hi)
	}

	r, ok := ratio(1.421, 0.116)
	if got := fmtRatio(r, ok); got != "12.25x" {
		t.Errorf("fmtRatio = %q, want 12.25x", got)
	}
	if r, ok := ratio(1, 0); ok || fmtRatio(r, ok) != "n/a" {
		t.Errorf("ratio by zero: %v %v", r, ok)
	}
	// Trace bytes per event as the report computes it.
	if got := fmtFloat(ratio(24408626, 4283714)); got != "5.70" {
		t.Errorf("bytes/event = %q, want 5.70", got)
	}
}

func TestFormat(t *testing.T) {
	cases := []struct{ got, want string }{
		{fmtCount(0), "0"},
		{fmtCount(999), "999"},
		{fmtCount(1000), "1,000"},
		{fmtCount(21418570), "21,418,570"},
		{fmtBytes(512), "512 B"},
		{fmtBytes(1536), "1.5 KiB"},
		{fmtBytes(24408626), "23.3 MiB"},
		{fmtBytes(25277050880), "23.54 GiB"},
		{fmtSeconds(1421 * time.Millisecond), "1.421 s"},
		{fmtRate(4.5e6), "4.50 M/s"},
		{threadsWord(1), "1 thread"},
		{threadsWord(2), "2 threads"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestTable(t *testing.T) {
	tb := &table{header: []string{"tool", "slowdown"}}
	tb.add("native", "1.00x")
	tb.add("valgrind", "75.12x")
	tb.add("heaptrack", "skipped: heaptrack not installed")
	want := "" +
		"| tool      | slowdown                         |\n" +
		"|-----------|----------------------------------|\n" +
		"| native    | 1.00x                            |\n" +
		"| valgrind  | 75.12x                           |\n" +
		"| heaptrack | skipped: heaptrack not installed |\n"
	if got := tb.markdown(); got != want {
		t.Errorf("markdown:\n%s\nwant:\n%s", got, want)
	}
}

func TestMachineParsers(t *testing.T) {
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n" +
		"processor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	model, n := parseCPUModel(cpuinfo)
	if model != "AMD EPYC 7B13" || n != 2 {
		t.Errorf("parseCPUModel = %q, %d", model, n)
	}
	mem, ok := parseMemTotal("MemTotal:       24684548 kB\nMemFree:        23000000 kB\n")
	if !ok || mem != 24684548*1024 {
		t.Errorf("parseMemTotal = %d, %v", mem, ok)
	}
	if _, ok := parseMemTotal("MemFree: 1 kB\n"); ok {
		t.Error("parseMemTotal found a MemTotal that is not there")
	}
	header := "header pid=4406 ppid=4316 exe=/tmp/bx/ab unwinder=libunwind depth=32 forked=false\n"
	if got := headerField(header, "unwinder"); got != "libunwind" {
		t.Errorf("headerField = %q", got)
	}
	if got := headerField(header, "missing"); got != "" {
		t.Errorf("headerField(missing) = %q", got)
	}
}

func TestRunnerResult(t *testing.T) {
	wall, rss, err := parseRunnerResult("wall_ns=1421000000 maxrss_kb=1744\n")
	if err != nil || wall != 1421*time.Millisecond || rss != 1744*1024 {
		t.Errorf("parseRunnerResult = %v, %d, %v", wall, rss, err)
	}
	if _, _, err := parseRunnerResult("garbage"); err == nil {
		t.Error("parseRunnerResult accepted garbage")
	}
}

func TestParseOnly(t *testing.T) {
	known := []string{"native", "libleak", "analyzer"}
	all, err := parseOnly("", known)
	if err != nil || len(all) != 3 {
		t.Errorf("empty -only = %v, %v", all, err)
	}
	set, err := parseOnly("libleak, analyzer", known)
	if err != nil || len(set) != 2 || !set["libleak"] || !set["analyzer"] {
		t.Errorf("parseOnly = %v, %v", set, err)
	}
	if _, err := parseOnly("libleek", known); err == nil {
		t.Error("unknown name accepted")
	}
	if _, err := parseOnly(",", known); err == nil {
		t.Error("empty list accepted")
	}
}

func TestDefaultParams(t *testing.T) {
	p := defaultParams(false, 0)
	if p.iterations != 2000000 || p.reps != 7 || p.valgrindReps != 3 || p.analyzeReps != 5 ||
		len(p.analyzeIters) != 2 || p.analyzeIters[1] != 10000000 {
		t.Errorf("defaults = %+v", p)
	}
	q := defaultParams(true, 7)
	if q.iterations != 200000 || q.reps != 7 || q.valgrindReps != 1 || q.analyzeReps != 1 {
		t.Errorf("quick with -reps 7 = %+v", q)
	}
}

func TestParseScanned(t *testing.T) {
	blocks, ms, ok := parseScanned("libleak: tracing pid 1 to x\nlibleak: scanned 16777217 blocks (1024 MiB) in 1523 ms\n")
	if !ok || blocks != 16777217 || ms != 1523 {
		t.Errorf("got %d %v %v", blocks, ms, ok)
	}
	if _, _, ok := parseScanned("nothing"); ok {
		t.Error("parsed a line that is not there")
	}
}
