package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"libleak/analyzer/report"
	"libleak/analyzer/suppress"
	"libleak/internal/testutil"
)

// The leaky programs. exit_paths is single-threaded and leaks 111, 222
// and 333 bytes from lines 37, 38 and 40 of make_leaks, so that no memory
// of glibc's threads ever joins its leaks in the totals the gate reports;
// fib_thread leaks 20 blocks of 8 KiB from scratch(), line 20, in a thread.
const (
	exitPathsStdout = "path=return leaked_blocks=3 leaked_bytes=666 expect=exit:0\n"
	exitPathsSites  = "3 leak sites (666 bytes in 3 blocks)"
	fibSteps        = "20"
	fibStdout       = "steps=20 fib=6765 allocs=20 frees=0 leaked_blocks=20 leaked_bytes=163840\n"
	// A leak's kind is unfreed until processes are scanned for
	// reachability at exit, and definite once they are: gating on all
	// three makes a test hold either way.
	gateKinds = "definite,possible,unfreed"
)

type runOut struct {
	code           int
	stdout, stderr string
}

// leakRun runs `leakanalyze run --lib SHIM ARGS...` in this process.
func leakRun(t *testing.T, args ...string) runOut {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(append([]string{"run", "--lib", testutil.Shim(t)}, args...), &out, &errb)
	return runOut{code, out.String(), errb.String()}
}

// runJSON is the JSON report of run, with its extra.run section decoded.
type runJSON struct {
	report.Report
	Extra struct {
		Run runSummary `json:"run"`
	} `json:"extra"`
}

func readJSON(t *testing.T, path string) *runJSON {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r runJSON
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &r
}

// ownLeaks returns the unsuppressed leaks the test program made itself:
// those whose innermost frame outside libc is in testprogs/src. Memory that
// ld.so or libleak allocate on the program's behalf (a thread's TLS, made
// when main calls pthread_create) is not the program's.
func ownLeaks(r *runJSON, src string) []report.Leak {
	var out []report.Leak
	for _, l := range r.Leaks {
		if l.Suppressed == "" && ownSite(l.Frames, src) {
			out = append(out, l)
		}
	}
	return out
}

func ownSite(frames []report.Frame, src string) bool {
	for _, f := range frames {
		if strings.HasPrefix(filepath.Base(f.Module), "libc.so") {
			continue
		}
		return strings.HasSuffix(f.File, "testprogs/"+src)
	}
	return false
}

func ownTotals(r *runJSON, src string) totals {
	var t totals
	for _, l := range ownLeaks(r, src) {
		t.add(&l)
	}
	return t
}

func hasScanned(r *runJSON) bool {
	for _, l := range r.Leaks {
		if l.Kind != report.KindUnfreed {
			return true
		}
	}
	return false
}

func wantLine(t *testing.T, what, text, line string) {
	t.Helper()
	if !strings.Contains("\n"+text, "\n"+line+"\n") {
		t.Errorf("%s lacks the line %q:\n%s", what, line, text)
	}
}

func TestRunCleanProgram(t *testing.T) {
	t.Parallel()
	prog := testutil.Program(t, "clean.c")
	dir := t.TempDir()
	j := filepath.Join(dir, "r.json")
	r := leakRun(t, "--json", j, "--", prog, "2")
	if r.code != exitOK {
		t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "allocs=") || !strings.HasSuffix(r.stdout, " leaked_blocks=0 leaked_bytes=0\n") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("the program's stdout is not passed through alone: %q", r.stdout)
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: traced 1 process")
	wantLine(t, "stderr", r.stderr, "leakanalyze: PASS: no leak of kinds definite,possible")
	rep := readJSON(t, j)
	if own := ownLeaks(rep, "clean.c"); len(own) != 0 {
		t.Errorf("clean.c's own code reported leaking: %+v", own)
	}
	if len(rep.Processes) != 1 || rep.Extra.Run.Processes != 1 || rep.Extra.Run.Traces != 1 {
		t.Errorf("processes %d, summary %+v", len(rep.Processes), rep.Extra.Run)
	}

	// What glibc and ld.so keep for themselves is covered by the built-in
	// suppressions, so even a gate on every kind passes.
	r = leakRun(t, "--fail-on", "all", "--", prog, "2")
	if r.code != exitOK {
		t.Errorf("--fail-on all: exit %d, want 0\n%s", r.code, r.stderr)
	}
}

