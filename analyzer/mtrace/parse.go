// Package mtrace reads and writes the text traces of glibc's mtrace()
// facility (MALLOC_TRACE), so programs traced with glibc alone can be
// analyzed like libleak traces, and libleak traces can be checked with
// glibc's own mtrace script.
//
// A trace line is
//
//	@ CALLER OP ARGS
//
// where the "@ CALLER " part is absent when the caller is unknown, and OP is
// "+" (malloc, calloc, memalign, realloc of NULL...: pointer and size), "-"
// (free: pointer), "<" followed by ">" (realloc: old pointer, then new
// pointer and size) or "!" (failed realloc: old pointer and size). "= Start"
// and "= End" frame the trace; glibc writes "= End" only when the program
// calls muntrace(), so most traces end without it.
//
// CALLER takes three forms:
//
//	path:[0xOFF]            glibc >= 2.34: offset from the module's load start
//	path:(sym+1c)[0xOFF]    same, with the nearest dynamic symbol
//	[0xADDR]                dladdr() found no module: absolute address
//
// glibc before 2.34 printed an absolute address in the path forms; a value
// of 4 GiB or more there cannot be an offset and is taken as absolute.
//
// mtrace does not say which function allocated: "+" lines decode to
// OpMalloc, except those whose caller is libc's strdup family (the only
// frame is then inside it), which decode to OpStrdup; "<", ">" decode to
// OpRealloc. Free and realloc events carry no old size (OldSize 0): a
// replay knows it from the allocation.
//
// # Synthetic address space
//
// mtrace records no load addresses, yet the rest of libleak names frames by
// runtime address and module Base. The decoder therefore gives every module
// a made-up region of 4 GiB at SyntheticBase and above, in the
// non-canonical part of the x86-64 address space so it cannot collide with
// a real absolute address, and reports the caller's frame as Base+OFF. Then
// runtime address - Base = OFF, which for PIE executables and shared
// libraries (first PT_LOAD at virtual address 0) is the file virtual address
// a symbolizer looks up. A non-PIE executable's OFF is relative to its
// first PT_LOAD segment (usually 0x400000); set Parser.LoadStart to correct
// for it.
package mtrace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"libleak/analyzer/event"
)

// SyntheticBase is the Base given to the first module seen in a trace;
// each further module's region starts ModuleSpan higher.
const (
	SyntheticBase uint64 = 0x1000_0000_0000_0000
	ModuleSpan    uint64 = 1 << 32
)

// maxLine bounds one line, so a corrupt or foreign file cannot make the
// parser buffer it whole. Real lines stay well under 1 KiB even with long
// C++ symbol names.
const maxLine = 1 << 20

// Caller is what a trace line says about the code that called the
// allocator. Symbol is set only when glibc found a dynamic symbol for it;
// it is the only function name available without the binary.
type Caller struct {
	Module    string // module path as dladdr() reported it; "" for [0xADDR]
	Offset    uint64 // the bracketed value: offset in Module, or absolute address
	Symbol    string // nearest dynamic symbol, "" when none
	SymOffset int64  // caller - symbol address (negative for "sym-off")
}

// Stats counts what a trace held.
type Stats struct {
	Lines          uint64 // lines read, the partial last one included
	Allocs         uint64 // "+" lines and lone ">" lines with a pointer
	Frees          uint64 // "-" lines and lone "<" lines
	Reallocs       uint64 // "<" ">" pairs
	FailedAllocs   uint64 // "+ (nil)" lines: the allocator returned NULL
	FailedReallocs uint64 // "!" lines: realloc returned NULL, old block kept
	Started        bool   // saw "= Start"
	Ended          bool   // saw "= End" (the program called muntrace())
	// PartialLine is set when the file stops in the middle of a line (the
	// process died with trace data in its stdio buffer); that line is
	// not decoded.
	PartialLine bool
	// Truncated is set when the trace may not cover the whole run: there
	// is no "= End" after the last event, or the last line is partial.
	// Traces of programs that never call muntrace() always look truncated.
	Truncated bool
}

// Parser decodes one mtrace file. The zero value is ready to use; a Parser
// may be reused, each Parse starting afresh.
type Parser struct {
	// LoadStart, when set, returns the page-aligned virtual address of a
	// module's first PT_LOAD segment, so that Base+offset lands on the
	// file virtual address of non-PIE executables too. nil means 0, right
	// for PIE executables and shared libraries.
	LoadStart func(module string) uint64

	name    string
	h       event.Handler
	line    uint64
	modules map[string]uint64 // path -> synthetic Base
	stacks  map[uint64]uint64 // pc -> stack id
	callers map[uint64]Caller // pc -> caller as printed
	stats   Stats
	pending *pendingRealloc
}

