package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// config is one way of running alloc_bench.
type config struct {
	name     string // -only name; native-fp rides along with whoever needs it
	label    string // %U: the unwinder named in the trace, for libleak rows
	baseline string // the native config this one is divided by; "" for natives
	reps     int
	tracePat string // glob of the trace files the run leaves in its directory
	peer     string // key into harness.missing
	argv     func(dir string, iters, threads int) []string
	env      func(dir string) []string
}

// cell is one configuration at one thread count.
type cell struct {
	walls      []time.Duration
	rss        []int64
	traceBytes []int64
	counters   counters
	haveCtrs   bool
	err        error
}

func (h *harness) configs(sel map[string]bool) []*config {
	prog := func(bin string) func(string, int, int) []string {
		return func(_ string, iters, threads int) []string {
			return []string{bin, itoa(iters), itoa(threads)}
		}
	}
	noEnv := func(string) []string { return nil }
	all := []*config{
		{name: "native", label: "native (-O2 -g)", argv: prog(h.bin), env: noEnv},
		{name: "native-fp", label: "native (-O2 -g -fno-omit-frame-pointer)", argv: prog(h.binFP), env: noEnv},
		{name: "libleak", label: "libleak (default unwinder%U)", baseline: "native", tracePat: "leak.*",
			argv: prog(h.bin),
			env: func(dir string) []string {
				return []string{"LD_PRELOAD=" + h.shim, "LEAK_OUT=" + dir}
			}},
		{name: "libleak-fp", label: "libleak (LEAK_UNWIND=fp%U, -fno-omit-frame-pointer build)", baseline: "native-fp",
			tracePat: "leak.*", argv: prog(h.binFP),
			env: func(dir string) []string {
				return []string{"LD_PRELOAD=" + h.shim, "LEAK_OUT=" + dir, "LEAK_UNWIND=fp"}
			}},
		{name: "heaptrack", label: "heaptrack", baseline: "native", tracePat: "ht.*", peer: "heaptrack",
			argv: func(dir string, iters, threads int) []string {
				return []string{"heaptrack", "-o", filepath.Join(dir, "ht"), h.bin, itoa(iters), itoa(threads)}
			}, env: noEnv},
		// exitcode=0: the leaks are intended, any other failure still shows.
		{name: "lsan", label: "LeakSanitizer (LD_PRELOAD liblsan.so.0)", baseline: "native", peer: "LeakSanitizer",
			argv: prog(h.bin),
			env: func(string) []string {
				return []string{"LD_PRELOAD=" + lsanLib, "LSAN_OPTIONS=exitcode=0"}
			}},
		{name: "valgrind", label: "valgrind memcheck --leak-check=full", baseline: "native", peer: "valgrind",
			argv: func(_ string, iters, threads int) []string {
				return []string{"valgrind", "--leak-check=full", h.bin, itoa(iters), itoa(threads)}
			}, env: noEnv},
	}
	want := map[string]bool{}
	for _, c := range all {
		if c.name != "native" && c.name != "native-fp" && sel[c.name] {
			want[c.name] = true
			want[c.baseline] = true
		}
	}
	if sel["native"] {
		want["native"] = true
	}
	var cfgs []*config
	for _, c := range all {
		if !want[c.name] {
			continue
		}
		c.reps = h.p.reps
		if c.name == "valgrind" {
			c.reps = h.p.valgrindReps
		}
		cfgs = append(cfgs, c)
	}
	return cfgs
}

