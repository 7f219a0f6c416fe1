// Package report is the data model every leakanalyze output is made from:
// the replay fills it, the symbolizer names its frames, and the text, JSON,
// pprof and CI writers only read it. It depends on nothing else in the
// project, so any writer can be tested on a hand-built Report.
package report

// Kinds of unfreed memory. "unfreed" is used when the traced process did not
// run the exit-time reachability scan (killed, or scanning disabled); the
// others follow valgrind memcheck's definitions.
const (
	KindUnfreed   = "unfreed"
	KindDefinite  = "definite"
	KindIndirect  = "indirect"
	KindPossible  = "possible"
	KindReachable = "reachable"
)

// Sources of a leaked block.
const (
	SourceHeap = "heap"
	SourceMmap = "mmap"
)

// Report is one analysis of one or more traces of a run.
type Report struct {
	Processes []Process         `json:"processes"`
	Summary   map[string]Totals `json:"summary"`
	Leaks     []Leak            `json:"leaks"`
	Anomalies []Anomaly         `json:"anomalies"`
	// Implicit lists sites whose memory kept growing while the process ran
	// and was released only at the end: no leak at exit, but what exhausts a
	// long-running server.
	Implicit []Leak         `json:"implicit,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Extra    map[string]any `json:"extra,omitempty"`
	// Modules gives the GNU build ID of each module the frames above
	// name, as recorded when the process ran: what ties a report to the
	// exact binaries it was made from.
	Modules []Module `json:"modules,omitempty"`
}

// Module is a loaded object by its path as the process saw it, with its
// build ID in hex.
type Module struct {
	Path    string `json:"path"`
	BuildID string `json:"build_id"`
}

// Process describes one traced process.
type Process struct {
	Pid       int      `json:"pid"`
	Ppid      int      `json:"ppid"`
	Exe       string   `json:"exe"`
	Cmdline   []string `json:"cmdline,omitempty"`
	Trace     string   `json:"trace"`
	Events    uint64   `json:"events"`
	Dropped   uint64   `json:"dropped"`
	Truncated bool     `json:"truncated"`
	// ExitStatus is the status passed to exit(), the signal's number when
	// Signal is set, or -1 when the trace has no end record (killed by
	// SIGKILL, or truncated).
	ExitStatus int `json:"exit_status"`
	// Signal names the signal the process died of ("SIGTERM"), when it did.
	Signal string `json:"signal,omitempty"`
	// PeakBytes is the largest heap+mmap footprint seen, at PeakTimeNs
	// nanoseconds after the process started (a forked child: after the
	// fork). DurationNs is how long it ran, from the same start.
	PeakBytes  uint64 `json:"peak_bytes"`
	PeakTimeNs uint64 `json:"peak_time_ns"`
	DurationNs uint64 `json:"duration_ns"`
	// StartUnixNs is when the process started (a forked child: when it
	// was forked), in ns since the Unix epoch; 0 when the trace does not
	// say (an imported mtrace log).
	StartUnixNs int64 `json:"start_unix_ns,omitempty"`
}

// Totals counts bytes and blocks.
type Totals struct {
	Bytes  uint64 `json:"bytes"`
	Blocks uint64 `json:"blocks"`
}

// Frame is one symbolized program location. Inlined calls appear as
// separate frames sharing one Address, innermost first, with Inlined set on
// all but the outermost.
type Frame struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Module   string `json:"module"`
	Address  uint64 `json:"address"`
	Inlined  bool   `json:"inlined,omitempty"`
}

// Leak is one allocation site (a stack) with the memory it left unfreed.
type Leak struct {
	Pid    int     `json:"pid"`
	Kind   string  `json:"kind"`
	Source string  `json:"source"`
	Bytes  uint64  `json:"bytes"`
	Blocks uint64  `json:"blocks"`
	Frames []Frame `json:"frames"`
	// IndirectBytes, for definite leaks, counts the bytes of the blocks
	// only these blocks pointed to (valgrind's "X (Y direct, Z indirect)"):
	// Bytes is the direct part. The indirect blocks also have their own
	// sites of kind indirect.
	IndirectBytes uint64 `json:"indirect_bytes,omitempty"`
	// Pattern is frequent, occasional, one-time or implicit.
	Pattern string `json:"pattern,omitempty"`
	// GrowthBytesPerSec is the rate at which the site's live memory grew
	// while the process ran.
	GrowthBytesPerSec float64 `json:"growth_bytes_per_sec,omitempty"`
	// Family names the allocation function family (malloc, new, new[], mmap).
	Family string `json:"family,omitempty"`
	// Content holds the first bytes of one leaked block when the trace was
	// recorded with LEAK_CONTENT.
	Content []byte `json:"content,omitempty"`
	// Suppressed names the suppression that matched, if any.
	Suppressed string `json:"suppressed,omitempty"`
}

// Anomaly is a misuse of the allocation API seen in a trace.
type Anomaly struct {
	Pid     int     `json:"pid"`
	Type    string  `json:"type"`
	Address uint64  `json:"address"`
	Frames  []Frame `json:"frames"`
	Detail  string  `json:"detail,omitempty"`
}
