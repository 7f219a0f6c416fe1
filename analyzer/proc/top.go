package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"libleak/analyzer/texttable"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"libleak/analyzer/slab"
	"libleak/analyzer/trend"
)

// TopOptions say how to sample every process.
type TopOptions struct {
	Interval time.Duration
	Duration time.Duration
	// Proc is procfs's mount point; empty means /proc.
	Proc     string
	Progress func(done, total int)
	// Exclude is a pid left out, normally our own: the sampler's memory
	// grows with its samples.
	Exclude int
}

type procKey struct {
	pid   int
	start uint64
}

// procSeries is one process's samples in a top run.
type procSeries struct {
	key     procKey
	name    string
	idx     []int // sample indexes it was seen at
	anon    []float64
	rss     []float64
	pss     []float64
	uss     []float64
	rollup  bool // every sample had smaps_rollup
	noRoll  bool // smaps_rollup was refused
	present bool // seen in the latest sample
}

// TopRun is what sampling every process gave.
type TopRun struct {
	Times   []float64
	Meminfo []map[string]uint64
	procs   map[procKey]*procSeries
	// Exited and Started count processes gone before the last sample or
	// new after the first; Unreadable those whose smaps_rollup was refused.
	Exited, Started, Unreadable int
}

// CollectTop samples /proc/meminfo and every process's status and
// smaps_rollup every Interval for Duration. Processes come and go freely;
// when ctx ends, the samples so far are returned with ctx's error.
func CollectTop(ctx context.Context, opt TopOptions) (*TopRun, error) {
	root := opt.Proc
	if root == "" {
		root = "/proc"
	}
	run := &TopRun{procs: map[procKey]*procSeries{}}
	n := SampleCount(opt.Interval, opt.Duration)
	var first time.Time
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				run.finish()
				return run, ctx.Err()
			case <-time.After(time.Until(first.Add(time.Duration(i) * opt.Interval))):
			}
		}
		when := time.Now()
		if i == 0 {
			first = when
		}
		memPath := filepath.Join(root, "meminfo")
		data, err := os.ReadFile(memPath)
		if err != nil {
			return nil, &PathError{Path: memPath, Msg: err.Error(), Err: err}
		}
		mem, err := slab.ParseMeminfo(bytes.NewReader(data))
		if err != nil {
			return nil, &PathError{Path: memPath, Msg: err.Error(), Err: err}
		}
		if err := run.sample(root, i, opt.Exclude); err != nil {
			return nil, err
		}
		run.Times = append(run.Times, when.Sub(first).Seconds())
		run.Meminfo = append(run.Meminfo, mem)
		if opt.Progress != nil {
			opt.Progress(i+1, n)
		}
	}
	run.finish()
	return run, nil
}

func (run *TopRun) sample(root string, idx, exclude int) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return &PathError{Path: root, Msg: err.Error(), Err: err}
	}
	for _, p := range run.procs {
		p.present = false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == exclude {
			continue
		}
		dir := filepath.Join(root, e.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // gone, or hidden from us
		}
		start, ok := parseStartTime(stat)
		if !ok {
			continue
		}
		data, err := readWhole(filepath.Join(dir, "status"), 4096)
		if err != nil {
			continue
		}
		st, err := ParseStatus(data)
		if err != nil || !st.HasMM || st.Zombie() {
			continue
		}
		key := procKey{pid, start}
		p := run.procs[key]
		if p == nil {
			p = &procSeries{key: key, rollup: true}
			run.procs[key] = p
		}
		p.name = st.Name
		anon, pss, uss := st.RssAnon+st.VmSwap, uint64(0), uint64(0)
		if !p.noRoll {
			roll, err := readWhole(filepath.Join(dir, "smaps_rollup"), 4096)
			switch {
			case err == nil:
				if maps, perr := ParseSmaps(roll); perr == nil && len(maps) == 1 {
					r := maps[0]
					anon, pss, uss = r.Anonymous+r.Swap, r.Pss, r.USS()
				} else {
					// Exited between status and smaps_rollup.
					continue
				}
			case errors.Is(err, fs.ErrPermission):
				p.noRoll, p.rollup = true, false
			default:
				continue
			}
		}
		p.idx = append(p.idx, idx)
		p.anon = append(p.anon, float64(anon))
		p.rss = append(p.rss, float64(st.VmRSS))
		p.pss = append(p.pss, float64(pss))
		p.uss = append(p.uss, float64(uss))
		p.present = true
	}
	return nil
}

func (run *TopRun) finish() {
	run.Exited, run.Started, run.Unreadable = 0, 0, 0
	for _, p := range run.procs {
		if len(p.idx) == 0 {
			continue
		}
		if !p.present {
			run.Exited++
		}
		if p.idx[0] > 0 {
			run.Started++
		}
		if p.noRoll {
			run.Unreadable++
		}
	}
}

