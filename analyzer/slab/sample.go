package slab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// LiveOptions say how to sample the running kernel.
type LiveOptions struct {
	Interval time.Duration
	Duration time.Duration
	// Proc and SysSlab are procfs and /sys/kernel/slab; empty means the
	// real ones.
	Proc    string
	SysSlab string
	// Record, when set, receives every sample in the recording format as
	// soon as it is taken, so an interrupted run keeps what it saw.
	Record io.Writer
	// Progress, when set, is called after each sample.
	Progress func(done, total int)
}

// PathError is a file the sampler could not read, with what to do.
type PathError struct {
	Path string
	Msg  string
	Err  error
}

func (e *PathError) Error() string { return e.Path + ": " + e.Msg }
func (e *PathError) Unwrap() error { return e.Err }

// SampleCount is how many samples an interval and duration make: one at
// the start and one at the end of every interval.
func SampleCount(interval, duration time.Duration) int {
	if interval <= 0 {
		return 1
	}
	return int(duration/interval) + 1
}

// Collect samples /proc/slabinfo and /proc/meminfo every Interval for
// Duration. When ctx ends early it returns the samples taken so far with
// ctx's error.
func Collect(ctx context.Context, opt LiveOptions) ([]Sample, error) {
	proc := opt.Proc
	if proc == "" {
		proc = "/proc"
	}
	sysSlab := opt.SysSlab
	if sysSlab == "" {
		sysSlab = "/sys/kernel/slab"
	}
	n := SampleCount(opt.Interval, opt.Duration)
	var (
		out         []Sample
		reclaimable []string
		start       = time.Now()
	)
	for i := 0; i < n; i++ {
		if i > 0 {
			wait := time.Until(start.Add(time.Duration(i) * opt.Interval))
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(wait):
			}
		}
		when := time.Now()
		slabRaw, err := readProc(filepath.Join(proc, "slabinfo"))
		if err != nil {
			return out, err
		}
		memRaw, err := readProc(filepath.Join(proc, "meminfo"))
		if err != nil {
			return out, err
		}
		got, err := ReadSamples(bytes.NewReader(append(append([]byte{}, memRaw...), slabRaw...)), opt.Interval)
		if err != nil || len(got) != 1 {
			return out, &PathError{Path: filepath.Join(proc, "slabinfo"), Msg: fmt.Sprintf("unexpected contents: %v", err)}
		}
		s := got[0]
		if i == 0 {
			reclaimable = reclaimAccount(sysSlab, s.Caches)
		}
		if reclaimable != nil {
			s.Reclaimable = map[string]bool{}
			for _, name := range reclaimable {
				s.Reclaimable[name] = true
			}
		}
		s.Wall = when
		if len(out) > 0 {
			s.T = when.Sub(out[0].Wall).Seconds()
		}
		if opt.Record != nil {
			if err := WriteSample(opt.Record, when, memRaw, slabRaw, reclaimable); err != nil {
				return out, &PathError{Path: "recording", Msg: err.Error(), Err: err}
			}
		}
		out = append(out, s)
		if opt.Progress != nil {
			opt.Progress(i+1, n)
		}
	}
	return out, nil
}

// readProc reads a /proc file whole, turning access errors into advice.
func readProc(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, fs.ErrPermission):
		return nil, &PathError{Path: path, Msg: "permission denied: readable by root only, run as root", Err: err}
	case errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(path, "slabinfo"):
		return nil, &PathError{Path: path, Msg: "not present: this kernel does not export slab statistics (CONFIG_SLUB_DEBUG)", Err: err}
	}
	return nil, &PathError{Path: path, Msg: err.Error(), Err: err}
}

// reclaimAccount lists the caches SLUB marks reclaim_account=1, whose
// objects shrinkers free under memory pressure. Nil when sysfs does not
// say (SLAB, or /sys not mounted).
func reclaimAccount(sysSlab string, caches []Cache) []string {
	if _, err := os.Stat(sysSlab); err != nil {
		return nil
	}
	out := []string{}
	for _, c := range caches {
		b, err := os.ReadFile(filepath.Join(sysSlab, c.Name, "reclaim_account"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			out = append(out, c.Name)
		}
	}
	sort.Strings(out)
	return out
}
