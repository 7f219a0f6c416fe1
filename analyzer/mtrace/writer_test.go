package mtrace

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"libleak/analyzer/event"
)

func TestWriterText(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Header(&event.Header{Pid: 42})
	exe := &event.Module{Path: "/bin/prog", Base: 0x555555554000,
		Segments: []event.Segment{{Start: 0x555555554000, End: 0x555555558000, Exec: true}}}
	shim := &event.Module{Path: "/usr/lib/libleak.so", Base: 0x7f0000000000,
		Segments: []event.Segment{{Start: 0x7f0000000000, End: 0x7f0000010000, Exec: true}}}
	spaced := &event.Module{Path: "/opt/my app/lib.so", Base: 0x7f1000000000,
		Segments: []event.Segment{{Start: 0x7f1000000000, End: 0x7f1000010000, Exec: true}}}
	w.Module(exe)
	w.Module(shim)
	w.Module(spaced)
	w.Stack(1, []uint64{0x7f0000000100, 0x555555555234, 0x555555555300})
	w.Stack(2, []uint64{0x7fffdeadbeef})
	w.Stack(3, []uint64{0x7f0000000100})
	w.Stack(4, []uint64{0x7f1000001000})
	for _, e := range []event.Event{
		{Kind: event.Alloc, Op: event.OpMalloc, Addr: 0x1000, Size: 0x76, Stack: 1},
		{Kind: event.Alloc, Op: event.OpNewArray, Addr: 0x2000, Size: 0, Stack: 2},
		{Kind: event.Alloc, Op: event.OpMalloc, Addr: 0, Size: 0x10, Stack: 1},
		{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: 0x1000, Addr: 0x3000, Size: 0xec, Stack: 1},
		{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: 0, Addr: 0x4000, Size: 8, Stack: 3},
		{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: 0x4000, Addr: 0, Size: 0x20, Stack: 4},
		{Kind: event.Realloc, Op: event.OpRealloc, OldAddr: 0x4000, Addr: 0, Size: 0, Stack: 0},
		{Kind: event.Mmap, Op: event.OpMmap, Addr: 0x7e0000000000, Size: 40960, Stack: 1},
		{Kind: event.Munmap, Op: event.OpMunmap, Addr: 0x7e0000000000, Size: 40960, Stack: 1},
		{Kind: event.Free, Op: event.OpFree, Addr: 0, Stack: 1},
		{Kind: event.Free, Op: event.OpDeleteArray, Addr: 0x2000, Stack: 2},
	} {
		w.Event(&e)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := `= Start
@ /bin/prog:[0x1234] + 0x1000 0x76
@ [0x7fffdeadbeef] + 0x2000 0
@ /bin/prog:[0x1234] + (nil) 0x10
@ /bin/prog:[0x1234] < 0x1000
@ /bin/prog:[0x1234] > 0x3000 0xec
+ 0x4000 0x8
@ [0x7f1000001000] ! 0x4000 0x20
- 0x4000
@ [0x7fffdeadbeef] - 0x2000
= End
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
	if w.Skipped() != 2 {
		t.Errorf("skipped %d, want the 2 mmap-family events", w.Skipped())
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWriterEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := NewWriter(&buf).Close(); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "= Start\n= End\n" {
		t.Errorf("got %q", buf.String())
	}
}

func TestWriterSkipAndModuleLife(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	// Everything from the first frame on is the allocator's for this
	// Skip, but the frame at 0x9000 is the caller.
	w.Skip = func(pc uint64, m *event.Module) bool { return pc < 0x9000 }
	seg := []event.Segment{{Start: 0x10000, End: 0x20000}}
	w.Module(&event.Module{Path: "/a.so", Base: 0x10000, Segments: seg, Time: 10, Unloaded: 20})
	w.Module(&event.Module{Path: "/b.so", Base: 0x10000, Segments: seg, Time: 30})
	w.Stack(7, []uint64{0x100, 0x11000})
	w.Stack(8, []uint64{0x100, 0x200})
	w.Event(&event.Event{Kind: event.Alloc, Addr: 0x1, Size: 1, Stack: 7, Time: 15})
	w.Event(&event.Event{Kind: event.Alloc, Addr: 0x2, Size: 1, Stack: 7, Time: 35})
	w.Event(&event.Event{Kind: event.Alloc, Addr: 0x3, Size: 1, Stack: 7, Time: 16})
	w.Event(&event.Event{Kind: event.Alloc, Addr: 0x4, Size: 1, Stack: 8, Time: 40})
	w.Close()
	want := `= Start
@ /a.so:[0x1000] + 0x1 0x1
@ /b.so:[0x1000] + 0x2 0x1
@ /a.so:[0x1000] + 0x3 0x1
+ 0x4 0x1
= End
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestWriterError(t *testing.T) {
	fw := &failWriter{}
	w := NewWriter(fw)
	w.Stack(1, []uint64{0x10})
	for i := 0; i < 100000; i++ {
		w.Event(&event.Event{Kind: event.Alloc, Addr: uint64(i + 1), Size: 16, Stack: 1})
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close = %v, want the write error", err)
	}
	if fw.n != 1 {
		t.Errorf("%d writes after the first failure, want none", fw.n-1)
	}
}

func TestWriterParseRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Module(&event.Module{Path: "/bin/p", Base: 0x400000000,
		Segments: []event.Segment{{Start: 0x400000000, End: 0x400010000}}})
	w.Stack(1, []uint64{0x400001234})
	w.Event(&event.Event{Kind: event.Alloc, Addr: 0x10, Size: 5, Stack: 1})
	w.Event(&event.Event{Kind: event.Realloc, OldAddr: 0x10, Addr: 0x20, Size: 9, Stack: 1})
	w.Event(&event.Event{Kind: event.Free, Addr: 0x20})
	w.Close()
	var p Parser
	var r recorder
	if err := p.Parse(&buf, "w", &r); err != nil {
		t.Fatal(err)
	}
	compare(t, r.out, []string{
		"header clock=line unwinder=mtrace depth=1",
		`module "/bin/p" base=0x1000000000000000 segs=` + seg(b0) + " t=2",
		"stack 1 [0x1000000000001234]",
		"alloc malloc tid=0 t=2 addr=0x10 size=0x5 stack=1",
		"realloc realloc tid=0 t=3 t2=4 old=0x10 addr=0x20 size=0x9 stack=1",
		"free free tid=0 t=5 addr=0x20 stack=0",
	})
	if st := p.Stats(); !st.Ended || st.Truncated {
		t.Errorf("stats %+v", st)
	}
}
