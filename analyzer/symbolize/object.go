package symbolize

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/ianlancetaylor/demangle"

	"libleak/analyzer/event"
)

// object is one ELF file as recorded (path and build ID), with what was
// found for it on this machine. It is loaded on first use.
type object struct {
	s       *Symbolizer
	path    string
	buildID []byte

	once  sync.Once
	syms  []symbol
	symIx intervals
	dw    *dwarfInfo
	loads []event.Segment // PT_LOAD headers at file addresses

	mu     sync.Mutex
	cache  map[uint64][]frame
	names  map[string]string // raw name → shown name
	warned bool
}

// frame is a symbolized location without the per-process parts.
type frame struct {
	fn, file string
	line     int
	inlined  bool
}

type symbol struct {
	lo, hi uint64
	name   string
}

var unknownFrames = []frame{{fn: Unknown}}

// lookup names the code at file address addr.
func (o *object) lookup(addr uint64) []frame {
	o.once.Do(o.load)
	o.mu.Lock()
	defer o.mu.Unlock()
	if fs, ok := o.cache[addr]; ok {
		return fs
	}
	fs := o.resolve(addr)
	if o.cache == nil {
		o.cache = map[uint64][]frame{}
	}
	o.cache[addr] = fs
	return fs
}

// resolve runs with o.mu held. Debug information is untrusted input: a
// panic in the DWARF reader becomes a warning and an unnamed frame.
func (o *object) resolve(addr uint64) (fs []frame) {
	defer func() {
		if r := recover(); r != nil {
			o.warnLocked(fmt.Sprintf("corrupt debug information at %#x: %v", addr, r))
			fs = unknownFrames
		}
	}()
	sym := ""
	if i := o.symIx.find(addr); i >= 0 {
		sym = o.syms[i].name
	}
	if o.dw != nil {
		chain, file, line, err := o.dw.locate(addr)
		if err != nil {
			o.warnLocked(err.Error())
		}
		if file != "" || len(chain) > 0 {
			if len(chain) == 0 {
				return []frame{{fn: o.name(sym), file: file, line: line}}
			}
			fs = make([]frame, 0, len(chain))
			for i := len(chain) - 1; i >= 0; i-- {
				n := chain[i]
				// The outermost function is named by the symbol table when
				// it can be, as valgrind does: that picks the public alias
				// (malloc, not __libc_malloc) and names split or cloned
				// code (foo.cold, foo.constprop.0) as the code it is.
				name := sym
				if i > 0 || name == "" {
					name = o.dw.funcName(n.die)
				}
				fs = append(fs, frame{fn: o.name(name), file: file, line: line, inlined: i > 0})
				file, line = o.dw.fileName(n.unit, n.callFile), n.callLine
			}
			return fs
		}
	}
	if sym == "" {
		return unknownFrames
	}
	return []frame{{fn: o.name(sym)}}
}

// name is how a raw symbol name is shown.
func (o *object) name(raw string) string {
	if raw == "" {
		return Unknown
	}
	if !o.s.opt.Demangle || !(strings.HasPrefix(raw, "_Z") || strings.HasPrefix(raw, "_R")) {
		return raw
	}
	if n, ok := o.names[raw]; ok {
		return n
	}
	if o.names == nil {
		o.names = map[string]string{}
	}
	n := demangle.Filter(raw)
	o.names[raw] = n
	return n
}

// warnLocked records the object's warning, at most one per object so a
// damaged file cannot flood the report.
func (o *object) warnLocked(msg string) {
	if o.warned {
		return
	}
	o.warned = true
	o.s.warn(o.path + ": " + msg)
}

// segments returns the object's loadable segments moved by base, for
// modules recorded without them.
func (o *object) segments(base uint64) []event.Segment {
	o.once.Do(o.load)
	segs := make([]event.Segment, len(o.loads))
	for i, l := range o.loads {
		segs[i] = event.Segment{Start: l.Start + base, End: l.End + base, Exec: l.Exec, Writable: l.Writable}
	}
	return segs
}

