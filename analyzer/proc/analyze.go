package proc

import (
	"encoding/json"
	"fmt"
	"io"
	"libleak/analyzer/texttable"
	"math"
	"sort"
	"strings"

	"libleak/analyzer/slab"
	"libleak/analyzer/trend"
)

// Options tune the analyses.
type Options struct {
	// Confidence a trend needs; 0 means trend.DefaultConfidence.
	Confidence float64
	// MinGrowth is the fitted growth over the window, in bytes, below
	// which steady growth is not flagged.
	MinGrowth float64
	// Top bounds the mappings or processes listed; 0 lists all.
	Top int
}

// DefaultMinGrowth is four pages: less than that over a window is within
// what a process's stack and allocator caches move by themselves.
const DefaultMinGrowth = 16 * 1024

// Metric is the trend of one memory figure.
type Metric struct {
	Name           string        `json:"name"`
	First          uint64        `json:"first_bytes"`
	Last           uint64        `json:"last_bytes"`
	BytesPerSecond float64       `json:"bytes_per_second"`
	Growth         float64       `json:"growth_bytes"`
	Confidence     float64       `json:"confidence"`
	Verdict        trend.Verdict `json:"verdict"`
	Flagged        bool          `json:"flagged"`
}

func metric(name string, t, y []float64, opt Options) Metric {
	r := trend.Analyze(t, y, trend.Options{Confidence: opt.Confidence})
	return Metric{
		Name:           name,
		First:          uint64(math.Max(r.First, 0)),
		Last:           uint64(math.Max(r.Last, 0)),
		BytesPerSecond: round(r.Slope, 1),
		Growth:         math.Round(r.Growth),
		Confidence:     round(r.Confidence, 4),
		Verdict:        r.Verdict,
	}
}

// round keeps reports stable across machines whose floating point differs
// in the last bits, and readable.
func round(v float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

// MappingTrend is the trend of one region of the address space, followed
// across samples by overlap (see lineages), measured as its anonymous
// memory plus swap: the memory a leak holds.
type MappingTrend struct {
	Metric
	Path  string `json:"path"`
	Perms string `json:"perms"`
	// Start and End are the region's addresses at its last sample.
	Start     uint64 `json:"start"`
	End       uint64 `json:"end"`
	FirstSize uint64 `json:"first_size"`
	LastSize  uint64 `json:"last_size"`
	// New is set for regions that appeared during the window.
	New bool `json:"new"`
	// PerInterval is the growth per sampling interval.
	PerInterval float64 `json:"bytes_per_interval"`
}

// Anonymous reports memory that no file backs: anonymous mappings, the
// heap, stacks.
func (m MappingTrend) Anonymous() bool { return m.Path == "" || strings.HasPrefix(m.Path, "[") }

// ProcessReport is one process's growth over the window.
type ProcessReport struct {
	Pid     int      `json:"pid"`
	Name    string   `json:"name"`
	Cmdline []string `json:"cmdline"`
	Samples int      `json:"samples"`
	Seconds float64  `json:"seconds"`
	// Interval is the median time between samples, in seconds.
	Interval float64 `json:"interval"`
	Exited   bool    `json:"exited"`
	// Metrics: anon+swap (what flags the process), rss, pss, uss, vsz,
	// anon, file, shmem, swap.
	Metrics []Metric `json:"metrics"`
	// Mappings lists the regions that grew, flagged ones first, then by
	// rate; More counts those left out by Top.
	Mappings []MappingTrend `json:"mappings"`
	More     int            `json:"more"`
	// AnonMappings is the number of anonymous mappings at the first and
	// last sample: a leak of large malloc blocks adds mappings.
	AnonMappings [2]int   `json:"anon_mappings"`
	Flagged      bool     `json:"flagged"`
	Findings     []string `json:"findings"`
	Next         []string `json:"next"`
	Warnings     []string `json:"warnings,omitempty"`
}

// lineage is one region of the address space followed over time. Regions
// move and change: adjacent anonymous mmaps merge into one growing
// mapping whose start moves down, arenas grow by mprotect, the heap's end
// moves up. A region in one sample continues the region of the previous
// sample it overlaps most with the same path and permissions.
type lineage struct {
	path, perms string
	start, end  uint64
	born        int // index of the first sample it is in
	alive       bool
	anon, size  []float64
}

func trackLineages(samples [][]Mapping) []*lineage {
	var all []*lineage
	var alive []*lineage // alive at the previous sample, sorted by start
	for k, maps := range samples {
		cur := append([]Mapping(nil), maps...)
		sort.Slice(cur, func(i, j int) bool { return cur[i].Start < cur[j].Start })
		type pair struct {
			ov   uint64
			c, l int
		}
		var pairs []pair
		for ci, m := range cur {
			// First lineage that ends after m starts.
			li := sort.Search(len(alive), func(i int) bool { return alive[i].end > m.Start })
			for ; li < len(alive) && alive[li].start < m.End; li++ {
				l := alive[li]
				if l.path != m.Path || l.perms != m.Perms {
					continue
				}
				ov := min(l.end, m.End) - max(l.start, m.Start)
				pairs = append(pairs, pair{ov, ci, li})
			}
		}
		sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].ov > pairs[j].ov })
		owner := make([]*lineage, len(cur))
		taken := make([]bool, len(alive))
		for _, p := range pairs {
			if owner[p.c] == nil && !taken[p.l] {
				owner[p.c], taken[p.l] = alive[p.l], true
			}
		}
		for _, l := range alive {
			l.alive = false
		}
		next := make([]*lineage, 0, len(cur))
		for ci, m := range cur {
			l := owner[ci]
			if l == nil {
				l = &lineage{path: m.Path, perms: m.Perms, born: k,
					anon: make([]float64, k), size: make([]float64, k)}
				all = append(all, l)
			}
			l.start, l.end, l.alive = m.Start, m.End, true
			l.anon = append(l.anon, float64(m.Anonymous+m.Swap))
			l.size = append(l.size, float64(m.Size))
			next = append(next, l)
		}
		// Regions gone from this sample hold nothing now.
		for _, l := range all {
			for len(l.anon) < k+1 {
				l.anon = append(l.anon, 0)
				l.size = append(l.size, 0)
			}
		}
		alive = next
	}
	return all
}