// runOverhead runs every configuration round-robin: repetition k of every
// configuration before repetition k+1 of any, so a burst of load from
// elsewhere on the machine lands on all of them rather than on one row.
func (h *harness) runOverhead(cfgs []*config) map[string]map[int]*cell {
	cells := map[string]map[int]*cell{}
	total := 0
	for _, c := range cfgs {
		cells[c.name] = map[int]*cell{}
		for _, t := range h.p.threads {
			cells[c.name][t] = &cell{}
			if h.missing[c.peer] == "" {
				total += c.reps
			}
		}
	}

	// Warm-up: page cache, ld.so caches and the peers' own start-up files,
	// so the first measured run of each tool is not an outlier.
	for _, c := range cfgs {
		if h.missing[c.peer] != "" {
			continue
		}
		for _, t := range h.p.threads {
			dir := filepath.Join(h.work, "warmup", fmt.Sprintf("%s-t%d", c.name, t))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				cells[c.name][t].err = err
				continue
			}
			logf("warm-up %s threads=%d (%d iterations)", c.name, t, h.p.warmupIters)
			if _, err := h.run(c.argv(dir, h.p.warmupIters, t), c.env(dir), nil); err != nil {
				cells[c.name][t].err = fmt.Errorf("warm-up: %v", err)
				logf("%s threads=%d: %v", c.name, t, cells[c.name][t].err)
			}
			if c.tracePat == "leak.*" && t == h.p.threads[0] {
				h.libleakUnwinders[c.name] = h.unwinderOf(dir)
			}
			os.RemoveAll(dir)
		}
	}

	n := 0
	maxReps := 0
	for _, c := range cfgs {
		maxReps = max(maxReps, c.reps)
	}
	for rep := 0; rep < maxReps; rep++ {
		for _, c := range cfgs {
			if rep >= c.reps || h.missing[c.peer] != "" {
				continue
			}
			for _, t := range h.p.threads {
				ce := cells[c.name][t]
				n++
				if ce.err != nil {
					continue
				}
				h.measure(c, t, ce)
				if ce.err != nil {
					h.failed = true
					logf("[%d/%d] %s threads=%d run %d/%d: %v", n, total, c.name, t, rep+1, c.reps, ce.err)
					continue
				}
				i := len(ce.walls) - 1
				extra := ""
				if c.tracePat != "" {
					extra = ", trace " + fmtBytes(ce.traceBytes[i])
				}
				logf("[%d/%d] %s threads=%d run %d/%d: %s, peak RSS %s%s", n, total, c.name, t, rep+1, c.reps,
					fmtSeconds(ce.walls[i]), fmtBytes(ce.rss[i]), extra)
			}
		}
	}
	// A cell that failed its warm-up never ran; count it as a failure too.
	for _, c := range cfgs {
		for _, t := range h.p.threads {
			if cells[c.name][t].err != nil {
				h.failed = true
			}
		}
	}
	return cells
}

func (h *harness) measure(c *config, threads int, ce *cell) {
	dir := filepath.Join(h.work, "runs", fmt.Sprintf("%s-t%d", c.name, threads))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		ce.err = err
		return
	}
	// Traces of 2 M iterations are tens of megabytes; keep none around.
	defer os.RemoveAll(dir)
	r, err := h.run(c.argv(dir, h.p.iterations, threads), c.env(dir), nil)
	if err != nil {
		ce.err = err
		return
	}
	ctr, err := parseCounters(r.stdout)
	if err != nil {
		ce.err = err
		return
	}
	// alloc_bench is deterministic: a tool that changes what it counts
	// has changed the program.
	if ce.haveCtrs && ctr != ce.counters {
		ce.err = fmt.Errorf("counters changed between runs: %+v vs %+v", ctr, ce.counters)
		return
	}
	ce.counters, ce.haveCtrs = ctr, true
	if c.tracePat != "" {
		size, files, err := treeBytes(dir, c.tracePat)
		if err != nil {
			ce.err = err
			return
		}
		if files == 0 || size == 0 {
			ce.err = fmt.Errorf("no trace written (%s in %s)", c.tracePat, dir)
			return
		}
		ce.traceBytes = append(ce.traceBytes, size)
	}
	ce.walls = append(ce.walls, r.wall)
	ce.rss = append(ce.rss, r.maxRSS)
}

// unwinderOf reads the unwinder named in the header of the libleak trace in
// dir: the shim falls back to frame pointers when libunwind is missing, and
// a row labelled "default unwinder" must say which one that was.
func (h *harness) unwinderOf(dir string) string {
	names, _ := filepath.Glob(filepath.Join(dir, "leak.*"))
	if len(names) == 0 {
		return ""
	}
	cmd := exec.Command(h.analyzer, "dump", names[0])
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return ""
	}
	if err := cmd.Start(); err != nil {
		return ""
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	// Only the header is wanted; the rest of the dump is not.
	cmd.Process.Kill()
	cmd.Wait()
	return headerField(line, "unwinder")
}

