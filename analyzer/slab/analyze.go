package slab

import (
	"encoding/json"
	"fmt"
	"io"
	"libleak/analyzer/texttable"
	"math"
	"sort"
	"strings"

	"libleak/analyzer/trend"
)

// Options tune the analysis.
type Options struct {
	// Confidence a trend needs; 0 means trend.DefaultConfidence.
	Confidence float64
	// MinGrowth is the fitted growth over the window, in bytes, below
	// which steady growth is not flagged.
	MinGrowth float64
	// Top bounds the caches listed; 0 lists every growing cache.
	Top int
}

// DefaultMinGrowth: SLUB counts whole per-cpu slabs as active, so a cache
// moves by a slab (a page or more) at a time; growth under a few slabs is
// not worth a report.
const DefaultMinGrowth = 16 * 1024

// Series is the trend of one memory figure.
type Series struct {
	Name           string        `json:"name"`
	First          uint64        `json:"first_bytes"`
	Last           uint64        `json:"last_bytes"`
	BytesPerSecond float64       `json:"bytes_per_second"`
	Growth         float64       `json:"growth_bytes"`
	Confidence     float64       `json:"confidence"`
	Verdict        trend.Verdict `json:"verdict"`
	// Flagged: steady growth of at least MinGrowth in memory the kernel
	// cannot reclaim.
	Flagged bool `json:"flagged"`
}

// CacheTrend is the trend of one cache's active objects × object size.
type CacheTrend struct {
	Series
	ObjSize   uint64 `json:"objsize"`
	FirstObjs uint64 `json:"first_active_objs"`
	LastObjs  uint64 `json:"last_active_objs"`
	// Reclaimable caches are freed by shrinkers under memory pressure;
	// their growth is not flagged. ReclaimableFrom says how it is known:
	// "sysfs" (reclaim_account) or "name" (a list of well-known caches).
	Reclaimable     bool   `json:"reclaimable"`
	ReclaimableFrom string `json:"reclaimable_from"`
}

// Report is the slab picture over a window.
type Report struct {
	Samples int     `json:"samples"`
	Seconds float64 `json:"seconds"`
	Caches  int     `json:"caches"`
	// System is Slab, SReclaimable and SUnreclaim from /proc/meminfo.
	System []Series `json:"system"`
	// Growing lists the caches that grew, flagged ones first, then by
	// rate; More counts those left out by Top.
	Growing  []CacheTrend `json:"growing"`
	More     int          `json:"more"`
	Flagged  int          `json:"flagged"`
	Warnings []string     `json:"warnings,omitempty"`
}

// systemFields are the /proc/meminfo lines slab leaks move.
var systemFields = []string{"Slab", "SReclaimable", "SUnreclaim"}

