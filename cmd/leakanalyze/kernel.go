package main

// The kernel and system modes: kmemleak reports, slab caches over time,
// one process's mappings over time, and every process ranked by growth.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/spf13/pflag"

	"libleak/analyzer/kmemleak"
	"libleak/analyzer/proc"
	"libleak/analyzer/slab"
	"libleak/analyzer/trend"
)

func init() {
	register("kmemleak", "group a kernel kmemleak report by allocating code (file, - or live)", runKmemleak)
	register("slab", "find slab caches that grow steadily (live, or recorded samples)", runSlab)
	register("proc", "find which mapping of a process grows steadily", runProc)
	register("top", "rank every process by memory growth, with the system picture", runTop)
}

// kernelFlags parses a subcommand's flags. It answers --help on stdout and
// a bad flag with one line on stderr; done reports that the command must
// return code without running.
func kernelFlags(fs *pflag.FlagSet, synopsis string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "usage: %s\n\nflags:\n%s", synopsis, fs.FlagUsages())
		return exitOK, true
	}
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %s: %v\n", fs.Name(), err)
		return exitBadInput, true
	}
	return 0, false
}

// kernelBad prints the one line bad input gets.
func kernelBad(stderr io.Writer, what string, format string, a ...any) int {
	fmt.Fprintf(stderr, "leakanalyze: %s: %s\n", what, fmt.Sprintf(format, a...))
	return exitBadInput
}

// samplingFlags are shared by slab, proc and top.
type samplingFlags struct {
	interval   time.Duration
	duration   time.Duration
	top        int
	confidence float64
	minGrowth  string
	format     string
}

func (f *samplingFlags) register(fs *pflag.FlagSet, interval, duration time.Duration, top int) {
	fs.DurationVar(&f.interval, "interval", interval, "time between samples (down to 10ms)")
	fs.DurationVar(&f.duration, "duration", duration, "how long to sample")
	fs.IntVar(&f.top, "top", top, "list at most this many (0: all)")
	fs.Float64Var(&f.confidence, "confidence", trend.DefaultConfidence, "confidence a trend needs to count, between 0.5 and 1")
	fs.StringVar(&f.minGrowth, "min-growth", "16KiB", "growth over the window below which nothing is flagged")
	fs.StringVar(&f.format, "format", "text", "output format: text or json")
}

// check validates the flags; live is false when samples come from files,
// where --duration means nothing.
func (f *samplingFlags) check(stderr io.Writer, live bool) (float64, int, bool) {
	if f.format != "text" && f.format != "json" {
		return 0, kernelBad(stderr, "--format "+f.format, "want text or json"), false
	}
	if f.interval < 10*time.Millisecond {
		return 0, kernelBad(stderr, "--interval "+f.interval.String(), "must be at least 10ms"), false
	}
	if live && f.duration < 2*f.interval {
		return 0, kernelBad(stderr, "--duration "+f.duration.String(),
			"shorter than 2 × --interval %s: a trend needs at least 3 samples", f.interval), false
	}
	if !(f.confidence >= 0.5 && f.confidence < 1) {
		return 0, kernelBad(stderr, "--confidence "+strconv.FormatFloat(f.confidence, 'g', -1, 64), "want a value from 0.5 up to, not including, 1"), false
	}
	if f.top < 0 {
		return 0, kernelBad(stderr, "--top "+strconv.Itoa(f.top), "must not be negative"), false
	}
	minGrowth, err := parseByteSize(f.minGrowth)
	if err != nil {
		return 0, kernelBad(stderr, "--min-growth "+f.minGrowth, "%v", err), false
	}
	return minGrowth, 0, true
}

// parseByteSize reads 4096, 16K, 16KiB, 1.5M, 2GiB: binary units, since
// memory comes in pages.
func parseByteSize(s string) (float64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	lower := strings.ToLower(t)
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || t == "" {
		return 0, fmt.Errorf("not a size (try 4096, 16KiB or 1MiB)")
	}
	return v * mult, nil
}

// progress reports sampling on stderr, only when stderr is a terminal:
// logs and pipes get the report alone.
func progress(stderr io.Writer, what string) (func(done, total int), func()) {
	f, ok := stderr.(*os.File)
	if !ok || !isTerminal(f) {
		return nil, func() {}
	}
	started := time.Now()
	return func(done, total int) {
			fmt.Fprintf(f, "\r\033[K%s: sample %d/%d, %.0f s (Ctrl-C stops and reports)", what, done, total, time.Since(started).Seconds())
		}, func() {
			fmt.Fprint(f, "\r\033[K")
		}
}

