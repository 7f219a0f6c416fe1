package analyze_test

import (
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"libleak/analyzer/analyze"
	"libleak/analyzer/event"
	"libleak/analyzer/report"
	"libleak/analyzer/symbolize"
)

// TestPrefetchReadsTheStacksModules traces fib_thread (a worker thread's
// leaks: stacks through the executable and libc's thread start) and loads
// it with every trace counting as long: the prefetch is asked for the
// executable and libc, never for the tracer, and the report is the one
// Load and Add give without it.
func TestPrefetchReadsTheStacksModules(t *testing.T) {
	path := trace(t, "fib_thread.c", "20")
	defer func(n int64) { *analyze.PrefetchMinSize = n }(*analyze.PrefetchMinSize)
	*analyze.PrefetchMinSize = 0
	sym := symbolize.New(symbolize.Options{Demangle: true})
	var asked []string
	o := analyze.Options{
		Symbolizer: func(m []event.Module) analyze.FrameSource { return sym.Process(m) },
		Prefetch: func(m event.Module) {
			asked = append(asked, filepath.Base(m.Path))
			sym.Prefetch(m)
		},
	}
	in, err := analyze.LoadFor(path, o)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(asked)
	var exe, libc bool
	for i, m := range asked {
		switch {
		case m == "fib_thread":
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
		t.Errorf("prefetch asked for %v; want fib_thread and libc.so.6 among them", asked)
	}
	got := &report.Report{Summary: map[string]report.Totals{}}
	analyze.Add(got, in, o)

	plain, err := analyze.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &report.Report{Summary: map[string]report.Totals{}}
	analyze.Add(want, plain, analyze.Options{Symbolizer: func(m []event.Module) analyze.FrameSource {
		return symbolize.New(symbolize.Options{Demangle: true}).Process(m)
	}})
	if len(got.Leaks) == 0 {
		t.Fatal("no leaks reported")
	}
	if !reflect.DeepEqual(got.Leaks, want.Leaks) {
		t.Errorf("leaks with prefetch:\n%+v\nwithout:\n%+v", got.Leaks, want.Leaks)
	}
}
