package mtrace

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libleak/analyzer/event"
)

// recorder keeps what a decoder delivered as one line per call, so tests
// compare whole streams at a glance.
type recorder struct{ out []string }

func (r *recorder) Header(h *event.Header) {
	r.out = append(r.out, fmt.Sprintf("header clock=%s unwinder=%s depth=%d", h.Clock, h.Unwinder, h.Depth))
}

func (r *recorder) Module(m *event.Module) {
	r.out = append(r.out, fmt.Sprintf("module %q base=%#x segs=%v t=%d", m.Path, m.Base, m.Segments, m.Time))
}

func (r *recorder) Stack(id uint64, pcs []uint64) {
	r.out = append(r.out, fmt.Sprintf("stack %d %#x", id, pcs))
}

func (r *recorder) Event(e *event.Event) {
	s := fmt.Sprintf("%s %s tid=%d t=%d", e.Kind, e.Op, e.Tid, e.Time)
	if e.Kind == event.Realloc {
		s += fmt.Sprintf(" t2=%d old=%#x", e.Time2, e.OldAddr)
	}
	s += fmt.Sprintf(" addr=%#x", e.Addr)
	if e.Kind != event.Free {
		s += fmt.Sprintf(" size=%#x", e.Size)
	}
	r.out = append(r.out, s+fmt.Sprintf(" stack=%d", e.Stack))
}

func parseFile(t *testing.T, name string) (*Parser, *recorder, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p Parser
	var r recorder
	err = p.Parse(f, name, &r)
	return &p, &r, err
}

func compare(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stream differs\n got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

const (
	b0 = SyntheticBase
	b1 = SyntheticBase + ModuleSpan
)

func seg(base uint64) string {
	return fmt.Sprint([]event.Segment{{Start: base, End: base + ModuleSpan, Exec: true}})
}

func TestParseBasic(t *testing.T) {
	p, r, err := parseFile(t, "basic.mtrace")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"header clock=line unwinder=mtrace depth=1",
		fmt.Sprintf(`module "./prog" base=%#x segs=%s t=2`, b0, seg(b0)),
		fmt.Sprintf("stack 1 [%#x]", b0+0x1211),
		"alloc malloc tid=0 t=2 addr=0x55d0c0a012a0 size=0x76 stack=1",
		fmt.Sprintf("stack 2 [%#x]", b0+0x1225),
		"alloc malloc tid=0 t=3 addr=0x55d0c0a01320 size=0x10 stack=2",
		fmt.Sprintf(`module "/lib/x86_64-linux-gnu/libc.so.6" base=%#x segs=%s t=4`, b1, seg(b1)),
		fmt.Sprintf("stack 3 [%#x]", b1+0x9e9aa),
		"alloc strdup tid=0 t=4 addr=0x55d0c0a01340 size=0x6 stack=3",
		fmt.Sprintf("stack 4 [%#x]", b0+0x1240),
		"realloc realloc tid=0 t=5 t2=6 old=0x55d0c0a01320 addr=0x55d0c0a01360 size=0xec stack=4",
		// A pre-2.34 absolute address below 4 GiB cannot be told from
		// an offset: it is placed in the module like one.
		fmt.Sprintf("stack 5 [%#x]", b0+0x401136),
		"free free tid=0 t=7 addr=0x55d0c0a012a0 stack=5",
		"stack 6 [0x7f4be8012345]",
		fmt.Sprintf("stack 7 [%#x]", b0+0x1250),
		"free free tid=0 t=11 addr=0x55d0c0a01340 stack=0",
		fmt.Sprintf("stack 8 [%#x]", b0+0x1260),
		"alloc realloc tid=0 t=12 addr=0x55d0c0a01500 size=0x40 stack=8",
		"stack 9 [0x7f4be8001000]",
		"alloc malloc tid=0 t=13 addr=0x55d0c0a01600 size=0x0 stack=9",
		"alloc malloc tid=0 t=14 addr=0x55d0c0a01700 size=0x8 stack=1",
	}
	compare(t, r.out, want)

	wantStats := Stats{Lines: 15, Allocs: 6, Frees: 2, Reallocs: 1, FailedAllocs: 1, FailedReallocs: 1,
		Started: true, Ended: true}
	if p.Stats() != wantStats {
		t.Errorf("stats %+v, want %+v", p.Stats(), wantStats)
	}

	wantCallers := map[uint64]Caller{
		b0 + 0x1211:    {Module: "./prog", Offset: 0x1211},
		b0 + 0x1225:    {Module: "./prog", Offset: 0x1225},
		b1 + 0x9e9aa:   {Module: "/lib/x86_64-linux-gnu/libc.so.6", Offset: 0x9e9aa, Symbol: "__strdup", SymOffset: 0x1a},
		b0 + 0x1240:    {Module: "./prog", Offset: 0x1240},
		b0 + 0x401136:  {Module: "./prog", Offset: 0x401136, Symbol: "main", SymOffset: 0x1c},
		0x7f4be8012345: {Offset: 0x7f4be8012345},
		b0 + 0x1250:    {Module: "./prog", Offset: 0x1250},
		b0 + 0x1260:    {Module: "./prog", Offset: 0x1260},
		0x7f4be8001000: {Module: "/usr/lib/libfoo.so", Offset: 0x7f4be8001000, Symbol: "foo", SymOffset: -0x10},
	}
	got := p.Callers()
	if len(got) != len(wantCallers) {
		t.Errorf("%d callers, want %d: %v", len(got), len(wantCallers), got)
	}
	for pc, c := range wantCallers {
		if got[pc] != c {
			t.Errorf("caller %#x = %+v, want %+v", pc, got[pc], c)
		}
	}
}