// AnalyzeProcess tests a process's figures and each region of its
// address space for steady growth.
func AnalyzeProcess(run *ProcRun, opt Options) ProcessReport {
	rep := ProcessReport{Pid: run.Pid, Cmdline: run.Cmdline, Samples: len(run.Samples), Exited: run.Exited,
		Metrics: []Metric{}, Mappings: []MappingTrend{}, Findings: []string{}, Next: []string{},
		Warnings: append([]string(nil), run.Warnings...)}
	if rep.Cmdline == nil {
		rep.Cmdline = []string{}
	}
	ss := run.Samples
	if len(ss) == 0 {
		return rep
	}
	rep.Name = ss[0].Status.Name
	rep.Seconds = round(ss[len(ss)-1].T-ss[0].T, 3)
	var gaps []float64
	for i := 1; i < len(ss); i++ {
		gaps = append(gaps, ss[i].T-ss[i-1].T)
	}
	if len(gaps) > 0 {
		sort.Float64s(gaps)
		rep.Interval = round(gaps[len(gaps)/2], 3)
	}
	if len(ss) < 5 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("only %d samples: a trend needs at least 5 to reach 0.99 confidence", len(ss)))
	}

	t := make([]float64, len(ss))
	for i, s := range ss {
		t[i] = s.T
	}
	haveMaps := true
	for _, s := range ss {
		if s.Mappings == nil {
			haveMaps = false
		}
	}
	series := func(f func(s ProcSample, tot Mapping) uint64) []float64 {
		y := make([]float64, len(ss))
		for i, s := range ss {
			y[i] = float64(f(s, Totals(s.Mappings)))
		}
		return y
	}
	anonSwap := func(s ProcSample, tot Mapping) uint64 {
		if haveMaps {
			return tot.Anonymous + tot.Swap
		}
		return s.Status.RssAnon + s.Status.VmSwap
	}
	lead := metric("anon+swap", t, series(anonSwap), opt)
	lead.Flagged = lead.Verdict == trend.Growing && lead.Growth >= opt.MinGrowth
	rep.Metrics = append(rep.Metrics, lead)
	rep.Metrics = append(rep.Metrics, metric("rss", t, series(func(s ProcSample, _ Mapping) uint64 { return s.Status.VmRSS }), opt))
	if haveMaps {
		rep.Metrics = append(rep.Metrics,
			metric("pss", t, series(func(_ ProcSample, m Mapping) uint64 { return m.Pss }), opt),
			metric("uss", t, series(func(_ ProcSample, m Mapping) uint64 { return m.USS() }), opt))
	}
	rep.Metrics = append(rep.Metrics,
		metric("vsz", t, series(func(s ProcSample, _ Mapping) uint64 { return s.Status.VmSize }), opt),
		metric("anon", t, series(func(s ProcSample, _ Mapping) uint64 { return s.Status.RssAnon }), opt),
		metric("file", t, series(func(s ProcSample, _ Mapping) uint64 { return s.Status.RssFile }), opt),
		metric("shmem", t, series(func(s ProcSample, _ Mapping) uint64 { return s.Status.RssShmem }), opt),
		metric("swap", t, series(func(s ProcSample, _ Mapping) uint64 { return s.Status.VmSwap }), opt))
	rep.Flagged = lead.Flagged

	if haveMaps {
		maps := make([][]Mapping, len(ss))
		for i, s := range ss {
			maps[i] = s.Mappings
		}
		rep.AnonMappings = [2]int{countAnon(ss[0].Mappings), countAnon(ss[len(ss)-1].Mappings)}
		var newAnon int
		var newBytes float64
		for _, l := range trackLineages(maps) {
			label := l.path
			if label == "" {
				label = "[anon]"
			}
			mt := MappingTrend{Metric: metric(label, t, l.anon, opt), Path: l.path, Perms: l.perms,
				Start: l.start, End: l.end, FirstSize: uint64(l.size[0]), LastSize: uint64(l.size[len(l.size)-1]),
				New: l.born > 0}
			mt.PerInterval = round(mt.BytesPerSecond*rep.Interval, 1)
			if mt.New && l.alive && mt.Anonymous() {
				newAnon++
				newBytes += l.anon[len(l.anon)-1]
			}
			if !(mt.Last > mt.First || mt.BytesPerSecond > 0) {
				continue
			}
			mt.Flagged = mt.Anonymous() && mt.Verdict == trend.Growing && mt.Growth >= opt.MinGrowth
			rep.Flagged = rep.Flagged || mt.Flagged
			rep.Mappings = append(rep.Mappings, mt)
		}
		sort.SliceStable(rep.Mappings, func(i, j int) bool {
			a, b := rep.Mappings[i], rep.Mappings[j]
			if c := trend.Compare(a.Flagged, a.BytesPerSecond, a.First, a.Last, b.Flagged, b.BytesPerSecond, b.First, b.Last); c != 0 {
				return c < 0
			}
			return a.Start < b.Start
		})
		for _, m := range rep.Mappings {
			if m.Flagged {
				rep.Findings = append(rep.Findings, describeMapping(m, rep.Interval))
			}
		}
		if newAnon >= 3 && newBytes >= opt.MinGrowth {
			rep.Findings = append(rep.Findings, fmt.Sprintf(
				"%d anonymous mappings appeared during the window holding %s: glibc serves blocks of 128 KiB and more (M_MMAP_THRESHOLD) with their own mmap, so a leak of large blocks adds mappings",
				newAnon, slab.FormatBytes(uint64(newBytes))))
		}
		if opt.Top > 0 && len(rep.Mappings) > opt.Top {
			rep.More = len(rep.Mappings) - opt.Top
			rep.Mappings = rep.Mappings[:opt.Top]
		}
	}
	if lead.Flagged && len(rep.Findings) == 0 {
		rep.Findings = append(rep.Findings, fmt.Sprintf("anonymous memory grows steadily: %s (%s over %s), spread over the address space",
			slab.FormatRate(lead.BytesPerSecond), slab.FormatDelta(lead.Growth), slab.FormatSeconds(rep.Seconds)))
	}
	if rep.Flagged {
		cmd := "PROGRAM ARGS..."
		if len(rep.Cmdline) > 0 {
			cmd = shellJoin(rep.Cmdline)
		}
		rep.Next = append(rep.Next,
			"find the code that allocates it: run the program under libleak",
			"leakanalyze run -- "+cmd,
			"or LD_PRELOAD=libleak.so "+cmd+", then leakanalyze analyze on the trace")
	} else if !rep.Exited {
		rep.Next = append(rep.Next, fmt.Sprintf(
			"no steady growth in %s; a slow leak needs a longer window (--duration 10m --interval 10s)", slab.FormatSeconds(rep.Seconds)))
	}
	if rep.Exited {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("process %d exited during the window; the report covers %s before", rep.Pid, slab.FormatSeconds(rep.Seconds)))
	}
	return rep
}

