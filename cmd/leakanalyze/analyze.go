package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"libleak/analyzer/analyze"
	"libleak/analyzer/report"
)

func init() {
	register("analyze", "report leaks in traces (the default command)", runAnalyze)
}

// analyzeFlags are shared by analyze and run.
type analyzeFlags struct {
	format, out, group, sortBy, exe, show string
	top                                   int
	minBytes                              uint64
	pids                                  []int
	minAge                                string
	noDemangle                            bool
	debugDirs                             []string
	sysroot                               string
	maxFrames                             int
	scan                                  int
}

func (a *analyzeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&a.format, "format", "text", "report format: text, json or pprof")
	fs.StringVarP(&a.out, "output", "o", "", "write the report to this file (required for pprof)")
	fs.StringVar(&a.group, "group", "stack", "group leaks by: stack, top:N (innermost N frames) or function")
	fs.StringVar(&a.sortBy, "sort", "bytes", "sort sites by bytes or blocks")
	fs.IntVar(&a.top, "top", 0, "report at most N sites (0: all)")
	fs.Uint64Var(&a.minBytes, "min-bytes", 0, "hide sites that leaked fewer bytes")
	fs.IntSliceVar(&a.pids, "pid", nil, "only these processes")
	fs.StringVar(&a.exe, "exe", "", "only processes of this executable (base name or path)")
	fs.StringVar(&a.minAge, "min-age", "", "only blocks still live this long after they were made (e.g. 30s)")
	fs.StringVar(&a.show, "show", "", "kinds to show in the text report (default: definite,possible; unfreed when not scanned)")
	fs.BoolVar(&a.noDemangle, "no-demangle", false, "keep C++ names mangled")
	fs.StringSliceVar(&a.debugDirs, "debug-dir", nil, "extra directory of separate debug files (repeatable)")
	fs.StringVar(&a.sysroot, "sysroot", "", "prefix for module paths, for traces from another machine")
	fs.IntVar(&a.maxFrames, "max-frames", 0, "print at most N frames per site (0: all)")
	fs.IntVar(&a.scan, "scan", 0, "take kinds from reachability scan N of a trace (1: the first; default: the last)")
}

func (a *analyzeFlags) options(stderr io.Writer) (analyze.Options, error) {
	o := analyze.Options{Group: a.group, SortBy: a.sortBy, Top: a.top, MinBytes: a.minBytes, Pids: a.pids, Exe: a.exe, Scan: a.scan}
	switch {
	case a.group == "stack" || a.group == "function":
	case strings.HasPrefix(a.group, "top:"):
		var n int
		if _, err := fmt.Sscanf(a.group[4:], "%d", &n); err != nil || n < 1 {
			return o, fmt.Errorf("--group %s: want top:N with N ≥ 1", a.group)
		}
	default:
		return o, fmt.Errorf("--group %s: want stack, top:N or function", a.group)
	}
	if a.sortBy != "bytes" && a.sortBy != "blocks" {
		return o, fmt.Errorf("--sort %s: want bytes or blocks", a.sortBy)
	}
	if a.minAge != "" {
		d, err := parseDuration(a.minAge)
		if err != nil {
			return o, fmt.Errorf("--min-age %s: %v", a.minAge, err)
		}
		o.MinAge = d
	}
	o.Symbolizer, o.Prefetch = newSymbolizer(a.debugDirs, a.sysroot, !a.noDemangle)
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		o.Progress = func(done, total int, path string) {
			fmt.Fprintf(stderr, "\r%d/%d traces analyzed", done, total)
			if done == total {
				fmt.Fprintf(stderr, "\r\033[K")
			}
		}
	}
	return o, nil
}

func runAnalyze(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("analyze", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var a analyzeFlags
	a.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: leakanalyze [analyze] [flags] TRACE...\n\nTRACE is a libleak trace or a glibc MALLOC_TRACE file.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		fmt.Fprintf(stderr, "leakanalyze: analyze: %v\n", err)
		return exitBadInput
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(stderr, "leakanalyze: no trace given\n")
		return exitBadInput
	}
	o, err := a.options(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	rep, err := analyze.Run(fs.Args(), o)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	if err := a.write(rep, stdout); err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	return exitOK
}

// defaultShow is what the text report shows when --show is not given:
// what valgrind shows by default.
func (a *analyzeFlags) showKinds() []string {
	if a.show == "" {
		return []string{report.KindDefinite, report.KindPossible, report.KindUnfreed}
	}
	if a.show == "all" {
		return nil
	}
	return strings.Split(a.show, ",")
}

func (a *analyzeFlags) write(rep *report.Report, stdout io.Writer) error {
	w := stdout
	if a.out != "" {
		f, err := os.Create(a.out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	switch a.format {
	case "text":
		return report.WriteText(w, rep, report.TextOptions{Show: a.showKinds(), MaxFrames: a.maxFrames})
	case "json":
		return report.WriteJSON(w, rep)
	case "pprof":
		if a.out == "" {
			return fmt.Errorf("--format pprof needs -o FILE")
		}
		return writePprof(w, rep)
	}
	return fmt.Errorf("--format %s: want text, json or pprof", a.format)
}
