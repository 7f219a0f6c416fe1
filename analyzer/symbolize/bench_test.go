package symbolize

import (
	"debug/elf"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libleak/analyzer/event"
)

// Large objects to time symbolization on. LIBLEAK_SYMBOLIZE_BENCH adds
// more, separated by spaces, each PATH or PATH=DEBUGROOT.
func benchObjects() []string {
	objs := []string{"/usr/bin/gdb", "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1"}
	return append(objs, strings.Fields(os.Getenv("LIBLEAK_SYMBOLIZE_BENCH"))...)
}

// benchAddrs picks n addresses inside the object's functions, as return
// addresses would be, at load bias base.
func benchAddrs(b *testing.B, path string, base uint64, n int) ([]uint64, event.Module) {
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

// BenchmarkLargeObject/cold times a fresh symbolizer naming 1000 addresses
// (opening and indexing included); /warm times one new address at a time
// once the object is open and most of its units are indexed.
func BenchmarkLargeObject(b *testing.B) {
	for _, spec := range benchObjects() {
		path, root, _ := strings.Cut(spec, "=")
		opt := Options{Demangle: true}
		if root != "" {
			opt.DebugDirs = []string{root}
		}
		b.Run(filepath.Base(path)+"/cold", func(b *testing.B) {
			addrs, m := benchAddrs(b, path, 0x10000000, 1000)
			for i := 0; i < b.N; i++ {
				p := New(opt).Process([]event.Module{m})
				for _, a := range addrs {
					p.Frames(a, true)
				}
			}
		})
		b.Run(filepath.Base(path)+"/warm", func(b *testing.B) {
			const half = 50000
			addrs, m := benchAddrs(b, path, 0x10000000, 2*half)
			p := New(opt).Process([]event.Module{m})
			for _, a := range addrs[:half] {
				p.Frames(a, true)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.Frames(addrs[half+i%half], true)
			}
		})
	}
}
