package mtrace

import (
	"bufio"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"libleak/analyzer/event"
)

// Writer is an event.Handler that writes what it receives as mtrace text,
// for glibc's mtrace script or any other mtrace consumer. mtrace knows
// only the heap: mmap, munmap and mremap events are left out and counted.
//
// Events must arrive in time order, as decoders deliver them: mtrace has
// no timestamps, so line order is the only order its readers see. A
// realloc is written as its "<" and ">" lines together, the way glibc
// writes it under its stream lock.
type Writer struct {
	// Skip reports whether the frame at pc belongs to the allocator
	// rather than to its caller; m is the module holding pc, nil when
	// none is known. The caller written is the first frame not skipped.
	// nil skips frames in modules whose file name starts with "libleak".
	Skip func(pc uint64, m *event.Module) bool

	bw      *bufio.Writer
	err     error
	started bool
	closed  bool
	modules []*event.Module
	stacks  map[uint64][]uint64
	memo    map[uint64]callerMemo
	skipped uint64
	buf     []byte
}

// callerMemo is the caller text chosen for a stack, valid for events
// timed within [from, until) (the life of the module it was found in).
type callerMemo struct {
	text        string
	from, until uint64
}

// NewWriter returns a Writer writing to w. Nothing is written until the
// first handler call or Close.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 64<<10), stacks: map[uint64][]uint64{}, memo: map[uint64]callerMemo{}}
}

// Skipped returns how many events had no mtrace equivalent (mmap family).
func (w *Writer) Skipped() uint64 { return w.skipped }

func (w *Writer) start() bool {
	if w.closed || w.err != nil {
		return false
	}
	if !w.started {
		w.started = true
		_, w.err = w.bw.WriteString("= Start\n")
	}
	return w.err == nil
}

// Header starts the trace; mtrace has no place for process facts.
func (w *Writer) Header(*event.Header) { w.start() }

// Module records a module so callers inside it can be written as
// "path:[0xOFF]", which the mtrace script, given a binary, resolves with
// addr2line.
func (w *Writer) Module(m *event.Module) {
	if !w.start() {
		return
	}
	c := *m
	c.Segments = append([]event.Segment(nil), m.Segments...)
	w.modules = append(w.modules, &c)
	// A module loaded at a stack's addresses changes how they print.
	clear(w.memo)
}

// Stack records a stack for the events that follow.
func (w *Writer) Stack(id uint64, pcs []uint64) {
	if !w.start() {
		return
	}
	w.stacks[id] = append([]uint64(nil), pcs...)
	delete(w.memo, id)
}

// Event writes one event's lines.
func (w *Writer) Event(e *event.Event) {
	if !w.start() {
		return
	}
	switch e.Kind {
	case event.Alloc, event.Free, event.Realloc:
	default:
		w.skipped++
		return
	}
	caller := w.caller(e.Stack, e.Time)
	b := w.buf[:0]
	switch e.Kind {
	case event.Alloc:
		b = line(b, caller, '+', e.Addr, e.Size, true)
	case event.Free:
		if e.Addr == 0 {
			// free(NULL) is no call to glibc's tracer either.
			return
		}
		b = line(b, caller, '-', e.Addr, 0, false)
	case event.Realloc:
		switch {
		case e.OldAddr == 0:
			b = line(b, caller, '+', e.Addr, e.Size, true)
		case e.Addr == 0 && e.Size == 0:
			// realloc(p, 0) freed p and returned NULL.
			b = line(b, caller, '-', e.OldAddr, 0, false)
		case e.Addr == 0:
			b = line(b, caller, '!', e.OldAddr, e.Size, true)
		default:
			b = line(b, caller, '<', e.OldAddr, 0, false)
			b = line(b, caller, '>', e.Addr, e.Size, true)
		}
	}
	w.buf = b
	_, w.err = w.bw.Write(b)
}

// Close writes "= End" and flushes. It does not close the underlying
// writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.start()
	w.closed = true
	if w.err == nil {
		_, w.err = w.bw.WriteString("= End\n")
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return w.err
}

// line appends one mtrace line the way glibc prints it: %p for pointers
// ("(nil)" for NULL) and %#lx for sizes ("0" for zero).
func line(b []byte, caller string, op byte, ptr, size uint64, withSize bool) []byte {
	if caller != "" {
		b = append(b, "@ "...)
		b = append(b, caller...)
		b = append(b, ' ')
	}
	b = append(b, op, ' ')
	if ptr == 0 {
		b = append(b, "(nil)"...)
	} else {
		b = append(b, "0x"...)
		b = strconv.AppendUint(b, ptr, 16)
	}
	if withSize {
		b = append(b, ' ')
		if size != 0 {
			b = append(b, "0x"...)
		}
		b = strconv.AppendUint(b, size, 16)
	}
	return append(b, '\n')
}

// caller returns the CALLER text for a stack at time t, "" when the
// stack is unknown or holds only allocator frames.
func (w *Writer) caller(id uint64, t uint64) string {
	if id == 0 {
		return ""
	}
	if m, ok := w.memo[id]; ok && t >= m.from && t < m.until {
		return m.text
	}
	memo := callerMemo{until: ^uint64(0)}
	for _, pc := range w.stacks[id] {
		m := w.moduleAt(pc, t)
		if w.skip(pc, m) {
			continue
		}
		if m == nil || strings.ContainsAny(m.Path, " \t\n") {
			// The mtrace script splits lines at blanks, so a path
			// holding one cannot be written.
			memo.text = "[0x" + strconv.FormatUint(pc, 16) + "]"
		} else {
			// pc-Base is the file virtual address, what addr2line
			// -e path wants, and for PIE executables and shared
			// libraries also the offset glibc itself would print.
			memo.text = m.Path + ":[0x" + strconv.FormatUint(pc-m.Base, 16) + "]"
		}
		if m != nil {
			memo.from = m.Time
			if m.Unloaded != 0 {
				memo.until = m.Unloaded
			}
		}
		break
	}
	w.memo[id] = memo
	return memo.text
}

func (w *Writer) skip(pc uint64, m *event.Module) bool {
	if w.Skip != nil {
		return w.Skip(pc, m)
	}
	return m != nil && strings.HasPrefix(filepath.Base(m.Path), "libleak")
}

// moduleAt finds the module whose segments hold pc at time t. When
// several did (a library dlclosed and another loaded at its place), the
// one loaded at t wins, else the latest loaded.
func (w *Writer) moduleAt(pc, t uint64) *event.Module {
	var best *event.Module
	for _, m := range w.modules {
		if !contains(m, pc) {
			continue
		}
		if m.Time <= t && (m.Unloaded == 0 || t < m.Unloaded) {
			return m
		}
		if best == nil || m.Time >= best.Time {
			best = m
		}
	}
	return best
}

func contains(m *event.Module, pc uint64) bool {
	for _, s := range m.Segments {
		if pc >= s.Start && pc < s.End {
			return true
		}
	}
	return false
}
