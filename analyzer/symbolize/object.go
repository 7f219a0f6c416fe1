package symbolize

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
		d, err := loadDWARF(dbg)
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

// findDebugFile looks for a separate debug file: by build ID under the
// debug roots, then by the object's .gnu_debuglink next to it, in its
// .debug directory and under the debug roots. A candidate is used only
// when its build ID equals want and, found by debug link, its CRC matches.
// note explains candidates that were rejected when none was used.
func (o *object) findDebugFile(mainFile *elf.File, host string, want []byte) (dbg *elf.File, path, note string) {
	var rejected []string
	try := func(path string, crc *uint32) *elf.File {
		st, err := os.Stat(path)
		if err != nil || !st.Mode().IsRegular() {
			return nil
		}
		if same, err := os.Stat(host); err == nil && os.SameFile(st, same) {
			return nil
		}
		f, err := elf.Open(path)
		if err != nil {
			rejected = append(rejected, fmt.Sprintf("%s: %v", path, err))
			return nil
		}
		if crc != nil {
			got, err := fileCRC(path)
			if err != nil || got != *crc {
				f.Close()
				rejected = append(rejected, fmt.Sprintf("%s: CRC %08x does not match debug link CRC %08x", path, got, *crc))
				return nil
			}
		}
		if id := buildID(f); len(want) > 0 && !bytes.Equal(id, want) && (crc == nil || len(id) > 0) {
			f.Close()
			rejected = append(rejected, fmt.Sprintf("%s: build ID %s, want %s", path, hexOrNone(id), hex.EncodeToString(want)))
			return nil
		}
		if !hasDWARF(f) {
			if _, err := f.Symbols(); err != nil {
				f.Close()
				return nil
			}
		}
		return f
	}
	defer func() {
		if dbg == nil && len(rejected) > 0 {
			note = "debug file rejected: " + strings.Join(rejected, "; ")
		}
	}()

	roots := o.s.debugRoots()
	if len(want) > 1 {
		h := hex.EncodeToString(want)
		for _, r := range roots {
			p := filepath.Join(r, ".build-id", h[:2], h[2:]+".debug")
			if f := try(p, nil); f != nil {
				return f, p, ""
			}
		}
	}
	if mainFile == nil {
		return nil, "", ""
	}
	link, crc, ok := debugLink(mainFile)
	if !ok {
		return nil, "", ""
	}
	dir := filepath.Dir(host)
	cands := []string{filepath.Join(dir, link), filepath.Join(dir, ".debug", link)}
	for _, r := range roots {
		cands = append(cands, filepath.Join(r, filepath.Dir(o.path), link))
	}
	for _, c := range cands {
		if f := try(c, &crc); f != nil {
			return f, c, ""
		}
	}
	return nil, "", ""
}

// loadDWARF is elf.File.DWARF reading only the sections naming code needs:
// location lists and call frame information are often half the debug
// data of an optimized build, and decompressing them is most of the cost
// of opening a large object. Relocations are not applied: only executables
// and shared objects are symbolized, and their debug sections are final.
func loadDWARF(f *elf.File) (*dwarf.Data, error) {
	want := map[string]bool{"abbrev": true, "info": true, "str": true, "line": true, "ranges": true,
		"addr": true, "line_str": true, "rnglists": true, "str_offsets": true}
	dat := map[string][]byte{}
	for _, s := range f.Sections {
		suffix, ok := strings.CutPrefix(s.Name, ".debug_")
		if !ok {
			suffix, ok = strings.CutPrefix(s.Name, ".zdebug_")
		}
		if !ok || !want[suffix] || s.Type == elf.SHT_NOBITS {
			continue
		}
		b, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("section %s: %v", s.Name, err)
		}
		dat[suffix] = b
	}
	d, err := dwarf.New(dat["abbrev"], nil, nil, dat["info"], dat["line"], nil, dat["ranges"], dat["str"])
	if err != nil {
		return nil, err
	}
	for _, suffix := range []string{"addr", "line_str", "rnglists", "str_offsets"} {
		if b := dat[suffix]; b != nil {
			if err := d.AddSection(".debug_"+suffix, b); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

func hasDWARF(f *elf.File) bool {
	for _, name := range []string{".debug_info", ".zdebug_info"} {
		if s := f.Section(name); s != nil && s.Type != elf.SHT_NOBITS && s.Size > 0 {
			return true
		}
	}
	return false
}

func hexOrNone(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

// buildID returns the NT_GNU_BUILD_ID note of f, or nil.
func buildID(f *elf.File) []byte {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		if id := gnuBuildID(data, f.ByteOrder); id != nil {
			return id
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if id := gnuBuildID(data, f.ByteOrder); id != nil {
			return id
		}
	}
	return nil
}

func gnuBuildID(b []byte, bo binary.ByteOrder) []byte {
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:])), bo.Uint32(b[8:])
		b = b[12:]
		if align(namesz) > uint64(len(b)) || align(namesz)+descsz > uint64(len(b)) {
			return nil
		}
		name := b[:namesz]
		desc := b[align(namesz) : align(namesz)+descsz]
		if typ == 3 && string(name) == "GNU\x00" && len(desc) > 0 {
			return append([]byte(nil), desc...)
		}
		next := align(namesz) + align(descsz)
		if next > uint64(len(b)) {
			return nil
		}
		b = b[next:]
	}
	return nil
}

