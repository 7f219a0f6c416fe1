package symbolize

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"libleak/analyzer/event"
	"libleak/analyzer/report"
)

// The test programs are built once per test run, into a directory removed
// at the end.
var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureErr  error
	fixtureC    *runResult
	fixtureC4   *runResult // prog built with DWARF 4
	fixtureCxx  *runResult
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// runResult is what a test program printed: named addresses and its
// module map.
type runResult struct {
	exe  string
	addr map[string]uint64
	mods []event.Module
}

func (r *runResult) module(t *testing.T, path string) event.Module {
	t.Helper()
	for _, m := range r.mods {
		if m.Path == path {
			return m
		}
	}
	t.Fatalf("no module %s in %v", path, r.mods)
	return event.Module{}
}

// withModule returns the module map with the module at path replaced.
func (r *runResult) withModule(path string, f func(m *event.Module)) []event.Module {
	mods := append([]event.Module(nil), r.mods...)
	for i := range mods {
		if mods[i].Path == path {
			mods[i].Segments = append([]event.Segment(nil), mods[i].Segments...)
			f(&mods[i])
		}
	}
	return mods
}

const cflags = "-g -O2 -fno-optimize-sibling-calls"

func testdata(t testing.TB, name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func command(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func fixtures(t *testing.T) (c, cxx *runResult, dir string) {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtureDir, fixtureErr = os.MkdirTemp("", "symbolize-test")
		if fixtureErr != nil {
			return
		}
		d := fixtureDir
		steps := [][]string{
			append([]string{"gcc"}, append(strings.Fields(cflags), "-shared", "-fPIC", "-o", d+"/libshlib.so", testdata(t, "shlib.c"))...),
			append([]string{"gcc"}, append(strings.Fields(cflags), "-shared", "-fPIC", "-DLIB_ENTRY=lib_entrz", "-o", d+"/libshlib2.so", testdata(t, "shlib.c"))...),
			append([]string{"gcc"}, append(strings.Fields(cflags), "-o", d+"/prog", testdata(t, "prog.c"), "-L"+d, "-lshlib", "-Wl,-rpath,"+d)...),
			append([]string{"gcc"}, append(strings.Fields(cflags), "-gdwarf-4", "-o", d+"/prog4", testdata(t, "prog.c"), "-L"+d, "-lshlib", "-Wl,-rpath,"+d)...),
			append([]string{"g++"}, append(strings.Fields(cflags), "-o", d+"/cxx", testdata(t, "cxx.cc"))...),
		}
		for _, s := range steps {
			if fixtureErr = command(s[0], s[1:]...); fixtureErr != nil {
				return
			}
		}
		if fixtureC, fixtureErr = run(d + "/prog"); fixtureErr != nil {
			return
		}
		if fixtureC4, fixtureErr = run(d + "/prog4"); fixtureErr != nil {
			return
		}
		fixtureCxx, fixtureErr = run(d + "/cxx")
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureC, fixtureCxx, fixtureDir
}

// run runs a test program and parses its output. Build IDs come from
// readelf, independently of the code under test.
func run(exe string) (*runResult, error) {
	out, err := exec.Command(exe).Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", exe, err)
	}
	r := &runResult{exe: exe, addr: map[string]uint64{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		hexv := func(s string) uint64 {
			v, perr := strconv.ParseUint(s, 16, 64)
			if perr != nil && err == nil {
				err = fmt.Errorf("%s: bad line %q", exe, sc.Text())
			}
			return v
		}
		switch {
		case len(f) == 3 && (f[0] == "ra" || f[0] == "fn"):
			r.addr[f[0]+" "+f[1]] = hexv(f[2])
		case len(f) == 3 && f[0] == "module":
			m := event.Module{Path: f[2], Base: hexv(f[1])}
			if !pseudoPath(m.Path) {
				if m.BuildID, err = readelfBuildID(m.Path); err != nil {
					return nil, err
				}
			}
			r.mods = append(r.mods, m)
		case len(f) == 4 && f[0] == "seg" && len(r.mods) > 0:
			m := &r.mods[len(r.mods)-1]
			m.Segments = append(m.Segments, event.Segment{Start: hexv(f[1]), End: hexv(f[2]),
				Exec: f[3][0] == 'x', Writable: f[3][1] == 'w'})
		default:
			return nil, fmt.Errorf("%s: unexpected line %q", exe, sc.Text())
		}
	}
	return r, err
}

func readelfBuildID(path string) ([]byte, error) {
	out, err := exec.Command("readelf", "-n", path).Output()
	if err != nil {
		return nil, fmt.Errorf("readelf -n %s: %v", path, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if _, v, ok := strings.Cut(l, "Build ID:"); ok {
			return hex.DecodeString(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("%s has no build ID", path)
}

// line finds the line of the LINE:name marker in a test source.
func line(t *testing.T, src, name string) int {
	t.Helper()
	b, err := os.ReadFile(testdata(t, src))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l+" ", "LINE:"+name+" ") {
			return i + 1
		}
	}
	t.Fatalf("no marker %s in %s", name, src)
	return 0
}

func checkFrames(t *testing.T, what string, got, want []report.Frame) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, fmtFrames(got), fmtFrames(want))
	}
}

func fmtFrames(fs []report.Frame) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\n  %q %s:%d module=%q %#x inlined=%v", f.Function, f.File, f.Line, f.Module, f.Address, f.Inlined)
	}
	return b.String()
}

