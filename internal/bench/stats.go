package main

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// counters is alloc_bench's own account of what it did. Event counts come
// from here rather than from any tool's output, so every tool and analyzer
// is divided by the same number.
type counters struct {
	Iterations, Threads, Allocs, Reallocs, Frees, LeakedBlocks, LeakedBytes uint64
}

// events is the number of allocator calls a tracer has to record.
func (c counters) events() uint64 { return c.Allocs + c.Reallocs + c.Frees }

// parseCounters finds alloc_bench's summary line in out. Tools such as
// heaptrack print their own lines on the same stdout, so the line is looked
// for rather than assumed to be the only one.
func parseCounters(out string) (counters, error) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "iterations=") {
			continue
		}
		var c counters
		fields := map[string]*uint64{
			"iterations": &c.Iterations, "threads": &c.Threads, "allocs": &c.Allocs,
			"reallocs": &c.Reallocs, "frees": &c.Frees,
			"leaked_blocks": &c.LeakedBlocks, "leaked_bytes": &c.LeakedBytes,
		}
		seen := map[string]bool{}
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			p := fields[k]
			if !ok || p == nil {
				return counters{}, fmt.Errorf("unexpected field %q in %q", f, line)
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return counters{}, fmt.Errorf("field %q: %v", f, err)
			}
			*p = n
			seen[k] = true
		}
		if len(seen) != len(fields) {
			return counters{}, fmt.Errorf("incomplete counters line %q", line)
		}
		return c, nil
	}
	return counters{}, errors.New("no counters line (iterations=...) in the program's output")
}

// median of xs; the mean of the middle pair when len(xs) is even. Medians,
// not means, because a shared two-core machine produces occasional outliers.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

func minMaxDuration(ds []time.Duration) (lo, hi time.Duration) {
	for i, d := range ds {
		if i == 0 || d < lo {
			lo = d
		}
		if i == 0 || d > hi {
			hi = d
		}
	}
	return lo, hi
}

// ratio is a/b, false when b is zero so no table ever shows Inf or NaN.
func ratio(a, b float64) (float64, bool) {
	if b == 0 {
		return 0, false
	}
	return a / b, true
}

func fmtRatio(r float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", r)
}

func fmtSeconds(d time.Duration) string {
	return fmt.Sprintf("%.3f s", d.Seconds())
}

func fmtBytes(n int64) string {
	const ki, mi, gi = 1 << 10, 1 << 20, 1 << 30
	switch {
	case n >= gi:
		return fmt.Sprintf("%.2f GiB", float64(n)/gi)
	case n >= mi:
		return fmt.Sprintf("%.1f MiB", float64(n)/mi)
	case n >= ki:
		return fmt.Sprintf("%.1f KiB", float64(n)/ki)
	}
	return fmt.Sprintf("%d B", n)
}

// fmtCount groups digits by thousands: event counts run to eight digits.
func fmtCount(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func fmtRate(perSecond float64) string {
	return fmt.Sprintf("%.2f M/s", perSecond/1e6)
}

// table renders as GitHub markdown so the same text goes to the terminal
// and into docs/benchmarks.md.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) markdown() string {
	width := make([]int, len(t.header))
	for i, h := range t.header {
		width[i] = len([]rune(h))
	}
	for _, r := range t.rows {
		for i := range width {
			if i < len(r) && len([]rune(r[i])) > width[i] {
				width[i] = len([]rune(r[i]))
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i := range width {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		b.WriteString("\n")
	}
	line(t.header)
	b.WriteString("|")
	for _, w := range width {
		b.WriteString(strings.Repeat("-", w+2) + "|")
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		line(r)
	}
	return b.String()
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo and the
// number of logical processors listed.
func parseCPUModel(cpuinfo string) (model string, processors int) {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "processor":
			processors++
		}
	}
	return model, processors
}

// parseMemTotal returns MemTotal of /proc/meminfo in bytes.
func parseMemTotal(meminfo string) (int64, bool) {
	for _, line := range strings.Split(meminfo, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, false
			}
			return kb << 10, true
		}
	}
	return 0, false
}

// parseOnly turns -only's comma-separated list into a set, rejecting names
// that would otherwise silently select nothing.
func parseOnly(s string, known []string) (map[string]bool, error) {
	set := map[string]bool{}
	if strings.TrimSpace(s) == "" {
		for _, k := range known {
			set[k] = true
		}
		return set, nil
	}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		found := false
		for _, k := range known {
			if k == name {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("-only: unknown name %q (known: %s)", name, strings.Join(known, ", "))
		}
		set[name] = true
	}
	if len(set) == 0 {
		return nil, errors.New("-only: empty list")
	}
	return set, nil
}
