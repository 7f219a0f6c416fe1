// Package analyze is the driver: it decodes traces (libleak or glibc
// mtrace), replays them, names their frames and groups what leaked into a
// report.Report. It prints nothing; the writers in analyzer/report do.
package analyze

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"libleak/analyzer/event"
	"libleak/analyzer/replay"
	"libleak/analyzer/report"
	"libleak/analyzer/traceformat"
)

// FrameSource names the frames of one process.
type FrameSource interface {
	Frames(pc uint64, returnAddress bool) []report.Frame
}

// Options select and shape what is reported.
type Options struct {
	// Group is "stack" (the whole stack, default), "top:N" (the N
	// innermost frames) or "function" (the innermost frame's function).
	Group    string
	SortBy   string // "bytes" (default) or "blocks"
	Top      int    // at most this many sites per report (0: all)
	MinBytes uint64
	Pids     []int
	Exe      string // keep processes whose executable's base name or path matches
	MinAge   time.Duration
	// Scan picks which reachability scan gives the kinds (1 = the first);
	// 0 means the last. Blocks made after that scan are reported unfreed.
	Scan int
	// Symbolizer returns a FrameSource for a process's modules; nil leaves
	// frames as module+address.
	Symbolizer func(mods []event.Module) FrameSource
	// Prefetch, when set, starts reading what naming module m's frames
	// needs, on a goroutine of its own, and returns. LoadFor calls it for
	// the modules a long trace's stacks use (prefetch.go).
	Prefetch func(m event.Module)
	// Progress, when set, is called after each trace.
	Progress func(done, total int, path string)
}

// Input is one decoded and replayed trace.
type Input struct {
	Path   string
	Stats  traceformat.Stats
	Replay *replay.Replay
	Mtrace bool
}

// Load decodes and replays one trace file, detecting its format.
func Load(path string) (*Input, error) { return load(path, nil) }

// LoadFor is Load that, while a long trace is decoded, has o.Prefetch
// read the debug information of the modules its stacks use.
func LoadFor(path string, o Options) (*Input, error) { return load(path, o.Prefetch) }

func load(path string, prefetch func(event.Module)) (*Input, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, unwrapPathErr(err))
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	head, _ := br.Peek(16)
	in := &Input{Path: path, Replay: replay.New()}
	switch {
	case traceformat.Sniff(head):
		// The decoder replays on a goroutine of its own already.
		var h event.Handler = in.Replay
		if fi, serr := f.Stat(); prefetch != nil && serr == nil && fi.Size() >= prefetchMinSize {
			h = newPrefetcher(in.Replay, prefetch)
		}
		in.Stats, err = traceformat.Decode(br, path, h)
	case MtraceSniff != nil && MtraceSniff(head):
		in.Mtrace = true
		p := newPipe(in.Replay)
		in.Stats, err = MtraceDecode(br, path, p)
		p.close()
	default:
		if len(head) == 0 {
			return nil, fmt.Errorf("%s: empty file, not a trace", path)
		}
		return nil, fmt.Errorf("%s: not a libleak trace or glibc mtrace file", path)
	}
	if err != nil {
		return nil, err
	}
	in.Replay.Finish()
	// The decoder's buffers (parsed events of a few frames, tens of MiB)
	// are garbage now; collect them before the symbolizer allocates, so
	// the peak is the larger of the two phases rather than their sum
	// (for a long trace, less what the prefetch read meanwhile).
	runtime.GC()
	return in, nil
}

// MtraceSniff and MtraceDecode connect the glibc mtrace reader; they are
// set by the package that provides it, so this driver does not depend on
// every input format.
var (
	MtraceSniff  func(head []byte) bool
	MtraceDecode func(r *bufio.Reader, name string, h event.Handler) (traceformat.Stats, error)
)

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// Run analyzes the traces at paths as one run.
func Run(paths []string, o Options) (*report.Report, error) {
	rep := &report.Report{Summary: map[string]report.Totals{}, Leaks: []report.Leak{}, Anomalies: []report.Anomaly{}}
	for i, p := range paths {
		in, err := LoadFor(p, o)
		if err != nil {
			return nil, err
		}
		Add(rep, in, o)
		if o.Progress != nil {
			o.Progress(i+1, len(paths), p)
		}
	}
	Finish(rep, o)
	return rep, nil
}