func noWarnings(t *testing.T, s *Symbolizer) {
	t.Helper()
	if w := s.Warnings(); len(w) != 0 {
		t.Errorf("unexpected warnings: %q", w)
	}
}

// entryFrames is what the return address taken in leaf() must give: two
// inlined frames and entry itself.
func entryFrames(t *testing.T, module string, pc uint64) []report.Frame {
	src := testdata(t, "prog.c")
	return []report.Frame{
		{Function: "inner", File: src, Line: line(t, "prog.c", "inner-call"), Module: module, Address: pc, Inlined: true},
		{Function: "outer", File: src, Line: line(t, "prog.c", "outer-call"), Module: module, Address: pc, Inlined: true},
		{Function: "entry", File: src, Line: line(t, "prog.c", "entry-call"), Module: module, Address: pc},
	}
}

func unknown(module string, pc uint64) []report.Frame {
	return []report.Frame{{Function: "??", Module: module, Address: pc}}
}

func TestInlinedFrames(t *testing.T) {
	c5, _, _ := fixtures(t)
	for _, c := range []*runResult{c5, fixtureC4} {
		t.Run(filepath.Base(c.exe), func(t *testing.T) {
			s := New(Options{})
			p := s.Process(c.mods)
			ra := c.addr["ra entry"]
			checkFrames(t, "return address in inlined code", p.Frames(ra, true), entryFrames(t, c.exe, ra))

			fn := c.addr["fn entry"]
			checkFrames(t, "function entry", p.Frames(fn, false), []report.Frame{
				{Function: "entry", File: testdata(t, "prog.c"), Line: line(t, "prog.c", "entry-decl"), Module: c.exe, Address: fn},
			})
			// As a return address, a function's first byte belongs to the
			// code before it.
			for _, f := range p.Frames(fn, true) {
				if f.Function == "entry" {
					t.Errorf("entry address taken as return address still resolved to entry: %s", fmtFrames(p.Frames(fn, true)))
				}
			}
			noWarnings(t, s)
		})
	}
}

