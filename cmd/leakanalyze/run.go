package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"

	"libleak/analyzer/analyze"
	"libleak/analyzer/baseline"
	"libleak/analyzer/cireport"
	"libleak/analyzer/report"
	"libleak/analyzer/suppress"
)

func init() {
	register("run", "run a command under libleak and fail if it leaks", runRun)
}

// Exit statuses of run besides exitOK, exitLeaks and exitBadInput, as
// shells, env and timeout use them, so a wrapped command that cannot be
// started looks the same to a CI script as it would unwrapped.
const (
	exitCannotRun = 126
	exitNotFound  = 127
)

// allKinds is every kind a leak can have, in the order reports list them.
var allKinds = []string{report.KindDefinite, report.KindIndirect, report.KindPossible, report.KindReachable, report.KindUnfreed}

// runFlags are run's own flags; the report is shaped by the analyze flags,
// which run shares so that both commands print the same report.
type runFlags struct {
	analyzeFlags
	lib           string
	failOn        string
	errorExitcode int
	keepTraces    string
	suppressions  []string
	noDefaultSupp bool
	showSupp      bool
	verbose       bool
	baseline      string
	writeBaseline string
	junit         string
	sarif         string
	jsonOut       string
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	f.analyzeFlags.register(fs)
	fs.StringVar(&f.lib, "lib", "", "path of libleak.so (default: $LEAK_LIB, next to leakanalyze, or ../lib relative to it)")
	fs.StringVar(&f.failOn, "fail-on", "definite,possible", "leak kinds that fail the run: definite, indirect, possible, reachable, unfreed, all or none")
	fs.IntVar(&f.errorExitcode, "error-exitcode", exitLeaks, "exit status when leaks of the --fail-on kinds remain (0 reports without failing)")
	fs.StringVar(&f.keepTraces, "keep-traces", "", "move the traces into this directory instead of deleting them")
	fs.StringArrayVar(&f.suppressions, "suppressions", nil, "suppression file, valgrind, LSan or libleak format (repeatable)")
	fs.BoolVar(&f.noDefaultSupp, "no-default-suppressions", false, "do not apply the built-in suppressions for glibc, ld.so and libstdc++")
	fs.BoolVar(&f.showSupp, "show-suppressions", false, "list the suppressions that matched, how often, and those that never matched")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "say where tracing goes, list the traces and the suppressions used")
	fs.StringVar(&f.baseline, "baseline", "", "fail only on leak sites not in this baseline file")
	fs.StringVar(&f.writeBaseline, "write-baseline", "", "record the leak sites of the --fail-on kinds in this baseline file")
	fs.StringVar(&f.junit, "junit", "", "write the failing leak sites as a JUnit XML file")
	fs.StringVar(&f.sarif, "sarif", "", "write the failing leak sites as a SARIF 2.1.0 file")
	fs.StringVar(&f.jsonOut, "json", "", "also write the whole report as JSON to this file")
}

// gate is what the flags resolve to before the command runs, so that a
// mistake in them is found before a long test suite, not after it.
type gate struct {
	*runFlags
	libPath    string
	failKinds  map[string]bool
	failList   []string
	opts       analyze.Options
	supp       *suppress.Set
	userSupp   *suppress.Set
	base       *baseline.Baseline
	sourceRoot string
}

func runRun(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	// Everything from the command's name on is the command's own.
	fs.SetInterspersed(false)
	var f runFlags
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: leakanalyze run [flags] [--] CMD [ARGS...]\n\n"+
			"Runs CMD with libleak.so preloaded, traces it and every process it starts,\n"+
			"prints one leak report to stderr and fails if leaks of the --fail-on kinds remain.\n"+
			"Exit status: CMD's when it fails (128+N when killed by signal N), else\n"+
			"--error-exitcode when leaks remain, else 0; 2 for bad flags or files.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		fmt.Fprintf(stderr, "leakanalyze: run: %v\n", err)
		return exitBadInput
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintf(stderr, "leakanalyze: run: no command given (usage: leakanalyze run [flags] -- CMD [ARGS...])\n")
		return exitBadInput
	}
	g, err := f.prepare(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return exitBadInput
	}
	return g.run(argv, stdout, stderr)
}

