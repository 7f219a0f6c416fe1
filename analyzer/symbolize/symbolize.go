// Package symbolize turns the raw runtime addresses of a trace into
// functions, files and lines. It works offline, from the module map the
// trace recorded: it never looks at a live process, so a trace can be
// analyzed after the process is gone, after its libraries were dlclosed,
// or on another machine (see Options.Sysroot).
//
// Names come from DWARF when the object or a separate debug file has it
// (with one frame per inlined call), and from the ELF symbol table
// otherwise. A file whose build ID differs from the recorded one is never
// used: its frames keep only their module and address, and a warning says
// why. A module recorded without a build ID (mtrace input) cannot be
// checked and is taken as found.
package symbolize

import (
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"libleak/analyzer/event"
	"libleak/analyzer/report"
)

// Unknown is the function name of a frame that could not be named.
const Unknown = "??"

// Options configure a Symbolizer.
type Options struct {
	// DebugDirs are extra roots of separate debug files, searched before
	// the default /usr/lib/debug, both by build ID
	// (DIR/.build-id/xx/yyyy.debug) and by .gnu_debuglink name
	// (DIR/<module dir>/<link>).
	DebugDirs []string
	// Sysroot prefixes every module path and the default debug root, for
	// traces recorded on another machine whose files were copied here.
	// DebugDirs are tried both as given and under Sysroot.
	Sysroot string
	// Demangle turns C++ and Rust symbol names into their source form, as
	// c++filt prints them (parameters included). Off, names stay raw.
	Demangle bool
}

// Symbolizer names addresses. Objects are opened once per path and build
// ID and shared by every Process made from the same Symbolizer. It is safe
// for concurrent use.
type Symbolizer struct {
	opt Options

	mu       sync.Mutex
	objects  map[objectKey]*object
	warnings []string
	warned   map[string]bool
}

type objectKey struct {
	path, buildID string
}

// New returns a Symbolizer.
func New(o Options) *Symbolizer {
	o.DebugDirs = append([]string(nil), o.DebugDirs...)
	return &Symbolizer{opt: o, objects: map[objectKey]*object{}, warned: map[string]bool{}}
}

// Warnings returns what went wrong so far, at most one line per object:
// files that could not be read, build ID mismatches, rejected debug files,
// unreadable debug information.
func (s *Symbolizer) Warnings() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.warnings...)
}

func (s *Symbolizer) warn(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.warned[msg] {
		s.warned[msg] = true
		s.warnings = append(s.warnings, msg)
	}
}

func (s *Symbolizer) object(m *event.Module) *object {
	k := objectKey{m.Path, string(m.BuildID)}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[k]
	if o == nil {
		o = &object{s: s, path: m.Path, buildID: append([]byte(nil), m.BuildID...)}
		s.objects[k] = o
	}
	return o
}

// Prefetch starts reading, on a goroutine of its own, what naming the
// frames of module m needs (its symbols and debug information), as the
// first lookup in it would; that lookup then waits for it.
func (s *Symbolizer) Prefetch(m event.Module) {
	if pseudoPath(m.Path) {
		return
	}
	o := s.object(&m)
	go o.once.Do(o.load)
}

// hostPath is where the file recorded as path is on this machine.
func (s *Symbolizer) hostPath(path string) string {
	if s.opt.Sysroot == "" {
		return path
	}
	return filepath.Join(s.opt.Sysroot, path)
}

// debugRoots lists the debug roots in search order, as paths on this
// machine.
func (s *Symbolizer) debugRoots() []string {
	var roots []string
	seen := map[string]bool{}
	add := func(d string) {
		d = filepath.Clean(d)
		if !seen[d] {
			seen[d] = true
			roots = append(roots, d)
		}
	}
	for _, d := range s.opt.DebugDirs {
		if d == "" {
			continue
		}
		add(d)
		if s.opt.Sysroot != "" {
			add(filepath.Join(s.opt.Sysroot, d))
		}
	}
	add(s.hostPath("/usr/lib/debug"))
	return roots
}

// Process is the address space of one traced process: every module it
// ever loaded, with the time window each was loaded in. It is safe for
// concurrent use.
type Process struct {
	mods []procModule
	segs intervals // runtime segments; the value indexes mods
}

type procModule struct {
	event.Module
	obj *object
}

// Process prepares the symbolization of one process's addresses. mods are
// all modules the process ever had, including those unloaded before it
// exited. A module recorded without segments gets those of its file's
// PT_LOAD headers moved by its load bias.
func (s *Symbolizer) Process(mods []event.Module) *Process {
	p := &Process{}
	for i := range mods {
		m := mods[i]
		m.BuildID = append([]byte(nil), m.BuildID...)
		segs := append([]event.Segment(nil), m.Segments...)
		var obj *object
		if !pseudoPath(m.Path) {
			obj = s.object(&m)
			if len(segs) == 0 {
				segs = obj.segments(m.Base)
			}
		}
		m.Segments = segs
		idx := int32(len(p.mods))
		p.mods = append(p.mods, procModule{m, obj})
		for _, sg := range segs {
			p.segs.add(sg.Start, sg.End, idx)
		}
	}
	p.segs.build()
	return p
}

