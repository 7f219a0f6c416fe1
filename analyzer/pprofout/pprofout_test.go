package pprofout

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"libleak/analyzer/report"
)

// sample is a report of two processes with one leak site of each kind of
// location pprof must represent: inlined calls, a frame without a name, a
// stack shared with another site, and a suppressed site that must not
// appear.
func sample() *report.Report {
	app, libc, foo := "/opt/app/bin/app", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/opt/app/lib/libfoo.so.1"
	mainAt := func(line int, addr uint64) report.Frame {
		return report.Frame{Function: "main", File: "/src/app/main.c", Line: line, Module: app, Address: addr}
	}
	start := report.Frame{Function: "__libc_start_call_main", File: "../sysdeps/nptl/libc_start_call_main.h", Line: 58, Module: libc, Address: 0x7f0000029d90}
	return &report.Report{
		Processes: []report.Process{
			{Pid: 100, Exe: app, DurationNs: 2_500_000_000},
			{Pid: 200, Exe: "/usr/bin/helper", DurationNs: 1_000_000_000},
		},
		Leaks: []report.Leak{
			{Pid: 100, Kind: report.KindDefinite, Source: report.SourceHeap, Family: "malloc", Bytes: 300, Blocks: 3, Frames: []report.Frame{
				{Function: "node_init", File: "/src/app/node.h", Line: 12, Module: app, Address: 0x401010, Inlined: true},
				{Function: "node_new", File: "/src/app/node.c", Line: 40, Module: app, Address: 0x401010},
				mainAt(20, 0x401200),
				start,
			}},
			{Pid: 100, Kind: report.KindPossible, Source: report.SourceMmap, Family: "mmap", Bytes: 4096, Blocks: 1, Frames: []report.Frame{
				{Function: "map_region", File: "/src/app/map.c", Line: 7, Module: app, Address: 0x401300},
				mainAt(21, 0x401210),
				start,
			}},
			{Pid: 200, Kind: report.KindUnfreed, Source: report.SourceHeap, Family: "new", Bytes: 64, Blocks: 2, Frames: []report.Frame{
				{Function: "??", Module: foo, Address: 0x7f1000001234},
				{Function: "foo_init", File: "/src/foo/foo.c", Line: 3, Module: foo, Address: 0x7f1000001400},
			}},
			{Pid: 200, Kind: report.KindUnfreed, Source: report.SourceHeap, Bytes: 4096, Blocks: 1, Suppressed: "glibc-stdio-buffer", Frames: []report.Frame{
				{Function: "_IO_file_doallocate", File: "libio/filedoalloc.c", Line: 101, Module: libc, Address: 0x7f0000080000},
			}},
		},
		// libfoo was recorded without a build ID.
		Modules: []report.Module{{Path: app, BuildID: "0a1b2c3d"}, {Path: libc, BuildID: "e5f60718293a"}},
	}
}