func TestSharedLibraryLoadBias(t *testing.T) {
	c, _, dir := fixtures(t)
	lib := filepath.Join(dir, "libshlib.so")
	if m := c.module(t, lib); m.Base == 0 {
		t.Fatalf("library loaded without bias: %+v", m)
	}
	s := New(Options{})
	p := s.Process(c.mods)
	ra := c.addr["ra lib"]
	want := []report.Frame{{Function: "lib_entry", File: testdata(t, "shlib.c"), Line: line(t, "shlib.c", "lib-call"), Module: lib, Address: ra}}
	checkFrames(t, "library frame", p.Frames(ra, true), want)

	stack := p.Stack([]uint64{c.addr["ra entry"], ra})
	checkFrames(t, "stack", stack, append(entryFrames(t, c.exe, c.addr["ra entry"]), want...))
	noWarnings(t, s)
}

func TestCxxDemangle(t *testing.T) {
	_, cxx, dir := fixtures(t)
	ra := cxx.addr["ra make"]
	src := testdata(t, "cxx.cc")
	full := func(helper, make string) []report.Frame {
		return []report.Frame{
			{Function: helper, File: src, Line: line(t, "cxx.cc", "helper-call"), Module: cxx.exe, Address: ra, Inlined: true},
			{Function: make, File: src, Line: line(t, "cxx.cc", "make-call"), Module: cxx.exe, Address: ra},
		}
	}
	s := New(Options{Demangle: true})
	checkFrames(t, "demangled", s.Process(cxx.mods).Frames(ra, true), full("ns::Widget::helper()", "ns::Widget::make(int)"))
	s = New(Options{})
	checkFrames(t, "raw", s.Process(cxx.mods).Frames(ra, true), full("_ZN2ns6Widget6helperEv", "_ZN2ns6Widget4makeEi"))

	// Without DWARF the name comes from the symbol table.
	nodebug := filepath.Join(dir, "cxx-nodebug")
	if err := command("strip", "--strip-debug", "-o", nodebug, cxx.exe); err != nil {
		t.Fatal(err)
	}
	mods := cxx.withModule(cxx.exe, func(m *event.Module) { m.Path = nodebug })
	for _, c := range []struct {
		demangle bool
		name     string
	}{{true, "ns::Widget::make(int)"}, {false, "_ZN2ns6Widget4makeEi"}} {
		s := New(Options{Demangle: c.demangle})
		checkFrames(t, fmt.Sprintf("symtab, demangle=%v", c.demangle), s.Process(mods).Frames(ra, true),
			[]report.Frame{{Function: c.name, Module: nodebug, Address: ra}})
		noWarnings(t, s)
	}
}

// stripped makes a copy of the test program without any symbols and a
// debug file for it, and returns both paths.
func stripped(t *testing.T, exe, dir string, link bool) (bin, dbg string) {
	t.Helper()
	bin = filepath.Join(dir, "prog")
	dbg = filepath.Join(dir, "prog.debug")
	cmds := [][]string{
		{"objcopy", "--only-keep-debug", exe, dbg},
		{"strip", "--strip-all", "-o", bin, exe},
	}
	if link {
		cmds = append(cmds, []string{"objcopy", "--add-gnu-debuglink=" + dbg, bin})
	}
	for _, c := range cmds {
		if err := command(c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	return bin, dbg
}

func TestDebugLink(t *testing.T) {
	c, _, _ := fixtures(t)
	ra := c.addr["ra entry"]
	for _, where := range []string{"same dir", ".debug dir", "debug root"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			bin, dbg := stripped(t, c.exe, dir, true)
			var opt Options
			switch where {
			case ".debug dir":
				move(t, dbg, filepath.Join(dir, ".debug", "prog.debug"))
			case "debug root":
				root := t.TempDir()
				move(t, dbg, filepath.Join(root, dir, "prog.debug"))
				opt.DebugDirs = []string{root}
			}
			mods := c.withModule(c.exe, func(m *event.Module) { m.Path = bin })
			s := New(opt)
			checkFrames(t, "frames", s.Process(mods).Frames(ra, true), entryFrames(t, bin, ra))
			noWarnings(t, s)
		})
	}
	t.Run("bad CRC", func(t *testing.T) {
		dir := t.TempDir()
		bin, dbg := stripped(t, c.exe, dir, true)
		f, err := os.OpenFile(dbg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{0})
		f.Close()
		mods := c.withModule(c.exe, func(m *event.Module) { m.Path = bin })
		s := New(Options{})
		checkFrames(t, "frames", s.Process(mods).Frames(ra, true), unknown(bin, ra))
		w := s.Warnings()
		if len(w) != 1 || !strings.Contains(w[0], bin+": ") || !strings.Contains(w[0], "does not match debug link CRC") {
			t.Errorf("warnings %q, want one about the CRC of %s", w, dbg)
		}
	})
}

