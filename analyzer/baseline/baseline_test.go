package baseline

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"libleak/analyzer/report"
)

func fr(fn, file string, line int, mod string, addr uint64) report.Frame {
	return report.Frame{Function: fn, File: file, Line: line, Module: mod, Address: addr}
}

const (
	app  = "/build/1/app"
	libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
)

func nodeLeak() report.Leak {
	return report.Leak{Pid: 10, Kind: report.KindDefinite, Bytes: 48, Blocks: 3, Frames: []report.Frame{
		fr("make_node", "/src/list.c", 12, app, 0x401136),
		fr("??", "", 0, "/usr/lib/libfoo.so.1.2.3", 0x7f0000001000),
		fr("make_list", "/src/list.c", 40, app, 0x401190),
		fr("main", "/src/main.c", 9, app, 0x4011c0),
		fr("__libc_start_call_main", "", 0, libc, 0x7f00000290d0),
	}}
}

func TestStack(t *testing.T) {
	l := nodeLeak()
	want := []string{"app!make_node", "app!make_list", "app!main", "libc.so!__libc_start_call_main"}
	if got := Stack(&l, DefaultDepth); !reflect.DeepEqual(got, want) {
		t.Errorf("Stack = %q, want %q", got, want)
	}
	if got := Stack(&l, 2); !reflect.DeepEqual(got, want[:2]) {
		t.Errorf("Stack depth 2 = %q", got)
	}
	if got := Key(&l); got != strings.Join(want, "\n") {
		t.Errorf("Key = %q", got)
	}

	norm := report.Leak{Frames: []report.Frame{
		fr("hash_insert.constprop.0.isra.0", "", 0, "/lib/libx.so.2", 1),
		fr("grow.part.0", "", 0, app, 2),
		fr("parse(char const*) [clone .cold] [clone .constprop.1]", "", 0, app, 3),
		fr("dlopen@@GLIBC_2.34", "", 0, libc, 4),
		fr("worker.lto_priv.0", "", 0, app, 5),
		fr("f.llvm.123456", "", 0, "", 6),
	}}
	want = []string{"libx.so!hash_insert", "app!grow", "app!parse(char const*)", "libc.so!dlopen", "app!worker", "?!f"}
	if got := Stack(&norm, DefaultDepth); !reflect.DeepEqual(got, want) {
		t.Errorf("normalized Stack = %q, want %q", got, want)
	}

	unsym := report.Leak{Frames: []report.Frame{
		fr("??", "", 0, "/usr/lib/libfoo.so.1", 1), fr("", "", 0, app, 2), fr("???", "", 0, "", 3),
	}}
	want = []string{"libfoo.so!?", "app!?", "?!?"}
	if got := Stack(&unsym, DefaultDepth); !reflect.DeepEqual(got, want) {
		t.Errorf("unsymbolized Stack = %q, want %q", got, want)
	}
	if got := Stack(&report.Leak{}, DefaultDepth); len(got) != 0 {
		t.Errorf("empty Stack = %q", got)
	}

	deep := report.Leak{}
	for i := 0; i < 20; i++ {
		deep.Frames = append(deep.Frames, fr(string(rune('a'+i)), "", 0, app, uint64(i)))
	}
	if got := Stack(&deep, DefaultDepth); len(got) != DefaultDepth || got[7] != "app!h" {
		t.Errorf("deep Stack = %q", got)
	}
}

