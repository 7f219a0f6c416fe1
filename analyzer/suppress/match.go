package suppress

import (
	"path"
	"sync/atomic"

	"libleak/analyzer/report"
)

// supp is one suppression of any format.
type supp struct {
	name   string
	source string
	format string
	kinds  map[string]bool // nil: every kind

	lines []frameLine // valgrind

	templ string // lsan

	fun, obj, file string // libleak; "" when not given
	hasFun         bool
	hasObj         bool
	hasFile        bool
	depth          int // 0: the whole stack

	// Counters are atomic because Merge shares suppressions between Sets
	// that may be matched from different goroutines.
	sites         atomic.Int64
	blocks, bytes atomic.Uint64
}

type lineKind uint8

const (
	lineFun lineKind = iota
	lineObj
	lineSrc
	lineDots
)

// frameLine is one frame line of a valgrind block.
type frameLine struct {
	kind lineKind
	pat  string
	line int // src: only; 0 means any line
}

func (sp *supp) kindOK(kind string) bool {
	return sp.kinds == nil || sp.kinds[kind]
}

func (sp *supp) match(s *Set, l *report.Leak) bool {
	switch sp.format {
	case FormatValgrind:
		return sp.matchValgrind(s, l)
	case FormatLSan:
		return sp.matchLSan(l)
	default:
		return sp.matchLibleak(s, l)
	}
}

// unknownFunction tells a symbolizer's placeholder from a real name.
func unknownFunction(name string) bool {
	return name == "" || name == "??" || name == "???"
}

// Allocator names valgrind puts in the first frame of a leak's stack, by
// report.Leak.Family. Both mangled and demangled spellings are listed since
// either may appear in a suppression file; the 32-bit manglings (j for
// unsigned int) are included because valgrind files are shared across
// architectures.
var allocators = map[string][]string{
	"malloc": {"malloc", "calloc", "realloc", "reallocarray", "memalign",
		"posix_memalign", "aligned_alloc", "valloc", "pvalloc"},
	"new": {"_Znwm", "_Znwj", "_ZnwmRKSt9nothrow_t", "_ZnwjRKSt9nothrow_t",
		"_ZnwmSt11align_val_t", "_ZnwjSt11align_val_t",
		"_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnwjSt11align_val_tRKSt9nothrow_t",
		"operator new(unsigned long)", "operator new(unsigned int)",
		"operator new(unsigned long, std::nothrow_t const&)",
		"operator new(unsigned int, std::nothrow_t const&)",
		"operator new(unsigned long, std::align_val_t)",
		"operator new(unsigned int, std::align_val_t)",
		"operator new(unsigned long, std::align_val_t, std::nothrow_t const&)",
		"operator new(unsigned int, std::align_val_t, std::nothrow_t const&)"},
	"new[]": {"_Znam", "_Znaj", "_ZnamRKSt9nothrow_t", "_ZnajRKSt9nothrow_t",
		"_ZnamSt11align_val_t", "_ZnajSt11align_val_t",
		"_ZnamSt11align_val_tRKSt9nothrow_t", "_ZnajSt11align_val_tRKSt9nothrow_t",
		"operator new[](unsigned long)", "operator new[](unsigned int)",
		"operator new[](unsigned long, std::nothrow_t const&)",
		"operator new[](unsigned int, std::nothrow_t const&)",
		"operator new[](unsigned long, std::align_val_t)",
		"operator new[](unsigned int, std::align_val_t)",
		"operator new[](unsigned long, std::align_val_t, std::nothrow_t const&)",
		"operator new[](unsigned int, std::align_val_t, std::nothrow_t const&)"},
	"mmap": {"mmap", "mmap64", "mremap"},
}

// Where valgrind's replacement allocators live, for obj: lines that name
// them.
var allocatorObjects = []string{
	"/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so",
	"/usr/libexec/valgrind/vgpreload_memcheck-x86-linux.so",
	"/usr/libexec/valgrind/vgpreload_memcheck-arm64-linux.so",
	"/usr/lib/x86_64-linux-gnu/valgrind/vgpreload_memcheck-amd64-linux.so",
	"/usr/lib/valgrind/vgpreload_memcheck-amd64-linux.so",
}