func countAnon(maps []Mapping) int {
	n := 0
	for _, m := range maps {
		if m.Path == "" {
			n++
		}
	}
	return n
}

func describeMapping(m MappingTrend, interval float64) string {
	what := "anonymous region"
	switch {
	case m.Path == "[heap]":
		what = "the heap"
	case strings.HasPrefix(m.Path, "[stack"):
		what = "the stack"
	case m.Path != "":
		what = m.Path
	}
	s := fmt.Sprintf("%s %x-%x (%s) grows %s every %s (%s, confidence %.3f)", what, m.Start, m.End, m.Perms,
		slab.FormatBytes(uint64(math.Max(m.PerInterval, 0))), formatInterval(interval), slab.FormatRate(m.BytesPerSecond), m.Confidence)
	switch {
	case m.Path == "[heap]":
		s += ": small malloc blocks (below the mmap threshold) that are never freed"
	case m.Path == "":
		s += ": mmap'd memory, large malloc blocks, or a thread's malloc arena"
	}
	return s
}

func formatInterval(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.3g s", s)
}

// shellJoin quotes a command line for copying into a shell.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '=' || r == ':' || r == ',' ||
				r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) < 0 {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// WriteJSON writes v, a report of this package, as one JSON document.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func mark(flagged bool) string {
	if flagged {
		return "!"
	}
	return " "
}