// debugLink returns the file name and CRC of f's .gnu_debuglink.
func debugLink(f *elf.File) (string, uint32, bool) {
	s := f.Section(".gnu_debuglink")
	if s == nil {
		return "", 0, false
	}
	data, err := s.Data()
	if err != nil {
		return "", 0, false
	}
	n := bytes.IndexByte(data, 0)
	if n <= 0 {
		return "", 0, false
	}
	off := (n + 4) &^ 3
	if off+4 > len(data) {
		return "", 0, false
	}
	name := string(data[:n])
	if strings.ContainsRune(name, '/') {
		name = filepath.Base(name)
	}
	return name, f.ByteOrder.Uint32(data[off:]), true
}

func fileCRC(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, f); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
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

// dwarfInfo indexes one object's DWARF: compile units by address up front,
// functions and lines of a unit when an address first falls in it.
type dwarfInfo struct {
	d     *dwarf.Data
	cus   intervals // value indexes units
	units []*unitInfo
	names map[dwarf.Offset]string
}

type unitInfo struct {
	off    dwarf.Offset
	parsed bool
	err    error
	funcs  intervals // value indexes nodes
	nodes  []*fnode
	lines  []lineRow
	files  []*dwarf.LineFile
}

// fnode is a subprogram or an inlined call with the code ranges it covers
// and the inlined calls directly inside it.
type fnode struct {
	die      dwarf.Offset
	unit     *unitInfo
	ranges   [][2]uint64
	callFile int
	callLine int
	children []*fnode
}

type lineRow struct {
	addr uint64
	file *dwarf.LineFile
	line int32
	end  bool
}

func newDwarfInfo(d *dwarf.Data) (*dwarfInfo, error) {
	dw := &dwarfInfo{d: d, names: map[dwarf.Offset]string{}}
	r := d.Reader()
	var err error
	for {
		var e *dwarf.Entry
		e, err = r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == dwarf.TagCompileUnit {
			rs, rerr := d.Ranges(e)
			if rerr != nil && err == nil {
				err = rerr
			}
			u := int32(len(dw.units))
			dw.units = append(dw.units, &unitInfo{off: e.Offset})
			for _, rg := range rs {
				// Code discarded at link time keeps ranges at address 0.
				if rg[0] != 0 {
					dw.cus.add(rg[0], rg[1], u)
				}
			}
		}
		r.SkipChildren()
	}
	dw.cus.build()
	return dw, err
}