// Add puts one trace's process, leaks and anomalies into rep.
func Add(rep *report.Report, in *Input, o Options) {
	r := in.Replay
	h := r.Hdr
	if o.Scan != 0 && !r.UseScan(o.Scan) {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("pid %d: no scan %d (the trace has %d); using the last", h.Pid, o.Scan, len(r.Scans)))
	}
	begin := startTime(r)
	since := func(t uint64) uint64 {
		if t < begin {
			return 0
		}
		return t - begin
	}
	if len(r.Scans) > 1 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("pid %d: %d reachability scans; kinds are from the one at %.3fs (--scan N picks another)", h.Pid, len(r.Scans), float64(since(r.ScanTime))/1e9))
	}
	if !keepProcess(h, o) {
		return
	}
	end := r.LastTime
	if in.Stats.Ended && in.Stats.EndTime > end {
		end = in.Stats.EndTime
	}
	proc := report.Process{
		Pid: h.Pid, Ppid: h.Ppid, Exe: h.Exe, Cmdline: h.Cmdline, Trace: in.Path,
		Events: in.Stats.Events, Dropped: in.Stats.Dropped, Truncated: in.Stats.Truncated,
		ExitStatus: -1, PeakBytes: r.Peak, PeakTimeNs: since(r.PeakTime), DurationNs: since(end),
	}
	if h.StartUnix != 0 {
		proc.StartUnixNs = h.StartUnix + int64(begin)
	}
	if in.Stats.Ended {
		proc.ExitStatus = in.Stats.ExitStatus
		if in.Stats.EndReason == traceformat.EndSignal {
			proc.Signal = SignalName(in.Stats.ExitStatus)
		}
	}
	if in.Mtrace {
		proc.Truncated = false
	}
	rep.Processes = append(rep.Processes, proc)
	for _, n := range in.Stats.Notes {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("pid %d: %s", h.Pid, n))
	}
	if in.Stats.Truncated && !in.Mtrace {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: truncated after %d events: the process was killed or the file was cut; leaks are what was live at that point", in.Path, in.Stats.Events))
	}
	if in.Stats.Dropped > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("pid %d: %d events were dropped (under overload, or made by a signal handler that interrupted the tracer); counts may be off by that much", h.Pid, in.Stats.Dropped))
	}
	if in.Stats.ExecPath != "" {
		// Memory live when exec replaces the image is released with it:
		// not a leak (valgrind does not check it either).
		return
	}

	var frames func(stack uint64) []report.Frame
	mods := make([]event.Module, len(r.Modules))
	for i, m := range r.Modules {
		mods[i] = *m
		if len(m.BuildID) > 0 {
			rep.Modules = append(rep.Modules, report.Module{Path: m.Path, BuildID: hex.EncodeToString(m.BuildID)})
		}
	}
	var src FrameSource
	if o.Symbolizer != nil {
		src = o.Symbolizer(mods)
	}
	cache := map[uint64][]report.Frame{}
	frames = func(stack uint64) []report.Frame {
		if f, ok := cache[stack]; ok {
			return f
		}
		var out []report.Frame
		for _, pc := range r.Stacks[stack] {
			// The shim's own frames (a hook that called into libc on
			// the program's behalf) are not the program's. Dropping
			// them before they are named spares reading the tracer's
			// own debug information: the Go runtime's, larger than
			// most programs'.
			if h.Tracer != "" && pc > 0 && rawFrame(mods, pc-1).Module == h.Tracer {
				continue
			}
			var fr []report.Frame
			if src != nil {
				fr = src.Frames(pc, true)
			} else {
				fr = []report.Frame{rawFrame(mods, pc)}
			}
			out = append(out, fr...)
		}
		cache[stack] = out
		return out
	}

	heap, maps := r.Live()
	type acc struct {
		leak  report.Leak
		times []uint64
	}
	groups := map[string]*acc{}
	groupKeys := map[uint64]string{}
	var order []string
	add := func(b replay.Block, source string) {
		if b.Stack == 0 {
			return // recorded without a stack: memory ld.so gave the tracer itself
		}
		if o.MinAge > 0 && end-b.Time < uint64(o.MinAge) {
			return
		}
		kind := report.KindUnfreed
		var v event.Verdict
		if r.Verdicts != nil && b.Time <= r.ScanTime {
			var ok bool
			if v, ok = r.Verdicts[b.Addr]; !ok {
				kind = report.KindReachable
			} else {
				kind = verdictKinds[v.Kind]
			}
		}
		fr := frames(b.Stack)
		gk, ok := groupKeys[b.Stack]
		if !ok {
			// Once per stack, not per block: a site can hold many blocks.
			gk = groupKey(fr, o.Group, b.Stack)
			groupKeys[b.Stack] = gk
		}
		key := kind + "\x00" + source + "\x00" + gk
		a := groups[key]
		if a == nil {
			a = &acc{leak: report.Leak{Pid: h.Pid, Kind: kind, Source: source,
				Frames: groupFrames(fr, o.Group), Family: b.Op.Family().String()}}
			groups[key] = a
			order = append(order, key)
		}
		a.leak.Bytes += b.Size
		a.leak.Blocks++
		a.leak.IndirectBytes += v.Indirect
		if a.leak.Content == nil && len(v.Content) > 0 {
			a.leak.Content = v.Content
		}
		a.times = append(a.times, b.Time)
	}
	for _, b := range heap {
		add(b, report.SourceHeap)
	}
	for _, b := range maps {
		add(b, report.SourceMmap)
	}
	for _, k := range order {
		a := groups[k]
		a.leak.Pattern = pattern(a.times, begin, end)
		if a.leak.Bytes < o.MinBytes {
			continue
		}
		rep.Leaks = append(rep.Leaks, a.leak)
	}

	// Implicit leaks: sites whose memory kept growing and was released
	// only at the end.
	for _, s := range r.Sites {
		if s.Live != 0 || s.Peak < 64<<10 || since(end) == 0 || r.Peak == 0 {
			continue
		}
		if since(s.PeakTime) < since(end)*7/10 || s.Peak*20 < r.Peak || s.PeakTime <= s.First {
			continue
		}
		l := report.Leak{Pid: h.Pid, Kind: "implicit", Source: report.SourceHeap, Bytes: s.Peak, Blocks: s.Allocs,
			Frames: groupFrames(frames(s.Stack), o.Group), Pattern: "implicit",
			GrowthBytesPerSec: float64(s.Peak) / (float64(s.PeakTime-s.First) / 1e9)}
		rep.Implicit = append(rep.Implicit, l)
	}

	for _, a := range r.Anomalies {
		an := report.Anomaly{Pid: h.Pid, Type: a.Type, Address: a.Addr}
		if a.Stack != 0 {
			an.Frames = frames(a.Stack)
		}
		switch a.Type {
		case replay.Mismatch:
			an.Detail = fmt.Sprintf("allocated with %s, released with %s", a.Alloc, a.Op)
		case replay.InvalidFree:
			an.Detail = fmt.Sprintf("%s of an address not allocated (or already freed)", a.Op)
		case replay.LostFree:
			an.Detail = fmt.Sprintf("block from %s handed out again without a traced free", a.Alloc)
		case replay.InvalidMunmap:
			an.Detail = "munmap of a range that was not mapped"
		}
		rep.Anomalies = append(rep.Anomalies, an)
	}
}