// matchesAllocator tells whether a frame line can stand for the allocator
// frame valgrind would have shown for a leak of the given family.
func matchesAllocator(fl frameLine, family string) bool {
	switch fl.kind {
	case lineDots:
		return true
	case lineFun:
		names, ok := allocators[family]
		if !ok {
			for _, n := range allocators {
				names = append(names, n...)
			}
		}
		for _, n := range names {
			if funMatch(fl.pat, n) {
				return true
			}
		}
	case lineObj:
		for _, o := range allocatorObjects {
			if glob(fl.pat, o) {
				return true
			}
		}
	case lineSrc:
		return glob(fl.pat, "vg_replace_malloc.c")
	}
	return false
}

func (sp *supp) frameLineMatches(s *Set, fl frameLine, f *report.Frame) bool {
	switch fl.kind {
	case lineFun:
		name := f.Function
		if unknownFunction(name) {
			name = "???"
		}
		if funMatch(fl.pat, name) {
			return true
		}
		if s.RawName != nil {
			if raw := s.RawName(*f); raw != "" && raw != f.Function {
				return funMatch(fl.pat, raw)
			}
		}
		return false
	case lineObj:
		obj := f.Module
		if obj == "" {
			obj = "???"
		}
		return glob(fl.pat, obj)
	case lineSrc:
		if f.File == "" {
			return glob(fl.pat, "???") && fl.line == 0
		}
		return glob(fl.pat, path.Base(f.File)) && (fl.line == 0 || fl.line == f.Line)
	}
	return false
}

// matchValgrind matches the frame lines against a prefix of the stack,
// "..." standing for any number of frames, with valgrind's allocator frame
// in front when the first line asks for it (see the package comment).
func (sp *supp) matchValgrind(s *Set, l *report.Leak) bool {
	if len(sp.lines) == 0 {
		return false
	}
	pseudo := matchesAllocator(sp.lines[0], l.Family)
	off := 0
	if pseudo {
		off = 1
	}
	n := len(l.Frames) + off
	// failed[i*(n+1)+j] records that lines[i:] cannot match stack[j:], so
	// several "..." lines cost O(lines*frames) rather than exponential time.
	failed := make([]bool, (len(sp.lines)+1)*(n+1))
	var m func(i, j int) bool
	m = func(i, j int) bool {
		if i == len(sp.lines) {
			return true
		}
		if failed[i*(n+1)+j] {
			return false
		}
		fl := sp.lines[i]
		ok := false
		switch {
		case fl.kind == lineDots:
			for k := j; k <= n && !ok; k++ {
				ok = m(i+1, k)
			}
		case j == n:
		case pseudo && j == 0:
			ok = matchesAllocator(fl, l.Family) && m(i+1, j+1)
		default:
			ok = sp.frameLineMatches(s, fl, &l.Frames[j-off]) && m(i+1, j+1)
		}
		if !ok {
			failed[i*(n+1)+j] = true
		}
		return ok
	}
	return m(0, 0)
}

func (sp *supp) matchLSan(l *report.Leak) bool {
	for i := range l.Frames {
		f := &l.Frames[i]
		if !unknownFunction(f.Function) && lsanMatch(sp.templ, f.Function) {
			return true
		}
		if lsanMatch(sp.templ, f.Module) || lsanMatch(sp.templ, f.File) {
			return true
		}
	}
	return false
}

func (sp *supp) matchLibleak(s *Set, l *report.Leak) bool {
	frames := l.Frames
	if sp.depth > 0 && len(frames) > sp.depth {
		frames = frames[:sp.depth]
	}
	for i := range frames {
		f := &frames[i]
		if sp.hasFun && !sp.funOK(s, f) {
			continue
		}
		if sp.hasObj && !pathMatch(sp.obj, f.Module) {
			continue
		}
		if sp.hasFile && !pathMatch(sp.file, f.File) {
			continue
		}
		return true
	}
	return false
}

func (sp *supp) funOK(s *Set, f *report.Frame) bool {
	name := f.Function
	if unknownFunction(name) {
		name = ""
	}
	if funMatch(sp.fun, name) {
		return true
	}
	if s.RawName != nil {
		if raw := s.RawName(*f); raw != "" && raw != f.Function {
			return funMatch(sp.fun, raw)
		}
	}
	return false
}