// locate returns the chain of functions holding addr, outermost first,
// and the file and line of addr.
func (dw *dwarfInfo) locate(addr uint64) (chain []*fnode, file string, line int, err error) {
	ui := dw.cus.find(addr)
	if ui < 0 {
		return nil, "", 0, nil
	}
	u := dw.units[ui]
	if !u.parsed {
		u.parsed = true
		u.err = dw.parseUnit(u)
		err = u.err
	}
	if i := sort.Search(len(u.lines), func(i int) bool { return u.lines[i].addr > addr }) - 1; i >= 0 && !u.lines[i].end {
		if f := u.lines[i].file; f != nil {
			file = f.Name
		}
		line = int(u.lines[i].line)
	}
	if ni := u.funcs.find(addr); ni >= 0 {
		n := u.nodes[ni]
		chain = append(chain, n)
		for depth := 0; depth < 1000; depth++ {
			next := n.childAt(addr)
			if next == nil {
				break
			}
			chain = append(chain, next)
			n = next
		}
	}
	return chain, file, line, err
}

func (n *fnode) childAt(addr uint64) *fnode {
	for _, c := range n.children {
		for _, r := range c.ranges {
			if r[0] <= addr && addr < r[1] {
				return c
			}
		}
	}
	return nil
}

// parseUnit reads a unit's line table and walks its DIEs once, keeping
// only subprograms and inlined calls that cover code.
func (dw *dwarfInfo) parseUnit(u *unitInfo) error {
	d := dw.d
	r := d.Reader()
	r.Seek(u.off)
	cu, err := r.Next()
	if err != nil {
		return fmt.Errorf("unit at %#x: %v", u.off, err)
	}
	if cu == nil {
		return fmt.Errorf("unit at %#x: missing", u.off)
	}
	var lerr error
	if lr, err := d.LineReader(cu); err != nil {
		lerr = fmt.Errorf("line table of unit at %#x: %v", u.off, err)
	} else if lr != nil {
		u.lines, lerr = readLines(lr)
		u.files = lr.Files()
		if lerr != nil {
			lerr = fmt.Errorf("line table of unit at %#x: %v", u.off, lerr)
		}
	}
	if !cu.Children {
		return lerr
	}
	ranges := func(e *dwarf.Entry) [][2]uint64 {
		if lo, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
			if f := e.AttrField(dwarf.AttrHighpc); f != nil {
				var hi uint64
				switch v := f.Val.(type) {
				case uint64:
					hi = v
				case int64:
					hi = lo + uint64(v)
				}
				if lo != 0 && lo < hi {
					return [][2]uint64{{lo, hi}}
				}
				return nil
			}
		}
		if e.AttrField(dwarf.AttrRanges) == nil {
			return nil
		}
		rs, err := d.Ranges(e)
		if err != nil {
			return nil
		}
		out := rs[:0]
		for _, rg := range rs {
			if rg[0] != 0 && rg[0] < rg[1] {
				out = append(out, rg)
			}
		}
		return out
	}
	// stack[i] is the function enclosing the children at depth i.
	stack := []*fnode{nil}
	for len(stack) > 0 {
		e, err := r.Next()
		if err != nil {
			u.funcs.build()
			return errors.Join(lerr, fmt.Errorf("unit at %#x: %v", u.off, err))
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		parent := stack[len(stack)-1]
		n := parent
		switch e.Tag {
		case dwarf.TagSubprogram:
			n = nil
			if rs := ranges(e); len(rs) > 0 {
				n = &fnode{die: e.Offset, unit: u, ranges: rs}
				for _, rg := range rs {
					u.funcs.add(rg[0], rg[1], int32(len(u.nodes)))
				}
				u.nodes = append(u.nodes, n)
			}
		case dwarf.TagInlinedSubroutine:
			n = nil
			if rs := ranges(e); parent != nil && len(rs) > 0 {
				n = &fnode{die: e.Offset, unit: u, ranges: rs}
				if v, ok := e.Val(dwarf.AttrCallFile).(int64); ok {
					n.callFile = int(v)
				}
				if v, ok := e.Val(dwarf.AttrCallLine).(int64); ok {
					n.callLine = int(v)
				}
				parent.children = append(parent.children, n)
			}
		}
		if !e.Children {
			continue
		}
		switch e.Tag {
		case dwarf.TagSubprogram, dwarf.TagInlinedSubroutine:
			if n == nil {
				// Declarations and abstract instances: no code inside.
				r.SkipChildren()
				continue
			}
		case dwarf.TagLexDwarfBlock, dwarf.TagNamespace, dwarf.TagModule, dwarf.TagTryDwarfBlock, dwarf.TagCatchDwarfBlock:
		default:
			// Types, variables and the like hold no code; skipping them
			// is cheap when the producer emitted sibling links.
			r.SkipChildren()
			continue
		}
		stack = append(stack, n)
	}
	u.funcs.build()
	return lerr
}