// ProcTrend is one process's growth in a top report, measured as its
// anonymous memory plus swap.
type ProcTrend struct {
	Metric
	Pid     int    `json:"pid"`
	Samples int    `json:"samples"`
	RSS     uint64 `json:"rss"`
	// PSS and USS are from smaps_rollup; absent when it was refused.
	PSS    *uint64 `json:"pss,omitempty"`
	USS    *uint64 `json:"uss,omitempty"`
	Exited bool    `json:"exited"`
}

// TopReport ranks every process by growth and gives the system picture.
type TopReport struct {
	Samples    int     `json:"samples"`
	Seconds    float64 `json:"seconds"`
	Processes  int     `json:"processes"`
	Exited     int     `json:"exited"`
	Started    int     `json:"started"`
	Unreadable int     `json:"unreadable"`
	// System is the /proc/meminfo picture; "MemFree+Buffers+Cached" is
	// the old estimate of available memory, next to MemAvailable.
	System []Metric `json:"system"`
	// Ranked lists processes, flagged first, then by growth rate; More
	// counts those left out by Top.
	Ranked   []ProcTrend `json:"processes_ranked"`
	More     int         `json:"more"`
	Flagged  int         `json:"flagged"`
	Findings []string    `json:"findings"`
	Next     []string    `json:"next"`
	Warnings []string    `json:"warnings,omitempty"`
}

var topFields = []string{"MemAvailable", "MemFree+Buffers+Cached", "Slab", "SUnreclaim", "AnonPages", "Committed_AS", "Shmem", "PageTables"}

// AnalyzeTop ranks the processes of a top run and reads the system's trend.
func AnalyzeTop(run *TopRun, opt Options) TopReport {
	rep := TopReport{Samples: len(run.Times), Exited: run.Exited, Started: run.Started, Unreadable: run.Unreadable,
		System: []Metric{}, Ranked: []ProcTrend{}, Findings: []string{}, Next: []string{}}
	if len(run.Times) == 0 {
		return rep
	}
	rep.Seconds = round(run.Times[len(run.Times)-1]-run.Times[0], 3)
	if len(run.Times) < 5 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("only %d samples: a trend needs at least 5 to reach 0.99 confidence", len(run.Times)))
	}
	sys := map[string]Metric{}
	for _, f := range topFields {
		y := make([]float64, len(run.Meminfo))
		ok := true
		for i, m := range run.Meminfo {
			if f == "MemFree+Buffers+Cached" {
				y[i] = float64(m["MemFree"] + m["Buffers"] + m["Cached"])
				continue
			}
			v, have := m[f]
			ok = ok && have
			y[i] = float64(v)
		}
		if !ok {
			continue
		}
		mt := metric(f, run.Times, y, opt)
		mt.Flagged = f == "SUnreclaim" && mt.Verdict == trend.Growing && mt.Growth >= opt.MinGrowth
		sys[f] = mt
		rep.System = append(rep.System, mt)
	}

	var explained float64
	last := len(run.Times) - 1
	for _, p := range run.procs {
		if len(p.idx) == 0 {
			continue
		}
		rep.Processes++
		t := make([]float64, len(p.idx))
		for i, k := range p.idx {
			t[i] = run.Times[k]
		}
		mt := metric(p.name, t, p.anon, opt)
		mt.Flagged = mt.Verdict == trend.Growing && mt.Growth >= opt.MinGrowth
		pt := ProcTrend{Metric: mt, Pid: p.key.pid, Samples: len(p.idx), RSS: uint64(p.rss[len(p.rss)-1]),
			Exited: p.idx[len(p.idx)-1] != last}
		if p.rollup {
			pss, uss := uint64(p.pss[len(p.pss)-1]), uint64(p.uss[len(p.uss)-1])
			pt.PSS, pt.USS = &pss, &uss
		}
		if mt.Flagged {
			rep.Flagged++
		}
		if !pt.Exited && p.idx[0] == 0 {
			explained += p.anon[len(p.anon)-1] - p.anon[0]
		}
		rep.Ranked = append(rep.Ranked, pt)
	}
	sort.SliceStable(rep.Ranked, func(i, j int) bool {
		a, b := rep.Ranked[i], rep.Ranked[j]
		if c := trend.Compare(a.Flagged, a.BytesPerSecond, a.First, a.Last, b.Flagged, b.BytesPerSecond, b.First, b.Last); c != 0 {
			return c < 0
		}
		return a.Pid < b.Pid
	})

	// What the figures say, most useful first.
	if m, ok := sys["MemAvailable"]; ok && m.Verdict == trend.Shrinking {
		rep.Findings = append(rep.Findings, fmt.Sprintf("memory is going: MemAvailable falls %s/s (%s over %s)",
			slab.FormatBytes(uint64(-m.BytesPerSecond)), slab.FormatDelta(float64(m.Last)-float64(m.First)), slab.FormatSeconds(rep.Seconds)))
	}
	for _, p := range rep.Ranked {
		if !p.Flagged {
			break
		}
		rep.Findings = append(rep.Findings, fmt.Sprintf("process %d (%s) grows steadily: %s, %s over the window",
			p.Pid, p.Name, slab.FormatRate(p.BytesPerSecond), slab.FormatDelta(p.Growth)))
		rep.Next = append(rep.Next, fmt.Sprintf("leakanalyze proc --pid %d   # which mapping of %s grows", p.Pid, p.Name))
	}
	if m, ok := sys["AnonPages"]; ok && m.Verdict == trend.Growing && m.Growth >= opt.MinGrowth && explained < m.Growth/2 {
		rep.Findings = append(rep.Findings, fmt.Sprintf(
			"AnonPages grows %s but the processes watched throughout account for %s: short-lived processes, or ones we could not read",
			slab.FormatDelta(m.Growth), slab.FormatDelta(explained)))
	}
	if m, ok := sys["SUnreclaim"]; ok && m.Flagged {
		rep.Flagged++
		rep.Findings = append(rep.Findings, fmt.Sprintf("unreclaimable kernel slab grows steadily: %s: a kernel leak candidate",
			slab.FormatRate(m.BytesPerSecond)))
		rep.Next = append(rep.Next, "leakanalyze slab   # which slab cache grows", "leakanalyze kmemleak --scan   # which kernel code leaks (CONFIG_DEBUG_KMEMLEAK)")
	}
	if m, ok := sys["Shmem"]; ok && m.Verdict == trend.Growing && m.Growth >= opt.MinGrowth {
		rep.Findings = append(rep.Findings, fmt.Sprintf(
			"Shmem grows %s: tmpfs files or shared memory segments (/dev/shm, ipcs -m), charged to no single process",
			slab.FormatRate(m.BytesPerSecond)))
	}
	if opt.Top > 0 && len(rep.Ranked) > opt.Top {
		rep.More = len(rep.Ranked) - opt.Top
		rep.Ranked = rep.Ranked[:opt.Top]
	}
	if rep.Unreadable > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"smaps_rollup of %d %s was refused (reading another user's process needs root or ptrace rights): their anon+swap comes from status, PSS and USS are not shown",
			rep.Unreadable, plural(rep.Unreadable, "process", "processes")))
	}
	return rep
}