func TestParseReallocForms(t *testing.T) {
	p, r, err := parseFile(t, "realloc.mtrace")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"header clock=line unwinder=mtrace depth=1",
		fmt.Sprintf(`module "/opt/my app/bin/app" base=%#x segs=%s t=2`, b0, seg(b0)),
		fmt.Sprintf("stack 1 [%#x]", b0+0x2000),
		"alloc malloc tid=0 t=2 addr=0x10 size=0x8 stack=1",
		fmt.Sprintf("stack 2 [%#x]", b0+0x2010),
		"realloc realloc tid=0 t=3 t2=4 old=0x10 addr=0x20 size=0x18 stack=2",
		// A "<" with no ">" after it still released its block.
		fmt.Sprintf("stack 3 [%#x]", b0+0x2020),
		"free realloc tid=0 t=5 addr=0x20 stack=3",
		fmt.Sprintf("stack 4 [%#x]", b0+0x2030),
		"free free tid=0 t=6 addr=0x20 stack=4",
		fmt.Sprintf("stack 5 [%#x]", b0+0x2040),
		"alloc realloc tid=0 t=8 addr=0x30 size=0x4 stack=5",
	}
	compare(t, r.out, want)
	st := p.Stats()
	if !st.Truncated || st.Ended || st.PartialLine {
		t.Errorf("stats %+v: want truncated (no \"= End\"), not partial", st)
	}
}

func TestParseTruncated(t *testing.T) {
	p, r, err := parseFile(t, "truncated.mtrace")
	if err != nil {
		t.Fatalf("a truncated trace is no error: %v", err)
	}
	want := []string{
		"header clock=line unwinder=mtrace depth=1",
		fmt.Sprintf(`module "./prog" base=%#x segs=%s t=2`, b0, seg(b0)),
		fmt.Sprintf("stack 1 [%#x]", b0+0x1211),
		"alloc malloc tid=0 t=2 addr=0x1000 size=0x10 stack=1",
		fmt.Sprintf("stack 2 [%#x]", b0+0x1222),
		"free realloc tid=0 t=3 addr=0x1000 stack=2",
	}
	compare(t, r.out, want)
	want2 := Stats{Lines: 4, Allocs: 1, Frees: 1, Started: true, PartialLine: true, Truncated: true}
	if p.Stats() != want2 {
		t.Errorf("stats %+v, want %+v", p.Stats(), want2)
	}
}

func TestParseGarbage(t *testing.T) {
	_, r, err := parseFile(t, "garbage.mtrace")
	const want = `garbage.mtrace:3: unknown operation "hello": "hello world"`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
	if len(r.out) != 4 {
		t.Errorf("the events before the bad line must be delivered: %q", r.out)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "x: empty file: not a glibc mtrace file"},
		{"\n\n", "x: empty file: not a glibc mtrace file"},
		{"hello\n", `x:1: not a glibc mtrace file: "hello"`},
		{"\x7fELF\x02\x01\x01", "x:1: not a glibc mtrace file"},
		{"= Start\n= Middle\n", `x:2: unknown marker: "= Middle"`},
		{"= Start\n@ ./p:[0x12] + 0x10\n", `x:2: "+" takes 2 operands, not 1: "@ ./p:[0x12] + 0x10"`},
		{"= Start\n@ ./p:[0x12] - 0x10 0x20\n", `x:2: "-" takes 1 operands, not 2: "@ ./p:[0x12] - 0x10 0x20"`},
		{"= Start\n@ ./p:[zz] - 0x10\n", `x:2: bad caller address: "zz" is not a hex number: "@ ./p:[zz] - 0x10"`},
		{"= Start\n@ ./p 0x10\n", `x:2: caller without [address]: "@ ./p 0x10"`},
		{"= Start\n+ 0xzz 0x1\n", `x:2: bad pointer: "0xzz" is not a hex number: "+ 0xzz 0x1"`},
		{"= Start\n+ 0x10 0x\n", `x:2: bad size: "0x" is not a hex number: "+ 0x10 0x"`},
		{"= Start\n@ ./p[0x12] - 0x10\n", `x:2: bad caller: module path without ':': "@ ./p[0x12] - 0x10"`},
		{"= Start\n@ ./p:(main)[0x12] - 0x10\n", `x:2: bad caller symbol: "@ ./p:(main)[0x12] - 0x10"`},
		{"= Start\n@ ./p:(main+zz)[0x12] - 0x10\n", `x:2: bad caller symbol offset: "@ ./p:(main+zz)[0x12] - 0x10"`},
		{"= Start\n" + strings.Repeat("x", maxLine+10) + "\n", "x:2: line longer than 1048576 bytes"},
	} {
		err := Parse(strings.NewReader(tc.in), "x", &recorder{})
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%.40q) = %v, want %s", tc.in, err, tc.want)
		}
	}
	err := Parse(strings.NewReader("hello\n"), "x", &recorder{})
	if !errors.Is(err, ErrNotMtrace) {
		t.Errorf("foreign input: %v does not wrap ErrNotMtrace", err)
	}
}