// prepare checks every flag and reads every input file.
func (f *runFlags) prepare(stderr io.Writer) (*gate, error) {
	g := &gate{runFlags: f}
	var err error
	if g.failKinds, g.failList, err = parseFailOn(f.failOn); err != nil {
		return nil, err
	}
	if f.errorExitcode < 0 || f.errorExitcode > 255 {
		return nil, fmt.Errorf("--error-exitcode %d: want a status from 0 to 255", f.errorExitcode)
	}
	switch f.format {
	case "text", "json":
	case "pprof":
		if f.out == "" {
			return nil, fmt.Errorf("--format pprof: needs -o FILE")
		}
	default:
		return nil, fmt.Errorf("--format %s: want text, json or pprof", f.format)
	}
	if g.opts, err = f.options(stderr); err != nil {
		return nil, err
	}
	if g.libPath, err = findLib(f.lib); err != nil {
		return nil, err
	}
	for _, p := range []string{f.out, f.junit, f.sarif, f.jsonOut, f.writeBaseline} {
		if err := checkOutput(p); err != nil {
			return nil, err
		}
	}
	if f.keepTraces != "" {
		if err := os.MkdirAll(f.keepTraces, 0o755); err != nil {
			return nil, fmt.Errorf("%s: %v", f.keepTraces, pathErr(err))
		}
	}
	var sets []*suppress.Set
	for _, p := range f.suppressions {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p, pathErr(err))
		}
		s, err := suppress.Parse(p, data)
		if err != nil {
			return nil, err
		}
		sets = append(sets, s)
	}
	g.userSupp = suppress.Merge(sets...)
	if f.noDefaultSupp {
		g.supp = g.userSupp
	} else {
		g.supp = suppress.Merge(suppress.Defaults(), g.userSupp)
	}
	if f.baseline != "" {
		data, err := os.ReadFile(f.baseline)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", f.baseline, pathErr(err))
		}
		if g.base, err = baseline.Parse(f.baseline, data); err != nil {
			return nil, err
		}
	}
	g.sourceRoot = os.Getenv("GITHUB_WORKSPACE")
	if g.sourceRoot == "" {
		g.sourceRoot, _ = os.Getwd()
	}
	return g, nil
}

// parseFailOn reads a --fail-on list into a set and its canonical order.
func parseFailOn(list string) (map[string]bool, []string, error) {
	set := map[string]bool{}
	for _, k := range strings.Split(list, ",") {
		switch k = strings.TrimSpace(k); k {
		case "all":
			for _, a := range allKinds {
				set[a] = true
			}
		case "none":
		case report.KindDefinite, report.KindIndirect, report.KindPossible, report.KindReachable, report.KindUnfreed:
			set[k] = true
		default:
			return nil, nil, fmt.Errorf("--fail-on %s: unknown leak kind %q (want definite, indirect, possible, reachable, unfreed, all or none)", list, k)
		}
	}
	var order []string
	for _, k := range allKinds {
		if set[k] {
			order = append(order, k)
		}
	}
	return set, order, nil
}

// findLib locates libleak.so: the flag, then LEAK_LIB, then the places an
// installation puts it relative to leakanalyze (bin/ and lib/ side by side,
// or both in one directory as the build tree has them).
func findLib(flag string) (string, error) {
	p := flag
	if p == "" {
		p = os.Getenv("LEAK_LIB")
	}
	if p == "" {
		exe, err := os.Executable()
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			return "", fmt.Errorf("libleak.so: cannot locate leakanalyze's own directory (%v); give the library with --lib or LEAK_LIB", err)
		}
		dir := filepath.Dir(exe)
		lib := filepath.Join(filepath.Dir(dir), "lib")
		for _, c := range []string{filepath.Join(dir, "libleak.so"), filepath.Join(lib, "libleak.so")} {
			if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
				p = c
				break
			}
		}
		if p == "" {
			return "", fmt.Errorf("libleak.so: not found in %s or %s; give its path with --lib or LEAK_LIB", dir, lib)
		}
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s: %v", p, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s: %v", p, pathErr(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", p)
	}
	// ld.so splits LD_PRELOAD at spaces and colons.
	if strings.ContainsAny(abs, " :\t\n") {
		return "", fmt.Errorf("%s: LD_PRELOAD cannot hold a path with a space or colon; copy the library elsewhere", abs)
	}
	return abs, nil
}

