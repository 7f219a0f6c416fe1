// Package traceformat decodes libleak trace files (docs/trace-format.md)
// into the event model, streaming: memory stays proportional to one frame.
package traceformat

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"strings"

	"libleak/analyzer/event"
)

// Magic starts every trace file.
const Magic = "LIBLEAK\n"

// Version is the newest trace format this package reads. Version 3 (the
// same records, no split frames) and version 1 (each thread piece's
// records interleaved instead of in columns, addresses always whole) are
// read too.
const Version = 4

// backRefs is how many of a thread's latest heap allocations a free can
// refer back to, and how many of its latest frees an allocation can (the
// shim's BR_RING).
const backRefs = 4096

const (
	recReset      = 0x01
	recStack      = 0x02
	recDropped    = 0x03
	recHeader     = 0x40
	recModule     = 0x41
	recUnload     = 0x42
	recEnd        = 0x43
	recExec       = 0x44
	recExecFailed = 0x45
	recNote       = 0x47
	recFrame      = 0x48
	recScan       = 0x49
	recComplete   = 0x4a
	recEvent      = 0x20

	encRaw   = 0
	encZstd  = 1
	encSplit = 2

	maxFrame = 256 << 20
)

// End reasons.
const (
	EndExit           = 1
	EndUnderscoreExit = 2
	EndSignal         = 3
	EndExec           = 4
)

// Stats is what a decode learned besides the events.
type Stats struct {
	Events    uint64
	Frames    int
	Bytes     int64 // size of the file read
	Truncated bool  // the file ends inside a frame, or has no end record
	// Ended is set when an end record was read: EndReason, ExitStatus.
	Ended      bool
	EndReason  int
	ExitStatus int
	EndTime    uint64
	// Dropped counts events the shim could not record.
	Dropped uint64
	// ExecPath is set when the image was replaced by exec (the trace's
	// last word is an exec record that did not fail).
	ExecPath string
	Notes    []string
	Header   event.Header
}

// Sniff tells whether b begins a libleak trace.
func Sniff(b []byte) bool { return len(b) >= len(Magic) && string(b[:len(Magic)]) == Magic }

// DecodeFile decodes the trace at path. Errors name the file.
func DecodeFile(path string, h event.Handler) (Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stats{}, fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	return Decode(bufio.NewReaderSize(f, 1<<20), path, h)
}

// FormatError is a corrupt or foreign input.
type FormatError struct {
	Name string
	Msg  string
}

func (e *FormatError) Error() string { return e.Name + ": " + e.Msg }

type slotState struct {
	tid   uint32
	lastT uint64
	refs  [2]backRing // heap allocations and frees read (version 3)
}

// backRing holds a slot's latest heap addresses of one kind, by ordinal.
type backRing struct {
	n    uint64
	ring *[backRefs]uint64
}

const (
	allocs = 0
	frees  = 1
)

// Threads' events reach the file in separate pieces; the decoder hands
// them on in time order. Each frame starts with the time its drain began:
// every event before the previous frame's mark has been read once a frame
// is complete, so events older than that mark are released, merged.
type run struct {
	tid  uint32
	recs []event.Rec
	evs  []event.Event // the events that records of Kind 0 stand for
	pos  int
}

type decoder struct {
	m        *merger
	cur      *run
	mark     uint64 // this frame's drain mark, ns
	prevMark uint64
	complete uint64 // events older than this are all in this frame or earlier

	version     uint32
	name        string
	h           event.Handler
	st          Stats
	shift       uint
	slots       map[uint64]*slotState
	mods        map[[2]uint64]*event.Module
	pcs         []uint64
	cols        cols
	side        *[2][]byte // the thread piece being read: its split frame's columns (splitPiece)
	sideCols    [2][]byte
	pendingExec string
}

