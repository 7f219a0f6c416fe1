package symbolize

import (
	"debug/elf"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	"libleak/analyzer/event"
)

func TestZZCompare(t *testing.T) {
	spec := os.Getenv("CMP")
	if spec == "" {
		t.Skip()
	}
	path, root, _ := strings.Cut(spec, "=")
	a2l, _, _ := strings.Cut(os.Getenv("A2L"), " ")
	b := &testing.B{}
	_ = b
	addrs, m := benchAddrsT(t, path, 0, 300)
	opt := Options{}
	if root != "" {
		opt.DebugDirs = []string{root}
	}
	s := New(opt)
	p := s.Process([]event.Module{m})
	args := []string{"-f", "-i", "-e", a2l}
	for _, a := range addrs {
		args = append(args, fmt.Sprintf("%#x", a-1))
	}
	out, err := exec.Command("addr2line", args...).Output()
	if err != nil {
		t.Fatal(err)
	}
	_ = out
	// addr2line output is not split per address; run per address instead.
	bad := 0
	for _, a := range addrs {
		o, _ := exec.Command("addr2line", "-f", "-i", "-e", a2l, fmt.Sprintf("%#x", a-1)).Output()
		ls := strings.Split(strings.TrimSpace(string(o)), "\n")
		var want []string
		for i := 0; i+1 < len(ls); i += 2 {
			fl := ls[i+1]
			if j := strings.Index(fl, " (discriminator"); j >= 0 {
				fl = fl[:j]
			}
			want = append(want, ls[i]+" "+base(fl))
		}
		var got []string
		for _, f := range p.Frames(a, true) {
			fl := fmt.Sprintf("%s:%d", f.File, f.Line)
			if f.File == "" {
				fl = "??:0"
			}
			got = append(got, f.Function+" "+base(fl))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			bad++
			if bad < 15 {
				t.Logf("%#x\n got %q\nwant %q", a, got, want)
			}
		}
	}
	t.Logf("%d/%d differ; warnings %q", bad, len(addrs), s.Warnings())
}
func benchAddrsT(b *testing.T, path string, base uint64, n int) ([]uint64, event.Module) {
	f, err := elf.Open(path)
	if err != nil {
		b.Skip(err)
	}
	defer f.Close()
	m := event.Module{Path: path, Base: base, BuildID: buildID(f)}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			m.Segments = append(m.Segments, event.Segment{Start: p.Vaddr + base, End: p.Vaddr + p.Memsz + base, Exec: p.Flags&elf.PF_X != 0})
		}
	}
	syms, _ := f.Symbols()
	if len(syms) == 0 {
		syms, _ = f.DynamicSymbols()
	}
	var funcs []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 1 {
			funcs = append(funcs, s)
		}
	}
	if len(funcs) == 0 {
		b.Skipf("%s: no function symbols", path)
	}
	rng := rand.New(rand.NewSource(1))
	addrs := make([]uint64, n)
	for i := range addrs {
		s := funcs[rng.Intn(len(funcs))]
		addrs[i] = base + s.Value + 1 + uint64(rng.Int63n(int64(s.Size-1)))
	}
	return addrs, m
}

func base(s string) string {
	if i := strings.LastIndex(s, "/"); i >= 0 {
		return s[i+1:]
	}
	return s
}
