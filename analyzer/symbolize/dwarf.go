package symbolize

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// loadDWARF is elf.File.DWARF reading only the sections naming code needs:
// location lists and call frame information are often half the debug
// data of an optimized build, and decompressing them is most of the cost
// of opening a large object. Relocations are not applied: only executables
// and shared objects are symbolized, and their debug sections are final.
func loadDWARF(f *elf.File, path string) (*dwarf.Data, error) {
	want := map[string]bool{"abbrev": true, "info": true, "str": true, "line": true, "ranges": true,
		"addr": true, "line_str": true, "rnglists": true, "str_offsets": true}
	type read struct {
		s      *elf.Section
		suffix string
		b      []byte
		err    error
	}
	var reads []*read
	for _, s := range f.Sections {
		suffix, ok := strings.CutPrefix(s.Name, ".debug_")
		if !ok {
			suffix, ok = strings.CutPrefix(s.Name, ".zdebug_")
		}
		if !ok || !want[suffix] || s.Type == elf.SHT_NOBITS {
			continue
		}
		reads = append(reads, &read{s: s, suffix: suffix})
	}
	// Sections decompress independently (each Open has its own reader
	// over the file): reading them at once takes about the time of the
	// largest, .debug_info, rather than the sum. Symbolizing runs after
	// the trace is read, on an otherwise idle machine.
	raw, _ := os.Open(path) // for compressed sections; without it, Data
	var wg sync.WaitGroup
	for _, r := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.b, r.err = sectionData(f, r.s, raw)
		}()
	}
	wg.Wait()
	if raw != nil {
		raw.Close()
	}
	dat := map[string][]byte{}
	for _, r := range reads {
		if r.err != nil {
			return nil, fmt.Errorf("section %s: %v", r.s.Name, r.err)
		}
		dat[r.suffix] = r.b
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

// sectionData is s.Data. For a size that is plausible, small or not far
// above what the file stores, it reads into one buffer of that size:
// Data grows its buffer in steps, a defence against sizes a corrupt
// header claims, and copying as it grows was a third of reading a large
// section. A zlib-compressed section is read from raw, the file, and
// inflated by klauspost/compress, which takes two thirds of the time of
// the standard library's; if that fails, Data's way tells why.
func sectionData(f *elf.File, s *elf.Section, raw io.ReaderAt) ([]byte, error) {
	if s.Size > 64<<20 && s.Size/32 > s.FileSize {
		return s.Data()
	}
	if raw != nil && s.Flags&elf.SHF_COMPRESSED != 0 {
		if b, ok := inflate(f, s, raw); ok {
			return b, nil
		}
	}
	b := make([]byte, s.Size)
	if _, err := io.ReadFull(s.Open(), b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// inflate reads a compressed section's ELF compression header and zlib
// stream from raw and inflates it to the size the header gives, which
// debug/elf took as s.Size.
func inflate(f *elf.File, s *elf.Section, raw io.ReaderAt) ([]byte, bool) {
	hdr := 24 // Elf64_Chdr: type, reserved, size, alignment
	if f.Class == elf.ELFCLASS32 {
		hdr = 12 // Elf32_Chdr: type, size, alignment
	}
	if s.FileSize < uint64(hdr) || s.FileSize > 1<<30 {
		return nil, false
	}
	z := make([]byte, s.FileSize)
	if _, err := raw.ReadAt(z, int64(s.Offset)); err != nil {
		return nil, false
	}
	size := f.ByteOrder.Uint64(z[8:])
	if f.Class == elf.ELFCLASS32 {
		size = uint64(f.ByteOrder.Uint32(z[4:]))
	}
	if elf.CompressionType(f.ByteOrder.Uint32(z)) != elf.COMPRESS_ZLIB || size != s.Size {
		return nil, false
	}
	zr, err := zlib.NewReader(bytes.NewReader(z[hdr:]))
	if err != nil {
		return nil, false
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(zr, b); err != nil {
		return nil, false
	}
	return b, true
}

func hasDWARF(f *elf.File) bool {
	for _, name := range []string{".debug_info", ".zdebug_info"} {
		if s := f.Section(name); s != nil && s.Type != elf.SHT_NOBITS && s.Size > 0 {
			return true
		}
	}
	return false
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