func TestWriteFormat(t *testing.T) {
	a := nodeLeak()
	b := nodeLeak() // the same site in another process, with another kind
	b.Pid, b.Kind, b.Bytes, b.Blocks = 11, report.KindPossible, 16, 1
	c := report.Leak{Kind: report.KindReachable, Bytes: 100, Blocks: 1, Suppressed: "glibc-setlocale",
		Frames: []report.Frame{fr("setlocale", "", 0, libc, 1)}}
	d := report.Leak{Kind: report.KindUnfreed, Bytes: 8, Blocks: 1, Frames: []report.Frame{
		fr("??", "", 0, app, 0x401000)}}
	var buf bytes.Buffer
	if err := Write(&buf, &report.Report{Leaks: []report.Leak{a, c, d, b}}); err != nil {
		t.Fatal(err)
	}
	want := `{
  "format": "libleak-baseline",
  "version": 1,
  "depth": 8,
  "sites": [
    {
      "stack": [
        "app!?"
      ],
      "kinds": [
        "unfreed"
      ],
      "bytes": 8,
      "blocks": 1
    },
    {
      "stack": [
        "app!make_node",
        "app!make_list",
        "app!main",
        "libc.so!__libc_start_call_main"
      ],
      "kinds": [
        "definite",
        "possible"
      ],
      "bytes": 64,
      "blocks": 4,
      "location": "list.c:12"
    }
  ]
}
`
	if buf.String() != want {
		t.Errorf("Write:\n%s\nwant:\n%s", buf.String(), want)
	}

	buf.Reset()
	if err := Write(&buf, &report.Report{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"sites": []`) {
		t.Errorf("empty report: %s", buf.String())
	}
	if b, err := Parse("empty.json", buf.Bytes()); err != nil || b.Len() != 0 {
		t.Errorf("empty baseline: %v, %v", b, err)
	}
}

func TestRoundTrip(t *testing.T) {
	known := nodeLeak()
	other := report.Leak{Kind: report.KindPossible, Bytes: 7, Blocks: 1, Frames: []report.Frame{
		fr("strdup", "", 0, libc, 0x7f0000080000), fr("load_config", "/src/config.c", 77, app, 0x401500)}}
	suppressed := report.Leak{Kind: report.KindReachable, Suppressed: "x", Frames: []report.Frame{
		fr("setlocale", "", 0, libc, 1), fr("main", "/src/main.c", 3, app, 2)}}

	path := filepath.Join(t.TempDir(), "leaks.baseline.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(f, &report.Report{Leaks: []report.Leak{known, other, suppressed}}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != 2 {
		t.Errorf("Len = %d, want 2", b.Len())
	}

	// The next run: rebuilt elsewhere, relinked, with edits that moved
	// every line, a library upgrade, ASLR, and a different leak size.
	rebuilt := nodeLeak()
	rebuilt.Pid, rebuilt.Bytes, rebuilt.Blocks = 999, 4800, 300
	for i := range rebuilt.Frames {
		rebuilt.Frames[i].Address += 0x1000
		rebuilt.Frames[i].Line += 5
		if rebuilt.Frames[i].Module == app {
			rebuilt.Frames[i].Module = "/tmp/ci/build/app"
		}
	}
	rebuilt.Frames[4].Module = "/usr/lib/x86_64-linux-gnu/libc.so.7"
	rebuilt.Frames[1] = fr("??", "", 0, "/usr/lib/libfoo.so.1.2.4", 0x7f1000001000)
	if !b.Contains(&rebuilt) {
		t.Error("rebuilt known site not in baseline")
	}
	indirect := rebuilt
	indirect.Kind = report.KindIndirect
	if !b.Contains(&indirect) {
		t.Error("known site with another kind not in baseline")
	}
	clone := other
	clone.Frames = []report.Frame{fr("strdup", "", 0, libc, 5), fr("load_config.constprop.0", "/src/config.c", 90, app, 6)}
	if !b.Contains(&clone) {
		t.Error("known site from a compiler clone not in baseline")
	}

	newCaller := nodeLeak()
	newCaller.Frames[2].Function = "make_tree"
	if b.Contains(&newCaller) {
		t.Error("site with a new caller is in baseline")
	}
	newSite := report.Leak{Kind: report.KindDefinite, Frames: []report.Frame{
		fr("parse_header", "/src/http.c", 10, app, 0x401800), fr("main", "/src/main.c", 20, app, 0x4011c0)}}
	if b.Contains(&newSite) {
		t.Error("new site is in baseline")
	}
	if b.Contains(&suppressed) {
		t.Error("suppressed site was recorded")
	}
	otherLib := nodeLeak()
	otherLib.Frames[0].Module = "/build/1/libapp.so"
	if b.Contains(&otherLib) {
		t.Error("same function in another object is in baseline")
	}
	var nilB *Baseline
	if nilB.Contains(&known) || nilB.Len() != 0 {
		t.Error("nil baseline not empty")
	}
}

func TestFileDepth(t *testing.T) {
	b, err := Parse("b.json", []byte(`{"format":"libleak-baseline","version":1,"depth":2,
		"sites":[{"stack":["app!make_node","app!make_list"],"future":true}],"comment":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	l := nodeLeak()
	if !b.Contains(&l) {
		t.Error("depth-2 baseline does not contain the site")
	}
	l.Frames[3].Function = "other_main"
	if !b.Contains(&l) {
		t.Error("depth-2 baseline looked past two frames")
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{"{\n  \"format\": \"libleak-baseline\",\n  \"version\": 1,\n  x\n}", "b.json:4: not a valid baseline: invalid character 'x' looking for beginning of object key string"},
		{"", "b.json:1: not a valid baseline: unexpected end of JSON input"},
		{"{\n\"format\": \"libleak-baseline\", \"version\": \"1\"}", "b.json:2: not a valid baseline: field \"version\" is a JSON string, want a number"},
		{`{"format":"something-else","version":1,"depth":8,"sites":[]}`, `b.json: not a libleak baseline (format "something-else", want "libleak-baseline")`},
		{`[]`, "b.json:1: not a valid baseline: the top level is a JSON array, want an object"},
		{`{"format":"libleak-baseline","version":2,"depth":8,"sites":[]}`, "b.json: baseline version 2 is not supported (this version reads 1)"},
		{`{"format":"libleak-baseline","version":1,"depth":8,"sites":[{"stack":"a!b"}]}`, "b.json:1: not a valid baseline: field \"sites.stack\" is a JSON string, want an array"},
		{`{"format":"libleak-baseline","version":1,"sites":[]}`, "b.json: baseline depth 0 is out of range 1..256"},
		{`{"format":"libleak-baseline","version":1,"depth":8,"sites":[{"bytes":1}]}`, "b.json: site 1 has no stack"},
		{`{"format":"libleak-baseline","version":1,"depth":1,"sites":[{"stack":["a!b","a!c"]}]}`, "b.json: site 1 has 2 frames, more than the depth 1"},
	} {
		_, err := Parse("b.json", []byte(c.data))
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got  %v\n want %s", c.data, err, c.want)
		}
	}
	_, err := Read(filepath.Join(t.TempDir(), "none.json"))
	if err == nil || !strings.Contains(err.Error(), "none.json") || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing file: %v", err)
	}
}