func parsed(t *testing.T, r *report.Report) *profile.Profile {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, r); err != nil {
		t.Fatal(err)
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type lineInfo struct {
	Function, File string
	Line           int64
}

func lines(l *profile.Location) []lineInfo {
	var out []lineInfo
	for _, ln := range l.Line {
		out = append(out, lineInfo{ln.Function.Name, ln.Function.Filename, ln.Line})
	}
	return out
}

func TestParseBack(t *testing.T) {
	p := parsed(t, sample())
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	if got := []string{p.SampleType[0].Type + "/" + p.SampleType[0].Unit, p.SampleType[1].Type + "/" + p.SampleType[1].Unit}; !reflect.DeepEqual(got, []string{"leaked_objects/count", "leaked_space/bytes"}) || len(p.SampleType) != 2 {
		t.Errorf("sample types %v", got)
	}
	if p.DefaultSampleType != "leaked_space" {
		t.Errorf("default sample type %q", p.DefaultSampleType)
	}
	if p.DurationNanos != 2_500_000_000 {
		t.Errorf("duration %d, want the longest process's", p.DurationNanos)
	}
	if len(p.Sample) != 3 {
		t.Fatalf("%d samples, want 3 (the suppressed site left out)", len(p.Sample))
	}

	type want struct {
		values   []int64
		labels   map[string][]string
		pid      int64
		stack    [][]lineInfo
		mappings []string
		address  []uint64
	}
	app, libc, foo := "/opt/app/bin/app", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/opt/app/lib/libfoo.so.1"
	start := []lineInfo{{"__libc_start_call_main", "../sysdeps/nptl/libc_start_call_main.h", 58}}
	wants := []want{
		{
			values: []int64{3, 300},
			labels: map[string][]string{"kind": {"definite"}, "source": {"heap"}, "family": {"malloc"}, "exe": {"app"}},
			pid:    100,
			stack: [][]lineInfo{
				{{"node_init", "/src/app/node.h", 12}, {"node_new", "/src/app/node.c", 40}},
				{{"main", "/src/app/main.c", 20}},
				start,
			},
			mappings: []string{app, app, libc},
			address:  []uint64{0x401010, 0x401200, 0x7f0000029d90},
		},
		{
			values:   []int64{1, 4096},
			labels:   map[string][]string{"kind": {"possible"}, "source": {"mmap"}, "family": {"mmap"}, "exe": {"app"}},
			pid:      100,
			stack:    [][]lineInfo{{{"map_region", "/src/app/map.c", 7}}, {{"main", "/src/app/main.c", 21}}, start},
			mappings: []string{app, app, libc},
			address:  []uint64{0x401300, 0x401210, 0x7f0000029d90},
		},
		{
			values:   []int64{2, 64},
			labels:   map[string][]string{"kind": {"unfreed"}, "source": {"heap"}, "family": {"new"}, "exe": {"helper"}},
			pid:      200,
			stack:    [][]lineInfo{nil, {{"foo_init", "/src/foo/foo.c", 3}}},
			mappings: []string{foo, foo},
			address:  []uint64{0x7f1000001234, 0x7f1000001400},
		},
	}
	for i, w := range wants {
		s := p.Sample[i]
		if !reflect.DeepEqual(s.Value, w.values) {
			t.Errorf("sample %d: values %v, want %v", i, s.Value, w.values)
		}
		if !reflect.DeepEqual(s.Label, w.labels) {
			t.Errorf("sample %d: labels %v, want %v", i, s.Label, w.labels)
		}
		if !reflect.DeepEqual(s.NumLabel, map[string][]int64{"pid": {w.pid}}) {
			t.Errorf("sample %d: numeric labels %v, want pid %d", i, s.NumLabel, w.pid)
		}
		if len(s.Location) != len(w.stack) {
			t.Errorf("sample %d: %d locations, want %d", i, len(s.Location), len(w.stack))
			continue
		}
		for j, l := range s.Location {
			if got := lines(l); !reflect.DeepEqual(got, w.stack[j]) {
				t.Errorf("sample %d location %d: lines %v, want %v", i, j, got, w.stack[j])
			}
			if l.Mapping == nil || l.Mapping.File != w.mappings[j] {
				t.Errorf("sample %d location %d: mapping %v, want %s", i, j, l.Mapping, w.mappings[j])
			}
			if l.Address != w.address[j] {
				t.Errorf("sample %d location %d: address %#x, want %#x", i, j, l.Address, w.address[j])
			}
		}
	}

	// Shared frames are shared objects: one location for libc's frame,
	// one function for main, one mapping per module.
	if a, b := p.Sample[0].Location[2], p.Sample[1].Location[2]; a != b {
		t.Errorf("the common libc frame makes two locations (%d, %d)", a.ID, b.ID)
	}
	if a, b := p.Sample[0].Location[1].Line[0].Function, p.Sample[1].Location[1].Line[0].Function; a != b {
		t.Errorf("main makes two functions (%d, %d)", a.ID, b.ID)
	}
	var files []string
	for _, m := range p.Mapping {
		files = append(files, m.File)
		if !m.HasFunctions {
			t.Errorf("mapping %s not marked symbolized: pprof would symbolize it again", m.File)
		}
		if want := map[string]string{app: "0a1b2c3d", libc: "e5f60718293a"}[m.File]; m.BuildID != want {
			t.Errorf("mapping %s has build ID %q, want %q", m.File, m.BuildID, want)
		}
	}
	// pprof puts the main executable first.
	if !reflect.DeepEqual(files, []string{app, libc, foo}) {
		t.Errorf("mappings %v", files)
	}
	if len(p.Location) != 7 || len(p.Function) != 6 {
		t.Errorf("%d locations and %d functions, want 7 and 6", len(p.Location), len(p.Function))
	}
}

func TestEmptyReport(t *testing.T) {
	for _, r := range []*report.Report{nil, {}} {
		p := parsed(t, r)
		if len(p.Sample) != 0 || len(p.SampleType) != 2 {
			t.Errorf("%d samples, %d sample types", len(p.Sample), len(p.SampleType))
		}
	}
}

// TestGroupedFrames checks the frames of --group function and top:N, which
// have no address: equal frames are one location, different ones are not.
func TestGroupedFrames(t *testing.T) {
	r := &report.Report{Leaks: []report.Leak{
		{Pid: 1, Kind: "definite", Bytes: 10, Blocks: 1, Frames: []report.Frame{{Function: "a", File: "x.c", Line: 1, Module: "/bin/p"}}},
		{Pid: 2, Kind: "definite", Bytes: 20, Blocks: 2, Frames: []report.Frame{{Function: "a", File: "x.c", Line: 1, Module: "/bin/p"}}},
		{Pid: 3, Kind: "definite", Bytes: 30, Blocks: 3, Frames: []report.Frame{{Function: "b", File: "x.c", Line: 9, Module: "/bin/p"}}},
		{Pid: 4, Kind: "definite", Bytes: 40, Blocks: 4, Frames: []report.Frame{{Function: "??"}}},
		{Pid: 5, Kind: "definite", Bytes: 50, Blocks: 5},
	}}
	p := parsed(t, r)
	if len(p.Sample) != 5 {
		t.Fatalf("%d samples", len(p.Sample))
	}
	if p.Sample[0].Location[0] != p.Sample[1].Location[0] || p.Sample[0].Location[0] == p.Sample[2].Location[0] {
		t.Errorf("locations: %d %d %d", p.Sample[0].Location[0].ID, p.Sample[1].Location[0].ID, p.Sample[2].Location[0].ID)
	}
	l := p.Sample[3].Location[0]
	if got := lines(l); !reflect.DeepEqual(got, []lineInfo{{"??", "", 0}}) || l.Mapping != nil {
		t.Errorf("frame with neither name nor address: lines %v, mapping %v", got, l.Mapping)
	}
	if len(p.Sample[4].Location) != 0 || p.Sample[4].Value[1] != 50 {
		t.Errorf("stackless leak: %d locations, value %v", len(p.Sample[4].Location), p.Sample[4].Value)
	}
}

// TestGoToolPprofTop runs `go tool pprof -top` on a written profile, as a
// user would, and checks each leaking function's flat value; pprof marks
// a function inlined into its caller "(inline)".
func TestGoToolPprofTop(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	path := filepath.Join(t.TempDir(), "leaks.pb.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(f, sample()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	top := func(args ...string) map[string]string {
		t.Helper()
		cmd := exec.Command(goBin, append(append([]string{"tool", "pprof", "-top", "-nodefraction=0"}, args...), path)...)
		cmd.Env = append(os.Environ(), "PPROF_TMPDIR="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go tool pprof -top %v: %v\n%s", args, err, out)
		}
		// Rows are: flat flat% sum% cum cum% name.
		flat := map[string]string{}
		in := false
		for _, line := range strings.Split(string(out), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 5 && fields[0] == "flat" {
				in = true
				continue
			}
			if in && len(fields) >= 6 {
				flat[strings.Join(fields[5:], " ")] = fields[0]
			}
		}
		return flat
	}

	want := map[string]string{
		"node_init (inline)":     "300B",
		"map_region":             "4096B",
		"[libfoo.so.1]":          "64B",
		"node_new":               "0",
		"main":                   "0",
		"foo_init":               "0",
		"__libc_start_call_main": "0",
	}
	if got := top("-unit=B"); !reflect.DeepEqual(got, want) {
		t.Errorf("leaked_space: got %v, want %v", got, want)
	}
	want = map[string]string{
		"node_init (inline)":     "3",
		"map_region":             "1",
		"[libfoo.so.1]":          "2",
		"node_new":               "0",
		"main":                   "0",
		"foo_init":               "0",
		"__libc_start_call_main": "0",
	}
	if got := top("-sample_index=leaked_objects"); !reflect.DeepEqual(got, want) {
		t.Errorf("leaked_objects: got %v, want %v", got, want)
	}
	want = map[string]string{"map_region": "4096B", "main": "0", "__libc_start_call_main": "0"}
	if got := top("-unit=B", "-tagfocus=kind=possible"); !reflect.DeepEqual(got, want) {
		t.Errorf("kind=possible: got %v, want %v", got, want)
	}
}