// WriteProcessText writes a process report.
func WriteProcessText(w io.Writer, rep ProcessReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "process %d (%s): %d samples over %s", rep.Pid, rep.Name, rep.Samples, slab.FormatSeconds(rep.Seconds))
	if rep.Interval > 0 {
		fmt.Fprintf(&b, ", every %s", formatInterval(rep.Interval))
	}
	b.WriteString("\n")
	if len(rep.Cmdline) > 0 {
		fmt.Fprintf(&b, "  %s\n", shellJoin(rep.Cmdline))
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	if len(rep.Metrics) > 0 {
		b.WriteString("\n")
		tb := texttable.New(6)
		tb.Add("", "first", "last", "change", "rate", "conf", "verdict")
		for _, m := range rep.Metrics {
			tb.Add(mark(m.Flagged)+" "+m.Name, slab.FormatBytes(m.First), slab.FormatBytes(m.Last),
				slab.FormatDelta(float64(m.Last)-float64(m.First)), slab.FormatRate(m.BytesPerSecond),
				fmt.Sprintf("%.3f", m.Confidence), string(m.Verdict))
		}
		tb.Write(&b, "")
	}
	if len(rep.Mappings) > 0 {
		fmt.Fprintf(&b, "\ngrowing mappings (anonymous + swap memory; %d anonymous mappings, %d at the start)\n",
			rep.AnonMappings[1], rep.AnonMappings[0])
		tb := texttable.New(1, 2, 9)
		tb.Add("", "perms", "region", "size", "first", "last", "change", "rate", "conf", "verdict")
		for _, m := range rep.Mappings {
			label := m.Name
			if m.New {
				label += " (new)"
			}
			tb.Add(mark(m.Flagged)+" "+label, m.Perms, fmt.Sprintf("%x-%x", m.Start, m.End), slab.FormatBytes(m.LastSize),
				slab.FormatBytes(m.First), slab.FormatBytes(m.Last), slab.FormatDelta(float64(m.Last)-float64(m.First)),
				slab.FormatRate(m.BytesPerSecond), fmt.Sprintf("%.3f", m.Confidence), string(m.Verdict))
		}
		tb.Write(&b, "")
		if rep.More > 0 {
			fmt.Fprintf(&b, "(%d more growing mappings not shown)\n", rep.More)
		}
	}
	b.WriteString("\n")
	if rep.Flagged {
		b.WriteString("! steady growth:\n")
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	if !rep.Flagged && len(rep.Findings) == 0 {
		b.WriteString("no steady growth\n")
	}
	for i, n := range rep.Next {
		if i == 0 {
			fmt.Fprintf(&b, "next: %s\n", n)
		} else {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