// headerField returns the value of key=value in a dump header line.
func headerField(line, key string) string {
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v
		}
	}
	return ""
}

type cellStats struct {
	wall, lo, hi time.Duration
	rss          int64
	trace        int64
	runs         int
}

func stats(ce *cell) cellStats {
	var s cellStats
	s.runs = len(ce.walls)
	s.wall = medianDuration(ce.walls)
	s.lo, s.hi = minMaxDuration(ce.walls)
	rss := make([]float64, len(ce.rss))
	for i, v := range ce.rss {
		rss[i] = float64(v)
	}
	s.rss = int64(median(rss))
	tb := make([]float64, len(ce.traceBytes))
	for i, v := range ce.traceBytes {
		tb[i] = float64(v)
	}
	s.trace = int64(median(tb))
	return s
}

// slowdown is the configuration's median wall time over its native
// baseline's at the same thread count.
func slowdown(cells map[string]map[int]*cell, c *config, threads int) (float64, bool) {
	if c.baseline == "" || cells == nil {
		return 0, false
	}
	ce, base := cells[c.name][threads], cells[c.baseline][threads]
	if ce == nil || base == nil || ce.err != nil || base.err != nil || len(ce.walls) == 0 || len(base.walls) == 0 {
		return 0, false
	}
	return ratio(float64(medianDuration(ce.walls)), float64(medianDuration(base.walls)))
}

func bytesPerEvent(ce *cell) (float64, bool) {
	if ce == nil || ce.err != nil || len(ce.traceBytes) == 0 {
		return 0, false
	}
	return ratio(float64(stats(ce).trace), float64(ce.counters.events()))
}

func (h *harness) overheadReport(cfgs []*config, cells map[string]map[int]*cell) string {
	var b strings.Builder
	b.WriteString("### Recording overhead\n\n")
	events := ""
	if ce := cells["native"][h.p.threads[0]]; ce != nil && ce.haveCtrs {
		events = fmt.Sprintf(" = %s events (%s mallocs, %s reallocs, %s frees)", fmtCount(ce.counters.events()),
			fmtCount(ce.counters.Allocs), fmtCount(ce.counters.Reallocs), fmtCount(ce.counters.Frees))
	}
	fmt.Fprintf(&b, "alloc_bench, %s iterations%s, every tool at the same iteration count; "+
		"median of %d runs (valgrind %d), runs interleaved. Slowdown is the median wall time over the "+
		"native median at the same thread count. Peak RSS is the median of wait4's ru_maxrss "+
		"(largest single process of the tool's process tree). B/event is trace bytes / (mallocs + reallocs + frees).\n\n",
		fmtCount(uint64(h.p.iterations)), events, h.p.reps, h.p.valgrindReps)
	t := &table{header: []string{"tool", "threads", "runs", "median wall", "min–max", "slowdown", "peak RSS", "trace", "B/event"}}
	for _, c := range cfgs {
		// The trace header names the unwinder that actually ran.
		u := h.libleakUnwinders[c.name]
		if u != "" {
			u = ": trace says " + u
		}
		label := strings.ReplaceAll(c.label, "%U", u)
		for _, th := range h.p.threads {
			if why := h.missing[c.peer]; why != "" {
				t.add(label, itoa(th), why)
				continue
			}
			ce := cells[c.name][th]
			if ce.err != nil {
				t.add(label, itoa(th), "failed: "+strings.ReplaceAll(ce.err.Error(), "|", "/"))
				continue
			}
			s := stats(ce)
			slow := "1.00x (baseline)"
			if c.baseline != "" {
				slow = fmtRatio(slowdown(cells, c, th))
			}
			trace, bpe := "—", "—"
			if c.tracePat != "" {
				trace = fmtBytes(s.trace)
				bpe = fmtFloat(bytesPerEvent(ce))
			}
			t.add(label, itoa(th), itoa(s.runs), fmtSeconds(s.wall),
				fmt.Sprintf("%.3f–%.3f", s.lo.Seconds(), s.hi.Seconds()), slow, fmtBytes(s.rss), trace, bpe)
		}
	}
	b.WriteString(t.markdown())
	b.WriteString("\n")
	return b.String()
}

func fmtFloat(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}
