package traceformat

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"libleak/analyzer/event"
)

// nop counts what a decode delivers.
type nop struct{ events, stacks, modules int }

func (n *nop) Header(*event.Header)   {}
func (n *nop) Module(*event.Module)   { n.modules++ }
func (n *nop) Stack(uint64, []uint64) { n.stacks++ }
func (n *nop) Event(*event.Event)     { n.events++ }

// frame wraps a raw payload in a frame header.
func frame(payload []byte) []byte {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[12:], crc32.ChecksumIEEE(payload))
	return append(h[:], payload...)
}

func fileHeader() []byte { return fileHeaderV(Version) }

func fileHeaderV(v byte) []byte {
	h := make([]byte, 16)
	copy(h, Magic)
	h[8] = v
	return h
}

// columns lays out a version 2 thread piece: the lengths of the first
// three columns, then the four.
func columns(rec, times, addrs, sizes []byte) []byte {
	out := uv(uint64(len(rec)), uint64(len(times)), uint64(len(addrs)))
	for _, c := range [][]byte{rec, times, addrs, sizes} {
		out = append(out, c...)
	}
	return out
}

func piece(slot uint64, b []byte) []byte {
	out := binary.AppendUvarint(nil, slot)
	out = binary.AppendUvarint(out, uint64(len(b)))
	return append(out, b...)
}

func uv(vs ...uint64) []byte {
	var out []byte
	for _, v := range vs {
		out = binary.AppendUvarint(out, v)
	}
	return out
}

// sample builds a small valid trace: a thread that mallocs two blocks
// and frees one, then an end record.
func sample() []byte {
	rec := []byte{recReset}
	rec = append(rec, uv(77, 10)...)
	rec = append(rec, recStack)
	rec = append(rec, uv(1, 2, 0x400100<<1, 0x10<<1)...) // two frames, zigzag deltas
	rec = append(rec, recEvent+1)                        // malloc: stack 1
	rec = append(rec, uv(1)...)
	rec = append(rec, recEvent+1, 1)
	rec = append(rec, recEvent+5) // free
	times := uv(1, 1, 1)
	// Two aligned addresses, then the free refers back two allocations.
	addrs := uv((0x1000>>4)<<2, (0x2000>>4)<<2, 2<<2|2)
	sizes := uv(32, 64)
	return append(fileHeader(), frame(append(proc(), piece(1, columns(rec, times, addrs, sizes))...))...)
}

func proc() []byte {
	p := []byte{recFrame}
	p = append(p, uv(100)...)
	p = append(p, recEnd)
	p = append(p, uv(20, EndExit, 0, 0)...)
	return piece(0, p)
}

// sampleV1 is sample's trace in format version 1: records interleaved,
// addresses whole.
func sampleV1() []byte {
	th := []byte{recReset}
	th = append(th, uv(77, 10)...)
	th = append(th, recStack)
	th = append(th, uv(1, 2, 0x400100<<1, 0x10<<1)...)
	th = append(th, recEvent+1)
	th = append(th, uv(1, (0x1000>>4)<<1, 32, 1)...)
	th = append(th, recEvent+1)
	th = append(th, uv(1, (0x2000>>4)<<1, 64, 1)...)
	th = append(th, recEvent+5)
	th = append(th, uv(1, (0x1000>>4)<<1)...)
	return append(fileHeaderV(1), frame(append(proc(), piece(1, th)...))...)
}

// events records every event a decode delivers.
type events struct {
	nop
	ev []event.Event
}

func (e *events) Event(ev *event.Event) { e.ev = append(e.ev, *ev) }

func TestDecodeSample(t *testing.T) {
	var want []event.Event
	for _, v := range []struct {
		name string
		b    []byte
	}{{"v2", sample()}, {"v1", sampleV1()}} {
		var got events
		st, err := Decode(bytes.NewReader(v.b), v.name, &got)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.ev) != 3 || got.stacks != 1 || st.Events != 3 || !st.Ended || st.Truncated || st.Frames != 1 {
			t.Errorf("%s: got %d events, %+v, stats %+v", v.name, len(got.ev), got.nop, st)
			continue
		}
		e := got.ev[1]
		if e.Kind != event.Alloc || e.Addr != 0x2000 || e.Size != 64 || e.Stack != 1 || e.Tid != 77 || e.Time != 12<<6 {
			t.Errorf("%s: second event %+v", v.name, e)
		}
		if want == nil {
			want = got.ev
		} else if !reflect.DeepEqual(got.ev, want) {
			t.Errorf("v1 and v2 decode differently:\n%+v\n%+v", got.ev, want)
		}
	}
}