type pendingRealloc struct {
	line  uint64
	old   uint64
	stack uint64
}

// ErrNotMtrace is returned, wrapped with the file name and line, when the
// input does not start like an mtrace file.
var ErrNotMtrace = errors.New("not a glibc mtrace file")

// Parse decodes the mtrace text in r, named name in error messages, into
// h. See Parser.Parse.
func Parse(r io.Reader, name string, h event.Handler) error {
	var p Parser
	return p.Parse(r, name, h)
}

// Sniff tells whether prefix, the first bytes of a file, is mtrace text:
// its first line is "= Start", or a well-formed event line with a caller.
// A caller-less line such as "+ 0x10 0x20" is too likely to be something
// else (a diff, say) to decide on; Parse still accepts one.
func Sniff(prefix []byte) bool {
	for len(prefix) > 0 && (prefix[0] == '\n' || prefix[0] == '\r') {
		prefix = prefix[1:]
	}
	line, _, complete := bytes.Cut(prefix, []byte("\n"))
	if !complete {
		// Too short to hold a whole line: judge by the start alone.
		return bytes.HasPrefix(line, []byte("= Start")) || bytes.HasPrefix(line, []byte("@ "))
	}
	s := strings.TrimSuffix(string(line), "\r")
	if s == "= Start" {
		return true
	}
	if !strings.HasPrefix(s, "@ ") {
		return false
	}
	_, _, err := splitLine(s)
	return err == nil
}

// Parse decodes r into h: one Header first, then each module and stack
// before the first event that uses it, then the events in file order with
// the line number as Time (a realloc's release at the "<" line, its new
// block at the ">" line). Every event has Tid 0 and a one-frame stack, or
// stack 0 when the line names no caller.
//
// A line that is not mtrace stops decoding with an error naming the file
// and line; the events before it have been delivered. A trace without
// "= End" or cut mid-line is not an error: see Stats.
func (p *Parser) Parse(r io.Reader, name string, h event.Handler) error {
	*p = Parser{LoadStart: p.LoadStart, name: name, h: h,
		modules: map[string]uint64{}, stacks: map[uint64]uint64{}, callers: map[uint64]Caller{}}
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	headerSent := false
	lastEnd := false
	for {
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(long)+len(chunk) > maxLine {
				return fmt.Errorf("%s:%d: line longer than %d bytes", name, p.line+1, maxLine)
			}
			long = append(long, chunk...)
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s: %w", name, err)
		}
		if long != nil {
			chunk = append(long, chunk...)
			long = nil
			if len(chunk) > maxLine {
				return fmt.Errorf("%s:%d: line longer than %d bytes", name, p.line+1, maxLine)
			}
		}
		if len(chunk) == 0 {
			break
		}
		p.line++
		p.stats.Lines++
		complete := chunk[len(chunk)-1] == '\n'
		if !complete {
			// Whatever precedes the cut may parse, but its last number
			// could itself be cut short: trust none of it.
			p.stats.PartialLine = true
			if !headerSent {
				if !Sniff(chunk) {
					return fmt.Errorf("%s:%d: %w", name, p.line, ErrNotMtrace)
				}
				h.Header(p.header())
				headerSent = true
			}
			break
		}
		s := strings.TrimRight(string(chunk), "\r\n")
		if strings.TrimSpace(s) == "" {
			continue
		}
		if !headerSent {
			if s != "= Start" {
				if _, _, err := splitLine(s); err != nil {
					return fmt.Errorf("%s:%d: %w: %q", name, p.line, ErrNotMtrace, clip(s))
				}
			}
			h.Header(p.header())
			headerSent = true
		}
		end, err := p.parseLine(s)
		if err != nil {
			return fmt.Errorf("%s:%d: %v: %q", name, p.line, err, clip(s))
		}
		lastEnd = end
	}
	p.flushPending()
	if !headerSent {
		return fmt.Errorf("%s: empty file: %w", name, ErrNotMtrace)
	}
	p.stats.Truncated = p.stats.PartialLine || !lastEnd
	return nil
}

// header describes what every mtrace trace shares: times are line
// numbers, and the only frame is the allocator's caller.
func (p *Parser) header() *event.Header {
	return &event.Header{Clock: "line", Unwinder: "mtrace", Depth: 1}
}

