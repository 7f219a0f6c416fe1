// Command bench measures libleak against its peers on the allocation-heavy
// workload testprogs/alloc_bench.c: the run time and memory a traced run
// costs compared with a native one (libleak, heaptrack, LeakSanitizer,
// valgrind memcheck), the size of the traces, and how fast leakanalyze reads
// a large trace compared with heaptrack_print. `make bench` runs it after
// building the shim and the analyzer; go test never does, because timings
// mean nothing next to parallel test processes.
//
// The report is markdown on stdout (and in -out FILE); progress goes to
// stderr.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const lsanLib = "/usr/lib/x86_64-linux-gnu/liblsan.so.0"

// names accepted by -only, in report order.
var known = []string{"native", "libleak", "libleak-fp", "heaptrack", "lsan", "valgrind", "analyzer", "scan"}

type params struct {
	iterations   int // per overhead run, the same for every tool
	reps         int
	valgrindReps int // valgrind is ~50-80x slower, so it gets fewer runs rather than fewer iterations
	threads      []int
	warmupIters  int
	analyzeIters []int // a small and a large trace, to see whether analyzer memory grows
	analyzeReps  int
}

func defaultParams(quick bool, reps int) params {
	p := params{
		iterations:   2000000,
		reps:         7,
		valgrindReps: 3,
		threads:      []int{1, 2},
		warmupIters:  20000,
		analyzeIters: []int{2500000, 10000000}, // about 5.4 M and 21.4 M events
		analyzeReps:  5,
	}
	if quick {
		p.iterations = 200000
		p.reps = 2
		p.valgrindReps = 1
		p.warmupIters = 2000
		p.analyzeIters = []int{250000, 1000000}
		p.analyzeReps = 1
	}
	if reps > 0 {
		p.reps = reps
		p.valgrindReps = min(reps, p.valgrindReps)
		p.analyzeReps = min(reps, p.analyzeReps)
	}
	return p
}

type harness struct {
	root, work       string
	shim, analyzer   string
	bin, binFP       string
	runner           string
	p                params
	failed           bool
	missing          map[string]string // tool -> why it is skipped
	libleakUnwinders map[string]string // config name -> unwinder named in its trace header
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func main() {
	quick := flag.Bool("quick", false, "smoke test: fewer iterations and repetitions")
	only := flag.String("only", "", "comma-separated subset to run: "+strings.Join(known, ", "))
	out := flag.String("out", "", "also write the markdown report to `FILE`")
	reps := flag.Int("reps", 0, "repetitions per configuration (default 7, 2 with -quick; valgrind runs at most 3, the analyzers at most 5)")
	work := flag.String("work", "", "keep binaries and analyzer traces in `DIR` instead of a temporary directory")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: unexpected arguments:", flag.Args())
		os.Exit(2)
	}
	sel, err := parseOnly(*only, known)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	h, err := setup(*work, defaultParams(*quick, *reps))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	// Every exit below goes through os.Exit, which skips deferred calls.
	exit := func(code int) {
		if *work == "" {
			os.RemoveAll(h.work)
		}
		os.Exit(code)
	}
	started := time.Now()
	h.ensurePeers(sel)
	load0 := loadavg()

	var report strings.Builder
	var overhead map[string]map[int]*cell
	var analysis []analyzerRow
	overheadCfgs := h.configs(sel)
	if len(overheadCfgs) > 0 {
		overhead = h.runOverhead(overheadCfgs)
	}
	if sel["analyzer"] {
		analysis = h.runAnalyzer()
	}
	var scan scanRow
	if sel["scan"] {
		scan = h.runScan()
	}
	load1 := loadavg()

	report.WriteString(h.machine(load0, load1))
	if len(overheadCfgs) > 0 {
		report.WriteString(h.overheadReport(overheadCfgs, overhead))
	}
	if sel["analyzer"] {
		report.WriteString(h.analyzerReport(analysis))
	}
	if sel["scan"] {
		report.WriteString(h.scanReport(scan))
	}
	report.WriteString(h.targetsReport(overhead, analysis))

	fmt.Print(report.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			exit(1)
		}
	}
	logf("done in %s", time.Since(started).Round(time.Second))
	if h.failed {
		exit(1)
	}
	exit(0)
}