func move(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func buildIDPath(root string, id []byte) string {
	h := hex.EncodeToString(id)
	return filepath.Join(root, ".build-id", h[:2], h[2:]+".debug")
}

func TestBuildIDDir(t *testing.T) {
	c, _, _ := fixtures(t)
	ra := c.addr["ra entry"]
	id := c.module(t, c.exe).BuildID
	dir := t.TempDir()
	bin, dbg := stripped(t, c.exe, dir, false)
	mods := c.withModule(c.exe, func(m *event.Module) { m.Path = bin })

	// Stripped and no debug file anywhere: nothing to name, and nothing
	// wrong either.
	s := New(Options{DebugDirs: []string{t.TempDir()}})
	checkFrames(t, "no debug file", s.Process(mods).Frames(ra, true), unknown(bin, ra))
	noWarnings(t, s)

	root := t.TempDir()
	move(t, dbg, buildIDPath(root, id))
	s = New(Options{DebugDirs: []string{root}})
	checkFrames(t, "debug file by build ID", s.Process(mods).Frames(ra, true), entryFrames(t, bin, ra))
	noWarnings(t, s)
}

func TestSysroot(t *testing.T) {
	c, _, _ := fixtures(t)
	ra := c.addr["ra entry"]
	id := c.module(t, c.exe).BuildID
	sysroot := t.TempDir()
	const target = "/opt/elsewhere/bin/prog"
	bin, dbg := stripped(t, c.exe, t.TempDir(), false)
	move(t, bin, filepath.Join(sysroot, target))
	move(t, dbg, buildIDPath(filepath.Join(sysroot, "usr/lib/debug"), id))
	mods := c.withModule(c.exe, func(m *event.Module) { m.Path = target })

	s := New(Options{Sysroot: sysroot})
	checkFrames(t, "under sysroot", s.Process(mods).Frames(ra, true), entryFrames(t, target, ra))
	noWarnings(t, s)

	// The module file itself may be missing when the debug file is there.
	os.Remove(filepath.Join(sysroot, target))
	s = New(Options{Sysroot: sysroot})
	checkFrames(t, "debug file only", s.Process(mods).Frames(ra, true), entryFrames(t, target, ra))
	noWarnings(t, s)

	s = New(Options{})
	checkFrames(t, "no sysroot", s.Process(mods).Frames(ra, true), unknown(target, ra))
	if w := s.Warnings(); len(w) != 1 || !strings.Contains(w[0], target+" not found") {
		t.Errorf("warnings %q, want one saying %s is not found", w, target)
	}
}

func TestBuildIDMismatch(t *testing.T) {
	c, _, dir := fixtures(t)
	ra, fn := c.addr["ra entry"], c.addr["fn entry"]
	mods := c.withModule(c.exe, func(m *event.Module) {
		m.BuildID = append([]byte(nil), m.BuildID...)
		m.BuildID[0] ^= 0xff
	})
	s := New(Options{})
	p := s.Process(mods)
	checkFrames(t, "return address", p.Frames(ra, true), unknown(c.exe, ra))
	checkFrames(t, "function", p.Frames(fn, false), unknown(c.exe, fn))
	// The library's build ID matches: it is still named.
	if f := p.Frames(c.addr["ra lib"], true); len(f) != 1 || f[0].Function != "lib_entry" {
		t.Errorf("library frames %s, want lib_entry", fmtFrames(f))
	}
	// A second process with the same module adds no warning.
	s.Process(mods).Frames(ra, true)
	w := s.Warnings()
	if len(w) != 1 || !strings.HasPrefix(w[0], c.exe+": build ID mismatch") {
		t.Errorf("warnings %q, want one build ID mismatch for %s", w, c.exe)
	}

	// The file at the path was rebuilt, but the debug file of the traced
	// build is available by build ID: frames come from it, with a warning.
	rebuilt := filepath.Join(t.TempDir(), "prog")
	if err := command("gcc", append(strings.Fields(cflags), "-DREBUILT", "-o", rebuilt, testdata(t, "prog.c"), "-L"+dir, "-lshlib")...); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := c.module(t, c.exe).BuildID
	if err := command("objcopy", "--only-keep-debug", c.exe, buildIDPath(mkdir(t, root, id), id)); err != nil {
		t.Fatal(err)
	}
	mods = c.withModule(c.exe, func(m *event.Module) { m.Path = rebuilt })
	s = New(Options{DebugDirs: []string{root}})
	checkFrames(t, "rebuilt, debug file by build ID", s.Process(mods).Frames(ra, true), entryFrames(t, rebuilt, ra))
	w = s.Warnings()
	if len(w) != 1 || !strings.HasPrefix(w[0], rebuilt+": build ID mismatch") || !strings.Contains(w[0], "using debug file "+buildIDPath(root, id)) {
		t.Errorf("warnings %q, want a mismatch for %s naming the debug file used", w, rebuilt)
	}
}

func mkdir(t *testing.T, root string, id []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(buildIDPath(root, id)), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// Two look-alike libraries loaded one after the other at the same address:
// which one an address belongs to depends on when it was seen.
func TestUnloadedModules(t *testing.T) {
	_, _, dir := fixtures(t)
	libA, libB := filepath.Join(dir, "libshlib.so"), filepath.Join(dir, "libshlib2.so")
	symA, segs := fileFacts(t, libA, "lib_entry")
	symB, _ := fileFacts(t, libB, "lib_entrz")
	if symA != symB {
		t.Fatalf("look-alike libraries differ: lib_entry at %#x, lib_entrz at %#x", symA, symB)
	}
	const base = 0x7f0000000000
	mod := func(path string, time, unloaded uint64) event.Module {
		m := event.Module{Path: path, Base: base, Time: time, Unloaded: unloaded}
		for _, s := range segs {
			m.Segments = append(m.Segments, event.Segment{Start: s.Start + base, End: s.End + base, Exec: s.Exec})
		}
		var err error
		if m.BuildID, err = readelfBuildID(path); err != nil {
			t.Fatal(err)
		}
		return m
	}
	src := testdata(t, "shlib.c")
	declLine := line(t, "shlib.c", "lib-decl")
	want := func(fn, module string) []report.Frame {
		return []report.Frame{{Function: fn, File: src, Line: declLine, Module: module, Address: base + symA}}
	}
	s := New(Options{})
	for _, order := range [][]event.Module{
		{mod(libA, 10, 20), mod(libB, 30, 0)},
		{mod(libB, 30, 0), mod(libA, 10, 20)},
	} {
		p := s.Process(order)
		checkFrames(t, "seen while A was loaded", p.FramesAt(base+symA, false, 15), want("lib_entry", libA))
		checkFrames(t, "seen at A's unload", p.FramesAt(base+symA, false, 20), want("lib_entry", libA))
		checkFrames(t, "seen while B was loaded", p.FramesAt(base+symA, false, 35), want("lib_entrz", libB))
		checkFrames(t, "seen when neither was loaded", p.FramesAt(base+symA, false, 25), want("lib_entrz", libB))
		checkFrames(t, "time unknown", p.Frames(base+symA, false), want("lib_entrz", libB))
		if got := p.StackAt([]uint64{base + symA + 1}, 15); len(got) != 1 || got[0].Function != "lib_entry" {
			t.Errorf("StackAt: %s, want lib_entry", fmtFrames(got))
		}
	}
	noWarnings(t, s)
}

// fileFacts returns the address of a function symbol in an ELF file and its
// PT_LOAD segments, read with debug/elf.
func fileFacts(t *testing.T, path, fn string) (uint64, []event.Segment) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var segs []event.Segment
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			segs = append(segs, event.Segment{Start: p.Vaddr, End: p.Vaddr + p.Memsz, Exec: p.Flags&elf.PF_X != 0})
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == fn {
			return s.Value, segs
		}
	}
	t.Fatalf("%s: no symbol %s", path, fn)
	return 0, nil
}