// pseudoPath tells whether a module has no file behind it ([vdso],
// [vsyscall], or no name at all).
func pseudoPath(path string) bool {
	return path == "" || strings.HasPrefix(path, "[") || path == "linux-vdso.so.1" || path == "linux-gate.so.1"
}

// Frames names the code at pc, innermost inlined call first. With
// returnAddress, pc is a return address and the call before it is looked
// up, so the line is the call's; Address is pc either way. When several
// modules were loaded at pc over time, the latest loaded one is used.
func (p *Process) Frames(pc uint64, returnAddress bool) []report.Frame {
	return p.frames(pc, returnAddress, 0, false)
}

// FramesAt is Frames for an address seen at time at (nanoseconds since the
// trace started): a module loaded at that time is preferred over modules
// loaded at pc before or after.
func (p *Process) FramesAt(pc uint64, returnAddress bool, at uint64) []report.Frame {
	return p.frames(pc, returnAddress, at, true)
}

// Stack names a recorded call stack, all of whose addresses are return
// addresses, outermost frame last.
func (p *Process) Stack(pcs []uint64) []report.Frame {
	return p.stack(pcs, 0, false)
}

// StackAt is Stack for a stack recorded at time at.
func (p *Process) StackAt(pcs []uint64, at uint64) []report.Frame {
	return p.stack(pcs, at, true)
}

func (p *Process) stack(pcs []uint64, at uint64, timed bool) []report.Frame {
	out := make([]report.Frame, 0, len(pcs))
	for _, pc := range pcs {
		out = append(out, p.frames(pc, true, at, timed)...)
	}
	return out
}

func (p *Process) frames(pc uint64, returnAddress bool, at uint64, timed bool) []report.Frame {
	lookup := pc
	if returnAddress && lookup > 0 {
		lookup--
	}
	m := p.module(lookup, at, timed)
	if m == nil {
		return []report.Frame{{Function: Unknown, Address: pc}}
	}
	if m.obj == nil {
		return []report.Frame{{Function: Unknown, Module: m.Path, Address: pc}}
	}
	fs := m.obj.lookup(lookup - m.Base)
	out := make([]report.Frame, len(fs))
	for i, f := range fs {
		out[i] = report.Frame{Function: f.fn, File: f.file, Line: f.line, Module: m.Path, Address: pc, Inlined: f.inlined}
	}
	return out
}

// module finds the module whose segments hold addr: among several, the
// one loaded at time at when timed, else the latest loaded.
func (p *Process) module(addr, at uint64, timed bool) *procModule {
	best := int32(-1)
	bestLive := false
	p.segs.each(addr, func(i int32) bool {
		m := &p.mods[i]
		live := timed && m.Time <= at && (m.Unloaded == 0 || at <= m.Unloaded)
		if best >= 0 {
			b := &p.mods[best]
			if bestLive && !live || live == bestLive && (m.Time < b.Time || m.Time == b.Time && i < best) {
				return true
			}
		}
		best, bestLive = i, live
		return true
	})
	if best < 0 {
		return nil
	}
	return &p.mods[best]
}

// intervals finds which of a set of possibly overlapping [lo, hi) ranges
// hold an address. Overlaps are rare (reused address space, bogus debug
// ranges), so a walk back from the last range starting at or below the
// address, stopped by the running maximum of ends, is short.
type intervals struct {
	iv    []interval
	maxHi []uint64
}

type interval struct {
	lo, hi uint64
	v      int32
}

func (x *intervals) add(lo, hi uint64, v int32) {
	if lo < hi {
		x.iv = append(x.iv, interval{lo, hi, v})
	}
}

func (x *intervals) build() {
	sort.SliceStable(x.iv, func(i, j int) bool { return x.iv[i].lo < x.iv[j].lo })
	x.maxHi = make([]uint64, len(x.iv))
	var m uint64
	for i, v := range x.iv {
		m = max(m, v.hi)
		x.maxHi[i] = m
	}
}

// maxWalk bounds the walk back over ranges that start below an address but
// end before it, so one huge bogus range cannot make lookups linear.
const maxWalk = 512

// each calls f with the value of every range holding addr, nearest start
// first, until f returns false.
func (x *intervals) each(addr uint64, f func(v int32) bool) {
	i := sort.Search(len(x.iv), func(i int) bool { return x.iv[i].lo > addr }) - 1
	for n := 0; i >= 0 && x.maxHi[i] > addr && n < maxWalk; i-- {
		if addr < x.iv[i].hi {
			if !f(x.iv[i].v) {
				return
			}
			continue
		}
		n++
	}
}

// find returns the value of the range holding addr with the nearest start,
// or -1.
func (x *intervals) find(addr uint64) int32 {
	r := int32(-1)
	x.each(addr, func(v int32) bool { r = v; return false })
	return r
}
