package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"libleak/analyzer/analyze"
)

func init() {
	register("snapshot", "scan a running traced process now and report its leaks", runSnapshot)
}

// signals LEAK_SCAN_SIGNAL may name.
var scanSignals = map[string]syscall.Signal{"USR1": syscall.SIGUSR1, "SIGUSR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "SIGUSR2": syscall.SIGUSR2}

func runSnapshot(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("snapshot", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var a analyzeFlags
	a.register(fs)
	wait := fs.Duration("wait", 500*time.Millisecond, "time the process gets to scan and write the result")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: leakanalyze snapshot [flags] PID\n\nThe process must run under libleak with LEAK_SCAN_SIGNAL set (e.g. USR2).\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		fmt.Fprintf(stderr, "leakanalyze: snapshot: %v\n", err)
		return exitBadInput
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitBadInput
	}
	pid, err := strconv.Atoi(fs.Arg(0))
	if err != nil || pid <= 0 {
		fmt.Fprintf(stderr, "leakanalyze: %s: not a process id\n", fs.Arg(0))
		return exitBadInput
	}
	sig, trace, err := snapshotTarget(pid)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: pid %d: %v\n", pid, err)
		return exitBadInput
	}
	if err := syscall.Kill(pid, sig); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: pid %d: %v\n", pid, err)
		return exitBadInput
	}
	// The writer scans within one flush interval and writes the verdicts
	// with its next frame.
	time.Sleep(*wait)
	o, err := a.options(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	rep, err := analyze.Run([]string{trace}, o)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	// A live process's trace always ends mid-run: that is not news here.
	kept := rep.Warnings[:0]
	for _, w := range rep.Warnings {
		if !strings.Contains(w, "truncated after") {
			kept = append(kept, w)
		}
	}
	rep.Warnings = kept
	if err := a.write(rep, stdout); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	return exitOK
}

// snapshotTarget finds the signal a traced process scans on and the trace
// file it writes.
func snapshotTarget(pid int) (syscall.Signal, string, error) {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return 0, "", fmt.Errorf("cannot read its environment: %v", unwrap(err))
	}
	var sig syscall.Signal
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "LEAK_SCAN_SIGNAL="); ok {
			if s, ok := scanSignals[v]; ok {
				sig = s
			} else if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65 {
				sig = syscall.Signal(n)
			}
		}
	}
	if sig == 0 {
		return 0, "", fmt.Errorf("not started with LEAK_SCAN_SIGNAL (for example LEAK_SCAN_SIGNAL=USR2)")
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err == nil && strings.HasPrefix(filepath.Base(target), "leak.") && strings.Contains(target, ".zst") {
			return sig, target, nil
		}
	}
	return 0, "", fmt.Errorf("no open libleak trace (is it running under libleak.so, and are its descriptors readable?)")
}

func unwrap(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