func TestVdsoAndUnknownAddresses(t *testing.T) {
	c, _, _ := fixtures(t)
	s := New(Options{})
	p := s.Process(c.mods)
	vdso := c.module(t, "[vdso]")
	pc := vdso.Segments[0].Start + 0x10
	checkFrames(t, "vdso", p.Frames(pc, true), unknown("[vdso]", pc))
	checkFrames(t, "unmapped", p.Frames(0x10, true), unknown("", 0x10))
	checkFrames(t, "zero", p.Frames(0, true), unknown("", 0))
	noWarnings(t, s)
}

func TestModuleWithoutSegments(t *testing.T) {
	c, _, _ := fixtures(t)
	ra := c.addr["ra entry"]
	mods := c.withModule(c.exe, func(m *event.Module) { m.Segments = nil })
	s := New(Options{})
	checkFrames(t, "frames", s.Process(mods).Frames(ra, true), entryFrames(t, c.exe, ra))
	noWarnings(t, s)
}

func TestObjectsShared(t *testing.T) {
	c, cxx, _ := fixtures(t)
	s := New(Options{})
	p1, p2, p3 := s.Process(c.mods), s.Process(c.mods), s.Process(cxx.mods)
	objs := map[string]*object{}
	for _, p := range []*Process{p1, p2, p3} {
		for _, m := range p.mods {
			if o, ok := objs[m.Path]; ok && o != m.obj {
				t.Errorf("%s: two objects for one file", m.Path)
			}
			objs[m.Path] = m.obj
		}
	}
	other := c.withModule(c.exe, func(m *event.Module) { m.BuildID = []byte{1, 2, 3} })
	for _, m := range s.Process(other).mods {
		if same := m.obj == objs[m.Path]; same != (m.Path != c.exe) {
			t.Errorf("%s: shared object %v with another build ID", m.Path, same)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c, cxx, _ := fixtures(t)
	s := New(Options{Demangle: true})
	pcs := []uint64{c.addr["ra entry"], c.addr["ra lib"], c.addr["fn entry"]}
	want := New(Options{Demangle: true}).Process(c.mods).Stack(pcs)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Process(cxx.mods).Stack([]uint64{cxx.addr["ra make"]})
			if got := s.Process(c.mods).Stack(pcs); !reflect.DeepEqual(got, want) {
				errs <- fmtFrames(got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent result differs: %s\nwant %s", e, fmtFrames(want))
	}
}

func TestCorruptFiles(t *testing.T) {
	c, _, _ := fixtures(t)
	ra := c.addr["ra entry"]
	dir := t.TempDir()

	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("not an ELF file "), 100), 0o644)
	mods := c.withModule(c.exe, func(m *event.Module) { m.Path = garbage })
	s := New(Options{})
	checkFrames(t, "not ELF", s.Process(mods).Frames(ra, true), unknown(garbage, ra))
	if w := s.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], garbage+": cannot read") {
		t.Errorf("warnings %q, want one about reading %s", w, garbage)
	}

	// DWARF that cannot be parsed leaves the symbol table.
	bad := filepath.Join(dir, "bad-dwarf")
	data, err := os.ReadFile(c.exe)
	if err != nil {
		t.Fatal(err)
	}
	sec := section(t, c.exe, ".debug_info")
	copy(data[sec.Offset:sec.Offset+sec.FileSize], bytes.Repeat([]byte{0xff}, int(sec.FileSize)))
	os.WriteFile(bad, data, 0o755)
	mods = c.withModule(c.exe, func(m *event.Module) { m.Path = bad })
	s = New(Options{})
	checkFrames(t, "bad DWARF", s.Process(mods).Frames(ra, true), []report.Frame{{Function: "entry", Module: bad, Address: ra}})
	if w := s.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], bad+": unreadable DWARF") {
		t.Errorf("warnings %q, want one about the DWARF of %s", w, bad)
	}

	// Random damage to the debug sections never panics or hangs, and
	// every frame keeps its module and address.
	orig := mustRead(t, c.exe)
	rng := rand.New(rand.NewSource(1))
	var secs []*elf.Section
	for _, n := range []string{".debug_info", ".debug_line", ".debug_abbrev", ".debug_rnglists", ".debug_str"} {
		if s := section(t, c.exe, n); s.FileSize > 0 {
			secs = append(secs, s)
		}
	}
	for i := 0; i < 40; i++ {
		d := append([]byte(nil), orig...)
		for j := 0; j < 1+rng.Intn(8); j++ {
			sec := secs[rng.Intn(len(secs))]
			d[sec.Offset+uint64(rng.Int63n(int64(sec.FileSize)))] = byte(rng.Intn(256))
		}
		path := filepath.Join(dir, fmt.Sprintf("damaged%d", i))
		os.WriteFile(path, d, 0o755)
		mods := c.withModule(c.exe, func(m *event.Module) { m.Path = path })
		for _, f := range New(Options{Demangle: true}).Process(mods).Stack([]uint64{ra, c.addr["fn entry"]}) {
			if f.Module != path || (f.Address != ra && f.Address != c.addr["fn entry"]) || f.Function == "" {
				t.Fatalf("damaged file %d: bad frame %s", i, fmtFrames([]report.Frame{f}))
			}
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func section(t *testing.T, path, name string) *elf.Section {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(name)
	if s == nil {
		return &elf.Section{}
	}
	if s.Flags&elf.SHF_COMPRESSED != 0 {
		t.Fatalf("%s: %s is compressed", path, name)
	}
	return s
}

// Debug sections compressed with zlib, which the symbolizer inflates
// itself, name frames as the uncompressed ones do.
func TestCompressedDebugSections(t *testing.T) {
	c, _, _ := fixtures(t)
	z := filepath.Join(t.TempDir(), "compressed")
	if out, err := exec.Command("objcopy", "--compress-debug-sections=zlib", c.exe, z).CombinedOutput(); err != nil {
		t.Skipf("objcopy: %v: %s", err, out)
	}
	f, err := elf.Open(z)
	if err != nil {
		t.Fatal(err)
	}
	info := f.Section(".debug_info")
	f.Close()
	if info == nil || info.Flags&elf.SHF_COMPRESSED == 0 {
		t.Skip("objcopy did not compress .debug_info")
	}
	pcs := []uint64{c.addr["ra entry"], c.addr["fn entry"], c.addr["ra lib"]}
	want := New(Options{}).Process(c.mods).Stack(pcs)
	got := New(Options{}).Process(c.withModule(c.exe, func(m *event.Module) { m.Path = z })).Stack(pcs)
	for i := range got {
		if got[i].Module == z {
			got[i].Module = c.exe
		}
	}
	if !reflect.DeepEqual(got, want) || len(want) == 0 || want[0].Line == 0 {
		t.Errorf("compressed: %s\nwant %s", fmtFrames(got), fmtFrames(want))
	}
}