func TestParseNoStartLine(t *testing.T) {
	// Lines without the "= Start" (a trace cut at its head, or written
	// by hand) and without callers are still mtrace.
	var r recorder
	if err := Parse(strings.NewReader("+ 0x10 0x20\r\n- 0x10\r\n"), "x", &r); err != nil {
		t.Fatal(err)
	}
	compare(t, r.out, []string{
		"header clock=line unwinder=mtrace depth=1",
		"alloc malloc tid=0 t=1 addr=0x10 size=0x20 stack=0",
		"free free tid=0 t=2 addr=0x10 stack=0",
	})
}

func TestParseLoadStart(t *testing.T) {
	p := Parser{LoadStart: func(m string) uint64 {
		if m == "./nopie" {
			return 0x400000
		}
		return 0
	}}
	var r recorder
	in := "@ ./nopie:[0x1136] + 0x10 0x20\n@ ./lib.so:[0x1136] + 0x30 0x20\n"
	if err := p.Parse(strings.NewReader(in), "x", &r); err != nil {
		t.Fatal(err)
	}
	compare(t, r.out, []string{
		"header clock=line unwinder=mtrace depth=1",
		fmt.Sprintf(`module "./nopie" base=%#x segs=%s t=1`, b0, seg(b0)),
		fmt.Sprintf("stack 1 [%#x]", b0+0x401136),
		"alloc malloc tid=0 t=1 addr=0x10 size=0x20 stack=1",
		fmt.Sprintf(`module "./lib.so" base=%#x segs=%s t=2`, b1, seg(b1)),
		fmt.Sprintf("stack 2 [%#x]", b1+0x1136),
		"alloc malloc tid=0 t=2 addr=0x30 size=0x20 stack=2",
	})
}

func TestParserReuse(t *testing.T) {
	var p Parser
	for i := 0; i < 2; i++ {
		var r recorder
		if err := p.Parse(strings.NewReader("= Start\n@ ./a:[0x1] + 0x10 0x1\n"), "x", &r); err != nil {
			t.Fatal(err)
		}
		if len(r.out) != 4 || len(p.Callers()) != 1 || p.Stats().Allocs != 1 {
			t.Fatalf("run %d: %q %+v", i, r.out, p.Stats())
		}
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"= Start\n@ ./p:[0x1] + 0x1 0x1\n", true},
		{"= Start\r\n", true},
		{"= Sta", false},
		{"= Start", true},
		{"\n= Start\n", true},
		{"@ ./p:[0x1211] + 0x7f4be8000b70 0x76\n", true},
		{"@ [0x7f4be8000b70] - 0x7f4be8000b70\n", true},
		{"@ ./p:[0x1211] + 0x7f4be8000b70", true},
		{"@ twitter handle\n", false},
		{"= Other\n", false},
		{"+ 0x10 0x20\n", false},
		{"\x7fELF", false},
		{"", false},
		{"LEAKTRACE", false},
	} {
		if got := Sniff([]byte(tc.in)); got != tc.want {
			t.Errorf("Sniff(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzParse checks that no input makes the parser panic or report an
// error without the file name.
func FuzzParse(f *testing.F) {
	for _, n := range []string{"basic.mtrace", "realloc.mtrace", "truncated.mtrace", "garbage.mtrace"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parser
		err := p.Parse(bytes.NewReader(b), "fz", &recorder{})
		if err != nil && !strings.HasPrefix(err.Error(), "fz:") {
			t.Errorf("error without the file name: %v", err)
		}
		Sniff(b)
	})
}