// Decode reads a trace from r; name is used in errors.
func Decode(r io.Reader, name string, h event.Handler) (Stats, error) {
	d := &decoder{name: name, h: h, shift: 6, complete: ^uint64(0), slots: map[uint64]*slotState{}, mods: map[[2]uint64]*event.Module{}}
	var fh [16]byte
	n, err := io.ReadFull(r, fh[:])
	d.st.Bytes += int64(n)
	if err != nil || !Sniff(fh[:]) {
		if n == 0 {
			return d.st, &FormatError{name, "empty file, not a libleak trace"}
		}
		if Sniff(fh[:n]) {
			d.st.Truncated = true
			return d.st, nil
		}
		return d.st, &FormatError{name, "not a libleak trace (bad magic)"}
	}
	d.version = binary.LittleEndian.Uint32(fh[8:])
	if d.version != 1 && d.version != 3 && d.version != Version {
		return d.st, &FormatError{name, fmt.Sprintf("trace format version %d, this leakanalyze reads versions 1, 3 and %d", d.version, Version)}
	}
	maxEnc := byte(encZstd)
	if d.version >= 4 {
		maxEnc = encSplit
	}
	fr, err := newFrameReader(r, name, d.st.Bytes, maxEnc)
	if err != nil {
		return d.st, err
	}
	defer fr.close()
	d.m = newMerger(h)
	for {
		it := fr.next()
		d.st.Bytes = it.bytes
		if it.err != nil {
			d.m.finish()
			return d.st, it.err
		}
		if it.last {
			d.st.Truncated = d.st.Truncated || it.truncated
			break
		}
		d.st.Frames++
		err := d.frame(it.data, it.side)
		fr.recycle(it)
		if err != nil {
			d.m.add(mop{kind: mopRelease, id: ^uint64(0)})
			d.m.finish()
			return d.st, &FormatError{name, fmt.Sprintf("frame %d: %v", d.st.Frames, err)}
		}
		limit := d.prevMark
		if d.complete < limit {
			limit = d.complete
		}
		d.m.add(mop{kind: mopRelease, id: limit})
		d.m.flush()
		d.prevMark = d.mark
		d.complete = ^uint64(0)
	}
	d.m.add(mop{kind: mopRelease, id: ^uint64(0)})
	d.m.finish()
	if !d.st.Ended && d.pendingExec == "" {
		d.st.Truncated = true
	}
	d.st.ExecPath = d.pendingExec
	return d.st, nil
}

var errShort = errors.New("record runs past the end of its piece")

type buf struct {
	b      []byte
	off    int
	err    error
	failed *bool // set with err, when not nil: one flag for a piece's four columns
}

func (b *buf) fail(err error) {
	b.err = err
	if b.failed != nil {
		*b.failed = true
	}
}

func (b *buf) byte() byte {
	if b.off >= len(b.b) {
		b.fail(errShort)
		return 0
	}
	c := b.b[b.off]
	b.off++
	return c
}

func (b *buf) uvarint() uint64 {
	if off := b.off; uint(off) < uint(len(b.b)) {
		if c := b.b[off]; c < 0x80 {
			b.off = off + 1
			return uint64(c)
		}
	}
	return b.uvarintLong()
}

func (b *buf) uvarintLong() uint64 {
	if p := b.b[b.off:]; len(p) >= 8 {
		// Unrolled for the usual lengths (back-references, sizes and
		// whole addresses take 2 to 7 bytes).
		v := uint64(p[0] & 0x7f)
		for i := 1; i < 8; i++ {
			c := p[i]
			v |= uint64(c&0x7f) << (7 * i)
			if c < 0x80 {
				b.off += i + 1
				return v
			}
		}
	}
	v, n := binary.Uvarint(b.b[b.off:])
	if n <= 0 {
		b.fail(errShort)
		b.off = len(b.b)
		return 0
	}
	b.off += n
	return v
}