func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// interruptible is a context Ctrl-C or SIGTERM ends: sampling stops and
// the samples so far are reported.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func writeOut(stdout, stderr io.Writer, write func(io.Writer) error) bool {
	if err := write(stdout); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: writing the report: %v\n", err)
		return false
	}
	return true
}

func runKmemleak(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("kmemleak", pflag.ContinueOnError)
	format := fs.String("format", "text", "output format: text or json")
	depth := fs.Int("depth", kmemleak.DefaultDepth, "frames past the allocator that make a group's signature")
	top := fs.Int("top", 0, "show at most this many groups in text (0: all)")
	scan := fs.Bool("scan", false, "live: make kmemleak scan twice before reading")
	clear := fs.Bool("clear", false, "live: forget the reported objects after reading")
	fail := fs.Bool("fail", false, "exit 1 when any object is reported")
	if code, done := kernelFlags(fs, "leakanalyze kmemleak [flags] [FILE|-]\n\n"+
		"Without FILE, reads the running kernel's /sys/kernel/debug/kmemleak (root).", args, stdout, stderr); done {
		return code
	}
	if *format != "text" && *format != "json" {
		return kernelBad(stderr, "--format "+*format, "want text or json")
	}
	if *depth < 1 {
		return kernelBad(stderr, "--depth "+strconv.Itoa(*depth), "must be at least 1")
	}
	if *top < 0 {
		return kernelBad(stderr, "--top "+strconv.Itoa(*top), "must not be negative")
	}
	if fs.NArg() > 1 {
		return kernelBad(stderr, "kmemleak", "one FILE at most, got %d", fs.NArg())
	}

	var (
		data []byte
		name string
		err  error
	)
	if fs.NArg() == 1 {
		if *scan {
			return kernelBad(stderr, "--scan", "only for the live report, not with FILE")
		}
		if *clear {
			return kernelBad(stderr, "--clear", "only for the live report, not with FILE")
		}
		name = fs.Arg(0)
		if name == "-" {
			name = "standard input"
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			return kernelBad(stderr, name, "%v", unwrapPath(err))
		}
	} else {
		name = kmemleak.DefaultDebugfs + "/kmemleak"
		data, err = kmemleak.ReadLive(kmemleak.LiveOptions{Scan: *scan, Clear: *clear})
		if err != nil {
			return kernelBad(stderr, name, "%v", err)
		}
	}
	objs, err := kmemleak.Parse(bytes.NewReader(data))
	if err != nil {
		return kernelBad(stderr, name, "%v", err)
	}
	rep := kmemleak.GroupObjects(objs, *depth)
	ok := writeOut(stdout, stderr, func(w io.Writer) error {
		if *format == "json" {
			return kmemleak.WriteJSON(w, rep)
		}
		return kmemleak.WriteText(w, rep, *top)
	})
	switch {
	case !ok:
		return exitBadInput
	case *fail && rep.Objects > 0:
		return exitLeaks
	}
	return exitOK
}

// unwrapPath drops the path os errors repeat, since the message starts
// with it already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func runSlab(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("slab", pflag.ContinueOnError)
	var f samplingFlags
	f.register(fs, 2*time.Second, 30*time.Second, 10)
	record := fs.String("record", "", "live: also append every sample to this file (the recording format)")
	if code, done := kernelFlags(fs, "leakanalyze slab [flags] [FILE...]\n\n"+
		"Without FILE, samples /proc/slabinfo and /proc/meminfo (root). FILEs are recordings\n"+
		"or plain copies of /proc/slabinfo, in time order; - is standard input.\n"+
		"Exit status 1 when unreclaimable slab memory grows steadily.", args, stdout, stderr); done {
		return code
	}
	live := fs.NArg() == 0
	minGrowth, code, ok := f.check(stderr, live)
	if !ok {
		return code
	}
	var samples []slab.Sample
	if live {
		var rec io.Writer
		if *record != "" {
			file, err := os.OpenFile(*record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				return kernelBad(stderr, *record, "%v", unwrapPath(err))
			}
			defer file.Close()
			rec = file
		}
		ctx, stop := interruptible()
		defer stop()
		tick, clearLine := progress(stderr, "slab")
		var err error
		samples, err = slab.Collect(ctx, slab.LiveOptions{Interval: f.interval, Duration: f.duration, Record: rec, Progress: tick})
		clearLine()
		if err != nil && !errors.Is(err, context.Canceled) {
			var pe *slab.PathError
			if errors.As(err, &pe) {
				return kernelBad(stderr, pe.Path, "%s", pe.Msg)
			}
			return kernelBad(stderr, "slab", "%v", err)
		}
	} else {
		if *record != "" {
			return kernelBad(stderr, "--record", "only when sampling live, not with FILE")
		}
		for _, name := range fs.Args() {
			var r io.Reader
			if name == "-" {
				r = os.Stdin
			} else {
				file, err := os.Open(name)
				if err != nil {
					return kernelBad(stderr, name, "%v", unwrapPath(err))
				}
				defer file.Close()
				r = file
			}
			got, err := slab.ReadSamples(r, f.interval)
			if err != nil {
				return kernelBad(stderr, name, "%v", err)
			}
			if len(got) == 0 {
				return kernelBad(stderr, name, "no samples: neither /proc/slabinfo nor /proc/meminfo contents")
			}
			samples = append(samples, got...)
		}
		if err := slab.SetTimes(samples, f.interval); err != nil {
			return kernelBad(stderr, strings.Join(fs.Args(), " "), "%v", err)
		}
	}
	rep := slab.Analyze(samples, slab.Options{Confidence: f.confidence, MinGrowth: minGrowth, Top: f.top})
	if !writeOut(stdout, stderr, func(w io.Writer) error {
		if f.format == "json" {
			return slab.WriteJSON(w, rep)
		}
		return slab.WriteText(w, rep)
	}) {
		return exitBadInput
	}
	if rep.Flagged > 0 {
		return exitLeaks
	}
	return exitOK
}