// The END record's dropped count is the run's total; a thread piece after
// it in the last frame (its DROPPED record already counted there) does not
// add to it. Without an end record the DROPPED records are all there is.
func TestDecodeDroppedAfterEnd(t *testing.T) {
	end := []byte{recFrame}
	end = append(end, uv(100)...)
	end = append(end, recEnd)
	end = append(end, uv(20, EndExit, 0, 5)...)
	rec := append([]byte{recReset}, uv(77, 10)...)
	rec = append(rec, recDropped)
	rec = append(rec, uv(3)...)
	thread := piece(1, columns(rec, nil, nil, nil))
	mark := append([]byte{recFrame}, uv(100)...)
	for _, c := range []struct {
		name    string
		payload []byte
		want    uint64
	}{
		{"end first", append(piece(0, end), thread...), 5},
		{"no end", append(piece(0, mark), thread...), 3},
	} {
		st, err := Decode(bytes.NewReader(append(fileHeader(), frame(c.payload)...)), c.name, &nop{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.Dropped != c.want {
			t.Errorf("%s: %d dropped, want %d", c.name, st.Dropped, c.want)
		}
	}
}

// A back-reference must name an allocation the slot has seen.
func TestDecodeBadBackRef(t *testing.T) {
	rec := []byte{recReset}
	rec = append(rec, uv(77, 10)...)
	rec = append(rec, recEvent+1, 0, recEvent+5) // one malloc, then a free two back
	b := append(fileHeader(), frame(append(proc(), piece(1, columns(rec, uv(1, 1), uv((0x1000>>4)<<2, 2<<2|2), uv(32)))...))...)
	if _, err := Decode(bytes.NewReader(b), "backref", &nop{}); err == nil || !strings.Contains(err.Error(), "back-reference") {
		t.Errorf("want a back-reference error, got %v", err)
	}
}

// Columns must be consumed exactly by their records.
func TestDecodeColumnMismatch(t *testing.T) {
	rec := []byte{recReset}
	rec = append(rec, uv(77, 10)...)
	rec = append(rec, recEvent+5) // one free, but two addresses
	b := append(fileHeader(), frame(append(proc(), piece(1, columns(rec, uv(1), uv(4, 8), nil))...))...)
	if _, err := Decode(bytes.NewReader(b), "cols", &nop{}); err == nil || !strings.Contains(err.Error(), "columns") {
		t.Errorf("want a column error, got %v", err)
	}
}

func TestDecodeTruncated(t *testing.T) {
	b := sample()
	var n nop
	st, err := Decode(bytes.NewReader(b[:len(b)-5]), "cut", &n)
	if err != nil || !st.Truncated || n.events != 0 {
		t.Errorf("cut inside its only frame: err %v, stats %+v, %d events", err, st, n.events)
	}
}

func TestDecodeBadInput(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":   {},
		"foreign": []byte("#!/bin/sh\necho hello, this is not a trace\n"),
		"version": append([]byte(Magic), 9, 0, 0, 0, 0, 0, 0, 0),
	} {
		_, err := Decode(bytes.NewReader(b), name, &nop{})
		if err == nil || !strings.HasPrefix(err.Error(), name+": ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: want a one-line error naming the input, got %v", name, err)
		}
	}
	// A flipped payload byte fails the checksum.
	b := sample()
	b[len(b)-3] ^= 0x40
	if _, err := Decode(bytes.NewReader(b), "flipped", &nop{}); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("flipped byte: %v", err)
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder: it may fail, never
// panic or hang.
func FuzzDecode(f *testing.F) {
	f.Add(sample())
	f.Add(fileHeader())
	f.Fuzz(func(t *testing.T, b []byte) {
		Decode(bytes.NewReader(b), "fuzz", &nop{})
		// The same bytes behind a valid file header and frame.
		Decode(bytes.NewReader(append(fileHeader(), frame(b)...)), "fuzz", &nop{})
	})
}

// order records what a decode delivers, in the order delivered.
type order struct {
	nop
	seq []string
}

func (o *order) Event(e *event.Event) { o.seq = append(o.seq, e.Kind.String()) }
func (o *order) Scan(s *event.Scan)   { o.seq = append(o.seq, "scan") }

// An exit scan's record travels with the process records, first in the
// last frame; thread pieces later in that frame can still hold events
// older than it. The scan must come after those and before newer ones.
func TestDecodeScanInTimeOrder(t *testing.T) {
	rec := []byte{recReset}
	rec = append(rec, uv(77, 10)...)
	rec = append(rec, recEvent+1, 0) // malloc at 11
	rec = append(rec, recEvent+5)    // free at 60
	th := columns(rec, uv(1, 49), uv((0x1000>>4)<<2, 1<<2|2), uv(32))
	proc := []byte{recFrame}
	proc = append(proc, uv(100)...)
	proc = append(proc, recScan)
	proc = append(proc, uv(50, 1, 0, 0)...) // time, blocks, content bytes, no verdicts
	proc = append(proc, recEnd)
	proc = append(proc, uv(100, EndExit, 0, 0)...)
	payload := append(piece(0, proc), piece(1, th)...)
	var o order
	if _, err := Decode(bytes.NewReader(append(fileHeader(), frame(payload)...)), "scan", &o); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.seq, " "); got != "alloc scan free" {
		t.Errorf("delivered %q, want %q", got, "alloc scan free")
	}
}