// Analyze tests every cache and the meminfo slab totals of samples, which
// must have their T set.
func Analyze(samples []Sample, opt Options) Report {
	rep := Report{Samples: len(samples), System: []Series{}, Growing: []CacheTrend{}}
	if len(samples) > 0 {
		rep.Seconds = round(samples[len(samples)-1].T-samples[0].T, 3)
	}
	if len(samples) < 5 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"only %d samples: a trend needs at least 5 to reach 0.99 confidence", len(samples)))
	}
	topt := trend.Options{Confidence: opt.Confidence}

	for _, field := range systemFields {
		var t, y []float64
		for _, s := range samples {
			if v, ok := s.Meminfo[field]; ok {
				t = append(t, s.T)
				y = append(y, float64(v))
			}
		}
		if len(y) == 0 {
			continue
		}
		sr := series(field, t, y, topt)
		sr.Flagged = field == "SUnreclaim" && sr.Verdict == trend.Growing && sr.Growth >= opt.MinGrowth
		if sr.Flagged {
			rep.Flagged++
		}
		rep.System = append(rep.System, sr)
	}

	// A cache missing from a sample did not exist then: created by a
	// module loaded during the window, or destroyed.
	type acc struct {
		objs  []float64
		bytes []float64
		size  uint64
	}
	caches := map[string]*acc{}
	var names []string
	withSlab := 0
	var t []float64
	var reclaim map[string]bool
	for _, s := range samples {
		if s.Caches == nil {
			continue
		}
		idx := withSlab
		withSlab++
		t = append(t, s.T)
		if s.Reclaimable != nil {
			reclaim = s.Reclaimable
		}
		for _, c := range s.Caches {
			a := caches[c.Name]
			if a == nil {
				a = &acc{objs: make([]float64, idx), bytes: make([]float64, idx)}
				caches[c.Name] = a
				names = append(names, c.Name)
			}
			for len(a.bytes) < idx {
				a.objs = append(a.objs, 0)
				a.bytes = append(a.bytes, 0)
			}
			a.objs = append(a.objs, float64(c.ActiveObjs))
			a.bytes = append(a.bytes, float64(c.ActiveBytes()))
			a.size = c.ObjSize
		}
	}
	rep.Caches = len(names)
	if withSlab == 0 && len(samples) > 0 {
		rep.Warnings = append(rep.Warnings, "no /proc/slabinfo in the samples: only the meminfo totals are tested")
	}
	for _, name := range names {
		a := caches[name]
		for len(a.bytes) < withSlab {
			a.objs = append(a.objs, 0)
			a.bytes = append(a.bytes, 0)
		}
		sr := series(name, t, a.bytes, topt)
		if !(sr.Last > sr.First || sr.BytesPerSecond > 0) {
			continue
		}
		ct := CacheTrend{Series: sr, ObjSize: a.size,
			FirstObjs: uint64(a.objs[0]), LastObjs: uint64(a.objs[len(a.objs)-1])}
		if reclaim != nil {
			ct.Reclaimable, ct.ReclaimableFrom = reclaim[name], "sysfs"
		} else {
			ct.Reclaimable, ct.ReclaimableFrom = ReclaimableByName(name), "name"
		}
		ct.Flagged = !ct.Reclaimable && sr.Verdict == trend.Growing && sr.Growth >= opt.MinGrowth
		if ct.Flagged {
			rep.Flagged++
		}
		rep.Growing = append(rep.Growing, ct)
	}
	sort.SliceStable(rep.Growing, func(i, j int) bool {
		a, b := rep.Growing[i], rep.Growing[j]
		if c := trend.Compare(a.Flagged, a.BytesPerSecond, a.First, a.Last, b.Flagged, b.BytesPerSecond, b.First, b.Last); c != 0 {
			return c < 0
		}
		return a.Name < b.Name
	})
	if opt.Top > 0 && len(rep.Growing) > opt.Top {
		rep.More = len(rep.Growing) - opt.Top
		rep.Growing = rep.Growing[:opt.Top]
	}
	return rep
}