// Callers maps each stack's only frame (runtime address as passed to
// Stack) to the caller text it came from, so a report can name the
// function from the trace alone.
func (p *Parser) Callers() map[uint64]Caller { return p.callers }

// Stats returns the counts of the last Parse.
func (p *Parser) Stats() Stats { return p.stats }

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// splitLine separates "@ CALLER " from the operation. The caller ends at
// the last "] ": module paths may hold anything, but no operation holds
// a "]".
func splitLine(s string) (caller, op string, err error) {
	if rest, ok := strings.CutPrefix(s, "@ "); ok {
		i := strings.LastIndex(rest, "] ")
		if i < 0 {
			return "", "", errors.New("caller without [address]")
		}
		caller, op = rest[:i+1], rest[i+2:]
	} else {
		op = s
	}
	if _, _, _, err := parseOp(op); err != nil {
		return "", "", err
	}
	return caller, op, nil
}

// parseOp reads "OP PTR [SIZE]". ptr is 0 for "(nil)".
func parseOp(s string) (op byte, ptr, size uint64, err error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, 0, 0, errors.New("no operation")
	}
	if len(f[0]) == 1 {
		op = f[0][0]
	}
	want := 0
	switch op {
	case '+', '>', '!':
		want = 3
	case '-', '<':
		want = 2
	default:
		return 0, 0, 0, fmt.Errorf("unknown operation %q", f[0])
	}
	if len(f) != want {
		return 0, 0, 0, fmt.Errorf("%q takes %d operands, not %d", f[0], want-1, len(f)-1)
	}
	if f[1] != "(nil)" {
		if ptr, err = parseHex(f[1]); err != nil {
			return 0, 0, 0, fmt.Errorf("bad pointer: %v", err)
		}
	}
	if want == 3 {
		if size, err = parseHex(f[2]); err != nil {
			return 0, 0, 0, fmt.Errorf("bad size: %v", err)
		}
	}
	return op, ptr, size, nil
}

// parseHex accepts what glibc's %p and %#lx print, and, like the perl
// script's hex(), a bare hex number.
func parseHex(s string) (uint64, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if t == "" {
		return 0, fmt.Errorf("%q is not a hex number", s)
	}
	v, err := strconv.ParseUint(t, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a hex number", s)
	}
	return v, nil
}

// parseCaller reads the three CALLER forms; inModule tells the path forms
// (whose path may be empty) from the bare address.
func parseCaller(s string) (c Caller, inModule bool, err error) {
	if !strings.HasSuffix(s, "]") {
		return c, false, errors.New("caller without [address]")
	}
	i := strings.LastIndexByte(s, '[')
	if i < 0 {
		return c, false, errors.New("caller without [address]")
	}
	if c.Offset, err = parseHex(s[i+1 : len(s)-1]); err != nil {
		return c, false, fmt.Errorf("bad caller address: %v", err)
	}
	pre := s[:i]
	if strings.HasSuffix(pre, ")") {
		j := strings.LastIndexByte(pre, '(')
		if j < 0 || (j > 0 && pre[j-1] != ':') {
			return c, false, errors.New("bad caller symbol")
		}
		sym := pre[j+1 : len(pre)-1]
		k := strings.LastIndexAny(sym, "+-")
		if k < 1 {
			return c, false, errors.New("bad caller symbol")
		}
		off, err := parseHex(sym[k+1:])
		if err != nil || off > 1<<62 {
			return c, false, errors.New("bad caller symbol offset")
		}
		c.Symbol, c.SymOffset = sym[:k], int64(off)
		if sym[k] == '-' {
			c.SymOffset = -c.SymOffset
		}
		pre = pre[:j]
	}
	if pre == "" {
		// dladdr() found the object but not its name: the address
		// cannot be placed in any module.
		return c, false, nil
	}
	if !strings.HasSuffix(pre, ":") {
		return c, false, errors.New("bad caller: module path without ':'")
	}
	c.Module = pre[:len(pre)-1]
	return c, true, nil
}

