package cireport

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"libleak/internal/testutil"
	"strings"
	"testing"

	"libleak/analyzer/report"
)

const root = "/work/proj"

func fr(fn, file string, line int, mod string, addr uint64) report.Frame {
	return report.Frame{Function: fn, File: file, Line: line, Module: mod, Address: addr}
}

const (
	server = "/work/proj/build/server"
	worker = "/work/proj/build/worker"
	libc   = "/usr/lib/x86_64-linux-gnu/libc.so.6"
	stdcxx = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30"
	ldso   = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
)

// sample has one leak of every shape the writers treat differently.
func sample() *report.Report {
	mainFrame := fr("main", "/work/proj/src/main.c", 30, server, 0x401300)
	realloc := fr("std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)",
		"/usr/include/c++/12/bits/vector.tcc", 440, server, 0x401500)
	realloc.Inlined = true
	pushBack := fr("std::vector<int, std::allocator<int> >::push_back(int const&)",
		"/usr/include/c++/12/bits/stl_vector.h", 1287, server, 0x401500)
	pushBack.Inlined = true
	return &report.Report{
		Processes: []report.Process{
			{Pid: 100, Ppid: 1, Exe: server, Cmdline: []string{server, "--port", "80"}, Trace: "t.100.leak",
				Events: 1234, ExitStatus: 0, PeakBytes: 65536, DurationNs: 1_500_000_000},
			{Pid: 101, Ppid: 100, Exe: worker, Trace: "t.101.leak", Events: 50, Dropped: 3, Truncated: true,
				ExitStatus: -1, PeakBytes: 4096, DurationNs: 250_000_000},
		},
		Leaks: []report.Leak{
			{Pid: 100, Kind: report.KindDefinite, Source: report.SourceHeap, Family: "malloc", Bytes: 64, Blocks: 3, IndirectBytes: 16,
				Frames: []report.Frame{
					fr("make_node", "/work/proj/src/list.c", 12, server, 0x401136),
					fr("make_list", "/work/proj/src/list.c", 40, server, 0x401190),
					mainFrame,
				}},
			{Pid: 100, Kind: report.KindIndirect, Bytes: 16, Blocks: 1,
				Frames: []report.Frame{
					fr("strdup", "", 0, libc, 0x7f00000a0000),
					fr("node_set_name", "/work/proj/src/list.c", 20, server, 0x401150),
					fr("make_node", "/work/proj/src/list.c", 13, server, 0x401140),
				}},
			{Pid: 100, Kind: report.KindPossible, Bytes: 256, Blocks: 1, Family: "new",
				Frames: []report.Frame{realloc, pushBack,
					fr("Table::add(int)", "/work/proj/src/table.cc", 33, server, 0x401500),
					mainFrame,
				}},
			{Pid: 100, Kind: report.KindReachable, Bytes: 72704, Blocks: 1,
				Frames: []report.Frame{
					fr("??", "", 0, stdcxx, 0x7f00001007b9),
					fr("call_init", "", 0, ldso, 0x7f0000200a1d),
				}},
			{Pid: 100, Kind: report.KindDefinite, Bytes: 999, Blocks: 9, Suppressed: "known-cache",
				Frames: []report.Frame{fr("cache_put", "/work/proj/src/cache.c", 5, server, 0x401600)}},
			{Pid: 101, Kind: report.KindUnfreed, Bytes: 10, Blocks: 2,
				Frames: []report.Frame{
					fr("parse_arg(char const*, int)", "/work/proj/src/odd dir,v%1/args:x.c", 7, worker, 0x401700),
				}},
			{Pid: 100, Kind: report.KindDefinite, Bytes: 48, Blocks: 3,
				Frames: []report.Frame{
					fr("make_node", "/work/proj/src/list.c", 12, server, 0x401136),
					fr("make_tree", "/work/proj/src/tree.c", 8, server, 0x401800),
				}},
			{Pid: 999, Kind: report.KindDefinite, Bytes: 8, Blocks: 1,
				Frames: []report.Frame{fr("orphan", "src/orphan.c", 5, "", 0x401900)}},
			{Pid: 101, Kind: "weird", Bytes: 1, Blocks: 1,
				Frames: []report.Frame{fr("odd", "../sysdeps/odd.c", 2, libc, 0x7f00000b0000)}},
			{Pid: 101, Kind: report.KindDefinite, Bytes: 1, Blocks: 1},
		},
	}
}

func TestJUnitGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, sample(), "leaks"); err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "report.junit.xml", buf.Bytes())

	var doc junitSuites
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("JUnit does not parse: %v", err)
	}
	if len(doc.Suites) != 1 {
		t.Fatalf("%d suites", len(doc.Suites))
	}
	s := doc.Suites[0]
	if s.Name != "leaks" || s.Tests != 11 || s.Failures != 9 || len(s.Cases) != 11 || doc.Tests != 11 || doc.Failures != 9 {
		t.Errorf("suite %q: tests %d, failures %d, cases %d; top %d/%d", s.Name, s.Tests, s.Failures, len(s.Cases), doc.Tests, doc.Failures)
	}
	var names []string
	failures := 0
	for _, c := range s.Cases {
		names = append(names, c.Classname+" | "+c.Name)
		if c.Failure != nil {
			failures++
			if c.Failure.Message == "" || c.Failure.Type == "" || !strings.Contains(c.Failure.Text, "#0 ") && !strings.Contains(c.Failure.Text, "(no stack)") {
				t.Errorf("case %q: incomplete failure %+v", c.Name, c.Failure)
			}
		}
	}
	want := []string{
		"server | process",
		"server | leak in make_node (list.c:12)",
		"server | leak in node_set_name (list.c:20)",
		"server | leak in std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&) (vector.tcc:440)",
		"server | leak in ?? (libstdc++.so.6.0.30)",
		"server | leak in make_node (list.c:12) #2",
		"worker | process",
		"worker | leak in parse_arg(char const*, int) (args:x.c:7)",
		"worker | leak in odd (odd.c:2)",
		"worker | leak at an unknown site",
		"unknown-process | leak in orphan (orphan.c:5)",
	}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Errorf("cases:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if failures != 9 {
		t.Errorf("%d failing cases, want 9", failures)
	}
	if strings.Contains(buf.String(), "cache_put") {
		t.Error("suppressed leak written")
	}
	first := s.Cases[1].Failure
	if first.Message != "definite leak: 64 bytes in 3 blocks" || first.Type != "definite" {
		t.Errorf("failure = %q / %q", first.Message, first.Type)
	}
	if !strings.HasPrefix(first.Text, "64 bytes (48 direct, 16 indirect) in 3 blocks are definitely lost in make_node (pid 100, server)\n    #0 0x401136 in make_node /work/proj/src/list.c:12 (/work/proj/build/server)\n") {
		t.Errorf("failure text:\n%s", first.Text)
	}
}

func TestSARIFGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSARIF(&buf, sample(), "1.2.3", root); err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "report.sarif", buf.Bytes())

	var log map[string]any
	if err := json.Unmarshal(buf.Bytes(), &log); err != nil {
		t.Fatalf("SARIF is not JSON: %v", err)
	}
	if log["version"] != "2.1.0" || log["$schema"] != sarifSchema {
		t.Errorf("version %v, schema %v", log["version"], log["$schema"])
	}
	runs := log["runs"].([]any)
	if len(runs) != 1 {
		t.Fatalf("%d runs", len(runs))
	}
	run := runs[0].(map[string]any)
	driver := run["tool"].(map[string]any)["driver"].(map[string]any)
	if driver["name"] != "libleak" || driver["version"] != "1.2.3" {
		t.Errorf("driver %v", driver)
	}
	var ruleIDs []string
	for _, r := range driver["rules"].([]any) {
		rule := r.(map[string]any)
		ruleIDs = append(ruleIDs, rule["id"].(string))
		if rule["shortDescription"].(map[string]any)["text"] == "" {
			t.Errorf("rule %v has no description", rule["id"])
		}
	}
	if got := strings.Join(ruleIDs, " "); got != "leak/definite leak/indirect leak/possible leak/reachable leak/unfreed leak/weird" {
		t.Errorf("rules %s", got)
	}
	base := run["originalUriBaseIds"].(map[string]any)["SRCROOT"].(map[string]any)["uri"]
	if base != "file:///work/proj/" {
		t.Errorf("SRCROOT = %v", base)
	}
	results := run["results"].([]any)
	if len(results) != 9 {
		t.Fatalf("%d results, want 9", len(results))
	}
	type where struct{ uri, base, level string }
	var got []where
	for _, x := range results {
		res := x.(map[string]any)
		id, _ := res["ruleId"].(string)
		idx := int(res["ruleIndex"].(float64))
		if ruleIDs[idx] != id {
			t.Errorf("ruleIndex %d is %s, ruleId %s", idx, ruleIDs[idx], id)
		}
		if res["message"].(map[string]any)["text"] == "" {
			t.Errorf("%s: empty message", id)
		}
		w := where{level: res["level"].(string)}
		if locs, ok := res["locations"].([]any); ok {
			pl := locs[0].(map[string]any)["physicalLocation"].(map[string]any)
			al := pl["artifactLocation"].(map[string]any)
			w.uri = al["uri"].(string)
			w.base, _ = al["uriBaseId"].(string)
			if reg, ok := pl["region"].(map[string]any); ok && reg["startLine"].(float64) < 1 {
				t.Errorf("%s: startLine %v", id, reg["startLine"])
			}
		}
		if fp := res["partialFingerprints"].(map[string]any)[fingerprintKey]; len(fp.(string)) != 32 {
			t.Errorf("%s: fingerprint %v", id, fp)
		}
		got = append(got, w)
	}
	want := []where{
		{"src/list.c", "SRCROOT", "error"},
		{"src/list.c", "SRCROOT", "warning"},
		{"src/table.cc", "SRCROOT", "error"},
		{"file:///usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30", "", "note"},
		{"src/odd%20dir%2Cv%251/args:x.c", "SRCROOT", "warning"},
		{"src/list.c", "SRCROOT", "error"},
		{"src/orphan.c", "SRCROOT", "error"},
		{"../sysdeps/odd.c", "", "warning"},
		{"build/worker", "SRCROOT", "error"},
	}
	for i := range want {
		if i < len(got) && got[i] != want[i] {
			t.Errorf("result %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestGitHubGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteGitHubAnnotations(&buf, sample(), root); err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "report.github.txt", buf.Bytes())

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 9 {
		t.Fatalf("%d lines, want 9", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "::error ") && !strings.HasPrefix(l, "::warning ") && !strings.HasPrefix(l, "::notice ") {
			t.Errorf("not a workflow command: %q", l)
		}
		if strings.Contains(l, "\r") {
			t.Errorf("raw CR in %q", l)
		}
	}
	if want := "::error file=src/list.c,line=12,title=definite leak%3A 64 bytes in 3 blocks::64 bytes (48 direct, 16 indirect) in 3 blocks are definitely lost in make_node (pid 100, server)%0A    #0 0x401136 in make_node /work/proj/src/list.c:12 (/work/proj/build/server)%0A    #1 0x401190 in make_list /work/proj/src/list.c:40 (/work/proj/build/server)%0A    #2 0x401300 in main /work/proj/src/main.c:30 (/work/proj/build/server)"; lines[0] != want {
		t.Errorf("line 0:\n%s\nwant:\n%s", lines[0], want)
	}
	if !strings.HasPrefix(lines[2], "::error file=src/table.cc,line=33,") {
		t.Errorf("possible leak not placed in the project: %q", lines[2])
	}
	if !strings.HasPrefix(lines[3], "::notice title=reachable leak%3A 72704 bytes in 1 block::") {
		t.Errorf("reachable leak: %q", lines[3])
	}
	if !strings.HasPrefix(lines[4], "::warning file=src/odd dir%2Cv%251/args%3Ax.c,line=7,title=unfreed leak%3A 10 bytes in 2 blocks::") {
		t.Errorf("escaped properties: %q", lines[4])
	}
}

func TestEscaping(t *testing.T) {
	in := "50% done\r\nnext: a,b"
	if got, want := escapeData(in), "50%25 done%0D%0Anext: a,b"; got != want {
		t.Errorf("escapeData = %q, want %q", got, want)
	}
	if got, want := escapeProperty(in), "50%25 done%0D%0Anext%3A a%2Cb"; got != want {
		t.Errorf("escapeProperty = %q, want %q", got, want)
	}
	// Escaping "%" first keeps an input that already looks escaped intact.
	if got, want := escapeProperty("%3A"), "%253A"; got != want {
		t.Errorf("escapeProperty(%%3A) = %q, want %q", got, want)
	}
}

func TestEmptyReport(t *testing.T) {
	for _, r := range []*report.Report{nil, {}} {
		var j, s, g bytes.Buffer
		if err := WriteJUnit(&j, r, "leaks"); err != nil {
			t.Fatal(err)
		}
		var doc junitSuites
		if err := xml.Unmarshal(j.Bytes(), &doc); err != nil || doc.Tests != 0 || len(doc.Suites) != 1 {
			t.Errorf("empty JUnit: %v %+v\n%s", err, doc, j.String())
		}
		if err := WriteSARIF(&s, r, "", ""); err != nil {
			t.Fatal(err)
		}
		var log sarifLog
		if err := json.Unmarshal(s.Bytes(), &log); err != nil || len(log.Runs) != 1 || log.Runs[0].Results == nil {
			t.Errorf("empty SARIF: %v\n%s", err, s.String())
		}
		if !strings.Contains(s.String(), `"results": []`) {
			t.Errorf("empty SARIF has no results array:\n%s", s.String())
		}
		if err := WriteGitHubAnnotations(&g, r, ""); err != nil || g.Len() != 0 {
			t.Errorf("empty annotations: %v %q", err, g.String())
		}
	}
}

func TestNoSourceRoot(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSARIF(&buf, sample(), "", ""); err != nil {
		t.Fatal(err)
	}
	var log sarifLog
	if err := json.Unmarshal(buf.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log.Runs[0].OriginalURIBaseIDs != nil {
		t.Error("originalUriBaseIds without a source root")
	}
	// Without a root the first frame with a file is used, even in a header.
	loc := log.Runs[0].Results[2].Locations[0].PhysicalLocation.ArtifactLocation
	if loc.URI != "file:///usr/include/c++/12/bits/vector.tcc" || loc.URIBaseID != "" {
		t.Errorf("location %+v", loc)
	}
	buf.Reset()
	if err := WriteGitHubAnnotations(&buf, sample(), ""); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "::error file=/work/proj/src/list.c,line=12,") {
		t.Errorf("annotation without root: %q", strings.SplitN(buf.String(), "\n", 2)[0])
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteErrors(t *testing.T) {
	if err := WriteJUnit(failWriter{}, sample(), "x"); err == nil {
		t.Error("JUnit: no error")
	}
	if err := WriteSARIF(failWriter{}, sample(), "", ""); err == nil {
		t.Error("SARIF: no error")
	}
	if err := WriteGitHubAnnotations(failWriter{}, sample(), ""); err == nil {
		t.Error("GitHub: no error")
	}
}
