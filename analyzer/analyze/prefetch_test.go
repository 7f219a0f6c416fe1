package analyze

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"libleak/analyzer/event"
	"libleak/analyzer/report"
	"libleak/analyzer/symbolize"
	"libleak/internal/testutil"
)

// TestPrefetchReadsTheStacksModules traces fib_thread (a worker thread's
// leaks: stacks through the executable and libc's thread start) and loads
// it with every trace counting as long: the prefetch is asked for the
// executable and libc, never for the tracer, and the report is the one
// Load and Add give without it.
func TestPrefetchReadsTheStacksModules(t *testing.T) {
	bin := testutil.Program(t, "fib_thread.c")
	dir := t.TempDir()
	cmd := exec.Command(bin, "20")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+testutil.Shim(t), "LEAK_OUT="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fib_thread: %v\n%s", err, out)
	}
	traces, _ := filepath.Glob(filepath.Join(dir, "leak.*"))
	if len(traces) != 1 {
		t.Fatalf("traces %v", traces)
	}

	defer func(n int64) { prefetchMinSize = n }(prefetchMinSize)
	prefetchMinSize = 0
	sym := symbolize.New(symbolize.Options{Demangle: true})
	var asked []string
	o := Options{
		Symbolizer: func(m []event.Module) FrameSource { return sym.Process(m) },
		Prefetch: func(m event.Module) {
			asked = append(asked, filepath.Base(m.Path))
			sym.Prefetch(m)
		},
	}
	in, err := LoadFor(traces[0], o)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(asked)
	var exe, libc bool
	for i, m := range asked {
		switch {
		case m == filepath.Base(bin):
			exe = true
		case m == "libc.so.6":
			libc = true
		case m == filepath.Base(in.Replay.Hdr.Tracer):
			t.Errorf("prefetch asked for the tracer, %s", m)
		}
		if i > 0 && asked[i-1] == m {
			t.Errorf("prefetch asked twice for %s", m)
		}
	}
	if !exe || !libc {
		t.Errorf("prefetch asked for %v; want %s and libc.so.6 among them", asked, filepath.Base(bin))
	}
	got := &report.Report{Summary: map[string]report.Totals{}}
	Add(got, in, o)

	plain, err := Load(traces[0])
	if err != nil {
		t.Fatal(err)
	}
	want := &report.Report{Summary: map[string]report.Totals{}}
	Add(want, plain, Options{Symbolizer: func(m []event.Module) FrameSource {
		return symbolize.New(symbolize.Options{Demangle: true}).Process(m)
	}})
	if len(got.Leaks) == 0 {
		t.Fatal("no leaks reported")
	}
	if !reflect.DeepEqual(got.Leaks, want.Leaks) {
		t.Errorf("leaks with prefetch:\n%+v\nwithout:\n%+v", got.Leaks, want.Leaks)
	}
}