// recs records what a decode delivers through event.RecHandler, as events.
type recs struct {
	nop
	ev []event.Event
}

func (r *recs) Recs(tid uint32, rs []event.Rec, evs []event.Event) {
	r.ev = event.AppendEvents(r.ev, tid, rs, evs)
}

// randomTrace writes the same random events of two threads as a version 1
// and a version 3 trace, in several frames and pieces: every kind of
// event, back-references near and far, addresses 0, odd and aligned,
// sizes and stack ids past the compact records' limits, times that need
// more than a byte.
func randomTrace(seed int64) (v1, v3 []byte, n int) {
	rng := rand.New(rand.NewSource(seed))
	type slot struct {
		allocs, frees []uint64 // addresses in order, for back-references
		live          []uint64
	}
	slots := []*slot{{}, {}}
	pick := func(s *slot) uint64 {
		switch r := rng.Intn(20); {
		case r == 0:
			return 0
		case r == 1:
			return uint64(rng.Int63n(1<<47)) | 1 // odd
		case r == 2 && len(s.frees) > 0:
			return s.frees[len(s.frees)-1-rng.Intn(min(len(s.frees), 5000))]
		}
		return uint64(0x10000+rng.Intn(1<<16)) << 4
	}
	big := func(small int) uint64 {
		switch rng.Intn(50) {
		case 0:
			return 1<<32 + uint64(rng.Intn(1000))
		case 1:
			return 1<<24 + uint64(rng.Intn(1000))
		case 2:
			return 1<<62 + uint64(rng.Intn(1000))
		}
		return uint64(rng.Intn(small))
	}
	// addr encodes a for version 3, as address kind k of the slot (the
	// shim's rule: a back-reference when the address is in reach).
	addr3 := func(s *slot, a uint64, heap, free bool) uint64 {
		if heap && a != 0 && rng.Intn(4) != 0 {
			from := s.frees
			if free {
				from = s.allocs
			}
			for d := 1; d <= backRefs && d <= len(from); d++ {
				if from[len(from)-d] == a {
					return uint64(d)<<2 | 2
				}
			}
		}
		if a&15 == 0 {
			return a >> 4 << 2
		}
		return a<<1 | 1
	}
	addr1 := func(a uint64) uint64 {
		if a&15 == 0 {
			return a >> 4 << 1
		}
		return a<<1 | 1
	}
	note := func(s *slot, a uint64, free bool) {
		if a == 0 {
			return
		}
		if free {
			s.frees = append(s.frees, a)
		} else {
			s.allocs = append(s.allocs, a)
		}
	}
	var out1, out3 []byte
	out1, out3 = fileHeaderV(1), fileHeader()
	t := uint64(10)
	for f := 0; f < 4; f++ {
		var p1, p3 []byte
		pr := []byte{recFrame}
		pr = append(pr, uv(t)...)
		p1, p3 = piece(0, pr), piece(0, pr)
		for pc := 0; pc < 3; pc++ {
			si := rng.Intn(2)
			s := slots[si]
			var th1, rec, tim, adr, siz []byte
			th1 = append([]byte{recReset}, uv(uint64(100+si), t)...)
			rec = append([]byte{recReset}, uv(uint64(100+si), t)...)
			for i := 0; i < 3000; i++ {
				dt := uint64(rng.Intn(4))
				if rng.Intn(100) == 0 {
					dt = uint64(rng.Intn(1 << 20))
				}
				t += dt
				r := rng.Intn(100)
				stack := big(40)
				switch {
				case r < 2:
					id := uint64(rng.Intn(1000))
					st := append([]byte{recStack}, uv(id, 2, 0x400100<<1, 0x10<<1)...)
					th1, rec = append(th1, st...), append(rec, st...)
					t -= dt
					continue
				case r < 45: // allocation
					op := []uint8{1, 2, 6, 7, 8, 9, 10, 11, 12}[rng.Intn(9)]
					a, size := pick(s), big(600)
					th1 = append(append(th1, recEvent+op), uv(dt, addr1(a), size, stack)...)
					rec = append(append(rec, recEvent+op), uv(stack)...)
					tim, adr, siz = append(tim, uv(dt)...), append(adr, uv(addr3(s, a, true, false))...), append(siz, uv(size)...)
					note(s, a, false)
					if a != 0 {
						s.live = append(s.live, a)
					}
				case r < 85: // free
					op := []uint8{5, 13, 14}[rng.Intn(3)]
					a := uint64(0)
					if len(s.live) > 0 && rng.Intn(10) != 0 {
						k := rng.Intn(len(s.live))
						a, s.live[k] = s.live[k], s.live[len(s.live)-1]
						s.live = s.live[:len(s.live)-1]
					} else if rng.Intn(2) == 0 {
						a = pick(s)
					}
					th1 = append(append(th1, recEvent+op), uv(dt, addr1(a))...)
					rec = append(rec, recEvent+op)
					tim, adr = append(tim, uv(dt)...), append(adr, uv(addr3(s, a, true, true))...)
					note(s, a, true)
				case r < 95: // realloc
					op := uint8(3 + rng.Intn(2))
					old := uint64(0)
					if len(s.live) > 0 && rng.Intn(8) != 0 {
						old = s.live[rng.Intn(len(s.live))]
					}
					a, size, dt2 := pick(s), big(600), uint64(rng.Intn(3))
					if rng.Intn(4) == 0 {
						a = old
					}
					if rng.Intn(10) == 0 {
						a, size = 0, 0
					}
					t += dt2
					th1 = append(append(th1, recEvent+op), uv(dt, dt2, addr1(old), addr1(a), size, stack)...)
					rec = append(append(rec, recEvent+op), uv(stack)...)
					tim = append(tim, uv(dt, dt2)...)
					adr = append(adr, uv(addr3(s, old, true, true))...)
					note(s, old, true)
					adr = append(adr, uv(addr3(s, a, true, false))...)
					note(s, a, false)
					siz = append(siz, uv(size)...)
				default: // mappings
					a, l := uint64(rng.Intn(1<<20))<<12, uint64(rng.Intn(1<<20))
					switch rng.Intn(3) {
					case 0:
						fl := uint64(rng.Intn(1 << 12))
						th1 = append(append(th1, recEvent+15), uv(dt, addr1(a), l, fl, stack)...)
						rec = append(append(rec, recEvent+15), uv(fl, stack)...)
						tim, adr, siz = append(tim, uv(dt)...), append(adr, uv(addr3(s, a, false, false))...), append(siz, uv(l)...)
					case 1:
						th1 = append(append(th1, recEvent+16), uv(dt, addr1(a), l)...)
						rec = append(rec, recEvent+16)
						tim, adr, siz = append(tim, uv(dt)...), append(adr, uv(addr3(s, a, false, false))...), append(siz, uv(l)...)
					default:
						a2, l2, dt2 := uint64(rng.Intn(1<<20))<<12, uint64(rng.Intn(1<<20)), uint64(rng.Intn(3))
						t += dt2
						th1 = append(append(th1, recEvent+17), uv(dt, dt2, addr1(a), l, addr1(a2), l2, stack)...)
						rec = append(append(rec, recEvent+17), uv(stack)...)
						tim = append(tim, uv(dt, dt2)...)
						adr = append(adr, uv(addr3(s, a, false, false), addr3(s, a2, false, false))...)
						siz = append(siz, uv(l, l2)...)
					}
				}
				n++
			}
			p1 = append(p1, piece(uint64(1+si), th1)...)
			p3 = append(p3, piece(uint64(1+si), columns(rec, tim, adr, siz))...)
		}
		if f == 3 {
			end := append([]byte{recEnd}, uv(t, EndExit, 0, 0)...)
			p1, p3 = append(p1, piece(0, end)...), append(p3, piece(0, end)...)
		}
		out1, out3 = append(out1, frame(p1)...), append(out3, frame(p3)...)
	}
	return out1, out3, n
}