var verdictKinds = map[uint8]string{
	event.VerdictDefinite: report.KindDefinite,
	event.VerdictIndirect: report.KindIndirect,
	event.VerdictPossible: report.KindPossible,
}

// pattern classifies a site's leaked blocks by when they were made.
func pattern(times []uint64, begin, end uint64) string {
	if len(times) == 1 {
		return "one-time"
	}
	if end <= begin {
		return "occasional"
	}
	var deciles [10]bool
	for _, t := range times {
		if t < begin {
			t = begin
		}
		d := int((t - begin) * 10 / (end - begin + 1))
		if d > 9 {
			d = 9
		}
		deciles[d] = true
	}
	n := 0
	for _, b := range deciles {
		if b {
			n++
		}
	}
	if n >= 5 {
		return "frequent"
	}
	return "occasional"
}

var signalNames = [...]string{1: "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
	"SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD",
	"SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM",
	"SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS"}

// SignalName is Linux's name for signal n: SIGTERM, or SIGRTMIN+3.
func SignalName(n int) string {
	switch {
	case n > 0 && n < len(signalNames):
		return signalNames[n]
	case n >= 34 && n <= 64:
		return fmt.Sprintf("SIGRTMIN+%d", n-34)
	}
	return fmt.Sprintf("signal %d", n)
}

// startTime is when the process began, in its trace's time: a forked
// child's trace counts from its parent's start, and its own begins where
// it recorded its module map, at the fork.
func startTime(r *replay.Replay) uint64 {
	if !r.Hdr.Forked || len(r.Modules) == 0 {
		return 0
	}
	t := r.Modules[0].Time
	for _, m := range r.Modules[1:] {
		if m.Time < t {
			t = m.Time
		}
	}
	return t
}