// WriteTopText writes a top report.
func WriteTopText(w io.Writer, rep TopReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "top: %d samples over %s, %d processes (%d started, %d exited during the window)\n",
		rep.Samples, slab.FormatSeconds(rep.Seconds), rep.Processes, rep.Started, rep.Exited)
	for _, warn := range rep.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	if len(rep.System) > 0 {
		b.WriteString("\nsystem (/proc/meminfo)\n")
		tb := texttable.New(6)
		tb.Add("", "first", "last", "change", "rate", "conf", "verdict")
		for _, m := range rep.System {
			tb.Add(mark(m.Flagged)+" "+m.Name, slab.FormatBytes(m.First), slab.FormatBytes(m.Last),
				slab.FormatDelta(float64(m.Last)-float64(m.First)), slab.FormatRate(m.BytesPerSecond),
				fmt.Sprintf("%.3f", m.Confidence), string(m.Verdict))
		}
		tb.Write(&b, "")
		var avail, old *Metric
		for i := range rep.System {
			switch rep.System[i].Name {
			case "MemAvailable":
				avail = &rep.System[i]
			case "MemFree+Buffers+Cached":
				old = &rep.System[i]
			}
		}
		if avail != nil && old != nil && old.Last > avail.Last {
			fmt.Fprintf(&b, "  MemFree+Buffers+Cached overstates what is available by %s: Cached counts shmem/tmpfs, and reclaimable slab is missed\n",
				slab.FormatBytes(old.Last-avail.Last))
		}
	}
	if len(rep.Ranked) > 0 {
		b.WriteString("\nprocesses by growth (anonymous + swap memory)\n")
		tb := texttable.New(1, 10)
		tb.Add("  pid", "name", "rss", "pss", "uss", "first", "last", "change", "rate", "conf", "verdict")
		for _, p := range rep.Ranked {
			pss, uss := "-", "-"
			if p.PSS != nil {
				pss, uss = slab.FormatBytes(*p.PSS), slab.FormatBytes(*p.USS)
			}
			verdict := string(p.Verdict)
			if p.Exited {
				verdict += " (exited)"
			}
			tb.Add(mark(p.Flagged)+" "+strconv.Itoa(p.Pid), p.Name, slab.FormatBytes(p.RSS), pss, uss,
				slab.FormatBytes(p.First), slab.FormatBytes(p.Last), slab.FormatDelta(float64(p.Last)-float64(p.First)),
				slab.FormatRate(p.BytesPerSecond), fmt.Sprintf("%.3f", p.Confidence), verdict)
		}
		tb.Write(&b, "")
		if rep.More > 0 {
			fmt.Fprintf(&b, "(%d more processes not shown)\n", rep.More)
		}
	}
	b.WriteString("\n")
	if rep.Flagged > 0 {
		b.WriteString("! steady growth:\n")
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	if rep.Flagged == 0 && len(rep.Findings) == 0 {
		b.WriteString("no steady growth\n")
	}
	for i, n := range rep.Next {
		if i == 0 {
			fmt.Fprintf(&b, "next: %s\n", n)
		} else {
			fmt.Fprintf(&b, "      %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