// checkOutput makes sure an output file can be created once the command has
// run: a missing directory found only after an hour of tests wastes the hour.
func checkOutput(p string) error {
	if p == "" {
		return nil
	}
	if st, err := os.Stat(p); err == nil && st.IsDir() {
		return fmt.Errorf("%s: is a directory", p)
	}
	dir := filepath.Dir(p)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: directory %s: %v", p, dir, pathErr(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("%s: %s is not a directory", p, dir)
	}
	return nil
}

func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// childEnv is the environment of the traced command: the caller's, with
// the library put first in LD_PRELOAD (so that it wraps any allocator
// preloaded after it) and the traces sent to dir.
func childEnv(lib, dir string) []string {
	preload := lib
	var env []string
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "LEAK_OUT":
			continue
		case "LD_PRELOAD":
			if v = strings.TrimSpace(v); v != "" {
				preload = lib + ":" + v
				for _, e := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' }) {
					if e == lib {
						preload = v
					}
				}
			}
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LD_PRELOAD="+preload, "LEAK_OUT="+dir)
}

// run runs the command, analyzes its traces and applies the gate.
func (g *gate) run(argv []string, stdout, stderr io.Writer) int {
	dir, err := os.MkdirTemp("", "leakanalyze-run-")
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: temporary directory: %v\n", err)
		return exitBadInput
	}
	defer os.RemoveAll(dir)
	if g.verbose {
		fmt.Fprintf(stderr, "leakanalyze: tracing %s with %s into %s\n", shellJoin(argv), g.libPath, dir)
	}

	out, started := g.execute(argv, dir, stdout, stderr)
	if !started {
		return out.status
	}

	// The command is gone, but its traces are still to be read: an
	// interrupt now must not leave them behind in the temporary directory.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	stop := make(chan struct{})
	defer close(stop)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			os.RemoveAll(dir)
			os.Exit(128 + int(s.(syscall.Signal)))
		case <-stop:
		}
	}()

	traces, err := g.collect(dir)
	if err != nil {
		fmt.Fprintf(stderr, "leakanalyze: %v\n", err)
		return firstNonZero(out.status, exitBadInput)
	}
	if len(traces) == 0 {
		fmt.Fprintf(stderr, "leakanalyze: no process was traced%s\n", whyUntraced(argv[0]))
	}

	rep, unreadable := g.analyze(traces, stderr)
	v := g.judge(rep)
	rs := &runSummary{
		Command: argv, CommandStatus: out.status, Traces: len(traces), UnreadableTraces: unreadable,
		Processes: len(rep.Processes), FailOn: append([]string{}, g.failList...),
		Failing: v.fail, Baselined: v.known, Suppressed: v.suppressed, Suppressions: usages(g.supp),
	}
	rep.Extra = map[string]any{"run": rs}

	// The command's own failure comes first, as it would without
	// leakanalyze; then the gate's.
	switch {
	case out.status != 0:
		rs.ExitStatus = out.status
	case v.fail.Sites > 0:
		rs.ExitStatus = g.errorExitcode
	}
	if !g.writeAll(rep, v, rs, out, stdout, stderr) {
		return firstNonZero(out.status, exitBadInput)
	}
	return rs.ExitStatus
}