func keepProcess(h event.Header, o Options) bool {
	if len(o.Pids) > 0 {
		ok := false
		for _, p := range o.Pids {
			ok = ok || p == h.Pid
		}
		if !ok {
			return false
		}
	}
	if o.Exe != "" && o.Exe != h.Exe && o.Exe != filepath.Base(h.Exe) {
		return false
	}
	return true
}

func rawFrame(mods []event.Module, pc uint64) report.Frame {
	f := report.Frame{Function: "??", Address: pc}
	for i := len(mods) - 1; i >= 0; i-- {
		for _, s := range mods[i].Segments {
			if pc >= s.Start && pc < s.End {
				f.Module = mods[i].Path
				return f
			}
		}
	}
	return f
}

func groupFrames(fr []report.Frame, group string) []report.Frame {
	n := len(fr)
	switch {
	case group == "function":
		n = min(1, n)
	case strings.HasPrefix(group, "top:"):
		var k int
		fmt.Sscanf(group[4:], "%d", &k)
		n = min(k, n)
	}
	out := make([]report.Frame, n)
	copy(out, fr[:n])
	if group != "" && group != "stack" {
		for i := range out {
			out[i].Address = 0 // one group holds several addresses
		}
	}
	return out
}

func groupKey(fr []report.Frame, group string, stack uint64) string {
	var b strings.Builder
	for _, f := range groupFrames(fr, group) {
		if f.Function == "??" {
			fmt.Fprintf(&b, "%s+%x;", f.Module, f.Address)
		} else {
			fmt.Fprintf(&b, "%s|%s:%d;", f.Function, f.File, f.Line)
		}
	}
	if len(fr) == 0 {
		fmt.Fprintf(&b, "#%d", stack)
	}
	return b.String()
}

// Finish sorts and totals the report.
func Finish(rep *report.Report, o Options) {
	less := func(a, b report.Leak) bool {
		if o.SortBy == "blocks" && a.Blocks != b.Blocks {
			return a.Blocks > b.Blocks
		}
		// By the weight a site holds, indirect blocks included, as valgrind
		// orders its loss records.
		if ta, tb := a.Bytes+a.IndirectBytes, b.Bytes+b.IndirectBytes; ta != tb {
			return ta > tb
		}
		if a.Blocks != b.Blocks {
			return a.Blocks > b.Blocks
		}
		if a.Pid != b.Pid {
			return a.Pid < b.Pid
		}
		return frameKey(a.Frames) < frameKey(b.Frames)
	}
	sort.SliceStable(rep.Leaks, func(i, j int) bool { return less(rep.Leaks[i], rep.Leaks[j]) })
	sort.SliceStable(rep.Implicit, func(i, j int) bool { return less(rep.Implicit[i], rep.Implicit[j]) })
	// In the order they started: pids wrap, and a child can have a
	// smaller one than its parent.
	sort.SliceStable(rep.Processes, func(i, j int) bool {
		a, b := rep.Processes[i], rep.Processes[j]
		if a.StartUnixNs != b.StartUnixNs {
			return a.StartUnixNs < b.StartUnixNs
		}
		return a.Pid < b.Pid
	})
	for _, l := range rep.Leaks {
		t := rep.Summary[l.Kind]
		t.Bytes += l.Bytes
		t.Blocks += l.Blocks
		rep.Summary[l.Kind] = t
	}
	if o.Top > 0 && len(rep.Leaks) > o.Top {
		rep.Leaks = rep.Leaks[:o.Top]
	}
	rep.Modules = usedModules(rep)
}

// usedModules keeps the modules the report's frames name, once each, in
// path order. A path seen with two build IDs (a binary rebuilt between
// the processes of one run) keeps the first.
func usedModules(rep *report.Report) []report.Module {
	used := map[string]bool{}
	note := func(fr []report.Frame) {
		for _, f := range fr {
			used[f.Module] = true
		}
	}
	for _, l := range rep.Leaks {
		note(l.Frames)
	}
	for _, l := range rep.Implicit {
		note(l.Frames)
	}
	for _, a := range rep.Anomalies {
		note(a.Frames)
	}
	var out []report.Module
	for _, m := range rep.Modules {
		if used[m.Path] {
			out = append(out, m)
			used[m.Path] = false
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func frameKey(fr []report.Frame) string {
	var b strings.Builder
	for _, f := range fr {
		fmt.Fprintf(&b, "%s %s %d %x;", f.Function, f.File, f.Line, f.Address)
	}
	return b.String()
}