// load finds the object's file and debug file and reads their symbols and
// debug information. What goes wrong is gathered into the object's one
// warning.
func (o *object) load() {
	var notes []string
	defer func() {
		if r := recover(); r != nil {
			o.syms, o.symIx, o.dw = nil, intervals{}, nil
			notes = append(notes, fmt.Sprintf("corrupt ELF file: %v", r))
		}
		if len(notes) > 0 {
			o.mu.Lock()
			o.warnLocked(strings.Join(notes, "; "))
			o.mu.Unlock()
		}
	}()

	host := o.s.hostPath(o.path)
	var mainFile *elf.File
	var mainID []byte
	missing, mismatch := false, false
	if f, err := elf.Open(host); err != nil {
		missing = errors.Is(err, fs.ErrNotExist)
		if missing {
			notes = append(notes, fmt.Sprintf("%s not found", host))
		} else {
			notes = append(notes, fmt.Sprintf("cannot read %s: %v", host, err))
		}
	} else {
		defer f.Close()
		mainID = buildID(f)
		if len(o.buildID) > 0 && !bytes.Equal(mainID, o.buildID) {
			mismatch = true
			notes = append(notes, fmt.Sprintf("build ID mismatch: recorded %s, %s has %s; its symbols are not used",
				hexOrNone(o.buildID), host, hexOrNone(mainID)))
		} else {
			mainFile = f
		}
	}
	want := o.buildID
	if len(want) == 0 {
		want = mainID
	}

	// The debug file: the object itself when it has DWARF, else one found
	// by build ID or debug link that provably belongs to it.
	var dbg *elf.File
	dbgPath := host
	if mainFile != nil && hasDWARF(mainFile) {
		dbg = mainFile
	} else {
		var note string
		dbg, dbgPath, note = o.findDebugFile(mainFile, host, want)
		if dbg != nil {
			defer dbg.Close()
			switch {
			case missing:
				// Everything needed is in the debug file, which matches
				// the recorded build ID.
				notes = nil
			case mismatch:
				notes[len(notes)-1] += "; using debug file " + dbgPath
			}
		} else if note != "" {
			notes = append(notes, note)
		}
	}
	if mainFile == nil && dbg == nil {
		return
	}

	hdr := mainFile
	if hdr == nil {
		hdr = dbg
	}
	for _, p := range hdr.Progs {
		if p.Type == elf.PT_LOAD {
			o.loads = append(o.loads, event.Segment{Start: p.Vaddr, End: p.Vaddr + p.Memsz,
				Exec: p.Flags&elf.PF_X != 0, Writable: p.Flags&elf.PF_W != 0})
		}
	}

	// .symtab of the object, then of the debug file, then .dynsym.
	var syms []elf.Symbol
	var symFile *elf.File
	for _, c := range []struct {
		f   *elf.File
		dyn bool
	}{{mainFile, false}, {dbg, false}, {mainFile, true}} {
		if c.f == nil {
			continue
		}
		var err error
		if c.dyn {
			syms, err = c.f.DynamicSymbols()
		} else {
			syms, err = c.f.Symbols()
		}
		if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
			notes = append(notes, fmt.Sprintf("bad symbol table: %v", err))
		}
		if len(syms) > 0 {
			symFile = c.f
			break
		}
	}
	o.syms, o.symIx = funcSymbols(symFile, syms)

	if dbg != nil {
		d, err := loadDWARF(dbg, dbgPath)
		if err != nil {
			notes = append(notes, fmt.Sprintf("unreadable DWARF in %s: %v", dbgPath, err))
		} else {
			dw, err := newDwarfInfo(d)
			if err != nil {
				notes = append(notes, fmt.Sprintf("DWARF in %s: %v", dbgPath, err))
			}
			o.dw = dw
		}
	}
}

const sttGNUIFunc = 10

// funcSymbols keeps the symbols that name code, one per address, with the
// range each covers. A symbol of size 0 (hand-written assembly) reaches to
// the next symbol or the end of its section.
func funcSymbols(f *elf.File, syms []elf.Symbol) ([]symbol, intervals) {
	type cand struct {
		elf.Symbol
		secEnd uint64
	}
	var cs []cand
	for _, s := range syms {
		if s.Name == "" || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE {
			continue
		}
		var sec *elf.Section
		if int(s.Section) < len(f.Sections) {
			sec = f.Sections[s.Section]
		}
		switch elf.ST_TYPE(s.Info) {
		case elf.STT_FUNC, sttGNUIFunc:
		case elf.STT_NOTYPE:
			if sec == nil || sec.Flags&elf.SHF_EXECINSTR == 0 {
				continue
			}
		default:
			continue
		}
		// .symtab spells versioned symbols name@VERSION or name@@VERSION
		// (the default); the version says nothing about the code.
		if i := strings.IndexByte(s.Name, '@'); i > 0 {
			s.Name = s.Name[:i]
		}
		c := cand{Symbol: s}
		if sec != nil {
			c.secEnd = sec.Addr + sec.Size
		}
		cs = append(cs, c)
	}
	rank := func(s *elf.Symbol) int {
		switch elf.ST_BIND(s.Info) {
		case elf.STB_GLOBAL:
			return 0
		case elf.STB_WEAK:
			return 1
		}
		return 2
	}
	underscores := func(s string) int { return len(s) - len(strings.TrimLeft(s, "_")) }
	// The preferred name of aliases comes first: global over weak over
	// local, then the least "internal" looking (malloc, not __libc_malloc).
	sort.Slice(cs, func(i, j int) bool {
		a, b := &cs[i], &cs[j]
		if a.Value != b.Value {
			return a.Value < b.Value
		}
		if ra, rb := rank(&a.Symbol), rank(&b.Symbol); ra != rb {
			return ra < rb
		}
		if ua, ub := underscores(a.Name), underscores(b.Name); ua != ub {
			return ua < ub
		}
		if len(a.Name) != len(b.Name) {
			return len(a.Name) < len(b.Name)
		}
		return a.Name < b.Name
	})
	var out []symbol
	var ix intervals
	for i := 0; i < len(cs); {
		j := i + 1
		size := cs[i].Size
		for ; j < len(cs) && cs[j].Value == cs[i].Value; j++ {
			size = max(size, cs[j].Size)
		}
		lo, hi := cs[i].Value, cs[i].Value+size
		if size == 0 {
			hi = cs[i].secEnd
			if j < len(cs) && (hi == 0 || cs[j].Value < hi) {
				hi = cs[j].Value
			}
		}
		ix.add(lo, hi, int32(len(out)))
		out = append(out, symbol{lo, hi, cs[i].Name})
		i = j
	}
	ix.build()
	return out, ix
}