// stack returns the stack id of a caller, announcing its module and stack
// to the handler the first time.
func (p *Parser) stack(text string) (uint64, Caller, error) {
	if text == "" {
		return 0, Caller{}, nil
	}
	c, inModule, err := parseCaller(text)
	if err != nil {
		return 0, c, err
	}
	pc := c.Offset
	if inModule {
		// 4 GiB or more is no offset: an absolute address printed by
		// a glibc older than 2.34.
		if c.Offset < ModuleSpan {
			pc = p.module(c.Module) + c.Offset
			if p.LoadStart != nil {
				pc += p.LoadStart(c.Module)
			}
		}
	}
	if id, ok := p.stacks[pc]; ok {
		return id, p.callers[pc], nil
	}
	id := uint64(len(p.stacks) + 1)
	p.stacks[pc] = id
	p.callers[pc] = c
	p.h.Stack(id, []uint64{pc})
	return id, c, nil
}

func (p *Parser) module(path string) uint64 {
	if b, ok := p.modules[path]; ok {
		return b
	}
	base := SyntheticBase + uint64(len(p.modules))*ModuleSpan
	p.modules[path] = base
	p.h.Module(&event.Module{
		Path:     path,
		Base:     base,
		Segments: []event.Segment{{Start: base, End: base + ModuleSpan, Exec: true}},
		Time:     p.line,
	})
	return base
}

// strdupSyms are the libc functions whose allocations mtrace attributes to
// themselves: the caller recorded is inside them, not the program.
var strdupSyms = map[string]bool{
	"strdup": true, "__strdup": true, "strndup": true, "__strndup": true,
	"wcsdup": true, "__wcsdup": true,
}

// parseLine decodes one non-empty line and reports whether it was "= End".
func (p *Parser) parseLine(s string) (bool, error) {
	if strings.HasPrefix(s, "=") {
		switch s {
		case "= Start":
			p.flushPending()
			p.stats.Started = true
			return false, nil
		case "= End":
			p.flushPending()
			p.stats.Ended = true
			return true, nil
		}
		return false, errors.New("unknown marker")
	}
	callerText, opText, err := splitLine(s)
	if err != nil {
		return false, err
	}
	op, ptr, size, _ := parseOp(opText)
	if op == '>' && p.pending != nil {
		pend := p.pending
		p.pending = nil
		stack, _, err := p.stack(callerText)
		if err != nil {
			return false, err
		}
		if pend.stack != 0 {
			// glibc prints the same caller on both lines; the "<"
			// line's is the one to keep if they ever differ.
			stack = pend.stack
		}
		if pend.old == 0 {
			p.stats.Allocs++
			p.h.Event(&event.Event{Kind: event.Alloc, Op: event.OpRealloc, Time: p.line,
				Addr: ptr, Size: size, Stack: stack})
			return false, nil
		}
		p.stats.Reallocs++
		p.h.Event(&event.Event{Kind: event.Realloc, Op: event.OpRealloc, Time: pend.line,
			Time2: p.line, OldAddr: pend.old, Addr: ptr, Size: size, Stack: stack})
		return false, nil
	}
	p.flushPending()
	stack, caller, err := p.stack(callerText)
	if err != nil {
		return false, err
	}
	switch op {
	case '+':
		if ptr == 0 {
			p.stats.FailedAllocs++
			return false, nil
		}
		o := event.OpMalloc
		if strdupSyms[caller.Symbol] {
			o = event.OpStrdup
		}
		p.stats.Allocs++
		p.h.Event(&event.Event{Kind: event.Alloc, Op: o, Time: p.line, Addr: ptr, Size: size, Stack: stack})
	case '-':
		if ptr == 0 {
			return false, nil
		}
		p.stats.Frees++
		p.h.Event(&event.Event{Kind: event.Free, Op: event.OpFree, Time: p.line, Addr: ptr, Stack: stack})
	case '<':
		p.pending = &pendingRealloc{line: p.line, old: ptr, stack: stack}
	case '>':
		// Realloc without a "<" first: realloc(NULL, n) in glibcs that
		// print it this way.
		if ptr == 0 {
			p.stats.FailedAllocs++
			return false, nil
		}
		p.stats.Allocs++
		p.h.Event(&event.Event{Kind: event.Alloc, Op: event.OpRealloc, Time: p.line, Addr: ptr, Size: size, Stack: stack})
	case '!':
		p.stats.FailedReallocs++
	}
	return false, nil
}

// flushPending turns a "<" that no ">" followed into the release it
// stands for, as the mtrace script does.
func (p *Parser) flushPending() {
	pend := p.pending
	if pend == nil {
		return
	}
	p.pending = nil
	if pend.old == 0 {
		return
	}
	p.stats.Frees++
	p.h.Event(&event.Event{Kind: event.Free, Op: event.OpRealloc, Time: pend.line, Addr: pend.old, Stack: pend.stack})
}
