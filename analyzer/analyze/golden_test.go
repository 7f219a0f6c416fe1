package analyze_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/report"
	"libleak/analyzer/symbolize"
	"libleak/internal/testutil"
)

// trace runs a test program under libleak and returns its trace.
func trace(t *testing.T, src string, args ...string) string {
	t.Helper()
	bin := testutil.Program(t, src)
	dir := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+testutil.Shim(t), "LEAK_OUT="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", src, err, out)
	}
	traces, _ := filepath.Glob(filepath.Join(dir, "leak.*"))
	if len(traces) != 1 {
		t.Fatalf("%s: traces %v", src, traces)
	}
	return traces[0]
}

// stable keeps what does not change between runs and machines: the sites
// in the test programs' own code, with their frames there. Addresses,
// pids, times and the C library's frames (which depend on its version and
// debug files) go.
func stable(rep *report.Report) *report.Report {
	out := &report.Report{Summary: map[string]report.Totals{}}
	for _, p := range rep.Processes {
		out.Processes = append(out.Processes, report.Process{Exe: filepath.Base(p.Exe), ExitStatus: p.ExitStatus, Trace: "TRACE"})
	}
	own := func(fr []report.Frame) []report.Frame {
		var k []report.Frame
		for _, f := range fr {
			if strings.Contains(f.File, "testprogs/") {
				f.File = "testprogs/" + filepath.Base(f.File)
				f.Module = filepath.Base(f.Module)
				f.Address = 0
				k = append(k, f)
			}
		}
		return k
	}
	for _, l := range rep.Leaks {
		l.Frames = own(l.Frames)
		// Still-reachable memory depends on the C library (what its
		// freeres releases, when a joined thread's stack is recycled).
		if len(l.Frames) == 0 || l.Kind == report.KindReachable {
			continue
		}
		l.Pid, l.Pattern = 0, ""
		out.Leaks = append(out.Leaks, l)
	}
	for _, a := range rep.Anomalies {
		a.Frames = own(a.Frames)
		if len(a.Frames) > 0 {
			a.Pid, a.Address = 0, 0
			out.Anomalies = append(out.Anomalies, a)
		}
	}
	return out
}

func TestGoldenReports(t *testing.T) {
	sym := symbolize.New(symbolize.Options{Demangle: true})
	for _, c := range []struct {
		src  string
		args []string
	}{
		{"fib_thread.c", []string{"20"}},
		{"mmap_leak.c", nil},
		{"cxx_new.cc", nil},
		{"cxx_owner.cc", nil},
		{"reach.c", nil},
	} {
		t.Run(c.src, func(t *testing.T) {
			rep, err := analyze.Run([]string{trace(t, c.src, c.args...)}, analyze.Options{
				Symbolizer: func(m []event.Module) analyze.FrameSource { return sym.Process(m) },
			})
			if err != nil {
				t.Fatal(err)
			}
			s := stable(rep)
			analyze.Finish(s, analyze.Options{})
			var text, js bytes.Buffer
			if err := report.WriteText(&text, s, report.TextOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := report.WriteJSON(&js, s); err != nil {
				t.Fatal(err)
			}
			base := strings.TrimSuffix(strings.TrimSuffix(c.src, ".cc"), ".c")
			testutil.Golden(t, base+".txt", text.Bytes())
			testutil.Golden(t, base+".json", js.Bytes())
		})
	}
}