func firstNonZero(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// execute runs the command with its standard streams passed through and
// SIGINT and SIGTERM forwarded, and returns its status as a shell would.
// started is false when the command could not be started, and the status
// then says why (126 or 127).
func (g *gate) execute(argv []string, dir string, stdout, stderr io.Writer) (out outcome, started bool) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv(g.libPath, dir)
	cmd.Stdin = os.Stdin
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if cmd.Err != nil {
		return outcome{status: startFailure(argv[0], cmd.Err, stderr)}, false
	}
	// Notify before Start, so that no signal falls between the two and
	// kills leakanalyze while the command runs on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return outcome{status: startFailure(argv[0], err, stderr)}, false
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	ps := cmd.ProcessState
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return outcome{status: 128 + int(ws.Signal()), signal: ws.Signal()}, true
	}
	if err != nil && ps.ExitCode() == 0 {
		// The command succeeded but its output could not be passed on.
		fmt.Fprintf(stderr, "leakanalyze: %s: %v\n", argv[0], err)
		return outcome{status: exitBadInput}, true
	}
	return outcome{status: ps.ExitCode()}, true
}

func startFailure(name string, err error, stderr io.Writer) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "leakanalyze: %s: command not found\n", name)
		return exitNotFound
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	fmt.Fprintf(stderr, "leakanalyze: %s: %v\n", name, pathErr(err))
	return exitCannotRun
}

// whyUntraced guesses why a command left no trace, for the one line that
// says so.
func whyUntraced(name string) string {
	if v := os.Getenv("LEAK_OFF"); v != "" && v != "0" {
		return " (LEAK_OFF is set)"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if st.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		return fmt.Sprintf(": %s is setuid or setgid, and ld.so ignores LD_PRELOAD for such programs", name)
	}
	f, err := elf.Open(path)
	if err != nil {
		return ": it started no dynamically linked program (libleak.so is loaded by ld.so, through LD_PRELOAD)"
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return ": it started no dynamically linked program (libleak.so is loaded by ld.so, through LD_PRELOAD)"
		}
	}
	return fmt.Sprintf(": %s is statically linked, and libleak.so is loaded only into dynamically linked programs", name)
}