// readLines loads a line table as one address-sorted slice: sequences are
// sorted by start and each ends with its end_sequence row, so the last row
// at or below an address either covers it or is an end row. Rows that
// change neither file nor line are dropped, and of several rows at one
// address only the last, the one covering the code, is kept.
func readLines(lr *dwarf.LineReader) ([]lineRow, error) {
	var rows []lineRow
	var starts []int
	start := 0
	var le dwarf.LineEntry
	var err error
	for {
		if err = lr.Next(&le); err != nil {
			break
		}
		row := lineRow{addr: le.Address, file: le.File, line: int32(le.Line), end: le.EndSequence}
		if n := len(rows); n > start && !row.end {
			last := &rows[n-1]
			if last.addr == row.addr {
				if n-1 > start && rows[n-2].file == row.file && rows[n-2].line == row.line {
					rows = rows[:n-1]
				} else {
					*last = row
				}
				continue
			}
			if last.file == row.file && last.line == row.line {
				continue
			}
		}
		rows = append(rows, row)
		if row.end {
			if rows[start].addr != 0 {
				starts = append(starts, start)
			} else {
				rows = rows[:start]
			}
			start = len(rows)
		}
	}
	rows = rows[:start]
	if err == io.EOF {
		err = nil
	}
	sort.SliceStable(starts, func(i, j int) bool { return rows[starts[i]].addr < rows[starts[j]].addr })
	sorted := true
	for i := 1; i < len(starts); i++ {
		if starts[i] < starts[i-1] {
			sorted = false
			break
		}
	}
	if sorted {
		return slices.Clip(rows), err
	}
	out := make([]lineRow, 0, len(rows))
	for _, s := range starts {
		e := s
		for !rows[e].end {
			e++
		}
		out = append(out, rows[s:e+1]...)
	}
	return out, err
}

func (dw *dwarfInfo) fileName(u *unitInfo, i int) string {
	if i < 0 || i >= len(u.files) || u.files[i] == nil {
		return ""
	}
	return u.files[i].Name
}

// funcName returns the raw name of the function a subprogram or inlined
// call DIE stands for: its mangled linkage name when it has one (so C++
// names are qualified and demangle like symbols), else its plain name.
// Unmangled linkage names are C asm labels (glibc's __GI_ aliases), less
// telling than the plain name. Both may sit on the abstract origin or on
// the declaration it specifies.
func (dw *dwarfInfo) funcName(off dwarf.Offset) string {
	if n, ok := dw.names[off]; ok {
		return n
	}
	r := dw.d.Reader()
	name, linkage := "", ""
	seen := map[dwarf.Offset]bool{}
	for o := off; o != 0 && !seen[o] && len(seen) < 16; {
		seen[o] = true
		r.Seek(o)
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		for _, a := range []dwarf.Attr{dwarf.AttrLinkageName, attrMIPSLinkageName} {
			if s, ok := e.Val(a).(string); ok && (strings.HasPrefix(s, "_Z") || strings.HasPrefix(s, "_R")) {
				linkage = s
				break
			}
		}
		if linkage != "" {
			break
		}
		if s, ok := e.Val(dwarf.AttrName).(string); ok && name == "" {
			name = s
		}
		o = 0
		for _, a := range []dwarf.Attr{dwarf.AttrAbstractOrigin, dwarf.AttrSpecification} {
			if v, ok := e.Val(a).(dwarf.Offset); ok {
				o = v
				break
			}
		}
	}
	if linkage != "" {
		name = linkage
	}
	dw.names[off] = name
	return name
}

const attrMIPSLinkageName dwarf.Attr = 0x2007
