package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// PathError is a /proc file that could not be read, with what to do.
type PathError struct {
	Path string
	Msg  string
	Err  error
}

func (e *PathError) Error() string { return e.Path + ": " + e.Msg }
func (e *PathError) Unwrap() error { return e.Err }

// ErrExited marks a process that is gone (or a zombie).
var ErrExited = errors.New("process exited")

// readWhole reads a /proc file in a single read when the buffer is large
// enough: smaps is generated as it is read, and one read sees one state
// of the address space rather than a mix of two. hint is the size to try
// first (0: 64 KiB); the buffer doubles until the read comes back short.
func readWhole(path string, hint int) ([]byte, error) {
	size := hint
	if size <= 0 {
		size = 64 * 1024
	}
	for {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		n, err := f.Read(buf)
		if err != nil && err != io.EOF {
			f.Close()
			return nil, err
		}
		if n < len(buf) {
			// Normally at the end already; read on in case the
			// file is not a seq_file that fills the whole buffer.
			rest, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				return nil, err
			}
			return append(buf[:n], rest...), nil
		}
		f.Close()
		size *= 2
	}
}

// procErr explains why a file of process pid could not be read.
func procErr(path string, pid int, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ESRCH):
		return fmt.Errorf("%w: %s", ErrExited, path)
	case errors.Is(err, fs.ErrPermission) && os.Geteuid() == 0:
		return &PathError{Path: path, Err: err, Msg: fmt.Sprintf(
			"permission denied even to root: process %d is not dumpable, or a security module or sandbox refuses ptrace access", pid)}
	case errors.Is(err, fs.ErrPermission):
		return &PathError{Path: path, Err: err, Msg: fmt.Sprintf(
			"permission denied: reading the memory maps of process %d needs root or the same user (ptrace access)", pid)}
	}
	return &PathError{Path: path, Msg: err.Error(), Err: err}
}

// ProcSample is one process at one moment.
type ProcSample struct {
	// T is seconds since the first sample.
	T      float64
	Status Status
	// Mappings are smaps' entries; nil when smaps could not be read.
	Mappings []Mapping
}

// ProcOptions say how to sample one process.
type ProcOptions struct {
	Pid      int
	Interval time.Duration
	Duration time.Duration
	// Proc is procfs's mount point; empty means /proc.
	Proc     string
	Progress func(done, total int)
}

// ProcRun is what sampling one process gave.
type ProcRun struct {
	Pid     int
	Cmdline []string
	Samples []ProcSample
	// Exited is set when the process went away during the window.
	Exited   bool
	Warnings []string
}

// SampleCount is how many samples an interval and duration make.
func SampleCount(interval, duration time.Duration) int {
	if interval <= 0 {
		return 1
	}
	return int(duration/interval) + 1
}

// CollectProcess samples /proc/PID/status and /proc/PID/smaps every
// Interval for Duration. A process that exits ends the run early with the
// samples taken; one gone before the first sample is an error. When ctx
// ends, the samples so far are returned with ctx's error.
func CollectProcess(ctx context.Context, opt ProcOptions) (*ProcRun, error) {
	root := opt.Proc
	if root == "" {
		root = "/proc"
	}
	dir := filepath.Join(root, strconv.Itoa(opt.Pid))
	run := &ProcRun{Pid: opt.Pid}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		run.Cmdline = splitCmdline(b)
	}
	n := SampleCount(opt.Interval, opt.Duration)
	noSmaps := false
	hint := 0
	var first time.Time
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return run, ctx.Err()
			case <-time.After(time.Until(first.Add(time.Duration(i) * opt.Interval))):
			}
		}
		when := time.Now()
		if i == 0 {
			first = when
		}
		s, err := sampleOne(dir, opt.Pid, !noSmaps, &hint)
		var pe *PathError
		if errors.As(err, &pe) && errors.Is(err, fs.ErrPermission) && filepath.Base(pe.Path) == "smaps" && !noSmaps {
			// Without smaps there is still status: carry on with the
			// totals it gives.
			noSmaps = true
			run.Warnings = append(run.Warnings, pe.Error()+"; per-mapping growth not available")
			s, err = sampleOne(dir, opt.Pid, false, &hint)
		}
		if errors.Is(err, ErrExited) {
			if len(run.Samples) == 0 {
				return nil, &PathError{Path: dir, Msg: "no such process", Err: err}
			}
			run.Exited = true
			return run, nil
		}
		if err != nil {
			return run, err
		}
		s.T = when.Sub(first).Seconds()
		run.Samples = append(run.Samples, s)
		if opt.Progress != nil {
			opt.Progress(i+1, n)
		}
	}
	return run, nil
}

func sampleOne(dir string, pid int, smaps bool, hint *int) (ProcSample, error) {
	var s ProcSample
	path := filepath.Join(dir, "status")
	data, err := readWhole(path, 4096)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return s, &PathError{Path: path, Err: err, Msg: "permission denied: /proc is mounted with hidepid; run as root or as the process's user"}
		}
		return s, procErr(path, pid, err)
	}
	if s.Status, err = ParseStatus(data); err != nil {
		return s, &PathError{Path: path, Msg: err.Error(), Err: err}
	}
	if s.Status.Zombie() {
		return s, fmt.Errorf("%w: %s is a zombie", ErrExited, dir)
	}
	if !s.Status.HasMM {
		return s, &PathError{Path: path, Msg: "a kernel thread: it has no user memory to watch"}
	}
	if !smaps {
		return s, nil
	}
	path = filepath.Join(dir, "smaps")
	data, err = readWhole(path, *hint)
	if err != nil {
		return s, procErr(path, pid, err)
	}
	*hint = len(data) * 2
	if len(data) == 0 {
		// An exiting process has no address space left to list.
		return s, fmt.Errorf("%w: %s is empty", ErrExited, path)
	}
	if s.Mappings, err = ParseSmaps(data); err != nil {
		return s, &PathError{Path: path, Msg: err.Error(), Err: err}
	}
	return s, nil
}

func splitCmdline(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			out = append(out, string(b[start:i]))
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, string(b[start:]))
	}
	return out
}