// The columnar loop reads the usual records itself and leaves the rest to
// the generic reader, which is all version 1 has: both must deliver the
// same events, through events or compact records.
func TestDecodeColumnsAsGeneric(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		v1, v3, n := randomTrace(seed)
		var e1, e3 events
		var r3 recs
		for _, c := range []struct {
			b []byte
			h event.Handler
		}{{v1, &e1}, {v3, &e3}, {v3, &r3}} {
			st, err := Decode(bytes.NewReader(c.b), "random", c.h)
			if err != nil || st.Events != uint64(n) {
				t.Fatalf("seed %d: %d events, %v (want %d)", seed, st.Events, err, n)
			}
		}
		if len(e1.ev) != n || !reflect.DeepEqual(e1.ev, e3.ev) || !reflect.DeepEqual(e1.ev, r3.ev) {
			for i := range e1.ev {
				if i >= len(e3.ev) || i >= len(r3.ev) || e1.ev[i] != e3.ev[i] || e1.ev[i] != r3.ev[i] {
					t.Fatalf("seed %d: event %d differs:\nv1 %+v", seed, i, e1.ev[i])
				}
			}
			t.Fatalf("seed %d: %d, %d and %d events", seed, len(e1.ev), len(e3.ev), len(r3.ev))
		}
	}
}
