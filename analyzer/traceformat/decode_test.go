package traceformat

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
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