// findRoot walks up from the working directory to libleak's go.mod, so the
// harness works from any directory inside the tree.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module libleak") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the libleak repository (no go.mod with module libleak)")
		}
		dir = parent
	}
}

func setup(work string, p params) (_ *harness, err error) {
	root, err := findRoot()
	if err != nil {
		return nil, err
	}
	h := &harness{root: root, p: p, missing: map[string]string{}, libleakUnwinders: map[string]string{}}
	if work == "" {
		if h.work, err = os.MkdirTemp("", "libleak-bench-"); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				os.RemoveAll(h.work)
			}
		}()
	} else {
		if h.work, err = filepath.Abs(work); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(h.work, 0o755); err != nil {
			return nil, err
		}
	}
	// Measure a private copy of the build: a rebuild of build/ while the
	// benchmark runs would otherwise mix two shims in one table, or replace
	// the file under a process that is still mapping it.
	for _, f := range []struct {
		dst  *string
		name string
	}{{&h.shim, "libleak.so"}, {&h.analyzer, "leakanalyze"}} {
		src := filepath.Join(root, "build", f.name)
		*f.dst = filepath.Join(h.work, f.name)
		if err := copyFile(src, *f.dst); err != nil {
			return nil, fmt.Errorf("%v (run make first; make bench does)", err)
		}
	}
	if h.runner, err = buildRunner(h.work); err != nil {
		return nil, err
	}
	src := filepath.Join(root, "testprogs", "alloc_bench.c")
	h.bin = filepath.Join(h.work, "alloc_bench")
	h.binFP = filepath.Join(h.work, "alloc_bench_fp")
	builds := [][]string{
		{"gcc", "-O2", "-g", "-pthread", "-o", h.bin, src},
		// The fp unwinder needs frame pointers that -O2 omits.
		{"gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o", h.binFP, src},
	}
	for _, args := range builds {
		logf("%s", strings.Join(args, " "))
		if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	return h, nil
}

// ensurePeers installs missing peer tools with apt-get when that is
// possible, and otherwise records why their rows are skipped.
func (h *harness) ensurePeers(sel map[string]bool) {
	type peer struct {
		name, pkg string
		present   func() bool
		needed    bool
	}
	onPath := func(names ...string) func() bool {
		return func() bool {
			for _, n := range names {
				if _, err := exec.LookPath(n); err != nil {
					return false
				}
			}
			return true
		}
	}
	peers := []peer{
		{"heaptrack", "heaptrack", onPath("heaptrack", "heaptrack_print"), sel["heaptrack"] || sel["analyzer"]},
		{"valgrind", "valgrind", onPath("valgrind"), sel["valgrind"]},
		{"LeakSanitizer", "liblsan0", func() bool { _, err := os.Stat(lsanLib); return err == nil }, sel["lsan"]},
	}
	updated := false
	for _, pe := range peers {
		if !pe.needed || pe.present() {
			continue
		}
		canInstall := os.Geteuid() == 0
		if _, err := exec.LookPath("apt-get"); err != nil {
			canInstall = false
		}
		if canInstall {
			logf("%s not installed: apt-get install -y %s", pe.name, pe.pkg)
			err := aptInstall(pe.pkg)
			if err != nil && !updated {
				updated = true
				logf("apt-get update")
				if b, uerr := exec.Command("apt-get", "update", "-q").CombinedOutput(); uerr != nil {
					logf("apt-get update: %v\n%s", uerr, b)
				}
				err = aptInstall(pe.pkg)
			}
			if err != nil {
				logf("%v", err)
			}
		}
		if !pe.present() {
			h.missing[pe.name] = "skipped: " + pe.name + " not installed"
		}
	}
}

func aptInstall(pkg string) error {
	cmd := exec.Command("apt-get", "install", "-y", "-q", pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %v\n%s", pkg, err, lastLines(string(b), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func itoa(n int) string { return strconv.Itoa(n) }

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
		return err
	}
	// Keep the build time: the report names it.
	return os.Chtimes(dst, st.ModTime(), st.ModTime())
}
