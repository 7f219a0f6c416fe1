package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// analyzerRow is one analyzer on one trace.
type analyzerRow struct {
	tool       string // "leakanalyze" or "heaptrack_print"
	iterations int
	trace      string
	traceBytes int64
	counters   counters
	walls      []time.Duration
	rss        []int64
	skip       string
	err        error
}

func (r *analyzerRow) eventsPerSecond() (float64, bool) {
	if r.err != nil || r.skip != "" || len(r.walls) == 0 {
		return 0, false
	}
	return ratio(float64(r.counters.events()), medianDuration(r.walls).Seconds())
}

func (r *analyzerRow) peakRSS() int64 {
	var m int64
	for _, v := range r.rss {
		m = max(m, v)
	}
	return m
}

// heaptrackPrintArgs asks heaptrack_print for its leak report only, the
// closest match to leakanalyze's output and the least work it can do.
var heaptrackPrintArgs = []string{"--print-peaks=0", "--print-allocators=0", "--print-temporary=0", "--print-leaks=1"}

// runAnalyzer records alloc_bench once per trace size with libleak (default
// unwinder, one thread) and with heaptrack, then times each analyzer on its
// own tool's trace of the same run.
func (h *harness) runAnalyzer() []analyzerRow {
	var rows []analyzerRow
	for _, iters := range h.p.analyzeIters {
		ll := analyzerRow{tool: "leakanalyze", iterations: iters}
		dir := filepath.Join(h.work, "analyze", fmt.Sprintf("libleak-%d", iters))
		ll.trace, ll.traceBytes, ll.counters, ll.err = h.record(dir, "leak.*", []string{h.bin, itoa(iters), "1"},
			[]string{"LD_PRELOAD=" + h.shim, "LEAK_OUT=" + dir})
		rows = append(rows, ll)

		ht := analyzerRow{tool: "heaptrack_print", iterations: iters, skip: h.missing["heaptrack"]}
		if ht.skip == "" {
			dir := filepath.Join(h.work, "analyze", fmt.Sprintf("heaptrack-%d", iters))
			ht.trace, ht.traceBytes, ht.counters, ht.err = h.record(dir, "ht.*",
				[]string{"heaptrack", "-o", filepath.Join(dir, "ht"), h.bin, itoa(iters), "1"}, nil)
		}
		rows = append(rows, ht)
	}

	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		for i := range rows {
			rows[i].err = err
		}
		h.failed = true
		return rows
	}
	defer devnull.Close()
	for rep := 0; rep < h.p.analyzeReps; rep++ {
		for i := range rows {
			r := &rows[i]
			if r.err != nil || r.skip != "" {
				continue
			}
			argv := []string{h.analyzer, "--format", "json", r.trace}
			if r.tool == "heaptrack_print" {
				argv = append(append([]string{"heaptrack_print"}, heaptrackPrintArgs...), r.trace)
			}
			res, err := h.run(argv, nil, devnull)
			if err != nil {
				r.err = err
				logf("%s on %s events: %v", r.tool, fmtCount(r.counters.events()), err)
				continue
			}
			r.walls = append(r.walls, res.wall)
			r.rss = append(r.rss, res.maxRSS)
			logf("%s run %d/%d on %s events (%s): %s, peak RSS %s", r.tool, rep+1, h.p.analyzeReps,
				fmtCount(r.counters.events()), fmtBytes(r.traceBytes), fmtSeconds(res.wall), fmtBytes(res.maxRSS))
		}
	}
	for _, r := range rows {
		if r.err != nil {
			h.failed = true
		}
	}
	return rows
}

// record runs alloc_bench once under a tracer and returns the one trace it
// left in dir.
func (h *harness) record(dir, pattern string, argv, env []string) (string, int64, counters, error) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, counters{}, err
	}
	logf("recording %s", strings.Join(argv, " "))
	r, err := h.run(argv, env, nil)
	if err != nil {
		return "", 0, counters{}, err
	}
	ctr, err := parseCounters(r.stdout)
	if err != nil {
		return "", 0, counters{}, err
	}
	names, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(names) != 1 {
		return "", 0, counters{}, fmt.Errorf("expected one trace %s in %s, found %d", pattern, dir, len(names))
	}
	st, err := os.Stat(names[0])
	if err != nil {
		return "", 0, counters{}, err
	}
	return names[0], st.Size(), ctr, nil
}