// collect lists the traces the run left in dir, moving them into
// --keep-traces first when asked to.
func (g *gate) collect(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if g.keepTraces != "" {
			if p, err = keep(p, g.keepTraces); err != nil {
				return nil, err
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// keep moves a trace into dir under a name no other file has, copying it
// when dir is on another file system.
func keep(src, dir string) (string, error) {
	name := filepath.Base(src)
	stem, ext := strings.TrimSuffix(name, ".zst"), ".zst"
	if !strings.HasSuffix(name, ext) {
		stem, ext = name, ""
	}
	for i := 0; ; i++ {
		dst := filepath.Join(dir, name)
		if i > 0 {
			dst = filepath.Join(dir, fmt.Sprintf("%s.%d%s", stem, i, ext))
		}
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.Rename(src, dst); err == nil {
			return dst, nil
		} else if !errors.Is(err, syscall.EXDEV) {
			return "", fmt.Errorf("%s: %v", dst, pathErr(err))
		}
		if err := copyFile(src, dst); err != nil {
			return "", fmt.Errorf("%s: %v", dst, pathErr(err))
		}
		return dst, nil
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// analyze reads every trace into one report, on every CPU: a build traces
// hundreds of processes, and each trace is decoded and symbolized on its
// own. The result does not depend on the order the work finishes in. A
// trace that cannot be read (a process killed before it wrote its header)
// is reported and skipped: the others still say what leaked.
func (g *gate) analyze(traces []string, stderr io.Writer) (*report.Report, int) {
	o := g.opts
	// The gate looks at every site; --top only shortens what is printed.
	o.Top = 0
	parts := make([]*report.Report, len(traces))
	errs := make([]error, len(traces))
	var mu sync.Mutex
	done := 0
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(traces)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				in, err := analyze.LoadFor(traces[i], o)
				if err != nil {
					errs[i] = err
				} else {
					parts[i] = &report.Report{}
					analyze.Add(parts[i], in, o)
				}
				mu.Lock()
				done++
				if g.verbose {
					fmt.Fprintf(stderr, "leakanalyze: analyzed %s\n", traces[i])
				} else if o.Progress != nil {
					o.Progress(done, len(traces), traces[i])
				}
				mu.Unlock()
			}
		}()
	}
	for i := range traces {
		next <- i
	}
	close(next)
	wg.Wait()

	rep := &report.Report{Summary: map[string]report.Totals{}, Leaks: []report.Leak{}, Anomalies: []report.Anomaly{}}
	unreadable := 0
	for i, p := range parts {
		if p == nil {
			unreadable++
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%v; skipped", errs[i]))
			continue
		}
		rep.Processes = append(rep.Processes, p.Processes...)
		rep.Warnings = append(rep.Warnings, p.Warnings...)
		rep.Leaks = append(rep.Leaks, p.Leaks...)
		rep.Implicit = append(rep.Implicit, p.Implicit...)
		rep.Anomalies = append(rep.Anomalies, p.Anomalies...)
	}
	analyze.Finish(rep, o)
	return rep, unreadable
}

// totals sums leak sites.
type totals struct {
	Sites  int    `json:"sites"`
	Bytes  uint64 `json:"bytes"`
	Blocks uint64 `json:"blocks"`
}

func (t *totals) add(l *report.Leak) {
	t.Sites++
	t.Bytes += l.Bytes
	t.Blocks += l.Blocks
}

func (t totals) String() string {
	return fmt.Sprintf("%s (%s in %s)", plural(t.Sites, "leak site", "leak sites"), report.Bytes(t.Bytes), report.Blocks(t.Blocks))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// verdict is what the gate decided about one run.
type verdict struct {
	failing    []report.Leak // unsuppressed, of the --fail-on kinds, not in the baseline
	recorded   []report.Leak // unsuppressed, of the --fail-on kinds: what --write-baseline records
	fail       totals
	known      totals // of the --fail-on kinds, in the baseline
	suppressed totals
	// unclassified counts the unsuppressed unfreed leaks when unfreed does
	// not fail the run: processes that were never scanned, whose leaks
	// would otherwise pass unnoticed.
	unclassified totals
}

// judge applies the suppressions and the baseline to rep and decides.
// rep.Summary is redone to count only unsuppressed memory per kind, plus
// the suppressed memory under "suppressed", as valgrind's summary does.
func (g *gate) judge(rep *report.Report) *verdict {
	v := &verdict{}
	g.supp.Filter(rep)
	sum := map[string]report.Totals{}
	for i := range rep.Leaks {
		l := &rep.Leaks[i]
		if l.Suppressed != "" {
			v.suppressed.add(l)
			continue
		}
		t := sum[l.Kind]
		t.Bytes += l.Bytes
		t.Blocks += l.Blocks
		sum[l.Kind] = t
		if !g.failKinds[l.Kind] {
			if l.Kind == report.KindUnfreed {
				v.unclassified.add(l)
			}
			continue
		}
		v.recorded = append(v.recorded, *l)
		if g.base.Contains(l) {
			v.known.add(l)
			continue
		}
		v.failing = append(v.failing, *l)
		v.fail.add(l)
	}
	if v.suppressed.Sites > 0 {
		sum["suppressed"] = report.Totals{Bytes: v.suppressed.Bytes, Blocks: v.suppressed.Blocks}
	}
	rep.Summary = sum
	return v
}

// runSummary is put in the JSON report under extra.run, so that a CI
// script can check the gate's inputs and decision without parsing text.
type runSummary struct {
	Command          []string        `json:"command"`
	CommandStatus    int             `json:"command_status"`
	ExitStatus       int             `json:"exit_status"`
	Traces           int             `json:"traces"`
	UnreadableTraces int             `json:"unreadable_traces"`
	Processes        int             `json:"processes"`
	FailOn           []string        `json:"fail_on"`
	Failing          totals          `json:"failing"`
	Baselined        totals          `json:"baselined"`
	Suppressed       totals          `json:"suppressed"`
	Suppressions     []suppressUsage `json:"suppressions_used"`
}

type suppressUsage struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Sites  int    `json:"sites"`
	Blocks uint64 `json:"blocks"`
	Bytes  uint64 `json:"bytes"`
}

// outcome is what the command did.
type outcome struct {
	status int            // as a shell reports it
	signal syscall.Signal // the signal that killed it, or 0
}

func (o outcome) String() string {
	if o.signal != 0 {
		return fmt.Sprintf("the command was killed by signal %d (%v): status %d", int(o.signal), o.signal, o.status)
	}
	return fmt.Sprintf("the command exited with status %d", o.status)
}

// writeAll writes the report, the footer and every file asked for; false
// means one of them could not be written (and was reported).
func (g *gate) writeAll(rep *report.Report, v *verdict, rs *runSummary, out outcome, stdout, stderr io.Writer) bool {
	ok := true
	fail := func(name string, err error) {
		fmt.Fprintf(stderr, "leakanalyze: %s: %v\n", name, pathErr(err))
		ok = false
	}

	disp := *rep
	if g.opts.Top > 0 {
		disp.Leaks = nil
		for _, l := range rep.Leaks {
			if l.Suppressed == "" && len(disp.Leaks) < g.opts.Top {
				disp.Leaks = append(disp.Leaks, l)
			}
		}
	}
	if err := g.write(&disp, stderr); err != nil {
		fail(orStderr(g.out), err)
	}

	foot := g.footer(v, rs, out)
	if g.format == "text" && g.out != "" {
		if err := appendFile(g.out, foot); err != nil {
			fail(g.out, err)
		}
	}
	io.WriteString(stderr, foot)

	if g.writeBaseline != "" {
		rec := *rep
		rec.Leaks = v.recorded
		if err := writeFile(g.writeBaseline, func(w io.Writer) error { return baseline.Write(w, &rec) }); err != nil {
			fail(g.writeBaseline, err)
		}
	}
	ci := *rep
	ci.Leaks = v.failing
	if g.junit != "" {
		name := "leakanalyze run " + shellJoin(rs.Command)
		if err := writeFile(g.junit, func(w io.Writer) error { return cireport.WriteJUnit(w, &ci, name) }); err != nil {
			fail(g.junit, err)
		}
	}
	if g.sarif != "" {
		if err := writeFile(g.sarif, func(w io.Writer) error { return cireport.WriteSARIF(w, &ci, toolVersion(), g.sourceRoot) }); err != nil {
			fail(g.sarif, err)
		}
	}
	if g.jsonOut != "" {
		if err := writeFile(g.jsonOut, func(w io.Writer) error { return report.WriteJSON(w, rep) }); err != nil {
			fail(g.jsonOut, err)
		}
	}
	if os.Getenv("GITHUB_ACTIONS") == "true" {
		if err := cireport.WriteGitHubAnnotations(stdout, &ci, g.sourceRoot); err != nil {
			fail("stdout", err)
		}
	}
	return ok
}

func orStderr(p string) string {
	if p == "" {
		return "stderr"
	}
	return p
}

// footer says what was traced and why the run passes or fails. It follows
// the report and always goes to stderr too, where CI logs show it.
func (g *gate) footer(v *verdict, rs *runSummary, out outcome) string {
	var b strings.Builder
	line := func(format string, a ...any) {
		fmt.Fprintf(&b, "leakanalyze: "+format+"\n", a...)
	}
	traced := fmt.Sprintf("traced %s", plural(rs.Processes, "process", "processes"))
	if rs.UnreadableTraces > 0 {
		traced += fmt.Sprintf(" (%s could not be read)", plural(rs.UnreadableTraces, "trace", "traces"))
	}
	line("%s", traced)

	used, defaults := 0, 0
	if !g.noDefaultSupp {
		defaults = g.supp.Len() - g.userSupp.Len()
	}
	for _, u := range g.supp.Used() {
		if u.Sites > 0 {
			used++
		}
	}
	ignored := ""
	if n := g.supp.Ignored(); n > 0 {
		ignored = fmt.Sprintf("; %s for other errors ignored", plural(n, "entry", "entries"))
	}
	if v.suppressed.Sites > 0 {
		hint := ""
		if !g.showSupp && !g.verbose {
			hint = "; --show-suppressions lists them"
		}
		line("suppressed %s with %d of %s%s%s", v.suppressed, used, plural(g.supp.Len(), "suppression", "suppressions"), ignored, hint)
	} else {
		line("no leak suppressed (%s%s)", plural(g.supp.Len(), "suppression", "suppressions"), ignored)
	}
	if g.showSupp || g.verbose {
		g.listSuppressions(&b, defaults)
	}

	if g.base != nil {
		line("baseline %s: %s already known, not failing", g.baseline, v.known)
	}
	if g.writeBaseline != "" {
		// Counted as the baseline counts them: sites differing only in
		// line numbers or processes are one entry.
		keys := map[string]bool{}
		for i := range v.recorded {
			keys[baseline.Key(&v.recorded[i])] = true
		}
		line("wrote %s to %s", plural(len(keys), "leak site", "leak sites"), g.writeBaseline)
	}
	if v.unclassified.Sites > 0 {
		line("unfreed (not classified: the process was not scanned for reachability): %s, not failing the run; add unfreed to --fail-on to gate them", v.unclassified)
	}
	if out.status != 0 {
		line("%s", out)
	}
	kinds := strings.Join(g.failList, ",")
	switch {
	case len(g.failList) == 0:
		line("PASS: no leak kind fails the run (--fail-on none)")
	case v.fail.Sites > 0:
		line("FAIL: %s of kinds %s", v.fail, kinds)
	default:
		line("PASS: no leak of kinds %s", kinds)
	}
	return b.String()
}

// listSuppressions writes which suppressions matched, and which never did:
// those are dead weight, or a sign that a stack changed under them.
func (g *gate) listSuppressions(b *strings.Builder, defaults int) {
	all := g.supp.Used()
	var used, unused []suppress.Usage
	for _, u := range all {
		if u.Sites > 0 {
			used = append(used, u)
		}
	}
	sort.SliceStable(used, func(i, j int) bool { return used[i].Bytes > used[j].Bytes })
	if len(used) > 0 {
		fmt.Fprintf(b, "leakanalyze: suppressions used (sites, bytes, blocks, name, defined at):\n")
		for _, u := range used {
			fmt.Fprintf(b, "  %6d %12s %8s  %s  %s\n", u.Sites, report.Count(u.Bytes), report.Count(u.Blocks), u.Name, u.Source)
		}
	}
	unusedDefaults := 0
	for i, u := range all {
		if u.Sites > 0 {
			continue
		}
		if i < defaults && !g.verbose {
			unusedDefaults++
			continue
		}
		unused = append(unused, u)
	}
	if len(unused) > 0 || unusedDefaults > 0 {
		fmt.Fprintf(b, "leakanalyze: suppressions never matched:\n")
		for _, u := range unused {
			fmt.Fprintf(b, "  %s  %s\n", u.Name, u.Source)
		}
		if unusedDefaults > 0 {
			and := ""
			if len(unused) > 0 {
				and = "and "
			}
			fmt.Fprintf(b, "  %s%s (-v lists them)\n", and, plural(unusedDefaults, "built-in suppression", "built-in suppressions"))
		}
	}
}

func usages(s *suppress.Set) []suppressUsage {
	out := []suppressUsage{}
	for _, u := range s.Used() {
		if u.Sites > 0 {
			out = append(out, suppressUsage{Name: u.Name, Source: u.Source, Sites: u.Sites, Blocks: u.Blocks, Bytes: u.Bytes})
		}
	}
	return out
}

// writeFile creates name and writes it with fn, so that a partly written
// file is never left behind looking complete.
func writeFile(name string, fn func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return err
	}
	if err := fn(tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	// CreateTemp makes the file private; a report is as readable as any
	// file the user creates.
	os.Chmod(tmp.Name(), 0o644)
	if err := os.Rename(tmp.Name(), name); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

func appendFile(name, s string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// toolVersion is the module version leakanalyze was built at, for SARIF.
func toolVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// shellJoin quotes argv the way a shell would need it, for messages.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