func TestRunLeakyProgram(t *testing.T) {
	t.Parallel()
	prog := testutil.Program(t, "exit_paths.c")
	r := leakRun(t, "--fail-on", gateKinds, "--", prog, "return")
	if r.code != exitLeaks {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitLeaks, r.stderr)
	}
	if r.stdout != exitPathsStdout {
		t.Errorf("stdout %q, want the program's own %q", r.stdout, exitPathsStdout)
	}
	src := filepath.Join(testutil.Root(), "testprogs", "exit_paths.c")
	for _, line := range exitPathsLeakLines(t) {
		wantLine(t, "report", r.stderr, fmt.Sprintf("      make_leaks  %s:%d", src, line))
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: FAIL: "+exitPathsSites+" of kinds "+gateKinds)

	r = leakRun(t, "--fail-on", "all", "--error-exitcode", "3", "--", prog, "return")
	if r.code != 3 {
		t.Errorf("--error-exitcode 3: exit %d\n%s", r.code, r.stderr)
	}
	r = leakRun(t, "--fail-on", "none", "--", prog, "return")
	if r.code != exitOK {
		t.Errorf("--fail-on none: exit %d\n%s", r.code, r.stderr)
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: PASS: no leak kind fails the run (--fail-on none)")

	// A leak in a thread: all 20 blocks are found, whatever kinds they
	// are given.
	fib := testutil.Program(t, "fib_thread.c")
	j := filepath.Join(t.TempDir(), "fib.json")
	r = leakRun(t, "--fail-on", "all", "--json", j, "--", fib, fibSteps)
	if r.code != exitLeaks || r.stdout != fibStdout {
		t.Fatalf("fib_thread: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	wantLine(t, "report", r.stderr, "      scratch  "+filepath.Join(testutil.Root(), "testprogs", "fib_thread.c")+":20")
	if got := ownTotals(readJSON(t, j), "fib_thread.c"); got.Bytes != 163840 || got.Blocks != 20 {
		t.Errorf("fib_thread's leaks: %+v, want 163840 bytes in 20 blocks", got)
	}
}

// TestRunDefaultGate checks the default gate, definite and possible leaks,
// which needs processes classified by the exit-time reachability scan.
func TestRunDefaultGate(t *testing.T) {
	t.Parallel()
	prog := testutil.Program(t, "exit_paths.c")
	j := filepath.Join(t.TempDir(), "r.json")
	r := leakRun(t, "--json", j, "--", prog, "return")
	rep := readJSON(t, j)
	if !hasScanned(rep) {
		t.Skip("needs the exit-time reachability scan")
	}
	if r.code != exitLeaks {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitLeaks, r.stderr)
	}
	for _, l := range ownLeaks(rep, "exit_paths.c") {
		if l.Kind != report.KindDefinite {
			t.Errorf("exit_paths leak of %d bytes is %s, want definite", l.Bytes, l.Kind)
		}
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: FAIL: "+exitPathsSites+" of kinds definite,possible")
}

func TestRunSuppressions(t *testing.T) {
	t.Parallel()
	prog := testutil.Program(t, "exit_paths.c")
	dir := t.TempDir()
	files := map[string]string{
		"valgrind.supp": "# make_leaks is known to leak\n" +
			"{\n   make-leaks\n   Memcheck:Leak\n   match-leak-kinds: definite,possible,unfreed\n   ...\n   fun:make_leaks\n   fun:main\n}\n" +
			"{\n   never-used\n   Memcheck:Leak\n   fun:no_such_function_anywhere\n}\n",
		"lsan.supp":    "leak:^make_leaks$\nleak:no_such_function_anywhere\n",
		"libleak.supp": "suppress name=make-leaks-own fun=make_leaks file=exit_paths.c depth=1\nsuppress name=never-used fun=no_such_function_anywhere\n",
	}
	names := map[string][2]string{ // the name of the matching and of the unused suppression
		"valgrind.supp": {"make-leaks", "never-used"},
		"lsan.supp":     {"leak:^make_leaks$", "leak:no_such_function_anywhere"},
		"libleak.supp":  {"make-leaks-own", "never-used"},
	}
	where := map[string][2]int{"valgrind.supp": {2, 10}, "lsan.supp": {1, 2}, "libleak.supp": {1, 2}}
	for file, content := range files {
		t.Run(file, func(t *testing.T) {
			p := filepath.Join(dir, file)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			j := filepath.Join(dir, file+".json")
			r := leakRun(t, "--fail-on", gateKinds, "--suppressions", p, "--show-suppressions", "--json", j, "--", prog, "return")
			if r.code != exitOK {
				t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
			}
			rep := readJSON(t, j)
			n := 0
			for _, l := range rep.Leaks {
				if l.Frames[0].Function == "make_leaks" {
					n++
					if l.Suppressed != names[file][0] {
						t.Errorf("the leak of %d bytes is suppressed by %q, want %q", l.Bytes, l.Suppressed, names[file][0])
					}
				}
			}
			if n != 3 || rep.Extra.Run.Failing.Sites != 0 {
				t.Errorf("%d leaks of make_leaks, summary %+v", n, rep.Extra.Run)
			}
			wantLine(t, "stderr", r.stderr, fmt.Sprintf("  %6d %12s %8s  %s  %s:%d", 3, "666", "3", names[file][0], p, where[file][0]))
			wantLine(t, "stderr", r.stderr, "leakanalyze: suppressions never matched:")
			wantLine(t, "stderr", r.stderr, fmt.Sprintf("  %s  %s:%d", names[file][1], p, where[file][1]))
			defaultsUsed := 0
			for _, u := range rep.Extra.Run.Suppressions {
				if strings.HasPrefix(u.Source, "<default>") {
					defaultsUsed++
				}
			}
			wantLine(t, "stderr", r.stderr, fmt.Sprintf("  and %d built-in suppressions (-v lists them)", suppress.Defaults().Len()-defaultsUsed))
			wantLine(t, "stderr", r.stderr, "leakanalyze: PASS: no leak of kinds "+gateKinds)
		})
	}

	// Without --show-suppressions, one line counts them.
	p := filepath.Join(dir, "lsan.supp")
	r := leakRun(t, "--no-default-suppressions", "--suppressions", p, "--", prog, "return")
	wantLine(t, "stderr", r.stderr, "leakanalyze: suppressed "+exitPathsSites+" with 1 of 2 suppressions; --show-suppressions lists them")
	if strings.Contains(r.stderr, "never matched") {
		t.Errorf("suppressions listed without --show-suppressions:\n%s", r.stderr)
	}
}

func TestRunBaseline(t *testing.T) {
	t.Parallel()
	exitPaths := testutil.Program(t, "exit_paths.c")
	mmapLeak := testutil.Program(t, "mmap_leak.c")
	dir := t.TempDir()
	base := filepath.Join(dir, "leaks.baseline.json")

	// Recording a baseline does not change the verdict. The three leaks
	// differ only in their lines: one site to the baseline.
	r := leakRun(t, "--fail-on", gateKinds, "--write-baseline", base, "--", exitPaths, "return")
	if r.code != exitLeaks {
		t.Fatalf("--write-baseline: exit %d, want %d\n%s", r.code, exitLeaks, r.stderr)
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: wrote 1 leak site to "+base)
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	var bf struct {
		Sites []struct {
			Stack  []string `json:"stack"`
			Bytes  uint64   `json:"bytes"`
			Blocks uint64   `json:"blocks"`
		} `json:"sites"`
	}
	if err := json.Unmarshal(data, &bf); err != nil {
		t.Fatal(err)
	}
	if len(bf.Sites) != 1 || len(bf.Sites[0].Stack) < 2 || bf.Sites[0].Stack[0] != "exit_paths!make_leaks" || bf.Sites[0].Stack[1] != "exit_paths!main" || bf.Sites[0].Bytes != 666 || bf.Sites[0].Blocks != 3 {
		t.Fatalf("baseline:\n%s", data)
	}

	// The known leaks pass.
	r = leakRun(t, "--fail-on", gateKinds, "--baseline", base, "--", exitPaths, "return")
	if r.code != exitOK {
		t.Fatalf("--baseline, known leak: exit %d, want 0\n%s", r.code, r.stderr)
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: baseline "+base+": "+exitPathsSites+" already known, not failing")

	// A new one fails: mmap_leak leaves 12 regions of 40 KiB mapped.
	j := filepath.Join(dir, "new.json")
	r = leakRun(t, "--fail-on", gateKinds, "--baseline", base, "--json", j, "--", mmapLeak)
	if r.code != exitLeaks {
		t.Fatalf("--baseline, new leak: exit %d, want %d\n%s", r.code, exitLeaks, r.stderr)
	}
	rep := readJSON(t, j)
	rs := rep.Extra.Run
	if rs.Failing != ownTotals(rep, "mmap_leak.c") || rs.Failing.Bytes != 12*40960 || rs.Failing.Blocks != 12 || rs.Baselined != (totals{}) {
		t.Errorf("failing %+v, baselined %+v", rs.Failing, rs.Baselined)
	}
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	exitPaths := testutil.Program(t, "exit_paths.c")
	for _, c := range []struct {
		name   string
		argv   []string
		status int
		line   string
	}{
		{"exit", []string{"sh", "-c", "exit 7"}, 7, "leakanalyze: the command exited with status 7"},
		{"signal", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, "leakanalyze: the command was killed by signal 15 (terminated): status 143"},
		// The command's failure wins over the leak gate's.
		{"leaks", []string{"sh", "-c", exitPaths + " return; exit 5"}, 5, "leakanalyze: the command exited with status 5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := leakRun(t, append([]string{"--fail-on", "all", "--"}, c.argv...)...)
			if r.code != c.status {
				t.Errorf("exit %d, want %d\n%s", r.code, c.status, r.stderr)
			}
			wantLine(t, "stderr", r.stderr, c.line)
		})
	}
	// A process killed by a signal is not scanned: its leaks are unfreed,
	// which the default gate reports without failing on.
	r := leakRun(t, "--", exitPaths, "abort")
	if r.code != 128+6 {
		t.Errorf("abort: exit %d, want 134\n%s", r.code, r.stderr)
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: unfreed (not classified: the process was not scanned for reachability): "+exitPathsSites+", not failing the run; add unfreed to --fail-on to gate them")
	wantLine(t, "stderr", r.stderr, "leakanalyze: the command was killed by signal 6 (aborted): status 134")
	wantLine(t, "stderr", r.stderr, "leakanalyze: PASS: no leak of kinds definite,possible")

	r = leakRun(t, "--", "/nonexistent/prog")
	if r.code != exitNotFound || r.stderr != "leakanalyze: /nonexistent/prog: command not found\n" {
		t.Errorf("missing command: exit %d, stderr %q", r.code, r.stderr)
	}
	notExec := filepath.Join(t.TempDir(), "data.txt")
	os.WriteFile(notExec, []byte("not a program\n"), 0o644)
	r = leakRun(t, "--", notExec)
	if r.code != exitCannotRun || r.stderr != "leakanalyze: "+notExec+": permission denied\n" {
		t.Errorf("command not executable: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestRunForkExec checks that every process a command starts is traced:
// a shell running two programs, and a program that forks.
func TestRunForkExec(t *testing.T) {
	t.Parallel()
	fib := testutil.Program(t, "fib_thread.c")
	clean := testutil.Program(t, "clean.c")
	stress := testutil.Program(t, "stress.c")

	t.Run("shell", func(t *testing.T) {
		dir := t.TempDir()
		keep, j := filepath.Join(dir, "traces"), filepath.Join(dir, "r.json")
		r := leakRun(t, "--fail-on", "none", "--keep-traces", keep, "--json", j, "--", "sh", "-c", fib+" 3; "+clean+" 1")
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		rep := readJSON(t, j)
		files, _ := filepath.Glob(filepath.Join(keep, "*"))
		if len(rep.Processes) != len(files) || rep.Extra.Run.Traces != len(files) || rep.Extra.Run.UnreadableTraces != 0 {
			t.Errorf("%d processes in the report, %d traces kept, summary %+v", len(rep.Processes), len(files), rep.Extra.Run)
		}
		byExe := map[string][]report.Process{}
		for _, p := range rep.Processes {
			byExe[filepath.Base(p.Exe)] = append(byExe[filepath.Base(p.Exe)], p)
		}
		shells := append(byExe["dash"], byExe["bash"]...)
		if len(shells) == 0 || len(byExe["fib_thread"]) != 1 || len(byExe["clean"]) != 1 {
			t.Fatalf("processes by executable: %v", byExe)
		}
		if pp := byExe["fib_thread"][0].Ppid; pp != shells[0].Pid && byExe["fib_thread"][0].Pid != shells[0].Pid {
			t.Errorf("fib_thread's parent %d is not the shell %d", pp, shells[0].Pid)
		}
		for _, l := range ownLeaks(rep, "fib_thread.c") {
			if l.Pid != byExe["fib_thread"][0].Pid {
				t.Errorf("fib_thread's leak in pid %d, want %d", l.Pid, byExe["fib_thread"][0].Pid)
			}
		}
		if got := ownTotals(rep, "fib_thread.c"); got.Bytes != 3*8192 || got.Blocks != 3 {
			t.Errorf("fib_thread's leaks: %+v", got)
		}
		wantLine(t, "stderr", r.stderr, fmt.Sprintf("leakanalyze: traced %d processes", len(files)))
	})

	t.Run("fork", func(t *testing.T) {
		j := filepath.Join(t.TempDir(), "r.json")
		r := leakRun(t, "--fail-on", "none", "--json", j, "--", stress, "2", "20000")
		if r.code != exitOK {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		rep := readJSON(t, j)
		if len(rep.Processes) != 2 || rep.Processes[1].Ppid != rep.Processes[0].Pid {
			t.Fatalf("processes %+v, want stress and its forked child", rep.Processes)
		}
		parent, child := rep.Processes[0].Pid, rep.Processes[1].Pid
		live := map[int]totals{}
		for _, l := range ownLeaks(rep, "stress.c") {
			tt := live[l.Pid]
			tt.add(&l)
			live[l.Pid] = tt
		}
		// Each of the 2 workers keeps 1000+16*id+k bytes, k = 0..3; the
		// child keeps 3000..3003 bytes.
		if live[parent].Bytes != 8076 || live[parent].Blocks != 8 || live[child].Bytes != 12006 || live[child].Blocks != 4 {
			t.Errorf("left allocated: parent %+v, child %+v", live[parent], live[child])
		}
	})
}

func TestRunCIOutputs(t *testing.T) {
	prog := testutil.Program(t, "exit_paths.c")
	root := testutil.Root()
	t.Setenv("GITHUB_ACTIONS", "true")
	t.Setenv("GITHUB_WORKSPACE", root)
	dir := t.TempDir()
	ju, sa, j := filepath.Join(dir, "leaks.xml"), filepath.Join(dir, "leaks.sarif"), filepath.Join(dir, "r.json")
	r := leakRun(t, "--fail-on", gateKinds, "--junit", ju, "--sarif", sa, "--json", j, "--", prog, "return")
	if r.code != exitLeaks {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	kind := ownLeaks(readJSON(t, j), "exit_paths.c")[0].Kind
	level := map[string]string{report.KindDefinite: "error", report.KindUnfreed: "warning"}[kind]

	// The report sorts sites by size: 333, 222 and 111 bytes.
	ll := exitPathsLeakLines(t)
	sites := []struct {
		line  int
		bytes int
	}{{ll[2], 333}, {ll[1], 222}, {ll[0], 111}}

	// One annotation per site, after the program's own output.
	lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(r.stdout, exitPathsStdout), "\n"), "\n")
	if !strings.HasPrefix(r.stdout, exitPathsStdout) || len(lines) != 3 {
		t.Fatalf("stdout %q", r.stdout)
	}
	for i, s := range sites {
		want := fmt.Sprintf("::%s file=testprogs/exit_paths.c,line=%d,title=%s leak%%3A %d bytes in 1 block::", level, s.line, kind, s.bytes)
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("annotation %q, want it to start with %q", lines[i], want)
		}
	}

	data, err := os.ReadFile(ju)
	if err != nil {
		t.Fatal(err)
	}
	var junit struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Suites   []struct {
			Cases []struct {
				Class   string `xml:"classname,attr"`
				Name    string `xml:"name,attr"`
				Failure *struct {
					Type string `xml:"type,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &junit); err != nil {
		t.Fatalf("JUnit: %v\n%s", err, data)
	}
	if junit.Tests != 4 || junit.Failures != 3 || len(junit.Suites) != 1 || len(junit.Suites[0].Cases) != 4 {
		t.Fatalf("JUnit:\n%s", data)
	}
	for i, s := range sites {
		c := junit.Suites[0].Cases[i+1]
		if c.Class != "exit_paths" || c.Name != fmt.Sprintf("leak in make_leaks (exit_paths.c:%d)", s.line) || c.Failure == nil || c.Failure.Type != kind {
			t.Errorf("JUnit failing case %+v", c)
		}
	}

	data, err = os.ReadFile(sa)
	if err != nil {
		t.Fatal(err)
	}
	var sarif struct {
		Version string `json:"version"`
		Runs    []struct {
			Results []struct {
				RuleID    string `json:"ruleId"`
				Locations []struct {
					Physical struct {
						Artifact struct {
							URI string `json:"uri"`
						} `json:"artifactLocation"`
						Region struct {
							StartLine int `json:"startLine"`
						} `json:"region"`
					} `json:"physicalLocation"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(data, &sarif); err != nil {
		t.Fatalf("SARIF: %v", err)
	}
	if sarif.Version != "2.1.0" || len(sarif.Runs) != 1 || len(sarif.Runs[0].Results) != 3 {
		t.Fatalf("SARIF:\n%s", data)
	}
	for i, s := range sites {
		res := sarif.Runs[0].Results[i]
		if res.RuleID != "leak/"+kind || len(res.Locations) != 1 || res.Locations[0].Physical.Artifact.URI != "testprogs/exit_paths.c" || res.Locations[0].Physical.Region.StartLine != s.line {
			t.Errorf("SARIF result %+v", res)
		}
	}

	// A passing run writes the files with no failures.
	supp := filepath.Join(dir, "known.supp")
	os.WriteFile(supp, []byte("leak:^make_leaks$\n"), 0o644)
	r = leakRun(t, "--fail-on", gateKinds, "--suppressions", supp, "--junit", ju, "--sarif", sa, "--", prog, "return")
	if r.code != exitOK || r.stdout != exitPathsStdout {
		t.Fatalf("suppressed: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	data, _ = os.ReadFile(ju)
	junit.Suites = nil
	if err := xml.Unmarshal(data, &junit); err != nil || junit.Failures != 0 || junit.Tests != 1 {
		t.Errorf("passing JUnit (%v):\n%s", err, data)
	}
	data, _ = os.ReadFile(sa)
	sarif.Runs = nil
	if err := json.Unmarshal(data, &sarif); err != nil || len(sarif.Runs) != 1 || len(sarif.Runs[0].Results) != 0 {
		t.Errorf("passing SARIF (%v):\n%s", err, data)
	}
}

// TestRunReportOutput checks where the report goes and its formats.
func TestRunReportOutput(t *testing.T) {
	t.Parallel()
	prog := testutil.Program(t, "exit_paths.c")
	dir := t.TempDir()

	txt := filepath.Join(dir, "report.txt")
	r := leakRun(t, "--fail-on", gateKinds, "-o", txt, "--", prog, "return")
	if r.code != exitLeaks || r.stdout != exitPathsStdout {
		t.Fatalf("exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(txt)
	if err != nil {
		t.Fatal(err)
	}
	verdict := "leakanalyze: FAIL: " + exitPathsSites + " of kinds " + gateKinds
	wantLine(t, "report file", string(data), "leakanalyze: traced 1 process")
	wantLine(t, "report file", string(data), verdict)
	if !strings.Contains(string(data), "      make_leaks  ") || strings.Contains(r.stderr, "      make_leaks  ") {
		t.Errorf("the report is not in the file alone:\nfile:\n%s\nstderr:\n%s", data, r.stderr)
	}
	wantLine(t, "stderr", r.stderr, verdict)

	js := filepath.Join(dir, "report.json")
	r = leakRun(t, "--fail-on", gateKinds, "--format", "json", "-o", js, "--", prog, "return")
	if r.code != exitLeaks {
		t.Fatalf("json: exit %d\n%s", r.code, r.stderr)
	}
	rep := readJSON(t, js)
	if rs := rep.Extra.Run; rs.Processes != 1 || rs.Failing != (totals{Sites: 3, Bytes: 666, Blocks: 3}) || rs.Command[0] != prog || rs.ExitStatus != exitLeaks || rs.FailOn[2] != "unfreed" {
		t.Errorf("json summary %+v", rs)
	}

	pb := filepath.Join(dir, "leaks.pb.gz")
	r = leakRun(t, "--fail-on", gateKinds, "--format", "pprof", "-o", pb, "--", prog, "return")
	if r.code != exitLeaks {
		t.Fatalf("pprof: exit %d\n%s", r.code, r.stderr)
	}
	f, err := os.Open(pb)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Sample {
		if len(s.Location) > 0 && len(s.Location[0].Line) > 0 && s.Location[0].Line[0].Function.Name == "make_leaks" {
			got = append(got, fmt.Sprintf("%d:%v", s.Location[0].Line[0].Line, s.Value))
		}
	}
	sort.Strings(got)
	ll := exitPathsLeakLines(t)
	if want := []string{fmt.Sprintf("%d:[1 111]", ll[0]), fmt.Sprintf("%d:[1 222]", ll[1]), fmt.Sprintf("%d:[1 333]", ll[2])}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("make_leaks samples %v, want %v", got, want)
	}
}

func TestRunBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	bad := filepath.Join(dir, "bad.supp")
	os.WriteFile(bad, []byte("this is not a suppression\n"), 0o644)
	badBase := filepath.Join(dir, "bad.json")
	os.WriteFile(badBase, []byte(`{"format": "something-else"}`), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "leakanalyze: run: no command given (usage: leakanalyze run [flags] -- CMD [ARGS...])"},
		{[]string{"--fail-on", "definite,bogus"}, `leakanalyze: --fail-on definite,bogus: unknown leak kind "bogus" (want definite, indirect, possible, reachable, unfreed, all or none)`},
		{[]string{"--error-exitcode", "300"}, "leakanalyze: --error-exitcode 300: want a status from 0 to 255"},
		{[]string{"--suppressions", "/nonexistent/x.supp"}, "leakanalyze: /nonexistent/x.supp: no such file or directory"},
		{[]string{"--suppressions", bad}, "leakanalyze: " + bad + `:1: not a suppression file: expected "{" (valgrind), TYPE:TEMPLATE (LSan) or "suppress" (libleak), found "this is not a suppression"`},
		{[]string{"--baseline", badBase}, "leakanalyze: " + badBase + `: not a libleak baseline (format "something-else", want "libleak-baseline")`},
		{[]string{"--lib", "/nonexistent/libleak.so"}, "leakanalyze: /nonexistent/libleak.so: no such file or directory"},
		{[]string{"--junit", "/nonexistent/dir/leaks.xml"}, "leakanalyze: /nonexistent/dir/leaks.xml: directory /nonexistent/dir: no such file or directory"},
		{[]string{"--format", "pprof"}, "leakanalyze: --format pprof: needs -o FILE"},
		{[]string{"--format", "yaml"}, "leakanalyze: --format yaml: want text, json or pprof"},
		{[]string{"--group", "bogus"}, "leakanalyze: --group bogus: want stack, top:N or function"},
		{[]string{"--error-exitcode", "x"}, `leakanalyze: run: invalid argument "x" for "--error-exitcode" flag: strconv.ParseInt: parsing "x": invalid syntax`},
		{[]string{"--no-such-flag"}, "leakanalyze: run: unknown flag: --no-such-flag"},
	} {
		args := c.args
		if args != nil {
			args = append(args, "--", "sh", "-c", "touch "+marker)
		}
		r := leakRun(t, args...)
		if r.code != exitBadInput || r.stderr != c.want+"\n" {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%v: the command ran despite bad input", c.args)
		}
	}
}

// TestRunUntraced checks the one line said when no trace was made: a
// statically linked program does not load libleak.so.
func TestRunUntraced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "static.c"), filepath.Join(dir, "static_prog")
	os.WriteFile(src, []byte("#include <stdlib.h>\nint main(void) { return malloc(10) == 0; }\n"), 0o644)
	if out, err := exec.Command("gcc", "-static", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	r := leakRun(t, "--fail-on", "all", "--", bin)
	if r.code != exitOK {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
	wantLine(t, "stderr", r.stderr, "leakanalyze: no process was traced: "+bin+" is statically linked, and libleak.so is loaded only into dynamically linked programs")
	wantLine(t, "stderr", r.stderr, "leakanalyze: traced 0 processes")
}

// TestRunBinary runs the built command as users do: it finds libleak.so
// next to itself or in ../lib, passes its standard streams through and
// forwards SIGTERM and SIGINT to the command.
func TestRunBinary(t *testing.T) {
	t.Parallel()
	shim := testutil.Shim(t)
	fib := testutil.Program(t, "fib_thread.c")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "leakanalyze")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(env []string, args ...string) (int, string, string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.Run()
		return cmd.ProcessState.ExitCode(), out.String(), errb.String()
	}

	code, _, stderr := run([]string{"LEAK_LIB="}, "run", "--", fib, "1")
	if code != exitBadInput || !strings.HasPrefix(stderr, "leakanalyze: libleak.so: not found in "+filepath.Dir(bin)+" or "+filepath.Join(dir, "lib")+"; ") {
		t.Errorf("no library: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := run([]string{"LEAK_LIB=" + shim}, "run", "--fail-on", gateKinds, "--", fib, fibSteps)
	if code != exitLeaks || stdout != fibStdout {
		t.Errorf("LEAK_LIB: exit %d, stdout %q\n%s", code, stdout, stderr)
	}
	if err := os.Mkdir(filepath.Join(dir, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shim, filepath.Join(dir, "lib", "libleak.so")); err != nil {
		t.Fatal(err)
	}
	// An LD_PRELOAD of the caller's stays, after the library.
	preloaded := func(where, lib string) {
		t.Helper()
		code, stdout, stderr := run([]string{"LEAK_LIB=", "LD_PRELOAD=libpthread.so.0"}, "run", "--fail-on", gateKinds, "--", "sh", "-c", `echo "$LD_PRELOAD"; exec "$0" "$1"`, fib, fibSteps)
		if want := lib + ":libpthread.so.0\n" + fibStdout; code != exitLeaks || stdout != want {
			t.Errorf("%s: exit %d, stdout %q, want %q\n%s", where, code, stdout, want, stderr)
		}
	}
	preloaded("../lib", filepath.Join(dir, "lib", "libleak.so"))
	if err := os.Symlink(shim, filepath.Join(dir, "bin", "libleak.so")); err != nil {
		t.Fatal(err)
	}
	preloaded("next to leakanalyze", filepath.Join(dir, "bin", "libleak.so"))

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		if signal.Ignored(sig) {
			// Inherited as ignored (a background job of a shell): the
			// command's shell could not trap it either.
			t.Logf("%v is ignored in this test's environment: not checking its forwarding", sig)
			continue
		}
		// The shell loops until the signal's trap ends it. (Not waiting
		// in its read builtin: a signal that comes after the shell last
		// looked for pending traps and before it blocks in read(2) leaves
		// it blocked, a race of the shell's own that the tracer's slower
		// allocations widen. testprogs/sigwait.c checks that a signal
		// never goes to a thread of the tracer's.)
		cmd := exec.Command(bin, "run", "--", "sh", "-c", "trap 'exit 9' TERM INT; echo ready; while :; do :; done")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "ready\n" {
			cmd.Process.Kill()
			t.Fatalf("%v: first line %q", sig, line)
		}
		cmd.Process.Signal(sig)
		done := make(chan struct{})
		go func() {
			cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: the command did not end", sig)
		}
		if code := cmd.ProcessState.ExitCode(); code != 9 {
			t.Errorf("%v: exit %d, want the command's 9\n%s", sig, code, errb.String())
		}
	}
}

// TestRunMakeProject gates `make check` of a small C project: compiling it,
// linking 25 test programs and running them makes over 100 processes, all
// of which must be traced and analyzed. The toolchain's own memory is
// suppressed as a project would suppress it; what remains is the project's
// one leak.
func TestRunMakeProject(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make: %v", err)
	}
	dir := t.TempDir()
	proj := filepath.Join(dir, "project")
	copyTree(t, filepath.Join(testutil.Root(), "testprogs", "gate_project"), proj)
	supp := filepath.Join(dir, "toolchain.supp")
	os.WriteFile(supp, []byte("# the compiler, binutils, make and the shell\nleak:/usr/bin/\nleak:/usr/lib/gcc/\n"), 0o644)
	keep, j := filepath.Join(dir, "traces"), filepath.Join(dir, "r.json")

	start := time.Now()
	r := leakRun(t, "--fail-on", "all", "--suppressions", supp, "--keep-traces", keep, "--json", j, "--", "make", "-C", proj, "check")
	t.Logf("make check under leakanalyze run: %v", time.Since(start))
	if r.code != exitLeaks {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitLeaks, r.stdout, r.stderr)
	}
	wantLine(t, "make's output", r.stdout, "25 tests passed")
	rep := readJSON(t, j)
	files, _ := filepath.Glob(filepath.Join(keep, "*"))
	rs := rep.Extra.Run
	if len(files) < 50 || len(rep.Processes) != len(files) || rs.Traces != len(files) || rs.Processes != len(files) || rs.UnreadableTraces != 0 {
		t.Fatalf("%d traces, %d processes in the report, summary %+v", len(files), len(rep.Processes), rs)
	}
	count := map[string]int{}
	for _, p := range rep.Processes {
		count[filepath.Base(p.Exe)]++
		if p.ExitStatus != 0 || p.Truncated {
			t.Errorf("process %d %s: exit %d, truncated %v", p.Pid, p.Exe, p.ExitStatus, p.Truncated)
		}
	}
	for i := 1; i <= 25; i++ {
		if n := count[fmt.Sprintf("case_%d", i)]; n != 1 {
			t.Errorf("case_%d ran %d times in the report", i, n)
		}
	}
	// Three sources compiled; 25 programs linked.
	if count["make"] != 1 || count["cc1"] != 3 || count["collect2"] != 25 {
		t.Errorf("processes by executable: %v", count)
	}
	wantLine(t, "stderr", r.stderr, fmt.Sprintf("leakanalyze: traced %d processes", len(files)))

	var failing []report.Leak
	for _, l := range rep.Leaks {
		if l.Suppressed == "" {
			failing = append(failing, l)
		}
	}
	if len(failing) != 1 || rs.Failing != (totals{Sites: 1, Bytes: 64, Blocks: 1}) {
		t.Fatalf("failing leaks %+v, summary %+v", failing, rs.Failing)
	}
	l := failing[0]
	exe := ""
	for _, p := range rep.Processes {
		if p.Pid == l.Pid {
			exe = filepath.Base(p.Exe)
		}
	}
	if exe != "case_13" || len(l.Frames) < 2 || l.Frames[0].Function != "calc_tokenize" || l.Frames[1].Function != "calc_eval" {
		t.Errorf("the leak is not case 13's calc_tokenize: %s %+v", exe, l)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestChildEnv checks the preload list handed to the command.
func TestChildEnv(t *testing.T) {
	for _, c := range []struct{ preload, want string }{
		{"", "/x/libleak.so"},
		{"libjemalloc.so.2", "/x/libleak.so:libjemalloc.so.2"},
		{"/x/libleak.so libfoo.so", "/x/libleak.so libfoo.so"},
	} {
		t.Setenv("LD_PRELOAD", c.preload)
		t.Setenv("LEAK_OUT", "/elsewhere")
		var got []string
		for _, kv := range childEnv("/x/libleak.so", "/tmp/d") {
			if strings.HasPrefix(kv, "LD_PRELOAD=") || strings.HasPrefix(kv, "LEAK_OUT=") {
				got = append(got, kv)
			}
		}
		sort.Strings(got)
		if want := []string{"LD_PRELOAD=" + c.want, "LEAK_OUT=/tmp/d"}; strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("LD_PRELOAD=%q: %v, want %v", c.preload, got, want)
		}
	}
}

// exitPathsLeakLines finds the lines of exit_paths.c's three leaks, of
// 111, 222 and 333 bytes, in its source.
func exitPathsLeakLines(t *testing.T) [3]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Root(), "testprogs", "exit_paths.c"))
	if err != nil {
		t.Fatal(err)
	}
	var lines [3]int
	for i, l := range strings.Split(string(b), "\n") {
		for j, call := range []string{"use(malloc(111));", "use(calloc(1, 222));", "use(realloc(p, 333));"} {
			if strings.TrimSpace(l) == call {
				lines[j] = i + 1
			}
		}
	}
	if lines[0] == 0 || lines[1] == 0 || lines[2] == 0 {
		t.Fatalf("exit_paths.c: leak lines not found: %v", lines)
	}
	return lines
}