func (h *harness) analyzerReport(rows []analyzerRow) string {
	var b strings.Builder
	b.WriteString("### Analyzer throughput\n\n")
	fmt.Fprintf(&b, "One recording of alloc_bench (1 thread) per size and tool; each analyzer reads its own tool's trace "+
		"of that run: `leakanalyze --format json TRACE > /dev/null` and `heaptrack_print %s TRACE > /dev/null`. "+
		"Median of %d runs; events are the program's mallocs + reallocs + frees; peak RSS is the largest ru_maxrss seen.\n\n",
		strings.Join(heaptrackPrintArgs, " "), h.p.analyzeReps)
	t := &table{header: []string{"analyzer", "iterations", "events", "trace", "B/event", "runs", "median wall", "events/s", "peak RSS"}}
	for i := range rows {
		r := &rows[i]
		switch {
		case r.skip != "":
			t.add(r.tool, fmtCount(uint64(r.iterations)), r.skip)
		case r.err != nil:
			t.add(r.tool, fmtCount(uint64(r.iterations)), "failed: "+strings.ReplaceAll(r.err.Error(), "|", "/"))
		default:
			eps, ok := r.eventsPerSecond()
			rate := "n/a"
			if ok {
				rate = fmtRate(eps)
			}
			t.add(r.tool, fmtCount(uint64(r.iterations)), fmtCount(r.counters.events()), fmtBytes(r.traceBytes),
				fmtFloat(ratio(float64(r.traceBytes), float64(r.counters.events()))), itoa(len(r.walls)),
				fmtSeconds(medianDuration(r.walls)), rate, fmtBytes(r.peakRSS()))
		}
	}
	b.WriteString(t.markdown())
	b.WriteString("\n")

	for _, iters := range h.p.analyzeIters {
		ll, ht := findRow(rows, "leakanalyze", iters), findRow(rows, "heaptrack_print", iters)
		a, aok := ll.eventsPerSecond()
		c, cok := ht.eventsPerSecond()
		r, ok := ratio(a, c)
		fmt.Fprintf(&b, "- %s iterations: leakanalyze reads %s the events/s of heaptrack_print.\n",
			fmtCount(uint64(iters)), fmtRatio(r, ok && aok && cok))
	}
	if n := len(h.p.analyzeIters); n >= 2 {
		small, large := h.p.analyzeIters[0], h.p.analyzeIters[n-1]
		for _, tool := range []string{"leakanalyze", "heaptrack_print"} {
			s, l := findRow(rows, tool, small), findRow(rows, tool, large)
			if s.peakRSS() == 0 || l.peakRSS() == 0 {
				continue
			}
			ev, _ := ratio(float64(l.counters.events()), float64(s.counters.events()))
			g, _ := ratio(float64(l.peakRSS()), float64(s.peakRSS()))
			fmt.Fprintf(&b, "- %s peak RSS: %s at %s events, %s at %s events (%.2fx memory for %.2fx events).\n",
				tool, fmtBytes(s.peakRSS()), fmtCount(s.counters.events()), fmtBytes(l.peakRSS()),
				fmtCount(l.counters.events()), g, ev)
		}
	}
	b.WriteString("\n")
	return b.String()
}

func findRow(rows []analyzerRow, tool string, iters int) *analyzerRow {
	for i := range rows {
		if rows[i].tool == tool && rows[i].iterations == iters {
			return &rows[i]
		}
	}
	return &analyzerRow{tool: tool, iterations: iters, skip: "not run"}
}

// targetsReport compares the measurements with the project's targets; a
// target that was not measured in this run says so rather than passing.
func (h *harness) targetsReport(cells map[string]map[int]*cell, rows []analyzerRow) string {
	t := &table{header: []string{"target", "measured", "status"}}
	verdict := func(v float64, ok bool, good func(float64) bool, format func(float64) string) (string, string) {
		if !ok {
			return "not measured", "—"
		}
		if good(v) {
			return format(v), "met"
		}
		return format(v), "**missed**"
	}
	x := func(v float64) string { return fmtRatio(v, true) }
	libleak := &config{name: "libleak", baseline: "native"}
	for i, limit := range []float64{4, 5} {
		if i >= len(h.p.threads) {
			break
		}
		th := h.p.threads[i]
		v, ok := slowdown(cells, libleak, th)
		m, s := verdict(v, ok, func(v float64) bool { return v <= limit }, x)
		t.add(fmt.Sprintf("libleak, default unwinder, %s: ≤ %.0fx native", threadsWord(th), limit), m, s)
	}
	// Bytes per event is held to the worse of the thread counts.
	worst, have := 0.0, false
	for _, th := range h.p.threads {
		if cells == nil || cells["libleak"] == nil {
			break
		}
		if v, ok := bytesPerEvent(cells["libleak"][th]); ok {
			worst, have = max(worst, v), true
		}
	}
	m, s := verdict(worst, have, func(v float64) bool { return v <= 3 }, func(v float64) string { return fmt.Sprintf("%.2f B/event", v) })
	t.add("libleak trace ≤ 3 bytes/event (worst thread count)", m, s)

	var r float64
	ok := false
	if n := len(h.p.analyzeIters); n > 0 && rows != nil {
		large := h.p.analyzeIters[n-1]
		a, aok := findRow(rows, "leakanalyze", large).eventsPerSecond()
		c, cok := findRow(rows, "heaptrack_print", large).eventsPerSecond()
		r, ok = ratio(a, c)
		ok = ok && aok && cok
	}
	m, s = verdict(r, ok, func(v float64) bool { return v >= 3 }, x)
	t.add("leakanalyze ≥ 3x heaptrack_print events/s (largest trace)", m, s)
	return "### Targets\n\n" + t.markdown() + "\n"
}

func threadsWord(n int) string {
	if n == 1 {
		return "1 thread"
	}
	return itoa(n) + " threads"
}