func runProc(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("proc", pflag.ContinueOnError)
	var f samplingFlags
	f.register(fs, time.Second, 20*time.Second, 10)
	pid := fs.String("pid", "", "process to watch")
	if code, done := kernelFlags(fs, "leakanalyze proc --pid PID [flags]\n\n"+
		"Samples /proc/PID/status and /proc/PID/smaps. Exit status 1 when its anonymous\n"+
		"memory grows steadily.", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return kernelBad(stderr, fs.Arg(0), "unexpected argument: the process is given with --pid")
	}
	if *pid == "" {
		return kernelBad(stderr, "--pid", "required: the process to watch")
	}
	n, err := strconv.Atoi(*pid)
	if err != nil || n <= 0 {
		return kernelBad(stderr, "--pid "+*pid, "not a process id")
	}
	minGrowth, code, ok := f.check(stderr, true)
	if !ok {
		return code
	}
	ctx, stop := interruptible()
	defer stop()
	tick, clearLine := progress(stderr, "proc "+*pid)
	run, err := proc.CollectProcess(ctx, proc.ProcOptions{Pid: n, Interval: f.interval, Duration: f.duration, Progress: tick})
	clearLine()
	if err != nil && !errors.Is(err, context.Canceled) {
		var pe *proc.PathError
		if errors.As(err, &pe) {
			return kernelBad(stderr, pe.Path, "%s", pe.Msg)
		}
		return kernelBad(stderr, "--pid "+*pid, "%v", err)
	}
	rep := proc.AnalyzeProcess(run, proc.Options{Confidence: f.confidence, MinGrowth: minGrowth, Top: f.top})
	if !writeOut(stdout, stderr, func(w io.Writer) error {
		if f.format == "json" {
			return proc.WriteJSON(w, rep)
		}
		return proc.WriteProcessText(w, rep)
	}) {
		return exitBadInput
	}
	if rep.Flagged {
		return exitLeaks
	}
	return exitOK
}

func runTop(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("top", pflag.ContinueOnError)
	var f samplingFlags
	f.register(fs, 2*time.Second, 20*time.Second, 15)
	if code, done := kernelFlags(fs, "leakanalyze top [flags]\n\n"+
		"Samples every process's status and smaps_rollup, and /proc/meminfo. Exit status 1\n"+
		"when a process or unreclaimable slab grows steadily.", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return kernelBad(stderr, fs.Arg(0), "unexpected argument")
	}
	minGrowth, code, ok := f.check(stderr, true)
	if !ok {
		return code
	}
	ctx, stop := interruptible()
	defer stop()
	tick, clearLine := progress(stderr, "top")
	run, err := proc.CollectTop(ctx, proc.TopOptions{Interval: f.interval, Duration: f.duration, Progress: tick, Exclude: os.Getpid()})
	clearLine()
	if err != nil && !errors.Is(err, context.Canceled) {
		var pe *proc.PathError
		if errors.As(err, &pe) {
			return kernelBad(stderr, pe.Path, "%s", pe.Msg)
		}
		return kernelBad(stderr, "top", "%v", err)
	}
	rep := proc.AnalyzeTop(run, proc.Options{Confidence: f.confidence, MinGrowth: minGrowth, Top: f.top})
	if !writeOut(stdout, stderr, func(w io.Writer) error {
		if f.format == "json" {
			return proc.WriteJSON(w, rep)
		}
		return proc.WriteTopText(w, rep)
	}) {
		return exitBadInput
	}
	if rep.Flagged > 0 {
		return exitLeaks
	}
	return exitOK
}