func (b *buf) svarint() int64 {
	u := b.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (b *buf) bytes(n uint64) []byte {
	if n > uint64(len(b.b)-b.off) {
		b.fail(errShort)
		b.off = len(b.b)
		return nil
	}
	s := b.b[b.off : b.off+int(n)]
	b.off += int(n)
	return s
}

func (b *buf) string() string { return string(b.bytes(b.uvarint())) }

// frame reads a frame's pieces. In a split frame (side not nil) a thread
// piece's address and size columns are not in data but next in the side
// streams, in piece order.
func (d *decoder) frame(data []byte, side *[2][]byte) error {
	f := buf{b: data}
	var rest [2][]byte
	if side != nil {
		rest = *side
	}
	for f.off < len(f.b) {
		slot := f.uvarint()
		n := f.uvarint()
		var piece []byte
		var err error
		d.side = nil
		if side != nil && slot != 0 {
			piece, err = d.splitPiece(&f, n, &rest)
		} else {
			piece = f.bytes(n)
		}
		if err == nil && f.err != nil {
			err = fmt.Errorf("piece header: %v", f.err)
		}
		if err != nil {
			return err
		}
		if slot == 0 {
			err = d.process(piece)
		} else {
			s := d.slots[slot]
			if s == nil {
				s = &slotState{}
				d.slots[slot] = s
			}
			d.cur = d.m.newRun()
			d.cur.tid = s.tid
			err = d.thread(s, piece)
			d.endRun()
			d.cur = nil
		}
		if err != nil {
			return err
		}
	}
	if len(rest[0]) != 0 || len(rest[1]) != 0 {
		return errors.New("address or size stream longer than its pieces")
	}
	return nil
}

// splitPiece takes a split frame's thread piece of n bytes: its column
// lengths and record and time columns from f, its address and size
// columns (d.side) from the fronts of rest.
func (d *decoder) splitPiece(f *buf, n uint64, rest *[2][]byte) ([]byte, error) {
	start := f.off
	var l [3]uint64
	for i := range l {
		l[i] = f.uvarint()
	}
	if f.err != nil {
		return nil, fmt.Errorf("piece header: %v", f.err)
	}
	hl := uint64(f.off - start)
	if l[0] > n || l[1] > n || l[2] > n || hl+l[0]+l[1]+l[2] > n {
		return nil, errors.New("column lengths run past the end of their piece")
	}
	ls := n - hl - l[0] - l[1]
	if l[2] > uint64(len(rest[0])) || ls-l[2] > uint64(len(rest[1])) {
		return nil, errors.New("columns run past the end of the address or size stream")
	}
	f.off = start
	piece := f.bytes(hl + l[0] + l[1])
	d.sideCols = [2][]byte{rest[0][:l[2]], rest[1][:ls-l[2]]}
	d.side = &d.sideCols
	rest[0], rest[1] = rest[0][l[2]:], rest[1][ls-l[2]:]
	return piece, nil
}

func (d *decoder) ns(units uint64) uint64 { return units << d.shift }

func (d *decoder) process(p []byte) error {
	b := buf{b: p}
	for b.off < len(b.b) && b.err == nil {
		tag := b.byte()
		switch tag {
		case recHeader:
			h := &d.st.Header
			h.Version = int(b.uvarint())
			h.Pid = int(b.uvarint())
			h.Ppid = int(b.uvarint())
			h.Exe = b.string()
			cmd := b.bytes(b.uvarint())
			h.Cmdline = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
			h.StartUnix = int64(b.uvarint())
			h.Clock = b.string()
			d.shift = uint(b.uvarint())
			h.Unwinder = b.string()
			h.Depth = int(b.uvarint())
			flags := b.uvarint()
			h.Forked = flags&1 != 0
			h.Tracer = b.string()
			if d.shift > 32 {
				return fmt.Errorf("bad time unit 2^%d ns", d.shift)
			}
			if b.err == nil {
				hc := *h
				d.m.add(mop{kind: mopHeader, hdr: &hc})
			}
		case recModule:
			m := &event.Module{Time: d.ns(b.uvarint())}
			m.Path = b.string()
			m.Base = b.uvarint()
			m.BuildID = append([]byte(nil), b.bytes(b.uvarint())...)
			nseg := b.uvarint()
			if nseg > 64 {
				return fmt.Errorf("module %q with %d segments", m.Path, nseg)
			}
			for i := uint64(0); i < nseg; i++ {
				start := b.uvarint()
				size := b.uvarint()
				fl := b.byte()
				m.Segments = append(m.Segments, event.Segment{Start: start, End: start + size, Exec: fl&1 != 0, Writable: fl&2 != 0})
			}
			if b.err == nil {
				first := uint64(0)
				if len(m.Segments) > 0 {
					first = m.Segments[0].Start
				}
				d.mods[[2]uint64{m.Base, first}] = m
				d.m.add(mop{kind: mopModule, mod: m})
			}
		case recUnload:
			t := d.ns(b.uvarint())
			base := b.uvarint()
			first := b.uvarint()
			if m := d.mods[[2]uint64{base, first}]; m != nil && b.err == nil {
				delete(d.mods, [2]uint64{base, first})
				// The merger sets the time: the handler may not have had
				// the load yet.
				d.m.add(mop{kind: mopUnload, mod: m, id: t})
			}
		case recEnd:
			d.st.EndTime = d.ns(b.uvarint())
			d.st.EndReason = int(b.uvarint())
			d.st.ExitStatus = int(b.svarint())
			// The run's total: the DROPPED records of thread pieces
			// written after it are part of it.
			d.st.Dropped = b.uvarint()
			d.st.Ended = b.err == nil
		case recExec:
			b.uvarint()
			d.pendingExec = b.string()
			if d.pendingExec == "" {
				d.pendingExec = "?"
			}
		case recExecFailed:
			b.uvarint()
			d.pendingExec = ""
		case recNote:
			b.uvarint()
			d.st.Notes = append(d.st.Notes, b.string())
		case recFrame:
			d.mark = d.ns(b.uvarint())
		case recComplete:
			d.complete = d.ns(b.uvarint())
		case recScan:
			sc := &event.Scan{Time: d.ns(b.uvarint()), Blocks: b.uvarint()}
			content := b.uvarint()
			n := b.uvarint()
			if n > uint64(len(b.b)) {
				return fmt.Errorf("scan with %d verdicts in a %d-byte piece", n, len(b.b))
			}
			sc.Verdicts = make([]event.Verdict, 0, n)
			var addr uint64
			for i := uint64(0); i < n && b.err == nil; i++ {
				addr += uint64(b.svarint())
				v := event.Verdict{Addr: addr, Kind: b.byte()}
				if v.Kind == event.VerdictDefinite {
					v.Indirect = b.uvarint()
				}
				if content > 0 {
					v.Content = append([]byte(nil), b.bytes(b.uvarint())...)
				}
				sc.Verdicts = append(sc.Verdicts, v)
			}
			if _, ok := d.h.(event.ScanHandler); ok && b.err == nil {
				// Handed on in time order with the events: those older
				// than the scan may still be in pieces not read yet.
				d.m.add(mop{kind: mopScan, scan: sc})
			}
		default:
			return fmt.Errorf("unknown process record 0x%02x", tag)
		}
	}
	return b.err
}

// cols reads a thread piece's columns (docs/trace-format.md): records,
// times, addresses, sizes. In a version 1 piece the four are one stream.
type cols struct {
	rec, time, addr, size *buf
	bufs                  [4]buf
	failed                bool // a column has an error: checked once per record
}

// init opens a piece. side, when not nil, holds its address and size
// columns (a split frame's), and p the rest.
func (c *cols) init(p []byte, columnar bool, side *[2][]byte) error {
	c.failed = false
	c.bufs[0] = buf{b: p, failed: &c.failed}
	if !columnar {
		c.rec, c.time, c.addr, c.size = &c.bufs[0], &c.bufs[0], &c.bufs[0], &c.bufs[0]
		return nil
	}
	h := &c.bufs[0]
	var lens [3]uint64
	for i := range lens {
		lens[i] = h.uvarint()
	}
	rest := p[h.off:]
	if h.err != nil || lens[0] > uint64(len(rest)) || lens[1] > uint64(len(rest))-lens[0] {
		return errors.New("column lengths run past the end of their piece")
	}
	a, b := lens[0], lens[0]+lens[1]
	f := &c.failed
	if side != nil {
		c.bufs = [4]buf{{b: rest[:a], failed: f}, {b: rest[a:b], failed: f}, {b: side[0], failed: f}, {b: side[1], failed: f}}
	} else {
		if lens[2] > uint64(len(rest))-b {
			return errors.New("column lengths run past the end of their piece")
		}
		c2 := b + lens[2]
		c.bufs = [4]buf{{b: rest[:a], failed: f}, {b: rest[a:b], failed: f}, {b: rest[b:c2], failed: f}, {b: rest[c2:], failed: f}}
	}
	c.rec, c.time, c.addr, c.size = &c.bufs[0], &c.bufs[1], &c.bufs[2], &c.bufs[3]
	return nil
}

func (c *cols) err() error {
	if !c.failed {
		return nil
	}
	for i := range c.bufs {
		if c.bufs[i].err != nil {
			return c.bufs[i].err
		}
	}
	return nil
}

// endRun hands the run being filled to the merger.
func (d *decoder) endRun() {
	if len(d.cur.recs) > 0 {
		d.m.add(mop{kind: mopRun, run: d.cur})
	} else {
		d.m.recycle(d.cur)
	}
}

func (d *decoder) thread(s *slotState, p []byte) error {
	c := &d.cols
	if err := c.init(p, d.version >= 2, d.side); err != nil {
		return err
	}
	if d.version >= 3 {
		if err := d.threadCols(s, c); err != nil {
			return err
		}
	} else {
		b := c.rec
		for b.off < len(b.b) && b.err == nil {
			if err := d.record(s, c); err != nil {
				return err
			}
		}
	}
	if c.time.off != len(c.time.b) || c.addr.off != len(c.addr.b) || c.size.off != len(c.size.b) {
		return errors.New("columns longer than their records")
	}
	return nil
}

// Thread record tags the columnar loop reads itself.
const (
	fastOther = iota
	fastAlloc // a heap allocation: dt, address, size, stack
	fastFree  // a heap free: dt, address
	fastRealloc
)

var fastTags = func() (t [256]uint8) {
	for op := event.OpMalloc; op <= event.OpMremap; op++ {
		switch op {
		case event.OpFree, event.OpDelete, event.OpDeleteArray:
			t[recEvent+uint8(op)] = fastFree
		case event.OpRealloc, event.OpReallocarray:
			t[recEvent+uint8(op)] = fastRealloc
		case event.OpMmap, event.OpMunmap, event.OpMremap:
		default:
			t[recEvent+uint8(op)] = fastAlloc
		}
	}
	return t
}()

// threadCols reads a columnar piece. Heap allocations and frees, nearly
// every record, are read here with the columns' offsets and the slot's
// state in locals, and written as compact records; any other record, or
// one that is not plainly well-formed (an error, address 0, a stack id
// past 32 bits), is read again from its start by record, which handles
// every case and reports errors.
func (d *decoder) threadCols(s *slotState, c *cols) error {
	for i := range s.refs {
		if s.refs[i].ring == nil {
			s.refs[i].ring = new([backRefs]uint64)
		}
	}
	rec, tim, adr, siz := c.rec.b, c.time.b, c.addr.b, c.size.b
	ro, to, ao, so := c.rec.off, c.time.off, c.addr.off, c.size.off
	lastT, shift := s.lastT, d.shift
	aRing, aN := s.refs[allocs].ring, s.refs[allocs].n
	fRing, fN := s.refs[frees].ring, s.refs[frees].n
	out := d.cur.recs
	var n uint64
	for ro < len(rec) {
		tag := rec[ro]
		// Near a column's end the generic reader takes over: here every
		// column has room for a whole uvarint load.
		kind := fastTags[tag]
		if ro+9 > len(rec) || to+8 > len(tim) || ao+8 > len(adr) || so+8 > len(siz) {
			kind = fastOther
		}
		switch kind {
		case fastAlloc:
			dt, nt := uv1(tim, to)
			v, na := uv8(binary.LittleEndian.Uint64(adr[ao:]))
			size, ns := uv8(binary.LittleEndian.Uint64(siz[so:]))
			stack, nk := uv1(rec, ro+1)
			a, ok := address(v, fRing, fN)
			if !ok || a == 0 || size > event.RecMaxSize || stack > event.RecMaxStack || nt|na|ns|nk > 8 {
				break
			}
			to, ao, so, ro = to+nt, ao+na, so+ns, ro+1+nk
			lastT += dt
			aRing[aN%backRefs] = a
			aN++
			out = append(out, event.AllocRec(lastT<<shift, a, size, stack, event.Op(tag-recEvent)))
			n++
			continue
		case fastFree:
			dt, nt := uv1(tim, to)
			v, na := uv8(binary.LittleEndian.Uint64(adr[ao:]))
			a, ok := address(v, aRing, aN)
			if !ok || a == 0 || nt|na > 8 {
				break
			}
			to, ao, ro = to+nt, ao+na, ro+1
			lastT += dt
			fRing[fN%backRefs] = a
			fN++
			out = append(out, event.FreeRec(lastT<<shift, a, event.Op(tag-recEvent)))
			n++
			continue
		case fastRealloc:
			// Only a realloc that moved a block: with either address 0
			// it is an allocation or a free, timed differently.
			dt, nt := uv8(binary.LittleEndian.Uint64(tim[to:]))
			if to+nt+8 > len(tim) || nt > 8 {
				break
			}
			dt2, nt2 := uv8(binary.LittleEndian.Uint64(tim[to+nt:]))
			v, na := uv8(binary.LittleEndian.Uint64(adr[ao:]))
			if ao+na+8 > len(adr) || na > 8 {
				break
			}
			old, ok := address(v, aRing, aN)
			if !ok || old == 0 {
				break
			}
			// The new address may refer back to the old one: note it
			// where the slot's next free goes. The generic reader, if it
			// reads this record again, writes the same there.
			fRing[fN%backRefs] = old
			v, na2 := uv8(binary.LittleEndian.Uint64(adr[ao+na:]))
			a, ok := address(v, fRing, fN+1)
			size, ns := uv8(binary.LittleEndian.Uint64(siz[so:]))
			stack, nk := uv8(binary.LittleEndian.Uint64(rec[ro+1:]))
			if !ok || a == 0 || size > event.RecMaxSize || stack > event.RecMaxStack || dt2<<shift > event.RecMaxDelta || nt2|na2|ns|nk > 8 {
				break
			}
			to, ao, so, ro = to+nt+nt2, ao+na+na2, so+ns, ro+1+nk
			lastT += dt
			t := lastT << shift
			lastT += dt2
			fN++
			aRing[aN%backRefs] = a
			aN++
			r1, r2 := event.ReallocRecs(t, dt2<<shift, old, a, size, stack, event.Op(tag-recEvent))
			out = append(out, r1, r2)
			n++
			continue
		}
		c.rec.off, c.time.off, c.addr.off, c.size.off = ro, to, ao, so
		s.lastT, s.refs[allocs].n, s.refs[frees].n = lastT, aN, fN
		d.cur.recs = out
		d.st.Events += n
		n = 0
		if err := d.record(s, c); err != nil {
			return err
		}
		ro, to, ao, so = c.rec.off, c.time.off, c.addr.off, c.size.off
		lastT = s.lastT
		aN, fN = s.refs[allocs].n, s.refs[frees].n
		out = d.cur.recs
	}
	c.rec.off, c.time.off, c.addr.off, c.size.off = ro, to, ao, so
	s.lastT, s.refs[allocs].n, s.refs[frees].n = lastT, aN, fN
	d.cur.recs = out
	d.st.Events += n
	return nil
}

// address decodes a version 3 address v (see addr); from holds the n
// latest addresses of the kind a back-reference names. It reports false
// for a bad back-reference.
func address(v uint64, from *[backRefs]uint64, n uint64) (uint64, bool) {
	if v&3 == 2 {
		back := v >> 2
		if back-1 >= backRefs || back > n {
			return 0, false
		}
		return from[(n-back)%backRefs], true
	}
	// The two whole forms without a branch between them.
	a := v >> 2 << 4
	if v&1 != 0 {
		a = v >> 1
	}
	return a, true
}

// uv8 decodes the uvarint at the start of x, eight bytes of a column, and
// returns its length; a length of 9 means it is longer than x, and so is
// not decoded (lengths OR'ed over a record's fields exceed 8 then, or when
// one is exactly 8: both are left to the generic reader). Whole addresses
// take 7 bytes, back-references 1 or 2 and sizes 1 or 2: the length
// changes from record to record, so the 7-bit groups are gathered without
// a branch on it.
func uv8(x uint64) (uint64, int) {
	m := ^x & 0x8080808080808080
	x &= m ^ (m - 1)
	x = x&0x007f007f007f007f | x>>1&0x3f803f803f803f80
	x = x&0x00003fff00003fff | x>>2&0x0fffc0000fffc000
	x = x&0x000000000fffffff | x>>4&0x00fffffff0000000
	return x, bits.TrailingZeros64(m)>>3 + 1
}

// uv1 is uv8 for the uvarint at b[off], with 8 bytes there, for fields
// that nearly always take one byte (time deltas, stack ids): a branch
// that is almost never taken costs less than gathering.
func uv1(b []byte, off int) (uint64, int) {
	x := binary.LittleEndian.Uint64(b[off:])
	if x&0x80 == 0 {
		return x & 0x7f, 1
	}
	return uv8(x)
}

// record reads one thread record of any kind at the columns' offsets.
func (d *decoder) record(s *slotState, c *cols) error {
	b := c.rec
	tag := b.byte()
	switch {
	case tag == recReset:
		tid := uint32(b.uvarint())
		s.tid = tid
		s.lastT = b.uvarint()
		if tid != d.cur.tid {
			// A run is one thread's.
			if len(d.cur.recs) > 0 {
				d.endRun()
				d.cur = d.m.newRun()
			}
			d.cur.tid = tid
		}
	case tag == recStack:
		id := b.uvarint()
		n := b.uvarint()
		if n > 1024 {
			return fmt.Errorf("stack of %d frames", n)
		}
		d.pcs = d.pcs[:0]
		var pc uint64
		for i := uint64(0); i < n; i++ {
			pc += uint64(b.svarint())
			d.pcs = append(d.pcs, pc)
		}
		if b.err == nil {
			d.m.add(mop{kind: mopStack, id: id, pcs: append([]uint64(nil), d.pcs...)})
		}
	case tag == recDropped:
		if n := b.uvarint(); !d.st.Ended {
			d.st.Dropped += n
		}
	case tag > recEvent && tag <= recEvent+uint8(event.OpMremap):
		e := event.Event{Op: event.Op(tag - recEvent), Tid: s.tid}
		d.event(s, c, &e)
		if c.err() == nil {
			d.st.Events++
			d.cur.add(&e)
		}
	default:
		return fmt.Errorf("unknown record 0x%02x", tag)
	}
	return c.err()
}

// add appends e to the run, compact when the compact form holds all of it.
func (r *run) add(e *event.Event) {
	if e.Tid == r.tid && e.OldSize == 0 && e.Flags == 0 && e.Size <= event.RecMaxSize && e.Stack <= event.RecMaxStack {
		switch {
		case e.Kind == event.Alloc && e.Time2 == 0 && e.OldAddr == 0:
			r.recs = append(r.recs, event.AllocRec(e.Time, e.Addr, e.Size, e.Stack, e.Op))
			return
		case e.Kind == event.Free && e.Time2 == 0 && e.OldAddr == 0 && e.Size == 0 && e.Stack == 0:
			r.recs = append(r.recs, event.FreeRec(e.Time, e.Addr, e.Op))
			return
		case e.Kind == event.Realloc && e.Time2-e.Time <= event.RecMaxDelta:
			r1, r2 := event.ReallocRecs(e.Time, e.Time2-e.Time, e.OldAddr, e.Addr, e.Size, e.Stack, e.Op)
			r.recs = append(r.recs, r1, r2)
			return
		}
	}
	r.recs = append(r.recs, event.EventRec(e.Time, len(r.evs)))
	r.evs = append(r.evs, *e)
}

func (d *decoder) time(s *slotState, c *cols) uint64 {
	s.lastT += c.time.uvarint()
	return d.ns(s.lastT)
}

// addr reads an address. Version 1 writes every address whole: the low
// bit tells a 16-byte aligned address (four zero bits dropped) from any
// other. Version 3 adds a second bit: aligned, other, or a back-reference
// to the address of the slot's heap allocation (for a free) or free (for
// an allocation) d of them ago.
func (d *decoder) addr(c *cols, from *backRing) uint64 {
	v := c.addr.uvarint()
	switch {
	case v&1 != 0:
		return v >> 1
	case d.version == 1:
		return v >> 1 << 4
	case v&2 == 0:
		return v >> 2 << 4
	}
	back := v >> 2
	if from == nil || back == 0 || back > backRefs || back > from.n || from.ring == nil {
		c.addr.fail(fmt.Errorf("bad back-reference to address -%d", back))
		return 0
	}
	return from.ring[(from.n-back)%backRefs]
}

// heapAddr reads the address of a heap block allocated (kind allocs) or
// released (frees), and notes it for later back-references.
func (d *decoder) heapAddr(s *slotState, c *cols, kind int) uint64 {
	a := d.addr(c, &s.refs[1-kind])
	if a == 0 || d.version == 1 {
		return a
	}
	r := &s.refs[kind]
	if r.ring == nil {
		r.ring = new([backRefs]uint64)
	}
	r.ring[r.n%backRefs] = a
	r.n++
	return a
}

func (d *decoder) event(s *slotState, c *cols, e *event.Event) {
	switch e.Op {
	case event.OpFree, event.OpDelete, event.OpDeleteArray:
		e.Kind = event.Free
		e.Time = d.time(s, c)
		e.Addr = d.heapAddr(s, c, frees)
	case event.OpRealloc, event.OpReallocarray:
		e.Time = d.time(s, c)
		dt := c.time.uvarint()
		e.Time2 = e.Time + d.ns(dt)
		s.lastT += dt
		e.OldAddr = d.heapAddr(s, c, frees)
		e.Addr = d.heapAddr(s, c, allocs)
		e.Size = c.size.uvarint()
		e.Stack = c.rec.uvarint()
		switch {
		case e.OldAddr == 0:
			e.Kind, e.Time = event.Alloc, e.Time2
		case e.Addr == 0:
			e.Kind, e.Addr, e.OldAddr = event.Free, e.OldAddr, 0
		default:
			e.Kind = event.Realloc
		}
	case event.OpMmap:
		e.Kind = event.Mmap
		e.Time = d.time(s, c)
		e.Addr = d.addr(c, nil)
		e.Size = c.size.uvarint()
		e.Flags = uint32(c.rec.uvarint())
		e.Stack = c.rec.uvarint()
	case event.OpMunmap:
		e.Kind = event.Munmap
		e.Time = d.time(s, c)
		e.Addr = d.addr(c, nil)
		e.Size = c.size.uvarint()
	case event.OpMremap:
		e.Kind = event.Mremap
		e.Time = d.time(s, c)
		dt := c.time.uvarint()
		e.Time2 = e.Time + d.ns(dt)
		s.lastT += dt
		e.OldAddr = d.addr(c, nil)
		e.OldSize = c.size.uvarint()
		e.Addr = d.addr(c, nil)
		e.Size = c.size.uvarint()
		e.Stack = c.rec.uvarint()
	default:
		e.Kind = event.Alloc
		e.Time = d.time(s, c)
		e.Addr = d.heapAddr(s, c, allocs)
		e.Size = c.size.uvarint()
		e.Stack = c.rec.uvarint()
	}
}