func series(name string, t, y []float64, opt trend.Options) Series {
	r := trend.Analyze(t, y, opt)
	return Series{
		Name:           name,
		First:          uint64(r.First),
		Last:           uint64(r.Last),
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

// ReclaimableByName guesses reclaim_account for recordings that do not
// carry it: dentries, inodes, page-cache tree nodes and journal heads are
// freed by shrinkers; shmem, hugetlbfs and mqueue inodes are not.
func ReclaimableByName(name string) bool {
	switch name {
	case "dentry", "inode_cache", "radix_tree_node", "buffer_head", "extent_status", "mb_cache_entry",
		"jbd2_journal_head", "bdev_cache", "dax_cache", "xfs_inode", "xfs_ili", "xfs_buf", "btrfs_inode",
		"ovl_inode", "fuse_inode", "erofs_inode", "dquot", "nfs_inode_cache":
		return true
	case "shmem_inode_cache", "hugetlbfs_inode_cache", "mqueue_inode_cache":
		return false
	}
	return strings.HasPrefix(name, "kmalloc-rcl-") || strings.HasSuffix(name, "_inode_cache")
}

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, rep Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the report as aligned tables.
func WriteText(w io.Writer, rep Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "slab: %d samples over %s, %d caches\n", rep.Samples, FormatSeconds(rep.Seconds), rep.Caches)
	for _, warn := range rep.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	if len(rep.System) > 0 {
		b.WriteString("\nsystem (/proc/meminfo)\n")
		tb := texttable.New(6)
		tb.Add("", "first", "last", "change", "rate", "conf", "verdict")
		for _, s := range rep.System {
			tb.Add(mark(s.Flagged)+" "+s.Name, FormatBytes(s.First), FormatBytes(s.Last),
				FormatDelta(float64(s.Last)-float64(s.First)), FormatRate(s.BytesPerSecond),
				fmt.Sprintf("%.3f", s.Confidence), string(s.Verdict))
		}
		tb.Write(&b, "")
	}
	if rep.Caches > 0 {
		if len(rep.Growing) == 0 {
			b.WriteString("\nno cache grew\n")
		} else {
			b.WriteString("\ngrowing caches (active objects x object size)\n")
			tb := texttable.New(8)
			tb.Add("", "objsize", "objects", "first", "last", "change", "rate", "conf", "verdict")
			for _, c := range rep.Growing {
				name := c.Name
				if c.Reclaimable {
					name += " (r)"
				}
				tb.Add(mark(c.Flagged)+" "+name, fmt.Sprint(c.ObjSize),
					formatCount(int64(c.LastObjs)-int64(c.FirstObjs)), FormatBytes(c.First), FormatBytes(c.Last),
					FormatDelta(float64(c.Last)-float64(c.First)), FormatRate(c.BytesPerSecond),
					fmt.Sprintf("%.3f", c.Confidence), string(c.Verdict))
			}
			tb.Write(&b, "")
			if rep.More > 0 {
				fmt.Fprintf(&b, "(%d more growing caches not shown)\n", rep.More)
			}
		}
	}
	b.WriteString("\n")
	if rep.Flagged > 0 {
		fmt.Fprintf(&b, "! %d steady %s of unreclaimable slab memory: a kernel leak candidate.\n",
			rep.Flagged, plural(rep.Flagged, "growth", "growths"))
		b.WriteString("  next: leakanalyze kmemleak --scan names the code (needs CONFIG_DEBUG_KMEMLEAK);\n" +
			"  merged caches share one name: boot with slab_nomerge to tell them apart.\n")
	} else {
		b.WriteString("no steady growth of unreclaimable slab memory\n")
	}
	if hasReclaimable(rep.Growing) {
		b.WriteString("(r) reclaimable: freed under memory pressure, so growth alone is not a leak\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func hasReclaimable(cs []CacheTrend) bool {
	for _, c := range cs {
		if c.Reclaimable {
			return true
		}
	}
	return false
}

func mark(flagged bool) string {
	if flagged {
		return "!"
	}
	return " "
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// FormatBytes prints a size with a binary unit.
func FormatBytes(b uint64) string {
	return formatMagnitude(float64(b))
}

func formatMagnitude(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// FormatDelta prints a signed change in bytes.
func FormatDelta(d float64) string {
	if d > 0 {
		return "+" + formatMagnitude(d)
	}
	if d < 0 {
		return "-" + formatMagnitude(-d)
	}
	return "0"
}

func formatCount(d int64) string {
	if d > 0 {
		return fmt.Sprintf("+%d", d)
	}
	return fmt.Sprintf("%d", d)
}

// FormatRate prints bytes per second, signed.
func FormatRate(r float64) string {
	if r == 0 {
		return "0/s"
	}
	return FormatDelta(r) + "/s"
}

// FormatSeconds prints a window length.
func FormatSeconds(s float64) string {
	if s < 120 {
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%.1f min", s/60)
}
